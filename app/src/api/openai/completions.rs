//! `/v1/completions`: handler → validation into a [`ValidRequest`] → the batcher's bounded
//! queue → a stream of events back, as SSE or one JSON body. Chat and template endpoints
//! answer through [`respond`] too.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use api_types::completions::{ChatLogprobs, ChatTokenLogprob, Logprobs, PrefillProgress, TopLogprob};
use api_types::CompletionFields;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream, StreamExt};
use inference::{FinishReason, GenerateRequest, SampledToken, Tokenizer};
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::api::cpu;
use crate::api::error::ApiError;
use crate::api::json::WithParams;
use crate::serving::tokens::{token_bytes, token_label, CharOffsets};
use crate::serving::{RequestOptions, SeqEvent, ValidRequest};
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
    /// `stream_options.include_usage`: a last chunk carries the usage (`choices: []`).
    pub include_usage: bool,
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

/// The legacy `logprobs` entry of token `id` (`scored` is `None` for a prompt's first
/// token, which nothing precedes). Alternatives that would share a key (two tokens with the
/// same text, e.g. a byte-fallback piece and the whole-character token) keep their
/// vocabulary entry, so the dict never merges them.
fn push_legacy(lp: &mut Logprobs, tok: &Tokenizer, id: u32, scored: Option<&SampledToken>, offsets: &mut CharOffsets) {
    let bytes = token_bytes(tok, id);
    lp.text_offset.push(offsets.next(&bytes));
    lp.tokens.push(token_label(&bytes));
    lp.token_logprobs.push(scored.map(|t| t.logprob));
    lp.top_logprobs.push(scored.map(|t| {
        let mut top = BTreeMap::new();
        for &(alt, logprob) in &t.top {
            let label = token_label(&token_bytes(tok, alt));
            let key = if top.contains_key(&label) {
                let raw = tok.id_to_token(alt).unwrap_or_default();
                if top.contains_key(&raw) {
                    format!("{raw}#{alt}")
                } else {
                    raw
                }
            } else {
                label
            };
            top.insert(key, logprob);
        }
        top
    }));
}

