//! The studio server: OpenAI-compatible `/v1/*` over the continuous-batching scheduler.

pub mod bench_serve;
pub mod error;
pub mod metrics;
pub mod openai;
pub mod scheduler;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::error::ApiError;
use crate::scheduler::Scheduler;

/// Largest request body accepted (413 beyond).
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub scheduler: Scheduler,
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/v1/completions", post(openai::completions))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/models", get(openai::models))
        .route("/v1/tokenize", post(openai::tokenize))
        .route("/v1/detokenize", post(openai::detokenize))
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(metrics_text))
        .fallback(|| async { ApiError::status(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(middleware::from_fn_with_state(state.clone(), count_status))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    ([("content-type", "text/plain; version=0.0.4")], state.scheduler.metrics.render())
}

async fn count_status(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    state.scheduler.metrics.count_request(resp.status().as_u16());
    resp
}

/// What `studio serve` listens with from the first moment: every request answers 503
/// (OpenAI error shape, `Retry-After`) until the model has loaded and `app` is put in
/// `slot`; from then on requests go to it.
pub fn loading_gate(slot: Arc<std::sync::OnceLock<Router>>) -> Router {
    use tower::ServiceExt;
    Router::new().fallback(move |req: Request| {
        let slot = slot.clone();
        async move {
            match slot.get() {
                Some(app) => app.clone().oneshot(req).await.into_response(),
                None => ApiError::loading().into_response(),
            }
        }
    })
}

/// Loads the model and starts the batcher; the returned state serves requests.
pub fn start(model: &str, tp: usize, queue_capacity: usize, cfg: inference::EngineConfig) -> anyhow::Result<AppState> {
    let engine = inference::load_engine(model, tp, cfg)?;
    let name = std::path::Path::new(model).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let metrics = Arc::new(metrics::Metrics::default());
    Ok(AppState { scheduler: Scheduler::start(engine, name, queue_capacity, metrics) })
}
