//! A template's page: versions with notes and dates, labels (moving `production` is the
//! rollback), a diff between any two versions, label history and run history.

use leptos::prelude::*;
use leptos_router::hooks::use_params_map;
use serde_json::{json, Value};

use crate::api::{self, enc, ApiError};
use crate::fmt_time;
use crate::pages::ErrorNote;

#[component]
pub fn TemplatePage() -> impl IntoView {
    let params = use_params_map();
    let name = Memo::new(move |_| params.with(|p| p.get("name")).unwrap_or_default());
    let info = RwSignal::new(None::<Value>);
    let versions = RwSignal::new(Vec::<Value>::new());
    let history = RwSignal::new(Vec::<Value>::new());
    let runs = RwSignal::new(Vec::<Value>::new());
    let error = RwSignal::new(None::<ApiError>);
    let reload = RwSignal::new(0u32);

    let from = RwSignal::new(String::new());
    let to = RwSignal::new(String::new());
    let diff = RwSignal::new(None::<Value>);
    let diff_error = RwSignal::new(None::<ApiError>);

    Effect::new(move |_| {
        let n = name.get();
        reload.track();
        api::spawn(async move {
            let base = format!("/api/templates/{}", enc(&n));
            match api::get(&format!("{base}/versions")).await {
                Ok(v) => {
                    let vs = v["versions"].as_array().cloned().unwrap_or_default();
                    let latest = vs.iter().filter_map(|v| v["version"].as_i64()).max().unwrap_or(1);
                    if to.get_untracked().is_empty() {
                        to.set(latest.to_string());
                        from.set((latest - 1).max(1).to_string());
                    }
                    info.set(Some(v["template"].clone()));
                    versions.set(vs);
                }
                Err(e) => error.set(Some(e)),
            }
            if let Ok(l) = api::get(&format!("{base}/labels")).await {
                history.set(l["history"].as_array().cloned().unwrap_or_default());
            }
            if let Ok(r) = api::get(&format!("{base}/runs?limit=50")).await {
                runs.set(r["runs"].as_array().cloned().unwrap_or_default());
            }
        });
    });

    // The diff follows the two selectors.
    Effect::new(move |_| {
        let (a, b, n) = (from.get(), to.get(), name.get());
        if a.is_empty() || b.is_empty() {
            return;
        }
        api::spawn(async move {
            match api::get(&format!("/api/templates/{}/diff?from={}&to={}", enc(&n), enc(&a), enc(&b))).await {
                Ok(d) => {
                    diff.set(Some(d));
                    diff_error.set(None);
                }
                Err(e) => diff_error.set(Some(e)),
            }
        });
    });

    let set_label = move |label: &'static str, version: i64| {
        let n = name.get_untracked();
        api::spawn(async move {
            match api::put(&format!("/api/templates/{}/labels/{label}", enc(&n)), &json!({ "version": version })).await
            {
                Ok(_) => {
                    error.set(None);
                    reload.update(|r| *r += 1);
                }
                Err(e) => error.set(Some(e)),
            }
        });
    };

    let labels_of = move |version: i64| -> Vec<String> {
        info.with(|i| {
            i.as_ref()
                .and_then(|i| i["labels"].as_object().cloned())
                .map(|m| m.iter().filter(|(_, v)| v.as_i64() == Some(version)).map(|(k, _)| k.clone()).collect())
                .unwrap_or_default()
        })
    };
    let version_numbers =
        move || versions.with(|vs| vs.iter().filter_map(|v| v["version"].as_i64()).collect::<Vec<_>>());

    let section_0 = view! {
            <section class="card">
                    <h3>"Versions"</h3>
                    <table class="versions" data-testid="versions">
                        <thead><tr><th>"Version"</th><th>"Note"</th><th>"Saved"</th><th>"Labels"</th><th></th></tr></thead>
                        <tbody>
                            <For
                                each=move || { let mut v = versions.get(); v.reverse(); v }
                                key=|v| (v["version"].as_i64(), v["content_hash"].as_str().map(str::to_string))
                                children=move |v| {
                                    let n = v["version"].as_i64().unwrap_or(0);
                                    let note = v["note"].as_str().filter(|s| !s.is_empty()).unwrap_or("—").to_string();
                                    let when = fmt_time(v["created_at"].as_i64().unwrap_or(0));
                                    let author = v["author"].as_str().unwrap_or_default().to_string();
                                    view! {
                                        <tr data-testid="version-row" data-version=n.to_string()>
                                            <td><b>{format!("v{n}")}</b></td>
                                            <td>{note}</td>
                                            <td class="muted small">{when}<br/>{author}</td>
                                            <td>{move || labels_of(n).into_iter().map(|l| view! { <span class="label-badge" data-testid="label">{l}</span> }).collect_view()}</td>
                                            <td class="actions">
                                                <a class="button ghost small" href=move || format!("/t/{}?v={n}", enc(&name.get()))>"Open"</a>
                                                <Show when=move || !labels_of(n).iter().any(|l| l == "production")>
                                                    <button class="secondary small" data-testid="make-production" on:click=move |_| set_label("production", n)>"Make production"</button>
                                                </Show>
                                            </td>
                                        </tr>
                                    }
                                }
                            />
                        </tbody>
                    </table>
                    <p class="hint">"Versions never change once saved. Moving the production label is how you roll out or roll back: callers of the template endpoint without a version get the production one."</p>
                </section>
    }
    .into_any();
    let section_1 = view! {
            <section class="card">
                    <h3>"Label history"</h3>
                    <ul class="timeline" data-testid="label-history">
                        {move || {
                            let mut h = history.get();
                            h.reverse();
                            if h.is_empty() {
                                return view! { <li class="muted">"No label was ever set."</li> }.into_any();
                            }
                            h.into_iter().map(|e| {
                                let from = e["from_version"].as_i64().map(|v| format!("v{v}")).unwrap_or("none".into());
                                view! {
                                    <li>
                                        <b>{e["label"].as_str().unwrap_or_default().to_string()}</b>
                                        {format!(" {from} → v{}", e["to_version"])}
                                        <span class="muted small">{format!(" · {} · {}", e["actor"].as_str().unwrap_or_default(), fmt_time(e["at"].as_i64().unwrap_or(0)))}</span>
                                    </li>
                                }
                            }).collect_view().into_any()
                        }}
                    </ul>
                </section>
    }
    .into_any();
    let section_2 = view! {
            <section class="card" data-testid="diff">
                <div class="card-head">
                    <h3>"Differences"</h3>
                    <div class="row">
                        <select data-testid="diff-from" on:change=move |ev| from.set(event_target_value(&ev))>
                            {move || version_numbers().into_iter().map(|n| view! { <option value=n.to_string() selected=move || from.get() == n.to_string()>{format!("v{n}")}</option> }).collect_view()}
                        </select>
                        <span>"→"</span>
                        <select data-testid="diff-to" on:change=move |ev| to.set(event_target_value(&ev))>
                            {move || version_numbers().into_iter().map(|n| view! { <option value=n.to_string() selected=move || to.get() == n.to_string()>{format!("v{n}")}</option> }).collect_view()}
                        </select>
                    </div>
                </div>
                <ErrorNote error=diff_error.into()/>
                {move || diff.get().map(|d| view! { <DiffView diff=d/> })}
            </section>
    }
    .into_any();
    let section_3 = view! {
            <section class="card">
                <h3>"Run history"</h3>
                {move || {
                    let r = runs.get();
                    if r.is_empty() {
                        return view! { <p class="muted">"No runs yet. Calls to the template endpoint appear here."</p> }.into_any();
                    }
                    view! {
                        <div class="table-wrap">
                            <table class="runs" data-testid="runs">
                                <thead><tr><th>"When"</th><th>"Version"</th><th>"Input"</th><th>"Output"</th><th>"Tokens"</th><th>"Latency"</th></tr></thead>
                                <tbody>
                                    {r.into_iter().map(|run| {
                                        let vars = run["variables"].as_object().map(|m| m.values().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(" · ")).unwrap_or_default();
                                        view! {
                                            <tr>
                                                <td class="small muted">{fmt_time(run["created_at"].as_i64().unwrap_or(0))}</td>
                                                <td>{run["version"].as_i64().map(|v| format!("v{v}")).unwrap_or("draft".into())}</td>
                                                <td class="clip">{vars}</td>
                                                <td class="clip"><b>{run["output"].as_str().unwrap_or_default().to_string()}</b></td>
                                                <td class="small">{format!("{} in · {} cached · {} out", run["prompt_tokens"], run["cached_tokens"], run["completion_tokens"])}</td>
                                                <td class="small">{format!("{} ms", run["latency_ms"])}</td>
                                            </tr>
                                        }
                                    }).collect_view()}
                                </tbody>
                            </table>
                        </div>
                    }.into_any()
                }}
            </section>
    }
    .into_any();
    view! {
        <div class="template-page">
            <div class="page-head">
                <h1>{move || info.with(|i| i.as_ref().map(|i| i["title"].as_str().filter(|s| !s.is_empty()).or(i["name"].as_str()).unwrap_or_default().to_string())).unwrap_or_else(|| name.get())}</h1>
                <p class="muted">{move || info.with(|i| i.as_ref().map(|i| i["description"].as_str().unwrap_or_default().to_string())).unwrap_or_default()}</p>
                <div class="row">
                    <a class="button primary small" href=move || format!("/t/{}", enc(&name.get()))>"Open in playground"</a>
                    <a class="button ghost small" href=move || format!("/compare?template={}", enc(&name.get()))>"Compare versions"</a>
                    <a class="button ghost small" data-testid="open-evaluate" href=move || format!("/evaluate/{}", enc(&name.get()))>"Evaluate"</a>
                    <a class="button ghost small" href=move || format!("/api/templates/{}/export", enc(&name.get()))>"Export TOML"</a>
                </div>
            </div>
            <ErrorNote error=error.into()/>
            <div class="two-col">
                {section_0}

                {section_1}
            </div>

            {section_2}

            {section_3}
        </div>
    }
}

