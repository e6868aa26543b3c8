//! A dataset for a batch: the version, a chosen or pasted CSV / JSONL file, its columns
//! beside the version's variables (checked by the server as it changes), Start; then the
//! batch's progress, polled every second until it ends, Cancel, and the results download.

use api_types::batches::{Batch, CreateTemplateBatch, DatasetCheck};
use leptos::prelude::*;

use crate::api::{self, enc, ApiError, NoFields};
use crate::components::batch::BatchPage;
use crate::components::field_error;

/// How long the dataset must stay unchanged before it is checked (typing or pasting).
const CHECK_AFTER_MS: i32 = 300;
/// How often a running batch is polled.
const POLL_MS: i32 = 1000;

/// The request for the dataset as it is now.
fn request(p: BatchPage) -> CreateTemplateBatch {
    let version = p.version.get_untracked();
    CreateTemplateBatch {
        version: (!version.is_empty()).then_some(serde_json::Value::String(version)),
        format: p.format.get_untracked(),
        data: p.data.get_untracked(),
        filename: p.filename.get_untracked(),
    }
}

/// Checks the dataset once it has stayed unchanged for a moment; an answer to an older
/// dataset is dropped.
fn recheck(p: BatchPage) {
    p.edits.update(|e| *e += 1);
    let mine = p.edits.get_untracked();
    if p.data.with_untracked(|d| d.trim().is_empty()) {
        p.check.set(None);
        p.check_error.set(None);
        return;
    }
    api::spawn(async move {
        api::sleep_ms(CHECK_AFTER_MS).await;
        if p.edits.get_untracked() != mine {
            return;
        }
        let path = format!("/api/templates/{}/batches/check", enc(&p.name.get_untracked()));
        let answer = api::post::<DatasetCheck, _>(&path, &request(p)).await;
        if p.edits.get_untracked() != mine {
            return;
        }
        match answer {
            Ok(c) => {
                p.check.set(Some(c));
                p.check_error.set(None);
            }
            Err(e) => {
                p.check.set(None);
                p.check_error.set(Some(e));
            }
        }
    });
}

/// A pasted file's format, from its first character (a JSONL row starts with `{`).
fn guess_format(text: &str) -> Option<&'static str> {
    match text.trim_start_matches('\u{feff}').trim_start().chars().next()? {
        '{' => Some("jsonl"),
        _ => Some("csv"),
    }
}

/// Polls the batch until it ends, then reloads the list of batches.
async fn follow(p: BatchPage, id: String) {
    loop {
        api::sleep_ms(POLL_MS).await;
        match api::get::<Batch>(&format!("/v1/batches/{}", enc(&id))).await {
            Ok(b) => {
                let over = b.is_over();
                p.current.set(Some(b));
                if over {
                    break;
                }
            }
            Err(e) => {
                p.run_error.set(Some(e));
                break;
            }
        }
    }
    p.reload();
}

