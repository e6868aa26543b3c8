//! The batcher: one thread owns the engine (and so the model's rank threads) and runs
//! continuous batching. Handlers submit validated requests through a bounded queue and get
//! a stream of events back; a closed stream (client gone) or a passed deadline cancels the
//! sequence and frees its KV cache within one step.
//!
//! The queue holds requests, not sequences: a request's sequences (prompts × n) are one
//! group, counted once against the capacity and admitted to the engine together, in one
//! admission pass, once there is room for all of them under the engine's `max_running`.
//! A group that could never be admitted (more sequences than `max_running`, or more KV
//! than the budget holds) is refused at submission (400), never queued.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use inference::{Engine, Event, FinishReason, GenerateRequest, SampledToken, SeqId, Tokenizer};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::serving::metrics::Metrics;
use crate::serving::ServeError;

/// API traffic is admitted before studio/eval sweeps, and takes each step's budget first.
pub use inference::Priority;

#[derive(Debug, Clone)]
pub enum SeqEvent {
    /// The prompt is being read: `done` of `total` prompt tokens so far (long prompts
    /// prefill over several steps).
    Prefill {
        done: usize,
        total: usize,
    },
    Token {
        token: SampledToken,
        text: String,
    },
    Finished {
        reason: FinishReason,
        text: String,
        prompt_tokens: usize,
        cached_tokens: usize,
        generated_tokens: usize,
    },
    /// The engine refused the sequence (e.g. over the KV budget) or a step failed.
    Failed(ServeError),
}

/// One request: its sequences, admitted together.
struct Submission {
    seqs: Vec<(GenerateRequest, UnboundedSender<SeqEvent>)>,
    deadline: Option<Instant>,
    submitted: Instant,
}

enum Msg {
    Submit(Submission, Priority),
    /// Tests: panic inside the next step, as a bug would.
    #[cfg(feature = "fault-injection")]
    PanicNextStep,
    /// Tests: make a tensor-parallel rank fail inside the next forward pass.
    #[cfg(feature = "fault-injection")]
    RankFault(usize, inference::Fault),
}

/// Whether the batcher is serving, for `/health` and `/ready`: the thread sets `alive`
/// while it runs, and counts the times it caught a panic and started over.
#[derive(Debug, Default)]
pub struct Health {
    alive: AtomicBool,
    restarts: AtomicU64,
    last_failure: Mutex<Option<String>>,
}

impl Health {
    pub fn alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }
    /// Panics caught (the batcher then restarted with a fresh engine state).
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::SeqCst)
    }
    /// What the last caught panic said.
    pub fn last_failure(&self) -> Option<String> {
        self.last_failure.lock().expect("health lock").clone()
    }
}

/// Marks the batcher dead when its thread ends, however it ends.
struct AliveWhileRunning(Arc<Health>);

impl Drop for AliveWhileRunning {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::SeqCst);
    }
}

struct Live {
    events: UnboundedSender<SeqEvent>,
    deadline: Option<Instant>,
    submitted: Instant,
    last_token: Option<Instant>,
}

/// What handlers hold: a way to submit, and what they need to validate requests.
#[derive(Clone)]
pub struct Scheduler {
    tx: Sender<Msg>,
    /// Requests (groups) submitted and not yet admitted.
    queued: Arc<AtomicUsize>,
    /// Most requests waiting for admission (`--queue`); one more gets 429.
    pub capacity: usize,
    /// Most sequences running together (the engine's `max_running`): a request's
    /// sequences must fit in it at once.
    pub max_running: usize,
    /// The engine's KV budget in positions, shared by running sequences (None: unlimited).
    pub kv_budget_tokens: Option<usize>,
    pub tokenizer: Arc<Tokenizer>,
    /// Compiles output constraints for the model's vocabulary (on the validating thread).
    pub constraints: Arc<inference::Constraints>,
    pub model_name: String,
    pub context_length: usize,
    /// Tensor-parallel degree the model runs at (recorded with eval runs).
    pub tp: usize,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
}

impl Scheduler {
    /// Moves `engine` onto its own thread and starts the batching loop.
    pub fn start(engine: Engine, model_name: String, capacity: usize, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let tokenizer = engine.tokenizer().clone();
        let constraints = engine.constraints().clone();
        let context_length = engine.context_length();
        let tp = engine.model().tp;
        let max_running = engine.max_running();
        let kv_budget_tokens = engine.kv_budget_tokens();
        let (q, m) = (queued.clone(), metrics.clone());
        let health = Arc::new(Health::default());
        health.alive.store(true, Ordering::SeqCst);
        let h = health.clone();
        std::thread::Builder::new()
            .name("batcher".into())
            .spawn(move || batch_loop(engine, rx, q, m, h))
            .expect("spawn batcher thread");
        Self {
            tx,
            queued,
            capacity,
            max_running,
            kv_budget_tokens,
            tokenizer,
            constraints,
            model_name,
            context_length,
            tp,
            metrics,
            health,
        }
    }

    /// Makes the batcher panic inside its next step (tests of the recovery).
    #[cfg(feature = "fault-injection")]
    pub fn inject_panic(&self) {
        let _ = self.tx.send(Msg::PanicNextStep);
    }

