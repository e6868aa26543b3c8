//! `studio serve` as a real process on loopback, and the tools the end-to-end tests
//! drive it with (curl, the venv's Python with the official OpenAI client).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A running server, killed (SIGKILL) when dropped or by [`Server::kill`].
pub struct Server(pub std::process::Child);

impl Server {
    /// `kill -9`: no shutdown code runs.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Starts `studio serve` on a free port with a database of its own (unless `env` names
/// one); returns the process, its base URL and the start-up lines before "serving".
pub fn serve_with(model: &str, env: &[(&str, String)]) -> (Server, String, Vec<String>) {
    let db = tempfile::tempdir().unwrap().keep();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_studio"));
    cmd.args(["serve", "--model", model, "--port", "0"])
        .env("STUDIO_MODELS_DIR", root().join("models"))
        .env("STUDIO_PROMPTS_DIR", root().join("prompts"))
        .env("DATABASE_URL", format!("sqlite://{}/studio.db", db.display()))
        .env_remove("STUDIO_API_KEY")
        .env_remove("STUDIO_REPLICA_ID")
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

pub fn serve(model: &str) -> (Server, String) {
    let (server, url, _) = serve_with(model, &[]);
    (server, url)
}

/// curl with the status code: `(code, body)`.
pub fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl").args(["-sS", "-N", "-w", "\n%{http_code}"]).args(args).output().expect("curl");
    let text = String::from_utf8(out.stdout).expect("curl output is UTF-8");
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

/// curl, expecting a 2xx and a JSON body.
pub fn curl_json(args: &[&str]) -> serde_json::Value {
    let (code, body) = curl(args);
    assert!((200..300).contains(&code), "{args:?}: {code} {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{args:?}: {e}: {body}"))
}

pub fn python() -> PathBuf {
    let venv = PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/studio-venv");
    let py = venv.join("bin/python");
    assert!(py.exists(), "no Python venv with the openai client at {}: run scripts/test.sh", venv.display());
    py
}

/// Runs a script of `tests/e2e/` with the venv's Python; asserts it reports no failure.
pub fn run_python_checks(script: &str, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg(root().join("tests/e2e").join(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{script} checks failed:\n{stdout}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    stdout
}
