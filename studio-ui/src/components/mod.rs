//! The studio's components, each written once. Shared by several pages: the error notes,
//! the `{{variable}}` fields, a run's figures. The playground's and the evaluate page's
//! parts are in their own modules; they share their page's state through a context.

pub mod evaluate;
pub mod playground;
mod stats;
mod variables;

pub use stats::{RunClock, RunStats, Stat};
pub use variables::VariableFields;

use leptos::prelude::*;

use crate::api::ApiError;

/// An error from the API, shown where it happened.
#[component]
pub fn ErrorNote(#[prop(into)] error: Signal<Option<ApiError>>) -> impl IntoView {
    move || {
        error.get().map(|e| {
            let field = e.param.clone().map(|p| format!(" ({p})")).unwrap_or_default();
            view! { <div class="error" role="alert">{e.to_string()}<span class="field">{field}</span></div> }
        })
    }
}

/// The message for `field` if the last error names it, for showing beside that control.
pub fn field_error(error: Signal<Option<ApiError>>, field: impl Into<String>) -> impl IntoView {
    let field = field.into();
    move || {
        error.get().filter(|e| e.is_about(&field)).map(|e| view! { <div class="field-error">{e.message.clone()}</div> })
    }
}

/// A percentage of a share, or a dash.
pub fn pct(v: Option<f64>) -> String {
    v.map(|r| format!("{:.0}%", r * 100.0)).unwrap_or("–".into())
}

/// A version's short name: `v3`, or `draft` for an unsaved one.
pub fn version_label(version: Option<i64>) -> String {
    version.map(|v| format!("v{v}")).unwrap_or("draft".into())
}

/// The values of a row's variables, for a table cell.
pub fn vars_text(vars: &std::collections::BTreeMap<String, String>) -> String {
    vars.values().map(String::as_str).collect::<Vec<_>>().join(" · ")
}
