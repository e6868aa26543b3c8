//! The model's own chat template (from its GGUF metadata or tokenizer config), rendered
//! with minijinja as Hugging Face's `apply_chat_template` does.

use api_types::ChatMessage;

use crate::serving::{Scheduler, ServeError};

/// Renders the model's own chat template (from its GGUF metadata or tokenizer config).
pub fn render_chat(sched: &Scheduler, messages: &[ChatMessage]) -> Result<String, ServeError> {
    let tok = &sched.tokenizer;
    let Some(template) = tok.chat_template() else {
        return Err(ServeError::invalid(
            "messages",
            format!("model '{}' has no chat template; use /v1/completions", sched.model_name),
        )
        .with_code("no_chat_template"));
    };
    if messages.is_empty() {
        return Err(ServeError::invalid("messages", "messages: at least one message is required"));
    }
    let mut env = minijinja::Environment::new();
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
        Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
    });
    let piece = |id: Option<u32>| id.and_then(|i| tok.id_to_token(i)).unwrap_or_default();
    let bos = piece(tok.bos_id());
    let eos = piece(tok.eos_ids().first().copied());
    let ctx =
        minijinja::context! { messages => messages, add_generation_prompt => true, bos_token => bos, eos_token => eos };
    env.render_str(template, ctx).map_err(|e| ServeError::invalid("messages", format!("chat template: {e}")))
}
