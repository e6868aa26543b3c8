//! Studio's inference engine: real GPT models (Gemma 3, llama family) from GGUF or
//! Hugging Face safetensors, built from tensor-parallel layers over a
//! [`parallel::Communicator`], with per-sequence KV caches, a batched `step()` API, seeded
//! sampling and UTF-8-safe streaming.
//!
//! The modules, from the top down (each uses only those below it):
//! - [`engine`]: the batched `step()` API, the prefix cache, streaming text out;
//! - [`train`]: prompt tuning: soft prompts trained on a frozen model through
//!   differentiable forwards of the families (CPU, candle autograd);
//! - [`model`]: finding and loading models, the families (`gemma3`, `llama`), the group
//!   of rank threads that holds a loaded model;
//! - [`nn`]: the layers the families are made of (attention, norms, rotary embeddings,
//!   the MLP's activation) and the KV caches;
//! - [`parallel`]: communicators and the tensor-parallel layer types;
//! - [`kernels`]: the CPU matmul kernels, their memory and their thread pool;
//! - [`constraint`]: constrained decoding (JSON schema, regex, choice, grammar) with
//!   llguidance, one token mask per sequence and step;
//! - [`weight`], [`numerics`], [`simd`], [`sampling`], [`tokenizer`], [`memory`],
//!   [`error`]: leaves the others share.

#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

pub mod bench;
pub mod constraint;
pub mod constraint_dfa;
pub mod engine;
pub mod error;
pub mod kernels;
pub mod memory;
pub mod model;
pub mod nn;
pub mod numerics;
pub mod parallel;
pub mod sampling;
pub mod simd;
pub mod tokenizer;
pub mod train;
pub mod weight;

pub use constraint::{ConstraintError, ConstraintSpec, Constraints, Grammar, Guide};
pub use engine::{Engine, EngineConfig, Event, FinishReason, GenerateRequest, Generation, Priority, StepError};
pub use error::{EngineError, Result};
#[cfg(any(test, feature = "fault-injection"))]
pub use model::Fault;
pub use model::{installed_models, models_dir, resolve_model, FamilyConfig, ModelFiles, ShardedModel};
pub use nn::{Chunk, InputEmbeddings, SeqId};
pub use sampling::{SampledToken, Sampler, SamplingParams};
pub use tokenizer::Tokenizer;

// Module paths from before the engine was laid out in folders, kept for the app, the
// tests and the benches.
pub use kernels::batched;
pub use model::{gemma3, llama};

/// The tensor-parallel API under its former path (`inference::tp`): layers, shards,
/// weights and the numerics switches.
pub mod tp {
    pub use crate::nn::RmsNorm;
    pub use crate::numerics::{batched_matmul, set_batched_matmul, set_invariant_numerics};
    pub use crate::parallel::{
        block_parts, head_parts, split_range, ColumnParallelLinear, Linear, RowParallelLinear, Shard,
        StackedColumnLinear, VocabParallelEmbedding, VocabParallelHead, MLP_PARTS,
    };
    pub use crate::weight::Weight;
}

/// Loads a model by name or path over `tp` CPU ranks, with its tokenizer.
pub fn load_engine(name_or_path: &str, tp: usize, cfg: EngineConfig) -> Result<Engine> {
    let path = resolve_model(name_or_path)?;
    let (files, tokenizer) = ModelFiles::inspect(&path)?;
    let model = ShardedModel::load_cpu(files, tp)?;
    Ok(Engine::new(model, tokenizer, cfg))
}
