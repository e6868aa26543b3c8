//! Tensor-parallel layer types.
//!
//! Parallelism lives here, in the types, not in flags inside the models:
//! - [`ColumnParallelLinear`] keeps a slice of the output rows and never communicates;
//! - [`RowParallelLinear`] keeps a slice of the input columns and all-reduces its output;
//! - [`VocabParallelEmbedding`] / [`VocabParallelHead`] split the vocabulary.
//!
//! Quantized weights stay quantized: a row slice cuts whole rows; a column slice cuts at
//! quant-block boundaries, and when it cannot (the split is not block-aligned) the tensor
//! is dequantized and the load log says so.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{DType, Device, Module, Result, Tensor};

use crate::kernels::batched::BatchedWeight;
use crate::parallel::comm::Communicator;

/// Which part of the model one rank holds.
#[derive(Clone, Debug)]
pub struct Shard {
    pub comm: Arc<dyn Communicator>,
}

impl Shard {
    pub fn new(comm: Arc<dyn Communicator>) -> Self {
        Self { comm }
    }
    pub fn local() -> Self {
        Self::new(Arc::new(crate::parallel::comm::Local))
    }
    pub fn rank(&self) -> usize {
        self.comm.rank()
    }
    pub fn world(&self) -> usize {
        self.comm.world_size()
    }
    /// This rank's part of `n` units split as evenly as possible (the first ranks take the
    /// remainder), so that 9 heads over 4 ranks become 3, 2, 2, 2.
    pub fn split(&self, n: usize) -> Range<usize> {
        split_range(n, self.world(), self.rank())
    }
}

pub fn split_range(n: usize, world: usize, rank: usize) -> Range<usize> {
    let base = n / world;
    let extra = n % world;
    let start = rank * base + rank.min(extra);
    let len = base + usize::from(rank < extra);
    start..start + len
}

/// A 2-D weight `[out, in]` as stored: quantized (GGUF) or dense (safetensors, norms).
#[derive(Debug, Clone)]
pub enum Weight {
    Quant(Arc<QTensor>),
    Dense(Tensor),
}

impl Weight {
    pub fn dims2(&self) -> Result<(usize, usize)> {
        match self {
            Weight::Quant(q) => q.shape().dims2(),
            Weight::Dense(t) => t.dims2(),
        }
    }

    /// Quant block size along the input dimension (1 for dense weights).
    pub fn block_size(&self) -> usize {
        match self {
            Weight::Quant(q) => q.dtype().block_size(),
            Weight::Dense(_) => 1,
        }
    }

    pub fn device(&self) -> Device {
        match self {
            Weight::Quant(q) => q.device(),
            Weight::Dense(t) => t.device().clone(),
        }
    }

    pub fn dequantize(&self, device: &Device) -> Result<Tensor> {
        match self {
            Weight::Quant(q) => q.dequantize(device),
            Weight::Dense(t) => t.to_dtype(DType::F32),
        }
    }

    /// Output rows `range` (whole rows: always possible without dequantizing).
    pub fn rows(&self, range: Range<usize>) -> Result<Weight> {
        let (out, inp) = self.dims2()?;
        if range == (0..out) {
            return Ok(self.clone());
        }
        match self {
            Weight::Dense(t) => Ok(Weight::Dense(t.narrow(0, range.start, range.len())?)),
            Weight::Quant(q) => {
                let row_bytes = inp / q.dtype().block_size() * q.dtype().type_size();
                let data = q.data()?;
                let bytes = &data[range.start * row_bytes..range.end * row_bytes];
                let storage = QStorage::from_data(bytes.to_vec().into(), &q.device(), q.dtype())?;
                Ok(Weight::Quant(Arc::new(QTensor::new(storage, (range.len(), inp))?)))
            }
        }
    }

    /// Input columns `range`. Returns the weight and whether it had to be dequantized
    /// because the range does not fall on quant-block boundaries.
    pub fn cols(&self, range: Range<usize>, device: &Device) -> Result<(Weight, bool)> {
        let (out, inp) = self.dims2()?;
        if range == (0..inp) {
            return Ok((self.clone(), false));
        }
        match self {
            Weight::Dense(t) => Ok((Weight::Dense(t.narrow(1, range.start, range.len())?.contiguous()?), false)),
            Weight::Quant(q) => {
                let bs = q.dtype().block_size();
                if range.start % bs != 0 || range.end % bs != 0 {
                    let dense = q.dequantize(device)?.narrow(1, range.start, range.len())?.contiguous()?;
                    return Ok((Weight::Dense(dense), true));
                }
                let ts = q.dtype().type_size();
                let row_bytes = inp / bs * ts;
                let (b0, b1) = (range.start / bs * ts, range.end / bs * ts);
                let data = q.data()?;
                let mut bytes = Vec::with_capacity(out * (b1 - b0));
                for r in 0..out {
                    bytes.extend_from_slice(&data[r * row_bytes + b0..r * row_bytes + b1]);
                }
                let storage = QStorage::from_data(bytes.into(), &q.device(), q.dtype())?;
                Ok((Weight::Quant(Arc::new(QTensor::new(storage, (out, range.len()))?)), false))
            }
        }
    }