fn ops_view(ops: &Value) -> impl IntoView {
    ops.as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|op| {
            let class = match op["op"].as_str() {
                Some("insert") => "ins",
                Some("delete") => "del",
                _ => "eq",
            };
            view! { <span class=class>{op["text"].as_str().unwrap_or_default().to_string()}</span> }
        })
        .collect_view()
}

fn show_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "—".into(),
        other => other.to_string(),
    }
}

#[component]
pub fn DiffView(diff: Value) -> impl IntoView {
    if diff["unchanged"].as_bool() == Some(true) {
        return view! { <p class="muted" data-testid="diff-unchanged">"These two versions are identical."</p> }
            .into_any();
    }
    let text = diff["text"].as_array().cloned().unwrap_or_default();
    let examples = diff["examples"].as_array().cloned().unwrap_or_default();
    let values = diff["values"].as_array().cloned().unwrap_or_default();
    view! {
        <div class="diffview">
            {text.into_iter().map(|c| view! {
                <div class="diff-block">
                    <div class="diff-field">{c["field"].as_str().unwrap_or_default().replace('_', " ")}</div>
                    <pre class="diff-text">{ops_view(&c["ops"])}</pre>
                </div>
            }).collect_view()}
            {examples.into_iter().map(|e| {
                let idx = e["index"].as_i64().unwrap_or(0) + 1;
                let change = e["change"].as_str().unwrap_or_default().to_string();
                let body = match change.as_str() {
                    "added" => view! { <pre class="diff-text"><span class="ins">{format!("{} → {}", e["new"]["input"].as_str().unwrap_or_default(), e["new"]["output"].as_str().unwrap_or_default())}</span></pre> }.into_any(),
                    "removed" => view! { <pre class="diff-text"><span class="del">{format!("{} → {}", e["old"]["input"].as_str().unwrap_or_default(), e["old"]["output"].as_str().unwrap_or_default())}</span></pre> }.into_any(),
                    _ => e["fields"].as_array().cloned().unwrap_or_default().into_iter().map(|f| view! {
                        <div class="diff-sub">{f["field"].as_str().unwrap_or_default().to_string()}</div>
                        <pre class="diff-text">{ops_view(&f["ops"])}</pre>
                    }).collect_view().into_any(),
                };
                view! {
                    <div class="diff-block">
                        <div class="diff-field">{format!("example {idx} ({change})")}</div>
                        {body}
                    </div>
                }
            }).collect_view()}
            {(!values.is_empty()).then(|| view! {
                <table class="values">
                    <tbody>
                        {values.into_iter().map(|v| view! {
                            <tr>
                                <td class="mono">{v["field"].as_str().unwrap_or_default().to_string()}</td>
                                <td><span class="del">{show_value(&v["old"])}</span></td>
                                <td>"→"</td>
                                <td><span class="ins">{show_value(&v["new"])}</span></td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            })}
        </div>
    }
    .into_any()
}
