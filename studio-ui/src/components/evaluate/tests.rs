//! The test set: its rows, a form for one more row, and CSV / JSONL import.

use std::collections::BTreeMap;

use api_types::evals::{Assertion, ImportRows, TestRow, TestsImported};
use leptos::prelude::*;

use crate::api::{self, enc, ApiError};
use crate::components::download::DownloadLink;
use crate::components::evaluate::Evaluate;
use crate::components::{vars_text, ErrorNote, VariableFields};

#[component]
pub fn TestSetCard() -> impl IntoView {
    let ev = Evaluate::get();
    let (name, rows) = (ev.name, ev.rows);
    // The row being edited in place (by test-case id), its values, and the row whose
    // Delete was pressed once (a second press deletes).
    let editing = RwSignal::new(None::<i64>);
    let edit_vars = RwSignal::new(BTreeMap::<String, String>::new());
    let edit_expected = RwSignal::new(String::new());
    let edit_error = RwSignal::new(None::<ApiError>);
    let confirm_delete = RwSignal::new(None::<i64>);
    let save_row = move |id: i64| {
        let n = name.get_untracked();
        let Some(old) = rows.with_untracked(|r| r.iter().find(|c| c.id == id).map(|c| c.row.clone())) else { return };
        let row = TestRow {
            variables: edit_vars.get_untracked(),
            expected: Some(edit_expected.get_untracked()).filter(|e| !e.is_empty()),
            assertions: old.assertions,
        };
        api::spawn(async move {
            match api::put::<(), _>(&format!("/api/templates/{}/tests/{id}", enc(&n)), &row).await {
                Ok(()) => {
                    editing.set(None);
                    ev.reload();
                }
                Err(e) => edit_error.set(Some(e)),
            }
        });
    };
    let delete_row = move |id: i64| {
        let n = name.get_untracked();
        api::spawn(async move {
            match api::request::<(), ()>("DELETE", &format!("/api/templates/{}/tests/{id}", enc(&n)), None).await {
                Ok(()) => {
                    confirm_delete.set(None);
                    ev.reload();
                }
                Err(e) => edit_error.set(Some(e)),
            }
        });
    };
    view! {
        <section class="card">
            <div class="card-head">
                <h3>{move || format!("Test set · {} rows", rows.with(|r| r.len()))}</h3>
                <div class="row">
                    <DownloadLink href=Signal::derive(move || format!("/api/templates/{}/tests/export?format=csv", enc(&name.get()))) fallback="tests.csv" label="Export CSV" />
                    <DownloadLink href=Signal::derive(move || format!("/api/templates/{}/tests/export?format=jsonl", enc(&name.get()))) fallback="tests.jsonl" label="Export JSONL" />
                </div>
            </div>
            <div class="table-wrap">
                <table class="tests" data-testid="test-rows">
                    <thead><tr><th>"#"</th><th>"Input"</th><th>"Expected"</th><th>"Checks"</th><th><span class="sr-only">"Actions"</span></th></tr></thead>
                    <tbody>
                        {move || rows.get().into_iter().enumerate().map(|(i, case)| {
                            let id = case.id;
                            let r = case.row.clone();
                            let checks = Some(r.assertions.iter().map(Assertion::kind).collect::<Vec<_>>().join(", ")).filter(|s| !s.is_empty()).unwrap_or_else(|| if r.expected.is_none() { "—".into() } else { "exact".into() });
                            let start_edit = {
                                let row = case.row.clone();
                                move |_| {
                                    edit_vars.set(row.variables.clone());
                                    edit_expected.set(row.expected.clone().unwrap_or_default());
                                    edit_error.set(None);
                                    confirm_delete.set(None);
                                    editing.set(Some(id));
                                }
                            };
                            view! {
                                <tr data-testid="test-row" data-id=id.to_string()>
                                    <td class="muted">{i + 1}</td>
                                    <td class="clip">{vars_text(&r.variables)}</td>
                                    <td><b>{r.expected.clone().unwrap_or("—".into())}</b></td>
                                    <td class="small muted">{checks}</td>
                                    <td class="actions">
                                        <button type="button" class="ghost small" data-testid="edit-test" on:click=start_edit>"Edit"</button>
                                        {move || if confirm_delete.get() == Some(id) {
                                            view! { <button type="button" class="danger small" data-testid="confirm-delete-test" on:click=move |_| delete_row(id)>"Delete row?"</button> }.into_any()
                                        } else {
                                            view! { <button type="button" class="ghost small" data-testid="delete-test" aria-label=format!("Delete row {}", i + 1) on:click=move |_| confirm_delete.set(Some(id))>"Delete"</button> }.into_any()
                                        }}
                                    </td>
                                </tr>
                                <Show when=move || editing.get() == Some(id)>
                                    <tr class="edit-row" data-testid="edit-test-row">
                                        <td></td>
                                        <td colspan="4">
                                            <div class="add-grid">
                                                {move || edit_vars.get().into_iter().map(|(n, v)| {
                                                    let key = n.clone();
                                                    view! {
                                                        <div class="variable">
                                                            <label class="label small">{format!("{{{{{n}}}}}")}</label>
                                                            <input data-testid="edit-test-variable" data-name=n.clone() prop:value=v
                                                                on:input=move |ev| { let x = event_target_value(&ev); edit_vars.update(|m| { m.insert(key.clone(), x); }); }/>
                                                        </div>
                                                    }
                                                }).collect_view()}
                                                <div class="variable">
                                                    <label class="label small">"Expected output"</label>
                                                    <input data-testid="edit-test-expected" prop:value=move || edit_expected.get()
                                                        on:input=move |ev| edit_expected.set(event_target_value(&ev))/>
                                                </div>
                                            </div>
                                            <ErrorNote error=edit_error/>
                                            <div class="row">
                                                <button type="button" class="primary small" data-testid="save-test" on:click=move |_| save_row(id)>"Save row"</button>
                                                <button type="button" class="ghost small" on:click=move |_| editing.set(None)>"Cancel"</button>
                                            </div>
                                        </td>
                                    </tr>
                                </Show>
                            }
                        }).collect_view()}
                    </tbody>
                </table>
            </div>
            <AddRowForm/>
            <ImportForm/>
        </section>
    }
}

