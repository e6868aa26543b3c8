//! Pieces both model families share: the ragged batch, rotary embeddings, the split of
//! attention heads over ranks, and causal attention over one sequence's KV cache.

pub mod host;

use std::ops::Range;

use candle_core::{DType, Device, Result, Tensor};

use crate::nn::attention::host::{first_visible, Heads as AttnHeads, Query};
use crate::nn::kv_cache::{LayerKv, SeqCache};
use crate::parallel::linear::Shard;

/// Identifies a sequence across the engine, the scheduler and the KV caches.
pub type SeqId = u64;

/// New tokens of one sequence in a batched forward pass. A batch mixes prefills (many
/// tokens) and decodes (one token) of sequences at different positions.
#[derive(Clone, Debug)]
pub struct Chunk {
    pub seq: SeqId,
    pub tokens: Vec<u32>,
    /// Position of `tokens[0]`; equals the number of tokens already in the sequence's cache.
    pub start_pos: usize,
    /// Return logits for every token of the chunk (prompt logprobs), not just the last.
    pub all_logits: bool,
    /// Without `all_logits`: return logits for this many trailing tokens (0 or 1 = the last
    /// only). Scoring forced continuation tokens needs exactly those rows.
    pub tail_logits: usize,
}

/// Rows of the flattened `[total_tokens, hidden]` batch that belong to each chunk.
pub fn chunk_rows(chunks: &[Chunk]) -> Vec<Range<usize>> {
    let mut start = 0;
    chunks
        .iter()
        .map(|c| {
            let r = start..start + c.tokens.len();
            start = r.end;
            r
        })
        .collect()
}

/// Picks, per chunk, the hidden rows whose logits are wanted: the last, or all.
pub fn rows_for_logits(hidden: &Tensor, chunks: &[Chunk]) -> Result<(Tensor, Vec<usize>)> {
    let mut idx = Vec::new();
    let mut counts = Vec::with_capacity(chunks.len());
    for (c, r) in chunks.iter().zip(chunk_rows(chunks)) {
        if c.all_logits {
            idx.extend(r.start as u32..r.end as u32);
            counts.push(r.len());
        } else if c.tail_logits > 1 {
            let n = c.tail_logits.min(r.len());
            idx.extend((r.end - n) as u32..r.end as u32);
            counts.push(n);
        } else {
            idx.push(r.end as u32 - 1);
            counts.push(1);
        }
    }
    let idx = Tensor::new(idx.as_slice(), hidden.device())?;
    Ok((hidden.index_select(&idx, 0)?, counts))
}

/// Splits `[rows, vocab]` logits back into one tensor per chunk.
pub fn split_logits(logits: &Tensor, counts: &[usize]) -> Result<Vec<Tensor>> {
    let mut start = 0;
    counts
        .iter()
        .map(|&n| {
            let t = logits.narrow(0, start, n);
            start += n;
            t
        })
        .collect()
}

/// Precomputed rotary tables for positions `0..max_pos`.
#[derive(Debug, Clone)]
pub struct Rope {
    cos: Tensor,
    sin: Tensor,
    /// The same tables in host memory, `[max_pos, head_dim / 2]`, for [`Rope::apply_row`].
    cos_host: Vec<f32>,
    sin_host: Vec<f32>,
    /// GGUF llama weights are permuted for the interleaved (GPT-J) rotation; HF weights
    /// and Gemma use the half-split (GPT-NeoX) rotation.
    interleaved: bool,
}

