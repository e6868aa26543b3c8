//! A small thread pool for the batched matmul, built for a few cores shared with other
//! work (the server's runtime, other processes).
//!
//! candle's barrier pool makes the caller wait until every worker has checked in, so one
//! descheduled worker stalls each of the hundreds of matmuls in a decode step. Here work
//! is claimed in chunks from a shared cursor and the caller only waits for chunks that a
//! worker actually claimed: a worker that wakes late finds nothing left and never touches
//! the caller's closure.
//!
//! On a machine busier than this pool knows (another process on one of its cores), a
//! worker can be preempted inside a chunk it claimed, and the caller then waits for the
//! scheduler to run it again. When a caller waits that long after its own share, the
//! pool works on the caller alone for a while ([`SOLO`]) and then tries again, so an
//! oversubscribed machine costs a share of the speed, not most of it.
//!
//! Every kernel's numerics are independent of which thread runs which chunk, so the
//! results are the same bits either way.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks: longer than the gap between two
/// matmuls of a step, shorter than the gap between steps of an idle server.
const SPIN: Duration = Duration::from_micros(200);

/// How long the pool runs jobs on the caller alone after a straggling worker.
const SOLO: Duration = Duration::from_millis(50);

/// A caller that waited longer than this (plus half its own time) after its own share
/// was held up by a preempted worker, not by a chunk still running.
const STRAGGLE: Duration = Duration::from_micros(300);

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
    /// When the pool was made: the origin of `solo_until`.
    epoch: Instant,
    /// Microseconds after `epoch` until which callers work alone ([`SOLO`]).
    solo_until: AtomicU64,
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
        Self { shared, workers, busy: Mutex::new(()), epoch: Instant::now(), solo_until: AtomicU64::new(0) }
    }

    /// Threads that share a job: the workers and the caller.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `work` over `0..n_items` in chunks of `chunk`, on this thread and the workers.
    pub fn run(&self, n_items: usize, chunk: usize, work: &(dyn Fn(Range<usize>) + Sync)) {
        let now_us = self.epoch.elapsed().as_micros() as u64;
        let guard = if self.workers.is_empty() || n_items <= chunk || now_us < self.solo_until.load(Ordering::Relaxed) {
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
        let started = Instant::now();
        job.run();
        let own = started.elapsed();
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
        let waited = started.elapsed() - own;
        if waited > STRAGGLE + own / 2 {
            let until = self.epoch.elapsed() + SOLO;
            self.solo_until.store(until.as_micros() as u64, Ordering::Relaxed);
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

/// Most threads the pool runs (a bound on `STUDIO_THREADS` and on what the OS reports).
const MAX_THREADS: usize = 256;

/// The process-wide pool: one worker per CPU this process may use ([`cpu_budget`]),
/// minus the caller.
pub fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        single_threaded_rayon();
        Pool::new(cpu_budget().saturating_sub(1))
    })
}

/// The candle ops left on the CPU path (a norm over more than 32 rows) run on rayon's
/// global pool: one thread, so that no second pool's workers spin against this one's.
pub fn single_threaded_rayon() {
    // An error means the global pool already exists (another caller made it): nothing to do.
    let _ = rayon::ThreadPoolBuilder::new().num_threads(1).thread_name(|_| "candle-ops".into()).build_global();
}

/// The CPUs this process may keep busy: `STUDIO_THREADS` when set (1 to 256), else the
/// CPUs of its affinity mask (`sched_getaffinity`), capped by its cgroup v2 `cpu.max`
/// quota (rounded up) anywhere on its cgroup's path.
pub fn cpu_budget() -> usize {
    if let Some(n) = std::env::var("STUDIO_THREADS").ok().and_then(|v| v.trim().parse::<usize>().ok()) {
        if n > 0 {
            return n.min(MAX_THREADS);
        }
    }
    let cpus = affinity_cpus().or_else(|| std::thread::available_parallelism().ok().map(usize::from)).unwrap_or(1);
    cpus.min(cgroup_quota_cpus().unwrap_or(usize::MAX)).clamp(1, MAX_THREADS)
}

/// CPUs in this thread's affinity mask.
fn affinity_cpus() -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `set` is a plain bit set that `sched_getaffinity` fills (its size given),
        // for the calling thread (pid 0); `CPU_COUNT` only reads it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
                return usize::try_from(libc::CPU_COUNT(&set)).ok().filter(|&n| n > 0);
            }
        }
    }
    None
}

/// The tightest cgroup v2 `cpu.max` quota on this process's cgroup path, in CPUs.
fn cgroup_quota_cpus() -> Option<usize> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    // cgroup v2: the single line `0::/path`.
    let path = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?.trim();
    let mut dir = std::path::PathBuf::from("/sys/fs/cgroup");
    let mut best: Option<usize> = None;
    let mut visit = |dir: &std::path::Path| {
        if let Some(n) = std::fs::read_to_string(dir.join("cpu.max")).ok().as_deref().and_then(quota_cpus) {
            best = Some(best.map_or(n, |b| b.min(n)));
        }
    };
    visit(&dir);
    // The path is the process's own cgroup file: a bounded number of components.
    for part in path.split('/').filter(|p| !p.is_empty()).take(64) {
        dir.push(part);
        visit(&dir);
    }
    best
}

/// A `cpu.max` line (`"<quota> <period>"` or `"max <period>"`) in CPUs, rounded up.
fn quota_cpus(cpu_max: &str) -> Option<usize> {
    let mut it = cpu_max.split_whitespace();
    let (quota, period) = (it.next()?, it.next().unwrap_or("100000"));
    let (quota, period) = (quota.parse::<u64>().ok()?, period.parse::<u64>().ok().filter(|&p| p > 0)?);
    usize::try_from(quota.div_ceil(period).max(1)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn cgroup_quotas_round_up_and_max_means_none() {
        assert_eq!(quota_cpus("max 100000\n"), None);
        assert_eq!(quota_cpus("200000 100000\n"), Some(2));
        assert_eq!(quota_cpus("150000 100000"), Some(2));
        assert_eq!(quota_cpus("50000 100000"), Some(1));
        assert_eq!(quota_cpus("100000 0"), None);
        assert_eq!(quota_cpus(""), None);
        // The budget is at least one CPU and at most what the affinity mask allows.
        let n = cpu_budget();
        assert!((1..=MAX_THREADS).contains(&n));
        if std::env::var_os("STUDIO_THREADS").is_none() {
            assert!(n <= affinity_cpus().unwrap_or(MAX_THREADS));
        }
    }

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
