//! The studio in a real headless Chromium against a real `studio serve` on the bundled
//! model: playground (examples, live token count, streamed run, Ctrl+Enter and Esc,
//! errors at their fields, runs refused with empty variables), save (suggested name, no
//! panic, values kept), reload, versions, diff, production label, compare, evaluate, a
//! batch over a dataset, library, phone width, and a second visit that downloads only
//! the page (≤ 60 KB); then chat mode on SmolLM2-Instruct, whose file has a chat template
//! (the bundled Gemma's has none, which the first walk checks the studio says).
//! Any console error or failed request fails the step it happens in.
//! The browser steps are in `e2e/studio.mjs`; screenshots land in `e2e/output/`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `studio` binary of this build (cargo builds it for the workspace's tests).
fn studio_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap().to_path_buf();
    let bin = dir.join("studio");
    assert!(bin.exists(), "no studio binary at {}: run `cargo test --workspace` (scripts/test.sh)", bin.display());
    bin
}

struct Server(std::process::Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `studio serve` on `model` with a fresh SQLite file: the server, its URL, the file's folder.
fn serve(site: &std::path::Path, model: &str) -> (Server, String, tempfile::TempDir) {
    let db = tempfile::tempdir().unwrap();
    let mut child = Command::new(studio_bin())
        .args(["serve", "--port", "0", "--model", model])
        .env("STUDIO_MODELS_DIR", root().join("models"))
        .env("STUDIO_PROMPTS_DIR", root().join("prompts"))
        .env("STUDIO_SITE_DIR", site)
        .env("DATABASE_URL", format!("sqlite://{}/studio.db", db.path().display()))
        .env_remove("STUDIO_API_KEY")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start studio serve");
    let stderr = child.stderr.take().unwrap();
    let server = Server(child);
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(180);
    let url = loop {
        assert!(Instant::now() < deadline, "server did not start");
        let line = lines.next().expect("server exited").unwrap();
        if let Some(url) = line.split("on ").last().filter(|_| line.contains("serving")) {
            break url.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (server, url, db)
}

/// Runs one browser script against `url`; it must pass every step.
fn walk(script: &std::path::Path, url: &str, out_dir: &std::path::Path) {
    let out = Command::new("node").arg(script).arg(url).arg(out_dir).output().expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser test {} failed:\n{stdout}\n{stderr}\nscreenshots in {}",
        script.display(),
        out_dir.display()
    );
    assert!(stdout.contains("all steps passed"), "{stdout}");
}

#[test]
fn studio_pages_in_a_real_browser() {
    let site = root().join("site");
    assert!(
        site.join("pkg/studio-ui_bg.wasm").exists(),
        "no browser bundle in {}: run scripts/build-ui.sh (scripts/test.sh does)",
        site.display()
    );
    let e2e = root().join("tests/e2e");
    assert!(
        e2e.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed in tests/e2e: run scripts/test.sh"
    );
    let out_dir = e2e.join("output");
    let _ = std::fs::remove_dir_all(&out_dir);
    {
        let (_server, url, _db) = serve(&site, "gemma3-270m");
        walk(&e2e.join("studio.mjs"), &url, &out_dir);
    }
    // Chat mode needs a model with a chat template: SmolLM2-Instruct has one.
    {
        let (_server, url, _db) = serve(&site, "smollm2-135m");
        walk(&e2e.join("chat.mjs"), &url, &out_dir);
    }
    for page in [
        "01-playground-filled-1280",
        "01-playground-filled-800",
        "02-playground-output",
        "05-template-page-1280",
        "05-template-page-800",
        "06-compare-1280",
        "06-compare-800",
        "01b-playground-field-error-1280",
        "01b-playground-field-error-800",
        "02b-save-dialog-1280",
        "02b-save-dialog-800",
        "09b-evaluate-check-1280",
        "09b-evaluate-check-800",
        "10-batch-1280",
        "10-batch-800",
        "07-library-1280",
        "07-library-800",
        "08-playground-phone",
        "09-evaluate-1280",
        "09-evaluate-800",
        "06a-compare-draft-1280",
        "06a-compare-draft-800",
        "11-chat-1280",
        "11-chat-800",
        "11b-chat-saved",
    ] {
        assert!(out_dir.join(format!("{page}.png")).exists(), "no screenshot of {page}");
    }
}
