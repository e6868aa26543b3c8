//! The `{{variable}}` inputs of a template (the playground's input, compare's shared input,
//! a new test row).

use std::collections::BTreeMap;

use leptos::prelude::*;

use crate::api::ApiError;

/// One text box per variable name in `names`: its label, a growing text box, and the API
/// error that names `variables.<name>` if there is one. The parent gives the container.
#[component]
pub fn VariableFields(
    #[prop(into)] names: Signal<Vec<String>>,
    #[prop(into)] values: Signal<BTreeMap<String, String>>,
    /// Called with (name, value) as the person types.
    on_input: Callback<(String, String)>,
    testid: &'static str,
    #[prop(optional, into)] error: Option<Signal<Option<ApiError>>>,
) -> impl IntoView {
    view! {
        <For
            each=move || names.get()
            key=|n| n.clone()
            children=move |name| {
                let field = format!("variables.{name}");
                let err = move || {
                    let e = error?.get().filter(|e| e.is_about(&field))?;
                    Some(view! { <div class="field-error">{e.message.clone()}</div> })
                };
                let (n2, n3) = (name.clone(), name.clone());
                view! {
                    <div class="variable">
                        <label class="label small">{format!("{{{{{name}}}}}")}</label>
                        <textarea
                            class="grow"
                            data-testid=testid
                            data-name=name.clone()
                            placeholder=format!("Value of {name}")
                            prop:value=move || values.with(|m| m.get(&n2).cloned().unwrap_or_default())
                            on:input=move |ev| on_input.run((n3.clone(), event_target_value(&ev)))
                        ></textarea>
                        {err}
                    </div>
                }
            }
        />
    }
}
