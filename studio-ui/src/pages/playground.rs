//! The playground: design a few-shot prompt, see exactly what the model will read, run it
//! (streamed, stoppable), inspect token confidence, save it as a template or a version.
//! The page loads the draft, keeps it in this browser and renders it live; its parts
//! (`components::playground`) share its state through a context.

use std::time::Duration;

use api_types::completions::ModelList;
use api_types::template::PromptMode;
use api_types::templates::{RenderDraft, RenderedPrompt, TemplateDetail, VersionDetail};
use leptos::prelude::*;
use leptos_router::hooks::{use_params_map, use_query_map};

use crate::api::{self, enc};
use crate::components::playground::{
    vars_key, CodePanel, DraftHeader, DraftText, ExamplesEditor, FormatPanel, InputCard, ModeCard,
    OutputConstraintCard, ParametersPanel, Playground, PromptPreview, RunCard, RunHistory, RunOutput,
    SAVED_MESSAGE_KEY,
};
use crate::components::{run_shortcuts, RunStats, TemplateNotFound};
use crate::draft::{self, Draft};

#[component]
pub fn PlaygroundPage() -> impl IntoView {
    let params = use_params_map();
    let query = use_query_map();
    let pg = Playground::new(Memo::new(move |_| params.with(|p| p.get("name"))));
    provide_context(pg);
    let Playground { name, draft, original, loaded, restored, load_error, preview, preview_error, .. } = pg;

    Effect::new(move |_| {
        api::spawn(async move {
            if let Ok(m) = api::get::<ModelList>("/v1/models").await {
                if let Some(model) = m.data.into_iter().next() {
                    pg.model_chat.set(Some(model.chat_template));
                    pg.model.set(model.id);
                }
            }
        });
    });

    // Ctrl/Cmd+Enter runs, Esc stops.
    run_shortcuts(move || pg.run(), move || pg.stop());

    // The template in the URL does not exist: a not-found page instead of an editor.
    let missing = RwSignal::new(false);
    let missing_name = Signal::derive(move || name.get().unwrap_or_default());

    // Load: a draft kept in this browser wins (nothing typed is lost); else the version.
    Effect::new(move |_| {
        // "Saved …", left by the save that opened this page.
        if let Some(m) = draft::session_take(SAVED_MESSAGE_KEY) {
            pg.saved_msg.set(Some(m));
        }
        let name = name.get();
        let version = query.with(|q| q.get("v"));
        loaded.set(false);
        restored.set(false);
        pg.shared.set(false);
        load_error.set(None);
        missing.set(false);
        pg.pieces.set(Vec::new());
        pg.stats.set(RunStats::default());
        pg.history.set(crate::history::load(&crate::history::history_key(name.as_deref())));
        let key = Draft::storage_key(name.as_deref());
        let kept = draft::storage_get(&key).and_then(|s| serde_json::from_str::<Draft>(&s).ok());
        match name {
            None => {
                original.set(None);
                let shared = query.with(|q| q.get("draft")).and_then(|p| draft::from_share_param(&p));
                if let Some(d) = shared {
                    // The draft this browser had is kept apart, for "Back to my draft".
                    if let Some(s) = kept.and_then(|k| serde_json::to_string(&k).ok()) {
                        draft::storage_set(draft::BEFORE_SHARE_KEY, &s);
                    }
                    draft.set(d);
                    pg.shared.set(true);
                } else if let Some(d) = kept {
                    draft.set(d);
                    restored.set(true);
                } else {
                    draft.set(Draft::default());
                }
                loaded.set(true);
            }
            Some(name) => api::spawn(async move {
                let path = match &version {
                    Some(v) => format!("/api/templates/{}/versions/{}", enc(&name), enc(v)),
                    None => format!("/api/templates/{}/versions/latest", enc(&name)),
                };
                let meta = api::get::<TemplateDetail>(&format!("/api/templates/{}", enc(&name))).await;
                match (meta, api::get::<VersionDetail>(&path).await) {
                    (Ok(meta), Ok(v)) => {
                        let mut d = Draft::from_version(&name, &meta.template.title, &v.version);
                        // The last input typed for this template, kept apart from any version.
                        if let Some(vars) =
                            draft::storage_get(&vars_key(Some(&name))).and_then(|s| serde_json::from_str(&s).ok())
                        {
                            d.variables = vars;
                        }
                        original.set(Some(d.clone()));
                        match kept.filter(|k| version.is_none() && k.base_version == d.base_version) {
                            Some(k) if !k.same_content(&d) => {
                                draft.set(k);
                                restored.set(true);
                            }
                            _ => draft.set(d),
                        }
                    }
                    (Err(e), _) if e.status == 404 => missing.set(true),
                    (Err(e), _) | (_, Err(e)) => load_error.set(Some(e)),
                }
                loaded.set(true);
            }),
        }
    });

    // Keep unsaved work in local storage.
    Effect::new(move |_| {
        let d = draft.get();
        if !loaded.get() {
            return;
        }
        let key = Draft::storage_key(name.get_untracked().as_deref());
        if let Ok(v) = serde_json::to_string(&d.variables) {
            draft::storage_set(&vars_key(name.get_untracked().as_deref()), &v);
        }
        let same_as_saved = original.with(|o| o.as_ref().is_some_and(|o| o.same_content(&d)));
        if same_as_saved || Draft::default().same_content(&d) {
            draft::storage_remove(&key);
        } else if let Ok(s) = serde_json::to_string(&d) {
            draft::storage_set(&key, &s);
        }
    });

    // A refused run's reason goes once the draft is edited.
    Effect::new(move |_| {
        draft.track();
        pg.check_error.set(None);
    });

    // Live preview and token count, debounced while typing. Parameters are left out (they
    // do not change the prompt; the browser checks them), so a wrong one never empties it.
    let preview_seq = StoredValue::new(0u64);
    Effect::new(move |_| {
        let body = RenderDraft {
            spec: draft.with(|d| d.preview_spec()),
            variables: draft.with(|d| d.variables.clone()),
            partial: true,
        };
        if !loaded.get() {
            return;
        }
        preview_seq.update_value(|n| *n += 1);
        let mine = preview_seq.get_value();
        set_timeout(
            move || {
                if preview_seq.get_value() != mine {
                    return;
                }
                api::spawn(async move {
                    let r = api::post::<RenderedPrompt, _>("/api/render", &body).await;
                    if preview_seq.get_value() != mine {
                        return;
                    }
                    match r {
                        Ok(v) => {
                            preview.set(v);
                            preview_error.set(None);
                        }
                        Err(e) => preview_error.set(Some(e)),
                    }
                });
            },
            Duration::from_millis(250),
        );
    });

    let chat = move || draft.with(|d| d.mode == PromptMode::Chat);
    view! {
        <Show when=move || missing.get()>
            <TemplateNotFound name=missing_name/>
        </Show>
        <div class="playground" hidden=move || missing.get()>
            <section class="col design">
                <DraftHeader/>
                <ModeCard/>
                <div class="card">
                    <DraftText
                        label=Signal::derive(move || if chat() { "System prompt" } else { "Instruction" })
                        placeholder=Signal::derive(move || if chat() {
                            "Who the assistant is and how it answers, e.g. \"You answer movie questions in one short sentence.\""
                        } else {
                            "Tell the model what to do, e.g. \"Classify the sentiment of each movie review as 긍정 or 부정.\""
                        })
                        get=|d| d.instruction.clone()
                        set=|d, v| d.instruction = v
                        field="instruction"
                        testid="instruction"
                    />
                </div>
                <ExamplesEditor/>
                <InputCard/>
                <Show when=move || !chat()>
                    <FormatPanel/>
                </Show>
                <OutputConstraintCard/>
                <PromptPreview/>
            </section>
            <section class="col side">
                <RunCard/>
                <RunOutput/>
                <RunHistory/>
                <CodePanel/>
                <ParametersPanel/>
            </section>
        </div>
    }
}
