//! The output constraint of the draft: none, one of a set of labels (offered from the
//! examples' outputs), a JSON object of named fields, or a regex. The server enforces it
//! while the model writes, on Run, on the template endpoint and in evals.

use api_types::template::{FieldKind, OutputConstraint};
use leptos::prelude::*;

use crate::api::ApiError;
use crate::components::field_error;
use crate::components::playground::Playground;
use crate::draft::{FieldRow, OutputMode};

/// The control's choices (a schema written elsewhere shows only when the draft has one).
const MODES: [(OutputMode, &str, &str); 4] = [
    (OutputMode::None, "None", "output-mode-none"),
    (OutputMode::Labels, "One of labels", "output-mode-labels"),
    (OutputMode::Fields, "JSON fields", "output-mode-fields"),
    (OutputMode::Regex, "Regex", "output-mode-regex"),
];

#[component]
pub fn OutputConstraintCard() -> impl IntoView {
    let pg = Playground::get();
    let draft = pg.draft;
    let mode = Memo::new(move |_| draft.with(|d| d.output.mode));
    // The browser's own check first (as typed), then the server's (a regex that does not
    // compile, from the preview or a run).
    let error =
        Signal::derive(move || draft.with(|d| d.output.problem()).map(ApiError::field).or_else(|| pg.any_err().get()));
    view! {
        <div class="card output-constraint" data-testid="output-constraint">
            <div class="card-head">
                <h3>"Output"</h3>
                <span class="muted">"What the answer must be: the model can write nothing else."</span>
            </div>
            <div class="tabs" role="group" aria-label="Output constraint">
                {MODES
                    .into_iter()
                    .map(|(m, label, testid)| view! {
                        <button class="tab" class:active=move || mode.get() == m data-testid=testid
                            on:click=move |_| draft.update(|d| d.output.mode = m)>{label}</button>
                    })
                    .collect_view()}
                <Show when=move || mode.get() == OutputMode::Schema>
                    <button class="tab active" data-testid="output-mode-schema">"JSON schema"</button>
                </Show>
            </div>
            {move || match mode.get() {
                OutputMode::None => view! {
                    <p class="hint">"Any text, up to the stop sequences and max tokens."</p>
                }.into_any(),
                OutputMode::Labels => view! { <LabelsEditor error=error/> }.into_any(),
                OutputMode::Fields => view! { <FieldsEditor error=error/> }.into_any(),
                OutputMode::Regex => view! { <RegexEditor error=error/> }.into_any(),
                OutputMode::Schema => view! {
                    <p class="hint">"A JSON schema saved outside the studio; the answer is JSON valid against it."</p>
                    <pre class="code small" data-testid="schema-preview">
                        {move || draft.with(|d| d.output.schema.as_ref().map(|s| serde_json::to_string_pretty(s).unwrap_or_default()).unwrap_or_default())}
                    </pre>
                    {field_error(error, "output")}
                }.into_any(),
            }}
        </div>
    }
}

/// The labels as chips, a box to add one, and the examples' outputs on a click.
#[component]
fn LabelsEditor(error: Signal<Option<ApiError>>) -> impl IntoView {
    let draft = Playground::get().draft;
    let typed = RwSignal::new(String::new());
    let add = move || {
        let text = typed.get_untracked();
        if draft.try_update(|d| d.output.add_label(&text)).unwrap_or(false) {
            typed.set(String::new());
        }
    };
    view! {
        <p class="hint">"The answer is exactly one of these labels, as the examples' outputs are."</p>
        <div class="chips" data-testid="output-labels">
            <For
                each=move || draft.with(|d| d.output.labels.clone())
                key=|l| l.clone()
                children=move |label| {
                    let l2 = label.clone();
                    view! {
                        <span class="chip" data-testid="label-chip">
                            <span data-testid="label-text">{label.clone()}</span>
                            <button class="icon chip-x" title="Remove this label" data-testid="label-remove"
                                on:click=move |_| draft.update(|d| d.output.labels.retain(|x| *x != l2))>"✕"</button>
                        </span>
                    }
                }
            />
        </div>
        <div class="row-inline">
            <input data-testid="label-input" placeholder="A label, e.g. 긍정" prop:value=move || typed.get()
                on:input=move |ev| typed.set(event_target_value(&ev))
                on:keydown=move |ev: leptos::ev::KeyboardEvent| if ev.key() == "Enter" { ev.prevent_default(); add() }/>
            <button class="secondary" data-testid="label-add" on:click=move |_| add()>"Add"</button>
            <button class="secondary" data-testid="labels-from-examples"
                on:click=move |_| draft.update(|d| {
                    for l in OutputConstraint::labels_from_examples(&d.examples) {
                        d.output.add_label(&l);
                    }
                })>"Use the examples' outputs"</button>
        </div>
        {field_error(error, "output")}
    }
}