#[component]
pub fn DatasetCard() -> impl IntoView {
    let p = BatchPage::get();
    let file_input = NodeRef::<leptos::html::Input>::new();
    let running = move || p.current.with(|c| c.as_ref().is_some_and(|c| !c.is_over()));
    let ready = move || p.check.with(|c| c.as_ref().is_some_and(DatasetCheck::matches));

    let on_file = move |_| {
        #[cfg(feature = "hydrate")]
        if let Some(input) = file_input.get_untracked() {
            api::spawn(async move {
                if let Some((name, text)) = api::chosen_file_text(&input).await {
                    let lower = name.to_lowercase();
                    if lower.ends_with(".jsonl") || lower.ends_with(".ndjson") {
                        p.format.set("jsonl".into());
                    } else if lower.ends_with(".csv") {
                        p.format.set("csv".into());
                    }
                    p.data.set(text);
                    p.filename.set(Some(name));
                    recheck(p);
                }
            });
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = file_input;
    };
    let on_paste = move |ev: leptos::ev::Event| {
        let text = event_target_value(&ev);
        if let Some(f) = guess_format(&text) {
            p.format.set(f.into());
        }
        p.data.set(text);
        p.filename.set(None);
        recheck(p);
    };
    let start = move |_| {
        let path = format!("/api/templates/{}/batches", enc(&p.name.get_untracked()));
        let body = request(p);
        p.run_error.set(None);
        api::spawn(async move {
            match api::post::<Batch, _>(&path, &body).await {
                Ok(b) => {
                    let id = b.id.clone();
                    p.current.set(Some(b));
                    p.reload();
                    follow(p, id).await;
                }
                Err(e) => p.run_error.set(Some(e)),
            }
        });
    };
    // An error that names none of the controls here is shown under the Start button.
    let elsewhere =
        move |e: &Option<ApiError>| e.clone().filter(|e| !["data", "version", "format"].iter().any(|f| e.is_about(f)));

    view! {
        <section class="card">
            <h3>"Dataset"</h3>
            <p class="hint">"A CSV with a header, or JSONL with one object per line; its columns are the version's variables, one request per row. UTF-8 (Korean is fine). Runs at batch priority, so API callers are served first."</p>
            <div class="row">
                <label class="small">"Version "
                    <select data-testid="batch-version" on:change=move |e| { p.version.set(event_target_value(&e)); recheck(p); }>
                        <option value="">{move || p.default_version()}</option>
                        {move || p.template.with(|t| t.as_ref().map(|t| t.labels.clone())).unwrap_or_default().into_iter().map(|(l, v)| view! { <option value=l.clone()>{format!("{l} (v{v})")}</option> }).collect_view()}
                        {move || { let mut v = p.versions.get(); v.reverse(); v }.into_iter().map(|v| view! { <option value=v.to_string()>{format!("version {v}")}</option> }).collect_view()}
                    </select>
                </label>
                <label class="small">"Format "
                    <select data-testid="batch-format" prop:value=move || p.format.get() on:change=move |e| { p.format.set(event_target_value(&e)); recheck(p); }>
                        <option value="csv">"CSV"</option>
                        <option value="jsonl">"JSONL"</option>
                    </select>
                </label>
                <input type="file" data-testid="batch-file" accept=".csv,.jsonl,.ndjson,text/csv" node_ref=file_input on:change=on_file/>
            </div>
            {field_error(p.check_error.into(), "version")}
            {field_error(p.check_error.into(), "format")}
            <textarea class="mono" rows="6" data-testid="batch-data" placeholder="…or paste the file here" prop:value=move || p.data.get() on:input=on_paste></textarea>
            {field_error(p.check_error.into(), "data")}
            {field_error(p.run_error.into(), "data")}
            {move || p.check.get().map(|c| view! { <ColumnCheck check=c/> })}
            <div class="row">
                <button class="primary" data-testid="batch-start" on:click=start disabled=move || running() || !ready()>"▶ Start batch"</button>
                {move || p.filename.get().map(|f| view! { <span class="muted small">{f}</span> })}
            </div>
            {move || elsewhere(&p.check_error.get()).or_else(|| elsewhere(&p.run_error.get())).map(|e| view! { <div class="error" role="alert">{e.to_string()}</div> })}
        </section>
    }
}

/// The dataset's columns beside the version's variables.
#[component]
fn ColumnCheck(check: DatasetCheck) -> impl IntoView {
    let ok = check.matches();
    let summary = format!(
        "{} rows · version {} · {}",
        check.rows,
        check.version,
        if ok { "every variable has its column" } else { "the columns do not match the variables" }
    );
    let summary_class = if ok { "ok" } else { "field-error" };
    view! {
        <div class="column-check" data-testid="batch-columns" data-ok=ok.to_string()>
            <p class=summary_class>{summary}</p>
            <table class="tests">
                <thead><tr><th>"Variable"</th><th>"Column"</th></tr></thead>
                <tbody>
                    {check.variables.iter().map(|v| {
                        let has = !check.missing.contains(v);
                        view! {
                            <tr data-testid="batch-column" data-ok=has.to_string()>
                                <td><code>{format!("{{{{{v}}}}}")}</code></td>
                                <td>{if has { format!("✓ {v}") } else { "✗ no column".to_string() }}</td>
                            </tr>
                        }
                    }).collect_view()}
                    {check.unknown.iter().map(|c| view! {
                        <tr data-testid="batch-column" data-ok="false">
                            <td class="muted">"—"</td>
                            <td>{format!("✗ {c}: not a variable of this version")}</td>
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
        </div>
    }
}

/// The link to a finished batch's results.
pub fn download_link(b: &Batch, testid: &'static str) -> impl IntoView {
    let href = format!("/api/batches/{}/results.csv", enc(&b.id));
    let fallback = format!("{}-results.csv", b.id);
    view! {
        <crate::components::download::DownloadLink
            href=href fallback=fallback label="⬇ Download CSV" class="button secondary small" testid=testid />
    }
}

#[component]
pub fn ProgressCard() -> impl IntoView {
    let p = BatchPage::get();
    let cancel = move |_| {
        let Some(id) = p.current.with_untracked(|c| c.as_ref().map(|c| c.id.clone())) else { return };
        api::spawn(async move {
            match api::post::<Batch, _>(&format!("/v1/batches/{}/cancel", enc(&id)), &NoFields {}).await {
                Ok(b) => p.current.set(Some(b)),
                Err(e) => p.run_error.set(Some(e)),
            }
        });
    };
    move || {
        p.current.get().map(|b| {
            let c = b.request_counts;
            let done = c.completed + c.failed;
            let share = if c.total > 0 { 100.0 * done as f64 / c.total as f64 } else { 0.0 };
            let active = !b.is_over();
            view! {
                <section class="card">
                    <h3>{if active { "Running" } else if b.status == "completed" { "Finished" } else { "Stopped" }}</h3>
                    <div class="eval-progress" data-testid="batch-progress" data-status=b.status.clone()>
                        <div class="progress"><span style=format!("width: {share:.1}%")></span></div>
                        <div class="row small">
                            <span data-testid="batch-progress-text">{format!("{done} / {} rows · {} completed · {} failed", c.total, c.completed, c.failed)}</span>
                            <span class="badge">{b.status.clone()}</span>
                            <span class="muted mono">{b.id.clone()}</span>
                            <Show when=move || active>
                                <button class="ghost small" data-testid="batch-cancel" on:click=cancel>"Cancel"</button>
                            </Show>
                            {(!active).then(|| download_link(&b, "batch-download"))}
                        </div>
                    </div>
                </section>
            }
        })
    }
}
