pub mod compare;
pub mod evaluate;
pub mod library;
pub mod playground;
pub mod template;

use leptos::prelude::*;

use crate::api::ApiError;

/// An error from the API, shown where it happened.
#[component]
pub fn ErrorNote(error: Signal<Option<ApiError>>) -> impl IntoView {
    move || {
        error.get().map(|e| {
            let field = e.param.clone().map(|p| format!(" ({p})")).unwrap_or_default();
            view! { <div class="error" role="alert">{e.to_string()}<span class="field">{field}</span></div> }
        })
    }
}

/// The message for `field` if the last error names it, for showing beside that control.
pub fn field_error(error: Signal<Option<ApiError>>, field: &'static str) -> impl IntoView {
    move || {
        error.get().filter(|e| e.is_about(field)).map(|e| view! { <div class="field-error">{e.message.clone()}</div> })
    }
}

/// One `{{variable}}` input: its label, a growing text box, and the API error that names
/// `variables.<name>` if there is one.
#[component]
pub fn VariableField(
    name: String,
    value: Signal<String>,
    on_input: Callback<String>,
    testid: &'static str,
    #[prop(optional, into)] error: Option<Signal<Option<ApiError>>>,
) -> impl IntoView {
    let field = format!("variables.{name}");
    let err = move || {
        let e = error?.get().filter(|e| e.is_about(&field))?;
        Some(view! { <div class="field-error">{e.message.clone()}</div> })
    };
    view! {
        <div class="variable">
            <label class="label small">{format!("{{{{{name}}}}}")}</label>
            <textarea
                class="grow"
                data-testid=testid
                data-name=name.clone()
                placeholder=format!("Value of {name}")
                prop:value=move || value.get()
                on:input=move |ev| on_input.run(event_target_value(&ev))
            ></textarea>
            {err}
        </div>
    }
}
