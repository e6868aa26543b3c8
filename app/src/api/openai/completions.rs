//! OpenAI-compatible endpoints: handler → validation into a `ValidCompletion` → the
//! batcher's bounded queue → a stream of events back (SSE or one JSON body).

use std::convert::Infallible;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream, StreamExt};
use inference::{FinishReason, GenerateRequest, SampledToken, SamplingParams};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::error::ApiError;
use crate::serving::{Priority, SeqEvent};
use crate::AppState;

pub const MAX_N: usize = 16;
pub const MAX_STOPS: usize = 4;
pub const DEFAULT_MAX_TOKENS: usize = 16;
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(600);

/// Parses a JSON body; errors name the field at fault (`temperature: invalid type ...`).
pub fn parse_json<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|r| ApiError::status(r.status(), r.body_text()))?;
    let de = &mut serde_json::Deserializer::from_slice(&body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let param = if path == "." { "body".to_string() } else { path };
        ApiError::invalid(&param, format!("{param}: {}", e.inner()))
    })
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptInput {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StopInput {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub model: Option<String>,
    pub prompt: PromptInput,
    pub max_tokens: Option<usize>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<usize>,
    pub n: Option<usize>,
    pub seed: Option<u64>,
    pub stop: Option<StopInput>,
    pub logprobs: Option<usize>,
    pub echo: Option<bool>,
    pub stream: Option<bool>,
    pub user: Option<String>,
    pub repetition_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
}

/// A completion request that passed validation: every sequence to run, ready for the queue.
#[derive(Debug)]
pub struct ValidCompletion {
    /// One entry per choice: (prompt index, prompt text, request).
    pub choices: Vec<(usize, String, GenerateRequest)>,
    pub echo: bool,
    pub stream: bool,
    pub logprobs: bool,
    /// Answer in the chat-completions shape.
    pub chat: bool,
    /// Set for template endpoints: `{name, version}`, echoed in the response.
    pub template: Option<Value>,
    /// Set for template endpoints: the run is saved to the template's history.
    pub record: Option<RunRecorder>,
}

/// Saves a finished run (choice 0) to the store's run history.
#[derive(Debug)]
pub struct RunRecorder {
    pub store: crate::store::Store,
    pub run: crate::store::Run,
    pub started: Instant,
}

impl RunRecorder {
    async fn save(mut self, output: String, finish: &str, usage: (usize, usize, usize), ttft: Option<Duration>) {
        self.run.output = output;
        self.run.finish_reason = finish.to_string();
        self.run.prompt_tokens = usage.0 as i64;
        self.run.completion_tokens = usage.1 as i64;
        self.run.cached_tokens = usage.2 as i64;
        self.run.latency_ms = self.started.elapsed().as_millis() as i64;
        self.run.ttft_ms = ttft.map(|d| d.as_millis() as i64);
        if let Err(e) = self.store.record_run(&self.run).await {
            tracing::warn!("could not save the run to the history: {e}");
        }
    }
}

fn check_model(state: &AppState, model: &Option<String>) -> Result<(), ApiError> {
    match model {
        Some(m) if m != &state.scheduler.model_name => Err(ApiError::invalid(
            "model",
            format!("model '{m}' is not served here; available: {}", state.scheduler.model_name),
        )
        .with_code("model_not_found")),
        _ => Ok(()),
    }
}

impl ValidCompletion {
    pub fn new(state: &AppState, r: CompletionRequest) -> Result<Self, ApiError> {
        check_model(state, &r.model)?;
        let tok = &state.scheduler.tokenizer;
        let ctx = state.scheduler.context_length;
        let prompts: Vec<(String, Vec<u32>)> = match r.prompt {
            PromptInput::Text(t) => vec![(t.clone(), tok.encode(&t, true).map_err(internal)?)],
            PromptInput::Texts(ts) => ts
                .into_iter()
                .map(|t| Ok((t.clone(), tok.encode(&t, true).map_err(internal)?)))
                .collect::<Result<_, ApiError>>()?,
            PromptInput::Tokens(ids) => {
                check_token_ids("prompt", &ids, tok)?;
                vec![(tok.decode(&ids, false).map_err(internal)?, ids)]
            }
            PromptInput::TokenLists(l) => l
                .into_iter()
                .map(|ids| {
                    check_token_ids("prompt", &ids, tok)?;
                    Ok((tok.decode(&ids, false).map_err(internal)?, ids))
                })
                .collect::<Result<_, ApiError>>()?,
        };
        if prompts.is_empty() {
            return Err(ApiError::invalid("prompt", "prompt: at least one prompt is required"));
        }
        let n = r.n.unwrap_or(1);
        if n == 0 || n > MAX_N {
            return Err(ApiError::invalid("n", format!("n must be between 1 and {MAX_N}, got {n}")));
        }
        let stops = match r.stop {
            None => Vec::new(),
            Some(StopInput::One(s)) => vec![s],
            Some(StopInput::Many(v)) => v,
        };
        if stops.len() > MAX_STOPS {
            return Err(ApiError::invalid("stop", format!("stop: at most {MAX_STOPS} sequences, got {}", stops.len())));
        }
        let max_tokens = r.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
        let sampling = SamplingParams {
            temperature: r.temperature.unwrap_or(1.0),
            top_p: r.top_p.unwrap_or(1.0),
            top_k: r.top_k.unwrap_or(0),
            repetition_penalty: r.repetition_penalty.unwrap_or(1.0),
            presence_penalty: r.presence_penalty.unwrap_or(0.0),
            frequency_penalty: r.frequency_penalty.unwrap_or(0.0),
            seed: r.seed,
            logprobs: r.logprobs,
        };
        sampling.validate().map_err(inference::EngineError::from)?;
        let mut choices = Vec::new();
        for (i, (text, ids)) in prompts.into_iter().enumerate() {
            if ids.is_empty() || (ids.len() == 1 && Some(ids[0]) == tok.bos_id()) {
                return Err(ApiError::invalid("prompt", "prompt is empty: at least one token is needed"));
            }
            if ids.len() >= ctx {
                return Err(ApiError::invalid(
                    "prompt",
                    format!("prompt is {} tokens; the model's context is {ctx} tokens", ids.len()),
                )
                .with_code("context_length_exceeded"));
            }
            let room = ctx - ids.len();
            if max_tokens == 0 || max_tokens > room {
                return Err(ApiError::invalid(
                    "max_tokens",
                    format!("max_tokens must be between 1 and {room} (context {ctx} minus {} prompt tokens), got {max_tokens}", ids.len()),
                ));
            }
            for k in 0..n {
                let mut s = sampling.clone();
                // n samples of one prompt must differ but stay reproducible.
                s.seed = sampling.seed.map(|seed| seed.wrapping_add(k as u64));
                let req = GenerateRequest {
                    prompt_tokens: ids.clone(),
                    max_tokens,
                    sampling: s,
                    stop: stops.clone(),
                    ignore_eos: false,
                    forced: Vec::new(),
                };
                choices.push((i, text.clone(), req));
            }
        }
        Ok(Self {
            choices,
            echo: r.echo.unwrap_or(false),
            stream: r.stream.unwrap_or(false),
            logprobs: r.logprobs.is_some(),
            chat: false,
            template: None,
            record: None,
        })
    }
}

/// Token ids from a client must exist in the vocabulary before anything decodes them.
fn check_token_ids(param: &str, ids: &[u32], tok: &inference::Tokenizer) -> Result<(), ApiError> {
    let vocab = tok.vocab_size() as u32;
    match ids.iter().find(|&&t| t >= vocab) {
        Some(bad) => Err(ApiError::invalid(param, format!("token id {bad} is outside the vocabulary (0..{vocab})"))),
        None => Ok(()),
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(e.to_string())
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn request_id(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{prefix}-{nanos:x}")
}

/// Per-choice accumulation of the OpenAI `logprobs` object.
#[derive(Default)]
struct LogprobsAcc {
    tokens: Vec<String>,
    token_logprobs: Vec<f32>,
    top_logprobs: Vec<Value>,
    text_offset: Vec<usize>,
}

impl LogprobsAcc {
    fn push(&mut self, state: &AppState, t: &SampledToken, offset: usize) {
        let tok = &state.scheduler.tokenizer;
        let piece = |id: u32| tok.decode(&[id], false).unwrap_or_default();
        self.tokens.push(piece(t.id));
        self.token_logprobs.push(t.logprob);
        let top: serde_json::Map<String, Value> = t.top.iter().map(|(id, lp)| (piece(*id), json!(lp))).collect();
        self.top_logprobs.push(Value::Object(top));
        self.text_offset.push(offset);
    }
    fn to_json(&self) -> Value {
        json!({ "tokens": self.tokens, "token_logprobs": self.token_logprobs,
                "top_logprobs": self.top_logprobs, "text_offset": self.text_offset })
    }
}

fn finish_str(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Length => "length",
        FinishReason::Stop => "stop",
        FinishReason::Cancelled => "cancelled",
    }
}

fn usage(prompt: usize, completion: usize, cached: usize) -> Value {
    json!({ "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": { "cached_tokens": cached } })
}

pub async fn completions(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: CompletionRequest = parse_json(body)?;
    let valid = ValidCompletion::new(&state, req)?;
    respond(state, valid).await
}

#[derive(Debug, Deserialize, serde::Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub model: Option<String>,
    pub messages: Vec<ChatMessage>,
    pub max_tokens: Option<usize>,
    pub max_completion_tokens: Option<usize>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<usize>,
    pub n: Option<usize>,
    pub seed: Option<u64>,
    pub stop: Option<StopInput>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<usize>,
    pub stream: Option<bool>,
    pub user: Option<String>,
    pub repetition_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
}

/// Renders the model's own chat template (from its GGUF metadata or tokenizer config).
fn render_chat(state: &AppState, messages: &[ChatMessage]) -> Result<String, ApiError> {
    let tok = &state.scheduler.tokenizer;
    let Some(template) = tok.chat_template() else {
        return Err(ApiError::invalid(
            "messages",
            format!("model '{}' has no chat template; use /v1/completions", state.scheduler.model_name),
        )
        .with_code("no_chat_template"));
    };
    if messages.is_empty() {
        return Err(ApiError::invalid("messages", "messages: at least one message is required"));
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
    env.render_str(template, ctx).map_err(|e| ApiError::invalid("messages", format!("chat template: {e}")))
}

pub async fn chat_completions(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let r: ChatRequest = parse_json(body)?;
    check_model(&state, &r.model)?;
    let prompt = render_chat(&state, &r.messages)?;
    // The template writes any BOS itself.
    let ids = state.scheduler.tokenizer.encode(&prompt, false).map_err(internal)?;
    let logprobs = if r.logprobs.unwrap_or(false) { Some(r.top_logprobs.unwrap_or(0)) } else { None };
    let as_completion = CompletionRequest {
        model: None,
        prompt: PromptInput::Tokens(ids),
        max_tokens: r.max_completion_tokens.or(r.max_tokens).or(Some(512.min(state.scheduler.context_length / 2))),
        temperature: r.temperature,
        top_p: r.top_p,
        top_k: r.top_k,
        n: r.n,
        seed: r.seed,
        stop: r.stop,
        logprobs,
        echo: None,
        stream: r.stream,
        user: r.user,
        repetition_penalty: r.repetition_penalty,
        presence_penalty: r.presence_penalty,
        frequency_penalty: r.frequency_penalty,
    };
    let mut valid = ValidCompletion::new(&state, as_completion)?;
    valid.chat = true;
    respond(state, valid).await
}

pub async fn respond(state: AppState, mut valid: ValidCompletion) -> Result<Response, ApiError> {
    let record = valid.record.take();
    let deadline = Some(Instant::now() + REQUEST_DEADLINE);
    let mut receivers = Vec::with_capacity(valid.choices.len());
    let mut prompt_tokens = 0;
    for (_, _, req) in &valid.choices {
        prompt_tokens += req.prompt_tokens.len();
        receivers.push(state.scheduler.submit(req.clone(), Priority::Api, deadline)?);
    }
    let id = request_id(if valid.chat { "chatcmpl" } else { "cmpl" });
    let created = now_secs();
    let model = state.scheduler.model_name.clone();
    if valid.stream {
        let stream = completion_stream(state, valid, receivers, id, created, model, prompt_tokens, record);
        return Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response());
    }
    let mut choices = Vec::new();
    let mut completion_tokens = 0;
    let mut cached_tokens = 0;
    let mut first: Option<(String, FinishReason)> = None;
    let mut ttft = None;
    for (index, ((_, prompt_text, _), mut rx)) in valid.choices.iter().zip(receivers).enumerate() {
        let echo_len = if valid.echo { prompt_text.len() } else { 0 };
        let mut text = if valid.echo { prompt_text.clone() } else { String::new() };
        let mut lp = LogprobsAcc::default();
        let mut finish = None;
        while let Some(ev) = rx.recv().await {
            match ev {
                SeqEvent::Token { token, text: piece } => {
                    if ttft.is_none() {
                        ttft = record.as_ref().map(|r| r.started.elapsed());
                    }
                    if valid.logprobs {
                        lp.push(&state, &token, text.len());
                    }
                    completion_tokens += 1;
                    text.push_str(&piece);
                }
                SeqEvent::Finished { reason, text: tail, cached_tokens: c, .. } => {
                    cached_tokens += c;
                    text.push_str(&tail);
                    finish = Some(reason);
                    break;
                }
                SeqEvent::Failed(err) => return Err(err),
            }
        }
        let finish = finish.ok_or_else(|| ApiError::internal("generation ended without a finish event"))?;
        if first.is_none() {
            first = Some((text[echo_len..].to_string(), finish));
        }
        let lp = if valid.logprobs { lp.to_json() } else { Value::Null };
        choices.push(if valid.chat {
            json!({ "index": index, "message": { "role": "assistant", "content": text },
                "logprobs": lp, "finish_reason": finish_str(finish) })
        } else {
            json!({ "text": text, "index": index, "logprobs": lp, "finish_reason": finish_str(finish) })
        });
    }
    let object = if valid.chat { "chat.completion" } else { "text_completion" };
    if let (Some(rec), Some((text, finish))) = (record, first) {
        rec.save(text, finish_str(finish), (prompt_tokens, completion_tokens, cached_tokens), ttft).await;
    }
    let mut body = json!({ "id": id, "object": object, "created": created, "model": model,
        "choices": choices, "usage": usage(prompt_tokens, completion_tokens, cached_tokens) });
    if let Some(t) = valid.template {
        body["template"] = t;
    }
    Ok(Json(body).into_response())
}

fn completion_stream(
    state: AppState,
    valid: ValidCompletion,
    receivers: Vec<tokio::sync::mpsc::UnboundedReceiver<SeqEvent>>,
    id: String,
    created: u64,
    model: String,
    prompt_tokens: usize,
    mut record: Option<RunRecorder>,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let n = receivers.len();
    // One merged stream of (choice index, event); dropping it (client gone) drops every
    // receiver, which the batcher sees and cancels those sequences.
    let merged = stream::select_all(receivers.into_iter().enumerate().map(|(i, rx)| {
        stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) }).map(move |e| (i, e)).boxed()
    }));
    let echoes: Vec<Option<String>> = valid.choices.iter().map(|(_, p, _)| valid.echo.then(|| p.clone())).collect();
    let logprobs = valid.logprobs;
    let chat = valid.chat;
    let template = valid.template.clone();
    let chunk = move |index: usize, text: String, lp: Value, finish: Option<&str>, usage: Value| {
        let mut body = if chat {
            json!({ "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{ "index": index, "delta": { "role": "assistant", "content": text },
                    "logprobs": lp, "finish_reason": finish }], "usage": usage })
        } else {
            json!({ "id": id, "object": "text_completion", "created": created, "model": model,
                "choices": [{ "text": text, "index": index, "logprobs": lp, "finish_reason": finish }],
                "usage": usage })
        };
        if let Some(t) = &template {
            body["template"] = t.clone();
        }
        SseEvent::default().data(body.to_string())
    };
    let mut recorded_text = String::new();
    let mut ttft = None;
    // The finished run is saved before `[DONE]`, so a client that reads the history right
    // after the stream ends finds it there.
    let pending_save = std::sync::Arc::new(std::sync::Mutex::new(None));
    let pending = pending_save.clone();
    let mut done = 0usize;
    let mut completion_tokens = 0usize;
    let mut cached_tokens = 0usize;
    let mut offsets = vec![0usize; n];
    let body = merged.map(move |(i, ev)| {
        let mut out = Vec::new();
        if let Some(echo) = echoes.get(i).cloned().flatten() {
            offsets[i] += echo.len();
            out.push(chunk(i, echo, Value::Null, None, Value::Null));
        }
        match ev {
            SeqEvent::Token { token, text } => {
                completion_tokens += 1;
                if i == 0 {
                    if ttft.is_none() {
                        ttft = record.as_ref().map(|r| r.started.elapsed());
                    }
                    recorded_text.push_str(&text);
                }
                let lp = if logprobs {
                    let mut acc = LogprobsAcc::default();
                    acc.push(&state, &token, offsets[i]);
                    acc.to_json()
                } else {
                    Value::Null
                };
                offsets[i] += text.len();
                out.push(chunk(i, text, lp, None, Value::Null));
            }
            SeqEvent::Finished { reason, text, cached_tokens: c, .. } => {
                done += 1;
                cached_tokens += c;
                let u = if done == n { usage(prompt_tokens, completion_tokens, cached_tokens) } else { Value::Null };
                if i == 0 {
                    recorded_text.push_str(&text);
                    if let Some(rec) = record.take() {
                        let out = std::mem::take(&mut recorded_text);
                        let counts = (prompt_tokens, completion_tokens, cached_tokens);
                        *pending.lock().unwrap() = Some(rec.save(out, finish_str(reason), counts, ttft));
                    }
                }
                out.push(chunk(i, text, Value::Null, Some(finish_str(reason)), u));
            }
            SeqEvent::Failed(e) => {
                done += 1;
                let err =
                    json!({ "error": { "message": e.message, "type": e.kind, "param": e.param, "code": e.code } });
                out.push(SseEvent::default().data(err.to_string()));
            }
        }
        stream::iter(out.into_iter().map(Ok))
    });
    let echoed_first = body.flatten();
    echoed_first.chain(stream::once(async move {
        let save = pending_save.lock().unwrap().take();
        if let Some(save) = save {
            save.await;
        }
        Ok(SseEvent::default().data("[DONE]"))
    }))
}

