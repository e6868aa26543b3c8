//! Serving, with no HTTP in it: the batcher thread that owns the engine, request
//! priorities, validation of generation requests, and the Prometheus metrics.

mod batcher;
pub mod metrics;

pub use batcher::{Priority, Scheduler, SeqEvent};