/// One more row: a value per variable, the expected output and how it is checked.
#[component]
fn AddRowForm() -> impl IntoView {
    let ev = Evaluate::get();
    let new_vars = RwSignal::new(BTreeMap::<String, String>::new());
    let new_expected = RwSignal::new(String::new());
    let new_check = RwSignal::new("exact".to_string());
    let new_labels = RwSignal::new(String::new());
    let row_error = RwSignal::new(None::<ApiError>);

    let add_row = move |_| {
        let n = ev.name.get_untracked();
        let variables: BTreeMap<String, String> = ev
            .variables
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
            "one_of" => vec![Assertion::OneOf { values: labels }],
            "likelihood" => vec![Assertion::Likelihood { labels }],
            "contains" => vec![Assertion::Contains { value: expected.clone() }],
            _ => Vec::new(),
        };
        let expected = Some(expected).filter(|e| !e.is_empty());
        api::spawn(async move {
            let body = ImportRows { rows: vec![TestRow { variables, expected, assertions }] };
            match api::post::<TestsImported, _>(&format!("/api/templates/{}/tests?mode=append", enc(&n)), &body).await {
                Ok(_) => {
                    row_error.set(None);
                    new_vars.set(BTreeMap::new());
                    new_expected.set(String::new());
                    ev.reload();
                }
                Err(e) => row_error.set(Some(e)),
            }
        });
    };

    view! {
        <div class="add-row">
            <h4>"Add a row"</h4>
            <div class="add-grid">
                <VariableFields
                    names=ev.variables
                    values=new_vars
                    on_input=Callback::new(move |(n, x)| new_vars.update(|m| {
                        m.insert(n, x);
                    }))
                    testid="new-row-variable"
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
            <ErrorNote error=row_error/>
        </div>
    }
}

/// A test-set file, chosen or pasted, added to the set or replacing it.
#[component]
fn ImportForm() -> impl IntoView {
    let ev = Evaluate::get();
    let import_text = RwSignal::new(String::new());
    let import_format = RwSignal::new("csv".to_string());
    let import_mode = RwSignal::new("append".to_string());
    let import_error = RwSignal::new(None::<ApiError>);
    let import_msg = RwSignal::new(None::<String>);
    let file_input = NodeRef::<leptos::html::Input>::new();

    let import = move |_| {
        let n = ev.name.get_untracked();
        let (format, mode) = (import_format.get_untracked(), import_mode.get_untracked());
        #[cfg(feature = "hydrate")]
        let input = file_input.get_untracked();
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
            match api::send_text::<TestsImported>("POST", &path, content_type, text).await {
                Ok(v) => {
                    import_error.set(None);
                    import_msg.set(Some(format!("Imported {} rows; the test set has {}.", v.imported, v.count)));
                    import_text.set(String::new());
                    ev.reload();
                }
                Err(e) => {
                    import_msg.set(None);
                    import_error.set(Some(e));
                }
            }
        });
    };

    view! {
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
            // The server's message as it wrote it (it names the row, the column and the
            // columns expected), beside the control.
            {move || import_error.get().map(|e| view! { <div class="field-error" role="alert" data-testid="import-error">{e.to_string()}</div> })}
            {move || import_msg.get().map(|m| view! { <div class="ok">{m}</div> })}
        </details>
    }
}
