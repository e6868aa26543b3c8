//! The studio's components, each written once. Shared by several pages: the error notes,
//! the `{{variable}}` fields, a run's figures. The playground's and the evaluate page's
//! parts are in their own modules; they share their page's state through a context.

pub mod batch;
pub mod delete;
pub mod download;
pub mod evaluate;
pub mod playground;
mod stats;
mod variables;

pub use stats::{RunClock, RunStats, Stat};
pub use variables::VariableFields;

use leptos::prelude::*;

use crate::api::ApiError;

/// What the page of a template that does not exist shows instead of its controls (the
/// server answers such a page with status 404).
#[component]
pub fn TemplateNotFound(#[prop(into)] name: Signal<String>) -> impl IntoView {
    view! {
        <section class="card not-found" data-testid="not-found">
            <h1>"Template not found"</h1>
            <p>
                "There is no template named "<span class="mono">{move || format!("“{}”", name.get())}</span>
                ". It may have been renamed or deleted, or the link is mistyped."
            </p>
            <div class="row">
                <a class="button primary" href="/library">"Browse the library"</a>
                <a class="button ghost" href="/">"Start a new prompt"</a>
            </div>
        </section>
    }
}

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

/// A version's output constraint in a few words, for lists ("any text" without one).
pub fn constraint_text(c: Option<&api_types::template::OutputConstraint>) -> String {
    use api_types::template::OutputConstraint;
    match c {
        None => "any text".into(),
        Some(OutputConstraint::Choice { labels }) => format!("one of: {}", labels.join(" · ")),
        Some(OutputConstraint::JsonFields { fields }) => {
            format!(
                "JSON: {}",
                fields.iter().map(|f| format!("{} ({})", f.name, f.kind.as_str())).collect::<Vec<_>>().join(", ")
            )
        }
        Some(OutputConstraint::JsonSchema { .. }) => "JSON (schema)".into(),
        Some(OutputConstraint::Regex { pattern }) => format!("regex: {pattern}"),
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

/// The keyboard shortcuts, listed: the `?` button in the top bar, or `?` typed anywhere
/// outside a text field; Esc or the button closes it.
#[component]
pub fn ShortcutsHelp() -> impl IntoView {
    let open = RwSignal::new(false);
    #[cfg(feature = "hydrate")]
    {
        use leptos::wasm_bindgen::JsCast;
        let handle = window_event_listener(leptos::ev::keydown, move |e: web_sys::KeyboardEvent| {
            let typing = e
                .target()
                .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
                .is_some_and(|el| matches!(el.tag_name().as_str(), "INPUT" | "TEXTAREA" | "SELECT"));
            if e.key() == "?" && !typing && !e.ctrl_key() && !e.meta_key() {
                e.prevent_default();
                open.update(|o| *o = !*o);
            } else if e.key() == "Escape" {
                open.set(false);
            }
        });
        on_cleanup(move || handle.remove());
    }
    let rows: [(&str, &str); 6] = [
        ("Ctrl+Enter (⌘+Enter)", "Run the prompt (playground), run all columns (compare)"),
        ("Esc", "Stop the run; close this list"),
        ("?", "Show or hide this list"),
        ("Tab", "Reach the output pieces (one stop)"),
        ("← → Home End", "Move between output pieces"),
        ("Enter or Space", "Show a piece's alternatives"),
    ];
    view! {
        <button type="button" class="ghost small" data-testid="shortcuts-open" aria-expanded=move || open.get().to_string()
            title="Keyboard shortcuts (?)" on:click=move |_| open.update(|o| *o = !*o)>"?"</button>
        <Show when=move || open.get()>
            <div class="popover shortcuts" role="dialog" aria-label="Keyboard shortcuts" data-testid="shortcuts">
                <h3>"Keyboard shortcuts"</h3>
                <table>
                    {rows.iter().map(|(k, what)| view! { <tr><td><kbd class="kbd">{*k}</kbd></td><td>{*what}</td></tr> }).collect_view()}
                </table>
            </div>
        </Show>
    }
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
