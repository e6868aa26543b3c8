//! OpenAI conformance through `app()` + `oneshot` on the real SmolLM2 model: echo (streamed
//! once; prompt scoring), logprobs in the completions and chat shapes with real bytes, the
//! SDK's shapes (404 model, models/{id}, content parts, role once, usage chunk), and JSON
//! errors for every rejection.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;

async fn state() -> app::AppState {
    let store = app::store::Store::connect("sqlite::memory:").await.unwrap();
    app::AppState { scheduler: support::shared_scheduler(8), store }
}

async fn post(s: &app::AppState, uri: &str, body: Value) -> (StatusCode, Vec<u8>) {
    support::call_raw(s, None, "POST", uri, Body::from(body.to_string()), "application/json").await
}

async fn post_json(s: &app::AppState, uri: &str, body: Value) -> (StatusCode, Value) {
    let (status, b) = post(s, uri, body).await;
    (status, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

/// The JSON chunks of an SSE body (`[DONE]` checked and dropped, comments skipped).
fn chunks(body: &[u8]) -> Vec<Value> {
    let text = String::from_utf8(body.to_vec()).unwrap();
    let data: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{text}");
    data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect()
}

/// A legacy token label back to its bytes (`bytes:\xec\x95` or the text).
fn label_bytes(label: &str) -> Vec<u8> {
    match label.strip_prefix("bytes:") {
        Some(hex) => hex.split("\\x").filter(|h| !h.is_empty()).map(|h| u8::from_str_radix(h, 16).unwrap()).collect(),
        None => label.as_bytes().to_vec(),
    }
}

#[tokio::test]
async fn echo_streams_the_prompt_once_and_scores_it() {
    let s = state().await;
    let prompt = "The capital of France is";
    let req = json!({"prompt": prompt, "max_tokens": 8, "echo": true, "temperature": 0, "logprobs": 2});
    let (status, full) = post_json(&s, "/v1/completions", req.clone()).await;
    assert_eq!(status, StatusCode::OK, "{full}");
    let text = full["choices"][0]["text"].as_str().unwrap();
    assert!(text.starts_with(prompt) && text.len() > prompt.len(), "{text}");
    // Prompt tokens first (the first has no logprob), then the 8 generated ones.
    let lp = &full["choices"][0]["logprobs"];
    let n_prompt = full["usage"]["prompt_tokens"].as_u64().unwrap() as usize;
    let tokens = lp["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), n_prompt + 8, "{lp}");
    assert!(lp["token_logprobs"][0].is_null() && lp["top_logprobs"][0].is_null(), "{lp}");
    assert!(lp["token_logprobs"].as_array().unwrap()[1..].iter().all(|x| x.as_f64().unwrap() <= 0.0));
    assert_eq!(lp["top_logprobs"][1].as_object().unwrap().len(), 2);
    let joined: Vec<u8> = tokens.iter().flat_map(|t| label_bytes(t.as_str().unwrap())).collect();
    assert_eq!(String::from_utf8(joined).unwrap(), text, "tokens join back to the text");
    let offsets: Vec<u64> = lp["text_offset"].as_array().unwrap().iter().map(|o| o.as_u64().unwrap()).collect();
    assert_eq!(offsets[0], 0);
    assert_eq!(offsets[n_prompt] as usize, prompt.chars().count(), "generation starts after the prompt");
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]));

    // Streamed: the prompt once, in the first chunk, and the same text in all.
    let mut streamed = req.clone();
    streamed["stream"] = json!(true);
    let (status, raw) = post(&s, "/v1/completions", streamed).await;
    assert_eq!(status, StatusCode::OK);
    let cs = chunks(&raw);
    assert_eq!(cs[0]["choices"][0]["text"], prompt);
    let all: String = cs.iter().map(|c| c["choices"][0]["text"].as_str().unwrap()).collect();
    assert_eq!(all, text);
    assert_eq!(all.matches(prompt).count(), 1, "{all}");
    assert!(cs.iter().all(|c| c.get("usage").is_none()), "no usage unless include_usage");

    // Scoring: max_tokens 0 with echo returns the prompt and its logprobs, generates nothing.
    let (status, scored) =
        post_json(&s, "/v1/completions", json!({"prompt": prompt, "max_tokens": 0, "echo": true, "logprobs": 0})).await;
    assert_eq!(status, StatusCode::OK, "{scored}");
    assert_eq!(scored["choices"][0]["text"], prompt);
    assert_eq!(scored["usage"]["completion_tokens"], 0);
    let slp = &scored["choices"][0]["logprobs"]["token_logprobs"];
    assert_eq!(slp.as_array().unwrap().len(), n_prompt);
    assert_eq!(slp.as_array().unwrap()[1..], lp["token_logprobs"].as_array().unwrap()[1..n_prompt]);
    let (status, err) = post_json(&s, "/v1/completions", json!({"prompt": prompt, "max_tokens": 0})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["error"]["param"], "max_tokens");
}

