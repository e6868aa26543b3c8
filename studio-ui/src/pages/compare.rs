//! Compare: 2-4 variants (versions of one template, or the browser's draft with changed
//! parameters) on the same input, run together, outputs and timings in columns.

use std::collections::BTreeMap;

use api_types::completions::Completion;
use api_types::templates::{TemplateDetail, TemplateList, VersionList};
use api_types::GenerationParams;
use leptos::prelude::*;
use leptos_router::hooks::{use_navigate, use_query_map};

use crate::api::{self, enc, Abort, ApiError};
use crate::components::playground::DraftRun;
use crate::components::{run_shortcuts, ErrorNote, Kbd, RunClock, RunStats, Stat, VariableFields};
use crate::draft::{self, Draft};

#[derive(Debug, Clone, PartialEq)]
struct Column {
    /// A version number, or "draft" (the playground's unsaved draft of this template).
    variant: String,
    temperature: String,
    output: String,
    running: bool,
    stats: RunStats,
    error: Option<ApiError>,
}

impl Column {
    fn new(variant: String) -> Self {
        Self {
            variant,
            temperature: String::new(),
            output: String::new(),
            running: false,
            stats: RunStats::default(),
            error: None,
        }
    }
}

/// `POST /v1/templates/{name}@{version}/completions`, as a column sends it.
#[derive(serde::Serialize)]
struct TemplateRun {
    variables: BTreeMap<String, String>,
    stream: Option<bool>,
    stream_options: Option<api_types::openai::StreamOptions>,
    #[serde(flatten)]
    params: GenerationParams,
}