    /// Makes rank `rank` fail (error or panic) inside the next forward pass.
    #[cfg(feature = "fault-injection")]
    pub fn inject_rank_fault(&self, rank: usize, kind: inference::Fault) {
        let _ = self.tx.send(Msg::RankFault(rank, kind));
    }

    /// Refuses a group that could never be admitted: empty, more sequences than run
    /// together, or more KV positions (prompt + max_tokens, or prompt + forced tokens, per
    /// sequence) than the budget holds. Validation names the request's own fields first;
    /// this is the batcher's own guarantee that every queued group fits.
    pub fn check_group(&self, reqs: &[GenerateRequest]) -> Result<(), ServeError> {
        if reqs.is_empty() {
            return Err(ServeError::invalid("prompt", "prompt: at least one prompt is required"));
        }
        if reqs.len() > self.max_running {
            return Err(ServeError::invalid(
                "n",
                format!(
                    "the request is {} sequences; at most {} run together on this server",
                    reqs.len(),
                    self.max_running
                ),
            ));
        }
        if let Some(limit) = self.kv_budget_tokens {
            let total: usize = reqs.iter().map(kv_reserve).sum();
            if total > limit {
                return Err(ServeError::invalid(
                    "max_tokens",
                    format!("the request reserves {total} KV positions; the KV cache budget holds {limit}"),
                ));
            }
        }
        Ok(())
    }

    /// Queues one request's sequences as one group (one place in the queue, admitted
    /// together); one receiver per sequence, in order. Refuses with 429 when `capacity`
    /// requests already wait, and with 400 when the group could never be admitted
    /// ([`Self::check_group`]).
    pub fn submit_group(
        &self,
        reqs: Vec<GenerateRequest>,
        priority: Priority,
        deadline: Option<Instant>,
    ) -> Result<Vec<UnboundedReceiver<SeqEvent>>, ServeError> {
        self.check_group(&reqs)?;
        let prev = self.queued.fetch_add(1, Ordering::SeqCst);
        if prev >= self.capacity {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(ServeError::QueueFull { capacity: self.capacity });
        }
        self.metrics.queue_depth.store((prev + 1) as u64, Ordering::Relaxed);
        let (seqs, receivers): (Vec<_>, Vec<_>) = reqs
            .into_iter()
            .map(|req| {
                let (events, rx) = unbounded_channel();
                ((req, events), rx)
            })
            .unzip();
        let sub = Submission { seqs, deadline, submitted: Instant::now() };
        if self.tx.send(Msg::Submit(sub, priority)).is_err() {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(ServeError::Stopped);
        }
        Ok(receivers)
    }

    /// Queues a single sequence (a group of one).
    pub fn submit(
        &self,
        req: GenerateRequest,
        priority: Priority,
        deadline: Option<Instant>,
    ) -> Result<UnboundedReceiver<SeqEvent>, ServeError> {
        let mut rx = self.submit_group(vec![req], priority, deadline)?;
        rx.pop().ok_or(ServeError::Stopped)
    }
}

/// KV positions a sequence reserves while it runs (as `Engine::add` and `step` count them).
pub fn kv_reserve(req: &GenerateRequest) -> usize {
    let extra = if req.forced.is_empty() { req.max_tokens } else { req.forced.len() };
    req.prompt_tokens.len() + extra
}

/// What arrived on the channel, sorted: submissions by priority, test faults.
#[derive(Default)]
struct Inbox {
    pending: [VecDeque<Submission>; 2],
    panic_next_step: bool,
    #[cfg(feature = "fault-injection")]
    rank_faults: Vec<(usize, inference::Fault)>,
}

