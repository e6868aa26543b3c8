//! A loaded model: the tensor-parallel group of rank threads that owns it, each with its
//! shard of the weights and its part of every sequence's KV cache.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use candle_core::{Device, Tensor};

use super::family::{Family, FamilyConfig};
use super::files::ModelFiles;
use crate::error::{EngineError, Result};
use crate::nn::{Chunk, SeqCache, SeqId};
use crate::parallel::{Communicator, Local, Shard, Threads};

enum RankCmd {
    Forward(Arc<Vec<Chunk>>),
    Free(Vec<SeqId>),
    /// Make `dst` a copy of the first `len` cached positions of `src`.
    CopyPrefix {
        src: SeqId,
        dst: SeqId,
        len: usize,
    },
}

/// A rank's answer to one command. A failure says whether this rank failed first (`root`)
/// or only because another rank aborted the step, so the caller reports the cause.
type RankReply = std::result::Result<Option<Vec<Tensor>>, RankFailure>;

struct RankFailure {
    err: EngineError,
    root: bool,
}

impl RankFailure {
    fn root(err: EngineError) -> Self {
        Self { err, root: true }
    }
}

struct Rank {
    tx: Sender<RankCmd>,
    rx: Receiver<RankReply>,
    join: Option<JoinHandle<()>>,
}

/// A model loaded over `tp` ranks, each on its own thread with its own shard and its own
/// part of every sequence's KV cache. The engine talks to it with batches of chunks.
pub struct ShardedModel {
    pub files: ModelFiles,
    pub tp: usize,
    pub load_time: std::time::Duration,
    ranks: Vec<Rank>,
    /// A handle on the group's communicator (rank 0's), to abort a step whose rank is gone
    /// and to reset the group after a failed step.
    control: Arc<dyn Communicator>,
    #[cfg(any(test, feature = "fault-injection"))]
    faults: Vec<Arc<fault::Switch>>,
}

impl std::fmt::Debug for ShardedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ShardedModel({}, tp={})", self.files.name, self.tp)
    }
}

impl ShardedModel {
    /// Loads `files` over `tp` in-process CPU ranks (TP=1 runs the same code with a no-op
    /// communicator).
    pub fn load_cpu(files: ModelFiles, tp: usize) -> Result<Self> {
        if tp == 0 {
            return Err(EngineError::BadTp { tp, reason: "must be at least 1".into() });
        }
        let comms: Vec<Arc<dyn Communicator>> = if tp == 1 {
            vec![Arc::new(Local)]
        } else {
            Threads::group(tp).into_iter().map(|c| Arc::new(c) as Arc<dyn Communicator>).collect()
        };
        let devices = vec![Device::Cpu; tp];
        Self::load_with(files, comms, devices)
    }

    /// Loads over NCCL, one GPU per rank.
    #[cfg(feature = "nccl")]
    pub fn load_nccl(files: ModelFiles, tp: usize) -> Result<Self> {
        let comms = crate::parallel::comm::Nccl::group(tp)?;
        let devices = (0..tp).map(Device::new_cuda).collect::<candle_core::Result<Vec<_>>>()?;
        let comms = comms.into_iter().map(|c| Arc::new(c) as Arc<dyn Communicator>).collect();
        Self::load_with(files, comms, devices)
    }

    pub fn load_with(files: ModelFiles, comms: Vec<Arc<dyn Communicator>>, devices: Vec<Device>) -> Result<Self> {
        let tp = comms.len();
        let started = Instant::now();
        let control = comms.first().cloned().ok_or(EngineError::BadTp { tp, reason: "no ranks".into() })?;
        #[cfg(any(test, feature = "fault-injection"))]
        let (comms, faults) = fault::wrap(comms);
        let mut ranks = Vec::with_capacity(tp);
        let (ready_tx, ready_rx) = channel::<(usize, Result<()>)>();
        for (comm, device) in comms.into_iter().zip(devices) {
            let (cmd_tx, cmd_rx) = channel::<RankCmd>();
            let (rep_tx, rep_rx) = channel::<RankReply>();
            let files = files.clone();
            let ready = ready_tx.clone();
            let rank = comm.rank();
            let join = std::thread::Builder::new()
                .name(format!("rank-{rank}"))
                .spawn(move || {
                    let shard = Shard::new(comm.clone());
                    let loaded = files.open().and_then(|vb| Family::load(&vb, &files.config, &shard, &device));
                    match loaded {
                        Ok(model) => {
                            let _ = ready.send((rank, Ok(())));
                            rank_loop(model, files.config.num_layers(), comm, cmd_rx, rep_tx);
                        }
                        Err(e) => {
                            let _ = ready.send((rank, Err(e)));
                        }
                    }
                })
                .map_err(|e| EngineError::RankGone(e.to_string()))?;
            ranks.push(Rank { tx: cmd_tx, rx: rep_rx, join: Some(join) });
        }
        drop(ready_tx);
        for _ in 0..tp {
            let (_, r) = ready_rx.recv().map_err(|e| EngineError::RankGone(e.to_string()))?;
            r?;
        }
        let load_time = started.elapsed();
        tracing::info!(
            "loaded {} ({}) over {tp} rank(s) in {:.2?}",
            files.name,
            files.config.architecture(),
            load_time
        );
        Ok(Self {
            files,
            tp,
            load_time,
            ranks,
            control,
            #[cfg(any(test, feature = "fault-injection"))]
            faults,
        })
    }

