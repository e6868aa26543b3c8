//! `studio serve` as a user runs it: a real process on loopback, driven by the official
//! OpenAI Python client and by curl.

mod support;

use std::process::Command;

use support::process::{curl, run_python_checks, serve, serve_with};

#[test]
fn openai_python_client_and_curl_against_studio_serve() {
    let (_server, url) = serve("smollm2-135m");
    run_python_checks("openai_client.py", &[&format!("{url}/v1")]);

    let curl = Command::new("curl")
        .args(["-sS", "-N", &format!("{url}/v1/completions"), "-H", "content-type: application/json"])
        .args(["-d", r#"{"prompt":"Hello","max_tokens":5,"temperature":0,"stream":true}"#])
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&curl.stdout);
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    // Five token chunks, then the one with finish_reason (usage only with `include_usage`).
    assert_eq!(body.matches("data: {").count(), 6, "{body}");
    assert!(body.contains(r#""finish_reason":"length""#), "{body}");
}

/// The default bundled model (Gemma-3-270M) behind a shipped Korean template, over real
/// HTTP with an API key, on a real SQLite file that a restart reuses.
#[test]
fn shipped_template_on_the_bundled_model_with_an_api_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/studio.db", dir.path().display());
    let out = Command::new(env!("CARGO_BIN_EXE_studio"))
        .args(["keys", "create", "--name", "e2e"])
        .env("DATABASE_URL", &db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(key.starts_with("sk-studio-"), "{key}");

    let (server, url, log) = serve_with("gemma3-270m", &[("DATABASE_URL", db.clone())]);
    let log = log.join("\n");
    let shipped = std::fs::read_dir(support::process::root().join("prompts"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "toml"))
        .count();
    assert!(log.contains(&format!("{shipped} new, 0 updated, 0 unchanged")), "{log}");
    assert!(log.contains("1 API key(s)"), "{log}");

    let auth = format!("authorization: Bearer {key}");
    let (code, body) = curl(&[&format!("{url}/api/templates")]);
    assert_eq!(code, 401, "{body}");
    let (code, body) = curl(&[&format!("{url}/api/templates?language=ko"), "-H", &auth]);
    assert_eq!(code, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(list["count"].as_u64().unwrap() >= 4, "{list}");

    let endpoint = format!("{url}/v1/templates/movie-sentiment-ko@latest/completions");
    for (review, label) in [
        ("연기도 좋고 음악도 아름다워서 또 보고 싶은 영화예요", "긍정"),
        ("지루하고 유치해서 중간에 나왔습니다. 돈 아까워요", "부정"),
    ] {
        let req = serde_json::json!({"variables": {"review": review}});
        let (code, body) =
            curl(&[&endpoint, "-H", &auth, "-H", "content-type: application/json", "-d", &req.to_string()]);
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["choices"][0]["text"].as_str().unwrap().trim(), label, "{review}: {v}");
        assert_eq!(v["template"]["name"], "movie-sentiment-ko");

        // Streamed: whole characters only, joining to the same text.
        let mut streamed = req.clone();
        streamed["stream"] = serde_json::json!(true);
        let (code, sse) =
            curl(&[&endpoint, "-H", &auth, "-H", "content-type: application/json", "-d", &streamed.to_string()]);
        assert_eq!(code, 200);
        assert!(!sse.contains('\u{FFFD}'), "{sse}");
        let joined: String = sse
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| {
                serde_json::from_str::<serde_json::Value>(d).unwrap()["choices"][0]["text"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(joined, v["choices"][0]["text"].as_str().unwrap());
    }
    drop(server);

    // A restart on the same database imports nothing new and keeps the history.
    let (_server, url, log) = serve_with("gemma3-270m", &[("DATABASE_URL", db)]);
    assert!(log.join("\n").contains(&format!("0 new, 0 updated, {shipped} unchanged")), "{log:?}");
    let (code, body) = curl(&[&format!("{url}/api/templates/movie-sentiment-ko/runs"), "-H", &auth]);
    assert_eq!(code, 200);
    let runs: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(runs["runs"].as_array().unwrap().len(), 4, "{runs}");
}
