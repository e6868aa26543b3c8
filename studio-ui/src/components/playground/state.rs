//! The playground's state (a struct of signals, shared through a context) and what its
//! buttons do: run (streamed, stoppable), stop, save, discard.

use std::collections::BTreeMap;

use api_types::completions::{Completion, PrefillProgress};
use api_types::templates::{CreateTemplate, CreateVersion, CreatedTemplate, CreatedVersion, RenderedPrompt};
use api_types::GenerationParams;
use leptos::prelude::*;

use crate::api::{self, enc, Abort, ApiError};
use crate::code::{CodeTarget, Lang};
use crate::components::{RunClock, RunStats};
use crate::draft::{self, Draft, DraftSpec};
use crate::tokens::{Piece, PieceBuilder};

/// Where the last values typed into a template's variables are kept in this browser.
pub fn vars_key(template: Option<&str>) -> String {
    format!("studio.vars.{}", template.unwrap_or(""))
}

/// Where a save that opens a new page leaves its "Saved" message for that page
/// (session storage: this tab only).
pub const SAVED_MESSAGE_KEY: &str = "studio.saved";

/// `POST /api/draft/completions`: the draft's spec and a template call.
#[derive(serde::Serialize)]
pub struct DraftRun<'a> {
    pub spec: &'a DraftSpec,
    pub variables: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<usize>,
    /// Asks for the closing usage chunk (prompt and cached tokens for the stats).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<api_types::openai::StreamOptions>,
    #[serde(flatten)]
    pub params: GenerationParams,
}

/// Everything the playground's parts read and change.
#[derive(Clone, Copy)]
pub struct Playground {
    /// The saved template in the URL (`/t/{name}`), if any.
    pub name: Memo<Option<String>>,
    pub draft: RwSignal<Draft>,
    /// The version as loaded or saved: a draft equal to it is not "unsaved".
    pub original: RwSignal<Option<Draft>>,
    pub loaded: RwSignal<bool>,
    pub restored: RwSignal<bool>,
    pub load_error: RwSignal<Option<ApiError>>,
    /// What the server rendered for the current draft.
    pub preview: RwSignal<RenderedPrompt>,
    pub preview_error: RwSignal<Option<ApiError>>,
    pub run_error: RwSignal<Option<ApiError>>,
    /// Why Run was refused (a variable with no value, an empty prompt), at its field.
    pub check_error: RwSignal<Option<ApiError>>,
    /// Number fields whose text the browser reads as no number (`1e`), by field.
    pub bad_numbers: RwSignal<Vec<&'static str>>,
    pub save_error: RwSignal<Option<ApiError>>,
    pub pieces: RwSignal<Vec<Piece>>,
    /// How far the server has read a long prompt, until the first token arrives.
    pub prefill: RwSignal<Option<PrefillProgress>>,
    pub stats: RwSignal<RunStats>,
    pub running: RwSignal<bool>,
    pub abort: StoredValue<Option<Abort>, crate::api::AbortStorage>,
    pub save_open: RwSignal<bool>,
    pub save_note: RwSignal<String>,
    pub new_name: RwSignal<String>,
    pub save_description: RwSignal<String>,
    pub save_tags: RwSignal<String>,
    pub save_language: RwSignal<String>,
    pub saved_msg: RwSignal<Option<String>>,
    pub code_open: RwSignal<bool>,
    pub code_lang: RwSignal<Lang>,
    /// The served model's name (for the code snippets).
    pub model: RwSignal<String>,
    /// Whether the served model has a chat template (None: not known yet).
    pub model_chat: RwSignal<Option<bool>>,
    /// What "View code" calls a saved template by: `version` (the one open), `production`
    /// or `latest`.
    pub code_ref: RwSignal<String>,
    /// This template's (or the unsaved draft's) recent runs, newest first.
    pub history: RwSignal<Vec<crate::history::HistoryEntry>>,
    /// The draft came from a share link (and the one it replaced is kept).
    pub shared: RwSignal<bool>,
    /// The share link made for the draft, or why none could be.
    pub share_link: RwSignal<Option<Result<String, String>>>,
}

