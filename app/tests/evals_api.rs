//! The evals API through `app()` + `oneshot`, on the real SmolLM2 model and a real SQLite
//! file: test-set import/export, eval runs (progress, cancel, interrupted on restart),
//! likelihood labelling, compare, the production eval gate, few-shot selection.

use std::time::Duration;

mod support;

use app::AppState;
use axum::body::Body;
use axum::http::StatusCode;
use serde_json::{json, Value};
use support::Ctx;

async fn ctx() -> Ctx {
    Ctx::new(support::shared_scheduler(16)).await
}

/// What these tests do with a context besides calling it.
trait EvalCtx {
    async fn create_template(&self, name: &str, spec: Value);
    async fn wait(&self, id: &Value, until: impl Fn(&Value) -> bool) -> Value;
}

impl EvalCtx for Ctx {
    async fn create_template(&self, name: &str, spec: Value) {
        let (s, v) = self.call("POST", "/api/templates", Some(json!({"name": name, "spec": spec}))).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    /// Polls until the run has ended (or `until` holds), at most 600 s.
    async fn wait(&self, id: &Value, until: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..6000 {
            let (s, run) = self.call("GET", &format!("/api/evals/{id}"), None).await;
            assert_eq!(s, StatusCode::OK, "{run}");
            if until(&run) {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("eval {id} did not get there in time");
    }
}

fn over(run: &Value) -> bool {
    !matches!(run["status"].as_str(), Some("queued") | Some("running"))
}

fn sentiment_spec(max_tokens: usize) -> Value {
    json!({
        "instruction": "Classify the sentiment of each movie review as positive or negative.",
        "examples": [
            {"input": "This movie was wonderful, I loved every minute.", "output": "positive"},
            {"input": "A boring, painful waste of two hours.", "output": "negative"},
            {"input": "The best film I have seen this year!", "output": "positive"},
            {"input": "Terrible acting and a silly plot.", "output": "negative"}
        ],
        "input_pattern": "{{review}}",
        "format": {"example_separator": "\n\n", "input_prefix": "Review: ", "io_separator": "\n", "output_prefix": "Sentiment: "},
        "parameters": {"temperature": 0, "max_tokens": max_tokens, "stop": ["\n"]}
    })
}

const POSITIVE: [&str; 6] = [
    "An absolute masterpiece, I loved it.",
    "Wonderful acting and a beautiful story.",
    "The best movie of the decade, truly great.",
    "I enjoyed every second, brilliant and fun.",
    "A delightful, moving and excellent film.",
    "Fantastic! I would happily watch it again.",
];
const NEGATIVE: [&str; 6] = [
    "Awful. A complete waste of time.",
    "The worst film I have ever seen, terrible.",
    "Boring, dull and painfully slow.",
    "Horrible acting and a stupid plot.",
    "I hated it, a truly bad movie.",
    "Dreadful, ugly and badly written.",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_sets_import_export_round_trip_and_malformed_files_write_nothing() {
    let c = ctx().await;
    c.create_template("ko-reviews", json!({"input_pattern": "{{review}} / {{note}}"})).await;
    let csv = "review,note,expected,assertions\n\
        \"배우들 연기가 정말 좋았어요, 최고!\",映画は「最高」でした,긍정,\"[{\"\"type\"\":\"\"one_of\"\",\"\"values\"\":[\"\"긍정\"\",\"\"부정\"\"]}]\"\n\
        \"두 시간이 아까웠다\n스토리가 엉망\",つまらない,부정,\n\
        普通の映画,\"\",,\"[{\"\"type\"\":\"\"max_length\"\",\"\"chars\"\":4},{\"\"type\"\":\"\"regex\"\",\"\"pattern\"\":\"\"^\\\\p{Hangul}+$\"\"}]\"\n";
    let (s, out) = c.upload("/api/templates/ko-reviews/tests", csv, "text/csv").await;
    assert_eq!(s, StatusCode::OK, "{out}");
    assert_eq!(out["count"], 3);
    let (_, listed) = c.call("GET", "/api/templates/ko-reviews/tests", None).await;
    assert_eq!(listed["rows"][1]["variables"]["review"], "두 시간이 아까웠다\n스토리가 엉망");
    assert_eq!(listed["rows"][0]["variables"]["note"], "映画は「最高」でした");
    assert_eq!(listed["rows"][2]["expected"], Value::Null);
    assert_eq!(listed["rows"][2]["assertions"][1]["type"], "regex");

    // Export, re-import, export: identical bytes and identical rows, in both formats.
    for (format, ct) in [("csv", "text/csv"), ("jsonl", "application/x-ndjson")] {
        let (s, exported) =
            c.raw("GET", &format!("/api/templates/ko-reviews/tests/export?format={format}"), Body::empty(), "").await;
        assert_eq!(s, StatusCode::OK);
        let exported = String::from_utf8(exported).unwrap();
        let (s, out) = c.upload("/api/templates/ko-reviews/tests", &exported, ct).await;
        assert_eq!(s, StatusCode::OK, "{format}: {out}");
        let (_, again) = c.call("GET", "/api/templates/ko-reviews/tests", None).await;
        let strip = |v: &Value| -> Vec<Value> {
            v["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| json!([r["variables"], r["expected"], r["assertions"]]))
                .collect()
        };
        assert_eq!(strip(&again), strip(&listed), "{format}");
        let (_, twice) =
            c.raw("GET", &format!("/api/templates/ko-reviews/tests/export?format={format}"), Body::empty(), "").await;
        assert_eq!(String::from_utf8(twice).unwrap(), exported, "{format}");
    }

    // Malformed: row 3 has a bad assertion cell. 422 naming row and column; nothing written.
    let bad =
        "review,note,expected,assertions\n좋아요,a,긍정,\n별로,b,부정,\n최악,c,부정,\"[{\"\"type\"\":\"\"max_length\"\"}]\"\n";
    let (s, err) = c.upload("/api/templates/ko-reviews/tests?mode=replace", bad, "text/csv").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["param"], "rows[3].assertions", "{err}");
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(msg.contains("row 3") && msg.contains("column 'assertions'"), "{msg}");
    let short = "review,note,expected\n좋아요,a,긍정\n별로\n";
    let (s, err) = c.upload("/api/templates/ko-reviews/tests?format=csv&mode=append", short, "text/plain").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["param"], "rows[2].note", "{err}");
    let (s, err) = c
        .upload("/api/templates/ko-reviews/tests", "{\"review\": \"좋아\", \"note\": 1}\n", "application/x-ndjson")
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["param"], "rows[1].note", "{err}");
    // Columns must be the template's variables: a misspelt one is named, with the variables.
    let (s, err) = c.upload("/api/templates/ko-reviews/tests", "reveiw,note\n좋아,a\n", "text/csv").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["param"], "rows[1].reveiw", "{err}");
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(msg.starts_with("row 1: column 'reveiw'") && msg.contains("(review, note)"), "{msg}");
    // Two BOMs, a stray quote, an unknown JSON key: refused.
    for (body, ct) in [
        ("\u{FEFF}\u{FEFF}review,note\n좋아,a\n", "text/csv"),
        ("review,note\n좋\"아,a\n", "text/csv"),
        ("{\"rows\": [{\"variables\": {\"review\": \"a\", \"note\": \"b\"}, \"expect\": \"x\"}]}", "application/json"),
    ] {
        let (s, err) = c.upload("/api/templates/ko-reviews/tests", body, ct).await;
        assert_eq!(s.as_u16() / 100, 4, "{body}: {err}");
        assert!(err["error"]["message"].is_string(), "{body}: {err}");
    }
    let (_, after) = c.call("GET", "/api/templates/ko-reviews/tests", None).await;
    assert_eq!(after["count"], 3, "a refused file changes nothing: {after}");
    assert_eq!(after["rows"][0]["variables"]["review"], "배우들 연기가 정말 좋았어요, 최고!");

    // Append adds after the existing rows; delete empties the set.
    let (s, out) = c.upload("/api/templates/ko-reviews/tests?mode=append", "review,note\n추가,x\n", "text/csv").await;
    assert_eq!((s, out["count"].clone()), (StatusCode::OK, json!(4)), "{out}");
    let (s, _) = c.call("DELETE", "/api/templates/ko-reviews/tests", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, after) = c.call("GET", "/api/templates/ko-reviews/tests", None).await;
    assert_eq!(after["count"], 0);
    let (s, err) = c.call("POST", "/api/evals", Some(json!({"template": "ko-reviews"}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "no test rows: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eval_run_scores_rows_with_likelihood_agreeing_with_greedy_and_compares_runs() {
    let c = ctx().await;
    c.create_template("reviews", sentiment_spec(3)).await;
    let mut lines = vec!["review,expected,assertions".to_string()];
    let labels = r#"[{"type":"likelihood","labels":["positive","negative"]},{"type":"one_of","values":["positive","negative"]}]"#;
    let cell = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    for (p, n) in POSITIVE.iter().zip(NEGATIVE.iter()).take(4) {
        lines.push(format!("{},positive,{}", cell(p), cell(labels)));
        lines.push(format!("{},negative,{}", cell(n), cell(labels)));
    }
    // A row that cannot pass: checks every other assertion kind's failure path end to end.
    lines.push(format!("{},,{}", cell("Great film."), cell(r#"[{"type":"json"}]"#)));
    let (s, out) = c.upload("/api/templates/reviews/tests", &(lines.join("\n") + "\n"), "text/csv").await;
    assert_eq!(s, StatusCode::OK, "{out}");

    let (s, run) = c.call("POST", "/api/evals", Some(json!({"template": "reviews", "version": 1}))).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{run}");
    assert_eq!(run["status"], "queued");
    assert_eq!(run["total"], 9);
    let run = c.wait(&run["id"], over).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["done"], 9);
    assert_eq!(run["model"], "smollm2-135m");
    assert_eq!(run["tp"], 1);
    assert_eq!(run["seed"], 0);
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), 9);
    assert_eq!(results[8]["passed"], false);
    assert_eq!(results[8]["assertions"][0]["type"], "json");
    let passed = results.iter().filter(|r| r["passed"] == true).count();
    assert_eq!(run["passed"], passed);
    assert!((run["pass_rate"].as_f64().unwrap() - passed as f64 / 9.0).abs() < 1e-9);
    assert!(passed >= 6, "the model labels clear reviews: {run}");
    assert!(results[1..].iter().any(|r| r["cached_tokens"].as_i64().unwrap() > 0), "few-shot prefix reused");
    // Likelihood labelling agrees with greedy decoding where greedy wrote a label.
    let mut agreeing = 0;
    for r in &results[..8] {
        let out = r["output"].as_str().unwrap().trim();
        let lk = &r["assertions"][0];
        assert_eq!(lk["type"], "likelihood");
        let scores = lk["scores"].as_object().unwrap();
        assert!(scores["positive"].as_f64().unwrap() < 0.0 && scores["negative"].as_f64().unwrap() < 0.0);
        if out == "positive" || out == "negative" {
            assert_eq!(lk["chosen"], out, "{r}");
            agreeing += 1;
        }
    }
    assert!(agreeing >= 6, "greedy wrote a label on clear rows: {run}");

    // A draft with misleading examples: compare lists the flipped rows.
    let mut draft = sentiment_spec(3);
    for e in draft["examples"].as_array_mut().unwrap() {
        let flipped = if e["output"] == "positive" { "negative" } else { "positive" };
        e["output"] = json!(flipped);
    }
    draft["instruction"] = json!("");
    let (s, run2) = c.call("POST", "/api/evals", Some(json!({"template": "reviews", "spec": draft}))).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{run2}");
    assert_eq!(run2["version"], Value::Null);
    let run2 = c.wait(&run2["id"], over).await;
    assert_eq!(run2["status"], "completed");
    let (s, cmp) = c.call("GET", &format!("/api/evals/{}/compare/{}", run["id"], run2["id"]), None).await;
    assert_eq!(s, StatusCode::OK, "{cmp}");
    let (fixed, broken) = (cmp["fixed"].as_array().unwrap(), cmp["broken"].as_array().unwrap());
    assert_eq!(cmp["unmatched"], 0);
    assert_eq!(fixed.len() + broken.len() + cmp["unchanged"].as_u64().unwrap() as usize, 9);
    let flips =
        |run: &Value| -> Vec<bool> { run["results"].as_array().unwrap().iter().map(|r| r["passed"] == true).collect() };
    let (a, b) = (flips(&run), flips(&run2));
    let expected_broken = a.iter().zip(&b).filter(|(x, y)| **x && !**y).count();
    assert_eq!(broken.len(), expected_broken, "{cmp}");
    for r in broken {
        assert_eq!((r["a"]["passed"].clone(), r["b"]["passed"].clone()), (json!(true), json!(false)));
    }

    let (s, hist) = c.call("GET", "/api/templates/reviews/evals", None).await;
    assert_eq!(s, StatusCode::OK);
    let evals = hist["evals"].as_array().unwrap();
    assert_eq!(evals.len(), 2);
    assert_eq!(evals[0]["id"], run2["id"], "newest first");
    assert_eq!(evals[1]["version"], 1);
    assert!(evals[1]["finished_at"].as_i64().unwrap() >= evals[1]["created_at"].as_i64().unwrap());

    // Stability: n samples at temperature > 0, with the seed recorded.
    let (s, run3) = c
        .call(
            "POST",
            "/api/evals",
            Some(json!({"template": "reviews", "n": 3, "temperature": 1.5, "seed": 7, "max_tokens": 6})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{run3}");
    let run3 = c.wait(&run3["id"], over).await;
    assert_eq!((run3["n"].clone(), run3["seed"].clone()), (json!(3), json!(7)));
    for r in run3["results"].as_array().unwrap() {
        assert_eq!(r["samples"].as_array().unwrap().len(), 3);
        let st = r["stability"].as_f64().unwrap();
        assert!([1.0 / 3.0, 2.0 / 3.0, 1.0].iter().any(|x| (x - st).abs() < 1e-9), "{st}");
    }
    let (s, err) = c.call("POST", "/api/evals", Some(json!({"template": "reviews", "n": 17}))).await;
    assert_eq!((s, err["error"]["param"].clone()), (StatusCode::UNPROCESSABLE_ENTITY, json!("n")), "{err}");
}

/// Rows that generate many tokens (no stop, long max_tokens), so a run takes a while.
async fn slow_set(c: &Ctx, name: &str, rows: usize) {
    let mut spec = sentiment_spec(48);
    spec["parameters"]["stop"] = json!([]);
    c.create_template(name, spec).await;
    let body: String = std::iter::once("review".to_string())
        .chain((0..rows).map(|i| format!("\"{} (#{i})\"", POSITIVE[i % 6])))
        .collect::<Vec<_>>()
        .join("\n");
    let (s, out) = c.upload(&format!("/api/templates/{name}/tests"), &body, "text/csv").await;
    assert_eq!(s, StatusCode::OK, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_run_mid_way() {
    let c = ctx().await;
    slow_set(&c, "slow", 80).await;
    let (s, run) = c.call("POST", "/api/evals", Some(json!({"template": "slow"}))).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{run}");
    let id = run["id"].clone();
    c.wait(&id, |r| r["done"].as_i64().unwrap() >= 1).await;
    let (s, cancelled) = c.call("POST", &format!("/api/evals/{id}/cancel"), None).await;
    assert_eq!(s, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    let done = cancelled["done"].as_i64().unwrap();
    assert!(done < 80, "cancelled before the end: {done}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, later) = c.call("GET", &format!("/api/evals/{id}"), None).await;
    assert_eq!(later["status"], "cancelled");
    assert_eq!(later["done"], done, "no row is recorded after the cancel");
    assert_eq!(later["results"].as_array().unwrap().len() as i64, done);
    let (s, again) = c.call("POST", &format!("/api/evals/{id}/cancel"), None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{again}");
    let (s, _) = c.call("POST", "/api/evals/999/cancel", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_left_running_is_interrupted_when_the_server_restarts() {
    let c = ctx().await;
    slow_set(&c, "slow", 80).await;
    let (_, run) = c.call("POST", "/api/evals", Some(json!({"template": "slow"}))).await;
    let id = run["id"].clone();
    c.wait(&id, |r| r["status"] == "running").await;

    // A "restarted server": a new store (and app) on the same SQLite file.
    let store = app::store::Store::connect(&c.url).await.unwrap();
    assert_eq!(store.interrupt_stale_evals().await.unwrap(), 1);
    let restarted = Ctx::with_state(AppState { scheduler: c.state.scheduler.clone(), store }, c.url.clone());
    let (_, after) = restarted.call("GET", &format!("/api/evals/{id}"), None).await;
    assert_eq!(after["status"], "interrupted", "{after}");
    assert!(after["finished_at"].is_i64());
    let done = after["done"].clone();
    // The old task notices and stops writing.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, later) = restarted.call("GET", &format!("/api/evals/{id}?results=false"), None).await;
    assert_eq!(later["done"], done);
    assert_eq!(later["status"], "interrupted");
    assert!(later.get("results").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_eval_gate_refuses_a_worse_version_with_both_scores() {
    let c = ctx().await;
    let mut good = sentiment_spec(3);
    good["parameters"]["max_tokens"] = json!(2);
    c.create_template("gated", good.clone()).await;
    let rows: String = std::iter::once("review,assertions".to_string())
        .chain(
            POSITIVE
                .iter()
                .take(4)
                .map(|p| format!("{p:?},\"[{{\"\"type\"\":\"\"max_length\"\",\"\"chars\"\":200}}]\"")),
        )
        .collect::<Vec<_>>()
        .join("\n");
    let (s, out) = c.upload("/api/templates/gated/tests", &rows, "text/csv").await;
    assert_eq!(s, StatusCode::OK, "{out}");
    // v2 renders nothing (its variable is not in the test set): every row fails.
    let mut bad = good.clone();
    bad["input_pattern"] = json!("{{text}}");
    let (s, _) = c.call("POST", "/api/templates/gated/versions", Some(json!({"spec": bad}))).await;
    assert_eq!(s, StatusCode::CREATED);
    let mut v3 = good.clone();
    v3["instruction"] = json!("Is the review positive or negative?");
    let (s, _) = c.call("POST", "/api/templates/gated/versions", Some(json!({"spec": v3}))).await;
    assert_eq!(s, StatusCode::CREATED);

    let (s, t) = c.call("PATCH", "/api/templates/gated", Some(json!({"eval_gate": true}))).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["template"]["eval_gate"], true);
    let put = |v: i64| c.call("PUT", "/api/templates/gated/labels/production", Some(json!({"version": v})));

    // No eval yet: refused.
    let (s, err) = put(1).await;
    assert_eq!(s, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["error"]["code"], "eval_gate");
    for v in [1, 2] {
        let (_, run) = c.call("POST", "/api/evals", Some(json!({"template": "gated", "version": v}))).await;
        let run = c.wait(&run["id"], over).await;
        assert_eq!(run["status"], "completed");
        assert_eq!(run["pass_rate"], if v == 1 { json!(1.0) } else { json!(0.0) }, "{run}");
    }
    let (s, moved) = put(1).await;
    assert_eq!(s, StatusCode::OK, "{moved}");
    let (s, err) = put(2).await;
    assert_eq!(s, StatusCode::CONFLICT, "{err}");
    let e = &err["error"];
    assert_eq!(e["code"], "eval_gate");
    assert_eq!(e["candidate"]["version"], 2);
    assert_eq!(e["candidate"]["pass_rate"], 0.0);
    assert_eq!(e["production"]["version"], 1);
    assert_eq!(e["production"]["pass_rate"], 1.0);
    assert!(e["message"].as_str().unwrap().contains("0.0%") && e["message"].as_str().unwrap().contains("100.0%"));
    let (_, labels) = c.call("GET", "/api/templates/gated/labels", None).await;
    assert_eq!(labels["labels"]["production"], 1, "a refused move changes nothing");
    // v3 without an eval is refused; with an equal score it may go.
    assert_eq!(put(3).await.0, StatusCode::CONFLICT);
    let (_, run) = c.call("POST", "/api/evals", Some(json!({"template": "gated", "version": 3}))).await;
    c.wait(&run["id"], over).await;
    assert_eq!(put(3).await.0, StatusCode::OK);
    // Other labels are not gated, and with the gate off anything goes.
    assert_eq!(
        c.call("PUT", "/api/templates/gated/labels/staging", Some(json!({"version": 2}))).await.0,
        StatusCode::OK
    );
    let (_, t) = c.call("PATCH", "/api/templates/gated", Some(json!({"eval_gate": false}))).await;
    assert_eq!(t["template"]["eval_gate"], false);
    assert_eq!(put(2).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn few_shot_selection_beats_random_when_most_examples_are_mislabelled() {
    let c = ctx().await;
    // The template's own examples: two right, six with the wrong label.
    let mut spec = sentiment_spec(2);
    spec["instruction"] = json!("");
    let examples: Vec<Value> = [
        ("I loved this film, it was great.", "positive"),
        ("Awful and boring.", "negative"),
        ("A beautiful, wonderful movie.", "negative"),
        ("Brilliant acting, superb story.", "negative"),
        ("Excellent, I enjoyed it a lot.", "negative"),
        ("Terrible, I hated every minute.", "positive"),
        ("Bad plot and bad acting.", "positive"),
        ("Painfully dull and stupid.", "positive"),
    ]
    .iter()
    .map(|(i, o)| json!({"input": i, "output": o}))
    .collect();
    spec["examples"] = json!(examples);
    c.create_template("pick", spec).await;
    let mut lines = vec!["review,expected".to_string()];
    for (p, n) in POSITIVE.iter().zip(NEGATIVE.iter()) {
        lines.push(format!("{p:?},positive"));
        lines.push(format!("{n:?},negative"));
    }
    let (s, out) = c.upload("/api/templates/pick/tests", &lines.join("\n"), "text/csv").await;
    assert_eq!(s, StatusCode::OK, "{out}");

    let (s, rep) = c
        .call(
            "POST",
            "/api/templates/pick/select-examples",
            Some(json!({"k": 2, "holdout": 1.0, "random_sets": 5, "seed": 3})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{rep}");
    assert_eq!(rep["pool"].as_array().unwrap().len(), 8, "holdout 1.0: the pool is the examples");
    assert_eq!(rep["holdout"].as_array().unwrap().len(), 12);
    let mut labels: Vec<&str> = rep["labels"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    labels.sort();
    assert_eq!(labels, ["negative", "positive"]);
    assert_eq!(rep["tried"].as_array().unwrap().len(), 8 + 7, "k rounds of the remaining candidates");
    let best = rep["best"]["accuracy"].as_f64().unwrap();
    let random = rep["random"]["mean_accuracy"].as_f64().unwrap();
    let current = rep["current"]["accuracy"].as_f64().unwrap();
    assert!(best > random, "best {best} vs random {random}: {rep}");
    assert!(best >= current, "best {best} vs the template's own examples {current}");
    assert_eq!(rep["best"]["examples"].as_array().unwrap().len(), 2);
    assert_eq!(rep["spec"]["examples"].as_array().unwrap().len(), 2);
    // Every tried set's score is reported, and the best is the best of the last round.
    let last_round: Vec<&Value> = rep["tried"].as_array().unwrap().iter().filter(|t| t["round"] == 2).collect();
    assert!(last_round.iter().all(|t| t["accuracy"].as_f64().unwrap() <= best));
    // The draft is saveable as a new version.
    let (s, v) =
        c.call("POST", "/api/templates/pick/versions", Some(json!({"spec": rep["spec"], "note": "selected"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    let (s, err) = c.call("POST", "/api/templates/pick/select-examples", Some(json!({"k": 9}))).await;
    assert_eq!((s, err["error"]["param"].clone()), (StatusCode::UNPROCESSABLE_ENTITY, json!("k")), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_test_row_is_edited_or_deleted_in_place() {
    let c = ctx().await;
    c.create_template("rows-in-place", sentiment_spec(2)).await;
    let rows = json!({"rows": [
        {"variables": {"review": "좋았다"}, "expected": "positive"},
        {"variables": {"review": "별로였다"}, "expected": "positive"},
        {"variables": {"review": "최고"}, "expected": "positive"}
    ]});
    let (s, v) = c.call("POST", "/api/templates/rows-in-place/tests?mode=append", Some(rows)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, list) = c.call("GET", "/api/templates/rows-in-place/tests", None).await;
    let id = |i: usize| list["rows"][i]["id"].as_i64().unwrap();

    let uri = format!("/api/templates/rows-in-place/tests/{}", id(1));
    let (s, v) = c.call("PUT", &uri, Some(json!({"variables": {"review": "별로였다!"}, "expected": "negative"}))).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    // A column that is no variable of the template is refused, naming the variables.
    let (s, err) = c.call("PUT", &uri, Some(json!({"variables": {"text": "x"}, "expected": "negative"}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("review"), "{err}");
    let (s, err) =
        c.call("PUT", "/api/templates/rows-in-place/tests/999999", Some(json!({"variables": {"review": "x"}}))).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{err}");

    let (s, _) = c.call("DELETE", &format!("/api/templates/rows-in-place/tests/{}", id(0)), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, after) = c.call("GET", "/api/templates/rows-in-place/tests", None).await;
    let texts: Vec<(&str, &str)> = after["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["variables"]["review"].as_str().unwrap(), r["expected"].as_str().unwrap()))
        .collect();
    assert_eq!(texts, [("별로였다!", "negative"), ("최고", "positive")], "edited in place, order kept");
    let (s, _) = c.call("DELETE", &format!("/api/templates/rows-in-place/tests/{}", id(0)), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "deleting twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_over_different_test_sets_are_not_compared() {
    let c = ctx().await;
    c.create_template("hashed-sets", sentiment_spec(2)).await;
    let rows = json!({"rows": [
        {"variables": {"review": "A wonderful film."}, "expected": "positive"},
        {"variables": {"review": "Dull and long."}, "expected": "negative"}
    ]});
    let (s, v) = c.call("POST", "/api/templates/hashed-sets/tests?mode=replace", Some(rows)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    async fn eval(c: &Ctx) -> Value {
        let (s, run) = c.call("POST", "/api/evals", Some(json!({"template": "hashed-sets", "version": 1}))).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{run}");
        let run = c.wait(&run["id"], over).await;
        assert_eq!(run["status"], "completed", "{run}");
        run
    }
    let a = eval(&c).await;
    let b = eval(&c).await;
    assert_eq!(a["tests_hash"], b["tests_hash"], "the same rows, the same set");
    assert_eq!(a["tests_hash"].as_str().unwrap().len(), 64);
    let (s, v) = c.call("GET", &format!("/api/evals/{}/compare/{}", a["id"], b["id"]), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    let (_, list) = c.call("GET", "/api/templates/hashed-sets/tests", None).await;
    let uri = format!("/api/templates/hashed-sets/tests/{}", list["rows"][1]["id"]);
    let (s, _) = c
        .call("PUT", &uri, Some(json!({"variables": {"review": "Dull, long and loud."}, "expected": "negative"})))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let d = eval(&c).await;
    assert_ne!(d["tests_hash"], a["tests_hash"]);
    let (s, err) = c.call("GET", &format!("/api/evals/{}/compare/{}", a["id"], d["id"]), None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["error"]["code"], "different_test_sets", "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("test set changed"), "{err}");
}
