//! The results: rows × versions (each version's latest completed eval), a cell's detail
//! with the exact prompt, and the pass rate of each eval over time.

use api_types::evals::{EvalStatus, RowResult};
use api_types::templates::{RenderRequest, RenderedPrompt};
use leptos::prelude::*;

use crate::api::{self, enc};
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
                                                let out = res.output.clone();
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
                    <ul class="checks">
                        {r.assertions.into_iter().map(|a| view! {
                            <li class:pass=a.passed>{format!("{} — {}", a.kind, a.detail)}</li>
                        }).collect_view()}
                    </ul>
                    {prompt.map(|p| view! { <pre class="prompt-small">{p}</pre> })}
                </div>
            })}
            <h4>"Pass rate over time"</h4>
            <PassRateChart/>
        </section>
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
