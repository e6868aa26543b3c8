//! The run card (run or stop, save, view code, links to the template's pages), the save
//! panel and the code snippets.

use leptos::prelude::*;

use crate::code::Lang;
use crate::components::playground::Playground;
use crate::components::{field_error, ErrorNote, Kbd};
use crate::draft;

#[component]
pub fn RunCard() -> impl IntoView {
    let pg = Playground::get();
    let draft = pg.draft;
    view! {
        <div class="card run-card">
            <div class="run-buttons">
                <Show
                    when=move || pg.running.get()
                    fallback=move || view! { <button class="primary big" data-testid="run" title="Run (Ctrl+Enter)" on:click=move |_| pg.run()>"▶ Run "<Kbd keys="Ctrl+Enter"/></button> }
                >
                    <button class="danger big" data-testid="stop" title="Stop (Esc)" on:click=move |_| pg.stop()>"■ Stop "<Kbd keys="Esc"/></button>
                </Show>
                <button class="secondary" data-testid="save-open" on:click=move |_| open_save(pg)>"Save…"</button>
                <button class="ghost" data-testid="code-open" on:click=move |_| pg.code_open.update(|o| *o = !*o)>"</> View code"</button>
                {move || draft.with(|d| d.template.clone()).map(|t| view! {
                    <a class="ghost button" href=format!("/templates/{t}")>"History"</a>
                    <a class="ghost button" href=format!("/compare?template={t}")>"Compare"</a>
                    <a class="ghost button" href=format!("/evaluate/{t}")>"Evaluate"</a>
                    <a class="ghost button" href=format!("/t/{t}/batch")>"Batch"</a>
                })}
            </div>
            <Show when=move || pg.save_open.get()>
                <SavePanel/>
            </Show>
            {move || pg.saved_msg.get().map(|m| view! { <div class="ok" data-testid="saved">{m}</div> })}
        </div>
    }
}

/// Opens (or closes) the save panel; a new template's name is suggested from its title.
fn open_save(pg: Playground) {
    let opening = !pg.save_open.get_untracked();
    pg.save_open.set(opening);
    // On a narrow screen Save sits in the bottom bar, far from the panel: bring it into view.
    #[cfg(feature = "hydrate")]
    if opening {
        request_animation_frame(|| {
            if let Some(panel) = web_sys::window()
                .and_then(|w| w.document())
                .and_then(|d| d.query_selector("[data-testid=save-panel]").ok().flatten())
            {
                panel.scroll_into_view();
            }
        });
    }
    if !opening || pg.draft.with_untracked(|d| d.template.is_some()) || !pg.new_name.get_untracked().is_empty() {
        return;
    }
    let title = pg.draft.with_untracked(|d| d.title.clone());
    if pg.save_language.get_untracked().is_empty() {
        let text = pg.draft.with_untracked(|d| format!("{} {}", d.title, d.instruction));
        pg.save_language.set(draft::guess_language(&text).to_string());
    }
    match draft::suggest_name(&title) {
        Some(name) => pg.new_name.set(name),
        // Korean or Japanese titles: the first free `template-N`.
        None => crate::api::spawn(async move {
            let taken: Vec<String> = crate::api::get::<api_types::templates::TemplateList>("/api/templates")
                .await
                .map(|l| l.templates.into_iter().map(|t| t.template.name).collect())
                .unwrap_or_default();
            let free = (1..).map(|n| format!("template-{n}")).find(|n| !taken.contains(n)).unwrap_or_default();
            if pg.new_name.get_untracked().is_empty() {
                pg.new_name.set(free);
            }
        }),
    }
}

/// Name, description, tags and language (for a new template) and a note, then save.
#[component]
fn SavePanel() -> impl IntoView {
    let pg = Playground::get();
    let draft = pg.draft;
    // Cloned out at each click: the save outlives this panel, which closes as it ends.
    let navigate = crate::nav::Navigator::new();
    let save = move |as_new: bool| pg.save(as_new, navigate);
    view! {
        <div class="save-panel" data-testid="save-panel">
            <Show when=move || draft.with(|d| d.template.is_none())>
                <label class="label small" for="save-name">"Template name"</label>
                <input id="save-name" data-testid="save-name" placeholder="movie-review" autocomplete="off" spellcheck="false" prop:value=move || pg.new_name.get() on:input=move |ev| { pg.save_error.set(None); pg.new_name.set(event_target_value(&ev)) }/>
                <p class="hint" data-testid="save-name-rule">"Used in the API URL: a-z, 0-9, '-' and '_', starting with a letter or digit (up to 64). Suggested from the title."</p>
                {field_error(pg.save_error.into(), "name")}
                <label class="label small" for="save-description">"Description (optional)"</label>
                <input id="save-description" data-testid="save-description" placeholder="What the prompt is for" prop:value=move || pg.save_description.get() on:input=move |ev| pg.save_description.set(event_target_value(&ev))/>
                <div class="save-grid">
                    <div>
                        <label class="label small" for="save-tags">"Tags (comma-separated)"</label>
                        <input id="save-tags" data-testid="save-tags" placeholder="sentiment, reviews" prop:value=move || pg.save_tags.get() on:input=move |ev| pg.save_tags.set(event_target_value(&ev))/>
                    </div>
                    <div>
                        <label class="label small" for="save-language">"Language"</label>
                        <select id="save-language" data-testid="save-language" on:change=move |ev| pg.save_language.set(event_target_value(&ev))>
                            {[("ko", "Korean"), ("ja", "Japanese"), ("en", "English"), ("", "Other / mixed")].into_iter().map(|(code, name)| view! {
                                <option value=code selected=move || pg.save_language.get() == code>{name}</option>
                            }).collect_view()}
                        </select>
                    </div>
                </div>
            </Show>
            <label class="label small" for="save-note">"What changed (optional)"</label>
            <input id="save-note" data-testid="save-note" placeholder="e.g. two more negative examples" prop:value=move || pg.save_note.get() on:input=move |ev| pg.save_note.set(event_target_value(&ev))/>
            <div class="row">
                {move || if draft.with(|d| d.template.is_some()) {
                    view! { <button class="primary" data-testid="save-version" on:click=move |_| save(false)>"Save as new version"</button> }.into_any()
                } else {
                    view! { <button class="primary" data-testid="save-new" on:click=move |_| save(true)>"Save template"</button> }.into_any()
                }}
            </div>
            <ErrorNote error=pg.save_error beside_fields=true/>
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
                <Show when=move || pg.draft.with(|d| d.template.is_some())>
                    <div class="row code-ref">
                        <label class="label small" for="code-ref">"Call"</label>
                        <select id="code-ref" data-testid="code-ref" on:change=move |ev| pg.code_ref.set(event_target_value(&ev))>
                            <option value="version" selected=move || pg.code_ref.get() == "version">
                                {move || pg.draft.with(|d| d.base_version.map(|v| format!("this version (v{v})")).unwrap_or_else(|| "this version".into()))}
                            </option>
                            <option value="production" selected=move || pg.code_ref.get() == "production">"the production label (moves with rollbacks)"</option>
                            <option value="latest" selected=move || pg.code_ref.get() == "latest">"the latest version"</option>
                        </select>
                    </div>
                </Show>
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
