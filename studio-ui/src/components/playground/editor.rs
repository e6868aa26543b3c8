//! The prompt as written: title and version, completion or chat mode, instruction (or
//! system prompt) and input text, variables, format, and exactly what the model will read.

use api_types::template::PromptMode;
use leptos::prelude::*;

use crate::components::playground::Playground;
use crate::components::{field_error, ErrorNote, VariableFields};
use crate::draft::{escape, unescape, Draft};

/// The title, the version being edited, a load error, and the notice of a restored draft.
#[component]
pub fn DraftHeader() -> impl IntoView {
    let pg = Playground::get();
    let draft = pg.draft;
    let (title, write) = pg.bind(|d| d.title.clone(), |d, v| d.title = v);
    view! {
        <div class="title-row">
            <input class="title-input" data-testid="title" placeholder="Untitled prompt" prop:value=title on:input=move |ev| write(event_target_value(&ev))/>
            <span class="badge" data-testid="version-badge">
                {move || match (draft.with(|d| d.template.clone()), draft.with(|d| d.base_version)) {
                    (Some(t), Some(v)) => format!("{t} · version {v}"),
                    _ => "not saved".to_string(),
                }}
            </span>
            <button type="button" class="ghost small" data-testid="share" title="A link that opens this draft in any browser"
                on:click=move |_| pg.share()>"Share"</button>
        </div>
        {move || pg.share_link.get().map(|link| match link {
            Ok(url) => view! {
                <div class="notice share-link" data-testid="share-link">
                    <label class="label" for="share-url">"Link to this draft (copied)"</label>
                    <input id="share-url" readonly prop:value=url data-testid="share-url"/>
                    <button type="button" class="link" on:click=move |_| pg.share_link.set(None)>"Close"</button>
                </div>
            }.into_any(),
            Err(reason) => view! { <div class="field-error" role="alert" data-testid="share-error">{reason}</div> }.into_any(),
        })}
        <Show when=move || pg.shared.get()>
            <div class="notice" data-testid="shared-notice">
                "You opened a shared draft; your own unsaved draft is kept. "
                <button class="link" data-testid="unshare" on:click=move |_| pg.unshare()>"Back to my draft"</button>
            </div>
        </Show>
        <ErrorNote error=pg.load_error/>
        <Show when=move || pg.restored.get()>
            <div class="notice">
                "Your unsaved changes were restored from this browser. "
                <button class="link" on:click=move |_| pg.discard()>"Discard them"</button>
            </div>
        </Show>
    }
}

/// Completion or chat mode, and what chat mode needs from the model: a model without a
/// chat template says so and offers completion mode.
#[component]
pub fn ModeCard() -> impl IntoView {
    let pg = Playground::get();
    let draft = pg.draft;
    let is_chat = move || draft.with(|d| d.mode == PromptMode::Chat);
    let set_mode = move |mode: PromptMode| draft.update(|d| d.set_mode(mode));
    let no_chat = move || pg.model_chat.get() == Some(false);
    view! {
        <div class="card mode-card" data-testid="mode-card">
            <div class="card-head">
                <h3>"Mode"</h3>
                <div class="segmented" role="group" aria-label="Prompt mode">
                    <button type="button" data-testid="mode-completion" aria-pressed=move || (!is_chat()).to_string()
                        on:click=move |_| set_mode(PromptMode::Completion)>"Completion"</button>
                    <button type="button" data-testid="mode-chat" aria-pressed=move || is_chat().to_string()
                        disabled=move || no_chat() && !is_chat()
                        title=move || if no_chat() { "This model has no chat template" } else { "System prompt, example turns and the user's message" }
                        on:click=move |_| set_mode(PromptMode::Chat)>"Chat"</button>
                </div>
            </div>
            <p class="hint">
                {move || if is_chat() {
                    "The system prompt, each example as a user turn and an assistant turn, then the user's message, written out with the model's own chat template."
                } else {
                    "The instruction, the examples and the input as one text that the model continues."
                }}
            </p>
            <Show when=move || no_chat() && is_chat()>
                <div class="notice" role="alert" data-testid="no-chat-template">
                    {move || format!("The model {} has no chat template, so this chat prompt cannot run on it. ", pg.model.get())}
                    <button type="button" class="link" data-testid="use-completion" on:click=move |_| set_mode(PromptMode::Completion)>"Use completion mode"</button>
                </div>
            </Show>
            <Show when=move || no_chat() && !is_chat()>
                <p class="muted small" data-testid="chat-unavailable">{move || format!("Chat mode needs a chat template; the model {} has none.", pg.model.get())}</p>
            </Show>
        </div>
    }
}

