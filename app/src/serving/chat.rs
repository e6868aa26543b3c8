//! The model's own chat template (from its GGUF metadata or tokenizer config), rendered
//! with minijinja as Hugging Face's `apply_chat_template` does; and a template version
//! rendered for the served model ([`render_version`]), in completion or chat mode.

use std::collections::BTreeMap;

use api_types::template::{PromptMode, Rendered, VersionSpec};
use api_types::ChatMessage;
use inference::Tokenizer;

use crate::serving::{Scheduler, ServeError};

/// Renders the model's own chat template (from its GGUF metadata or tokenizer config).
pub fn render_chat(sched: &Scheduler, messages: &[ChatMessage]) -> Result<String, ServeError> {
    if messages.is_empty() {
        return Err(ServeError::invalid("messages", "messages: at least one message is required"));
    }
    chat_text(&sched.tokenizer, &sched.model_name, messages, true, "messages")
}

/// A version's prompt for the served model. Completion versions are laid out by their
/// format. Chat versions go through the model's chat template, split where the fixed turns
/// (system prompt and examples) end when the template renders them as a prefix of the
/// whole, so they are tokenized apart and the prefix cache serves them on every call.
pub fn render_version(
    tok: &Tokenizer,
    model_name: &str,
    spec: &VersionSpec,
    vars: &BTreeMap<String, String>,
) -> Result<Rendered, ServeError> {
    render_version_with(tok, model_name, spec, vars, &[])
}

/// [`render_version`], with a chat call's `follow_up` turns after the version's input.
pub fn render_version_with(
    tok: &Tokenizer,
    model_name: &str,
    spec: &VersionSpec,
    vars: &BTreeMap<String, String>,
    follow_up: &[ChatMessage],
) -> Result<Rendered, ServeError> {
    let field_error = ServeError::Field;
    if spec.mode == PromptMode::Completion {
        return spec.render(vars).map_err(field_error);
    }
    let turns = spec.chat_turns(vars).map_err(field_error)?;
    let mut all = turns.all();
    all.extend_from_slice(follow_up);
    let whole = chat_text(tok, model_name, &all, true, "mode")?;
    let fixed =
        if turns.fixed.is_empty() { String::new() } else { chat_text(tok, model_name, &turns.fixed, false, "mode")? };
    Ok(match whole.strip_prefix(fixed.as_str()) {
        Some(rest) if !fixed.is_empty() => Rendered { prefix: fixed.clone(), suffix: rest.to_string(), chat: true },
        _ => Rendered { prefix: String::new(), suffix: whole, chat: true },
    })
}

/// The chat template over `messages`; `field` is what an error names (`messages` for a
/// chat call, `mode` for a chat version).
fn chat_text(
    tok: &Tokenizer,
    model_name: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    field: &str,
) -> Result<String, ServeError> {
    let Some(template) = tok.chat_template() else {
        let hint = if field == "mode" { "use completion mode" } else { "use /v1/completions" };
        return Err(ServeError::invalid(field, format!("model '{model_name}' has no chat template; {hint}"))
            .with_code("no_chat_template"));
    };
    let mut env = minijinja::Environment::new();
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
        Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
    });
    let piece = |id: Option<u32>| id.and_then(|i| tok.id_to_token(i)).unwrap_or_default();
    let bos = piece(tok.bos_id());
    let eos = piece(tok.eos_ids().first().copied());
    let ctx = minijinja::context! { messages => messages, add_generation_prompt => add_generation_prompt, bos_token => bos, eos_token => eos };
    env.render_str(template, ctx).map_err(|e| ServeError::invalid(field, format!("chat template: {e}")))
}
