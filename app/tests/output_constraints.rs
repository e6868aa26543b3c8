//! Output constraints of template versions through `app()` + `oneshot`, on the real
//! SmolLM2 model and a real SQLite file: the template endpoint and the studio's draft run
//! enforce the version's constraint (the call's own wins), bad regexes are 400s naming
//! `output.pattern`, and evals record whether outputs met the constraint.

use std::time::Duration;

mod support;

use axum::http::StatusCode;
use serde_json::{json, Value};
use support::Ctx;

async fn ctx() -> Ctx {
    Ctx::new(support::shared_scheduler(16)).await
}

const LABELS: [&str; 2] = ["positive", "negative"];

fn spec(output: Value) -> Value {
    json!({
        "instruction": "Classify the sentiment of each movie review.",
        "examples": [
            {"input": "This movie was wonderful, I loved every minute.", "output": "positive"},
            {"input": "A boring, painful waste of two hours.", "output": "negative"}
        ],
        "input_pattern": "{{review}}",
        "format": {"example_separator": "\n\n", "input_prefix": "Review: ", "io_separator": "\n", "output_prefix": "Sentiment: "},
        "parameters": {"temperature": 1.0, "max_tokens": 8, "stop": ["\n"]},
        "output": output
    })
}

fn param(body: &Value) -> &str {
    body["error"]["param"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_answers_one_of_the_labels_and_the_calls_own_constraint_wins() {
    let c = ctx().await;
    let choice = json!({"type": "choice", "labels": LABELS});
    let (s, created) =
        c.call("POST", "/api/templates", Some(json!({"name": "labelled", "spec": spec(choice.clone())}))).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let (s, v) = c.call("GET", "/api/templates/labelled/versions/1", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["version"]["spec"]["output"], choice, "stored and read back");

    // At temperature 1 a 135M model writes anything; the constraint leaves it the labels
    // only, with the space the output prefix lost, and the stop sequence does not cut it.
    let mut seen = Vec::new();
    for seed in 0..10 {
        let (s, out) = c
            .call(
                "POST",
                "/v1/templates/labelled/completions",
                Some(json!({"variables": {"review": "I laughed and cried, see it twice."}, "seed": seed, "n": 2})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{out}");
        for choice in out["choices"].as_array().unwrap() {
            let text = choice["text"].as_str().unwrap();
            assert!(LABELS.iter().any(|l| text == format!(" {l}")), "{text:?} is not one of the labels");
            assert_eq!(choice["finish_reason"], "stop", "{choice}");
            seen.push(text.to_string());
        }
    }
    assert_eq!(seen.len(), 20);

    // A streamed call is held to it too.
    let (s, raw) = c
        .raw(
            "POST",
            "/v1/templates/labelled/completions",
            axum::body::Body::from(json!({"variables": {"review": "meh"}, "stream": true, "seed": 1}).to_string()),
            "application/json",
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let streamed: String = String::from_utf8(raw)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["choices"][0]["text"].as_str().map(str::to_string))
        .collect();
    assert!(LABELS.iter().any(|l| streamed == format!(" {l}")), "{streamed:?}");

    // The call brings its own constraint: it replaces the version's.
    let (s, out) = c
        .call(
            "POST",
            "/v1/templates/labelled/completions",
            Some(json!({"variables": {"review": "ok"}, "guided_choice": ["maybe"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{out}");
    assert_eq!(out["choices"][0]["text"], "maybe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drafts_run_under_their_constraint_and_bad_regexes_are_named() {
    let c = ctx().await;
    let regex = json!({"type": "regex", "pattern": "[0-9]{2}/10"});
    let body = |output: Value| json!({"spec": spec(output), "variables": {"review": "fine"}, "seed": 4});
    let (s, out) = c.call("POST", "/api/draft/completions", Some(body(regex))).await;
    assert_eq!(s, StatusCode::OK, "{out}");
    let text = out["choices"][0]["text"].as_str().unwrap();
    let b = text.as_bytes();
    assert!(b.len() == 6 && b[0] == b' ' && b[1..3].iter().all(u8::is_ascii_digit) && &b[3..] == b"/10", "{text:?}");

    let fields = json!({"type": "json_fields", "fields": [
        {"name": "label", "kind": "string", "allowed": LABELS},
        {"name": "stars", "kind": "integer"}
    ]});
    let mut run = body(fields);
    run["max_tokens"] = json!(40);
    let (s, out) = c.call("POST", "/api/draft/completions", Some(run)).await;
    assert_eq!(s, StatusCode::OK, "{out}");
    let text = out["choices"][0]["text"].as_str().unwrap();
    let v: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    assert!(LABELS.contains(&v["label"].as_str().unwrap()) && v["stars"].is_i64(), "{v}");
    assert_eq!(v.as_object().unwrap().len(), 2, "{v}");

    // A regex the decoder refuses: 400 naming it, from the preview, the run and a save.
    let bad = json!({"type": "regex", "pattern": "(unclosed"});
    let (s, e) = c.call("POST", "/api/draft/completions", Some(body(bad.clone()))).await;
    assert_eq!((s, param(&e)), (StatusCode::BAD_REQUEST, "output.pattern"), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("invalid regex"), "{e}");
    let (s, e) =
        c.call("POST", "/api/render", Some(json!({"spec": spec(bad.clone()), "variables": {}, "partial": true}))).await;
    assert_eq!((s, param(&e)), (StatusCode::BAD_REQUEST, "output.pattern"), "{e}");
    let (s, e) = c.call("POST", "/api/templates", Some(json!({"name": "bad-regex", "spec": spec(bad.clone())}))).await;
    assert_eq!((s, param(&e)), (StatusCode::BAD_REQUEST, "output.pattern"), "{e}");
    // Limits are checked as for every field: the label at fault, by index.
    let labels = json!({"type": "choice", "labels": ["a", "b", "c", ""]});
    let (s, e) = c.call("POST", "/api/draft/completions", Some(body(labels))).await;
    assert_eq!((s, param(&e)), (StatusCode::UNPROCESSABLE_ENTITY, "output.labels[3]"), "{e}");

    // A version stored with such a regex (written before this check, or by hand) is a 400
    // at its endpoint, naming it, not a failed generation.
    let (s, _) = c.call("POST", "/api/templates", Some(json!({"name": "stored", "spec": spec(Value::Null)}))).await;
    assert_eq!(s, StatusCode::CREATED);
    let stored: app::templates::VersionSpec = serde_json::from_value(spec(bad)).unwrap();
    c.state.store.create_version("stored", &stored, "by hand", "test").await.unwrap();
    let (s, e) =
        c.call("POST", "/v1/templates/stored@latest/completions", Some(json!({"variables": {"review": "x"}}))).await;
    assert_eq!((s, param(&e)), (StatusCode::BAD_REQUEST, "output.pattern"), "{e}");
    let (s, ok) =
        c.call("POST", "/v1/templates/stored@1/completions", Some(json!({"variables": {"review": "x"}}))).await;
    assert_eq!(s, StatusCode::OK, "version 1 has no constraint: {ok}");
}

async fn eval(c: &Ctx, template: &str) -> Value {
    let (s, run) = c.call("POST", "/api/evals", Some(json!({"template": template, "n": 2}))).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{run}");
    for _ in 0..3000 {
        let (s, r) = c.call("GET", &format!("/api/evals/{}", run["id"]), None).await;
        assert_eq!(s, StatusCode::OK, "{r}");
        if !matches!(r["status"].as_str(), Some("queued") | Some("running")) {
            assert_eq!(r["status"], "completed", "{r}");
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("eval of {template} did not finish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evals_record_whether_outputs_met_the_constraint() {
    let c = ctx().await;
    let rows = "review,expected\n\"Loved it, wonderful.\",positive\n\"Dull and far too long.\",negative\n\"Great fun!\",positive\n";
    let cases = [
        ("eval-labels", json!({"type": "choice", "labels": LABELS}), Some(3)),
        // Cannot be written within max_tokens: every row ends at the length limit, unmet.
        ("eval-long", json!({"type": "regex", "pattern": "[a-z]{300}"}), Some(0)),
        ("eval-free", Value::Null, None),
    ];
    for (name, output, met) in cases {
        let (s, v) = c.call("POST", "/api/templates", Some(json!({"name": name, "spec": spec(output.clone())}))).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let (s, v) = c.upload(&format!("/api/templates/{name}/tests"), rows, "text/csv").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let run = eval(&c, name).await;
        assert_eq!(run["constraint_met"].as_i64(), met, "{name}: {run}");
        for r in run["results"].as_array().unwrap() {
            assert_eq!(r["constraint_met"].as_bool(), met.map(|m| m > 0), "{name}: {r}");
            if met == Some(3) {
                for sample in r["samples"].as_array().unwrap() {
                    assert!(LABELS.contains(&sample.as_str().unwrap().trim()), "{r}");
                }
            }
        }
        let (s, list) = c.call("GET", &format!("/api/templates/{name}/evals"), None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(list["evals"][0]["constraint_met"].as_i64(), met, "the summary carries the count: {list}");
    }
}
