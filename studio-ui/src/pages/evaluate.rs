//! Evaluate: a template's test set (add rows, import/export CSV or JSONL), eval runs with a
//! progress bar and cancel, the rows × versions results matrix, pass rate per version over
//! time, run-vs-run flips, the production eval gate, and automatic few-shot selection.

use std::collections::BTreeMap;

use leptos::prelude::*;
use leptos_router::hooks::{use_navigate, use_params_map};
use serde_json::{json, Value};

use crate::api::{self, enc, ApiError};
use crate::draft::{self, Draft};
use crate::fmt_time;
use crate::pages::{ErrorNote, VariableField};

/// One column of the matrix: a version's latest completed eval and its results by row.
#[derive(Debug, Clone, PartialEq)]
struct MatrixColumn {
    label: String,
    eval_id: i64,
    version: Option<i64>,
    pass_rate: Option<f64>,
    results: BTreeMap<i64, Value>,
}

fn pct(v: Option<f64>) -> String {
    v.map(|r| format!("{:.0}%", r * 100.0)).unwrap_or("–".into())
}

fn vars_text(v: &Value) -> String {
    v.as_object().map(|m| m.values().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(" · ")).unwrap_or_default()
}

#[component]
pub fn EvaluatePage() -> impl IntoView {
    let params = use_params_map();
    let navigate = StoredValue::new_local(use_navigate());
    let name = Memo::new(move |_| params.with(|p| p.get("name")).unwrap_or_default());
    let template = RwSignal::new(None::<Value>);
    let variables = RwSignal::new(Vec::<String>::new());
    let versions = RwSignal::new(Vec::<i64>::new());
    let rows = RwSignal::new(Vec::<Value>::new());
    let evals = RwSignal::new(Vec::<Value>::new());
    let matrix = RwSignal::new(Vec::<MatrixColumn>::new());
    let error = RwSignal::new(None::<ApiError>);
    let reload = RwSignal::new(0u32);

    // New row form.
    let new_vars = RwSignal::new(BTreeMap::<String, String>::new());
    let new_expected = RwSignal::new(String::new());
    let new_check = RwSignal::new("exact".to_string());
    let new_labels = RwSignal::new(String::new());
    let row_error = RwSignal::new(None::<ApiError>);
    // Import.
    let import_text = RwSignal::new(String::new());
    let import_format = RwSignal::new("csv".to_string());
    let import_mode = RwSignal::new("append".to_string());
    let import_error = RwSignal::new(None::<ApiError>);
    let import_msg = RwSignal::new(None::<String>);
    let file_input = NodeRef::<leptos::html::Input>::new();
    // Eval run.
    let run_version = RwSignal::new("latest".to_string());
    let run_n = RwSignal::new("1".to_string());
    let run_temperature = RwSignal::new(String::new());
    let current = RwSignal::new(None::<Value>);
    let run_error = RwSignal::new(None::<ApiError>);
    // Cell detail, run compare, selection.
    let detail = RwSignal::new(None::<(String, Value, Option<String>)>);
    let cmp_a = RwSignal::new(String::new());
    let cmp_b = RwSignal::new(String::new());
    let cmp = RwSignal::new(None::<Value>);
    let cmp_error = RwSignal::new(None::<ApiError>);
    let sel_k = RwSignal::new("4".to_string());
    let selecting = RwSignal::new(false);
    let selection = RwSignal::new(None::<Value>);
    let sel_error = RwSignal::new(None::<ApiError>);

    Effect::new(move |_| {
        let n = name.get();
        reload.track();
        if n.is_empty() {
            return;
        }
        api::spawn(async move {
            let base = format!("/api/templates/{}", enc(&n));
            match api::get(&base).await {
                Ok(t) => {
                    variables.set(
                        t["variables"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default()
                            .iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect(),
                    );
                    template.set(Some(t["template"].clone()));
                }
                Err(e) => {
                    error.set(Some(e));
                    return;
                }
            }
            if let Ok(v) = api::get(&format!("{base}/versions")).await {
                versions.set(
                    v["versions"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|v| v["version"].as_i64())
                        .collect(),
                );
            }
            match api::get(&format!("{base}/tests")).await {
                Ok(t) => rows.set(t["rows"].as_array().cloned().unwrap_or_default()),
                Err(e) => error.set(Some(e)),
            }
            let list = match api::get(&format!("{base}/evals")).await {
                Ok(e) => e["evals"].as_array().cloned().unwrap_or_default(),
                Err(e) => {
                    error.set(Some(e));
                    Vec::new()
                }
            };
            evals.set(list.clone());
            // The matrix: the latest completed eval of each version (and of drafts), oldest first.
            let mut latest: BTreeMap<Option<i64>, Value> = BTreeMap::new();
            for e in list.iter().filter(|e| e["status"] == "completed") {
                latest.entry(e["version"].as_i64()).or_insert_with(|| e.clone());
            }
            let mut cols = Vec::new();
            for (version, e) in latest {
                let id = e["id"].as_i64().unwrap_or(0);
                if let Ok(full) = api::get(&format!("/api/evals/{id}")).await {
                    let results = full["results"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|r| Some((r["test_id"].as_i64()?, r)))
                        .collect();
                    cols.push(MatrixColumn {
                        label: version.map(|v| format!("v{v}")).unwrap_or("draft".into()),
                        eval_id: id,
                        version,
                        pass_rate: e["pass_rate"].as_f64(),
                        results,
                    });
                }
            }
            matrix.set(cols);
        });
    });

    let add_row = move |_| {
        let n = name.get_untracked();
        let vars: BTreeMap<String, String> = variables
            .get_untracked()
            .into_iter()
            .map(|v| {
                let val = new_vars.with_untracked(|m| m.get(&v).cloned().unwrap_or_default());
                (v, val)
            })
            .collect();
        let expected = new_expected.get_untracked();
        let labels: Vec<String> =
            new_labels.get_untracked().split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        let assertions = match new_check.get_untracked().as_str() {
            "one_of" => json!([{ "type": "one_of", "values": labels }]),
            "likelihood" => json!([{ "type": "likelihood", "labels": labels }]),
            "contains" => json!([{ "type": "contains", "value": expected }]),
            _ => json!([]),
        };
        let expected = if expected.is_empty() { Value::Null } else { json!(expected) };
        api::spawn(async move {
            let body = json!({ "rows": [{ "variables": vars, "expected": expected, "assertions": assertions }] });
            match api::post(&format!("/api/templates/{}/tests?mode=append", enc(&n)), &body).await {
                Ok(_) => {
                    row_error.set(None);
                    new_vars.set(BTreeMap::new());
                    new_expected.set(String::new());
                    reload.update(|r| *r += 1);
                }
                Err(e) => row_error.set(Some(e)),
            }
        });
    };

    let import = move |_| {
        let n = name.get_untracked();
        let (format, mode) = (import_format.get_untracked(), import_mode.get_untracked());
        #[cfg(feature = "hydrate")]
        let input = file_input.get_untracked();
        #[cfg(not(feature = "hydrate"))]
        let _ = file_input;
        api::spawn(async move {
            #[allow(unused_mut)]
            let mut text = import_text.get_untracked();
            #[allow(unused_mut)]
            let mut format = format;
            #[cfg(feature = "hydrate")]
            if let Some(input) = input {
                if let Some((file_name, file_text)) = api::chosen_file_text(&input).await {
                    if file_name.ends_with(".jsonl") || file_name.ends_with(".ndjson") {
                        format = "jsonl".into();
                    } else if file_name.ends_with(".csv") {
                        format = "csv".into();
                    }
                    text = file_text;
                }
            }
            let content_type = if format == "jsonl" { "application/x-ndjson" } else { "text/csv" };
            let path = format!("/api/templates/{}/tests?format={format}&mode={mode}", enc(&n));
            match api::send_text("POST", &path, content_type, text).await {
                Ok(v) => {
                    import_error.set(None);
                    import_msg.set(Some(format!("Imported {} rows; the test set has {}.", v["imported"], v["count"])));
                    import_text.set(String::new());
                    reload.update(|r| *r += 1);
                }
                Err(e) => {
                    import_msg.set(None);
                    import_error.set(Some(e));
                }
            }
        });
    };

    let start_eval = move |_| {
        let n = name.get_untracked();
        let version = run_version.get_untracked();
        let samples: Value =
            run_n.get_untracked().trim().parse::<u64>().map(|v| json!(v)).unwrap_or(json!(run_n.get_untracked()));
        let temperature: Value =
            run_temperature.get_untracked().trim().parse::<f64>().map(|v| json!(v)).unwrap_or(Value::Null);
        run_error.set(None);
        api::spawn(async move {
            let body = json!({ "template": n, "version": version, "n": samples, "temperature": temperature });
            let run = match api::post("/api/evals", &body).await {
                Ok(r) => r,
                Err(e) => {
                    run_error.set(Some(e));
                    return;
                }
            };
            let id = run["id"].as_i64().unwrap_or(0);
            current.set(Some(run));
            // Poll until the run ends; the progress bar follows `done / total`.
            loop {
                api::sleep_ms(400).await;
                match api::get(&format!("/api/evals/{id}?results=false")).await {
                    Ok(r) => {
                        let status = r["status"].as_str().unwrap_or_default().to_string();
                        current.set(Some(r));
                        if !matches!(status.as_str(), "queued" | "running") {
                            break;
                        }
                    }
                    Err(e) => {
                        run_error.set(Some(e));
                        break;
                    }
                }
            }
            reload.update(|r| *r += 1);
        });
    };
    let cancel_eval = move |_| {
        let Some(id) = current.with_untracked(|c| c.as_ref().and_then(|c| c["id"].as_i64())) else { return };
        api::spawn(async move {
            if let Err(e) = api::post(&format!("/api/evals/{id}/cancel"), &json!({})).await {
                run_error.set(Some(e));
            }
        });
    };

    let show_cell = move |col: MatrixColumn, result: Value| {
        let n = name.get_untracked();
        detail.set(Some((col.label.clone(), result.clone(), None)));
        let Some(version) = col.version else { return };
        api::spawn(async move {
            let body = json!({ "variables": result["variables"], "version": version.to_string() });
            if let Ok(r) = api::post(&format!("/api/templates/{}/render", enc(&n)), &body).await {
                detail.update(|d| {
                    if let Some(d) = d {
                        d.2 = r["prompt"].as_str().map(str::to_string);
                    }
                });
            }
        });
    };

    let compare_runs = move |_| {
        let (a, b) = (cmp_a.get_untracked(), cmp_b.get_untracked());
        if a.is_empty() || b.is_empty() {
            return;
        }
        api::spawn(async move {
            match api::get(&format!("/api/evals/{}/compare/{}", enc(&a), enc(&b))).await {
                Ok(c) => {
                    cmp.set(Some(c));
                    cmp_error.set(None);
                }
                Err(e) => cmp_error.set(Some(e)),
            }
        });
    };

    let select = move |_| {
        let n = name.get_untracked();
        let k: Value =
            sel_k.get_untracked().trim().parse::<u64>().map(|v| json!(v)).unwrap_or(json!(sel_k.get_untracked()));
        selecting.set(true);
        sel_error.set(None);
        api::spawn(async move {
            match api::post(
                &format!("/api/templates/{}/select-examples", enc(&n)),
                &json!({ "version": "latest", "k": k }),
            )
            .await
            {
                Ok(s) => selection.set(Some(s)),
                Err(e) => sel_error.set(Some(e)),
            }
            selecting.set(false);
        });
    };
    let open_selection = move |_| {
        let n = name.get_untracked();
        let Some(spec) = selection.with_untracked(|s| s.as_ref().map(|s| s["spec"].clone())) else { return };
        let latest = versions.with_untracked(|v| v.iter().copied().max());
        let title = template
            .with_untracked(|t| t.as_ref().and_then(|t| t["title"].as_str().map(str::to_string)))
            .unwrap_or_default();
        let d = Draft::from_version(&n, &title, &json!({ "version": latest, "spec": spec }));
        if let Ok(s) = serde_json::to_string(&d) {
            draft::storage_set(&Draft::storage_key(Some(&n)), &s);
        }
        navigate.with_value(|nav| nav(&format!("/t/{}", enc(&n)), Default::default()));
    };

    let toggle_gate = move |ev: leptos::ev::Event| {
        let on = event_target_checked(&ev);
        let n = name.get_untracked();
        api::spawn(async move {
            match api::request("PATCH", &format!("/api/templates/{}", enc(&n)), Some(&json!({ "eval_gate": on }))).await
            {
                Ok(t) => template.set(Some(t["template"].clone())),
                Err(e) => error.set(Some(e)),
            }
        });
    };

    let chart = move || {
        let mut points: Vec<Value> =
            evals.get().into_iter().filter(|e| e["status"] == "completed" && e["pass_rate"].is_number()).collect();
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
            .map(|(i, e)| {
                let r = e["pass_rate"].as_f64().unwrap_or(0.0);
                let label = e["version"].as_i64().map(|v| format!("v{v}")).unwrap_or("draft".into());
                (
                    pad + step * i as f64 + if points.len() == 1 { (w - 2.0 * pad) / 2.0 } else { 0.0 },
                    h - pad - r * (h - 2.0 * pad),
                    label,
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
    };

    let section_0 = view! {
            <section class="card">
                <div class="card-head">
                    <h3>{move || format!("Test set · {} rows", rows.with(|r| r.len()))}</h3>
                    <div class="row">
                        <a class="button ghost small" href=move || format!("/api/templates/{}/tests/export?format=csv", enc(&name.get()))>"Export CSV"</a>
                        <a class="button ghost small" href=move || format!("/api/templates/{}/tests/export?format=jsonl", enc(&name.get()))>"Export JSONL"</a>
                    </div>
                </div>
                <div class="table-wrap">
                    <table class="tests" data-testid="test-rows">
                        <thead><tr><th>"#"</th><th>"Input"</th><th>"Expected"</th><th>"Checks"</th></tr></thead>
                        <tbody>
                            {move || rows.get().into_iter().enumerate().map(|(i, r)| {
                                let checks = r["assertions"].as_array().map(|a| a.iter().filter_map(|x| x["type"].as_str()).collect::<Vec<_>>().join(", ")).filter(|s| !s.is_empty()).unwrap_or_else(|| if r["expected"].is_null() { "—".into() } else { "exact".into() });
                                view! {
                                    <tr data-testid="test-row">
                                        <td class="muted">{i + 1}</td>
                                        <td class="clip">{vars_text(&r["variables"])}</td>
                                        <td><b>{r["expected"].as_str().unwrap_or("—").to_string()}</b></td>
                                        <td class="small muted">{checks}</td>
                                    </tr>
                                }
                            }).collect_view()}
                        </tbody>
                    </table>
                </div>
                <div class="add-row">
                    <h4>"Add a row"</h4>
                    <div class="add-grid">
                        <For
                            each=move || variables.get()
                            key=|v| v.clone()
                            children=move |v| {
                                let (v2, v3) = (v.clone(), v.clone());
                                view! {
                                    <VariableField
                                        name=v
                                        value=Signal::derive(move || new_vars.with(|m| m.get(&v2).cloned().unwrap_or_default()))
                                        on_input=Callback::new(move |x| new_vars.update(|m| { m.insert(v3.clone(), x); }))
                                        testid="new-row-variable"
                                    />
                                }
                            }
                        />
                        <div class="variable">
                            <label class="label small">"Expected output"</label>
                            <input data-testid="new-row-expected" prop:value=move || new_expected.get() on:input=move |ev| new_expected.set(event_target_value(&ev))/>
                        </div>
                        <div class="variable">
                            <label class="label small">"Check"</label>
                            <select data-testid="new-row-check" on:change=move |ev| new_check.set(event_target_value(&ev))>
                                <option value="exact">"Output equals expected"</option>
                                <option value="contains">"Output contains expected"</option>
                                <option value="one_of">"Output is one of the labels"</option>
                                <option value="likelihood">"Most likely label (no sampling)"</option>
                            </select>
                            <Show when=move || matches!(new_check.get().as_str(), "one_of" | "likelihood")>
                                <input data-testid="new-row-labels" placeholder="labels, comma-separated: 긍정, 부정" prop:value=move || new_labels.get() on:input=move |ev| new_labels.set(event_target_value(&ev))/>
                            </Show>
                        </div>
                    </div>
                    <button class="secondary" data-testid="add-row" on:click=add_row>"+ Add row"</button>
                    <ErrorNote error=row_error.into()/>
                </div>
                <details class="import">
                    <summary>"Import CSV or JSONL"</summary>
                    <p class="hint">"Columns are the template's variables plus "<code>"expected"</code>" and "<code>"assertions"</code>" (a JSON array). UTF-8; Korean and Japanese headers are fine. A broken file is refused whole, naming the row and column."</p>
                    <input type="file" accept=".csv,.jsonl,.ndjson,text/csv" node_ref=file_input/>
                    <textarea class="mono" rows="4" data-testid="import-text" placeholder="…or paste the file here" prop:value=move || import_text.get() on:input=move |ev| import_text.set(event_target_value(&ev))></textarea>
                    <div class="row">
                        <select on:change=move |ev| import_format.set(event_target_value(&ev))>
                            <option value="csv">"CSV"</option>
                            <option value="jsonl">"JSONL"</option>
                        </select>
                        <select on:change=move |ev| import_mode.set(event_target_value(&ev))>
                            <option value="append">"Add to the test set"</option>
                            <option value="replace">"Replace the test set"</option>
                        </select>
                        <button class="secondary" data-testid="import" on:click=import>"Import"</button>
                    </div>
                    <ErrorNote error=import_error.into()/>
                    {move || import_msg.get().map(|m| view! { <div class="ok">{m}</div> })}
                </details>
            </section>
    }
    .into_any();
    let section_1 = view! {
            <section class="card">
                <h3>"Run an eval"</h3>
                <div class="row">
                    <select data-testid="eval-version" on:change=move |ev| run_version.set(event_target_value(&ev))>
                        <option value="latest">"latest version"</option>
                        {move || template.with(|t| t.as_ref().and_then(|t| t["labels"].as_object().cloned())).unwrap_or_default().into_iter().map(|(l, v)| view! { <option value=l.clone()>{format!("{l} (v{v})")}</option> }).collect_view()}
                        {move || { let mut v = versions.get(); v.reverse(); v }.into_iter().map(|v| view! { <option value=v.to_string()>{format!("version {v}")}</option> }).collect_view()}
                    </select>
                    <label class="small">"Samples per row "<input class="num-input" prop:value=move || run_n.get() on:input=move |ev| run_n.set(event_target_value(&ev))/></label>
                    <label class="small">"Temperature "<input class="num-input" placeholder="version's" prop:value=move || run_temperature.get() on:input=move |ev| run_temperature.set(event_target_value(&ev))/></label>
                    <button class="primary" data-testid="run-eval" on:click=start_eval disabled=move || current.with(|c| c.as_ref().is_some_and(|c| matches!(c["status"].as_str(), Some("queued" | "running"))))>"▶ Run eval"</button>
                </div>
                <p class="hint">"Evals run at low priority, so API callers are served first. Several samples at a temperature above 0 measure how stable the answers are."</p>
                <ErrorNote error=run_error.into()/>
                {move || current.get().map(|c| {
                    let (done, total) = (c["done"].as_u64().unwrap_or(0), c["total"].as_u64().unwrap_or(0));
                    let share = if total > 0 { 100.0 * done as f64 / total as f64 } else { 0.0 };
                    let status = c["status"].as_str().unwrap_or_default().to_string();
                    let active = matches!(status.as_str(), "queued" | "running");
                    let status_attr = status.clone();
                    view! {
                        <div class="eval-progress" data-testid="eval-progress" data-status=status_attr>
                            <div class="progress"><span style=format!("width: {share:.1}%")></span></div>
                            <div class="row small">
                                <span data-testid="eval-progress-text">{format!("{done} / {total} rows · {share:.0}%")}</span>
                                <span class="badge">{status}</span>
                                <span>{format!("pass rate {}", pct(c["pass_rate"].as_f64()))}</span>
                                {c["stability"].as_f64().filter(|_| c["n"].as_u64().unwrap_or(1) > 1).map(|s| view! { <span>{format!("stability {}", pct(Some(s)))}</span> })}
                                <Show when=move || active>
                                    <button class="ghost small" data-testid="cancel-eval" on:click=cancel_eval>"Cancel"</button>
                                </Show>
                            </div>
                        </div>
                    }
                })}
            </section>
    }
    .into_any();
    let section_2 = view! {
            <section class="card">
                <h3>"Results: rows × versions"</h3>
                {move || {
                    let cols = matrix.get();
                    if cols.is_empty() {
                        return view! { <p class="muted">"No completed eval yet."</p> }.into_any();
                    }
                    let test_rows = rows.get();
                    view! {
                        <div class="table-wrap">
                            <table class="matrix" data-testid="matrix">
                                <thead>
                                    <tr>
                                        <th>"Row"</th>
                                        {cols.iter().map(|c| view! { <th class="center">{c.label.clone()}<br/><span class="muted small">{pct(c.pass_rate)}</span></th> }).collect_view()}
                                    </tr>
                                </thead>
                                <tbody>
                                    {test_rows.into_iter().map(|r| {
                                        let id = r["id"].as_i64().unwrap_or(-1);
                                        let cells = cols.iter().map(|c| {
                                            match c.results.get(&id).cloned() {
                                                Some(res) => {
                                                    let pass = res["passed"].as_bool().unwrap_or(false);
                                                    let col = c.clone();
                                                    let out = res["output"].as_str().unwrap_or_default().to_string();
                                                    view! {
                                                        <td class="cell" class:pass=pass class:fail=!pass data-testid="matrix-cell" title=out on:click=move |_| show_cell(col.clone(), res.clone())>
                                                            {if pass { "✓" } else { "✗" }}
                                                        </td>
                                                    }.into_any()
                                                }
                                                None => view! { <td class="cell none">"·"</td> }.into_any(),
                                            }
                                        }).collect_view();
                                        view! { <tr><td class="clip">{vars_text(&r["variables"])}</td>{cells}</tr> }
                                    }).collect_view()}
                                </tbody>
                            </table>
                        </div>
                    }.into_any()
                }}
                {move || detail.get().map(|(label, r, prompt)| view! {
                    <div class="cell-detail" data-testid="cell-detail">
                        <div class="row"><b>{format!("{label} · row {}", r["index"].as_i64().unwrap_or(0) + 1)}</b><button class="icon" on:click=move |_| detail.set(None)>"✕"</button></div>
                        <div><span class="muted">"Expected: "</span><b>{r["expected"].as_str().unwrap_or("—").to_string()}</b>" · "<span class="muted">"Output: "</span><b>{r["output"].as_str().unwrap_or_default().to_string()}</b></div>
                        <ul class="checks">
                            {r["assertions"].as_array().cloned().unwrap_or_default().into_iter().map(|a| view! {
                                <li class:pass=a["passed"].as_bool().unwrap_or(false)>{format!("{} — {}", a["type"].as_str().unwrap_or_default(), a["detail"].as_str().unwrap_or_default())}</li>
                            }).collect_view()}
                        </ul>
                        {prompt.map(|p| view! { <pre class="prompt-small">{p}</pre> })}
                    </div>
                })}
                <h4>"Pass rate over time"</h4>
                {chart}
            </section>
    }
    .into_any();
    let section_3 = view! {
            <section class="card">
                <h3>"Which rows flipped?"</h3>
                <div class="row">
                    {move || {
                        let runs = evals.get();
                        let opts = move |sel: RwSignal<String>| runs.iter().filter(|e| e["status"] == "completed").map(|e| {
                            let id = e["id"].as_i64().unwrap_or(0).to_string();
                            let id2 = id.clone();
                            let label = format!("eval {} · {} · {} · {}", id, e["version"].as_i64().map(|v| format!("v{v}")).unwrap_or("draft".into()), pct(e["pass_rate"].as_f64()), fmt_time(e["created_at"].as_i64().unwrap_or(0)));
                            view! { <option value=id selected=move || sel.get() == id2>{label}</option> }
                        }).collect_view();
                        view! {
                            <select data-testid="cmp-a" on:change=move |ev| cmp_a.set(event_target_value(&ev))><option value="">"run A…"</option>{opts(cmp_a)}</select>
                            <select data-testid="cmp-b" on:change=move |ev| cmp_b.set(event_target_value(&ev))><option value="">"run B…"</option>{opts(cmp_b)}</select>
                        }
                    }}
                    <button class="secondary small" on:click=compare_runs>"Compare"</button>
                </div>
                <ErrorNote error=cmp_error.into()/>
                {move || cmp.get().map(|c| {
                    let list = |key: &str, class: &'static str| c[key].as_array().cloned().unwrap_or_default().into_iter().map(move |f| view! {
                        <li class=class>{format!("{} — expected {}: {} → {}", vars_text(&f["variables"]), f["expected"].as_str().unwrap_or("—"), f["a"]["output"].as_str().unwrap_or_default(), f["b"]["output"].as_str().unwrap_or_default())}</li>
                    }).collect_view();
                    view! {
                        <div class="flips">
                            <p>{format!("{} fixed · {} broken · {} unchanged", c["fixed"].as_array().map_or(0, |a| a.len()), c["broken"].as_array().map_or(0, |a| a.len()), c["unchanged"])}</p>
                            <ul>{list("fixed", "pass")}{list("broken", "fail")}</ul>
                        </div>
                    }
                })}
            </section>
    }
    .into_any();
    let section_4 = view! {
            <section class="card">
                <h3>"Find the best examples"</h3>
                <p class="hint">"Tries sets of k examples drawn from the template's examples and the test rows with an expected output, scoring each on held-out rows by the likelihood of the right label. The best set becomes a draft you can save."</p>
                <div class="row">
                    <label class="small">"k "<input class="num-input" prop:value=move || sel_k.get() on:input=move |ev| sel_k.set(event_target_value(&ev))/></label>
                    <button class="secondary" data-testid="select-examples" on:click=select disabled=move || selecting.get()>{move || if selecting.get() { "Scoring candidate sets…" } else { "Find best examples" }}</button>
                </div>
                <Show when=move || selecting.get()><div class="progress indeterminate"><span></span></div></Show>
                <ErrorNote error=sel_error.into()/>
                {move || selection.get().map(|s| {
                    let tried = s["tried"].as_array().cloned().unwrap_or_default();
                    view! {
                        <div class="selection" data-testid="selection">
                            <div class="scores">
                                <div><span class="k">"Best set"</span><b>{pct(s["best"]["accuracy"].as_f64())}</b></div>
                                <div><span class="k">"Random sets (mean)"</span><b>{pct(s["random"]["mean_accuracy"].as_f64())}</b></div>
                                <div><span class="k">"Current examples"</span><b>{pct(s["current"]["accuracy"].as_f64())}</b></div>
                            </div>
                            <button class="primary small" on:click=open_selection>"Open the best set in the playground"</button>
                            <details>
                                <summary>{format!("{} candidate sets tried", tried.len())}</summary>
                                <table class="small">
                                    <thead><tr><th>"Round"</th><th>"Examples (pool ids)"</th><th>"Accuracy"</th><th>"Mean log-prob"</th></tr></thead>
                                    <tbody>
                                        {tried.into_iter().map(|t| view! {
                                            <tr><td>{t["round"].to_string()}</td><td class="mono">{t["examples"].to_string()}</td><td>{pct(t["accuracy"].as_f64())}</td><td>{t["mean_logprob"].as_f64().map(|l| format!("{l:.3}")).unwrap_or_default()}</td></tr>
                                        }).collect_view()}
                                    </tbody>
                                </table>
                            </details>
                        </div>
                    }
                })}
            </section>
    }
    .into_any();
    view! {
        <div class="evaluate">
            <div class="page-head">
                <h1>{move || template.with(|t| t.as_ref().map(|t| t["title"].as_str().filter(|s| !s.is_empty()).or(t["name"].as_str()).unwrap_or_default().to_string())).unwrap_or_else(|| name.get())}</h1>
                <p class="muted">"A change is only better if it scores better on cases that matter. Build a test set, run it against versions, compare."</p>
                <div class="row">
                    <a class="button ghost small" href=move || format!("/t/{}", enc(&name.get()))>"Playground"</a>
                    <a class="button ghost small" href=move || format!("/templates/{}", enc(&name.get()))>"Versions & history"</a>
                    <label class="toggle">
                        <input type="checkbox" data-testid="eval-gate" prop:checked=move || template.with(|t| t.as_ref().and_then(|t| t["eval_gate"].as_bool()).unwrap_or(false)) on:change=toggle_gate/>
                        " Eval gate: production only moves to a version that scores at least as well"
                    </label>
                </div>
            </div>
            <ErrorNote error=error.into()/>

            {section_0}

            {section_1}

            {section_2}

            {section_3}

            {section_4}
        </div>
    }
}