    pub fn config(&self) -> &FamilyConfig {
        &self.files.config
    }

    /// Runs one batched forward pass on every rank; returns rank 0's logits per chunk.
    ///
    /// If any rank fails (an error or a panic), the step is aborted on every rank, this
    /// waits until all of them have left it, and returns the failing rank's error; the
    /// model stays usable. The step's sequences keep the cached positions they had before
    /// it (on the ranks that failed) or one step more (on those that finished): either way
    /// the next forward truncates each to its chunk's `start_pos`, and a caller that gives
    /// up on them frees them.
    pub fn forward(&self, chunks: Vec<Chunk>) -> Result<Vec<Tensor>> {
        let chunks = Arc::new(chunks);
        let replies = self.broadcast(|| RankCmd::Forward(chunks.clone()));
        let mut out = None;
        let mut failures = Vec::new();
        for (i, reply) in replies.into_iter().enumerate() {
            match reply {
                Ok(logits) if i == 0 => out = logits,
                Ok(_) => {}
                Err(f) => failures.push(f),
            }
        }
        if !failures.is_empty() {
            // Every rank has replied, so none is inside a collective: safe to reopen.
            self.control.reset();
            let i = failures.iter().position(|f| f.root).unwrap_or(0);
            return Err(failures.swap_remove(i).err);
        }
        out.ok_or_else(|| EngineError::RankGone("rank 0 returned no logits".into()))
    }

    /// Sends one command to every rank and collects every reply, even after a failure:
    /// returning while some rank is still inside a step would let the next command race
    /// it. A rank that cannot be reached aborts the step, so the others do not wait on it.
    fn broadcast(&self, cmd: impl Fn() -> RankCmd) -> Vec<RankReply> {
        let sent: Vec<bool> = self.ranks.iter().map(|r| r.tx.send(cmd()).is_ok()).collect();
        if sent.contains(&false) {
            self.control.abort();
        }
        let mut replies = Vec::with_capacity(self.ranks.len());
        for (i, (r, sent)) in self.ranks.iter().zip(sent).enumerate() {
            let reply = if sent { r.rx.recv().ok() } else { None };
            replies.push(reply.unwrap_or_else(|| {
                self.control.abort();
                Err(RankFailure::root(EngineError::RankGone(format!("rank {i}"))))
            }));
        }
        replies
    }

    /// Drops the KV caches of these sequences on every rank.
    pub fn free(&self, seqs: Vec<SeqId>) {
        let _ = self.broadcast(|| RankCmd::Free(seqs.clone()));
    }

    /// Starts `dst`'s cache as a copy of `src`'s first `len` positions (prefix reuse). On
    /// failure no rank keeps a copy.
    pub fn copy_prefix(&self, src: SeqId, dst: SeqId, len: usize) -> Result<()> {
        let replies = self.broadcast(|| RankCmd::CopyPrefix { src, dst, len });
        if let Some(f) = replies.into_iter().find_map(|r| r.err()) {
            self.free(vec![dst]);
            return Err(f.err);
        }
        Ok(())
    }

    /// Makes rank `rank` fail (return an error, or panic) at its third collective from
    /// now, i.e. inside its next forward pass, after its first layer has updated the KV
    /// caches: for tests of failure handling. The fault fires in a collective, so it needs
    /// TP >= 2 (at TP=1 the layers make no collectives and it stays armed).
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn inject_fault(&self, rank: usize, kind: Fault) {
        self.faults[rank].arm(kind);
    }
}

impl Drop for ShardedModel {
    fn drop(&mut self) {
        // Closing the command channels ends the rank loops.
        let joins: Vec<_> = self.ranks.iter_mut().filter_map(|r| r.join.take()).collect();
        self.ranks.clear();
        for j in joins {
            let _ = j.join();
        }
    }
}

/// The text of a caught panic.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

