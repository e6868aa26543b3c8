//! Batch jobs as users run them: the official OpenAI client's files and batches API
//! against `studio serve`, and one batch shared by two replicas on the local PostgreSQL,
//! one of which is killed (`kill -9`) halfway.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use app::store::Backend;
use support::process::{curl, curl_json, run_python_checks, serve_with};
use support::TestDb;

#[test]
fn openai_client_runs_a_thousand_line_batch() {
    let (_server, url, _) = serve_with("smollm2-135m", &[]);
    run_python_checks("openai_batches.py", &[&format!("{url}/v1"), "1000"]);
}

fn batch_status(url: &str, id: &str) -> serde_json::Value {
    curl_json(&[&format!("{url}/v1/batches/{id}")])
}

#[test]
fn two_replicas_share_a_batch_and_one_dies() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::new(Backend::Postgres));
    let env = |id: &str| {
        vec![
            ("DATABASE_URL", db.url.clone()),
            ("STUDIO_REPLICA_ID", id.to_string()),
            // Short leases: the killed replica's lines pass to the other within seconds.
            ("STUDIO_LEASE_SECS", "2".to_string()),
        ]
    };
    let (mut one, url1, _) = serve_with("smollm2-135m", &env("replica-1"));
    let (_two, url2, _) = serve_with("smollm2-135m", &env("replica-2"));

    // A live eval run on the replica that survives.
    let csv = support::process::root().join("prompts/tests/movie-sentiment-ko.csv");
    curl_json(&[
        &format!("{url2}/api/templates/movie-sentiment-ko/tests?format=csv"),
        "--data-binary",
        &format!("@{}", csv.display()),
    ]);
    let eval = curl_json(&[
        &format!("{url2}/api/evals"),
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"template":"movie-sentiment-ko","max_tokens":2}"#,
    ]);
    let eval_id = eval["id"].as_i64().unwrap_or_else(|| panic!("{eval}"));

    let n = 240;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.jsonl");
    let text: String = (0..n)
        .map(|i| {
            format!(
                "{{\"custom_id\":\"r{i}\",\"method\":\"POST\",\"url\":\"/v1/completions\",\
                 \"body\":{{\"prompt\":\"Item {i} of the list is\",\"max_tokens\":4,\"temperature\":0}}}}\n"
            )
        })
        .collect();
    std::fs::write(&path, text).unwrap();
    let file =
        curl_json(&["-F", "purpose=batch", "-F", &format!("file=@{}", path.display()), &format!("{url1}/v1/files")]);
    let req =
        serde_json::json!({"input_file_id": file["id"], "endpoint": "/v1/completions", "completion_window": "24h"});
    let batch =
        curl_json(&[&format!("{url1}/v1/batches"), "-H", "content-type: application/json", "-d", &req.to_string()]);
    let id = batch["id"].as_str().unwrap().to_string();

    // Both replicas work on it; kill replica 1 once some lines are done.
    let deadline = Instant::now() + Duration::from_secs(300);
    while batch_status(&url2, &id)["request_counts"]["completed"].as_i64().unwrap() < 40 {
        assert!(Instant::now() < deadline, "the batch made no progress");
        std::thread::sleep(Duration::from_millis(200));
    }
    one.kill();
    let at_kill = batch_status(&url2, &id)["request_counts"]["completed"].as_i64().unwrap();
    assert!(at_kill < n, "killed before the end ({at_kill} of {n} done)");

    let done = loop {
        let b = batch_status(&url2, &id);
        if b["status"] == "completed" {
            break b;
        }
        assert!(Instant::now() < deadline, "the surviving replica did not finish: {b}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(done["request_counts"]["completed"], n, "{done}");
    assert_eq!(done["request_counts"]["failed"], 0, "{done}");
    let (code, out) = curl(&[&format!("{url2}/v1/files/{}/content", done["output_file_id"].as_str().unwrap())]);
    assert_eq!(code, 200);
    let ids: Vec<String> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["custom_id"].as_str().unwrap().to_string())
        .collect();
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!((ids.len(), distinct.len()), (n as usize, n as usize), "every line exactly once");

    // Replica 1 comes back: it takes back only its own runs; replica 2's eval is untouched.
    let (_one_again, _url, log) = serve_with("smollm2-135m", &env("replica-1"));
    assert!(!log.join("\n").contains("marked interrupted"), "{log:?}");
    let run = curl_json(&[&format!("{url2}/api/evals/{eval_id}")]);
    let status = run["run"]["status"].as_str().or(run["status"].as_str()).unwrap_or_default().to_string();
    assert!(status == "running" || status == "completed" || status == "queued", "{run}");
    let _ = curl(&["-X", "POST", &format!("{url2}/api/evals/{eval_id}/cancel")]);
    rt.block_on(db.drop_schema());
}
