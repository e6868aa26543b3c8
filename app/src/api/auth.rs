//! API keys: when at least one active key exists, `/v1/*` and `/api/*` need
//! `Authorization: Bearer <key>`. Checked before routing, so a caller without a key learns
//! nothing (not even whether a template exists).

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Extension;

use crate::api::error::ApiError;
use crate::AppState;

/// Who is calling: the API key's name, or `local` when no keys are configured.
#[derive(Debug, Clone)]
pub struct Caller(pub String);

pub fn caller(c: Option<Extension<Caller>>) -> String {
    c.map(|Extension(Caller(n))| n).unwrap_or_else(|| "local".into())
}

fn protected(path: &str) -> bool {
    path.starts_with("/v1/") || path == "/v1" || path.starts_with("/api/") || path == "/api"
}

pub async fn require_key(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    if !protected(req.uri().path()) {
        return next.run(req).await;
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(|k| k.trim().to_string());
    let caller = match bearer {
        Some(key) => match state.store.verify_key(&key).await {
            Ok(Some(name)) => Some(name),
            Ok(None) => None,
            Err(e) => return ApiError::from(e).into_response(),
        },
        None => None,
    };
    let name = match caller {
        Some(name) => name,
        None => match state.store.active_key_count().await {
            Ok(0) => "local".to_string(),
            Ok(_) => return ApiError::unauthorized().into_response(),
            Err(e) => return ApiError::from(e).into_response(),
        },
    };
    req.extensions_mut().insert(Caller(name));
    next.run(req).await
}
