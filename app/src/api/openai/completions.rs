//! `/v1/completions`: handler → validation into a [`ValidRequest`] → the batcher's bounded
//! queue → a stream of events back, as SSE or one JSON body. Chat and template endpoints
//! answer through [`respond`] too.

use std::convert::Infallible;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use api_types::completions::PrefillProgress;
use api_types::CompletionFields;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream, StreamExt};
use inference::{FinishReason, SampledToken};
use serde_json::{json, Value};

use crate::api::cpu;
use crate::api::error::ApiError;
use crate::api::json::WithParams;
use crate::serving::{Priority, RequestOptions, SeqEvent, ValidRequest};
use crate::AppState;

/// How long one request may run before the batcher cancels it.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(600);

/// What a response carries besides the generated choices.
#[derive(Debug, Default)]
pub struct ResponseExtras {
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
    WithParams(mut r, params): WithParams<CompletionFields>,
) -> Result<Response, ApiError> {
    let output = r.take_output();
    let opts = RequestOptions {
        model: r.model,
        logprobs: r.logprobs,
        echo: r.echo.unwrap_or(false),
        stream: r.stream.unwrap_or(false),
    };
    let sched = state.scheduler.clone();
    let prompt = r.prompt;
    // Tokenizing every prompt is CPU work: off the tokio workers.
    // ... and so is compiling an output constraint.
    let valid =
        cpu::run(move || ValidRequest::new(&sched, prompt, params, opts).and_then(|v| v.with_output(&sched, output)))
            .await??;
    respond(state, valid, ResponseExtras::default()).await
}

/// Submits every choice at API priority, as one group, and answers as one body or an SSE stream.
pub async fn respond(state: AppState, valid: ValidRequest, extras: ResponseExtras) -> Result<Response, ApiError> {
    let ResponseExtras { chat, template, record } = extras;
    let deadline = Some(Instant::now() + REQUEST_DEADLINE);
    let prompt_tokens = valid.choices.iter().map(|(_, _, req)| req.prompt_tokens.len()).sum();
    let reqs = valid.choices.iter().map(|(_, _, req)| req.clone()).collect();
    // One group: the request takes one place in the queue and its choices start together.
    let receivers = state.scheduler.submit_group(reqs, Priority::Api, deadline)?;
    let id = request_id(if chat { "chatcmpl" } else { "cmpl" });
    let created = now_secs();
    let model = state.scheduler.model_name.clone();
    if valid.stream {
        let stream = completion_stream(
            state,
            valid,
            receivers,
            Head { id, created, model, chat, template },
            prompt_tokens,
            record,
        );
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
                SeqEvent::Failed(err) => return Err(err.into()),
                SeqEvent::Prefill { .. } => {}
            }
        }
        let finish = finish.ok_or_else(|| ApiError::internal("generation ended without a finish event"))?;
        if first.is_none() {
            first = Some((text[echo_len..].to_string(), finish));
        }
        let lp = if valid.logprobs { lp.to_json() } else { Value::Null };
        choices.push(if chat {
            json!({ "index": index, "message": { "role": "assistant", "content": text },
                "logprobs": lp, "finish_reason": finish_str(finish) })
        } else {
            json!({ "text": text, "index": index, "logprobs": lp, "finish_reason": finish_str(finish) })
        });
    }
    let object = if chat { "chat.completion" } else { "text_completion" };
    if let (Some(rec), Some((text, finish))) = (record, first) {
        rec.save(text, finish_str(finish), (prompt_tokens, completion_tokens, cached_tokens), ttft).await;
    }
    let mut body = json!({ "id": id, "object": object, "created": created, "model": model,
        "choices": choices, "usage": usage(prompt_tokens, completion_tokens, cached_tokens) });
    if let Some(t) = template {
        body["template"] = t;
    }
    Ok(Json(body).into_response())
}

/// What every chunk of one response repeats.
struct Head {
    id: String,
    created: u64,
    model: String,
    chat: bool,
    template: Option<Value>,
}

fn completion_stream(
    state: AppState,
    valid: ValidRequest,
    receivers: Vec<tokio::sync::mpsc::UnboundedReceiver<SeqEvent>>,
    head: Head,
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
    let Head { id, created, model, chat, template } = head;
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
                out.push(SseEvent::default().data(ApiError::from(e).body().to_string()));
            }
            // An SSE comment, which OpenAI clients (and every SSE parser) skip; the studio
            // reads it to show how far a long prompt has been read.
            SeqEvent::Prefill { done, total } => {
                out.push(SseEvent::default().comment(PrefillProgress { index: i, done, total }.comment()));
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