/// Rows of name, type and allowed values, and the schema they make.
#[component]
fn FieldsEditor(error: Signal<Option<ApiError>>) -> impl IntoView {
    let draft = Playground::get().draft;
    let set = move |i: usize, f: fn(&mut FieldRow, String), v: String| {
        draft.update(|d| {
            if let Some(r) = d.output.fields.get_mut(i) {
                f(r, v)
            }
        })
    };
    let get =
        move |i: usize, f: fn(&FieldRow) -> String| draft.with(|d| d.output.fields.get(i).map(f).unwrap_or_default());
    view! {
        <p class="hint">"The answer is a JSON object with exactly these fields. Allowed values: comma separated; empty = any."</p>
        <div class="json-fields" data-testid="output-fields">
            <For
                each=move || 0..draft.with(|d| d.output.fields.len())
                key=|i| *i
                children=move |i| view! {
                    <div class="json-field" data-testid="field-row">
                        <input data-testid="field-name" placeholder="name" prop:value=move || get(i, |r| r.name.clone())
                            on:input=move |ev| set(i, |r, v| r.name = v, event_target_value(&ev))/>
                        <select data-testid="field-kind" prop:value=move || get(i, |r| r.kind.as_str().to_string())
                            on:change=move |ev| set(i, |r, v| r.kind = FieldKind::parse(&v).unwrap_or_default(), event_target_value(&ev))>
                            {FieldKind::ALL.into_iter().map(|k| view! { <option value=k.as_str()>{k.as_str()}</option> }).collect_view()}
                        </select>
                        <input data-testid="field-allowed" placeholder="allowed values, e.g. 긍정, 부정" prop:value=move || get(i, |r| r.allowed.clone())
                            on:input=move |ev| set(i, |r, v| r.allowed = v, event_target_value(&ev))/>
                        <button class="icon danger" title="Remove this field" data-testid="field-remove"
                            on:click=move |_| draft.update(|d| if i < d.output.fields.len() { d.output.fields.remove(i); })>"✕"</button>
                    </div>
                }
            />
        </div>
        <button class="secondary" data-testid="field-add"
            on:click=move |_| draft.update(|d| d.output.fields.push(FieldRow::default()))>"+ Add field"</button>
        {field_error(error, "output")}
        <label class="label small">"The JSON schema this makes"</label>
        <pre class="code small" data-testid="schema-preview">
            {move || draft.with(|d| d.output.schema_preview().unwrap_or_else(|e| format!("({e})")))}
        </pre>
    }
}

/// The regex, and the server's verdict on it beside the box.
#[component]
fn RegexEditor(error: Signal<Option<ApiError>>) -> impl IntoView {
    let draft = Playground::get().draft;
    view! {
        <p class="hint">"The whole answer matches this regex, e.g. [0-9]{3}-[0-9]{4} (no ^ or $ needed)."</p>
        <input class="mono" data-testid="output-regex" placeholder="[0-9]+" prop:value=move || draft.with(|d| d.output.pattern.clone())
            on:input=move |ev| draft.update(|d| d.output.pattern = event_target_value(&ev))/>
        {field_error(error, "output")}
    }
}
