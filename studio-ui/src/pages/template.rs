//! A template's page: versions with notes and dates, labels (moving `production` is the
//! rollback), a diff between any two versions, label history and run history.

use api_types::templates::{
    DiffGranularity, ExampleChange, ExampleChangeKind, LabelEvent, LabelMoved, Labels, Op, Run, RunList, SetLabel,
    TemplateInfo, TextOp, VersionDiff, VersionInfo, VersionList,
};
use leptos::prelude::*;
use leptos_router::hooks::use_params_map;
use serde_json::Value;

use crate::api::{self, enc, ApiError};
use crate::components::delete::DeleteTemplate;
use crate::components::{constraint_text, vars_text, version_label, ErrorNote, TemplateNotFound};
use crate::fmt_time;

#[component]
pub fn TemplatePage() -> impl IntoView {
    let params = use_params_map();
    let name = Memo::new(move |_| params.with(|p| p.get("name")).unwrap_or_default());
    let info = RwSignal::new(None::<TemplateInfo>);
    let versions = RwSignal::new(Vec::<VersionInfo>::new());
    let history = RwSignal::new(Vec::<LabelEvent>::new());
    let runs = RwSignal::new(Vec::<Run>::new());
    let error = RwSignal::new(None::<ApiError>);
    let missing = RwSignal::new(false);
    let reload = RwSignal::new(0u32);

    let from = RwSignal::new(String::new());
    let to = RwSignal::new(String::new());
    let diff = RwSignal::new(None::<VersionDiff>);
    let diff_error = RwSignal::new(None::<ApiError>);
    let side_by_side = RwSignal::new(false);

    Effect::new(move |_| {
        let n = name.get();
        reload.track();
        api::spawn(async move {
            let base = format!("/api/templates/{}", enc(&n));
            match api::get::<VersionList>(&format!("{base}/versions")).await {
                Ok(v) => {
                    let latest = v.versions.iter().map(|v| v.version).max().unwrap_or(1);
                    if to.get_untracked().is_empty() {
                        to.set(latest.to_string());
                        from.set((latest - 1).max(1).to_string());
                    }
                    info.set(Some(v.template));
                    versions.set(v.versions);
                }
                Err(e) => {
                    missing.set(e.status == 404);
                    error.set(Some(e));
                }
            }
            if let Ok(l) = api::get::<Labels>(&format!("{base}/labels")).await {
                history.set(l.history);
            }
            if let Ok(r) = api::get::<RunList>(&format!("{base}/runs?limit=50")).await {
                runs.set(r.runs);
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
            match api::get::<VersionDiff>(&format!("/api/templates/{}/diff?from={}&to={}", enc(&n), enc(&a), enc(&b)))
                .await
            {
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
            match api::put::<LabelMoved, _>(
                &format!("/api/templates/{}/labels/{label}", enc(&n)),
                &SetLabel { version },
            )
            .await
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
        info.with(|i| i.as_ref().map(|i| i.labels_of(version)).unwrap_or_default())
    };
    let version_numbers = move || versions.with(|vs| vs.iter().map(|v| v.version).collect::<Vec<_>>());

    let section_0 = view! {
            <section class="card">
                    <h3>"Versions"</h3>
                    <table class="versions" data-testid="versions">
                        <thead><tr><th>"Version"</th><th>"Note"</th><th>"Output"</th><th>"Saved"</th><th>"Labels"</th><th></th></tr></thead>
                        <tbody>
                            <For
                                each=move || { let mut v = versions.get(); v.reverse(); v }
                                key=|v| (v.version, v.content_hash.clone())
                                children=move |v| {
                                    let n = v.version;
                                    let note = if v.note.is_empty() { "—".to_string() } else { v.note.clone() };
                                    let when = fmt_time(v.created_at);
                                    let author = v.author.clone();
                                    let output = constraint_text(v.spec.output.as_ref());
                                    let chat = v.spec.mode == api_types::template::PromptMode::Chat;
                                    view! {
                                        <tr data-testid="version-row" data-version=n.to_string()>
                                            <td><b>{format!("v{n}")}</b>{chat.then(|| view! { " "<span class="badge small" data-testid="version-chat" title="A chat version: call it at …/chat/completions">"chat"</span> })}</td>
                                            <td>{note}</td>
                                            <td class="small constraint-badge" data-testid="version-output">{output}</td>
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
                                let from = e.from_version.map(|v| format!("v{v}")).unwrap_or("none".into());
                                view! {
                                    <li>
                                        <b>{e.label}</b>
                                        {format!(" {from} → v{}", e.to_version)}
                                        <span class="muted small">{format!(" · {} · {}", e.actor, fmt_time(e.at))}</span>
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
                        <div class="segmented" role="group" aria-label="Diff layout">
                            <button type="button" data-testid="diff-inline" aria-pressed=move || (!side_by_side.get()).to_string()
                                on:click=move |_| side_by_side.set(false)>"Inline"</button>
                            <button type="button" data-testid="diff-side" aria-pressed=move || side_by_side.get().to_string()
                                on:click=move |_| side_by_side.set(true)>"Side by side"</button>
                        </div>
                    </div>
                </div>
                <ErrorNote error=diff_error/>
                {move || diff.get().map(|d| view! { <DiffView diff=d side_by_side=side_by_side.get()/> })}
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
                                        view! {
                                            <tr>
                                                <td class="small muted">{fmt_time(run.created_at)}</td>
                                                <td>{version_label(run.version)}</td>
                                                <td class="clip">{vars_text(&run.variables)}</td>
                                                <td class="clip"><b>{run.output}</b></td>
                                                <td class="small">{format!("{} in · {} cached · {} out", run.prompt_tokens, run.cached_tokens, run.completion_tokens)}</td>
                                                <td class="small">{format!("{} ms", run.latency_ms)}</td>
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
        <Show when=move || missing.get()>
            <TemplateNotFound name=name/>
        </Show>
        <div class="template-page" hidden=move || missing.get()>
            <div class="page-head">
                <h1>{move || info.with(|i| i.as_ref().map(|i| i.display_title().to_string())).unwrap_or_else(|| name.get())}</h1>
                <p class="muted">{move || info.with(|i| i.as_ref().map(|i| i.description.clone())).unwrap_or_default()}</p>
                <div class="row">
                    <a class="button primary small" href=move || format!("/t/{}", enc(&name.get()))>"Open in playground"</a>
                    <a class="button ghost small" href=move || format!("/compare?template={}", enc(&name.get()))>"Compare versions"</a>
                    <a class="button ghost small" data-testid="open-evaluate" href=move || format!("/evaluate/{}", enc(&name.get()))>"Evaluate"</a>
                    <a class="button ghost small" data-testid="open-batch" href=move || format!("/t/{}/batch", enc(&name.get()))>"Run over a dataset"</a>
                    <crate::components::download::DownloadLink href=Signal::derive(move || format!("/api/templates/{}/export", enc(&name.get()))) fallback="template.toml" label="Export TOML" />
                    <DeleteTemplate name=name/>
                </div>
            </div>
            <ErrorNote error=error/>
            <div class="two-col">
                {section_0}

                {section_1}
            </div>

            {section_2}

            {section_3}
        </div>
    }
}

fn ops_view(ops: &[TextOp]) -> impl IntoView {
    ops.iter()
        .map(|op| {
            let class = match op.op {
                Op::Insert => "ins",
                Op::Delete => "del",
                Op::Equal => "eq",
            };
            view! { <span class=class>{op.text.clone()}</span> }
        })
        .collect_view()
}

/// Says when a field was diffed by line (too long to diff word by word).
fn granularity_note(g: DiffGranularity) -> impl IntoView {
    (g == DiffGranularity::Line).then(|| {
        view! { <div class="muted" data-testid="diff-by-line">"too long to diff word by word: by line"</div> }
    })
}

/// One text diff, inline (deletions and insertions in one text) or side by side (the old
/// text with its deletions marked beside the new text with its insertions).
fn text_diff(ops: &[TextOp], side_by_side: bool) -> impl IntoView {
    if !side_by_side {
        return view! { <pre class="diff-text">{ops_view(ops)}</pre> }.into_any();
    }
    let side = |skip: Op| ops.iter().filter(|o| o.op != skip).cloned().collect::<Vec<_>>();
    let (old, new) = (side(Op::Insert), side(Op::Delete));
    view! {
        <div class="diff-sides" data-testid="diff-sides">
            <pre class="diff-text" aria-label="before">{ops_view(&old)}</pre>
            <pre class="diff-text" aria-label="after">{ops_view(&new)}</pre>
        </div>
    }
    .into_any()
}

fn show_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "—".into(),
        other => other.to_string(),
    }
}

/// An example added or removed: its input → output, as inserted or deleted text.
fn example_line(e: &ExampleChange, class: &'static str) -> impl IntoView {
    let ex = e.new.as_ref().or(e.old.as_ref());
    let (input, output) = ex.map(|x| (x.input.as_str(), x.output.as_str())).unwrap_or_default();
    view! { <pre class="diff-text"><span class=class>{format!("{input} → {output}")}</span></pre> }
}

#[component]
pub fn DiffView(diff: VersionDiff, #[prop(optional)] side_by_side: bool) -> impl IntoView {
    if diff.unchanged {
        return view! { <p class="muted" data-testid="diff-unchanged">"These two versions are identical."</p> }
            .into_any();
    }
    view! {
        <div class="diffview">
            {diff.text.into_iter().map(|c| view! {
                <div class="diff-block">
                    <div class="diff-field">{c.field.replace('_', " ")}</div>
                    {granularity_note(c.granularity)}
                    {text_diff(&c.ops, side_by_side)}
                </div>
            }).collect_view()}
            {diff.examples.into_iter().map(|e| {
                let idx = e.index + 1;
                let (body, change) = match e.change {
                    ExampleChangeKind::Added => (example_line(&e, "ins").into_any(), "added"),
                    ExampleChangeKind::Removed => (example_line(&e, "del").into_any(), "removed"),
                    ExampleChangeKind::Modified => (e.fields.clone().unwrap_or_default().into_iter().map(|f| view! {
                        <div class="diff-sub">{f.field}</div>
                        {granularity_note(f.granularity)}
                        {text_diff(&f.ops, side_by_side)}
                    }).collect_view().into_any(), "modified"),
                };
                view! {
                    <div class="diff-block">
                        <div class="diff-field">{format!("example {idx} ({change})")}</div>
                        {body}
                    </div>
                }
            }).collect_view()}
            {(!diff.values.is_empty()).then(|| view! {
                <table class="values">
                    <tbody>
                        {diff.values.into_iter().map(|v| view! {
                            <tr>
                                <td class="mono">{v.field}</td>
                                <td><span class="del">{show_value(&v.old)}</span></td>
                                <td>"→"</td>
                                <td><span class="ins">{show_value(&v.new)}</span></td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            })}
        </div>
    }
    .into_any()
}
