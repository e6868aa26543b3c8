//! The error body every endpoint answers with (OpenAI's shape).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `rate_limit_error`, `server_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault (`parameters.temperature`, `variables.리뷰`), if one is.
    pub param: Option<String>,
    pub code: Option<String>,
    /// Members some errors add (both scores of an eval-gate refusal).
    #[serde(flatten)]
    pub details: Map<String, Value>,
}
