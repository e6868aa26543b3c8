//! Deleting a template: the button, and a confirmation that says everything it removes
//! (versions, test cases, evals, logged runs) and asks for the name typed back.

use api_types::templates::TemplateFootprint;
use leptos::prelude::*;

use crate::api::{self, enc, ApiError};
use crate::components::playground::vars_key;
use crate::components::ErrorNote;
use crate::draft::{self, Draft};

/// Where a delete leaves its message for the library page (session storage: this tab).
pub const DELETED_MESSAGE_KEY: &str = "studio.deleted-message";

fn plural(n: i64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// What deleting removes, in words.
pub fn footprint_text(f: &TemplateFootprint) -> String {
    format!(
        "{}, {}, {} and {}",
        plural(f.versions, "version", "versions"),
        plural(f.test_cases, "test case", "test cases"),
        plural(f.eval_runs, "eval run", "eval runs"),
        plural(f.runs, "logged run", "logged runs"),
    )
}

#[component]
pub fn DeleteTemplate(#[prop(into)] name: Signal<String>) -> impl IntoView {
    let open = RwSignal::new(false);
    let footprint = RwSignal::new(None::<TemplateFootprint>);
    let typed = RwSignal::new(String::new());
    let error = RwSignal::new(None::<ApiError>);
    let busy = RwSignal::new(false);
    let navigate = crate::nav::Navigator::new();

    let ask = move |_| {
        open.set(true);
        typed.set(String::new());
        error.set(None);
        footprint.set(None);
        let n = name.get_untracked();
        api::spawn(async move {
            match api::get::<TemplateFootprint>(&format!("/api/templates/{}/footprint", enc(&n))).await {
                Ok(f) => footprint.set(Some(f)),
                Err(e) => error.set(Some(e)),
            }
        });
    };
    let confirmed = move || typed.with(|t| t.trim() == name.get()) && footprint.with(Option::is_some) && !busy.get();
    let delete = move |_| {
        if !confirmed() {
            return;
        }
        busy.set(true);
        let n = name.get_untracked();
        api::spawn(async move {
            match api::request::<TemplateFootprint, ()>("DELETE", &format!("/api/templates/{}", enc(&n)), None).await {
                Ok(f) => {
                    // Nothing of it stays behind in this browser either.
                    draft::storage_remove(&Draft::storage_key(Some(&n)));
                    draft::storage_remove(&vars_key(Some(&n)));
                    draft::storage_remove(&crate::history::history_key(Some(&n)));
                    draft::session_set(DELETED_MESSAGE_KEY, &format!("Deleted {n}: {}.", footprint_text(&f)));
                    navigate.go("/library");
                }
                Err(e) => {
                    busy.set(false);
                    error.set(Some(e));
                }
            }
        });
    };

    view! {
        <button type="button" class="danger small" data-testid="delete-template" on:click=ask>"Delete…"</button>
        <Show when=move || open.get()>
            <div class="card confirm" role="alertdialog" aria-labelledby="delete-title" data-testid="delete-confirm">
                <h2 id="delete-title">{move || format!("Delete {}?", name.get())}</h2>
                <p data-testid="delete-footprint">
                    {move || match footprint.get() {
                        Some(f) => {
                            let shipped = if f.shipped {
                                " It ships with the studio: it will not come back at the next start (an operator can restore shipped templates with `studio serve --restore-library`)."
                            } else {
                                ""
                            };
                            format!("This removes {} for good; nothing is kept hidden.{shipped}", footprint_text(&f))
                        }
                        None => "Counting what it holds…".to_string(),
                    }}
                </p>
                <label class="label" for="delete-name">{move || format!("Type {} to confirm", name.get())}</label>
                <input id="delete-name" data-testid="delete-name" autocomplete="off" prop:value=move || typed.get()
                    on:input=move |ev| typed.set(event_target_value(&ev))/>
                <ErrorNote error=error/>
                <div class="row">
                    <button type="button" class="danger" data-testid="delete-forever" disabled=move || !confirmed() on:click=delete>
                        "Delete forever"
                    </button>
                    <button type="button" class="ghost" on:click=move |_| open.set(false)>"Cancel"</button>
                </div>
            </div>
        </Show>
    }
}
