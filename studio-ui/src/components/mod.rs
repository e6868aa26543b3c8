//! The studio's components, each written once. Shared by several pages: the error notes,
//! the `{{variable}}` fields, a run's figures. The playground's and the evaluate page's
//! parts are in their own modules; they share their page's state through a context.

pub mod batch;
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
pub fn ErrorNote(
    #[prop(into)] error: Signal<Option<ApiError>>,
    /// Leave out errors that name a control (shown beside it instead, so only once).
    #[prop(optional)]
    beside_fields: bool,
) -> impl IntoView {
    move || {
        error.get().filter(|e| !(beside_fields && e.shown_at_field())).map(|e| {
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

/// Ctrl+Enter (⌘+Enter on a Mac) calls `run` and Esc calls `stop`, anywhere on the page,
/// for as long as the calling component lives.
pub fn run_shortcuts(run: impl Fn() + 'static, stop: impl Fn() + 'static) {
    #[cfg(feature = "hydrate")]
    {
        let handle = window_event_listener(leptos::ev::keydown, move |e: web_sys::KeyboardEvent| {
            if e.key() == "Enter" && (e.ctrl_key() || e.meta_key()) {
                e.prevent_default();
                run();
            } else if e.key() == "Escape" {
                stop();
            }
        });
        on_cleanup(move || handle.remove());
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = (run, stop);
}

/// The shortcut hint on a Run button (`Ctrl+Enter`; ⌘ works too on a Mac).
#[component]
pub fn Kbd(keys: &'static str) -> impl IntoView {
    view! { <kbd class="kbd" title="Keyboard shortcut (⌘ instead of Ctrl on a Mac)">{keys}</kbd> }
}

/// Whether the browser reads the text of the number box behind `ev` as no number at all
/// (`1e`): its value is then empty, so the text cannot be checked from the value.
pub fn number_input_is_bad(ev: &leptos::ev::Event) -> bool {
    #[cfg(feature = "hydrate")]
    {
        use wasm_bindgen::JsCast;
        ev.target()
            .and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok())
            .is_some_and(|i| i.validity().bad_input())
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = ev;
        false
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
