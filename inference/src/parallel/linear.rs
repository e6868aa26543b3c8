//! Linear layers: whole ([`Linear`], candle's matmul or the batched one), and split over
//! ranks by output rows ([`ColumnParallelLinear`], [`StackedColumnLinear`]) or by input
//! columns ([`RowParallelLinear`]).

use std::ops::Range;

use candle_core::quantized::{GgmlDType, QMatMul};
use candle_core::{Device, Module, Result, Tensor};

use super::shard::Shard;
use crate::kernels::BatchedWeight;
use crate::numerics::{batched_matmul, invariant};
use crate::weight::Weight;

/// `y = x W^T` for `x: [tokens, in]`, whatever the storage of `W`.
#[derive(Debug, Clone)]
pub enum Linear {
    Candle { inner: QMatMul, pad_single_row: bool },
    Batched(BatchedWeight),
}

impl Linear {
    pub fn new(w: Weight) -> Result<Self> {
        // Chosen per weight by its type alone, so every TP degree and batch makes the same choice.
        if invariant() && batched_matmul() && w.device().is_cpu() && BatchedWeight::supports(&w) {
            return Ok(Linear::Batched(BatchedWeight::new(&w)?));
        }
        let pad_single_row = invariant() && matches!(&w, Weight::Quant(q) if q.dtype() == GgmlDType::Q6K);
        Ok(Linear::Candle { inner: w.into_matmul()?, pad_single_row })
    }
    /// A final weight: batched panels moved into 2 MB pages (see [`BatchedWeight::in_huge_pages`]).
    pub fn in_huge_pages(self) -> Self {
        match self {
            Linear::Batched(b) => Linear::Batched(b.in_huge_pages()),
            other => other,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Linear::Batched(w) => w.forward(x),
            Linear::Candle { inner, pad_single_row } => {
                if *pad_single_row && x.dim(0)? == 1 {
                    let two = Tensor::cat(&[x, x], 0)?;
                    return inner.forward(&two)?.narrow(0, 0, 1);
                }
                inner.forward(x)
            }
        }
    }
}

/// Holds output rows `range` of `W`: each rank computes its slice of the output features.
#[derive(Debug, Clone)]
pub struct ColumnParallelLinear {
    linear: Linear,
    pub out_range: Range<usize>,
}

impl ColumnParallelLinear {
    pub fn new(w: &Weight, out_range: Range<usize>) -> Result<Self> {
        Ok(Self { linear: Linear::new(w.rows(out_range.clone())?)?, out_range })
    }

    /// A final weight: see [`Linear::in_huge_pages`].
    pub fn in_huge_pages(self) -> Self {
        Self { linear: self.linear.in_huge_pages(), ..self }
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.linear.forward(x)
    }
}

/// Several column-parallel projections of the same input (q, k, v; or gate, up) as one
/// layer: `[tokens, Σ widths]`, the outputs side by side in order. Batched weights of one
/// storage type are stacked into a single matmul (one pass over the input, one pool
/// hand-off); others run one by one and are concatenated. Each output is computed exactly
/// as its own projection would compute it.
#[derive(Debug, Clone)]
pub struct StackedColumnLinear {
    stacked: Option<Linear>,
    parts: Vec<ColumnParallelLinear>,
}

