//! The one place errors become HTTP responses, in OpenAI's error shape: every domain
//! error (serving, templates, evals, store) is mapped to a status and a body here, and so
//! is the error event of a stream.

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Extra members of the error object (e.g. both scores of an eval-gate refusal).
    /// Boxed: it is rare, and keeps every `Result<_, ApiError>` small.
    pub details: Option<Box<serde_json::Map<String, serde_json::Value>>>,
}

impl ApiError {
    /// A request field is wrong: 400 naming the field (and, in the message, the limit).
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param.to_string()),
            code: None,
            details: None,
        }
    }
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }
    pub fn queue_full(capacity: usize) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!("the request queue is full ({capacity} waiting); retry shortly"),
            kind: "rate_limit_error",
            param: None,
            code: Some("queue_full"),
            details: None,
        }
    }
    pub fn status(status: StatusCode, message: impl Into<String>) -> Self {
        let kind = if status.is_server_error() { "server_error" } else { "invalid_request_error" };
        Self { status, message: message.into(), kind, param: None, code: None, details: None }
    }
    pub fn loading() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the model is still loading; retry shortly".into(),
            kind: "server_error",
            param: None,
            code: Some("model_loading"),
            details: None,
        }
    }
    /// Well-formed but semantically wrong (a template field, a missing variable): 422.
    pub fn unprocessable(param: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param.to_string()),
            code: None,
            details: None,
        }
    }
    /// Missing or wrong API key. Says nothing about what the request asked for.
    pub fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            message:
                "a valid API key is required: send 'Authorization: Bearer <key>' (create one with `studio keys create`)"
                    .into(),
            kind: "authentication_error",
            param: None,
            code: Some("invalid_api_key"),
            details: None,
        }
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::status(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl ApiError {
    /// OpenAI's error body: `{"error": {message, type, param, code, ...details}}`. Also the
    /// data of a stream's error event.
    pub fn body(&self) -> serde_json::Value {
        let mut error = json!({ "message": self.message, "type": self.kind, "param": self.param, "code": self.code });
        if let (Some(obj), Some(details)) = (error.as_object_mut(), self.details.clone()) {
            obj.extend(*details);
        }
        json!({ "error": error })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(self.body())).into_response();
        if matches!(self.status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<crate::serving::ServeError> for ApiError {
    fn from(e: crate::serving::ServeError) -> Self {
        use crate::serving::ServeError as E;
        match e {
            E::Invalid { param, message, code } => {
                let mut err = ApiError::invalid(&param, message);
                if code == Some("model_not_found") {
                    // As OpenAI answers it (the SDK's `NotFoundError`).
                    err.status = StatusCode::NOT_FOUND;
                }
                err.code = code;
                err
            }
            E::Field(fe) => ApiError::from(fe),
            E::QueueFull { capacity } => ApiError::queue_full(capacity),
            e @ (E::Stopped | E::Internal(_)) => ApiError::internal(e.to_string()),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match e {
            StoreError::NotFound(m) => ApiError::status(StatusCode::NOT_FOUND, m).with_code("not_found"),
            StoreError::Conflict(m) => ApiError::status(StatusCode::CONFLICT, m).with_code("conflict"),
            StoreError::Invalid(fe) => ApiError::from(fe),
            other => {
                tracing::error!("store: {other}");
                ApiError::internal(other.to_string())
            }
        }
    }
}

impl From<crate::templates::FieldError> for ApiError {
    fn from(fe: crate::templates::FieldError) -> Self {
        ApiError::unprocessable(&fe.field, fe.to_string())
    }
}

impl From<crate::evals::EvalError> for ApiError {
    fn from(e: crate::evals::EvalError) -> Self {
        use crate::evals::EvalError;
        match e {
            EvalError::Invalid(fe) => ApiError::from(fe),
            EvalError::Store(se) => ApiError::from(se),
            EvalError::Model(e) => ApiError::from(e),
            EvalError::DifferentTestSets(m) => {
                ApiError::status(StatusCode::CONFLICT, m).with_code("different_test_sets")
            }
            EvalError::Gate { message, candidate, production } => {
                let mut e = ApiError::status(StatusCode::CONFLICT, message).with_code("eval_gate");
                e.param = Some("version".into());
                let mut details = serde_json::Map::new();
                details.insert("candidate".into(), candidate);
                details.insert("production".into(), production);
                e.details = Some(Box::new(details));
                e
            }
        }
    }
}

impl From<crate::batches::BatchError> for ApiError {
    fn from(e: crate::batches::BatchError) -> Self {
        use crate::batches::BatchError;
        match e {
            BatchError::Invalid { param, message } => ApiError::invalid(&param, message),
            BatchError::Columns { param, message } => ApiError::unprocessable(&param, message),
            BatchError::NotFound(m) => ApiError::status(StatusCode::NOT_FOUND, m).with_code("not_found"),
            BatchError::Conflict(m) => ApiError::status(StatusCode::CONFLICT, m).with_code("conflict"),
            BatchError::Store(se) => ApiError::from(se),
        }
    }
}

/// Largest error body read back to be rewritten (axum's rejections are a line of text).
const MAX_REWRITTEN_BODY: usize = 64 * 1024;

/// Middleware: every error response that is not JSON yet becomes OpenAI's error body:
/// axum's path and query rejections (plain text: `Invalid URL: Cannot parse "abc"`),
/// 405s (empty; the `Allow` header is kept) and unknown routes. The studio's own HTML
/// pages keep their shape outside `/v1/` and `/api/`.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let content_type = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let api = path == "/v1" || path.starts_with("/v1/") || path.starts_with("/api/");
    if content_type.starts_with("application/json") || (content_type.starts_with("text/html") && !api) {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, MAX_REWRITTEN_BODY)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let mut err = ApiError::status(status, text.clone());
    match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            let allow = parts.headers.get(header::ALLOW).and_then(|v| v.to_str().ok()).unwrap_or("");
            err.message = format!("method {method} is not allowed on {path}; allowed: {allow}");
            err.code = Some("method_not_allowed");
        }
        StatusCode::NOT_FOUND if text.is_empty() || content_type.starts_with("text/html") => {
            err.message = format!("no such endpoint: {method} {path}");
            err.code = Some("unknown_url");
        }
        _ if text.starts_with("Invalid URL") || text.starts_with("Wrong number of path arguments") => {
            err.param = Some("path".into());
        }
        _ if text.starts_with("Failed to deserialize query string") => err.param = Some("query".into()),
        _ if text.is_empty() => err.message = status.canonical_reason().unwrap_or("error").to_string(),
        _ => {}
    }
    let mut out = err.into_response();
    for (name, value) in &parts.headers {
        if *name != header::CONTENT_TYPE && *name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}
