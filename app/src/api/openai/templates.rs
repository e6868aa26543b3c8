//! Templates as endpoints (`/v1/templates/{name}@{label-or-version}/completions`, and
//! `/chat/completions` for chat versions) and the studio's run of an unsaved draft:
//! rendered, then answered like `/v1/completions` (or `/v1/chat/completions`).

use std::time::Instant;

use api_types::template::PromptMode;
use api_types::{ChatMessage, GenerationParams, PromptInput, StopInput, TemplateCall};
use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::{json, Map, Value};

use crate::api::cpu;
use crate::api::error::ApiError;
use crate::api::json::{from_value, split, ApiJson, WithParams};
use crate::api::openai::{respond, ResponseExtras, RunRecorder};
use crate::serving::{RequestOptions, ServeError, ValidRequest};
use crate::store::{Run, Store, TemplateInfo, VersionInfo, VersionRef};
use crate::templates::{TokenIds, VersionSpec};
use crate::AppState;

/// `name@ref`; without `@ref`, `production` when that label exists, else the latest version.
async fn resolve_endpoint(store: &Store, spec: &str) -> Result<(TemplateInfo, VersionInfo), ApiError> {
    let (name, reference) = match spec.rsplit_once('@') {
        Some((n, r)) => (n, VersionRef::parse(r)),
        None => (spec, VersionRef::ProductionOrLatest),
    };
    Ok(store.resolve(name, &reference).await?)
}

pub async fn template_completions(
    State(state): State<AppState>,
    Path(spec): Path<String>,
    WithParams(call, params): WithParams<TemplateCall>,
) -> Result<Response, ApiError> {
    let (t, v) = resolve_endpoint(&state.store, &spec).await?;
    complete_spec(state, &v.spec.clone(), call, params, Some((t, v)), None).await
}

/// Most messages a chat call to a template may add after the version's own turns.
pub const MAX_FOLLOW_UP_MESSAGES: usize = 64;

/// `/v1/templates/{name}@{ref}/chat/completions`: a chat version called as OpenAI's chat
/// API (an OpenAI client with this URL as its base works unchanged). The prompt is the
/// version's system prompt and example turns, its input pattern filled with `variables` as
/// the user's message, then the call's `messages` (the conversation since, user and
/// assistant turns only); the answer is in the chat shape.
pub async fn template_chat_completions(
    State(state): State<AppState>,
    Path(spec): Path<String>,
    ApiJson(mut body): ApiJson<Map<String, Value>>,
) -> Result<Response, ApiError> {
    // The chat API's own names, read first so the rest keeps the template call's checks.
    let messages: Vec<ChatMessage> = match body.remove("messages") {
        Some(Value::Null) | None => Vec::new(),
        Some(v) => from_value(v, "messages")?,
    };
    if messages.len() > MAX_FOLLOW_UP_MESSAGES {
        return Err(ApiError::invalid(
            "messages",
            format!("messages: at most {MAX_FOLLOW_UP_MESSAGES} after the template's own, got {}", messages.len()),
        ));
    }
    for (i, m) in messages.iter().enumerate() {
        if m.role != "user" && m.role != "assistant" {
            return Err(ApiError::invalid(
                &format!("messages[{i}].role"),
                format!(
                    "messages[{i}].role: {:?} is not allowed here: the template supplies the system prompt; send user and assistant turns",
                    m.role
                ),
            ));
        }
        let chars = m.content.chars().count();
        if chars > api_types::template::MAX_VARIABLE_VALUE_CHARS {
            return Err(ApiError::invalid(
                &format!("messages[{i}].content"),
                format!(
                    "messages[{i}].content: at most {} characters, got {chars}",
                    api_types::template::MAX_VARIABLE_VALUE_CHARS
                ),
            ));
        }
    }
    let top = body.remove("top_logprobs");
    if let Some(lp) = body.remove("logprobs") {
        let on: bool = from_value(lp, "logprobs")?;
        let n: usize = match top {
            Some(v) => from_value(v, "top_logprobs")?,
            None => 0,
        };
        if on {
            body.insert("logprobs".into(), Value::from(n));
        }
    }
    if let Some(m) = body.remove("max_completion_tokens") {
        body.insert("max_tokens".into(), m);
    }
    let WithParams(call, params) = split::<TemplateCall>(body, "")?;
    let (t, v) = resolve_endpoint(&state.store, &spec).await?;
    if v.spec.mode != PromptMode::Chat {
        return Err(ApiError::invalid(
            "mode",
            format!(
                "version {} of '{}' is a completion version: call /v1/templates/{}@{}/completions",
                v.version, t.name, t.name, v.version
            ),
        ));
    }
    complete_spec(state, &v.spec.clone(), call, params, Some((t, v)), Some(messages)).await
}