    fn into_matmul(self) -> Result<QMatMul> {
        match self {
            Weight::Quant(q) => QMatMul::from_arc(q),
            Weight::Dense(t) => Ok(QMatMul::Tensor(t.to_dtype(DType::F32)?)),
        }
    }
}

static INVARIANT: AtomicBool = AtomicBool::new(true);

/// Invariant numerics (on by default; read when a model is loaded):
/// - batch invariance: a sequence's logits do not depend on what else is in its batch.
///   candle's CPU kernels are row-independent except Q6_K, which uses a tiled kernel for
///   several rows and a GEMV for one; a single Q6_K row goes through the tiled kernel too;
/// - TP invariance: row-parallel layers add canonical parts in a fixed order (see
///   [`RowParallelLinear`]), so TP=1 and TP=N give bit-identical logits.
///
/// Off, each rank does one matmul per layer and a plain all-reduce: what candle's own
/// models do, which the reference tests compare against.
pub fn set_invariant_numerics(on: bool) {
    INVARIANT.store(on, Ordering::Relaxed);
}

pub(crate) fn invariant() -> bool {
    INVARIANT.load(Ordering::Relaxed)
}

static BATCHED: AtomicBool = AtomicBool::new(true);

/// With invariant numerics on the CPU, multiply the weights [`BatchedWeight`] supports
/// (dense, Q4_1, Q8_0) with it (on by default; read when a model is loaded): each weight
/// is read once per call and shared by every row of a batch (quantized weights with
/// integer kernels), so 16 sequences cost far less than 16 times one. Other weights, and
/// all of them when this is off, go through candle's quantized matmul (one integer dot
/// product per row and output, the weight read again for every row).
pub fn set_batched_matmul(on: bool) {
    BATCHED.store(on, Ordering::Relaxed);
}

pub fn batched_matmul() -> bool {
    BATCHED.load(Ordering::Relaxed)
}

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
        let all = [base..parts[owned.end - 1].end];
        let mine = if invariant() { &parts[owned.clone()] } else { &all[..] };
        if mine.len() > 1 && batched_matmul() && w.device().is_cpu() {
            let (pw, dequantized) = w.cols(all[0].clone(), device)?;
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

/// How many canonical parts an MLP's down projection is cut into: the most ranks it
/// can be split over.
pub const MLP_PARTS: usize = 4;

/// Splits `0..n` into at most `max_parts` equal parts on multiples of `block`.
pub fn block_parts(n: usize, block: usize, max_parts: usize) -> Vec<Range<usize>> {
    let blocks = n / block;
    let parts = max_parts.min(blocks).max(1);
    (0..parts)
        .map(|p| {
            let r = split_range(blocks, parts, p);
            r.start * block..r.end * block
        })
        .collect()
}

/// One part per attention head.
pub fn head_parts(n_heads: usize, head_dim: usize) -> Vec<Range<usize>> {
    (0..n_heads).map(|h| h * head_dim..(h + 1) * head_dim).collect()
}

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

/// RMSNorm with a dense weight (GGUF stores norms as f32).
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    /// The weight on the host, for [`Self::add_forward`] (CPU models only).
    host_weight: Option<Vec<f32>>,
    eps: f32,
}

impl RmsNorm {
    pub fn new(w: &Weight, eps: f64, device: &Device) -> Result<Self> {
        let weight = match w {
            Weight::Quant(q) => q.dequantize(device)?,
            Weight::Dense(t) => t.to_dtype(DType::F32)?,
        };
        Self::with_weight(weight.flatten_all()?, eps as f32)
    }
    fn with_weight(weight: Tensor, eps: f32) -> Result<Self> {
        let host_weight = if weight.device().is_cpu() { Some(weight.to_vec1::<f32>()?) } else { None };
        Ok(Self { weight, host_weight, eps })
    }
    /// Adds `delta` to the stored weight (HF Gemma checkpoints store `w - 1`).
    pub fn shifted(self, delta: f64) -> Result<Self> {
        Self::with_weight((self.weight + delta)?, self.eps)
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::rms_norm(x, &self.weight, self.eps)
    }

