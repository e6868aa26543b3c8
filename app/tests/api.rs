//! The OpenAI-compatible router through `app()` + `oneshot`, on the real SmolLM2 model.

use std::time::{Duration, Instant};

mod support;

use app::{app, AppState};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use support::model_path;
use tower::ServiceExt;

/// Router state over `scheduler` with a fresh in-memory SQLite store.
async fn with_store(scheduler: app::serving::Scheduler) -> AppState {
    AppState { scheduler, store: app::store::Store::connect("sqlite::memory:").await.unwrap() }
}

async fn state_with(queue: usize) -> AppState {
    with_store(support::start(queue, 8)).await
}

async fn shared() -> AppState {
    with_store(support::shared_scheduler(8)).await
}

async fn call(state: &AppState, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Vec<u8>) {
    let body = body.map(|b| Body::from(b.to_string())).unwrap_or_else(Body::empty);
    support::call_raw(state, None, method, uri, body, "application/json").await
}

async fn post(state: &AppState, uri: &str, body: Value) -> (StatusCode, Value) {
    let (s, b) = call(state, "POST", uri, Some(body)).await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

fn sse_data(body: &[u8]) -> Vec<String> {
    String::from_utf8(body.to_vec())
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("data: ").map(str::to_string))
        .collect()
}

#[tokio::test]
async fn completion_greedy_then_stream_give_the_same_text() {
    let s = shared().await;
    let req = json!({"prompt": "The capital of France is", "max_tokens": 12, "temperature": 0, "logprobs": 2});
    let (status, body) = post(&s, "/v1/completions", req.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let text = body["choices"][0]["text"].as_str().unwrap().to_string();
    assert!(!text.is_empty());
    assert_eq!(body["usage"]["completion_tokens"], 12);
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["choices"][0]["logprobs"]["tokens"].as_array().unwrap().len(), 12);
    assert!(body["usage"]["prompt_tokens_details"]["cached_tokens"].is_number());

    let mut streamed = req.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let (status, raw) = call(&s, "POST", "/v1/completions", Some(streamed)).await;
    assert_eq!(status, StatusCode::OK);
    let data = sse_data(&raw);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let mut chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    // The usage rides alone on a last chunk with no choices.
    let usage = chunks.pop().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 12);
    let joined: String = chunks.iter().map(|c| c["choices"][0]["text"].as_str().unwrap()).collect();
    assert_eq!(joined, text);
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "length");
    assert!(chunks.iter().all(|c| c["usage"].is_null()));
}

#[tokio::test]
async fn seed_reproducible_and_n_choices() {
    let s = shared().await;
    let req =
        json!({"prompt": ["Once upon a time", "In a galaxy"], "max_tokens": 8, "temperature": 0.9, "seed": 7, "n": 2});
    let (status, a) = post(&s, "/v1/completions", req.clone()).await;
    assert_eq!(status, StatusCode::OK, "{a}");
    assert_eq!(a["choices"].as_array().unwrap().len(), 4);
    let (_, b) = post(&s, "/v1/completions", req).await;
    assert_eq!(a["choices"], b["choices"], "same seed, same text");
}

#[tokio::test]
async fn stop_sequence_is_not_returned() {
    let s = shared().await;
    let (_, free) =
        post(&s, "/v1/completions", json!({"prompt": "Count: 1, 2, 3, 4,", "max_tokens": 16, "temperature": 0})).await;
    let free = free["choices"][0]["text"].as_str().unwrap().to_string();
    assert!(free.contains('7'), "{free}");
    let (_, body) = post(
        &s,
        "/v1/completions",
        json!({"prompt": "Count: 1, 2, 3, 4,", "max_tokens": 16, "temperature": 0, "stop": ["7"]}),
    )
    .await;
    let text = body["choices"][0]["text"].as_str().unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert!(!text.contains('7') && free.starts_with(text), "{text:?} vs {free:?}");
}