#[tokio::test]
async fn korean_logprobs_keep_real_bytes_distinct_alternatives_and_char_offsets() {
    let s = state().await;
    let prompt = "한국어로 인사해 주세요:";
    let req = json!({"prompt": prompt, "max_tokens": 12, "temperature": 0, "logprobs": 3, "echo": true});
    let (status, full) = post_json(&s, "/v1/completions", req).await;
    assert_eq!(status, StatusCode::OK, "{full}");
    let text = full["choices"][0]["text"].as_str().unwrap();
    let lp = &full["choices"][0]["logprobs"];
    let tokens = lp["tokens"].as_array().unwrap();
    assert!(tokens.iter().any(|t| t.as_str().unwrap().starts_with("bytes:\\x")), "Korean has partial tokens: {lp}");
    assert!(tokens.iter().all(|t| !t.as_str().unwrap().contains('\u{fffd}')), "{lp}");
    let joined: Vec<u8> = tokens.iter().flat_map(|t| label_bytes(t.as_str().unwrap())).collect();
    assert!(String::from_utf8_lossy(&joined).starts_with(text), "tokens join back to the text: {lp}");
    for top in lp["top_logprobs"].as_array().unwrap()[1..].iter() {
        assert_eq!(top.as_object().unwrap().len(), 3, "alternatives are never merged: {top}");
    }
    let chars = text.chars().count() as u64;
    assert!(lp["text_offset"].as_array().unwrap().iter().all(|o| o.as_u64().unwrap() <= chars), "{lp}");

    // Chat: OpenAI's content shape with bytes that join to the message.
    let chat = json!({"messages": [{"role": "user", "content": "인사해 주세요"}], "max_tokens": 10, "temperature": 0,
        "logprobs": true, "top_logprobs": 3});
    let (status, body) = post_json(&s, "/v1/chat/completions", chat.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let content = body["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len(), body["usage"]["completion_tokens"].as_u64().unwrap() as usize);
    let e = &content[0];
    assert!(e["token"].is_string() && e["logprob"].as_f64().unwrap() <= 0.0 && e["bytes"].is_array(), "{e}");
    assert_eq!(e["top_logprobs"].as_array().unwrap().len(), 3);
    assert!(e["top_logprobs"][0]["bytes"].is_array() && e["top_logprobs"][0]["token"].is_string());
    let bytes: Vec<u8> =
        content.iter().flat_map(|e| e["bytes"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap() as u8)).collect();
    let message = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(String::from_utf8_lossy(&bytes).starts_with(message), "{message:?}");

    // Streamed chat: role once, logprobs per chunk, usage only in a last chunk when asked.
    let mut streamed = chat;
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let (_, raw) = post(&s, "/v1/chat/completions", streamed).await;
    let cs = chunks(&raw);
    let roles = cs.iter().filter(|c| c["choices"][0]["delta"].get("role").is_some()).count();
    assert_eq!(roles, 1, "role only in the first delta");
    assert_eq!(cs[0]["choices"][0]["delta"]["role"], "assistant");
    let last = cs.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], body["usage"]["completion_tokens"]);
    assert!(cs[..cs.len() - 1].iter().all(|c| c["usage"].is_null()));
    let streamed_content: usize =
        cs.iter().filter_map(|c| c["choices"][0]["logprobs"]["content"].as_array()).map(Vec::len).sum();
    assert_eq!(streamed_content, content.len());
}

