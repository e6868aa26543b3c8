//! A small thread pool for the batched matmul, built for a few cores shared with other
//! work (the server's runtime, other processes).
//!
//! candle's barrier pool makes the caller wait until every worker has checked in, so one
//! descheduled worker stalls each of the hundreds of matmuls in a decode step. Here work
//! is claimed in chunks from a shared cursor and the caller only waits for chunks that a
//! worker actually claimed: a worker that wakes late finds nothing left and never touches
//! the caller's closure.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks: longer than the gap between two
/// matmuls of a step, shorter than the gap between steps of an idle server.
const SPIN: Duration = Duration::from_micros(200);

type Work = dyn Fn(Range<usize>) + Sync;

struct Job {
    /// Only dereferenced after claiming a chunk, and the caller waits for every claimed
    /// chunk, so the closure outlives every use (the lifetime is erased here).
    work: *const Work,
    n_items: usize,
    chunk: usize,
    next: AtomicUsize,
    done: AtomicUsize,
    /// The first panic of a chunk, re-raised on the caller once every chunk is done: a
    /// panicking chunk must still count as done, or the caller would wait forever (and
    /// unwinding past a closure that workers still run would free it under them).
    panic: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

// SAFETY: the only non-`Send` field is `work`, a pointer to a `Sync` closure, which a
// worker only calls while the caller waits for it (see the field); the rest are atomics
// and plain numbers.
unsafe impl Send for Job {}
// SAFETY: as for `Send`: shared, a job only calls its `Sync` closure and updates atomics.
unsafe impl Sync for Job {}

impl Job {
    /// Claims and runs chunks until none are left.
    fn run(&self) {
        loop {
            let start = self.next.fetch_add(self.chunk, Ordering::Relaxed);
            if start >= self.n_items {
                return;
            }
            let end = self.n_items.min(start + self.chunk);
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                // SAFETY: this thread claimed `start..end`, and `Pool::run` does not return (so
                // the closure stays alive) until `done` counts every claimed item, this chunk's
                // included, even when it panics; the closure is `Sync`, so calling it from here
                // is allowed.
                unsafe { (*self.work)(start..end) }
            }));
            if let Err(payload) = ran {
                self.panic.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get_or_insert(payload);
            }
            self.done.fetch_add(end - start, Ordering::Release);
        }
    }
}

struct Shared {
    job: Mutex<Option<Arc<Job>>>,
    generation: AtomicUsize,
}

pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<Thread>,
    /// One job at a time; a caller that finds the pool busy (another TP rank) works alone.
    busy: Mutex<()>,
}

impl Pool {
    fn new(workers: usize) -> Self {
        let shared = Arc::new(Shared { job: Mutex::new(None), generation: AtomicUsize::new(0) });
        let workers = (0..workers)
            .map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("matmul-{i}"))
                    .spawn(move || worker(&shared))
                    .expect("spawn a matmul worker")
                    .thread()
                    .clone()
            })
            .collect();
        Self { shared, workers, busy: Mutex::new(()) }
    }

    /// Threads that share a job: the workers and the caller.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `work` over `0..n_items` in chunks of `chunk`, on this thread and the workers.
    pub fn run(&self, n_items: usize, chunk: usize, work: &(dyn Fn(Range<usize>) + Sync)) {
        let guard = if self.workers.is_empty() || n_items <= chunk {
            None
        } else {
            match self.busy.try_lock() {
                Ok(g) => Some(g),
                // A job that panicked (re-raised below) poisons the lock; the pool is fine.
                Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            }
        };
        let Some(_guard) = guard else {
            work(0..n_items);
            return;
        };
        // SAFETY: the same fat pointer with its lifetime erased; it is dereferenced only by
        // `Job::run` for a claimed chunk, and this function waits below until every claimed
        // chunk is done, so no use outlives `work`'s borrow.
        let work: *const Work = unsafe { std::mem::transmute::<&(dyn Fn(Range<usize>) + Sync), &'static Work>(work) };
        let job = Arc::new(Job {
            work,
            n_items,
            chunk: chunk.max(1),
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            panic: Mutex::new(None),
        });
        *self.shared.job.lock().expect("pool lock") = Some(job.clone());
        self.shared.generation.fetch_add(1, Ordering::Release);
        for w in &self.workers {
            w.unpark();
        }
        job.run();
        let mut spins = 0u32;
        while job.done.load(Ordering::Acquire) < n_items {
            spins += 1;
            if spins < 1 << 12 {
                std::hint::spin_loop();
            } else {
                // A worker was preempted inside its chunk: let it have the core.
                std::thread::yield_now();
            }
        }
        let panicked = job.panic.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(payload) = panicked {
            std::panic::resume_unwind(payload);
        }
    }
}

fn worker(shared: &Shared) {
    let mut seen = 0;
    loop {
        let idle = Instant::now();
        let mut spins = 0u32;
        loop {
            let g = shared.generation.load(Ordering::Acquire);
            if g != seen {
                seen = g;
                break;
            }
            spins += 1;
            if spins.is_multiple_of(64) && idle.elapsed() > SPIN {
                std::thread::park();
            } else {
                std::hint::spin_loop();
            }
        }
        let job = shared.job.lock().expect("pool lock").clone();
        if let Some(job) = job {
            job.run();
        }
    }
}

/// The process-wide pool: one worker per CPU thread candle would use, minus the caller.
pub fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool::new(candle_core::utils::get_num_threads().saturating_sub(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn a_panicking_chunk_reaches_the_caller_and_the_pool_keeps_working() {
        let pool = Pool::new(2);
        let hits: Vec<AtomicU64> = (0..64).map(|_| AtomicU64::new(0)).collect();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.run(64, 4, &|r: Range<usize>| {
                for i in r {
                    assert_ne!(i, 37, "chunk 37 fails");
                    hits[i].fetch_add(1, Ordering::Relaxed);
                }
            })
        }));
        assert!(caught.is_err(), "the panic is re-raised on the caller");
        // Every other chunk ran once: nobody abandoned the job half way.
        for (i, h) in hits.iter().enumerate().filter(|(i, _)| !(36..40).contains(i)) {
            assert_eq!(h.load(Ordering::Relaxed), 1, "item {i}");
        }
        let again: Vec<AtomicU64> = (0..64).map(|_| AtomicU64::new(0)).collect();
        pool.run(64, 4, &|r: Range<usize>| r.for_each(|i| _ = again[i].fetch_add(1, Ordering::Relaxed)));
        assert!(again.iter().all(|h| h.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn every_item_runs_once_even_from_several_callers() {
        let pool = Pool::new(3);
        std::thread::scope(|s| {
            for caller in 0..4u64 {
                let pool = &pool;
                s.spawn(move || {
                    for round in 0..200u64 {
                        let n = (round as usize * 7 + caller as usize) % 97 + 1;
                        let hits: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
                        pool.run(n, 3, &|r: Range<usize>| {
                            for i in r {
                                hits[i].fetch_add(1, Ordering::Relaxed);
                            }
                        });
                        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "caller {caller} round {round}");
                    }
                });
            }
        });
    }
}
