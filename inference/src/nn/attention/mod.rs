//! Causal self-attention over each sequence's KV cache: the heads a rank owns, then
//! either the CPU kernel over host caches ([`host`], invariant numerics) or candle's ops
//! sequence by sequence.

pub mod host;

use std::ops::Range;

use candle_core::{Device, Result, Tensor};

use self::host::{first_visible, Heads as AttnHeads, Query};
use super::batch::{chunk_rows, Chunk};
use super::kv_cache::{LayerKv, SeqCache};
use super::rope::Rope;
use crate::numerics::invariant;
use crate::parallel::Shard;

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

/// How a layer's queries score their keys: `q · k * scale`, over at most the last `window`
/// positions (Gemma's local layers; `None`: all earlier positions).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    pub window: Option<usize>,
    pub scale: f64,
}

/// Whether attention runs on host KV caches with [`host`]: on the CPU with invariant
/// numerics. (Otherwise candle's ops, sequence by sequence.)
pub fn host_attention_for(device: &Device) -> bool {
    device.is_cpu() && invariant()
}

/// Attention of the whole ragged batch on the CPU. `qkv: [tokens, (n_q + 2 n_kv) d]`
/// holds each token's queries, keys and values before rotation; the keys and values are
/// appended to each sequence's host cache, and `[tokens, n_q d]` comes back.
pub fn host_attention(
    qkv: &Tensor,
    chunks: &[Chunk],
    caches: &mut [&mut SeqCache],
    layer: usize,
    heads: &HeadSplit,
    rope: &Rope,
    scores: Scores,
) -> Result<Tensor> {
    let Scores { window, scale } = scores;
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
    host::attend(&buf, stride, &queries, &attn, &mut out);
    Tensor::from_vec(out, (tokens, nq * d), qkv.device())
}

/// Causal attention of one chunk against its sequence's cache.
///
/// `q: [n_q, len, d]`, `k`/`v: [n_kv, len, d]` (already rotated) are appended to `cache`;
/// returns `[len, n_q * d]`.
pub fn causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cache: &mut LayerKv,
    heads: &HeadSplit,
    start_pos: usize,
    scores: Scores,
) -> Result<Tensor> {
    let Scores { window, scale } = scores;
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

    let out = if invariant() {
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
    fn head_split_replicates_kv_heads_when_needed() {
        let dev = Device::Cpu;
        // SmolLM2: 9 heads, 3 KV heads, TP=4 → query heads 3,2,2,2.
        let comms = crate::parallel::Threads::group(4);
        let splits: Vec<_> =
            comms.into_iter().map(|c| HeadSplit::new(9, 3, 64, &Shard::new(Arc::new(c)), &dev).unwrap()).collect();
        assert_eq!(splits[0].q_heads, 0..3);
        assert_eq!(splits[0].kv_heads, 0..1);
        assert_eq!(splits[2].q_heads, 5..7);
        assert_eq!(splits[2].kv_heads, 1..3, "heads 5 and 6 read KV heads 1 and 2");
        assert_eq!(splits[2].kv_of_q.to_vec1::<u32>().unwrap(), vec![0, 1]);
        // Gemma: 4 heads, 1 KV head, TP=2: the KV head is on both ranks.
        let comms = crate::parallel::Threads::group(2);
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
