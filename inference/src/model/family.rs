//! The model families we run, behind one type: their configurations and one rank's
//! loaded shard.

use candle_core::{Device, Tensor};
use serde::Serialize;

use super::source::WeightSource;
use super::{gemma3, llama};
use crate::error::Result;
use crate::nn::{Chunk, SeqCache};
use crate::parallel::Shard;

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
    /// Width of the token embeddings (and of a soft prompt's rows).
    pub fn hidden_size(&self) -> usize {
        match self {
            FamilyConfig::Gemma3(c) => c.hidden_size,
            FamilyConfig::Llama(c) => c.hidden_size,
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
