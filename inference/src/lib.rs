//! Studio's inference engine: real GPT models (Gemma 3, llama family) from GGUF or
//! Hugging Face safetensors, built from tensor-parallel layers over a [`parallel::comm::Communicator`],
//! with per-sequence KV caches, a batched `step()` API, seeded sampling and UTF-8-safe
//! streaming.

pub mod bench;
pub mod engine;
pub mod error;
pub mod kernels;
pub mod model;
pub mod nn;
pub mod parallel;
pub mod sampling;
pub mod tokenizer;

pub use kernels::batched;
pub use model::gemma3;
pub use parallel::linear as tp;

pub use engine::{Engine, EngineConfig, Event, FinishReason, GenerateRequest, Generation};
pub use error::{EngineError, Result};
pub use model::sharded::{installed_models, models_dir, resolve_model, FamilyConfig, ModelFiles, ShardedModel};
pub use nn::attention::{Chunk, SeqId};
pub use sampling::{SampledToken, Sampler, SamplingParams};
pub use tokenizer::Tokenizer;

/// Loads a model by name or path over `tp` CPU ranks, with its tokenizer.
pub fn load_engine(name_or_path: &str, tp: usize, cfg: EngineConfig) -> Result<Engine> {
    let path = resolve_model(name_or_path)?;
    let (files, tokenizer) = ModelFiles::inspect(&path)?;
    let model = ShardedModel::load_cpu(files, tp)?;
    Ok(Engine::new(model, tokenizer, cfg))
}
