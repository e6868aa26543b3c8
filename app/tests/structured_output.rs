//! Structured output through `app()` + `oneshot` on the real SmolLM2: `response_format`,
//! vLLM's `structured_outputs` and `guided_*` fields, `logit_bias`, and the 400s for bad
//! constraints and for `tools`.

mod support;

use app::AppState;
use axum::body::Body;
use axum::http::StatusCode;
use serde_json::{json, Value};

async fn state() -> AppState {
    AppState {
        scheduler: support::shared_scheduler(8),
        store: app::store::Store::connect("sqlite::memory:").await.unwrap(),
    }
}

async fn post(state: &AppState, uri: &str, body: Value) -> (StatusCode, Value) {
    let (s, b) = support::call_raw(state, None, "POST", uri, Body::from(body.to_string()), "application/json").await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

#[tokio::test]
async fn constrained_outputs_match_at_temperature_one() {
    let s = state().await;
    let schema = json!({
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 16}, "population": {"type": "integer", "minimum": 0}},
        "required": ["city", "population"],
        "additionalProperties": false
    });
    let (status, body) = post(
        &s,
        "/v1/chat/completions",
        json!({
            "messages": [{"role": "user", "content": "Name a big city and its population."}],
            "max_tokens": 60, "temperature": 1.0, "seed": 3, "n": 2,
            "response_format": {"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": true}}
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for choice in body["choices"].as_array().unwrap() {
        assert_eq!(choice["finish_reason"], "stop", "{choice}");
        let content = choice["message"]["content"].as_str().unwrap();
        let v: Value = serde_json::from_str(content).unwrap_or_else(|e| panic!("{content:?}: {e}"));
        assert!(v["city"].is_string() && v["population"].is_u64(), "{v}");
    }

    let labels = ["positive", "negative", "neutral"];
    for body in [
        json!({"prompt": "Review: great film! Sentiment:", "guided_choice": labels}),
        json!({"prompt": "Review: great film! Sentiment:", "structured_outputs": {"choice": labels}}),
    ] {
        let mut body = body;
        body["max_tokens"] = json!(8);
        body["temperature"] = json!(1.0);
        body["n"] = json!(3);
        let (status, out) = post(&s, "/v1/completions", body).await;
        assert_eq!(status, StatusCode::OK, "{out}");
        for c in out["choices"].as_array().unwrap() {
            assert!(labels.contains(&c["text"].as_str().unwrap()), "{c}");
        }
    }
    let (status, out) = post(
        &s,
        "/v1/completions",
        json!({"prompt": "Order number:", "max_tokens": 12, "temperature": 1.0, "structured_outputs": {"regex": "[A-Z]{2}-[0-9]{3}"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    let text = out["choices"][0]["text"].as_str().unwrap();
    let b = text.as_bytes();
    assert!(b.len() == 6 && b[..2].iter().all(u8::is_ascii_uppercase) && b[2] == b'-', "{text:?}");
    assert!(b[3..].iter().all(u8::is_ascii_digit), "{text:?}");
}

#[tokio::test]
async fn logit_bias_steers_the_draw() {
    let s = state().await;
    let id = s.scheduler.tokenizer.encode(" banana", false).unwrap()[0];
    let piece = s.scheduler.tokenizer.decode(&[id], false).unwrap();
    let (status, out) = post(
        &s,
        "/v1/completions",
        json!({"prompt": "The capital of France is", "max_tokens": 2, "temperature": 0, "logit_bias": {id.to_string(): 100}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["choices"][0]["text"], piece.repeat(2));
}

#[tokio::test]
async fn bad_constraints_and_tools_are_400s_naming_the_field() {
    let s = state().await;
    let base = json!({"prompt": "Hi", "max_tokens": 4});
    let with = |extra: Value| {
        let mut b = base.clone();
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        b
    };
    let many: serde_json::Map<String, Value> = (0..301).map(|i| (i.to_string(), json!(1))).collect();
    let cases = [
        (json!({"guided_regex": "[0-9"}), "guided_regex", "invalid regex"),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}}),
            "response_format.json_schema.schema",
            "invalid json",
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}),
            "response_format.json_schema.schema",
            "required",
        ),
        (
            json!({"structured_outputs": {"grammar": "start: A\nA: /[a-z]+/ & /[0-9]+/"}}),
            "structured_outputs.grammar",
            "matches no text",
        ),
        (json!({"guided_choice": []}), "guided_choice", "between 1 and 256"),
        (json!({"guided_regex": "a", "response_format": {"type": "json_object"}}), "guided_regex", "at most one"),
        (json!({"guided_json": "{not json"}), "guided_json", "not a JSON schema"),
        (json!({"logit_bias": {"5": 101}}), "logit_bias", "[-100, 100]"),
        (json!({"logit_bias": {"x": 1}}), "logit_bias", "not a token id"),
        (json!({ "logit_bias": many }), "logit_bias", "at most 300"),
        (json!({"tools": [{"type": "function", "function": {"name": "f"}}]}), "tools", "no tool support"),
        (json!({"tool_choice": "required"}), "tool_choice", "no tool support"),
    ];
    for (extra, param, reason) in cases {
        let (status, err) = post(&s, "/v1/completions", with(extra.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{extra}: {err}");
        assert_eq!(err["error"]["param"], param, "{err}");
        let msg = err["error"]["message"].as_str().unwrap();
        assert!(msg.contains(reason), "{extra}: {msg}");
    }
    // `text` and `tool_choice: "none"` constrain nothing.
    let (status, out) =
        post(&s, "/v1/completions", with(json!({"response_format": {"type": "text"}, "tool_choice": "none"}))).await;
    assert_eq!(status, StatusCode::OK, "{out}");
}
