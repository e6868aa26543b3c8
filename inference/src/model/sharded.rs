//! Finding and loading models: the families we run, the installed-model registry, and
//! the tensor-parallel group of rank threads that owns one loaded model.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::Serialize;

use crate::error::{EngineError, Result};
use crate::model::source::{Metadata, WeightSource};
use crate::model::{gemma3, llama};
use crate::nn::attention::{Chunk, SeqId};
use crate::nn::kv_cache::SeqCache;
use crate::parallel::comm::{Communicator, Threads};
use crate::parallel::linear::Shard;
use crate::tokenizer::Tokenizer;

/// A model family's configuration, as read from the model's files.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum FamilyConfig {
    Gemma3(gemma3::Config),
    Llama(llama::Config),
}

impl FamilyConfig {
    pub fn architecture(&self) -> &'static str {
        match self {
            FamilyConfig::Gemma3(_) => "gemma3",
            FamilyConfig::Llama(_) => "llama",
        }
    }
    pub fn num_layers(&self) -> usize {
        match self {
            FamilyConfig::Gemma3(c) => c.num_hidden_layers,
            FamilyConfig::Llama(c) => c.num_hidden_layers,
        }
    }
    pub fn context_length(&self) -> usize {
        match self {
            FamilyConfig::Gemma3(c) => c.max_position_embeddings,
            FamilyConfig::Llama(c) => c.max_position_embeddings,
        }
    }
    pub fn vocab_size(&self) -> usize {
        match self {
            FamilyConfig::Gemma3(c) => c.vocab_size,
            FamilyConfig::Llama(c) => c.vocab_size,
        }
    }
    /// f32 K and V for every layer and KV head, summed over ranks at TP=1.
    pub fn kv_bytes_per_token(&self) -> usize {
        let (layers, kv, d) = match self {
            FamilyConfig::Gemma3(c) => (c.num_hidden_layers, c.num_key_value_heads, c.head_dim),
            FamilyConfig::Llama(c) => (c.num_hidden_layers, c.n_kv_heads(), c.head_dim()),
        };
        layers * kv * d * 2 * 4
    }
}

/// One rank's shard of a model.
#[derive(Debug)]
pub enum Family {
    Gemma3(gemma3::Model),
    Llama(llama::Model),
}

impl Family {
    pub fn load(vb: &WeightSource, cfg: &FamilyConfig, shard: &Shard, device: &Device) -> Result<Self> {
        Ok(match cfg {
            FamilyConfig::Gemma3(c) => Family::Gemma3(gemma3::Model::load(vb, c, shard, device)?),
            FamilyConfig::Llama(c) => Family::Llama(llama::Model::load(vb, c, shard, device)?),
        })
    }
    pub fn forward(&self, chunks: &[Chunk], caches: &mut [&mut SeqCache]) -> candle_core::Result<Vec<Tensor>> {
        match self {
            Family::Gemma3(m) => m.forward(chunks, caches),
            Family::Llama(m) => m.forward(chunks, caches),
        }
    }
}

/// Where a model's files are and what they hold, before any weight is read.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub name: String,
    pub path: PathBuf,
    pub config: FamilyConfig,
}

impl ModelFiles {
    /// A `.gguf` file, or a directory with `config.json` + `*.safetensors` + `tokenizer.json`
    /// (llama family), or a directory holding one `.gguf`.
    pub fn inspect(path: &Path) -> Result<(Self, Tokenizer)> {
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        if path.is_dir() {
            if path.join("config.json").exists() {
                let cfg = llama::Config::from_config_json(&path.join("config.json"))?;
                let tok = Tokenizer::from_tokenizer_json(&path.join("tokenizer.json"))?;
                let files = Self { name, path: path.to_path_buf(), config: FamilyConfig::Llama(cfg) };
                return Ok((files, tok));
            }
            let gguf = find_gguf(path)?.ok_or_else(|| EngineError::BadModel {
                path: path.to_path_buf(),
                reason: "no .gguf file and no config.json".into(),
            })?;
            let (mut files, tok) = Self::inspect(&gguf)?;
            files.name = name;
            return Ok((files, tok));
        }
        let src = WeightSource::open_gguf(path)?;
        let md = Metadata { md: src.gguf_metadata().expect("gguf"), path };
        let arch = md.string("general.architecture").unwrap_or_default();
        let config = match arch.as_str() {
            "gemma3" => FamilyConfig::Gemma3(gemma3::Config::from_gguf(&md)?),
            "llama" => FamilyConfig::Llama(llama::Config::from_gguf(&md)?),
            other => return Err(EngineError::UnsupportedArchitecture(other.to_string())),
        };
        let tok = Tokenizer::from_gguf(md.md)?;
        Ok((Self { name, path: path.to_path_buf(), config }, tok))
    }

    fn open(&self) -> Result<WeightSource> {
        if self.path.is_dir() {
            if self.path.join("config.json").exists() {
                return WeightSource::open_safetensors_dir(&self.path);
            }
            let gguf = find_gguf(&self.path)?.expect("inspected before");
            return WeightSource::open_gguf(&gguf);
        }
        WeightSource::open_gguf(&self.path)
    }
}

fn find_gguf(dir: &Path) -> Result<Option<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| EngineError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
        .collect();
    found.sort();
    Ok(found.into_iter().next())
}

/// The models directory: `$STUDIO_MODELS_DIR`, else `./models`.
pub fn models_dir() -> PathBuf {
    std::env::var_os("STUDIO_MODELS_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("models"))
}

/// Installed models: each subdirectory of the models directory holding a `.gguf` or a
/// Hugging Face checkpoint, by directory name.
pub fn installed_models(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<(String, PathBuf)> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && (p.join("config.json").exists() || matches!(find_gguf(p), Ok(Some(_)))))
        .map(|p| (p.file_name().unwrap_or_default().to_string_lossy().into_owned(), p))
        .collect();
    out.sort();
    out
}

/// A model name (`gemma3-270m`), or a path to a `.gguf` file or checkpoint directory.
pub fn resolve_model(name_or_path: &str) -> Result<PathBuf> {
    let p = PathBuf::from(name_or_path);
    if p.exists() {
        return Ok(p);
    }
    let candidate = models_dir().join(name_or_path);
    if candidate.exists() {
        return Ok(candidate);
    }
    Err(EngineError::UnknownModel(name_or_path.to_string()))
}

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
            vec![Arc::new(crate::parallel::comm::Local)]
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