/// Runs an unsaved draft exactly as its template endpoint would once saved (the studio's
/// Run button). Not recorded in any template's run history.
pub async fn draft_completions(
    State(state): State<AppState>,
    ApiJson(mut body): ApiJson<Map<String, Value>>,
) -> Result<Response, ApiError> {
    // `{spec, ...the template endpoint's fields}`: the spec is taken out first so both
    // parts keep their strict field checks and errors keep naming the field.
    let spec = body.remove("spec").ok_or_else(|| ApiError::invalid("spec", "spec: the draft to run is required"))?;
    let spec: VersionSpec = from_value(spec, "spec")?;
    spec.validate()?;
    let WithParams(call, params) = split::<TemplateCall>(body, "")?;
    complete_spec(state, &spec, call, params, None, None).await
}

async fn complete_spec(
    state: AppState,
    spec: &VersionSpec,
    mut call: TemplateCall,
    params: GenerationParams,
    saved: Option<(TemplateInfo, VersionInfo)>,
    // Set for the chat endpoint: the call's turns after the version's, and the chat shape.
    chat: Option<Vec<ChatMessage>>,
) -> Result<Response, ApiError> {
    if call.prompt.as_deref().is_some_and(|p| !p.is_empty()) {
        return Err(ApiError::invalid(
            "prompt",
            "a template supplies its own prompt: send `variables` (and leave `prompt` empty or out)",
        ));
    }
    // The call's parameters over the version's saved ones.
    let p = &spec.parameters;
    let params = GenerationParams {
        max_tokens: Some(params.max_tokens.unwrap_or(p.max_tokens)),
        temperature: Some(params.temperature.unwrap_or(p.temperature)),
        top_p: Some(params.top_p.unwrap_or(p.top_p)),
        top_k: Some(params.top_k.unwrap_or(p.top_k)),
        seed: params.seed.or(p.seed),
        stop: Some(params.stop.unwrap_or(StopInput::Many(p.stop.clone()))),
        repetition_penalty: Some(params.repetition_penalty.unwrap_or(p.repetition_penalty)),
        ..params
    };
    let recorded = json!({
        "temperature": params.temperature, "top_p": params.top_p, "top_k": params.top_k, "max_tokens": params.max_tokens,
        "repetition_penalty": params.repetition_penalty, "seed": params.seed,
        "stop": params.stop.clone().map(StopInput::into_vec).unwrap_or_default(),
    });
    let output = call.take_output();
    // The version's constraint applies unless the call brings its own (see `with_output_or`).
    let fallback =
        crate::templates::output::constraint_spec(spec).map_err(|fe| ApiError::invalid(&fe.field, fe.to_string()))?;
    let opts = RequestOptions {
        model: call.model,
        logprobs: call.logprobs,
        echo: call.echo.unwrap_or(false),
        stream: call.stream.unwrap_or(false),
    };
    let include_usage = call.stream_options.is_some_and(|o| o.include_usage);
    // Rendering and tokenizing are CPU work: off the tokio workers.
    let (sched, owned, variables) = (state.scheduler.clone(), spec.clone(), call.variables.clone());
    let follow_up = chat.clone().unwrap_or_default();
    let (rendered, valid) = cpu::run(move || -> Result<_, ApiError> {
        let rendered = crate::serving::chat::render_version_with(
            &sched.tokenizer,
            &sched.model_name,
            &owned,
            &variables,
            &follow_up,
        )?;
        let (ids, _) = rendered.token_ids(&sched.tokenizer).map_err(ServeError::internal)?;
        let valid = ValidRequest::new(&sched, PromptInput::Tokens(ids), params, opts)?
            .with_output_or(&sched, output, fallback)?;
        Ok((rendered, valid))
    })
    .await??;
    let Some((t, v)) = saved else {
        return respond(state, valid, ResponseExtras { include_usage, chat: chat.is_some(), ..Default::default() })
            .await;
    };
    let run = Run {
        template: Some(t.name.clone()),
        version: Some(v.version),
        variables: call.variables.clone(),
        prompt: rendered.text(),
        parameters: recorded,
        source: "api".into(),
        ..Run::default()
    };
    let extras = ResponseExtras {
        chat: chat.is_some(),
        template: Some(json!({ "name": t.name, "version": v.version })),
        record: Some(RunRecorder { store: state.store.clone(), run, started: Instant::now() }),
        include_usage,
    };
    respond(state, valid, extras).await
}
