//! The results: rows × versions (each version's latest completed eval) with each column's
//! latency, a cell's detail (the exact prompt, latency and tokens, each label's probability),
//! a confusion matrix per column for label tasks, and the pass rate of each eval over time.

use api_types::evals::{EvalStatus, RowResult};
use api_types::templates::{RenderRequest, RenderedPrompt};
use leptos::prelude::*;

use crate::api::{self, enc};
use crate::components::evaluate::labels::{label_probabilities, latency_percentiles, Confusion};
use crate::components::evaluate::{Evaluate, MatrixColumn};
use crate::components::{pct, vars_text, version_label};

#[component]
pub fn ResultsCard() -> impl IntoView {
    let ev = Evaluate::get();
    // The cell shown in detail: its column's label, the result, and the prompt once rendered.
    let detail = RwSignal::new(None::<(String, RowResult, Option<String>)>);

    let show_cell = move |col: MatrixColumn, result: RowResult| {
        let n = ev.name.get_untracked();
        detail.set(Some((col.label.clone(), result.clone(), None)));
        let Some(version) = col.version else { return };
        api::spawn(async move {
            let body = RenderRequest { variables: result.variables, version: Some(version.to_string()) };
            if let Ok(r) = api::post::<RenderedPrompt, _>(&format!("/api/templates/{}/render", enc(&n)), &body).await {
                detail.update(|d| {
                    if let Some(d) = d {
                        d.2 = Some(r.prompt);
                    }
                });
            }
        });
    };

    view! {
        <section class="card">
            <h3>"Results: rows × versions"</h3>
            {move || {
                let cols = ev.matrix.get();
                if cols.is_empty() {
                    return view! { <p class="muted">"No completed eval yet."</p> }.into_any();
                }
                let test_rows = ev.rows.get();
                view! {
                    <div class="table-wrap">
                        <table class="matrix" data-testid="matrix">
                            <thead>
                                <tr>
                                    <th>"Row"</th>
                                    {cols.iter().map(|c| view! {
                                        <th class="center">{c.label.clone()}<br/><span class="muted small">{pct(c.pass_rate)}</span>
                                            {c.constraint_met.map(|m| view! { <br/><span class="muted small" data-testid="matrix-constraint-met">{format!("met constraint {m}/{}", c.done)}</span> })}
                                            {latency_percentiles(c.results.values()).map(|(p50, p95)| view! {
                                                <br/><span class="muted small" data-testid="matrix-latency" title="latency per row: median and 95th percentile">{format!("{p50} ms · p95 {p95} ms")}</span>
                                            })}
                                        </th>
                                    }).collect_view()}
                                </tr>
                            </thead>
                            <tbody>
                                {test_rows.into_iter().map(|r| {
                                    let cells = cols.iter().map(|c| {
                                        match c.results.get(&r.id).cloned() {
                                            Some(res) => {
                                                let pass = res.passed;
                                                let col = c.clone();
                                                let out = format!("{} · {} ms · {} tokens", res.output, res.latency_ms, res.completion_tokens);
                                                view! {
                                                    <td class="cell" class:pass=pass class:fail=!pass data-testid="matrix-cell" title=out on:click=move |_| show_cell(col.clone(), res.clone())>
                                                        {if pass { "✓" } else { "✗" }}
                                                        {res.constraint_met.map(|met| view! {
                                                            <sup class=if met { "met" } else { "unmet" } data-testid="cell-constraint" data-met=met.to_string()
                                                                title=if met { "met the output constraint" } else { "did not meet the output constraint" }>
                                                                {if met { "◆" } else { "◇" }}
                                                            </sup>
                                                        })}
                                                    </td>
                                                }.into_any()
                                            }
                                            None => view! { <td class="cell none">"·"</td> }.into_any(),
                                        }
                                    }).collect_view();
                                    view! { <tr><td class="clip">{vars_text(&r.row.variables)}</td>{cells}</tr> }
                                }).collect_view()}
                            </tbody>
                        </table>
                    </div>
                }.into_any()
            }}
            {move || detail.get().map(|(label, r, prompt)| view! {
                <div class="cell-detail" data-testid="cell-detail">
                    <div class="row"><b>{format!("{label} · row {}", r.index + 1)}</b><button class="icon" on:click=move |_| detail.set(None)>"✕"</button></div>
                    <div><span class="muted">"Expected: "</span><b>{r.expected.clone().unwrap_or("—".into())}</b>" · "<span class="muted">"Output: "</span><b>{r.output.clone()}</b></div>
                    {r.constraint_met.map(|met| view! {
                        <div data-testid="detail-constraint-met"><span class="muted">"Output constraint: "</span>
                            <b class=if met { "met" } else { "unmet" }>{if met { "met" } else { "not met" }}</b></div>
                    })}
                    <div class="muted small" data-testid="detail-latency">
                        {format!("{} ms · {} prompt tokens ({} from the prefix cache) · {} output tokens",
                            r.latency_ms, r.prompt_tokens, r.cached_tokens, r.completion_tokens)}
                    </div>
                    {r.assertions.iter().find_map(|a| a.scores.clone()).map(|scores| {
                        let expected = r.expected.clone().unwrap_or_default();
                        view! {
                            <div class="label-probs" data-testid="label-probs">
                                <span class="muted">"Probability of each label:"</span>
                                {label_probabilities(&scores).into_iter().map(|(label, p)| {
                                    let is_expected = label.trim() == expected.trim();
                                    view! {
                                        <div class="prob-row" class:expected=is_expected data-testid="label-prob">
                                            <span class="prob-label">{label}{is_expected.then_some(" (expected)")}</span>
                                            <span class="prob-bar"><span style=format!("width:{:.1}%", p * 100.0)></span></span>
                                            <span class="prob-value">{format!("{:.1}%", p * 100.0)}</span>
                                        </div>
                                    }
                                }).collect_view()}
                            </div>
                        }
                    })}
                    <ul class="checks">
                        {r.assertions.into_iter().map(|a| view! {
                            <li class:pass=a.passed>{format!("{} — {}", a.kind, a.detail)}</li>
                        }).collect_view()}
                    </ul>
                    {prompt.map(|p| view! { <pre class="prompt-small">{p}</pre> })}
                </div>
            })}
            <ConfusionMatrices/>
            <h4>"Pass rate over time"</h4>
            <PassRateChart/>
        </section>
    }
}