impl Playground {
    pub fn new(name: Memo<Option<String>>) -> Self {
        Self {
            name,
            draft: RwSignal::new(Draft::default()),
            original: RwSignal::new(None),
            loaded: RwSignal::new(false),
            restored: RwSignal::new(false),
            load_error: RwSignal::new(None),
            preview: RwSignal::new(RenderedPrompt::default()),
            preview_error: RwSignal::new(None),
            run_error: RwSignal::new(None),
            check_error: RwSignal::new(None),
            bad_numbers: RwSignal::new(Vec::new()),
            save_error: RwSignal::new(None),
            pieces: RwSignal::new(Vec::new()),
            prefill: RwSignal::new(None),
            stats: RwSignal::new(RunStats::default()),
            running: RwSignal::new(false),
            abort: StoredValue::new_with_storage(None),
            save_open: RwSignal::new(false),
            save_note: RwSignal::new(String::new()),
            new_name: RwSignal::new(String::new()),
            save_description: RwSignal::new(String::new()),
            save_tags: RwSignal::new(String::new()),
            save_language: RwSignal::new(String::new()),
            saved_msg: RwSignal::new(None),
            code_open: RwSignal::new(false),
            code_lang: RwSignal::new(Lang::Curl),
            model: RwSignal::new(String::from("default")),
            model_chat: RwSignal::new(None),
            code_ref: RwSignal::new(String::from("version")),
            history: RwSignal::new(Vec::new()),
            shared: RwSignal::new(false),
            share_link: RwSignal::new(None),
        }
    }

    /// The playground of the page this part is on.
    pub fn get() -> Self {
        expect_context::<Playground>()
    }

    /// A text control bound to one field of the draft: its value, and what writes the text
    /// typed into it.
    pub fn bind(
        self,
        get: impl Fn(&Draft) -> String + Copy + 'static,
        set: impl Fn(&mut Draft, String) + Copy + 'static,
    ) -> (impl Fn() -> String + Copy + 'static, impl Fn(String) + Copy + 'static) {
        let draft = self.draft;
        (move || draft.with(get), move |v| draft.update(|d| set(d, v)))
    }

    /// A field error from the run check, the run or the live preview, shown beside its
    /// control.
    pub fn any_err(self) -> Signal<Option<ApiError>> {
        Signal::derive(move || {
            self.check_error.get().or_else(|| self.run_error.get()).or_else(|| self.preview_error.get())
        })
    }

    /// The parameter error, checked in the browser as the person types (the server is not
    /// asked: a parameter never changes the preview).
    pub fn param_error(self) -> Signal<Option<ApiError>> {
        Signal::derive(move || {
            if let Some(field) = self.bad_numbers.with(|b| b.first().copied()) {
                let f = crate::draft::NUMBER_FIELDS.iter().find(|f| f.field == field)?;
                let what = if f.whole { "a whole number" } else { "a number" };
                let message = format!("That is not a number: enter {what} ({}).", f.range_text());
                return Some(ApiError::field(api_types::template::FieldError::new(field, message)));
            }
            self.draft.with(|d| d.params.problem()).map(ApiError::field)
        })
    }

    /// The values of the variables the prompt needs (empty where none was typed).
    pub fn variables_for_run(self) -> BTreeMap<String, String> {
        self.draft.with(|d| {
            d.variable_names()
                .into_iter()
                .map(|n| (n.clone(), d.variables.get(&n).cloned().unwrap_or_default()))
                .collect()
        })
    }

