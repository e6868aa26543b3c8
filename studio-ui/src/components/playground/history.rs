//! Recent runs under the output: restore any of them, or turn one into a test case (its
//! output becomes the expected answer, editable before it is added).

use std::collections::BTreeMap;

use api_types::evals::{ImportRows, TestRow, TestsImported};
use leptos::prelude::*;

use crate::api::{self, enc, ApiError};
use crate::components::playground::Playground;
use crate::components::ErrorNote;
use crate::history::{self, HistoryEntry};

fn when(at_ms: f64) -> String {
    let ago = ((api::now_ms() - at_ms) / 1000.0).max(0.0);
    if ago < 60.0 {
        "just now".into()
    } else if ago < 3600.0 {
        format!("{} min ago", (ago / 60.0) as u64)
    } else if ago < 86_400.0 {
        format!("{} h ago", (ago / 3600.0) as u64)
    } else {
        format!("{} d ago", (ago / 86_400.0) as u64)
    }
}

fn inputs_text(e: &HistoryEntry) -> String {
    let names = e.draft.variable_names();
    let parts: Vec<String> =
        names.iter().map(|n| format!("{n}: {}", e.draft.variables.get(n).map(String::as_str).unwrap_or(""))).collect();
    if parts.is_empty() {
        "(no variables)".into()
    } else {
        parts.join(" · ")
    }
}

#[component]
pub fn RunHistory() -> impl IntoView {
    let pg = Playground::get();
    // The run being turned into a test case, with its editable values and expected output.
    let adding = RwSignal::new(None::<usize>);
    let add_vars = RwSignal::new(BTreeMap::<String, String>::new());
    let add_expected = RwSignal::new(String::new());
    let add_error = RwSignal::new(None::<ApiError>);
    let added = RwSignal::new(None::<String>);

    let start_adding = move |i: usize| {
        let Some(e) = pg.history.with_untracked(|h| h.get(i).cloned()) else { return };
        let names = e.draft.variable_names();
        add_vars
            .set(names.iter().map(|n| (n.clone(), e.draft.variables.get(n).cloned().unwrap_or_default())).collect());
        add_expected.set(history::suggested_expected(&e));
        add_error.set(None);
        added.set(None);
        adding.set(Some(i));
    };
    let add = move |_| {
        let Some(name) = pg.name.get_untracked() else { return };
        let expected = add_expected.get_untracked();
        let row = TestRow {
            variables: add_vars.get_untracked(),
            expected: Some(expected).filter(|e| !e.trim().is_empty()),
            assertions: Vec::new(),
        };
        api::spawn(async move {
            let body = ImportRows { rows: vec![row] };
            match api::post::<TestsImported, _>(&format!("/api/templates/{}/tests?mode=append", enc(&name)), &body)
                .await
            {
                Ok(r) => {
                    adding.set(None);
                    added.set(Some(format!("Added to the test set of {name} ({} rows now).", r.count)));
                }
                Err(e) => add_error.set(Some(e)),
            }
        });
    };

    view! {
        <Show when=move || pg.history.with(|h| !h.is_empty())>
            <div class="card history" data-testid="run-history">
                <div class="card-head">
                    <h3>"Recent runs"</h3>
                    <span class="muted small">{move || format!("last {} kept in this browser", history::MAX_HISTORY)}</span>
                </div>
                {move || added.get().map(|m| view! { <div class="notice" role="status" data-testid="added-to-tests">{m}</div> })}
                <ol class="history-list">
                    {move || pg.history.get().into_iter().enumerate().map(|(i, e)| {
                        let stats = format!(
                            "{} tokens{}{}",
                            e.tokens,
                            e.ttft_ms.map(|t| format!(" · first token {t:.0} ms")).unwrap_or_default(),
                            e.finish.as_deref().map(|f| format!(" · {f}")).unwrap_or_default(),
                        );
                        let output = if e.output.is_empty() { "(no text)".to_string() } else { e.output.clone() };
                        let cut = e.output_cut;
                        view! {
                            <li data-testid="history-entry">
                                <div class="history-meta muted small">{when(e.at_ms)}" · "{stats}</div>
                                <div class="history-inputs small" data-testid="history-inputs">{inputs_text(&e)}</div>
                                <pre class="history-output" data-testid="history-output">{output}{cut.then_some("…")}</pre>
                                <div class="row">
                                    <button type="button" class="ghost small" data-testid="history-restore"
                                        on:click=move |_| {
                                            if let Some(e) = pg.history.with_untracked(|h| h.get(i).cloned()) {
                                                pg.draft.update(|d| *d = history::restored(&e, d));
                                            }
                                        }>"Restore"</button>
                                    <Show when=move || pg.name.get().is_some()>
                                        <button type="button" class="ghost small" data-testid="history-add-test"
                                            on:click=move |_| start_adding(i)>"Add to test set"</button>
                                    </Show>
                                </div>
                                <Show when=move || adding.get() == Some(i)>
                                    <div class="add-test" data-testid="add-test-form">
                                        {move || add_vars.get().into_iter().map(|(n, v)| {
                                            let key = n.clone();
                                            view! {
                                                <label class="label small">{format!("{{{{{n}}}}}")}</label>
                                                <input data-testid="add-test-variable" data-name=n.clone() prop:value=v
                                                    on:input=move |ev| {
                                                        let x = event_target_value(&ev);
                                                        add_vars.update(|m| { m.insert(key.clone(), x); });
                                                    }/>
                                            }
                                        }).collect_view()}
                                        <label class="label small">"Expected output (edit it before adding)"</label>
                                        <input data-testid="add-test-expected" prop:value=move || add_expected.get()
                                            on:input=move |ev| add_expected.set(event_target_value(&ev))/>
                                        <ErrorNote error=add_error/>
                                        <div class="row">
                                            <button type="button" class="primary small" data-testid="add-test-confirm" on:click=add>"Add test case"</button>
                                            <button type="button" class="ghost small" on:click=move |_| adding.set(None)>"Cancel"</button>
                                        </div>
                                    </div>
                                </Show>
                            </li>
                        }
                    }).collect_view()}
                </ol>
            </div>
        </Show>
    }
}