/// A chat token's entry in OpenAI's chat shape (`logprobs.content[]`).
fn chat_entry(tok: &Tokenizer, t: &SampledToken) -> ChatTokenLogprob {
    let top = |id: u32, logprob: f32| {
        let bytes = token_bytes(tok, id);
        TopLogprob { token: token_label(&bytes), logprob, bytes }
    };
    let TopLogprob { token, logprob, bytes } = top(t.id, t.logprob);
    ChatTokenLogprob { token, logprob, bytes, top_logprobs: t.top.iter().map(|&(id, lp)| top(id, lp)).collect() }
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The engine request that scores a choice's prompt (`echo` with `logprobs`): everything
/// after its first token, forced after it, as the eval runner scores labels. A leading BOS
/// is context, not text, so the first reported token is the one after it. `None` when
/// only one token would be reported (it has no logprob).
fn prompt_scoring(tok: &Tokenizer, req: &GenerateRequest) -> (usize, Option<GenerateRequest>) {
    let ids = &req.prompt_tokens;
    let start = usize::from(ids.len() > 1 && tok.bos_id() == ids.first().copied());
    if ids.len() <= start + 1 {
        return (start, None);
    }
    let mut score = GenerateRequest::score(ids[..=start].to_vec(), ids[start + 1..].to_vec());
    score.sampling.logprobs = req.sampling.logprobs;
    (start, Some(score))
}

/// Reads a prompt's scores back: the echoed prompt's legacy logprobs (first token `null`).
async fn prompt_logprobs(
    tok: &Tokenizer,
    ids: &[u32],
    rx: Option<UnboundedReceiver<SeqEvent>>,
) -> Result<Logprobs, ApiError> {
    let mut lp = Logprobs::default();
    let mut offsets = CharOffsets::default();
    let Some(&first) = ids.first() else { return Ok(lp) };
    push_legacy(&mut lp, tok, first, None, &mut offsets);
    let Some(mut rx) = rx else { return Ok(lp) };
    while let Some(ev) = rx.recv().await {
        match ev {
            SeqEvent::Token { token, .. } => push_legacy(&mut lp, tok, token.id, Some(&token), &mut offsets),
            SeqEvent::Finished { .. } => return Ok(lp),
            SeqEvent::Failed(err) => return Err(err.into()),
            SeqEvent::Prefill { .. } => {}
        }
    }
    Err(ApiError::internal("scoring the prompt ended without a finish event"))
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
    let include_usage = r.stream_options.is_some_and(|o| o.include_usage);
    // ... and so is compiling an output constraint.
    let valid =
        cpu::run(move || ValidRequest::new(&sched, prompt, params, opts).and_then(|v| v.with_output(&sched, output)))
            .await??;
    respond(state, valid, ResponseExtras { include_usage, ..Default::default() }).await
}

/// Submits every choice at API priority, as one group, and answers as one body or an SSE stream.
pub async fn respond(state: AppState, valid: ValidRequest, extras: ResponseExtras) -> Result<Response, ApiError> {
    let ResponseExtras { chat, template, record, include_usage } = extras;
    let deadline = Some(Instant::now() + REQUEST_DEADLINE);
    let tok = state.scheduler.tokenizer.clone();
    let prompt_tokens = valid.choices.iter().map(|(_, _, req)| req.prompt_tokens.len()).sum();
    // `max_tokens: 0` (only with `echo`) generates nothing; `echo` with `logprobs` scores
    // the prompt too, as a second sequence of the same group.
    let generates: Vec<bool> = valid.choices.iter().map(|(_, _, req)| req.max_tokens > 0).collect();
    let scoring: Vec<(usize, Option<GenerateRequest>)> = valid
        .choices
        .iter()
        .map(|(_, _, req)| if valid.echo && valid.logprobs { prompt_scoring(&tok, req) } else { (0, None) })
        .collect();
    let mut reqs: Vec<GenerateRequest> =
        valid.choices.iter().filter(|(_, _, req)| req.max_tokens > 0).map(|(_, _, req)| req.clone()).collect();
    reqs.extend(scoring.iter().filter_map(|(_, s)| s.clone()));
    let mut receivers = if reqs.is_empty() {
        Vec::new()
    } else {
        // One group: the request takes one place in the queue and its choices start together.
        // API priority, unless a batch line runs through this endpoint.
        state.scheduler.submit_group(reqs, crate::serving::current_priority(), deadline)?
    }
    .into_iter();
    let gen_rx: Vec<Option<UnboundedReceiver<SeqEvent>>> =
        generates.iter().map(|&g| if g { receivers.next() } else { None }).collect();
    let score_rx: Vec<Option<UnboundedReceiver<SeqEvent>>> =
        scoring.iter().map(|(_, s)| if s.is_some() { receivers.next() } else { None }).collect();
    // The echoed prompts first (their scores come within the first steps; generation goes on
    // meanwhile).
    let mut prompts = Vec::new();
    for (((_, text, req), rx), (start, _)) in valid.choices.iter().zip(score_rx).zip(&scoring) {
        let lp = if valid.echo && valid.logprobs {
            Some(prompt_logprobs(&tok, &req.prompt_tokens[*start..], rx).await?)
        } else {
            None
        };
        prompts.push(valid.echo.then(|| (text.clone(), lp)));
    }
    let id = request_id(if chat { "chatcmpl" } else { "cmpl" });
    let created = now_secs();
    let model = state.scheduler.model_name.clone();
    let chunker = Arc::new(Chunker {
        id: id.clone(),
        created,
        model: model.clone(),
        chat,
        template: template.clone(),
        include_usage,
    });
    if valid.stream {
        let stream = completion_stream(tok, valid.logprobs, gen_rx, prompts, chunker, prompt_tokens, record);
        return Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response());
    }
    let mut choices = Vec::new();
    let mut completion_tokens = 0;
    let mut cached_tokens = 0;
    let mut first: Option<(String, FinishReason)> = None;
    let mut ttft = None;
    for (index, (rx, prompt)) in gen_rx.into_iter().zip(prompts).enumerate() {
        let (mut text, mut lp) = match prompt {
            Some((text, lp)) => (text, lp.unwrap_or_default()),
            None => (String::new(), Logprobs::default()),
        };
        let echo_len = text.len();
        let mut offsets = CharOffsets::starting_at(text.chars().count());
        let mut chat_lp = ChatLogprobs::default();
        let mut finish = None;
        if let Some(mut rx) = rx {
            while let Some(ev) = rx.recv().await {
                match ev {
                    SeqEvent::Token { token, text: piece } => {
                        if ttft.is_none() {
                            ttft = record.as_ref().map(|r| r.started.elapsed());
                        }
                        if valid.logprobs && chat {
                            chat_lp.content.push(chat_entry(&tok, &token));
                        } else if valid.logprobs {
                            push_legacy(&mut lp, &tok, token.id, Some(&token), &mut offsets);
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
        } else {
            // `max_tokens: 0`: the prompt alone, as long as asked.
            finish = Some(FinishReason::Length);
        }
        let finish = finish.ok_or_else(|| ApiError::internal("generation ended without a finish event"))?;
        if first.is_none() {
            first = Some((text[echo_len..].to_string(), finish));
        }
        choices.push(if chat {
            let lp = if valid.logprobs { to_json(&chat_lp) } else { Value::Null };
            json!({ "index": index, "message": { "role": "assistant", "content": text },
                "logprobs": lp, "finish_reason": finish_str(finish) })
        } else {
            let lp = if valid.logprobs { to_json(&lp) } else { Value::Null };
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

/// Writes the chunks of one streamed response: what every chunk repeats, and whether
/// usage is asked for (then every chunk says `"usage": null` and a last one carries it).
struct Chunker {
    id: String,
    created: u64,
    model: String,
    chat: bool,
    template: Option<Value>,
    include_usage: bool,
}

impl Chunker {
    fn event(&self, choices: Value, usage: Value) -> SseEvent {
        let object = if self.chat { "chat.completion.chunk" } else { "text_completion" };
        let mut body = json!({ "id": self.id, "object": object, "created": self.created, "model": self.model,
            "choices": choices });
        if self.include_usage {
            body["usage"] = usage;
        }
        if let Some(t) = &self.template {
            body["template"] = t.clone();
        }
        SseEvent::default().data(body.to_string())
    }

    /// One choice's chunk; `role`: the choice's first (chat names the role once).
    fn choice(&self, index: usize, text: String, lp: Value, finish: Option<&str>, role: bool) -> SseEvent {
        let choice = if self.chat {
            let delta = if role { json!({ "role": "assistant", "content": text }) } else { json!({ "content": text }) };
            json!({ "index": index, "delta": delta, "logprobs": lp, "finish_reason": finish })
        } else {
            json!({ "text": text, "index": index, "logprobs": lp, "finish_reason": finish })
        };
        self.event(json!([choice]), Value::Null)
    }
}

/// What a stream counts while it runs, read by its closing usage chunk.
#[derive(Default)]
struct StreamCounts {
    completion_tokens: usize,
    cached_tokens: usize,
}

fn completion_stream(
    tok: Arc<Tokenizer>,
    logprobs: bool,
    receivers: Vec<Option<UnboundedReceiver<SeqEvent>>>,
    prompts: Vec<Option<(String, Option<Logprobs>)>>,
    chunker: Arc<Chunker>,
    prompt_tokens: usize,
    mut record: Option<RunRecorder>,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let chat = chunker.chat;
    // The echoed prompts, once each, before anything generated; a choice that generates
    // nothing (`max_tokens: 0`) is finished there too.
    let mut head = Vec::new();
    let mut offsets = Vec::new();
    let mut role_sent = vec![false; receivers.len()];
    for (i, (prompt, rx)) in prompts.into_iter().zip(&receivers).enumerate() {
        let finish = rx.is_none().then_some("length");
        match prompt {
            Some((text, lp)) => {
                offsets.push(CharOffsets::starting_at(text.chars().count()));
                let lp = lp.as_ref().map(to_json).unwrap_or(Value::Null);
                head.push(chunker.choice(i, text, lp, finish, !role_sent[i]));
                role_sent[i] = true;
            }
            None => {
                offsets.push(CharOffsets::default());
                if finish.is_some() {
                    head.push(chunker.choice(i, String::new(), Value::Null, finish, !role_sent[i]));
                    role_sent[i] = true;
                }
            }
        }
    }
    // One merged stream of (choice index, event); dropping it (client gone) drops every
    // receiver, which the batcher sees and cancels those sequences.
    let merged = stream::select_all(receivers.into_iter().enumerate().filter_map(|(i, rx)| {
        let rx = rx?;
        Some(stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) }).map(move |e| (i, e)).boxed())
    }));
    let mut recorded_text = String::new();
    let mut ttft = None;
    // The finished run is saved before `[DONE]`, so a client that reads the history right
    // after the stream ends finds it there.
    let pending_save = Arc::new(Mutex::new(None));
    let pending = pending_save.clone();
    let counts = Arc::new(Mutex::new(StreamCounts::default()));
    let counted = counts.clone();
    let chunks = chunker.clone();
    let body = merged.map(move |(i, ev)| {
        let mut out = Vec::new();
        let role = !std::mem::replace(&mut role_sent[i], true);
        match ev {
            SeqEvent::Token { token, text } => {
                counted.lock().unwrap().completion_tokens += 1;
                if i == 0 {
                    if ttft.is_none() {
                        ttft = record.as_ref().map(|r| r.started.elapsed());
                    }
                    recorded_text.push_str(&text);
                }
                let lp = match (logprobs, chat) {
                    (false, _) => Value::Null,
                    (true, true) => to_json(&ChatLogprobs { content: vec![chat_entry(&tok, &token)] }),
                    (true, false) => {
                        let mut lp = Logprobs::default();
                        push_legacy(&mut lp, &tok, token.id, Some(&token), &mut offsets[i]);
                        to_json(&lp)
                    }
                };
                out.push(chunks.choice(i, text, lp, None, role));
            }
            SeqEvent::Finished { reason, text, cached_tokens: c, .. } => {
                let (completion_tokens, cached_tokens) = {
                    let mut n = counted.lock().unwrap();
                    n.cached_tokens += c;
                    (n.completion_tokens, n.cached_tokens)
                };
                if i == 0 {
                    recorded_text.push_str(&text);
                    if let Some(rec) = record.take() {
                        let out = std::mem::take(&mut recorded_text);
                        let counts = (prompt_tokens, completion_tokens, cached_tokens);
                        *pending.lock().unwrap() = Some(rec.save(out, finish_str(reason), counts, ttft));
                    }
                }
                out.push(chunks.choice(i, text, Value::Null, Some(finish_str(reason)), role));
            }
            SeqEvent::Failed(e) => {
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
    let tail = stream::once(async move {
        let save = pending_save.lock().unwrap().take();
        if let Some(save) = save {
            save.await;
        }
        let mut out = Vec::new();
        // The usage chunk, when asked for: after every choice, before `[DONE]`.
        if chunker.include_usage {
            let n = counts.lock().unwrap();
            out.push(Ok(chunker.event(json!([]), usage(prompt_tokens, n.completion_tokens, n.cached_tokens))));
        }
        out.push(Ok(SseEvent::default().data("[DONE]")));
        stream::iter(out)
    })
    .flatten();
    stream::iter(head.into_iter().map(Ok)).chain(body.flatten()).chain(tail)
}
