//! Compare: 2-4 variants (versions of one template, or the browser's draft with changed
//! parameters) on the same input, run together or one by one, answers shaded by confidence
//! and their differences marked, timings in columns.

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
use crate::tokens::{Piece, PieceBuilder, TokenView};

/// Most words of an answer the difference view aligns (past it, the rest is shown plain).
const MAX_DIFF_WORDS: usize = 2_000;

/// The answer split into words and the spaces between them (they join back to it).
fn words(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut space = None;
    for (i, c) in text.char_indices() {
        let is_space = c.is_whitespace();
        if space.is_some_and(|s| s != is_space) {
            out.push(&text[start..i]);
            start = i;
        }
        space = Some(is_space);
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// `answer` as runs of (text, differs from `base`): the words outside the longest common
/// subsequence of the two answers' words are the differences.
fn differences(base: &str, answer: &str) -> Vec<(String, bool)> {
    let (a, b) = (words(base), words(answer));
    let (a, b_all) = (&a[..a.len().min(MAX_DIFF_WORDS)], &b);
    let b = &b_all[..b_all.len().min(MAX_DIFF_WORDS)];
    // lcs[i][j]: the common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0u16; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let mut runs: Vec<(String, bool)> = Vec::new();
    let mut push = |t: &str, differs: bool| match runs.last_mut() {
        Some((text, d)) if *d == differs => text.push_str(t),
        _ => runs.push((t.to_string(), differs)),
    };
    let (mut i, mut j) = (0, 0);
    while j < b.len() {
        if i < a.len() && a[i] == b[j] {
            push(b[j], false);
            i += 1;
            j += 1;
        } else if i < a.len() && lcs[i + 1][j] >= lcs[i][j + 1] {
            i += 1;
        } else {
            // A space that differs is not worth a mark.
            push(b[j], !b[j].trim().is_empty());
            j += 1;
        }
    }
    for w in &b_all[b.len()..] {
        push(w, false);
    }
    runs
}

#[derive(Debug, Clone, PartialEq)]
struct Column {
    /// A version number, or "draft" (the playground's unsaved draft of this template).
    variant: String,
    temperature: String,
    output: String,
    /// The answer in pieces shaded by confidence (as the playground shows it).
    pieces: Vec<Piece>,
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
            pieces: Vec::new(),
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
    logprobs: Option<usize>,
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
    // The running request of each column, by column.
    let aborts = StoredValue::<_, crate::api::AbortStorage>::new_with_storage(BTreeMap::<usize, Abort>::new());
    // Show where the answers differ from the first column's.
    let show_differences = RwSignal::new(false);

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
        let draft_kept = draft::storage_get(&Draft::storage_key(Some(&name))).is_some();
        has_draft.set(draft_kept);
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
                            // One version: against the draft when there is one (else the
                            // page says how to get a second variant).
                            vec![String::from("1"), String::from("draft")]
                        };
                    }
                    versions.set(vs);
                    let chosen = chosen.into_iter().filter(|c| c != "draft" || draft_kept);
                    columns.set(chosen.map(Column::new).collect());
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
        aborts.update_value(|a| {
            a.insert(i, abort.clone());
        });
        api::spawn(async move {
            let mut clock = RunClock::start();
            let mut builder = PieceBuilder::default();
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
                builder.push_choice(choice);
                columns.update(|c| {
                    let Some(c) = c.get_mut(i) else { return };
                    c.output.push_str(&choice.text);
                    c.pieces = builder.pieces.clone();
                    c.stats = clock.stats.clone();
                });
            };
            let r = if col.variant == "draft" {
                let d: Draft = draft::storage_get(&Draft::storage_key(Some(&name)))
                    .and_then(|s| serde_json::from_str(&s).ok())
                    .unwrap_or_default();
                let spec = d.spec();
                let stream_options = Some(api_types::openai::StreamOptions { include_usage: true });
                let body = DraftRun { spec: &spec, variables: vars, stream, logprobs: Some(5), stream_options, params };
                api::stream("/api/draft/completions", &body, &abort, on_chunk).await
            } else {
                let path = format!("/v1/templates/{}@{}/completions", enc(&name), enc(&col.variant));
                let stream_options = Some(api_types::openai::StreamOptions { include_usage: true });
                let body = TemplateRun { variables: vars, stream, logprobs: Some(5), stream_options, params };
                api::stream(&path, &body, &abort, on_chunk).await
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
        aborts.set_value(BTreeMap::new());
        for i in 0..columns.with_untracked(|c| c.len()) {
            run_column(i);
        }
    };
    let stop_all = move || aborts.with_value(|a| a.values().for_each(Abort::abort));
    let stop_column = move |i: usize| aborts.with_value(|a| a.get(&i).map(Abort::abort));
    let any_running = move || columns.with(|c| c.iter().any(|c| c.running));
    // One column on its own (after a Stop, or a changed temperature).
    let run_one = move |i: usize| {
        if columns.with_untracked(|c| c.get(i).is_none_or(|c| c.running)) {
            return;
        }
        let problem = values.with_untracked(|v| draft::missing_variable(&variables.get_untracked(), v));
        check.set(problem.map(ApiError::field));
        if check.with_untracked(Option::is_none) {
            run_column(i);
        }
    };
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
            <Show when=move || !template.get().is_empty() && columns.with(|c| c.len() < 2) && !versions.with(Vec::is_empty)>
                <div class="card empty-state" data-testid="compare-empty">
                    <h3>"Only one version so far"</h3>
                    <p>"Compare puts variants side by side. This template has one version and no unsaved draft in this browser: edit it in the playground (the unsaved draft can be compared here), or save a second version, then come back."</p>
                    <a class="button primary small" href=move || format!("/t/{}", enc(&template.get()))>"Open in the playground"</a>
                </div>
            </Show>
            <Show when=move || !template.get().is_empty() && columns.with(|c| c.len() >= 2)>
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
                        <label class="small check">
                            <input type="checkbox" data-testid="compare-differences" prop:checked=move || show_differences.get()
                                on:change=move |ev| show_differences.set(event_target_checked(&ev))/>
                            " Highlight differences from the first column"
                        </label>
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
                                        <select data-testid="compare-variant" aria-label="Variant" on:change=move |ev| { let v = event_target_value(&ev); columns.update(|c| if let Some(c) = c.get_mut(i) { c.variant = v }); }>
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
                                        <Show
                                            when=move || col().is_some_and(|c| c.running)
                                            fallback=move || view! { <button class="ghost small" data-testid="compare-run-column" title="Run this column" on:click=move |_| run_one(i)>"▶ Run"</button> }
                                        >
                                            <button class="danger small" data-testid="compare-stop-column" title="Stop this column" on:click=move |_| { stop_column(i); }>"■ Stop"</button>
                                        </Show>
                                        <span class="badge small" data-testid="compare-state">{move || col().map(|c| {
                                            if c.running { "running…".to_string() } else { c.stats.finish.clone().map(|f| format!("finished: {f}")).unwrap_or_default() }
                                        })}</span>
                                    </div>
                                    <div class="output compare-output" data-testid="compare-output">
                                        {move || {
                                            let Some(c) = col() else { return view! { <span>"—"</span> }.into_any() };
                                            if c.output.is_empty() && !c.running {
                                                return view! { <span>"—"</span> }.into_any();
                                            }
                                            let base = columns.with(|cs| cs.first().map(|f| f.output.clone()).unwrap_or_default());
                                            if show_differences.get() && i > 0 && !c.running {
                                                differences(&base, &c.output).into_iter().map(|(t, d)| if d {
                                                    view! { <mark class="differs">{t}</mark> }.into_any()
                                                } else {
                                                    view! { <span>{t}</span> }.into_any()
                                                }).collect_view().into_any()
                                            } else {
                                                let pieces = Signal::derive(move || columns.with(|cs| cs.get(i).map(|c| c.pieces.clone()).unwrap_or_default()));
                                                view! { <TokenView pieces=pieces/> }.into_any()
                                            }
                                        }}
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_mark_whole_words_that_the_first_answer_lacks() {
        let runs = differences("긍정 입니다", "부정 입니다");
        assert_eq!(runs, vec![("부정".to_string(), true), (" 입니다".to_string(), false)]);
        let same = differences("The answer is yes.", "The answer is yes.");
        assert_eq!(same, vec![("The answer is yes.".to_string(), false)]);
        let runs = differences("a b c", "a x b c d");
        let marked: Vec<&str> = runs.iter().filter(|r| r.1).map(|r| r.0.as_str()).collect();
        assert_eq!(marked, ["x", "d"]);
        let joined: String = runs.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(joined, "a x b c d", "the runs rebuild the answer");
        assert_eq!(words(" 한국어  단어\n"), [" ", "한국어", "  ", "단어", "\n"]);
    }
}
