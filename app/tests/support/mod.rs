//! What the app's integration tests share: the real model, a router context over a real
//! SQLite file, and a store on each database (a fresh SQLite file, a fresh schema of the
//! PostgreSQL server at 127.0.0.1:5432, database `test`, or `STUDIO_TEST_POSTGRES_URL`).
// Each test binary uses a part of this module.
#![allow(dead_code)]

pub mod process;

use std::path::PathBuf;
use std::sync::OnceLock;

use app::store::{Backend, Store};
use app::{app, AppState};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// The bundled SmolLM2 model; fails (never skips) when it is not installed.
pub fn model_path() -> String {
    let dir = std::env::var_os("STUDIO_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models"));
    let p = dir.join("smollm2-135m");
    assert!(p.is_dir(), "model missing at {}: run scripts/fetch-models.sh", p.display());
    p.to_string_lossy().into_owned()
}

/// A new batcher over the model, with its own queue.
pub fn start(queue: usize, max_running: usize) -> app::serving::Scheduler {
    app::start(&model_path(), 1, queue, inference::EngineConfig { max_running, ..Default::default() }).unwrap()
}

/// One batcher per test binary (the model loads once), started on first use.
pub fn shared_scheduler(max_running: usize) -> app::serving::Scheduler {
    static S: OnceLock<app::serving::Scheduler> = OnceLock::new();
    S.get_or_init(|| start(64, max_running)).clone()
}

/// The router over a real SQLite file in a temporary folder.
pub struct Ctx {
    pub state: AppState,
    pub url: String,
    pub key: Option<String>,
    _dir: tempfile::TempDir,
}

impl Ctx {
    pub async fn new(scheduler: app::serving::Scheduler) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/studio.db", dir.path().display());
        let store = Store::connect(&url).await.unwrap();
        Ctx { state: AppState { scheduler, store }, url, key: None, _dir: dir }
    }

    /// A context over a given state (e.g. a "restarted server" on the same database file).
    pub fn with_state(state: AppState, url: String) -> Self {
        Ctx { state, url, key: None, _dir: tempfile::tempdir().unwrap() }
    }

    pub async fn raw(&self, method: &str, uri: &str, body: Body, content_type: &str) -> (StatusCode, Vec<u8>) {
        call_raw(&self.state, self.key.as_deref(), method, uri, body, content_type).await
    }

    pub async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let body = body.map(|b| Body::from(b.to_string())).unwrap_or_else(Body::empty);
        let (s, b) = self.raw(method, uri, body, "application/json").await;
        (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }

    pub async fn upload(&self, uri: &str, text: &str, content_type: &str) -> (StatusCode, Value) {
        let (s, b) = self.raw("POST", uri, Body::from(text.to_string()), content_type).await;
        (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }
}

/// One request through `app()` + `oneshot`: the status and the body's bytes.
pub async fn call_raw(
    state: &AppState,
    key: Option<&str>,
    method: &str,
    uri: &str,
    body: Body,
    content_type: &str,
) -> (StatusCode, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(uri).header("content-type", content_type);
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let resp = app(state.clone()).oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    (status, resp.into_body().collect().await.unwrap().to_bytes().to_vec())
}

fn postgres_base() -> String {
    std::env::var("STUDIO_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A database for one test; `drop_schema` removes the Postgres schema (the SQLite folder
/// goes with the value).
pub struct TestDb {
    pub store: Store,
    /// Where `store` is: a second `Store::connect` here is a restarted server.
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    schema: Option<String>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}/studio.db", dir.path().display());
                TestDb { store: Store::connect(&url).await.unwrap(), url, _dir: Some(dir), schema: None }
            }
            Backend::Postgres => {
                let schema = format!("t_{}", unique());
                sqlx::any::install_default_drivers();
                let admin = sqlx::AnyPool::connect(&postgres_base())
                    .await
                    .expect("PostgreSQL must be running at 127.0.0.1:5432 (database test, trust auth)");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}"))).execute(&admin).await.unwrap();
                admin.close().await;
                let sep = if postgres_base().contains('?') { '&' } else { '?' };
                let url = format!("{}{sep}options=-c%20search_path%3D{schema}", postgres_base());
                TestDb { store: Store::connect(&url).await.unwrap(), url, _dir: None, schema: Some(schema) }
            }
        }
    }

    /// The same database behind another `Store` (one reopened after a restart).
    pub fn with_store(self, store: Store) -> Self {
        TestDb { store, ..self }
    }

    pub async fn drop_schema(self) {
        self.store.close().await;
        if let Some(schema) = &self.schema {
            if let Ok(admin) = sqlx::AnyPool::connect(&postgres_base()).await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE"))).execute(&admin).await;
                admin.close().await;
            }
        }
    }
}

/// Runs `f` on a fresh database of each backend.
pub async fn on_both<F, Fut>(f: F)
where
    F: Fn(TestDb) -> Fut,
    Fut: std::future::Future<Output = TestDb>,
{
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let db = TestDb::new(backend).await;
        f(db).await.drop_schema().await;
    }
}

/// A name no other test (or test process) uses.
pub fn unique() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{}_{:x}_{}", std::process::id(), nanos, N.fetch_add(1, Ordering::Relaxed))
}