impl Rope {
    pub fn new(head_dim: usize, base: f32, max_pos: usize, interleaved: bool, device: &Device) -> Result<Self> {
        let inv_freq: Vec<f32> =
            (0..head_dim).step_by(2).map(|i| 1f32 / base.powf(i as f32 / head_dim as f32)).collect();
        let inv_freq = Tensor::new(inv_freq.as_slice(), device)?;
        let angles = Tensor::arange(0, max_pos as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((max_pos, 1))?
            .matmul(&inv_freq.reshape((1, head_dim / 2))?)?;
        let (cos, sin) = (angles.cos()?, angles.sin()?);
        let (cos_host, sin_host) = if device.is_cpu() {
            (cos.flatten_all()?.to_vec1::<f32>()?, sin.flatten_all()?.to_vec1::<f32>()?)
        } else {
            (Vec::new(), Vec::new())
        };
        Ok(Self { cos, sin, cos_host, sin_host, interleaved })
    }

    /// Rotates `heads` heads of `head_dim` in `x` (one token, host memory) to `pos`, with
    /// candle's formulas for either layout.
    pub fn apply_row(&self, x: &mut [f32], heads: usize, head_dim: usize, pos: usize) {
        let half = head_dim / 2;
        let (cos, sin) = (&self.cos_host[pos * half..][..half], &self.sin_host[pos * half..][..half]);
        for h in x[..heads * head_dim].chunks_exact_mut(head_dim) {
            for i in 0..half {
                let (a, b) = if self.interleaved { (2 * i, 2 * i + 1) } else { (i, i + half) };
                let (x0, x1) = (h[a], h[b]);
                h[a] = x0 * cos[i] - x1 * sin[i];
                h[b] = x0 * sin[i] + x1 * cos[i];
            }
        }
    }

    pub fn max_positions(&self) -> usize {
        self.cos.dim(0).unwrap_or(0)
    }

    /// `x: [heads, len, head_dim]` at positions `start..start+len`.
    pub fn apply(&self, x: &Tensor, start: usize) -> Result<Tensor> {
        let len = x.dim(1)?;
        let cos = self.cos.narrow(0, start, len)?;
        let sin = self.sin.narrow(0, start, len)?;
        let x = x.unsqueeze(0)?.contiguous()?;
        let y = if self.interleaved {
            candle_nn::rotary_emb::rope_i(&x, &cos, &sin)?
        } else {
            candle_nn::rotary_emb::rope(&x, &cos, &sin)?
        };
        y.squeeze(0)
    }
}

/// The attention heads one rank owns. Query heads are split as evenly as possible; each
/// rank keeps the KV heads its query heads read, so KV heads are replicated when there
/// are more ranks than KV heads (or when a split falls inside a GQA group).
#[derive(Debug, Clone)]
pub struct HeadSplit {
    pub q_heads: Range<usize>,
    pub kv_heads: Range<usize>,
    /// For each local query head, the index of its KV head among the local KV heads.
    pub kv_of_q: Tensor,
    /// The same on the host.
    pub kv_of_q_host: Vec<usize>,
    pub head_dim: usize,
}

impl HeadSplit {
    pub fn new(n_heads: usize, n_kv_heads: usize, head_dim: usize, shard: &Shard, device: &Device) -> Result<Self> {
        if n_heads < shard.world() {
            candle_core::bail!("{n_heads} attention heads cannot be split over {} ranks", shard.world());
        }
        let group = n_heads / n_kv_heads;
        let q_heads = shard.split(n_heads);
        let kv_heads = q_heads.start / group..(q_heads.end - 1) / group + 1;
        let map: Vec<u32> = q_heads.clone().map(|h| (h / group - kv_heads.start) as u32).collect();
        let kv_of_q = Tensor::new(map.as_slice(), device)?;
        let kv_of_q_host = map.iter().map(|&g| g as usize).collect();
        Ok(Self { q_heads, kv_heads, kv_of_q, kv_of_q_host, head_dim })
    }
    pub fn q_range(&self) -> Range<usize> {
        self.q_heads.start * self.head_dim..self.q_heads.end * self.head_dim
    }
    pub fn kv_range(&self) -> Range<usize> {
        self.kv_heads.start * self.head_dim..self.kv_heads.end * self.head_dim
    }
    pub fn n_q(&self) -> usize {
        self.q_heads.len()
    }
    pub fn n_kv(&self) -> usize {
        self.kv_heads.len()
    }
}

/// Whether attention runs on host KV caches with [`crate::nn::attention::host`]: on the CPU with
/// invariant numerics. (Otherwise candle's ops, sequence by sequence.)
pub fn host_attention_for(device: &Device) -> bool {
    device.is_cpu() && crate::parallel::linear::invariant()
}

/// `silu(gate) * up` for `gate_up: [tokens, 2 ff]` (gate then up, side by side) on the
/// CPU, in one pass spread over the matmul pool: `g * s * u` with the logistic `s` from
/// [`crate::sampling::exp_shifted`] (`1 / (1 + e)` or `e / (1 + e)`, `e = exp(-|g|)`), the
/// same bits in the vector and scalar forms. candle's `silu` uses libm's `exp` on one
/// thread and a second pass for the product.
pub fn silu_mul(gate_up: &Tensor, ff: usize) -> Result<Tensor> {
    let (tokens, width) = gate_up.dims2()?;
    if width != 2 * ff {
        candle_core::bail!("gate_up rows are {width} wide, expected {}", 2 * ff);
    }
    let data = gate_up.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![0f32; tokens * ff];
    let out_ptr = out.as_mut_ptr() as usize;
    let work = |rows: Range<usize>| {
        for i in rows {
            let (g, u) = data[i * width..(i + 1) * width].split_at(ff);
            // SAFETY: each row is written by one work item.
            let o = unsafe { std::slice::from_raw_parts_mut((out_ptr as *mut f32).add(i * ff), ff) };
            silu_mul_row(g, u, o);
        }
    };
    if tokens * ff >= 1 << 13 {
        let pool = crate::kernels::pool::pool();
        pool.run(tokens, tokens.div_ceil(2 * pool.threads()), &work);
    } else {
        work(0..tokens);
    }
    Tensor::from_vec(out, (tokens, ff), gate_up.device())
}

fn silu_mul_row(g: &[f32], u: &[f32], out: &mut [f32]) {
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        done = g.len() / 8 * 8;
        // SAFETY: AVX2 is present; every slice holds `done` values.
        unsafe { avx2_silu_mul(&g[..done], &u[..done], &mut out[..done]) };
    }
    for ((o, &g), &u) in out[done..].iter_mut().zip(&g[done..]).zip(&u[done..]) {
        let e = crate::sampling::exp_shifted(-g.abs());
        let s = if g >= 0.0 { 1.0 / (1.0 + e) } else { e / (1.0 + e) };
        *o = g * s * u;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2_silu_mul(g: &[f32], u: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let (one, sign) = (_mm256_set1_ps(1.0), _mm256_set1_ps(-0.0));
    for ((g, u), o) in g.chunks_exact(8).zip(u.chunks_exact(8)).zip(out.chunks_exact_mut(8)) {
        let g = _mm256_loadu_ps(g.as_ptr());
        let e = crate::sampling::avx2_exp_shifted(_mm256_or_ps(g, sign));
        let den = _mm256_add_ps(one, e);
        let neg = _mm256_cmp_ps(g, _mm256_setzero_ps(), _CMP_LT_OQ);
        let s = _mm256_div_ps(_mm256_blendv_ps(one, e, neg), den);
        _mm256_storeu_ps(o.as_mut_ptr(), _mm256_mul_ps(_mm256_mul_ps(g, s), _mm256_loadu_ps(u.as_ptr())));
    }
}

/// Attention of the whole ragged batch on the CPU. `qkv: [tokens, (n_q + 2 n_kv) d]`
/// holds each token's queries, keys and values before rotation; the keys and values are
/// appended to each sequence's host cache, and `[tokens, n_q d]` comes back.
#[allow(clippy::too_many_arguments)]
pub fn host_attention(
    qkv: &Tensor,
    chunks: &[Chunk],
    caches: &mut [&mut SeqCache],
    layer: usize,
    heads: &HeadSplit,
    rope: &Rope,
    window: Option<usize>,
    scale: f64,
) -> Result<Tensor> {
    let (tokens, stride) = qkv.dims2()?;
    let (d, nq, nkv) = (heads.head_dim, heads.n_q(), heads.n_kv());
    if stride != (nq + 2 * nkv) * d {
        candle_core::bail!("qkv rows are {stride} wide, expected {}", (nq + 2 * nkv) * d);
    }
    let rows = chunk_rows(chunks);
    if let Some(c) = chunks.iter().find(|c| c.start_pos + c.tokens.len() > rope.max_positions()) {
        candle_core::bail!(
            "positions up to {} exceed the model's {} rotary positions",
            c.start_pos + c.tokens.len(),
            rope.max_positions()
        );
    }
    let mut buf = qkv.flatten_all()?.to_vec1::<f32>()?;
    for (c, r) in chunks.iter().zip(&rows) {
        for (i, row) in buf[r.start * stride..r.end * stride].chunks_exact_mut(stride).enumerate() {
            let (q, k) = row.split_at_mut(nq * d);
            rope.apply_row(q, nq, d, c.start_pos + i);
            rope.apply_row(k, nkv, d, c.start_pos + i);
        }
    }
    for (i, r) in rows.iter().enumerate() {
        let kv = &mut caches[i].layers[layer];
        if kv.len() != chunks[i].start_pos {
            candle_core::bail!("KV cache holds {} positions, chunk starts at {}", kv.len(), chunks[i].start_pos);
        }
        kv.append_host(&buf[r.start * stride..r.end * stride], stride, nq * d, (nq + nkv) * d, r.len(), nkv * d)?;
    }
    let queries: Vec<Query> = chunks
        .iter()
        .zip(&rows)
        .zip(caches.iter())
        .map(|((c, r), cache)| {
            let host = cache.layers[layer].host().expect("just appended");
            Query { rows: r.clone(), start_pos: c.start_pos, cache: host }
        })
        .collect();
    let attn = AttnHeads { n_q: nq, head_dim: d, kv_of_q: heads.kv_of_q_host.clone(), window, scale: scale as f32 };
    let mut out = vec![0f32; tokens * nq * d];
    crate::nn::attention::host::attend(&buf, stride, &queries, &attn, &mut out);
    Tensor::from_vec(out, (tokens, nq * d), qkv.device())
}

/// Causal attention of one chunk against its sequence's cache.
///
/// `q: [n_q, len, d]`, `k`/`v: [n_kv, len, d]` (already rotated) are appended to `cache`;
/// returns `[len, n_q * d]`. `window` limits each query to the last `window` positions
/// (Gemma's local layers).
pub fn causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cache: &mut LayerKv,
    heads: &HeadSplit,
    start_pos: usize,
    window: Option<usize>,
    scale: f64,
) -> Result<Tensor> {
    let len = q.dim(1)?;
    let (k_all, v_all) = cache.append(k, v)?;
    let total = start_pos + len;
    // The oldest key any query of this chunk can see.
    let first_key = first_visible(start_pos, window);
    let k_all = k_all.narrow(1, first_key, total - first_key)?.contiguous()?;
    let v_all = v_all.narrow(1, first_key, total - first_key)?.contiguous()?;
    // Each query head reads its group's KV head.
    let k_all = k_all.index_select(&heads.kv_of_q, 0)?;
    let v_all = v_all.index_select(&heads.kv_of_q, 0)?;

    let out = if crate::parallel::linear::invariant() {
        attend_row_by_row(q, &k_all, &v_all, start_pos - first_key, window, scale)?
    } else {
        // A single query (decode) sees every key left after the window cut: no mask needed.
        let att = (q.contiguous()?.matmul(&k_all.t()?)? * scale)?;
        let att = if len > 1 {
            let mask = attention_mask(len, start_pos, first_key, window, q.device())?;
            let neg_inf = Tensor::new(f32::NEG_INFINITY, q.device())?.broadcast_as(att.shape())?;
            mask.broadcast_as(att.shape())?.where_cond(&att, &neg_inf)?
        } else {
            att
        };
        candle_nn::ops::softmax_last_dim(&att)?.matmul(&v_all)? // [n_q, len, d]
    };
    let (n_q, _, d) = out.dims3()?;
    out.transpose(0, 1)?.reshape((len, n_q * d))
}

/// Attention one query row at a time, each over exactly the keys it may see, through the
/// same GEMM shape (two identical rows: the CPU GEMM takes another path for one row).
/// So a position's output does not depend on how many positions are computed with it
/// (decode, prefill, or the tail of a prefix-cache hit): bit-identical results.
/// `q: [n_q, len, d]`, `k`/`v: [n_q, keys, d]`, `q0`: index in `keys` of the first query.
fn attend_row_by_row(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    q0: usize,
    window: Option<usize>,
    scale: f64,
) -> Result<Tensor> {
    let len = q.dim(1)?;
    let rows: Vec<Tensor> = (0..len)
        .map(|i| {
            let pos = q0 + i;
            let first = first_visible(pos, window);
            let (k, v) = (k.narrow(1, first, pos + 1 - first)?, v.narrow(1, first, pos + 1 - first)?);
            let qi = q.narrow(1, i, 1)?;
            let qi = Tensor::cat(&[&qi, &qi], 1)?;
            let att = candle_nn::ops::softmax_last_dim(&(qi.matmul(&k.t()?)? * scale)?)?;
            att.matmul(&v)?.narrow(1, 0, 1)
        })
        .collect::<Result<_>>()?;
    Tensor::cat(&rows, 1)
}

/// `[len, keys]` u8 mask (1 = may attend) for queries at `start..start+len` over keys at
/// `first_key..start+len`.
fn attention_mask(
    len: usize,
    start: usize,
    first_key: usize,
    window: Option<usize>,
    device: &Device,
) -> Result<Tensor> {
    let total = start + len;
    let keys = total - first_key;
    let mut m = vec![0u8; len * keys];
    for i in 0..len {
        let qpos = start + i;
        for (j, slot) in m[i * keys..(i + 1) * keys].iter_mut().enumerate() {
            let kpos = first_key + j;
            *slot = u8::from(kpos <= qpos && window.is_none_or(|w| qpos - kpos < w));
        }
    }
    Tensor::from_vec(m, (len, keys), device)
}

/// Applies `f` to each chunk's rows of `x` and stacks the results back in order.
pub fn per_chunk<F>(x: &Tensor, chunks: &[Chunk], mut f: F) -> Result<Tensor>
where
    F: FnMut(usize, &Tensor) -> Result<Tensor>,
{
    let rows = chunk_rows(chunks);
    let outs: Vec<Tensor> =
        rows.into_iter().enumerate().map(|(i, r)| f(i, &x.narrow(0, r.start, r.len())?)).collect::<Result<_>>()?;
    if outs.len() == 1 {
        return Ok(outs.into_iter().next().expect("one"));
    }
    Tensor::cat(&outs, 0)
}

/// `[len, heads*d]` → `[heads, len, d]`.
pub fn to_heads(x: &Tensor, heads: usize, d: usize) -> Result<Tensor> {
    let len = x.dim(0)?;
    x.reshape((len, heads, d))?.transpose(0, 1)?.contiguous()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn silu_mul_matches_candle_and_its_vector_form_its_scalar_one() {
        let ff = 37;
        let gu = Tensor::randn(0f32, 4.0, (3, 2 * ff), &Device::Cpu).unwrap();
        let got = silu_mul(&gu, ff).unwrap();
        let want =
            (candle_nn::ops::silu(&gu.narrow(1, 0, ff).unwrap()).unwrap() * gu.narrow(1, ff, ff).unwrap()).unwrap();
        let diff = (got.clone() - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-4, "{diff}");
        // The vector lanes (first 32 of each row) equal the scalar formula bit for bit.
        let (g, o) = (gu.to_vec2::<f32>().unwrap(), got.to_vec2::<f32>().unwrap());
        for (row, out) in g.iter().zip(&o) {
            for j in 0..ff {
                let (g, u) = (row[j], row[ff + j]);
                let e = crate::sampling::exp_shifted(-g.abs());
                let s = if g >= 0.0 { 1.0 / (1.0 + e) } else { e / (1.0 + e) };
                assert_eq!((g * s * u).to_bits(), out[j].to_bits(), "column {j}");
            }
        }
        assert!(silu_mul(&gu, ff + 1).is_err());
    }

    #[test]
    fn head_split_replicates_kv_heads_when_needed() {
        let dev = Device::Cpu;
        // SmolLM2: 9 heads, 3 KV heads, TP=4 → query heads 3,2,2,2.
        let comms = crate::parallel::comm::Threads::group(4);
        let splits: Vec<_> =
            comms.into_iter().map(|c| HeadSplit::new(9, 3, 64, &Shard::new(Arc::new(c)), &dev).unwrap()).collect();
        assert_eq!(splits[0].q_heads, 0..3);
        assert_eq!(splits[0].kv_heads, 0..1);
        assert_eq!(splits[2].q_heads, 5..7);
        assert_eq!(splits[2].kv_heads, 1..3, "heads 5 and 6 read KV heads 1 and 2");
        assert_eq!(splits[2].kv_of_q.to_vec1::<u32>().unwrap(), vec![0, 1]);
        // Gemma: 4 heads, 1 KV head, TP=2: the KV head is on both ranks.
        let comms = crate::parallel::comm::Threads::group(2);
        for c in comms {
            let s = HeadSplit::new(4, 1, 256, &Shard::new(Arc::new(c)), &dev).unwrap();
            assert_eq!(s.kv_heads, 0..1);
            assert_eq!(s.n_q(), 2);
        }
    }

    #[test]
    fn row_by_row_attention_equals_the_masked_form_with_a_window() {
        let dev = Device::Cpu;
        let (heads, len, keys, d) = (2, 5, 7, 4);
        let q = Tensor::randn(0f32, 1.0, (heads, len, d), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (heads, keys, d), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (heads, keys, d), &dev).unwrap();
        for window in [None, Some(3)] {
            // Queries are the last `len` of `keys` positions.
            let got = attend_row_by_row(&q, &k, &v, keys - len, window, 0.5).unwrap();
            let mask = attention_mask(len, keys - len, 0, window, &dev).unwrap();
            let att = (q.matmul(&k.t().unwrap()).unwrap() * 0.5).unwrap();
            let neg = Tensor::new(f32::NEG_INFINITY, &dev).unwrap().broadcast_as(att.shape()).unwrap();
            let att = mask.broadcast_as(att.shape()).unwrap().where_cond(&att, &neg).unwrap();
            let want = candle_nn::ops::softmax_last_dim(&att).unwrap().matmul(&v).unwrap();
            let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-5, "window {window:?}: {diff}");
        }
    }

    #[test]
    fn mask_is_causal_and_windowed() {
        let m = attention_mask(3, 2, 0, None, &Device::Cpu).unwrap().to_vec2::<u8>().unwrap();
        assert_eq!(m, vec![vec![1, 1, 1, 0, 0], vec![1, 1, 1, 1, 0], vec![1, 1, 1, 1, 1]]);
        let m = attention_mask(3, 0, 0, Some(2), &Device::Cpu).unwrap().to_vec2::<u8>().unwrap();
        assert_eq!(m, vec![vec![1, 0, 0], vec![1, 1, 0], vec![0, 1, 1]]);
    }
}
