//! What serving refuses or fails with, in domain terms: the API layer maps each variant to
//! an HTTP status and OpenAI's error body (`crate::api::error`).

use inference::EngineError;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ServeError {
    /// A request field is wrong; `message` names the limit. `code` is OpenAI's error code
    /// where there is one (`model_not_found`, `context_length_exceeded`).
    #[error("{message}")]
    Invalid { param: String, message: String, code: Option<&'static str> },
    /// A template version's field or a call's variables are wrong (as the store and the
    /// template API name them: `variables.review`).
    #[error("{0}")]
    Field(api_types::template::FieldError),
    /// The bounded queue is full: retry shortly.
    #[error("the request queue is full ({capacity} waiting); retry shortly")]
    QueueFull { capacity: usize },
    /// The batcher thread is gone.
    #[error("the batcher has stopped")]
    Stopped,
    /// The engine failed (a step, the tokenizer): the server's fault.
    #[error("{0}")]
    Internal(String),
}

impl ServeError {
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self::Invalid { param: param.to_string(), message: message.into(), code: None }
    }

    pub fn with_code(self, code: &'static str) -> Self {
        match self {
            Self::Invalid { param, message, .. } => Self::Invalid { param, message, code: Some(code) },
            other => other,
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<EngineError> for ServeError {
    fn from(e: EngineError) -> Self {
        use inference::EngineError as E;
        match &e {
            E::PromptTooLong { .. } | E::EmptyPrompt => ServeError::invalid("prompt", e.to_string()),
            E::KvBudget { .. } => ServeError::invalid("max_tokens", e.to_string()),
            E::Sampling(inner) => {
                let field = match inner {
                    inference::sampling::SamplingError::OutOfRange { field, .. } => *field,
                };
                ServeError::invalid(field, e.to_string())
            }
            E::UnknownModel(_) => ServeError::invalid("model", e.to_string()).with_code("model_not_found"),
            _ => ServeError::internal(e),
        }
    }
}