impl Inbox {
    fn take(&mut self, msg: Msg) {
        match msg {
            Msg::Submit(s, p) => self.pending[p as usize].push_back(s),
            #[cfg(feature = "fault-injection")]
            Msg::PanicNextStep => self.panic_next_step = true,
            #[cfg(feature = "fault-injection")]
            Msg::RankFault(rank, kind) => self.rank_faults.push((rank, kind)),
        }
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

fn batch_loop(
    mut engine: Engine,
    rx: Receiver<Msg>,
    queued: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) {
    let _alive = AliveWhileRunning(health.clone());
    let mut inbox = Inbox::default();
    let mut live: HashMap<SeqId, Live> = HashMap::new();
    let max_running = engine.max_running();
    loop {
        // Idle: block for work. Busy: take whatever arrived, without waiting.
        if !engine.has_work() && inbox.pending.iter().all(VecDeque::is_empty) {
            match rx.recv() {
                Ok(msg) => inbox.take(msg),
                Err(_) => return,
            }
        }
        while let Ok(msg) = rx.try_recv() {
            inbox.take(msg);
        }
        #[cfg(feature = "fault-injection")]
        for (rank, kind) in inbox.rank_faults.drain(..) {
            engine.inject_fault(rank, kind);
        }
        let pending = &mut inbox.pending;

        // Admit between steps, API traffic first, a request's sequences together: the group
        // at the front waits (and so does everything behind it) until all of it fits under
        // `max_running`; `submit_group` guarantees it can. API work counts only itself: the
        // engine makes room for it by pausing batch work. The engine's step budget decides
        // how much of it prefills in the next step.
        while let Some(p) = pending.iter().position(|q| !q.is_empty()) {
            let priority = if p == 0 { Priority::Api } else { Priority::Batch };
            let front = &mut pending[p][0];
            front.seqs.retain(|(_, events)| !events.is_closed());
            let taken = match priority {
                Priority::Api => engine.num_live(Priority::Api),
                Priority::Batch => engine.num_running() + engine.num_waiting(),
            };
            if !front.seqs.is_empty() && taken + front.seqs.len() > max_running {
                break;
            }
            let Some(sub) = pending[p].pop_front() else { break };
            queued.fetch_sub(1, Ordering::SeqCst);
            for (req, events) in sub.seqs {
                match engine.add_with(req, priority) {
                    Ok(id) => {
                        let l = Live { events, deadline: sub.deadline, submitted: sub.submitted, last_token: None };
                        live.insert(id, l);
                    }
                    Err(e) => {
                        let _ = events.send(SeqEvent::Failed(ServeError::from(e)));
                    }
                }
            }
        }

        // Clients that went away, or ran out of time, leave the batch now.
        let now = Instant::now();
        let gone: Vec<SeqId> = live
            .iter()
            .filter(|(_, l)| l.events.is_closed() || l.deadline.is_some_and(|d| now >= d))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(l) = live.remove(&id) {
                engine.cancel(id);
                metrics.cancelled.fetch_add(1, Ordering::Relaxed);
                let _ = l.events.send(SeqEvent::Finished {
                    reason: FinishReason::Cancelled,
                    text: String::new(),
                    prompt_tokens: 0,
                    cached_tokens: 0,
                    generated_tokens: 0,
                });
            }
        }
        let waiting: usize = pending.iter().map(VecDeque::len).sum::<usize>() + engine.num_waiting();
        metrics.queue_depth.store(waiting as u64, Ordering::Relaxed);

        if engine.has_work() {
            let inject = std::mem::take(&mut inbox.panic_next_step);
            // A bug that panics inside a step must not take serving down with it: the
            // step's sequences fail, the engine starts over from a fresh state.
            let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if inject {
                    panic!("injected batcher panic");
                }
                engine.step()
            }));
            match stepped {
                Ok(Ok(events)) => route(events, &mut live, &metrics),
                Ok(Err(e)) => {
                    // The engine dropped the step's sequences and goes on with the rest.
                    tracing::error!("engine step failed for {} sequence(s): {}", e.failed.len(), e.source);
                    for id in &e.failed {
                        if let Some(l) = live.remove(id) {
                            let _ = l.events.send(SeqEvent::Failed(ServeError::internal(&e.source)));
                        }
                    }
                }
                Err(panic) => {
                    let why = panic_text(&*panic);
                    tracing::error!("the batcher caught a panic and restarts with a fresh engine state: {why}");
                    engine.reset();
                    let err = ServeError::Internal(format!("the server hit an internal error and restarted: {why}"));
                    // Counted before anyone hears of the failure, so /ready already shows it.
                    health.restarts.fetch_add(1, Ordering::SeqCst);
                    *health.last_failure.lock().expect("health lock") = Some(why);
                    for (_, l) in live.drain() {
                        let _ = l.events.send(SeqEvent::Failed(err.clone()));
                    }
                }
            }
            metrics.prompt_tokens.fetch_add(engine.last_step.prefill_tokens as u64, Ordering::Relaxed);
        }
        metrics.running.store(engine.num_running() as u64, Ordering::Relaxed);
        metrics.kv_cache_tokens.store(engine.cached_tokens() as u64, Ordering::Relaxed);
        metrics.prefix_cache_tokens.store(engine.prefix_cache_tokens() as u64, Ordering::Relaxed);
    }
}

fn route(events: Vec<Event>, live: &mut HashMap<SeqId, Live>, metrics: &Metrics) {
    let now = Instant::now();
    for ev in events {
        match ev {
            Event::Prefill { seq, done, total } => {
                if let Some(l) = live.get(&seq) {
                    let _ = l.events.send(SeqEvent::Prefill { done, total });
                }
            }
            Event::Token { seq, token, text } => {
                if let Some(l) = live.get_mut(&seq) {
                    match l.last_token {
                        None => metrics.ttft.observe((now - l.submitted).as_secs_f64()),
                        Some(t) => metrics.token_latency.observe((now - t).as_secs_f64()),
                    }
                    l.last_token = Some(now);
                    metrics.generated_tokens.fetch_add(1, Ordering::Relaxed);
                    let _ = l.events.send(SeqEvent::Token { token, text });
                }
            }
            Event::Finished { seq, reason, text, prompt_tokens, cached_tokens, generated_tokens } => {
                if let Some(l) = live.remove(&seq) {
                    let _ = l.events.send(SeqEvent::Finished {
                        reason,
                        text,
                        prompt_tokens,
                        cached_tokens,
                        generated_tokens,
                    });
                }
            }
        }
    }
}