#[component]
pub fn ComparePage() -> impl IntoView {
    let query = use_query_map();
    let navigate = use_navigate();
    let template = Memo::new(move |_| query.with(|q| q.get("template")).unwrap_or_default());
    let templates = RwSignal::new(Vec::<(String, String)>::new());
    let versions = RwSignal::new(Vec::<i64>::new());
    let variables = RwSignal::new(Vec::<String>::new());
    let values = RwSignal::new(BTreeMap::<String, String>::new());
    let columns = RwSignal::new(Vec::<Column>::new());
    let has_draft = RwSignal::new(false);
    let error = RwSignal::new(None::<ApiError>);
    // Why "Run all" was refused (a variable with no value), at its field.
    let check = RwSignal::new(None::<ApiError>);
    let aborts = StoredValue::new_local(Vec::<Abort>::new());

    Effect::new(move |_| {
        api::spawn(async move {
            if let Ok(v) = api::get::<TemplateList>("/api/templates").await {
                templates.set(
                    v.templates
                        .iter()
                        .map(|s| (s.template.name.clone(), s.template.display_title().to_string()))
                        .collect(),
                );
            }
        });
    });

    Effect::new(move |_| {
        let name = template.get();
        let wanted = query.with(|q| q.get("versions")).unwrap_or_default();
        if name.is_empty() {
            return;
        }
        has_draft.set(draft::storage_get(&Draft::storage_key(Some(&name))).is_some());
        api::spawn(async move {
            match api::get::<VersionList>(&format!("/api/templates/{}/versions", enc(&name))).await {
                Ok(v) => {
                    let vs: Vec<i64> = v.versions.iter().map(|v| v.version).collect();
                    let latest = vs.iter().copied().max().unwrap_or(1);
                    let mut chosen: Vec<String> =
                        wanted.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).take(4).collect();
                    if chosen.len() < 2 {
                        chosen = if latest > 1 {
                            vec![(latest - 1).to_string(), latest.to_string()]
                        } else {
                            vec![String::from("1"); 2]
                        };
                    }
                    versions.set(vs);
                    columns.set(chosen.into_iter().map(Column::new).collect());
                    error.set(None);
                }
                Err(e) => error.set(Some(e)),
            }
            if let Ok(t) = api::get::<TemplateDetail>(&format!("/api/templates/{}", enc(&name))).await {
                variables.set(t.variables);
            }
        });
    });

    let run_column = move |i: usize| {
        let name = template.get_untracked();
        let Some(col) = columns.with_untracked(|c| c.get(i).cloned()) else { return };
        let vars = values.get_untracked();
        let vars: BTreeMap<String, String> = variables
            .get_untracked()
            .into_iter()
            .map(|n| {
                let v = vars.get(&n).cloned().unwrap_or_default();
                (n, v)
            })
            .collect();
        let params = GenerationParams { temperature: col.temperature.trim().parse().ok(), ..Default::default() };
        let stream = Some(true);
        columns.update(|c| {
            let c = &mut c[i];
            *c = Column {
                variant: c.variant.clone(),
                temperature: c.temperature.clone(),
                running: true,
                ..Column::new(String::new())
            };
        });
        let abort = Abort::new();
        aborts.update_value(|a| a.push(abort.clone()));
        api::spawn(async move {
            let mut clock = RunClock::start();
            let on_chunk = |chunk: Completion| {
                let Some(choice) = chunk.choices.first() else {
                    // The closing usage chunk.
                    clock.chunk(&chunk, false);
                    columns.update(|c| {
                        if let Some(c) = c.get_mut(i) {
                            c.stats = clock.stats.clone();
                        }
                    });
                    return;
                };
                clock.chunk(&chunk, choice.finish_reason.is_none());
                columns.update(|c| {
                    let Some(c) = c.get_mut(i) else { return };
                    c.output.push_str(&choice.text);
                    c.stats = clock.stats.clone();
                });
            };
            let r = if col.variant == "draft" {
                let d: Draft = draft::storage_get(&Draft::storage_key(Some(&name)))
                    .and_then(|s| serde_json::from_str(&s).ok())
                    .unwrap_or_default();
                let spec = d.spec();
                let stream_options = Some(api_types::openai::StreamOptions { include_usage: true });
                let body = DraftRun { spec: &spec, variables: vars, stream, logprobs: None, stream_options, params };
                api::stream("/api/draft/completions", &body, &abort, on_chunk).await
            } else {
                let path = format!("/v1/templates/{}@{}/completions", enc(&name), enc(&col.variant));
                let stream_options = Some(api_types::openai::StreamOptions { include_usage: true });
                api::stream(&path, &TemplateRun { variables: vars, stream, stream_options, params }, &abort, on_chunk)
                    .await
            };
            columns.update(|c| {
                if let Some(c) = c.get_mut(i) {
                    c.running = false;
                    c.error = r.err().filter(|e| e.code.as_deref() != Some("aborted"));
                }
            });
        });
    };
    let run_all = move || {
        if columns.with_untracked(|c| c.iter().any(|c| c.running)) {
            return;
        }
        let problem = values.with_untracked(|v| draft::missing_variable(&variables.get_untracked(), v));
        check.set(problem.map(ApiError::field));
        if check.with_untracked(Option::is_some) {
            return;
        }
        aborts.set_value(Vec::new());
        for i in 0..columns.with_untracked(|c| c.len()) {
            run_column(i);
        }
    };
    let stop_all = move || aborts.with_value(|a| a.iter().for_each(Abort::abort));
    let any_running = move || columns.with(|c| c.iter().any(|c| c.running));
    run_shortcuts(run_all, stop_all);

    view! {
        <div class="compare">
            <div class="page-head">
                <h1>"Compare"</h1>
                <p class="muted">"Run up to four variants on the same input and read the answers side by side."</p>
                <div class="row">
                    <select data-testid="compare-template" on:change=move |ev| {
                        let v = event_target_value(&ev);
                        navigate(&format!("/compare?template={}", enc(&v)), Default::default());
                    }>
                        <option value="">"Choose a template…"</option>
                        {move || templates.get().into_iter().map(|(n, t)| {
                            let n2 = n.clone();
                            view! { <option value=n.clone() selected=move || template.get() == n2>{t}</option> }
                        }).collect_view()}
                    </select>
                </div>
            </div>
            <ErrorNote error=error/>
            <Show when=move || !template.get().is_empty()>
                <div class="card">
                    <h3>"Input"</h3>
                    <div class="variables">
                        <VariableFields
                            names=variables
                            values=values
                            on_input=Callback::new(move |(n, v)| {
                                check.set(None);
                                values.update(|m| {
                                    m.insert(n, v);
                                })
                            })
                            testid="compare-variable"
                            error=check
                        />
                    </div>
                    <div class="row">
                        <Show
                            when=any_running
                            fallback=move || view! { <button class="primary" data-testid="compare-run" title="Run all (Ctrl+Enter)" on:click=move |_| run_all()>"▶ Run all "<Kbd keys="Ctrl+Enter"/></button> }
                        >
                            <button class="danger" data-testid="compare-stop" title="Stop (Esc)" on:click=move |_| stop_all()>"■ Stop "<Kbd keys="Esc"/></button>
                        </Show>
                        <button class="ghost small" disabled=move || columns.with(|c| c.len() >= 4) on:click=move |_| {
                            let latest = versions.with(|v| v.iter().copied().max().unwrap_or(1));
                            columns.update(|c| c.push(Column::new(latest.to_string())));
                        }>"+ Add column"</button>
                    </div>
                </div>
                <div class="columns" style=move || format!("--cols: {}", columns.with(|c| c.len().max(1)))>
                    <For
                        each=move || 0..columns.with(|c| c.len())
                        key=|i| *i
                        children=move |i| {
                            let col = move || columns.with(|c| c.get(i).cloned());
                            view! {
                                <div class="card column" data-testid="compare-column">
                                    <div class="row">
                                        <select on:change=move |ev| { let v = event_target_value(&ev); columns.update(|c| if let Some(c) = c.get_mut(i) { c.variant = v }); }>
                                            {move || versions.get().into_iter().map(|v| {
                                                let s = v.to_string();
                                                let s2 = s.clone();
                                                view! { <option value=s.clone() selected=move || col().is_some_and(|c| c.variant == s2)>{format!("version {v}")}</option> }
                                            }).collect_view()}
                                            <Show when=move || has_draft.get()>
                                                <option value="draft" selected=move || col().is_some_and(|c| c.variant == "draft")>"unsaved draft"</option>
                                            </Show>
                                        </select>
                                        <label class="label small" for=format!("compare-temp-{i}")>"Temperature"</label>
                                        <input
                                            class="num-input"
                                            type="number"
                                            min="0"
                                            max="2"
                                            step="0.1"
                                            id=format!("compare-temp-{i}")
                                            placeholder="saved"
                                            title="Temperature for this column (empty = the version's own)"
                                            prop:value=move || col().map(|c| c.temperature).unwrap_or_default()
                                            on:input=move |ev| { let v = event_target_value(&ev); columns.update(|c| if let Some(c) = c.get_mut(i) { c.temperature = v }); }
                                        />
                                        <Show when=move || columns.with(|c| c.len() > 2)>
                                            <button class="icon" title="Remove column" on:click=move |_| columns.update(|c| { if i < c.len() { c.remove(i); } })>"✕"</button>
                                        </Show>
                                    </div>
                                    <div class="output compare-output" data-testid="compare-output">
                                        {move || col().map(|c| if c.output.is_empty() && !c.running { "—".to_string() } else { c.output })}
                                    </div>
                                    <ErrorNote error=Signal::derive(move || col().and_then(|c| c.error))/>
                                    <div class="stats small">
                                        <Stat label="First token" value=Signal::derive(move || col().map(|c| c.stats.ttft_text()).unwrap_or("–".into()))/>
                                        <Stat label="Speed" value=Signal::derive(move || col().map(|c| c.stats.speed_text()).unwrap_or("–".into()))/>
                                        <Stat label="Tokens" value=Signal::derive(move || col().map(|c| c.stats.tokens.to_string()).unwrap_or_default())/>
                                        <Stat label="Cached" value=Signal::derive(move || col().and_then(|c| c.stats.prompt_tokens.map(|p| format!("{} / {p}", c.stats.cached_tokens.unwrap_or(0)))).unwrap_or("–".into()))/>
                                    </div>
                                    <Show when=move || col().is_some_and(|c| c.running)>
                                        <div class="progress-line"></div>
                                    </Show>
                                </div>
                            }
                        }
                    />
                </div>
            </Show>
        </div>
    }
}