impl StackedColumnLinear {
    /// `ws`: each weight with the output rows this rank holds.
    pub fn new(ws: &[(&Weight, Range<usize>)]) -> Result<Self> {
        let parts: Vec<ColumnParallelLinear> =
            ws.iter().map(|(w, r)| ColumnParallelLinear::new(w, r.clone())).collect::<Result<_>>()?;
        let batched: Option<Vec<BatchedWeight>> = parts
            .iter()
            .map(|p| match &p.linear {
                Linear::Batched(b) => Some(b.clone()),
                Linear::Candle { .. } => None,
            })
            .collect();
        match batched.as_deref().and_then(BatchedWeight::concat_rows) {
            Some(b) => Ok(Self { stacked: Some(Linear::Batched(b.in_huge_pages())), parts: Vec::new() }),
            None => {
                Ok(Self { stacked: None, parts: parts.into_iter().map(ColumnParallelLinear::in_huge_pages).collect() })
            }
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(l) = &self.stacked {
            return l.forward(x);
        }
        let outs: Vec<Tensor> = self.parts.iter().map(|p| p.forward(x)).collect::<Result<_>>()?;
        Tensor::cat(&outs, 1)
    }
}

/// Holds a slice of the input columns of `W`: each rank multiplies its slice of the input
/// features, and the partial outputs are summed over the ranks.
///
/// The input dimension is cut into a fixed, canonical list of parts (one per attention
/// head, or a few quant-block-aligned MLP slices) whatever the TP degree; a rank owns a
/// consecutive run of parts. Adding the parts' products in canonical order makes TP=1
/// and TP=N bit-identical (quantized activations turn any rounding difference into a
/// visible one after a few layers).
#[derive(Debug, Clone)]
pub struct RowParallelLinear {
    /// One linear per owned part, with its offset and width in this rank's input.
    parts: Vec<(Linear, usize, usize)>,
    /// Or all owned parts in one batched weight that keeps their products apart.
    fused: Option<BatchedWeight>,
    shard: Shard,
}

impl RowParallelLinear {
    /// `parts`: the canonical partition of the full input dimension. This rank owns the
    /// parts `shard.split(parts.len())`, which must be what its input holds.
    pub fn new(name: &str, w: &Weight, parts: &[Range<usize>], shard: &Shard, device: &Device) -> Result<Self> {
        let owned = shard.split(parts.len());
        if owned.is_empty() {
            candle_core::bail!("{name}: {} parts cannot be split over {} ranks", parts.len(), shard.world());
        }
        let base = parts[owned.start].start;
        let all = base..parts[owned.end - 1].end;
        let mine = if invariant() { &parts[owned.clone()] } else { std::slice::from_ref(&all) };
        if mine.len() > 1 && batched_matmul() && w.device().is_cpu() {
            let (pw, dequantized) = w.cols(all.clone(), device)?;
            if !dequantized && BatchedWeight::supports(&pw) {
                let local: Vec<Range<usize>> = mine.iter().map(|r| r.start - base..r.end - base).collect();
                if let Ok(b) = BatchedWeight::new(&pw)?.with_parts(&local) {
                    return Ok(Self { parts: Vec::new(), fused: Some(b.in_huge_pages()), shard: shard.clone() });
                }
            }
        }
        let mut linears = Vec::with_capacity(mine.len());
        for range in mine {
            let (pw, dequantized) = w.cols(range.clone(), device)?;
            if dequantized {
                tracing::info!(
                    "{name}: part {range:?} is not aligned to its quant blocks; dequantized it on rank {}",
                    shard.rank()
                );
            }
            linears.push((Linear::new(pw)?.in_huge_pages(), range.start - base, range.len()));
        }
        Ok(Self { parts: linears, fused: None, shard: shard.clone() })
    }

    /// The input columns this rank holds for a canonical partition.
    pub fn local_range(parts: &[Range<usize>], shard: &Shard) -> Range<usize> {
        let owned = shard.split(parts.len());
        parts[owned.start].start..parts[owned.end - 1].end
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(b) = &self.fused {
            if self.shard.world() == 1 {
                // The canonical sum `((p0 + p1) + p2) + ...`, as `sum_in_order` adds.
                return b.forward_summed(x);
            }
            let (y, m) = b.forward_parts(x)?;
            let n = b.dims().0;
            let partials: Vec<Tensor> = y
                .chunks_exact(m * n)
                .map(|part| Tensor::from_slice(part, (m, n), x.device()))
                .collect::<Result<_>>()?;
            return self.shard.comm.reduce_parts(&partials);
        }
        let partials: Vec<Tensor> = self
            .parts
            .iter()
            .map(|(lin, off, len)| {
                if self.parts.len() == 1 {
                    lin.forward(x)
                } else {
                    lin.forward(&x.narrow(1, *off, *len)?.contiguous()?)
                }
            })
            .collect::<Result<_>>()?;
        self.shard.comm.reduce_parts(&partials)
    }
}
