//! Studio's inference engine: real GPT models (Gemma 3, llama family) from GGUF or
//! Hugging Face safetensors, built from tensor-parallel layers over a [`comm::Communicator`],
//! with per-sequence KV caches, a batched `step()` API, seeded sampling and UTF-8-safe
//! streaming.

pub mod attention;
pub mod batched;
pub mod bench;
pub mod comm;
pub mod engine;
pub mod error;
pub mod gemma3;
pub mod kv_cache;
pub mod layers;
pub mod llama;
pub mod model;
pub mod pool;
pub mod sampling;
pub mod stream;
pub mod tokenizer;
pub mod tp;
pub mod weights;

pub use engine::{Engine, EngineConfig, Event, FinishReason, GenerateRequest, Generation};
pub use error::{EngineError, Result};
pub use layers::{Chunk, SeqId};
pub use model::{installed_models, models_dir, resolve_model, FamilyConfig, ModelFiles, ShardedModel};
pub use sampling::{SampledToken, Sampler, SamplingParams};
pub use tokenizer::Tokenizer;

/// Loads a model by name or path over `tp` CPU ranks, with its tokenizer.
pub fn load_engine(name_or_path: &str, tp: usize, cfg: EngineConfig) -> Result<Engine> {
    let path = resolve_model(name_or_path)?;
    let (files, tokenizer) = ModelFiles::inspect(&path)?;
    let model = ShardedModel::load_cpu(files, tp)?;
    Ok(Engine::new(model, tokenizer, cfg))
}