#[tokio::test]
async fn sdk_shapes_models_content_parts_and_template_fields() {
    let s = state().await;
    let (status, err) = post_json(&s, "/v1/completions", json!({"prompt": "hi", "model": "gpt-17"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
    assert_eq!(err["error"]["code"], "model_not_found");
    assert_eq!(err["error"]["type"], "invalid_request_error");
    let (status, m) = support::call_raw(&s, None, "GET", "/v1/models/smollm2-135m", Body::empty(), "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serde_json::from_slice::<Value>(&m).unwrap()["id"], "smollm2-135m");
    let (status, _) = support::call_raw(&s, None, "GET", "/v1/models/gpt-17", Body::empty(), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Content parts and null content read as their text.
    let ask = |content: Value| {
        json!({"messages": [{"role": "system", "content": null}, {"role": "user", "content": content}],
            "max_tokens": 6, "temperature": 0})
    };
    let (_, plain) = post_json(&s, "/v1/chat/completions", ask(json!("Name a color."))).await;
    let parts = json!([{"type": "text", "text": "Name a "}, {"type": "text", "text": "color."}]);
    let (status, parted) = post_json(&s, "/v1/chat/completions", ask(parts)).await;
    assert_eq!(status, StatusCode::OK, "{parted}");
    assert_eq!(parted["choices"][0]["message"], plain["choices"][0]["message"]);
    let (status, err) =
        post_json(&s, "/v1/chat/completions", ask(json!([{"type": "image_url", "image_url": {"url": "x"}}]))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert!(err["error"]["param"].as_str().unwrap().starts_with("messages[1].content"), "{err}");

    // A template run takes what /v1/completions takes, stream_options included.
    let draft = json!({"spec": {"input_pattern": "Say {{word}}:"}, "variables": {"word": "hi"}, "max_tokens": 3,
        "temperature": 0, "stream": true, "stream_options": {"include_usage": true}, "echo": false, "logprobs": 1,
        "user": "u", "model": "smollm2-135m"});
    let (status, raw) = post(&s, "/api/draft/completions", draft).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&raw));
    let cs = chunks(&raw);
    let last = cs.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    let tokens = cs.iter().filter(|c| c["choices"][0]["logprobs"]["tokens"].is_array()).count();
    assert!(tokens >= 1 && last["usage"]["completion_tokens"] == tokens, "{last}");
}

#[tokio::test]
async fn every_rejection_is_an_openai_json_error() {
    let s = state().await;
    let get = |uri: &'static str| {
        let s = s.clone();
        async move {
            let req = Request::builder().method("GET").uri(uri).body(Body::empty()).unwrap();
            let resp = app::app(s).oneshot(req).await.unwrap();
            let status = resp.status();
            let allow = resp.headers().get("allow").map(|v| v.to_str().unwrap().to_string());
            let body = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
            (status, allow, serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null))
        }
    };
    for (uri, status, param) in [
        ("/api/evals/abc", StatusCode::BAD_REQUEST, Some("path")),
        ("/api/templates/x/runs?limit=abc", StatusCode::BAD_REQUEST, Some("query")),
        ("/api/templates/%FF/tests", StatusCode::BAD_REQUEST, Some("path")),
        ("/v1/nothing", StatusCode::NOT_FOUND, None),
        ("/v1/completions", StatusCode::METHOD_NOT_ALLOWED, None),
    ] {
        let (got, allow, body) = get(uri).await;
        assert_eq!(got, status, "{uri}: {body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{uri}: {body}");
        assert_eq!(body["error"]["param"].as_str(), param, "{uri}: {body}");
        if status == StatusCode::METHOD_NOT_ALLOWED {
            assert_eq!(allow.as_deref(), Some("POST"), "{uri}");
            assert_eq!(body["error"]["code"], "method_not_allowed");
        }
    }
}