#[tokio::test]
async fn bad_requests_name_the_field_and_limit() {
    let s = shared().await;
    let cases = [
        (json!({"prompt": "hi", "temperature": 3.5}), "temperature", "2"),
        (json!({"prompt": "hi", "max_tokens": 100000}), "max_tokens", "8192"),
        (json!({"prompt": "hi", "n": 99}), "n", "16"),
        (json!({"prompt": "hi", "temperature": "hot"}), "temperature", "invalid type"),
        (json!({"prompt": "hi", "stop": ["a", "b", "c", "d", "e"]}), "stop", "4"),
    ];
    for (body, param, needle) in cases {
        let (status, err) = post(&s, "/v1/completions", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {err}");
        assert_eq!(err["error"]["param"], param, "{err}");
        assert!(err["error"]["message"].as_str().unwrap().contains(needle), "{err}");
    }
    let long = "word ".repeat(9000);
    let (status, err) = post(&s, "/v1/completions", json!({"prompt": long})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"]["code"], "context_length_exceeded");
    // Oversize body: 413; broken JSON: 400; unknown route: 404; all in the error shape.
    let huge = json!({"prompt": "x".repeat(app::MAX_BODY_BYTES + 10)});
    let (status, err) = post(&s, "/v1/completions", huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{err}");
    let req =
        Request::builder().method("POST").uri("/v1/completions").body(Body::from(vec![b'{', 0xff, 0xfe])).unwrap();
    let resp = app(s.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let (status, body) = call(&s, "GET", "/v1/nothing", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("/v1/nothing"), "{body}");
    // An unknown model: 404 `model_not_found`, as OpenAI answers.
    let (status, err) = post(&s, "/v1/completions", json!({"prompt": "hi", "model": "gpt-17"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
    assert_eq!(err["error"]["param"], "model");
    assert!(err["error"]["message"].as_str().unwrap().contains("gpt-17"), "{err}");
}

#[tokio::test]
async fn tokenize_detokenize_round_trip_cjk() {
    let s = shared().await;
    let text = "안녕하세요 こんにちは 你好";
    let (status, t) = post(&s, "/v1/tokenize", json!({"prompt": text, "add_special_tokens": false})).await;
    assert_eq!(status, StatusCode::OK);
    assert!(t["count"].as_u64().unwrap() > 3);
    let (_, d) = post(&s, "/v1/detokenize", json!({"tokens": t["tokens"]})).await;
    assert_eq!(d["prompt"], text);
    let (status, err) = post(&s, "/v1/detokenize", json!({"tokens": [999999999]})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"]["param"], "tokens");
}

#[tokio::test]
async fn models_health_metrics() {
    let s = shared().await;
    let (status, body) = call(&s, "GET", "/v1/models", None).await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["data"][0]["id"], "smollm2-135m");
    let (status, _) = call(&s, "GET", "/health", None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, m) = call(&s, "GET", "/metrics", None).await;
    let m = String::from_utf8(m).unwrap();
    for name in [
        "studio_queue_depth",
        "studio_running_sequences",
        "studio_kv_cache_tokens",
        "studio_time_to_first_token_seconds_bucket",
        "studio_requests_total",
    ] {
        assert!(m.contains(name), "{name} missing from /metrics");
    }
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test]
async fn dropped_stream_leaves_the_batch_at_the_next_step() {
    let s = state_with(8).await;
    let req = Request::builder()
        .method("POST")
        .uri("/v1/completions")
        .header("content-type", "application/json")
        .body(Body::from(
            // Greedy counting goes on far past the hang-up; a sampled story could end by itself first.
            json!({"prompt": "1, 2, 3, 4, 5, 6, 7, 8,", "max_tokens": 2000, "temperature": 0, "stream": true})
                .to_string(),
        ))
        .unwrap();
    let resp = app(s.clone()).oneshot(req).await.unwrap();
    let mut body = resp.into_body();
    // Read a few chunks, then hang up.
    for _ in 0..3 {
        body.frame().await.unwrap().unwrap();
    }
    let (_, m) = call(&s, "GET", "/metrics", None).await;
    let m = String::from_utf8(m).unwrap();
    assert_eq!(metric(&m, "studio_running_sequences"), 1);
    let generated_at_hang_up = metric(&m, "studio_generated_tokens_total");
    drop(body);
    // Counted in engine steps (one token each for a lone sequence), not seconds, so a
    // loaded machine cannot make it flaky: the sequence leaves at the next step; the step
    // in flight, and any between the metrics read and the hang-up, may still finish.
    let t0 = Instant::now();
    loop {
        let (_, m) = call(&s, "GET", "/metrics", None).await;
        let m = String::from_utf8(m).unwrap();
        if metric(&m, "studio_running_sequences") == 0 {
            assert_eq!(metric(&m, "studio_cancelled_sequences_total"), 1);
            assert_eq!(metric(&m, "studio_kv_cache_tokens"), 0);
            let after = metric(&m, "studio_generated_tokens_total") - generated_at_hang_up;
            assert!(after <= 8, "{after} tokens generated after the hang-up: it should leave at the next step");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "sequence still running a minute after the hang-up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_burst_over_a_small_queue_gets_429s_and_the_rest_complete() {
    let s = state_with(2).await;
    let mut handles = Vec::new();
    for i in 0..12 {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            post(
                &s,
                "/v1/completions",
                json!({"prompt": format!("Request number {i}:"), "max_tokens": 8, "temperature": 0}),
            )
            .await
        }));
    }
    let (mut ok, mut limited) = (0, 0);
    for h in handles {
        let (status, body) = h.await.unwrap();
        match status {
            StatusCode::OK => {
                assert_eq!(body["usage"]["completion_tokens"], 8);
                ok += 1;
            }
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(body["error"]["code"], "queue_full");
                limited += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(ok >= 2 && limited >= 1, "ok {ok}, limited {limited}");
}

#[tokio::test]
async fn few_shot_rerun_reports_cached_tokens_and_same_output() {
    let s = state_with(8).await;
    let shots = "Q: What is 2 + 2?\nA: 4\n\nQ: What colour is the sky?\nA: blue\n\nQ: What is the capital of Italy?\nA: Rome\n\n";
    let ask = |q: &str| json!({"prompt": format!("{shots}Q: {q}\nA:"), "max_tokens": 6, "temperature": 0});
    let (_, first) = post(&s, "/v1/completions", ask("What is 3 + 3?")).await;
    assert_eq!(first["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    let (_, second) = post(&s, "/v1/completions", ask("What is the capital of France?")).await;
    let cached = second["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap();
    assert!(cached > 30, "few-shot prefix served from the cache: {second}");
    // The same request on a server with the cache off answers the same.
    let off = with_store(
        app::start(&model_path(), 1, 8, inference::EngineConfig { prefix_cache_bytes: 0, ..Default::default() })
            .unwrap(),
    )
    .await;
    let (_, cold) = post(&off, "/v1/completions", ask("What is the capital of France?")).await;
    assert_eq!(cold["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(cold["choices"][0]["text"], second["choices"][0]["text"]);
}

#[tokio::test]
async fn chat_uses_the_model_template_and_streams() {
    let s = shared().await;
    let req = json!({"messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 20, "temperature": 0});
    let (status, body) = post(&s, "/v1/chat/completions", req.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "chat.completion");
    let answer = body["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    assert!(!answer.is_empty() && !answer.contains("<|im_"), "{answer}");
    // The prompt is SmolLM2's own ChatML template, default system turn included.
    let rendered =
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
                    <|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
    let (_, t) = post(&s, "/v1/tokenize", json!({"prompt": rendered})).await;
    assert_eq!(body["usage"]["prompt_tokens"], t["count"]);
    let mut streamed = req;
    streamed["stream"] = json!(true);
    let (_, raw) = call(&s, "POST", "/v1/chat/completions", Some(streamed)).await;
    let data = sse_data(&raw);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let joined: String = data[..data.len() - 1]
        .iter()
        .map(|d| {
            serde_json::from_str::<Value>(d).unwrap()["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(joined, answer);
    let (status, err) = post(&s, "/v1/chat/completions", json!({"messages": []})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"]["param"], "messages");
}

#[tokio::test]
async fn requests_get_503_until_the_model_has_loaded() {
    let slot = std::sync::Arc::new(std::sync::OnceLock::new());
    let gate = app::loading_gate(slot.clone());
    let req =
        || Request::builder().method("POST").uri("/v1/completions").body(Body::from(r#"{"prompt":"hi"}"#)).unwrap();
    let resp = gate.clone().oneshot(req()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "1");
    let body: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["error"]["code"], "model_loading");
    slot.set(app(shared().await)).unwrap();
    let resp = gate.oneshot(req()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn api_traffic_is_admitted_before_queued_studio_batch_work() {
    use app::serving::{Priority, SeqEvent};
    let sched =
        &app::start(&model_path(), 1, 16, inference::EngineConfig { max_running: 1, ..Default::default() }).unwrap();
    let req = |p: &str| {
        let ids = sched.tokenizer.encode(p, true).unwrap();
        let mut r = inference::GenerateRequest::greedy(ids, 6);
        r.ignore_eos = true;
        r
    };
    // One batch job runs (the only slot), two more wait; then an API request arrives.
    let mut batch: Vec<_> =
        (0..3).map(|i| sched.submit(req(&format!("Eval row {i}:")), Priority::Batch, None).unwrap()).collect();
    let api = sched.submit(req("API call:"), Priority::Api, None).unwrap();
    let finished_at = |mut rx: tokio::sync::mpsc::UnboundedReceiver<SeqEvent>| async move {
        while let Some(ev) = rx.recv().await {
            if matches!(ev, SeqEvent::Finished { .. }) {
                return Instant::now();
            }
        }
        panic!("no finish event");
    };
    let api_done = tokio::spawn(finished_at(api));
    let last_batch = tokio::spawn(finished_at(batch.pop().unwrap()));
    let second_batch = tokio::spawn(finished_at(batch.pop().unwrap()));
    let (api_done, last_batch, second_batch) =
        (api_done.await.unwrap(), last_batch.await.unwrap(), second_batch.await.unwrap());
    assert!(api_done < second_batch && api_done < last_batch, "the API request overtook the waiting batch rows");
}

#[tokio::test]
async fn over_the_kv_budget_is_a_400_naming_max_tokens() {
    let per_token = 30 * 3 * 64 * 2 * 4; // SmolLM2: layers * kv heads * head dim * (k, v) * f32
    let cfg = inference::EngineConfig { kv_budget_bytes: 100 * per_token, ..Default::default() };
    let s = with_store(app::start(&model_path(), 1, 8, cfg).unwrap()).await;
    let (status, err) = post(&s, "/v1/completions", json!({"prompt": "Hello there", "max_tokens": 500})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["error"]["param"], "max_tokens");
    assert!(err["error"]["message"].as_str().unwrap().contains("100"), "{err}");
}

#[tokio::test]
async fn token_id_prompts_outside_the_vocabulary_are_a_400() {
    let s = shared().await;
    let (status, err) = post(&s, "/v1/completions", json!({"prompt": [1, 2, 99999999], "max_tokens": 2})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["error"]["param"], "prompt");
    assert!(err["error"]["message"].as_str().unwrap().contains("99999999"), "{err}");
}

async fn get_json(state: &AppState, uri: &str) -> (StatusCode, Value) {
    let resp = app(state.clone()).oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_batcher_panic_fails_its_requests_shows_in_ready_and_recovers() {
    let s = with_store(app::start(&model_path(), 1, 8, inference::EngineConfig::default()).unwrap()).await;
    let (status, ready) = get_json(&s, "/ready").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((ready["ready"].as_bool(), ready["batcher_restarts"].as_u64()), (Some(true), Some(0)));

    s.scheduler.inject_panic();
    let body = json!({"prompt": "Hello there", "max_tokens": 4, "temperature": 0});
    let (status, err) = post(&s, "/v1/completions", body.clone()).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("restarted"), "{err}");

    let (status, ready) = get_json(&s, "/ready").await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["batcher_restarts"], 1);
    assert!(ready["last_failure"].as_str().unwrap().contains("injected"), "{ready}");
    // The next request is served as usual.
    let (status, ok) = post(&s, "/v1/completions", body).await;
    assert_eq!(status, StatusCode::OK, "{ok}");
    assert_eq!(ok["usage"]["completion_tokens"], 4);
    let resp = app(s.clone()).oneshot(Request::get("/health").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_long_prompt_streams_its_prefill_progress_as_sse_comments() {
    let cfg = inference::EngineConfig { max_batch_tokens: 32, prefix_cache_bytes: 0, ..Default::default() };
    let s = with_store(app::start(&model_path(), 1, 8, cfg).unwrap()).await;
    let prompt = "A long story about the sea, the wind and the ships that sail on it. ".repeat(6);
    let req = json!({"prompt": prompt, "max_tokens": 2, "temperature": 0, "stream": true});
    let (status, body) = call(&s, "POST", "/v1/completions", Some(req)).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body.clone()).unwrap();
    let progress: Vec<Value> =
        text.lines().filter_map(|l| l.strip_prefix(": prefill ")).map(|j| serde_json::from_str(j).unwrap()).collect();
    assert!(progress.len() >= 3, "{text}");
    let total = progress[0]["total"].as_u64().unwrap();
    assert!(total > 96);
    let done: Vec<u64> = progress.iter().map(|p| p["done"].as_u64().unwrap()).collect();
    assert_eq!(done[..3], [32, 64, 96], "one comment per 32-token chunk");
    assert!(done.iter().all(|&d| d < total));
    // The data events are untouched: two tokens and [DONE].
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
}

#[tokio::test]
async fn a_rank_failure_at_tp2_fails_that_request_and_the_next_one_succeeds() {
    let s = with_store(app::start(&model_path(), 2, 8, inference::EngineConfig::default()).unwrap()).await;
    let body = json!({"prompt": "The capital of France is", "max_tokens": 6, "temperature": 0});
    let (status, reference) = post(&s, "/v1/completions", body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{reference}");
    for kind in [inference::Fault::Error, inference::Fault::Panic] {
        s.scheduler.inject_rank_fault(1, kind);
        let (status, err) = tokio::time::timeout(Duration::from_secs(120), post(&s, "/v1/completions", body.clone()))
            .await
            .expect("a failed rank must not hang the step");
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{kind:?}: {err}");
        assert!(err["error"]["message"].as_str().unwrap().contains("rank 1"), "{err}");
        let (status, again) = post(&s, "/v1/completions", body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert_eq!(again["choices"][0]["text"], reference["choices"][0]["text"], "the model is intact after {kind:?}");
    }
    let (_, ready) = get_json(&s, "/ready").await;
    assert_eq!(ready["ready"], true);
}

#[tokio::test]
async fn n16_against_a_queue_of_8_is_one_request_and_is_served() {
    // The queue counts requests: 16 choices of one request take one place of eight.
    let s = with_store(support::start(8, 16)).await;
    let req = json!({"prompt": "Name a colour:", "n": 16, "max_tokens": 3, "temperature": 1, "seed": 7});
    let (status, body) = post(&s, "/v1/completions", req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 16);
    let mut index: Vec<u64> = choices.iter().map(|c| c["index"].as_u64().unwrap()).collect();
    index.sort_unstable();
    assert_eq!(index, (0..16).collect::<Vec<u64>>());
    assert_eq!(body["usage"]["completion_tokens"], 48);
}

#[tokio::test]
async fn more_sequences_than_run_together_is_a_400_naming_the_limit() {
    // The shared batcher runs at most 8 sequences together.
    let s = shared().await;
    let prompts: Vec<String> = (0..20).map(|i| format!("Prompt {i}:")).collect();
    let (status, err) = post(&s, "/v1/completions", json!({"prompt": prompts, "n": 16, "max_tokens": 2})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["error"]["param"], "n");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains("320 sequences") && message.contains("at most 8"), "{message}");
    // Without n, the prompts alone are named.
    let nine: Vec<String> = (0..9).map(|i| format!("Prompt {i}:")).collect();
    let (status, err) = post(&s, "/v1/completions", json!({"prompt": nine, "max_tokens": 2})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["error"]["param"], "prompt");
    assert!(err["error"]["message"].as_str().unwrap().contains("9 sequences"), "{err}");
    // Eight fit.
    let eight: Vec<String> = (0..8).map(|i| format!("Prompt {i}:")).collect();
    let (status, body) = post(&s, "/v1/completions", json!({"prompt": eight, "max_tokens": 2})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["choices"].as_array().unwrap().len(), 8);
}

#[tokio::test]
async fn a_thousand_prompts_is_a_400_naming_prompt() {
    let s = shared().await;
    let texts: Vec<String> = (0..1000).map(|i| format!("p{i}")).collect();
    let (status, err) = post(&s, "/v1/completions", json!({"prompt": texts, "max_tokens": 1})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["error"]["param"], "prompt");
    assert!(err["error"]["message"].as_str().unwrap().contains("at most 256 prompts, got 1000"), "{err}");
    let lists: Vec<Vec<u32>> = (0..1000).map(|i| vec![1, 2 + i % 50]).collect();
    let (status, err) = post(&s, "/v1/completions", json!({"prompt": lists, "max_tokens": 1})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["error"]["param"], "prompt");
    assert!(err["error"]["message"].as_str().unwrap().contains("got 1000"), "{err}");
}

#[tokio::test]
async fn n_samples_over_the_kv_budget_together_is_a_400() {
    let per_token = 30 * 3 * 64 * 2 * 4; // SmolLM2: layers * kv heads * head dim * (k, v) * f32
    let cfg = inference::EngineConfig { kv_budget_bytes: 100 * per_token, max_running: 16, ..Default::default() };
    let s = with_store(app::start(&model_path(), 1, 8, cfg).unwrap()).await;
    // One sequence fits the budget of 100 positions; eight of them together do not.
    let one = json!({"prompt": "Hello there", "max_tokens": 40, "temperature": 0});
    let (status, body) = post(&s, "/v1/completions", one.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut eight = one;
    eight["n"] = json!(8);
    let (status, err) = post(&s, "/v1/completions", eight).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["error"]["param"], "max_tokens");
    assert!(err["error"]["message"].as_str().unwrap().contains("holds 100"), "{err}");
}

#[tokio::test]
async fn more_waiting_requests_than_the_queue_holds_get_429_with_retry_after() {
    // Each request is a group of 4 that needs every running slot, so one runs at a time
    // and the others wait: two may wait, the rest are refused.
    let s = with_store(support::start(2, 4)).await;
    let mut handles = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let body = json!({"prompt": format!("Request {i}:"), "n": 4, "max_tokens": 8, "temperature": 0});
            let req = Request::builder()
                .method("POST")
                .uri("/v1/completions")
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap();
            let resp = app(s).oneshot(req).await.unwrap();
            let status = resp.status();
            let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
            let body: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
            (status, retry, body)
        }));
    }
    let (mut ok, mut limited) = (0, 0);
    for h in handles {
        let (status, retry, body) = h.await.unwrap();
        match status {
            StatusCode::OK => {
                assert_eq!(body["choices"].as_array().unwrap().len(), 4);
                ok += 1;
            }
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(body["error"]["code"], "queue_full", "{body}");
                assert_eq!(retry.as_deref(), Some("1"));
                limited += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(ok >= 2 && limited >= 1, "ok {ok}, limited {limited}");
}
