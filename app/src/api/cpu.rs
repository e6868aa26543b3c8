//! CPU-heavy request work off the tokio workers: tokenizing prompts, rendering chat and
//! prompt templates, diffing versions, parsing test sets. Handlers hand such work to
//! [`run`], which runs it on tokio's blocking pool, at most [`CPU_JOBS`] jobs at once.
//!
//! Why a bound over plain `spawn_blocking`: the blocking pool grows to 512 threads, and the
//! engine's own kernel threads need the cores; a burst of 2 MiB bodies would otherwise
//! oversubscribe the machine. Jobs over the bound wait (FIFO, tokio's fair semaphore) on
//! an async permit, which holds no thread; how many can wait is bounded by the open
//! connections. The domain functions stay synchronous and know nothing of this.

use std::sync::LazyLock;

use tokio::sync::Semaphore;

use crate::api::error::ApiError;

/// Most CPU jobs running at once: the machine's parallelism, at most 4.
pub static CPU_JOBS: LazyLock<usize> =
    LazyLock::new(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 4));

static PERMITS: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(*CPU_JOBS));

/// Runs `f` on the blocking pool once a permit is free; its panic is a 500.
pub async fn run<T, F>(f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let _permit = PERMITS.acquire().await.map_err(|e| ApiError::internal(e.to_string()))?;
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::internal(format!("a CPU job failed: {e}")))
}
