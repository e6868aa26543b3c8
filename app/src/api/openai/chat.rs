//! `/v1/chat/completions`: the messages rendered with the model's chat template, then
//! answered like a completion in the chat shape.

use api_types::{ChatFields, PromptInput};
use axum::extract::State;
use axum::response::Response;

use crate::api::cpu;
use crate::api::error::ApiError;
use crate::api::json::WithParams;
use crate::api::openai::{respond, ResponseExtras};
use crate::serving::chat::render_chat;
use crate::serving::validate::check_model;
use crate::serving::{RequestOptions, ServeError, ValidRequest};
use crate::AppState;

pub async fn chat_completions(
    State(state): State<AppState>,
    WithParams(mut r, mut params): WithParams<ChatFields>,
) -> Result<Response, ApiError> {
    let output = r.take_output();
    let sched = state.scheduler.clone();
    check_model(&sched, &r.model)?;
    let logprobs = if r.logprobs.unwrap_or(false) { Some(r.top_logprobs.unwrap_or(0)) } else { None };
    params.max_tokens = r.max_completion_tokens.or(params.max_tokens).or(Some(512.min(sched.context_length / 2)));
    let opts = RequestOptions { model: None, logprobs, echo: false, stream: r.stream.unwrap_or(false) };
    let messages = r.messages;
    let include_usage = r.stream_options.is_some_and(|o| o.include_usage);
    // Rendering the template (minijinja) and tokenizing are CPU work: off the tokio workers.
    let valid = cpu::run(move || {
        let prompt = render_chat(&sched, &messages)?;
        // The template writes any BOS itself.
        let ids = sched.tokenizer.encode(&prompt, false).map_err(ServeError::internal)?;
        ValidRequest::new(&sched, PromptInput::Tokens(ids), params, opts)?.with_output(&sched, output)
    })
    .await??;
    respond(state, valid, ResponseExtras { chat: true, include_usage, ..Default::default() }).await
}