    /// Runs the draft, streaming the answer into the token view; refused, with the reason
    /// at its field, while a parameter is wrong, the prompt is empty or a variable has no
    /// value.
    pub fn run(self) {
        if self.running.get_untracked() {
            return;
        }
        if self.param_error().get_untracked().is_some() {
            return;
        }
        let problem = self.draft.with_untracked(Draft::run_problem).map(ApiError::field);
        if problem.is_some() {
            self.check_error.set(problem);
            return;
        }
        self.check_error.set(None);
        let spec = self.draft.with_untracked(|d| d.spec());
        let variables = self.variables_for_run();
        let ran = self.draft.get_untracked();
        let started = api::now_ms();
        self.running.set(true);
        self.run_error.set(None);
        self.pieces.set(Vec::new());
        self.prefill.set(None);
        self.stats.set(RunStats::default());
        let handle = Abort::new();
        self.abort.set_value(Some(handle.clone()));
        api::spawn(async move {
            let body = DraftRun {
                spec: &spec,
                variables,
                stream: Some(true),
                logprobs: Some(5),
                stream_options: Some(api_types::openai::StreamOptions { include_usage: true }),
                params: GenerationParams::default(),
            };
            let mut clock = RunClock::start();
            let mut builder = PieceBuilder::default();
            let on_progress = move |p: PrefillProgress| self.prefill.set(Some(p));
            let on_chunk = |chunk: Completion| {
                self.prefill.set(None);
                let Some(choice) = chunk.choices.first() else {
                    // The closing usage chunk.
                    clock.chunk(&chunk, false);
                    self.stats.set(clock.stats.clone());
                    return;
                };
                let token = choice.logprobs.as_ref().is_some_and(|l| !l.token_logprobs.is_empty());
                clock.chunk(&chunk, token);
                builder.push_choice(choice);
                self.pieces.set(builder.pieces.clone());
                self.stats.set(clock.stats.clone());
            };
            let result =
                api::stream_with_progress("/api/draft/completions", &body, &handle, on_chunk, on_progress).await;
            self.prefill.set(None);
            match result {
                Err(e) if e.code.as_deref() == Some("aborted") => {
                    self.stats.update(|s| s.finish = Some("stopped".into()))
                }
                Err(e) => self.run_error.set(Some(e)),
                Ok(()) => {}
            }
            self.remember_run(started, ran);
            self.running.set(false);
        });
    }

    /// Keeps a run that produced text in the history (a refused run keeps nothing).
    fn remember_run(self, started: f64, ran: Draft) {
        let output: String = self.pieces.with_untracked(|p| p.iter().map(|p| p.text.as_str()).collect());
        if output.is_empty() && self.run_error.with_untracked(Option::is_some) {
            return;
        }
        let stats = self.stats.get_untracked();
        let mut entry = crate::history::HistoryEntry::new(started, ran, &output);
        entry.finish = stats.finish;
        entry.ttft_ms = stats.ttft_ms;
        entry.tokens = stats.tokens;
        entry.tokens_per_s = stats.tokens_per_s;
        let key = crate::history::history_key(self.name.get_untracked().as_deref());
        self.history.update(|h| {
            crate::history::push(h, entry);
            crate::history::store(&key, h);
        });
    }

    pub fn stop(self) {
        self.abort.with_value(|a| {
            if let Some(a) = a {
                a.abort();
            }
        });
    }

