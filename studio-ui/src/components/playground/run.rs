//! The run card (run or stop, save, view code, links to the template's pages), the save
//! panel and the code snippets.

use leptos::prelude::*;
use leptos_router::hooks::use_navigate;

use crate::code::Lang;
use crate::components::playground::Playground;
use crate::components::{field_error, ErrorNote};

#[component]
pub fn RunCard() -> impl IntoView {
    let pg = Playground::get();
    let draft = pg.draft;
    view! {
        <div class="card run-card">
            <div class="run-buttons">
                <Show
                    when=move || pg.running.get()
                    fallback=move || view! { <button class="primary big" data-testid="run" on:click=move |_| pg.run()>"▶ Run"</button> }
                >
                    <button class="danger big" data-testid="stop" on:click=move |_| pg.stop()>"■ Stop"</button>
                </Show>
                <button class="secondary" data-testid="save-open" on:click=move |_| pg.save_open.update(|o| *o = !*o)>"Save…"</button>
                <button class="ghost" data-testid="code-open" on:click=move |_| pg.code_open.update(|o| *o = !*o)>"</> View code"</button>
                {move || draft.with(|d| d.template.clone()).map(|t| view! {
                    <a class="ghost button" href=format!("/templates/{t}")>"History"</a>
                    <a class="ghost button" href=format!("/compare?template={t}")>"Compare"</a>
                    <a class="ghost button" href=format!("/evaluate/{t}")>"Evaluate"</a>
                })}
            </div>
            <Show when=move || pg.save_open.get()>
                <SavePanel/>
            </Show>
            {move || pg.saved_msg.get().map(|m| view! { <div class="ok" data-testid="saved">{m}</div> })}
        </div>
    }
}

/// Name (for a new template) and note, then save.
#[component]
fn SavePanel() -> impl IntoView {
    let pg = Playground::get();
    let draft = pg.draft;
    let navigate = StoredValue::new_local(use_navigate());
    let save = move |as_new: bool| pg.save(as_new, move |path, options| navigate.with_value(|n| n(path, options)));
    view! {
        <div class="save-panel" data-testid="save-panel">
            <Show when=move || draft.with(|d| d.template.is_none())>
                <label class="label small">"Template name (letters, digits, dashes)"</label>
                <input data-testid="save-name" placeholder="my-prompt" prop:value=move || pg.new_name.get() on:input=move |ev| pg.new_name.set(event_target_value(&ev))/>
                {field_error(pg.save_error.into(), "name")}
            </Show>
            <label class="label small">"What changed (optional)"</label>
            <input data-testid="save-note" placeholder="e.g. two more negative examples" prop:value=move || pg.save_note.get() on:input=move |ev| pg.save_note.set(event_target_value(&ev))/>
            <div class="row">
                {move || if draft.with(|d| d.template.is_some()) {
                    view! { <button class="primary" data-testid="save-version" on:click=move |_| save(false)>"Save as new version"</button> }.into_any()
                } else {
                    view! { <button class="primary" data-testid="save-new" on:click=move |_| save(true)>"Save template"</button> }.into_any()
                }}
            </div>
            <ErrorNote error=pg.save_error/>
        </div>
    }
}

/// Ready-to-copy snippets that call the current prompt from a program.
#[component]
pub fn CodePanel() -> impl IntoView {
    let pg = Playground::get();
    let code_lang = pg.code_lang;
    view! {
        <Show when=move || pg.code_open.get()>
            <div class="card code-card" data-testid="code-panel">
                <div class="tabs">
                    {[(Lang::Curl, "curl"), (Lang::Python, "Python"), (Lang::JavaScript, "JavaScript")]
                        .into_iter()
                        .map(|(l, label)| view! {
                            <button class="tab" class:active=move || code_lang.get() == l on:click=move |_| code_lang.set(l)>{label}</button>
                        })
                        .collect_view()}
                </div>
                <pre class="code" data-testid="code">{move || pg.code_target().snippet(code_lang.get())}</pre>
                <button class="ghost small" on:click=move |_| {
                    #[cfg(feature = "hydrate")]
                    if let Some(w) = web_sys::window() {
                        let _ = w.navigator().clipboard().write_text(&pg.code_target().snippet(code_lang.get_untracked()));
                    }
                }>"Copy"</button>
            </div>
        </Show>
    }
}