/// A growing text box for one text field of the draft, with the error that names it.
#[component]
pub fn DraftText(
    /// Fixed, or following the mode (chat mode names the parts as a chat does).
    #[prop(into)]
    label: Signal<&'static str>,
    #[prop(into)] placeholder: Signal<&'static str>,
    get: fn(&Draft) -> String,
    set: fn(&mut Draft, String),
    field: &'static str,
    testid: &'static str,
) -> impl IntoView {
    let pg = Playground::get();
    let (value, write) = pg.bind(get, set);
    view! {
        <label class="label">{move || label.get()}</label>
        <textarea class="grow" data-testid=testid placeholder=move || placeholder.get() prop:value=value on:input=move |ev| write(event_target_value(&ev))></textarea>
        {field_error(pg.any_err(), field)}
    }
}

/// The input text (chat mode: the user's message) with its `{{variables}}`, and a field
/// for each variable.
#[component]
pub fn InputCard() -> impl IntoView {
    let pg = Playground::get();
    let draft = pg.draft;
    let chat = move || draft.with(|d| d.mode == PromptMode::Chat);
    view! {
        <div class="card">
            <DraftText
                label=Signal::derive(move || if chat() { "User message" } else { "Input" })
                placeholder=Signal::derive(move || if chat() {
                    "The user's next message. Use {{name}} for parts that change per call, e.g. {{question}}."
                } else {
                    "The text to run on. Use {{name}} for parts that change per call, e.g. {{review}}."
                })
                get=|d| d.input_pattern.clone()
                set=|d, v| d.input_pattern = v
                field="input_pattern"
                testid="input-pattern"
            />
            <div class="variables" data-testid="variables">
                <VariableFields
                    names=Signal::derive(move || draft.with(Draft::variable_names))
                    values=Signal::derive(move || draft.with(|d| d.variables.clone()))
                    on_input=Callback::new(move |(n, v)| draft.update(|d| {
                        d.variables.insert(n, v);
                    }))
                    testid="variable"
                    error=pg.any_err()
                />
            </div>
        </div>
    }
}

/// A separator or prefix, its invisible characters shown as escapes.
#[component]
fn EscapedInput(
    label: &'static str,
    get: fn(&Draft) -> String,
    set: fn(&mut Draft, String),
    field: &'static str,
) -> impl IntoView {
    let pg = Playground::get();
    let (value, write) = pg.bind(move |d| escape(&get(d)), move |d, v| set(d, unescape(&v)));
    view! {
        <div class="fmt-field">
            <label class="label small">{label}</label>
            <input class="mono" prop:value=value on:input=move |ev| write(event_target_value(&ev))/>
            {field_error(pg.any_err(), field)}
        </div>
    }
}

/// How examples and the input are laid out: separators and prefixes.
#[component]
pub fn FormatPanel() -> impl IntoView {
    view! {
        <details class="card">
            <summary>"Format: separators and prefixes"</summary>
            <div class="fmt-grid">
                <EscapedInput label="Between examples" get=|d| d.format.example_separator.clone() set=|d, v| d.format.example_separator = v field="format.example_separator"/>
                <EscapedInput label="Input prefix" get=|d| d.format.input_prefix.clone() set=|d, v| d.format.input_prefix = v field="format.input_prefix"/>
                <EscapedInput label="Between input and output" get=|d| d.format.io_separator.clone() set=|d, v| d.format.io_separator = v field="format.io_separator"/>
                <EscapedInput label="Output prefix" get=|d| d.format.output_prefix.clone() set=|d, v| d.format.output_prefix = v field="format.output_prefix"/>
            </div>
            <p class="hint">"\\n is a line break. The prompt ends with the output prefix, so the model writes the answer next."</p>
        </details>
    }
}

/// Exactly what the model reads, and its size against the context.
#[component]
pub fn PromptPreview() -> impl IntoView {
    let pg = Playground::get();
    let preview = pg.preview;
    view! {
        <div class="card preview">
            <div class="card-head">
                <h3>"Exactly what the model reads"</h3>
                <span class="token-count" data-testid="token-count">
                    {move || preview.with(|p| if p.context_length > 0 {
                        format!("{} / {} tokens", p.prompt_tokens, p.context_length)
                    } else {
                        "… tokens".to_string()
                    })}
                </span>
            </div>
            <div class="meter">
                <span style=move || preview.with(|p| format!("width: {:.1}%", if p.context_length > 0 { 100.0 * p.prompt_tokens as f64 / p.context_length as f64 } else { 0.0 }))></span>
            </div>
            <pre class="prompt" data-testid="prompt-preview">{move || preview.with(|p| p.prompt.clone())}</pre>
            <ErrorNote error=pg.preview_error beside_fields=true/>
        </div>
    }
}