/// For label tasks, one table per column: expected labels down, answers across.
#[component]
fn ConfusionMatrices() -> impl IntoView {
    let ev = Evaluate::get();
    move || {
        let tables: Vec<(String, Confusion)> = ev
            .matrix
            .get()
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.as_ref()?;
                Some((c.label.clone(), Confusion::new(labels, c.results.values())))
            })
            .filter(|(_, m)| m.total() > 0)
            .collect();
        (!tables.is_empty()).then(|| view! {
            <h4>"Confusion matrix"</h4>
            <p class="muted small">"Rows: the expected label. Columns: the label answered. The diagonal is right."</p>
            <div class="confusions">
                {tables.into_iter().map(|(label, m)| confusion_table(label, m)).collect_view()}
            </div>
        })
    }
}

fn confusion_table(column: String, m: Confusion) -> impl IntoView {
    let other = m.has_other();
    let labels = m.labels.clone();
    view! {
        <div class="table-wrap">
            <table class="confusion" data-testid="confusion" data-column=column.clone()>
                <caption>{format!("{column} · {} rows", m.total())}</caption>
                <thead>
                    <tr>
                        <th scope="col"><span class="muted small">"expected ↓ answered →"</span></th>
                        {labels.iter().map(|l| view! { <th scope="col">{l.clone()}</th> }).collect_view()}
                        {other.then(|| view! { <th scope="col" class="muted">"other"</th> })}
                    </tr>
                </thead>
                <tbody>
                    {m.counts.iter().enumerate().map(|(e, row)| {
                        let other_n = m.other[e];
                        view! {
                            <tr>
                                <th scope="row">{labels[e].clone()}</th>
                                {row.iter().enumerate().map(|(p, &n)| view! {
                                    <td class="center" class:diag=p == e class:miss=(p != e && n > 0) data-testid="confusion-cell"
                                        data-expected=labels[e].clone() data-answered=labels[p].clone()>{n}</td>
                                }).collect_view()}
                                {other.then(|| view! { <td class="center" class:miss=(other_n > 0)>{other_n}</td> })}
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
        </div>
    }
}

/// The pass rate of each completed eval, oldest first.
#[component]
fn PassRateChart() -> impl IntoView {
    let ev = Evaluate::get();
    move || {
        let mut points: Vec<(Option<i64>, f64)> = ev
            .evals
            .get()
            .into_iter()
            .filter(|e| e.status == EvalStatus::Completed)
            .filter_map(|e| Some((e.version, e.pass_rate?)))
            .collect();
        points.reverse();
        if points.is_empty() {
            return view! { <p class="muted">"Run an eval to see the pass rate of each version over time."</p> }
                .into_any();
        }
        let (w, h, pad) = (640.0, 170.0, 28.0);
        let step = if points.len() > 1 { (w - 2.0 * pad) / (points.len() - 1) as f64 } else { 0.0 };
        let xy: Vec<(f64, f64, String, String)> = points
            .iter()
            .enumerate()
            .map(|(i, &(version, r))| {
                (
                    pad + step * i as f64 + if points.len() == 1 { (w - 2.0 * pad) / 2.0 } else { 0.0 },
                    h - pad - r * (h - 2.0 * pad),
                    version_label(version),
                    pct(Some(r)),
                )
            })
            .collect();
        let line = xy.iter().map(|(x, y, _, _)| format!("{x:.1},{y:.1}")).collect::<Vec<_>>().join(" ");
        view! {
            <svg class="chart" viewBox=format!("0 0 {w} {h}") data-testid="pass-chart">
                <line x1=pad y1=h - pad x2=w - pad y2=h - pad class="axis"/>
                <line x1=pad y1=pad x2=w - pad y2=pad class="grid"/>
                <text x=2 y=pad + 4.0 class="axis-label">"100%"</text>
                <text x=8 y=h - pad + 4.0 class="axis-label">"0%"</text>
                <polyline points=line class="series"/>
                {xy.into_iter().map(|(x, y, label, rate)| view! {
                    <circle cx=x cy=y r=4 class="dot"/>
                    <text x=x y=y - 9.0 class="point-label" text-anchor="middle">{rate}</text>
                    <text x=x y=h - 8.0 class="axis-label" text-anchor="middle">{label}</text>
                }).collect_view()}
            </svg>
        }
        .into_any()
    }
}
