//! Compare: 2-4 variants (versions of one template, or the browser's draft with changed
//! parameters) on the same input, run together, outputs and timings in columns.

use std::collections::BTreeMap;

use leptos::prelude::*;
use leptos_router::hooks::{use_navigate, use_query_map};
use serde_json::json;

use crate::api::{self, enc, Abort, ApiError};
use crate::draft::{self, Draft};
use crate::pages::{ErrorNote, VariableField};

#[derive(Debug, Clone, PartialEq)]
struct Column {
    /// A version number, or "draft" (the playground's unsaved draft of this template).
    variant: String,
    temperature: String,
    output: String,
    running: bool,
    ttft_ms: Option<f64>,
    tokens: usize,
    tokens_per_s: Option<f64>,
    cached: Option<u64>,
    prompt_tokens: Option<u64>,
    error: Option<ApiError>,
}

impl Column {
    fn new(variant: String) -> Self {
        Self {
            variant,
            temperature: String::new(),
            output: String::new(),
            running: false,
            ttft_ms: None,
            tokens: 0,
            tokens_per_s: None,
            cached: None,
            prompt_tokens: None,
            error: None,
        }
    }
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

    Effect::new(move |_| {
        api::spawn(async move {
            if let Ok(v) = api::get("/api/templates").await {
                templates.set(
                    v["templates"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .map(|s| {
                            let t = &s["template"];
                            let name = t["name"].as_str().unwrap_or_default().to_string();
                            let title = t["title"].as_str().filter(|s| !s.is_empty()).unwrap_or(&name).to_string();
                            (name, title)
                        })
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
            match api::get(&format!("/api/templates/{}/versions", enc(&name))).await {
                Ok(v) => {
                    let vs: Vec<i64> = v["versions"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|v| v["version"].as_i64())
                        .collect();
                    let latest = vs.iter().copied().max().unwrap_or(1);
                    let mut chosen: Vec<String> =
                        wanted.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).take(4).collect();
                    if chosen.len() < 2 {
                        chosen = if latest > 1 {
                            vec![(latest - 1).to_string(), latest.to_string()]
                        } else {
                            vec!["1".into(), "1".into()]
                        };
                    }
                    versions.set(vs);
                    columns.set(chosen.into_iter().map(Column::new).collect());
                    error.set(None);
                }
                Err(e) => error.set(Some(e)),
            }
            if let Ok(t) = api::get(&format!("/api/templates/{}", enc(&name))).await {
                variables.set(
                    t["variables"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect(),
                );
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
        let temperature: Option<f64> = col.temperature.trim().parse().ok();
        let (path, mut body) = if col.variant == "draft" {
            let d: Draft = draft::storage_get(&Draft::storage_key(Some(&name)))
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or_default();
            ("/api/draft/completions".to_string(), json!({ "spec": d.spec(), "variables": vars, "stream": true }))
        } else {
            (
                format!("/v1/templates/{}@{}/completions", enc(&name), enc(&col.variant)),
                json!({ "variables": vars, "stream": true }),
            )
        };
        if let Some(t) = temperature {
            body["temperature"] = json!(t);
        }
        columns.update(|c| {
            let c = &mut c[i];
            *c = Column {
                variant: c.variant.clone(),
                temperature: c.temperature.clone(),
                running: true,
                ..Column::new(String::new())
            };
        });
        api::spawn(async move {
            let start = api::now_ms();
            let mut first = None::<f64>;
            let mut tokens = 0usize;
            let abort = Abort::new();
            let r = api::stream(&path, &body, &abort, |ev| {
                let choice = &ev["choices"][0];
                let text = choice["text"].as_str().unwrap_or_default().to_string();
                let now = api::now_ms();
                if choice["finish_reason"].is_null() {
                    tokens += 1;
                    if first.is_none() {
                        first = Some(now);
                    }
                }
                columns.update(|c| {
                    let Some(c) = c.get_mut(i) else { return };
                    c.output.push_str(&text);
                    c.tokens = tokens;
                    c.ttft_ms = first.map(|f| f - start);
                    if let Some(f) = first.filter(|f| tokens > 1 && now > *f) {
                        c.tokens_per_s = Some((tokens - 1) as f64 / ((now - f) / 1000.0));
                    }
                    if ev["usage"].is_object() {
                        c.prompt_tokens = ev["usage"]["prompt_tokens"].as_u64();
                        c.cached = ev["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().or(Some(0));
                    }
                });
            })
            .await;
            columns.update(|c| {
                if let Some(c) = c.get_mut(i) {
                    c.running = false;
                    c.error = r.err();
                }
            });
        });
    };
    let run_all = move |_| {
        for i in 0..columns.with_untracked(|c| c.len()) {
            run_column(i);
        }
    };

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
            <ErrorNote error=error.into()/>
            <Show when=move || !template.get().is_empty()>
                <div class="card">
                    <h3>"Input"</h3>
                    <div class="variables">
                        <For
                            each=move || variables.get()
                            key=|n| n.clone()
                            children=move |n| {
                                let (n2, n3) = (n.clone(), n.clone());
                                view! {
                                    <VariableField
                                        name=n
                                        value=Signal::derive(move || values.with(|v| v.get(&n2).cloned().unwrap_or_default()))
                                        on_input=Callback::new(move |v| values.update(|m| { m.insert(n3.clone(), v); }))
                                        testid="compare-variable"
                                    />
                                }
                            }
                        />
                    </div>
                    <div class="row">
                        <button class="primary" data-testid="compare-run" on:click=run_all>"▶ Run all"</button>
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
                                        <input
                                            class="num-input"
                                            placeholder="temp."
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
                                        <div><span class="k">"First token"</span><span class="v">{move || col().and_then(|c| c.ttft_ms).map(|t| format!("{t:.0} ms")).unwrap_or("–".into())}</span></div>
                                        <div><span class="k">"Speed"</span><span class="v">{move || col().and_then(|c| c.tokens_per_s).map(|t| format!("{t:.1} tok/s")).unwrap_or("–".into())}</span></div>
                                        <div><span class="k">"Tokens"</span><span class="v">{move || col().map(|c| c.tokens.to_string()).unwrap_or_default()}</span></div>
                                        <div><span class="k">"Cached"</span><span class="v">{move || col().and_then(|c| c.prompt_tokens.map(|p| format!("{} / {p}", c.cached.unwrap_or(0)))).unwrap_or("–".into())}</span></div>
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
