//! `studio serve` as a user runs it: a real process on loopback, driven by the official
//! OpenAI Python client and by curl.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Server(std::process::Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Starts `studio serve` on a free port with a database of its own (unless `env` names
/// one); returns the process, its base URL and the start-up lines before "serving".
fn serve_with(model: &str, env: &[(&str, String)]) -> (Server, String, Vec<String>) {
    let db = tempfile::tempdir().unwrap().keep();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_studio"));
    cmd.args(["serve", "--model", model, "--port", "0"])
        .env("STUDIO_MODELS_DIR", root().join("models"))
        .env("STUDIO_PROMPTS_DIR", root().join("prompts"))
        .env("DATABASE_URL", format!("sqlite://{}/studio.db", db.display()))
        .env_remove("STUDIO_API_KEY")
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start studio serve");
    let stderr = child.stderr.take().unwrap();
    let server = Server(child);
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "server did not start");
        let line = lines.next().expect("server exited").unwrap();
        if let Some(url) = line.split("on ").last().filter(|_| line.contains("serving")) {
            // Keep draining stderr so the server never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return (server, url.trim().to_string(), seen);
        }
        seen.push(line);
    }
}

fn serve(model: &str) -> (Server, String) {
    let (server, url, _) = serve_with(model, &[]);
    (server, url)
}

fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl").args(["-sS", "-N", "-w", "\n%{http_code}"]).args(args).output().expect("curl");
    let text = String::from_utf8(out.stdout).expect("curl output is UTF-8");
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

fn python() -> PathBuf {
    let venv = PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/studio-venv");
    let py = venv.join("bin/python");
    assert!(py.exists(), "no Python venv with the openai client at {}: run scripts/test.sh", venv.display());
    py
}

#[test]
fn openai_python_client_and_curl_against_studio_serve() {
    let (_server, url) = serve("smollm2-135m");
    let out = Command::new(python())
        .arg(root().join("tests/e2e/openai_client.py"))
        .arg(format!("{url}/v1"))
        .output()
        .expect("run the OpenAI client script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "OpenAI client checks failed:\n{stdout}");
    assert!(stdout.contains(" passed, 0 failed"));

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
    let shipped = std::fs::read_dir(root().join("prompts"))
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
