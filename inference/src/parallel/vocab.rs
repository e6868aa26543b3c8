//! The vocabulary split over ranks: the embedding table and the output head.

use std::ops::Range;

use candle_core::{DType, Device, Result, Tensor};

use super::linear::ColumnParallelLinear;
use super::shard::Shard;
use crate::nn::{overwrite_input_rows, Chunk};
use crate::weight::Weight;

/// Each rank holds the embedding rows of its vocabulary slice; ids outside the slice
/// give zero rows, and the all-reduce puts every row together.
#[derive(Debug, Clone)]
pub struct VocabParallelEmbedding {
    table: Weight,
    vocab_range: Range<usize>,
    shard: Shard,
}

impl VocabParallelEmbedding {
    pub fn new(w: &Weight, shard: &Shard) -> Result<Self> {
        let (vocab, _) = w.dims2()?;
        let vocab_range = shard.split(vocab);
        Ok(Self { table: w.rows(vocab_range.clone())?, vocab_range, shard: shard.clone() })
    }

    /// `ids: [tokens] (u32)` → `[tokens, hidden]` f32.
    pub fn forward(&self, ids: &[u32], device: &Device) -> Result<Tensor> {
        let (lo, hi) = (self.vocab_range.start as u32, self.vocab_range.end as u32);
        let local: Vec<u32> = ids.iter().map(|&i| if (lo..hi).contains(&i) { i - lo } else { 0 }).collect();
        let local = Tensor::new(local.as_slice(), device)?;
        let rows = match &self.table {
            Weight::Quant(q) => q.embedding(&local)?,
            Weight::Dense(t) => t.to_dtype(DType::F32)?.index_select(&local, 0)?,
        };
        if self.shard.world() == 1 {
            return Ok(rows);
        }
        let keep: Vec<f32> = ids.iter().map(|&i| if (lo..hi).contains(&i) { 1.0 } else { 0.0 }).collect();
        let keep = Tensor::from_vec(keep, (ids.len(), 1), device)?;
        self.shard.comm.all_reduce_sum(&rows.broadcast_mul(&keep)?)
    }

    /// The embedded input of a batch, `[total_tokens, hidden]` f32: every chunk's tokens
    /// looked up (and multiplied by `scale`, Gemma's `sqrt(hidden)`), then the rows a chunk
    /// gives as [`InputEmbeddings`] written over them. Those are replicated: every rank
    /// writes the same values after the all-reduce, so the ranks' inputs stay identical.
    pub fn forward_chunks(&self, chunks: &[Chunk], scale: Option<f64>, device: &Device) -> Result<Tensor> {
        let ids: Vec<u32> = chunks.iter().flat_map(|c| c.tokens.iter().copied()).collect();
        let mut x = self.forward(&ids, device)?;
        if let Some(scale) = scale {
            x = (x * scale)?;
        }
        if chunks.iter().all(|c| c.embeddings.is_none()) {
            return Ok(x);
        }
        overwrite_input_rows(&x, chunks)
    }
}

/// The output projection split over the vocabulary; logits are gathered on every rank.
#[derive(Debug, Clone)]
pub struct VocabParallelHead {
    linear: ColumnParallelLinear,
    shard: Shard,
}

impl VocabParallelHead {
    pub fn new(w: &Weight, shard: &Shard) -> Result<Self> {
        let (vocab, _) = w.dims2()?;
        Ok(Self { linear: ColumnParallelLinear::new(w, shard.split(vocab))?.in_huge_pages(), shard: shard.clone() })
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let local = self.linear.forward(x)?;
        self.shard.comm.all_gather(&local, local.rank() - 1)
    }
}
