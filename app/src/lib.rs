//! The studio server: OpenAI-compatible `/v1/*` over the continuous-batching scheduler,
//! the template API under `/api/*`, templates as endpoints, API keys.
//!
//! | module | holds |
//! |---|---|
//! | [`api`] | HTTP only: router, error map, JSON extractor, auth, handlers |
//! | [`serving`] | the batcher thread that owns the engine, priorities, validation, metrics |
//! | [`templates`] | spec, render, diff, the TOML file format, the shipped library |
//! | [`evals`] | assertions, test sets, runner, gate, example selection |
//! | [`batches`] | batch jobs: input files checked up front, request lines for replicas to claim |
//! | [`store`] | sqlx persistence (SQLite or PostgreSQL), one file per table group |
//! | [`cli`] | the `studio` command line, one file per subcommand |
#![recursion_limit = "256"]

pub mod api;
pub mod batches;
pub mod cli;
pub mod evals;
pub mod serving;
pub mod store;
pub mod templates;

use std::sync::Arc;

pub use api::{app, loading_gate, MAX_BODY_BYTES};
use serving::Scheduler;

/// What every handler gets: the batcher's handle and the database.
#[derive(Clone)]
pub struct AppState {
    pub scheduler: Scheduler,
    pub store: store::Store,
}

/// Loads the model and starts the batcher.
pub fn start(model: &str, tp: usize, queue_capacity: usize, cfg: inference::EngineConfig) -> anyhow::Result<Scheduler> {
    let engine = inference::load_engine(model, tp, cfg)?;
    let name = std::path::Path::new(model).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let metrics = Arc::new(serving::metrics::Metrics::default());
    Ok(Scheduler::start(engine, name, queue_capacity, metrics))
}