fn rank_loop(
    model: Family,
    n_layers: usize,
    comm: Arc<dyn Communicator>,
    rx: Receiver<RankCmd>,
    tx: Sender<RankReply>,
) {
    let rank = comm.rank();
    let mut caches: HashMap<SeqId, SeqCache> = HashMap::new();
    while let Ok(cmd) = rx.recv() {
        let reply = match cmd {
            RankCmd::Forward(chunks) => {
                // Take each sequence's cache out of the map so we can lend them all mutably.
                let mut taken: Vec<SeqCache> = chunks
                    .iter()
                    .map(|c| {
                        let mut cache = caches.remove(&c.seq).unwrap_or_else(|| SeqCache::new(n_layers));
                        cache.truncate(c.start_pos);
                        cache
                    })
                    .collect();
                // The caches are the only state a failed forward leaves half-updated, and
                // they are truncated back below; the weights are only read.
                let out = catch_unwind(AssertUnwindSafe(|| {
                    let mut refs: Vec<&mut SeqCache> = taken.iter_mut().collect();
                    model.forward(&chunks, &mut refs)
                }));
                let failed = match out {
                    Ok(Ok(logits)) => Ok(logits),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(payload) => Err(format!("panicked: {}", panic_message(&*payload))),
                };
                let reply = match failed {
                    Ok(logits) => Ok(Some(logits)),
                    Err(reason) => {
                        // Checked before aborting: a rank that finds the step already
                        // aborted most likely failed because of it.
                        let root = comm.aborted_by().is_none_or(|r| r == rank);
                        comm.abort();
                        for (c, cache) in chunks.iter().zip(taken.iter_mut()) {
                            cache.truncate(c.start_pos);
                        }
                        Err(RankFailure { err: EngineError::StepFailed { rank, reason }, root })
                    }
                };
                for (c, cache) in chunks.iter().zip(taken) {
                    caches.insert(c.seq, cache);
                }
                reply
            }
            RankCmd::Free(seqs) => {
                for s in seqs {
                    caches.remove(&s);
                }
                Ok(None)
            }
            RankCmd::CopyPrefix { src, dst, len } => {
                // A panic here must not take the rank thread (and so the model) down.
                let copied = catch_unwind(AssertUnwindSafe(|| caches.get(&src).map(|c| c.prefix(len))));
                match copied {
                    Ok(Some(Ok(c))) => {
                        caches.insert(dst, c);
                        Ok(None)
                    }
                    Ok(Some(Err(e))) => Err(RankFailure::root(e.into())),
                    Ok(None) => Ok(None),
                    Err(payload) => Err(RankFailure::root(EngineError::StepFailed {
                        rank,
                        reason: format!("copy_prefix panicked: {}", panic_message(&*payload)),
                    })),
                }
            }
        };
        if tx.send(reply).is_err() {
            break;
        }
    }
}

/// What an injected fault does (see [`ShardedModel::inject_fault`]).
#[cfg(any(test, feature = "fault-injection"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The rank's collective returns an error.
    Error,
    /// The rank's collective panics.
    Panic,
}

#[cfg(any(test, feature = "fault-injection"))]
mod fault {
    //! A communicator wrapper that fails on demand, in the middle of a forward pass.
    use std::sync::{Arc, Mutex, PoisonError};

    use candle_core::{Result, Tensor};

    use super::Fault;
    use crate::parallel::Communicator;

    /// Collectives to let through before failing: the embedding's and the first layer's
    /// attention, so the fault hits after some KV caches were written.
    const PASS: usize = 2;

    #[derive(Debug, Default)]
    pub(super) struct Switch(Mutex<Option<(Fault, usize)>>);

    impl Switch {
        pub(super) fn arm(&self, kind: Fault) {
            *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some((kind, PASS));
        }

        /// Counts one collective; fails it if the fault is due (once).
        fn trip(&self, rank: usize) -> Result<()> {
            let mut armed = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            let Some((kind, pass)) = armed.as_mut() else { return Ok(()) };
            if *pass > 0 {
                *pass -= 1;
                return Ok(());
            }
            let kind = *kind;
            *armed = None;
            drop(armed);
            match kind {
                Fault::Error => candle_core::bail!("injected fault on rank {rank}"),
                Fault::Panic => panic!("injected panic on rank {rank}"),
            }
        }
    }

    #[derive(Debug)]
    pub(super) struct Faulty {
        inner: Arc<dyn Communicator>,
        switch: Arc<Switch>,
    }

    /// Wraps every rank's communicator; returns them with their switches.
    pub(super) fn wrap(comms: Vec<Arc<dyn Communicator>>) -> (Vec<Arc<dyn Communicator>>, Vec<Arc<Switch>>) {
        comms
            .into_iter()
            .map(|inner| {
                let switch = Arc::new(Switch::default());
                (Arc::new(Faulty { inner, switch: switch.clone() }) as Arc<dyn Communicator>, switch)
            })
            .unzip()
    }

    impl Communicator for Faulty {
        fn rank(&self) -> usize {
            self.inner.rank()
        }
        fn world_size(&self) -> usize {
            self.inner.world_size()
        }
        fn all_reduce_sum(&self, x: &Tensor) -> Result<Tensor> {
            self.switch.trip(self.rank())?;
            self.inner.all_reduce_sum(x)
        }
        fn all_gather(&self, x: &Tensor, dim: usize) -> Result<Tensor> {
            self.switch.trip(self.rank())?;
            self.inner.all_gather(x, dim)
        }
        fn reduce_parts(&self, partials: &[Tensor]) -> Result<Tensor> {
            self.switch.trip(self.rank())?;
            self.inner.reduce_parts(partials)
        }
        fn abort(&self) {
            self.inner.abort()
        }
        fn reset(&self) {
            self.inner.reset()
        }
        fn aborted_by(&self) -> Option<usize> {
            self.inner.aborted_by()
        }
    }
}
