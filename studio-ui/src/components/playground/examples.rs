//! The examples editor: input → output pairs shown to the model before the input; add,
//! edit, reorder, duplicate, delete.

use api_types::template::{Example, PromptMode};
use leptos::prelude::*;

use crate::components::playground::Playground;

/// One example's input or output box.
#[component]
fn ExampleText(
    index: usize,
    testid: &'static str,
    /// The column's name: a header on wide screens, a label over each box on narrow ones.
    label: Signal<&'static str>,
    placeholder: Signal<&'static str>,
    field: fn(&mut Example) -> &mut String,
) -> impl IntoView {
    let (value, write) = Playground::get().bind(
        move |d| d.examples.get(index).cloned().map(|mut e| field(&mut e).clone()).unwrap_or_default(),
        move |d, v| {
            if let Some(e) = d.examples.get_mut(index) {
                *field(e) = v;
            }
        },
    );
    view! {
        <span class="ex-label" aria-hidden="true">{label}</span>
        <textarea class="grow" data-testid=testid aria-label=move || format!("Example {} {}", index + 1, label.get().to_lowercase()) placeholder=placeholder prop:value=value on:input=move |ev| write(event_target_value(&ev))></textarea>
    }
}

#[component]
pub fn ExamplesEditor() -> impl IntoView {
    let pg = Playground::get();
    let draft = pg.draft;
    let any_err = pg.any_err();
    // Chat mode: each example is a user turn and the assistant's answer.
    let chat = Memo::new(move |_| draft.with(|d| d.mode == PromptMode::Chat));
    let input_label = Signal::derive(move || if chat.get() { "User" } else { "Input" });
    let output_label = Signal::derive(move || if chat.get() { "Assistant" } else { "Output" });
    let input_hint = Signal::derive(move || if chat.get() { "What the user says" } else { "Example input" });
    let output_hint = Signal::derive(move || if chat.get() { "What the assistant answers" } else { "Expected output" });
    view! {
        <div class="card">
            <div class="card-head">
                <h3>{move || if chat.get() { "Example turns" } else { "Examples" }}</h3>
                <span class="muted">{move || {
                    let n = draft.with(|d| d.examples.len());
                    if chat.get() { format!("{n} {} before the user's message", if n == 1 { "exchange" } else { "exchanges" }) } else { format!("{n} shown to the model before your input") }
                }}</span>
            </div>
            <div class="examples" data-testid="examples">
                <div class="ex-row ex-header">
                    <span>"#"</span>
                    <span>{input_label}</span>
                    <span>{output_label}</span>
                    <span></span>
                </div>
                <For
                    each=move || 0..draft.with(|d| d.examples.len())
                    key=|i| *i
                    children=move |i| {
                        let field = format!("examples[{i}]");
                        let err = move || {
                            let field = field.clone();
                            any_err.get().filter(|e| e.is_about(&field)).map(|e| view! { <div class="field-error">{e.message.clone()}</div> })
                        };
                        view! {
                            <div class="ex-row" data-testid="example-row">
                                <span class="ex-num">{i + 1}</span>
                                <ExampleText index=i testid="example-input" label=input_label placeholder=input_hint field=|e| &mut e.input/>
                                <ExampleText index=i testid="example-output" label=output_label placeholder=output_hint field=|e| &mut e.output/>
                                <div class="ex-tools">
                                    <button class="icon" title="Move up" on:click=move |_| draft.update(|d| if i > 0 && i < d.examples.len() { d.examples.swap(i - 1, i) })>"↑"</button>
                                    <button class="icon" title="Move down" on:click=move |_| draft.update(|d| if i + 1 < d.examples.len() { d.examples.swap(i, i + 1) })>"↓"</button>
                                    <button class="icon" title="Duplicate this example" on:click=move |_| draft.update(|d| if let Some(e) = d.examples.get(i).cloned() { d.examples.insert(i + 1, e) })>"Copy"</button>
                                    <button class="icon danger" title="Delete" data-testid="example-delete" on:click=move |_| draft.update(|d| if i < d.examples.len() { d.examples.remove(i); })>"✕"</button>
                                </div>
                                {err}
                            </div>
                        }
                    }
                />
            </div>
            <button
                class="secondary"
                data-testid="add-example"
                on:click=move |_| draft.update(|d| d.examples.push(Example { input: String::new(), output: String::new() }))
            >
                {move || if chat.get() { "+ Add turn" } else { "+ Add example" }}
            </button>
        </div>
    }
}