pub async fn models(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "object": "list", "data": [{ "id": state.scheduler.model_name, "object": "model",
        "created": 0, "owned_by": "studio", "context_length": state.scheduler.context_length }] }))
}

#[derive(Debug, Deserialize)]
pub struct TokenizeRequest {
    pub model: Option<String>,
    pub prompt: String,
    #[serde(default = "yes")]
    pub add_special_tokens: bool,
}

fn yes() -> bool {
    true
}

pub async fn tokenize(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let r: TokenizeRequest = parse_json(body)?;
    check_model(&state, &r.model)?;
    let tok = &state.scheduler.tokenizer;
    let ids = tok.encode(&r.prompt, r.add_special_tokens).map_err(internal)?;
    let pieces: Vec<String> = ids.iter().map(|&i| tok.id_to_token(i).unwrap_or_default()).collect();
    Ok(Json(
        json!({ "tokens": ids, "token_strs": pieces, "count": ids.len(), "max_model_len": state.scheduler.context_length }),
    ))
}

#[derive(Debug, Deserialize)]
pub struct DetokenizeRequest {
    pub model: Option<String>,
    pub tokens: Vec<u32>,
}

pub async fn detokenize(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let r: DetokenizeRequest = parse_json(body)?;
    check_model(&state, &r.model)?;
    let tok = &state.scheduler.tokenizer;
    check_token_ids("tokens", &r.tokens, tok)?;
    Ok(Json(json!({ "prompt": tok.decode(&r.tokens, false).map_err(internal)? })))
}
