//! A frozen model for training a soft prompt: one family's differentiable forward on
//! weights dequantized once, and the sequence a soft prompt is trained in.

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor};

use super::soft_prompt::{splice_point, SoftPrompt};
use super::{gemma3, layers, llama};
use crate::model::{FamilyConfig, ModelFiles, WeightSource};

/// Where the frozen weights come from, by name, dense in the dtype to run in.
pub trait FrozenWeights {
    fn contains(&self, name: &str) -> bool;
    fn tensor(&self, name: &str) -> crate::error::Result<Tensor>;
}

/// A model's own files, dequantized to f32 on the CPU.
impl FrozenWeights for WeightSource {
    fn contains(&self, name: &str) -> bool {
        WeightSource::contains(self, name)
    }
    fn tensor(&self, name: &str) -> crate::error::Result<Tensor> {
        Ok(self.get(name, &Device::Cpu)?.dequantize(&Device::Cpu)?)
    }
}

/// Weights built in memory (tests).
impl FrozenWeights for HashMap<String, Tensor> {
    fn contains(&self, name: &str) -> bool {
        self.contains_key(name)
    }
    fn tensor(&self, name: &str) -> crate::error::Result<Tensor> {
        self.get(name).cloned().ok_or_else(|| crate::error::EngineError::BadModel {
            path: "<in memory>".into(),
            reason: format!("no tensor {name}"),
        })
    }
}

#[derive(Debug)]
enum Family {
    Gemma3(gemma3::Model),
    Llama(llama::Model),
}

/// A frozen model whose forward is differentiable in its inputs.
#[derive(Debug)]
pub struct TrainableModel {
    name: String,
    config: FamilyConfig,
    bos: Option<u32>,
    family: Family,
}

impl TrainableModel {
    /// Loads and dequantizes `files` (f32, CPU). `bos` is the tokenizer's BOS id: the soft
    /// prompt goes after a leading BOS ([`splice_point`]).
    pub fn load(files: &ModelFiles, bos: Option<u32>) -> crate::error::Result<Self> {
        Self::from_weights(&files.name, &files.config, &files.open()?, bos)
    }

    pub fn from_weights(
        name: &str,
        config: &FamilyConfig,
        weights: &dyn FrozenWeights,
        bos: Option<u32>,
    ) -> crate::error::Result<Self> {
        let family = match config {
            FamilyConfig::Gemma3(c) => Family::Gemma3(gemma3::Model::load(c, weights)?),
            FamilyConfig::Llama(c) => Family::Llama(llama::Model::load(c, weights)?),
        };
        Ok(Self { name: name.to_string(), config: config.clone(), bos, family })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn config(&self) -> &FamilyConfig {
        &self.config
    }
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }
    pub fn hidden_size(&self) -> usize {
        match &self.config {
            FamilyConfig::Gemma3(c) => c.hidden_size,
            FamilyConfig::Llama(c) => c.hidden_size,
        }
    }
    pub fn vocab_size(&self) -> usize {
        self.config.vocab_size()
    }
    pub fn context_length(&self) -> usize {
        self.config.context_length()
    }
    pub fn dtype(&self) -> DType {
        match &self.family {
            Family::Gemma3(m) => m.dtype(),
            Family::Llama(m) => m.dtype(),
        }
    }

    /// Token embeddings `[len, hidden]` in the space the decoder reads (Gemma's scaled).
    pub fn embed(&self, ids: &[u32]) -> Result<Tensor> {
        match &self.family {
            Family::Gemma3(m) => m.embed(ids),
            Family::Llama(m) => m.embed(ids),
        }
    }

    /// Final-normed hidden states of embedded inputs `[len, hidden]` from position 0.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.family {
            Family::Gemma3(m) => m.forward(x),
            Family::Llama(m) => m.forward(x),
        }
    }

    pub fn lm_head(&self, h: &Tensor) -> Result<Tensor> {
        match &self.family {
            Family::Gemma3(m) => m.lm_head(h),
            Family::Llama(m) => m.lm_head(h),
        }
    }

    /// The embedded sequence `prompt[..s] ++ soft ++ prompt[s..] ++ tail`, `s` the
    /// [`splice_point`]; `soft: [k, hidden]` (k may be 0).
    pub fn inputs(&self, soft: &Tensor, prompt: &[u32], tail: &[u32]) -> Result<Tensor> {
        let s = splice_point(prompt, self.bos);
        let mut parts = Vec::with_capacity(3);
        if s > 0 {
            parts.push(self.embed(&prompt[..s])?);
        }
        if soft.dim(0)? > 0 {
            parts.push(soft.to_dtype(self.dtype())?);
        }
        let rest: Vec<u32> = prompt[s..].iter().chain(tail).copied().collect();
        if !rest.is_empty() {
            parts.push(self.embed(&rest)?);
        }
        Tensor::cat(&parts, 0)
    }

    /// Sum over `expected` of `-log p(token)`, teacher-forced after the soft prompt and
    /// `prompt` (at least one of them non-empty); the head runs only on the rows that
    /// predict `expected`.
    pub fn loss_sum(&self, soft: &Tensor, prompt: &[u32], expected: &[u32]) -> Result<Tensor> {
        let n = expected.len();
        let x = self.inputs(soft, prompt, &expected[..n.saturating_sub(1)])?;
        let first = soft.dim(0)? + prompt.len() - 1;
        let h = self.forward(&x)?.narrow(0, first, n)?;
        layers::cross_entropy_sum(&self.lm_head(&h)?, expected)
    }

    /// Logits `[len, vocab]` at every position of the soft prompt and `prompt`.
    pub fn logits(&self, soft: &Tensor, prompt: &[u32]) -> Result<Tensor> {
        self.lm_head(&self.forward(&self.inputs(soft, prompt, &[])?)?)
    }

    /// The soft prompt's first rows: the embeddings of `ids` repeated to `k` rows (or
    /// truncated), or, without ids, of `k` tokens drawn with `seed` from the first 5000 ids
    /// (BPE and SentencePiece vocabularies put their commonest pieces first).
    pub fn init_soft_prompt(&self, k: usize, ids: &[u32], seed: u64) -> Result<SoftPrompt> {
        let ids: Vec<u32> = if ids.is_empty() {
            let mut rng = super::rng::SplitMix64::new(seed);
            let pool = self.vocab_size().min(5000);
            (0..k).map(|_| rng.below(pool) as u32).collect()
        } else {
            ids.iter().cycle().take(k).copied().collect()
        };
        let rows = if k == 0 {
            Vec::new()
        } else {
            self.embed(&ids)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?
        };
        SoftPrompt::new(&self.name, self.hidden_size(), rows).map_err(|e| candle_core::Error::Msg(e.to_string()))
    }
}
