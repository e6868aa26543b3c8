//! A loaded model: the tensor-parallel group of rank threads that owns it, each with its
//! shard of the weights and its part of every sequence's KV cache.

use std::collections::HashMap;
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

type RankReply = Result<Option<Vec<Tensor>>>;

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
                    let shard = Shard::new(comm);
                    let loaded = files.open().and_then(|vb| Family::load(&vb, &files.config, &shard, &device));
                    match loaded {
                        Ok(model) => {
                            let _ = ready.send((rank, Ok(())));
                            rank_loop(model, files.config.num_layers(), cmd_rx, rep_tx);
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
        Ok(Self { files, tp, load_time, ranks })
    }

    pub fn config(&self) -> &FamilyConfig {
        &self.files.config
    }

    /// Runs one batched forward pass on every rank; returns rank 0's logits per chunk.
    pub fn forward(&self, chunks: Vec<Chunk>) -> Result<Vec<Tensor>> {
        let chunks = Arc::new(chunks);
        for r in &self.ranks {
            r.tx.send(RankCmd::Forward(chunks.clone())).map_err(|e| EngineError::RankGone(e.to_string()))?;
        }
        let mut out = None;
        for (i, r) in self.ranks.iter().enumerate() {
            let reply = r.rx.recv().map_err(|e| EngineError::RankGone(e.to_string()))??;
            if i == 0 {
                out = reply;
            }
        }
        Ok(out.expect("rank 0 returns logits"))
    }

    /// Drops the KV caches of these sequences on every rank.
    pub fn free(&self, seqs: Vec<SeqId>) {
        for r in &self.ranks {
            let _ = r.tx.send(RankCmd::Free(seqs.clone()));
        }
        for r in &self.ranks {
            let _ = r.rx.recv();
        }
    }

    /// Starts `dst`'s cache as a copy of `src`'s first `len` positions (prefix reuse).
    pub fn copy_prefix(&self, src: SeqId, dst: SeqId, len: usize) -> Result<()> {
        for r in &self.ranks {
            r.tx.send(RankCmd::CopyPrefix { src, dst, len }).map_err(|e| EngineError::RankGone(e.to_string()))?;
        }
        for r in &self.ranks {
            r.rx.recv().map_err(|e| EngineError::RankGone(e.to_string()))??;
        }
        Ok(())
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

fn rank_loop(model: Family, n_layers: usize, rx: Receiver<RankCmd>, tx: Sender<RankReply>) {
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
                let mut refs: Vec<&mut SeqCache> = taken.iter_mut().collect();
                let out = model.forward(&chunks, &mut refs).map_err(EngineError::from);
                for (c, cache) in chunks.iter().zip(taken) {
                    caches.insert(c.seq, cache);
                }
                out.map(Some)
            }
            RankCmd::Free(seqs) => {
                for s in seqs {
                    caches.remove(&s);
                }
                Ok(None)
            }
            RankCmd::CopyPrefix { src, dst, len } => match caches.get(&src).map(|c| c.prefix(len)) {
                Some(Ok(c)) => {
                    caches.insert(dst, c);
                    Ok(None)
                }
                Some(Err(e)) => Err(e.into()),
                None => Ok(None),
            },
        };
        if tx.send(reply).is_err() {
            break;
        }
    }
}
