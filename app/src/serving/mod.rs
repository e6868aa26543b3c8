//! Serving, with no HTTP in it: the batcher thread that owns the engine, request
//! priorities, validation of generation requests into what the engine runs, and the
//! Prometheus metrics.

pub(crate) mod batcher;
pub mod chat;
mod error;
pub mod metrics;
pub mod tokens;
pub mod validate;

pub use batcher::{Health, Priority, Scheduler, SeqEvent};

/// The body of `/ready`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Readiness {
    /// The model is loaded and the batcher runs.
    pub ready: bool,
    pub model: String,
    /// Panics the batcher caught (it then failed that step's sequences and started over
    /// with a fresh engine state).
    pub batcher_restarts: u64,
    pub last_failure: Option<String>,
}
pub use error::ServeError;
pub use validate::{compile_constraint, RequestOptions, ValidRequest};

tokio::task_local! {
    /// The priority of the request being handled on this task: `Api` unless the batch
    /// worker runs a line through the endpoints ([`with_priority`]).
    static PRIORITY: Priority;
}

/// Runs `f` (a request through the endpoints) with its sequences at `priority`.
pub async fn with_priority<F: std::future::Future>(priority: Priority, f: F) -> F::Output {
    PRIORITY.scope(priority, f).await
}

/// The priority for sequences submitted from this task.
pub fn current_priority() -> Priority {
    PRIORITY.try_with(|p| *p).unwrap_or(Priority::Api)
}
