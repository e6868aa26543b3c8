//! Serving, with no HTTP in it: the batcher thread that owns the engine, request
//! priorities, validation of generation requests into what the engine runs, and the
//! Prometheus metrics.

pub(crate) mod batcher;
pub mod chat;
mod error;
pub mod metrics;
pub mod validate;

pub use batcher::{Priority, Scheduler, SeqEvent};
pub use error::ServeError;
pub use validate::{RequestOptions, ValidRequest};
