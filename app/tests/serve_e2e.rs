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

/// Starts `studio serve` on a free port; returns the process and its base URL.
fn serve(model: &str) -> (Server, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_studio"))
        .args(["serve", "--model", model, "--port", "0"])
        .env("STUDIO_MODELS_DIR", root().join("models"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("start studio serve");
    let stderr = child.stderr.take().unwrap();
    let server = Server(child);
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "server did not start");
        let line = lines.next().expect("server exited").unwrap();
        if let Some(url) = line.split("on ").last().filter(|_| line.contains("serving")) {
            // Keep draining stderr so the server never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return (server, url.trim().to_string());
        }
    }
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
    // Five token chunks, then the one with finish_reason and usage.
    assert_eq!(body.matches("data: {").count(), 6, "{body}");
    assert!(body.contains(r#""finish_reason":"length""#), "{body}");
}
