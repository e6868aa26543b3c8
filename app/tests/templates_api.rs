//! The template API and templates as endpoints, through `app()` + `oneshot`, on the real
//! SmolLM2 model and a real SQLite file.

mod support;

use axum::body::Body;
use axum::http::StatusCode;
use serde_json::{json, Value};
use support::Ctx;

async fn ctx() -> Ctx {
    Ctx::new(support::shared_scheduler(8)).await
}

fn sentiment_spec(instruction: &str) -> Value {
    json!({
        "instruction": instruction,
        "examples": [
            {"input": "This movie was wonderful, I loved every minute.", "output": "positive"},
            {"input": "A boring, painful waste of two hours.", "output": "negative"},
            {"input": "The best film I have seen this year!", "output": "positive"},
            {"input": "Terrible acting and a silly plot.", "output": "negative"}
        ],
        "input_pattern": "{{review}}",
        "format": {"example_separator": "\n\n", "input_prefix": "Review: ", "io_separator": "\n", "output_prefix": "Sentiment: "},
        "parameters": {"temperature": 0, "max_tokens": 4, "stop": ["\n"]}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_version_diff_label_rollback_and_call_as_endpoint() {
    let c = ctx().await;
    let (s, created) = c
        .call(
            "POST",
            "/api/templates",
            Some(json!({"name": "reviews", "title": "Movie reviews", "tags": ["classification"], "language": "en",
                "spec": sentiment_spec("Classify the sentiment of each movie review."), "note": "first"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(created["version"]["version"], 1);

    let (s, v2) = c
        .call(
            "POST",
            "/api/templates/reviews/versions",
            Some(
                json!({"spec": sentiment_spec("Classify the sentiment of each movie review as positive or negative."),
                "note": "name the labels"}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v2}");
    assert_eq!(v2["version"]["version"], 2);

    // Versions are immutable over HTTP too.
    for method in ["PUT", "PATCH", "DELETE"] {
        let (s, err) = c.call(method, "/api/templates/reviews/versions/1", Some(json!({"spec": {}}))).await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{method}: {err}");
        assert_eq!(err["error"]["code"], "version_immutable");
    }
    let (_, v1) = c.call("GET", "/api/templates/reviews/versions/1", None).await;
    assert_eq!(v1["version"]["spec"]["instruction"], "Classify the sentiment of each movie review.");

    let (s, d) = c.call("GET", "/api/templates/reviews/diff?from=1&to=2", None).await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["text"][0]["field"], "instruction");
    let inserted: String = d["text"][0]["ops"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["op"] == "insert")
        .map(|o| o["text"].as_str().unwrap())
        .collect();
    assert_eq!(inserted, " as positive or negative");
    assert_eq!(d["examples"].as_array().unwrap().len(), 0);

    // production → 1, then 2, then roll back to 1.
    for (to, from) in [(1, Value::Null), (2, json!(1)), (1, json!(2))] {
        let (s, moved) = c.call("PUT", "/api/templates/reviews/labels/production", Some(json!({"version": to}))).await;
        assert_eq!(s, StatusCode::OK, "{moved}");
        assert_eq!(moved["from_version"], from);
    }
    let (_, labels) = c.call("GET", "/api/templates/reviews/labels", None).await;
    assert_eq!(labels["labels"]["production"], 1);
    assert_eq!(labels["history"].as_array().unwrap().len(), 3);
    assert_eq!(labels["history"][2]["actor"], "local");

    // The endpoint follows the label; the version is named in the answer.
    let ask = |review: &str| json!({"variables": {"review": review}});
    let (s, out) = c
        .call("POST", "/v1/templates/reviews@production/completions", Some(ask("What a fantastic, moving film.")))
        .await;
    assert_eq!(s, StatusCode::OK, "{out}");
    assert_eq!(out["template"]["version"], 1);
    assert_eq!(out["choices"][0]["text"].as_str().unwrap().trim(), "positive", "{out}");
    let (_, out2) = c.call("POST", "/v1/templates/reviews@2/completions", Some(ask("Dull and far too long."))).await;
    assert_eq!(out2["template"]["version"], 2);
    assert_eq!(out2["choices"][0]["text"].as_str().unwrap().trim(), "negative", "{out2}");
    // Without @, production is used.
    let (_, out3) = c.call("POST", "/v1/templates/reviews/completions", Some(ask("Dull and far too long."))).await;
    assert_eq!(out3["template"]["version"], 1);

    // The few-shot prefix is the same tokens every call: the prefix cache serves it.
    let (_, render) = c
        .call("POST", "/api/templates/reviews/render", Some(json!({"variables": {"review": "x"}, "version": "1"})))
        .await;
    let prefix_tokens = render["prefix_tokens"].as_u64().unwrap();
    let cached = out3["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap();
    assert!(prefix_tokens > 40 && cached + 16 >= prefix_tokens, "cached {cached} of a {prefix_tokens}-token prefix");

    // Streaming: deltas join to the non-streamed text.
    let mut req = ask("Dull and far too long.");
    req["stream"] = json!(true);
    let (s, raw) =
        c.raw("POST", "/v1/templates/reviews@2/completions", Body::from(req.to_string()), "application/json").await;
    assert_eq!(s, StatusCode::OK);
    let text: String = String::from_utf8(raw)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).unwrap()["choices"][0]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text, out2["choices"][0]["text"].as_str().unwrap());

    // Runs are in the history, newest first (the streamed one is saved when it ends).
    let mut runs = Value::Null;
    for _ in 0..50 {
        runs = c.call("GET", "/api/templates/reviews/runs", None).await.1;
        if runs["runs"].as_array().unwrap().len() == 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let runs = runs["runs"].as_array().unwrap().clone();
    assert_eq!(runs.len(), 4, "{runs:?}");
    assert_eq!(runs[3]["variables"]["review"], "What a fantastic, moving film.");
    assert_eq!(runs[3]["output"].as_str().unwrap().trim(), "positive");
    assert!(runs[3]["prompt"].as_str().unwrap().ends_with("Review: What a fantastic, moving film.\nSentiment:"));
    assert!(runs.iter().all(|r| r["completion_tokens"].as_i64().unwrap() > 0 && r["latency_ms"].as_i64().is_some()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variables_and_fields_are_checked_with_clear_errors() {
    let c = ctx().await;
    let (s, _) = c.call("POST", "/api/templates", Some(json!({"name": "t", "spec": sentiment_spec("x")}))).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, err) = c.call("POST", "/api/templates/t/render", Some(json!({"variables": {}}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["param"], "variables.review");
    assert!(err["error"]["message"].as_str().unwrap().contains("missing variable 'review'"));
    let (s, err) =
        c.call("POST", "/v1/templates/t@latest/completions", Some(json!({"variables": {"reveiw": "typo"}}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    let mut bad = sentiment_spec("x");
    bad["parameters"]["temperature"] = json!(9);
    let (s, err) = c.call("POST", "/api/templates/t/versions", Some(json!({"spec": bad}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["param"], "parameters.temperature");
    let (s, err) = c.call("POST", "/api/templates", Some(json!({"name": "Bad Name!", "spec": {}}))).await;
    assert_eq!((s, err["error"]["param"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("name")));
    let (s, _) = c.call("POST", "/api/templates", Some(json!({"name": "t", "spec": {}}))).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, err) = c.call("POST", "/v1/templates/nope@production/completions", Some(json!({}))).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{err}");
    let (s, err) =
        c.call("POST", "/v1/templates/t@staging/completions", Some(json!({"variables": {"review": "x"}}))).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("no label 'staging'"));
    let (s, err) = c
        .call("POST", "/v1/templates/t/completions", Some(json!({"variables": {"review": "x"}, "temperature": 7})))
        .await;
    assert_eq!((s, err["error"]["param"].as_str()), (StatusCode::BAD_REQUEST, Some("temperature")));
    // Nothing above wrote a version.
    let (_, versions) = c.call("GET", "/api/templates/t/versions", None).await;
    assert_eq!(versions["versions"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_import_round_trip_and_broken_files_write_nothing() {
    let c = ctx().await;
    let ko = json!({
        "instruction": "영화 리뷰의 감정을 분류하세요.",
        "examples": [{"input": "정말 재미있었어요", "output": "긍정"}, {"input": "つまらなかった", "output": "부정"}],
        "input_pattern": "{{리뷰}}",
        "format": {"input_prefix": "문장: ", "output_prefix": "감정: "}
    });
    let (s, _) = c
        .call("POST", "/api/templates", Some(json!({"name": "ko", "title": "감정 分類", "language": "ko", "spec": ko})))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, toml) = c.raw("GET", "/api/templates/ko/export", Body::empty(), "application/json").await;
    assert_eq!(s, StatusCode::OK);
    let toml = String::from_utf8(toml).unwrap();
    assert!(toml.contains("영화 리뷰의 감정을 분류하세요.") && toml.contains("つまらなかった"), "{toml}");

    // Importing what was exported changes nothing.
    let (s, o) = c.raw("POST", "/api/templates/import", Body::from(toml.clone()), "application/toml").await;
    let o: Value = serde_json::from_slice(&o).unwrap();
    assert_eq!(s, StatusCode::OK, "{o}");
    assert_eq!((o["unchanged"].as_bool(), o["version"].as_i64()), (Some(true), Some(1)));

    // Under a new name it is a new template whose content is byte-identical.
    let renamed = toml.replace("name = \"ko\"", "name = \"ko-copy\"");
    let (s, _) = c.raw("POST", "/api/templates/import", Body::from(renamed), "application/toml").await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, a) = c.call("GET", "/api/templates/ko/versions/1", None).await;
    let (_, b) = c.call("GET", "/api/templates/ko-copy/versions/1", None).await;
    assert_eq!(a["version"]["spec"], b["version"]["spec"]);
    assert_eq!(b["version"]["spec"]["examples"][1]["input"], "つまらなかった");

    // A broken file: the line and field are named, nothing is written.
    let broken = toml.replace("output = \"긍정\"", "output = \"\"");
    let line = broken.lines().position(|l| l == "output = \"\"").unwrap() + 1;
    let (s, err) = c.raw("POST", "/api/templates/import", Body::from(broken), "application/toml").await;
    let err: Value = serde_json::from_slice(&err).unwrap();
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["param"], "examples[0].output");
    assert!(err["error"]["message"].as_str().unwrap().starts_with(&format!("line {line}, ")), "{err}");
    let (s, _) = c.raw("POST", "/api/templates/import", Body::from("name = [oops"), "application/toml").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = c.raw("POST", "/api/templates/import", Body::from(vec![b'n', 0xff]), "application/toml").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, versions) = c.call("GET", "/api/templates/ko/versions", None).await;
    assert_eq!(versions["versions"].as_array().unwrap().len(), 1);
    let (_, list) = c.call("GET", "/api/templates?language=ko&q=감정", None).await;
    assert_eq!(list["count"], 2, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_guard_v1_and_api_without_hints() {
    let mut c = ctx().await;
    let (s, _) = c.call("GET", "/api/templates", None).await;
    assert_eq!(s, StatusCode::OK, "no keys yet: open (loopback only)");
    let (s, _) = c.call("POST", "/api/templates", Some(json!({"name": "secret", "spec": {}}))).await;
    assert_eq!(s, StatusCode::CREATED);
    let key = c.state.store.create_key("ci").await.unwrap();
    for (uri, method) in [
        ("/api/templates", "GET"),
        ("/api/templates/secret", "GET"),
        ("/api/templates/does-not-exist", "GET"),
        ("/v1/models", "GET"),
        ("/v1/templates/secret/completions", "POST"),
        ("/api/nothing-here", "GET"),
    ] {
        for bad in [None, Some("sk-studio-wrong".to_string())] {
            c.key = bad;
            let (s, err) = c.call(method, uri, Some(json!({}))).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {uri}");
            assert_eq!(err["error"]["code"], "invalid_api_key");
            assert!(!err.to_string().contains("secret"));
        }
    }
    c.key = Some(key);
    let (s, _) = c.call("GET", "/api/templates/secret", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = c.call("GET", "/api/templates/does-not-exist", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, labels) = c.call("PUT", "/api/templates/secret/labels/production", Some(json!({"version": 1}))).await;
    assert_eq!(labels["to_version"], 1);
    let (_, history) = c.call("GET", "/api/templates/secret/labels", None).await;
    assert_eq!(history["history"][0]["actor"], "ci", "moves record the key's name");
    // Health and metrics stay open for probes.
    c.key = None;
    assert_eq!(c.call("GET", "/health", None).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drafts_run_and_preview_as_their_endpoint_would() {
    let c = ctx().await;
    let spec = sentiment_spec("Classify the sentiment of each movie review.");
    let (s, saved) = c.call("POST", "/api/templates", Some(json!({ "name": "draft-check", "spec": spec }))).await;
    assert_eq!(s, StatusCode::CREATED, "{saved}");
    let vars = json!({ "review": "I loved it, wonderful!" });
    // The unsaved draft runs exactly like the saved version's endpoint (greedy, same tokens).
    let (s, draft) = c.call("POST", "/api/draft/completions", Some(json!({ "spec": spec, "variables": vars }))).await;
    assert_eq!(s, StatusCode::OK, "{draft}");
    let (s, saved) = c
        .call("POST", "/v1/templates/draft-check@1/completions", Some(json!({ "variables": vars, "prompt": "" })))
        .await;
    assert_eq!(s, StatusCode::OK, "{saved}");
    assert_eq!(draft["choices"][0]["text"], saved["choices"][0]["text"]);
    assert!(draft.get("template").is_none(), "a draft is no template version");
    // Drafts leave no run in any history; the endpoint call does.
    let (_, runs) = c.call("GET", "/api/templates/draft-check/runs", None).await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1);
    // Field errors name the field, inside the spec too.
    let mut bad = spec.clone();
    bad["parameters"]["temperature"] = json!(9);
    let (s, e) = c.call("POST", "/api/draft/completions", Some(json!({ "spec": bad, "variables": vars }))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(e["error"]["param"], "parameters.temperature");
    let (s, e) = c.call("POST", "/api/draft/completions", Some(json!({ "variables": vars }))).await;
    assert_eq!((s, e["error"]["param"].as_str()), (StatusCode::BAD_REQUEST, Some("spec")));
    let (s, e) = c
        .call("POST", "/api/draft/completions", Some(json!({ "spec": spec, "variables": vars, "tempreature": 1 })))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("tempreature"), "{e}");
    // A template supplies its own prompt.
    let (s, e) = c
        .call("POST", "/v1/templates/draft-check/completions", Some(json!({ "variables": vars, "prompt": "hi" })))
        .await;
    assert_eq!((s, e["error"]["param"].as_str()), (StatusCode::BAD_REQUEST, Some("prompt")));

    // The live preview while typing: unfilled variables stay visible, extra ones are ignored.
    let mut ko = spec.clone();
    ko["input_pattern"] = json!("{{리뷰}} / {{별점}}");
    let (s, p) = c
        .call(
            "POST",
            "/api/render",
            Some(json!({ "spec": ko, "variables": { "리뷰": "최고의 영화", "old": "x" }, "partial": true })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert!(p["prompt"].as_str().unwrap().ends_with("Review: 최고의 영화 / {{별점}}\nSentiment:"), "{p}");
    assert_eq!(p["missing"], json!(["별점"]));
    assert_eq!(p["variables"], json!(["리뷰", "별점"]));
    assert!(p["prompt_tokens"].as_u64().unwrap() > 0);
    // Without `partial` a missing variable is still an error naming it.
    let (s, e) = c.call("POST", "/api/render", Some(json!({ "spec": ko, "variables": { "리뷰": "x" } }))).await;
    assert_eq!((s, e["error"]["param"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("variables.별점")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn studio_pages_render_on_the_server() {
    let c = ctx().await;
    // A template page for a template that does not exist is still the studio's page (it
    // says so once hydrated), with a real 404.
    for (path, marker, status) in [
        ("/", "data-testid=\"run\"", StatusCode::OK),
        ("/library", "Library", StatusCode::OK),
        ("/t/anything", "Instruction", StatusCode::NOT_FOUND),
        ("/compare", "Compare", StatusCode::OK),
    ] {
        let (s, body) = c.raw("GET", path, Body::empty(), "text/html").await;
        let html = String::from_utf8(body).unwrap();
        assert_eq!(s, status, "{path}");
        assert!(html.starts_with("<!DOCTYPE html>"), "{path}: {}", &html[..80.min(html.len())]);
        assert!(html.contains(marker), "{path} lacks {marker}");
        // The page loads the hydration bundle from /pkg.
        assert!(html.contains("/pkg/studio-ui.js") && html.contains("studio-ui_bg.wasm"), "{path}");
    }
    // Unknown pages and API paths: 404, in JSON under /api and /v1.
    let (s, _) = c.raw("GET", "/no-such-page", Body::empty(), "text/html").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, e) = c.call("GET", "/api/nothing-here", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(e["error"]["message"].is_string(), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_says_what_it_removes_before_and_after() {
    let c = ctx().await;
    let (s, _) = c
        .call(
            "POST",
            "/api/templates",
            Some(json!({"name": "to-delete", "title": "지울 템플릿", "spec": sentiment_spec("Classify."), "note": ""})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, before) = c.call("GET", "/api/templates/to-delete/footprint", None).await;
    assert_eq!(s, StatusCode::OK, "{before}");
    assert_eq!(before["versions"], 1);
    assert_eq!(before["shipped"], false);
    let (s, removed) = c.call("DELETE", "/api/templates/to-delete", None).await;
    assert_eq!(s, StatusCode::OK, "{removed}");
    assert_eq!(removed, before);
    for uri in ["/api/templates/to-delete", "/api/templates/to-delete/footprint"] {
        let (s, err) = c.call("GET", uri, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{uri}: {err}");
        assert!(err["error"]["message"].as_str().unwrap().contains("to-delete"), "{err}");
    }
}

/// A chat version: the system prompt and example turns through SmolLM2's own chat template,
/// called at its `/chat/completions` endpoint in the chat shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_versions_render_with_the_models_chat_template_and_answer_in_the_chat_shape() {
    let c = ctx().await;
    let spec = json!({
        "mode": "chat",
        "instruction": "You label movie reviews as positive or negative. Answer with one word.",
        "examples": [
            {"input": "Review: I loved every minute.", "output": "positive"},
            {"input": "Review: A boring waste of time.", "output": "negative"}
        ],
        "input_pattern": "Review: {{review}}",
        "parameters": {"temperature": 0, "max_tokens": 4, "stop": []}
    });
    let (s, saved) = c.call("POST", "/api/templates", Some(json!({ "name": "chat-check", "spec": spec }))).await;
    assert_eq!(s, StatusCode::CREATED, "{saved}");
    let vars = json!({ "review": "Wonderful acting, I would watch it again." });

    // The exact prompt: the model's chat template over system, user, assistant, ... user,
    // with the generation prompt; the fixed turns are a prefix tokenized apart.
    let (s, p) = c.call("POST", "/api/templates/chat-check/render", Some(json!({ "variables": vars }))).await;
    assert_eq!(s, StatusCode::OK, "{p}");
    let prompt = p["prompt"].as_str().unwrap();
    assert!(prompt.starts_with("<|im_start|>system\nYou label movie reviews"), "{prompt}");
    assert!(prompt.contains("<|im_start|>assistant\nnegative<|im_end|>"), "{prompt}");
    assert!(
        prompt.ends_with(
            "<|im_start|>user\nReview: Wonderful acting, I would watch it again.<|im_end|>\n<|im_start|>assistant\n"
        ),
        "{prompt}"
    );
    assert!(p["prefix"].as_str().unwrap().ends_with("negative<|im_end|>\n"), "{p}");
    assert!(p["prefix_tokens"].as_u64().unwrap() > 20, "{p}");

    let call = json!({ "model": "smollm2-135m", "messages": [], "variables": vars });
    let (s, first) = c.call("POST", "/v1/templates/chat-check@1/chat/completions", Some(call.clone())).await;
    assert_eq!(s, StatusCode::OK, "{first}");
    assert_eq!(first["object"], "chat.completion", "{first}");
    assert_eq!(first["choices"][0]["message"]["role"], "assistant");
    let answer = first["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!answer.trim().is_empty(), "{first}");
    assert_eq!(first["template"], json!({"name": "chat-check", "version": 1}));
    // The second call finds the system prompt and examples in the prefix cache.
    let (_, second) = c.call("POST", "/v1/templates/chat-check@1/chat/completions", Some(call)).await;
    assert_eq!(second["choices"][0]["message"]["content"], first["choices"][0]["message"]["content"]);
    assert!(
        second["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap()
            >= p["prefix_tokens"].as_u64().unwrap(),
        "{second}"
    );
    // The call's messages continue the conversation after the template's turns.
    let follow = json!({ "variables": vars, "messages": [{"role": "assistant", "content": answer}, {"role": "user", "content": "Why?"}] });
    let (s, more) = c.call("POST", "/v1/templates/chat-check@1/chat/completions", Some(follow)).await;
    assert_eq!(s, StatusCode::OK, "{more}");
    let (_, runs) = c.call("GET", "/api/templates/chat-check/runs", None).await;
    let last = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["prompt"].as_str().unwrap().to_string())
        .find(|p| p.contains("Why?"));
    assert!(last.is_some_and(|p| p.ends_with("<|im_start|>user\nWhy?<|im_end|>\n<|im_start|>assistant\n")), "{runs}");
    // The playground's draft run renders the same way.
    let (s, draft) = c.call("POST", "/api/draft/completions", Some(json!({ "spec": spec, "variables": vars }))).await;
    assert_eq!(s, StatusCode::OK, "{draft}");
    assert_eq!(draft["choices"][0]["text"].as_str().unwrap(), answer);

    // Refusals name the field.
    let bad = json!({ "variables": vars, "messages": [{"role": "system", "content": "Be rude."}] });
    let (s, e) = c.call("POST", "/v1/templates/chat-check@1/chat/completions", Some(bad)).await;
    assert_eq!((s, e["error"]["param"].as_str()), (StatusCode::BAD_REQUEST, Some("messages[0].role")), "{e}");
    let (s, e) = c.call("POST", "/v1/templates/chat-check@1/chat/completions", Some(json!({ "messages": [] }))).await;
    assert_eq!((s, e["error"]["param"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("variables.review")), "{e}");
    let (s, _) = c
        .call("POST", "/api/templates", Some(json!({ "name": "plain-check", "spec": sentiment_spec("Classify.") })))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, e) = c
        .call(
            "POST",
            "/v1/templates/plain-check/chat/completions",
            Some(json!({ "messages": [], "variables": {"review": "ok"} })),
        )
        .await;
    assert_eq!((s, e["error"]["param"].as_str()), (StatusCode::BAD_REQUEST, Some("mode")), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("/v1/templates/plain-check@1/completions"), "{e}");
}