    /// Saves the draft as a new version of its template, or (`as_new`) as a new template,
    /// then opens the saved version. A new template opens on a new page: everything the
    /// new page needs (the values typed, the "Saved" message) is stored first, and the
    /// page moves last, through `navigate` owned by this call (the save panel and this
    /// page are gone once it moves).
    pub fn save(self, as_new: bool, navigator: crate::nav::Navigator) {
        let navigate = navigator.owned();
        self.save_error.set(None);
        self.saved_msg.set(None);
        let d = self.draft.get_untracked();
        let note = self.save_note.get_untracked();
        let target = if as_new { None } else { d.template.clone() };
        let new_name = self.new_name.get_untracked().trim().to_string();
        if target.is_none() {
            if let Some(message) = draft::name_problem(&new_name) {
                let e = api_types::template::FieldError::new("name", message);
                self.save_error.set(Some(ApiError::field(e)));
                return;
            }
        }
        let description = self.save_description.get_untracked().trim().to_string();
        let tags: Vec<String> =
            self.save_tags.get_untracked().split(',').map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect();
        let language = self.save_language.get_untracked();
        api::spawn(async move {
            let spec = d.spec();
            let result = match &target {
                Some(name) => {
                    let body = CreateVersion { spec, note };
                    api::post::<CreatedVersion, _>(&format!("/api/templates/{}/versions", enc(name)), &body)
                        .await
                        .map(|v| (name.clone(), v.version))
                }
                None => {
                    let body = CreateTemplate {
                        name: new_name.clone(),
                        title: d.title.clone(),
                        description,
                        tags,
                        language,
                        spec,
                        note,
                    };
                    api::post::<CreatedTemplate, _>("/api/templates", &body)
                        .await
                        .map(|v| (new_name.clone(), v.version))
                }
            };
            let (name, version) = match result {
                Ok(saved) => saved,
                Err(e) => {
                    self.save_error.set(Some(e));
                    return;
                }
            };
            let message = format!("Saved {name} version {}", version.version);
            draft::storage_remove(&Draft::storage_key(Some(&name)));
            if let Ok(v) = serde_json::to_string(&d.variables) {
                draft::storage_set(&vars_key(Some(&name)), &v);
            }
            if target.is_none() {
                draft::storage_remove(&Draft::storage_key(None));
                draft::session_set(SAVED_MESSAGE_KEY, &message);
                navigate(&format!("/t/{name}"));
                return;
            }
            let mut kept = Draft::from_version(&name, &d.title, &version);
            kept.variables = d.variables.clone();
            self.original.set(Some(kept.clone()));
            self.draft.set(kept);
            self.restored.set(false);
            self.save_note.set(String::new());
            self.saved_msg.set(Some(message));
            self.save_open.set(false);
            navigate(&format!("/t/{name}"));
        });
    }

    /// Back to the version as saved (or an empty draft).
    /// Makes a link that opens this draft's content in anyone's playground, and copies it.
    pub fn share(self) {
        let link = self.draft.with(crate::draft::share_param).map(|param| {
            #[cfg(feature = "hydrate")]
            let origin = web_sys::window().and_then(|w| w.location().origin().ok()).unwrap_or_default();
            #[cfg(not(feature = "hydrate"))]
            let origin = String::new();
            format!("{origin}/?draft={param}")
        });
        #[cfg(feature = "hydrate")]
        if let (Ok(url), Some(w)) = (&link, web_sys::window()) {
            // Copying may be refused (no permission, no focus); the link is shown either way.
            let _ = w.navigator().clipboard().write_text(url);
        }
        self.share_link.set(Some(link));
    }

    /// Goes back to the draft a share link replaced.
    pub fn unshare(self) {
        let before = crate::draft::storage_get(crate::draft::BEFORE_SHARE_KEY)
            .and_then(|s| serde_json::from_str::<Draft>(&s).ok())
            .unwrap_or_default();
        crate::draft::storage_remove(crate::draft::BEFORE_SHARE_KEY);
        self.draft.set(before);
        self.shared.set(false);
    }

    pub fn discard(self) {
        self.draft.set(self.original.get_untracked().unwrap_or_default());
        self.restored.set(false);
    }

    /// What "View code" shows snippets for.
    pub fn code_target(self) -> CodeTarget {
        let d = self.draft.get();
        let origin = {
            #[cfg(feature = "hydrate")]
            {
                web_sys::window().and_then(|w| w.location().origin().ok()).unwrap_or_default()
            }
            #[cfg(not(feature = "hydrate"))]
            {
                "http://127.0.0.1:8080".to_string()
            }
        };
        CodeTarget {
            origin,
            template: d.template.clone().map(|t| {
                let reference = match self.code_ref.get().as_str() {
                    "version" => d.base_version.map(|v| v.to_string()),
                    other => Some(other.to_string()),
                };
                (t, reference)
            }),
            variables: self.variables_for_run(),
            prompt: self.preview.with(|p| p.prompt.clone()),
            parameters: d.params.as_written(),
            model: self.model.get(),
            chat: d.mode == api_types::template::PromptMode::Chat,
        }
    }
}