    /// `(s, norm(s))` for `s = x + h` (`s = x` without `h`): the residual add and the next
    /// norm in one pass over each row. On the CPU with invariant numerics it runs here
    /// (sum of squares in eight lanes, then a fixed order), not as candle's two ops, each
    /// with its own thread hand-off, while the matmul pool spins; elsewhere it is candle's.
    pub fn add_forward(&self, x: &Tensor, h: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let Some(w) = self.host_weight.as_ref().filter(|_| invariant() && x.device().is_cpu() && x.rank() == 2) else {
            let s = match h {
                Some(h) => (x + h)?,
                None => x.clone(),
            };
            let n = self.forward(&s)?;
            return Ok((s, n));
        };
        let (rows, n) = x.dims2()?;
        let mut s = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        if let Some(h) = h {
            let h = h.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            s.iter_mut().zip(&h).for_each(|(a, b)| *a += b);
        }
        let mut out = vec![0f32; rows * n];
        for (row, o) in s.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
            host_rms_row(row, w, self.eps, o);
        }
        let dev = x.device();
        Ok((Tensor::from_vec(s, (rows, n), dev)?, Tensor::from_vec(out, (rows, n), dev)?))
    }
}

/// `out = x / sqrt(mean(x²) + eps) * w`, the squares summed in eight lanes (a form LLVM
/// vectorizes without changing it), then `((l0+l1) + (l2+l3)) + ((l4+l5) + (l6+l7))`, then
/// the tail.
fn host_rms_row(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let mut lanes = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            lanes[l] += c[l] * c[l];
        }
    }
    let l = lanes;
    let sum2 = tail.iter().fold(((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7])), |a, v| a + v * v);
    let m = (sum2 / x.len() as f32 + eps).sqrt();
    for ((o, v), w) in out.iter_mut().zip(x).zip(w) {
        *o = *v / m * *w;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_residual_add_and_norm_match_candles_two_ops() {
        let dev = Device::Cpu;
        let w = Tensor::randn(1f32, 0.1, 76, &dev).unwrap();
        let norm = RmsNorm::new(&Weight::Dense(w.clone()), 1e-5, &dev).unwrap();
        let (x, h) =
            (Tensor::randn(0f32, 2.0, (5, 76), &dev).unwrap(), Tensor::randn(0f32, 1.0, (5, 76), &dev).unwrap());
        for with_h in [true, false] {
            let (s, n) = norm.add_forward(&x, with_h.then_some(&h)).unwrap();
            let want_s = if with_h { (&x + &h).unwrap() } else { x.clone() };
            let want_n = candle_nn::ops::rms_norm(&want_s, &w, 1e-5).unwrap();
            let diff =
                |a: &Tensor, b: &Tensor| (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert_eq!(diff(&s, &want_s), 0.0);
            assert!(diff(&n, &want_n) < 1e-5, "{}", diff(&n, &want_n));
            // Row by row: a row's result does not depend on the others.
            let (_, one) = norm
                .add_forward(&x.narrow(0, 2, 1).unwrap(), with_h.then(|| h.narrow(0, 2, 1).unwrap()).as_ref())
                .unwrap();
            assert_eq!(diff(&one, &n.narrow(0, 2, 1).unwrap()), 0.0);
        }
    }

    #[test]
    fn split_range_covers_everything_unevenly() {
        let parts: Vec<_> = (0..4).map(|r| split_range(9, 4, r)).collect();
        assert_eq!(parts, vec![0..3, 3..5, 5..7, 7..9]);
        assert_eq!(split_range(4, 1, 0), 0..4);
    }

    fn quantized(rows: usize, cols: usize, dt: GgmlDType) -> (Tensor, Weight) {
        let data: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
        let t = Tensor::from_vec(data, (rows, cols), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, dt).unwrap();
        let deq = q.dequantize(&Device::Cpu).unwrap();
        (deq, Weight::Quant(Arc::new(q)))
    }

    #[test]
    fn quantized_row_and_block_aligned_col_slices_stay_quantized_and_exact() {
        for dt in [GgmlDType::Q4_1, GgmlDType::Q8_0, GgmlDType::Q4K, GgmlDType::Q6K] {
            let bs = dt.block_size();
            let (deq, w) = quantized(6, bs * 4, dt);
            let r = w.rows(2..5).unwrap();
            assert!(matches!(r, Weight::Quant(_)));
            let got = r.dequantize(&Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
            assert_eq!(got, deq.narrow(0, 2, 3).unwrap().to_vec2::<f32>().unwrap());

            let (c, dequantized) = w.cols(bs..bs * 3, &Device::Cpu).unwrap();
            assert!(!dequantized, "{dt:?}");
            assert!(matches!(c, Weight::Quant(_)));
            let got = c.dequantize(&Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
            assert_eq!(got, deq.narrow(1, bs, bs * 2).unwrap().to_vec2::<f32>().unwrap());
        }
    }

    #[test]
    fn unaligned_col_slice_falls_back_to_dense() {
        let (deq, w) = quantized(3, 512, GgmlDType::Q4K);
        let (c, dequantized) = w.cols(100..300, &Device::Cpu).unwrap();
        assert!(dequantized);
        assert!(matches!(c, Weight::Dense(_)));
        let got = c.dequantize(&Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(got, deq.narrow(1, 100, 200).unwrap().to_vec2::<f32>().unwrap());
    }
}
