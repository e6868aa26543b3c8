//! The library: every template (shipped and the user's), searchable and filterable.

use api_types::templates::{TemplateList, TemplateSummary};
use leptos::prelude::*;

use crate::api::{self, enc, ApiError};
use crate::components::ErrorNote;

#[component]
pub fn LibraryPage() -> impl IntoView {
    let q = RwSignal::new(String::new());
    let tag = RwSignal::new(String::new());
    let language = RwSignal::new(String::new());
    let all = RwSignal::new(None::<Vec<TemplateSummary>>);
    let error = RwSignal::new(None::<ApiError>);
    // "Deleted …", left by the delete that opened this page.
    let deleted = RwSignal::new(None::<String>);
    Effect::new(move |_| deleted.set(crate::draft::session_take(crate::components::delete::DELETED_MESSAGE_KEY)));

    Effect::new(move |_| {
        api::spawn(async move {
            match api::get::<TemplateList>("/api/templates").await {
                Ok(v) => all.set(Some(v.templates)),
                Err(e) => error.set(Some(e)),
            }
        });
    });

    let tags = move || {
        let mut t: Vec<String> = all.get().unwrap_or_default().into_iter().flat_map(|s| s.template.tags).collect();
        t.sort();
        t.dedup();
        t
    };
    let languages = move || {
        let mut l: Vec<String> =
            all.get().unwrap_or_default().into_iter().map(|s| s.template.language).filter(|l| !l.is_empty()).collect();
        l.sort();
        l.dedup();
        l
    };
    // Filtering happens here over the one list the server sent (same rules as its `q`).
    let shown = move || {
        let words: Vec<String> = q.get().split_whitespace().map(|w| w.to_lowercase()).collect();
        let (tag, language) = (tag.get(), language.get());
        all.get()
            .unwrap_or_default()
            .into_iter()
            .filter(|s| {
                let t = &s.template;
                let hay = format!("{} {} {} {}", t.name, t.title, t.description, t.tags.join(" ")).to_lowercase();
                words.iter().all(|w| hay.contains(w.as_str()))
                    && (tag.is_empty() || t.tags.contains(&tag))
                    && (language.is_empty() || t.language == language)
            })
            .collect::<Vec<_>>()
    };

    view! {
        <div class="library">
            <div class="page-head">
                <h1>"Library"</h1>
                <p class="muted">"Ready-made prompts and the ones you saved. Open one in the playground to try it or make it yours."</p>
                {move || deleted.get().map(|m| view! { <div class="notice" role="status" data-testid="deleted-message">{m}</div> })}
            </div>
            <div class="filters">
                <input
                    class="search"
                    type="search"
                    data-testid="library-search"
                    placeholder="Search templates…"
                    prop:value=move || q.get()
                    on:input=move |ev| q.set(event_target_value(&ev))
                />
                <select data-testid="library-language" on:change=move |ev| language.set(event_target_value(&ev))>
                    <option value="">"All languages"</option>
                    {move || languages().into_iter().map(|l| view! { <option value=l.clone()>{language_name(&l)}</option> }).collect_view()}
                </select>
                <div class="chips">
                    <button class="chip" class:active=move || tag.get().is_empty() on:click=move |_| tag.set(String::new())>"all"</button>
                    {move || tags().into_iter().map(|t| {
                        let t2 = t.clone();
                        let t3 = t.clone();
                        view! { <button class="chip" class:active=move || tag.get() == t2 on:click=move |_| tag.set(t3.clone())>{t}</button> }
                    }).collect_view()}
                </div>
            </div>
            <ErrorNote error=error/>
            {move || match all.get() {
                None => view! { <p class="muted">"Loading…"</p> }.into_any(),
                Some(_) => {
                    let list = shown();
                    if list.is_empty() {
                        view! { <p class="empty">"No template matches. Try fewer words or another tag."</p> }.into_any()
                    } else {
                        view! {
                            <div class="cards" data-testid="library-cards">
                                {list.into_iter().map(|s| view! { <TemplateCard summary=s/> }).collect_view()}
                            </div>
                        }.into_any()
                    }
                }
            }}
        </div>
    }
}

pub fn language_name(code: &str) -> String {
    match code {
        "ko" => "한국어 (Korean)".into(),
        "ja" => "日本語 (Japanese)".into(),
        "en" => "English".into(),
        "zh" => "中文 (Chinese)".into(),
        other => other.to_string(),
    }
}

#[component]
fn TemplateCard(summary: TemplateSummary) -> impl IntoView {
    let t = summary.template;
    let title = t.display_title().to_string();
    let ex = summary.example.map(|e| (e.input, e.output));
    let version = t.latest_version;
    let production = t.labels.get("production").copied();
    let lang = language_name(&t.language);
    let (name, description, tags, source) = (t.name, t.description, t.tags, t.source);
    view! {
        <article class="tcard" data-testid="template-card" data-name=name.clone()>
            <div class="tcard-head">
                <h3>{title}</h3>
                <span class="badge">{if source == "library" { "shipped" } else { "yours" }}</span>
            </div>
            <p class="desc">{description}</p>
            {ex.map(|(i, o)| view! {
                <div class="example">
                    <div class="ex-in">{i}</div>
                    <div class="ex-arrow">"→"</div>
                    <div class="ex-out">{o}</div>
                </div>
            })}
            <div class="tcard-meta">
                <span>{lang}</span>
                <span>{format!("v{version}")}</span>
                {production.map(|p| view! { <span class="label-badge">{format!("production: v{p}")}</span> })}
                {tags.into_iter().map(|t| view! { <span class="tag">{t}</span> }).collect_view()}
            </div>
            <div class="tcard-actions">
                <a class="button primary small" href=format!("/t/{}", enc(&name))>"Open in playground"</a>
                <a class="button ghost small" href=format!("/templates/{}", enc(&name))>"Versions & history"</a>
            </div>
        </article>
    }
}
