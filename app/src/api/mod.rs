//! HTTP only: the router, the one error map, the typed JSON extractor, API keys, and the
//! handlers per area. Everything below `api/` is the only code that knows about axum.

pub mod auth;
pub mod batches;
pub mod cpu;
pub mod error;
pub mod evals;
pub mod json;
pub mod openai;
pub mod template_batches;
pub mod templates;
pub mod ui;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;

use crate::api::error::ApiError;
use crate::AppState;

/// Largest request body accepted (413 beyond).
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// The whole HTTP surface: `/v1/*`, `/api/*`, `/health`, `/metrics`, and the studio's pages.
pub fn app(state: AppState) -> Router {
    use batches as b;
    use evals as e;
    use template_batches as tb;
    use templates as t;
    Router::new()
        .route("/v1/completions", post(openai::completions))
        .route("/v1/templates/{spec}/completions", post(openai::templates::template_completions))
        .route("/v1/templates/{spec}/chat/completions", post(openai::templates::template_chat_completions))
        .route("/api/templates", get(t::list).post(t::create))
        .route("/api/templates/import", post(t::import))
        .route("/api/templates/{name}", get(t::get).patch(t::update).put(t::update).delete(t::delete))
        .route("/api/templates/{name}/versions", get(t::versions).post(t::create_version))
        .route(
            "/api/templates/{name}/versions/{version}",
            get(t::get_version).put(t::version_immutable).patch(t::version_immutable).delete(t::version_immutable),
        )
        .route("/api/templates/{name}/diff", get(t::diff))
        .route("/api/templates/{name}/footprint", get(t::footprint))
        .route("/api/templates/{name}/labels", get(t::labels))
        .route("/api/templates/{name}/labels/{label}", put(t::set_label).delete(t::delete_label))
        .route("/api/templates/{name}/render", post(t::render))
        .route("/api/templates/{name}/runs", get(t::runs))
        .route("/api/templates/{name}/export", get(t::export))
        .route("/api/render", post(t::render_draft))
        .route("/api/draft/completions", post(openai::templates::draft_completions))
        .route("/api/templates/{name}/tests", get(e::list_tests).post(e::import_tests).delete(e::delete_tests))
        .route("/api/templates/{name}/tests/export", get(e::export_tests))
        .route("/api/templates/{name}/tests/{id}", put(e::update_test).delete(e::delete_test))
        .route("/api/templates/{name}/evals", get(e::template_evals))
        .route("/api/templates/{name}/select-examples", post(e::select_examples))
        .route(
            "/api/templates/{name}/batches",
            get(tb::list).post(tb::create).layer(DefaultBodyLimit::max(tb::MAX_DATASET_REQUEST_BYTES)),
        )
        .route(
            "/api/templates/{name}/batches/check",
            post(tb::check).layer(DefaultBodyLimit::max(tb::MAX_DATASET_REQUEST_BYTES)),
        )
        .route("/api/batches/{id}/results.csv", get(tb::results_csv))
        .route("/api/evals", post(e::create_eval))
        .route("/api/evals/{id}", get(e::get_eval))
        .route("/api/evals/{id}/cancel", post(e::cancel_eval))
        .route("/api/evals/{a}/compare/{b}", get(e::compare))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/models", get(openai::models))
        .route(
            "/v1/files",
            get(b::list_files)
                .post(b::upload_file)
                .layer(DefaultBodyLimit::max(crate::batches::MAX_FILE_BYTES + 64 * 1024)),
        )
        .route("/v1/files/{id}", get(b::get_file).delete(b::delete_file))
        .route("/v1/files/{id}/content", get(b::file_content))
        .route("/v1/batches", get(b::list_batches).post(b::create_batch))
        .route("/v1/batches/{id}", get(b::get_batch))
        .route("/v1/batches/{id}/cancel", post(b::cancel_batch))
        .route("/v1/models/{*id}", get(openai::model))
        .route("/v1/tokenize", post(openai::tokenize))
        .route("/v1/detokenize", post(openai::detokenize))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .fallback_service(ui::router(&ui::site_dir(), state.store.clone()))
        .layer(middleware::from_fn(crate::api::error::json_errors))
        .layer(middleware::from_fn_with_state(state.clone(), auth::require_key))
        .layer(middleware::from_fn_with_state(state.clone(), count_status))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Liveness: the process serves and its batcher thread runs (a dead batcher cannot come
/// back without a restart, so a probe should fail).
async fn health(State(state): State<AppState>) -> Response {
    if state.scheduler.health.alive() {
        "ok".into_response()
    } else {
        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "the batcher has stopped").into_response()
    }
}

/// Readiness: the model is loaded (before that the loading gate answers 503) and the
/// batcher runs; also how often it caught a panic and started over, and why.
async fn ready(State(state): State<AppState>) -> Response {
    let h = &state.scheduler.health;
    let body = crate::serving::Readiness {
        ready: h.alive(),
        model: state.scheduler.model_name.clone(),
        batcher_restarts: h.restarts(),
        last_failure: h.last_failure(),
    };
    let status = if body.ready { axum::http::StatusCode::OK } else { axum::http::StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(body)).into_response()
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
            // Liveness holds while the model loads (a probe must not kill a slow load).
            if slot.get().is_none() && req.uri().path() == "/health" {
                return "loading".into_response();
            }
            match slot.get() {
                Some(app) => app.clone().oneshot(req).await.into_response(),
                None => ApiError::loading().into_response(),
            }
        }
    })
}

/// Serves `router` on `listener` until `shutdown` resolves (the CLI's one use of axum).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}
