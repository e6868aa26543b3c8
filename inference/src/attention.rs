//! Causal attention on the CPU over host KV caches ([`HostKv`]), for every sequence of a
//! ragged batch at once, spread over the matmul pool.
//!
//! Each (query row, head) is computed alone, over exactly the keys it may see, in a fixed
//! order: 8-lane dot products for the scores, a softmax with the maximum subtracted, then
//! the probability-weighted sum of the values in key order. Nothing depends on the other
//! rows, the other sequences or the thread that runs it, so a position's output is
//! bit-identical in a decode, a prefill, a prefix-cache hit or any batch. And no
//! per-sequence tensor ops are left: at 16 sequences, candle's small ops (narrow, copy,
//! matmul, softmax per sequence and layer) took a large share of a decode step.
//!
//! Plain Rust: `a * b + c` is never contracted into an FMA, so the vectorized and the
//! scalar forms of every loop give the same bits.

use std::cell::RefCell;
use std::ops::Range;

use crate::kv_cache::HostKv;

/// The rows of one sequence's queries and the cache they attend to (which already holds
/// their own keys and values).
pub struct Query<'a> {
    /// Rows of the batch.
    pub rows: Range<usize>,
    /// Position of the first row.
    pub start_pos: usize,
    pub cache: &'a HostKv,
}

/// The head layout of one rank.
#[derive(Debug, Clone)]
pub struct Heads {
    pub n_q: usize,
    pub head_dim: usize,
    /// For each local query head, its KV head among the local KV heads.
    pub kv_of_q: Vec<usize>,
    /// Each query sees at most the last `window` positions (Gemma's local layers).
    pub window: Option<usize>,
    pub scale: f32,
}

/// The oldest key position a query at `pos` may see with a sliding `window`.
pub fn first_visible(pos: usize, window: Option<usize>) -> usize {
    match window {
        Some(w) if pos + 1 > w => pos + 1 - w,
        _ => 0,
    }
}

/// `out[row, h * d..(h + 1) * d]` for every row of `queries` and every query head; query
/// `h` of a row is `q[row * q_stride + h * d..][..d]` (already rotated).
pub fn attend(q: &[f32], q_stride: usize, queries: &[Query], heads: &Heads, out: &mut [f32]) {
    let (n_q, d) = (heads.n_q, heads.head_dim);
    let rows: usize = queries.iter().map(|c| c.rows.end).max().unwrap_or(0);
    assert!(out.len() >= rows * n_q * d, "attention output too small");
    // The query each row belongs to.
    let mut owner = vec![usize::MAX; rows];
    for (i, c) in queries.iter().enumerate() {
        owner[c.rows.clone()].fill(i);
    }
    let out_ptr = out.as_mut_ptr() as usize;
    let work = |items: Range<usize>| {
        SCORES.with(|s| {
            let mut scores = s.borrow_mut();
            for row in items {
                let Some(c) = queries.get(owner[row]) else { continue };
                let pos = c.start_pos + (row - c.rows.start);
                // SAFETY: each row item writes only its own row of outputs.
                let o = unsafe { std::slice::from_raw_parts_mut((out_ptr as *mut f32).add(row * n_q * d), n_q * d) };
                let positions = first_visible(pos, heads.window)..pos + 1;
                let q = &q[row * q_stride..][..n_q * d];
                one_row(q, c.cache, &heads.kv_of_q, positions, heads.scale, &mut scores, o);
            }
        })
    };
    let items = rows;
    // Decode items are a few microseconds each: small batches are not worth a hand-off.
    let keys: usize = queries.iter().map(|c| c.rows.len() * (c.start_pos + c.rows.len())).sum();
    if keys * n_q * d < 1 << 15 {
        work(0..items);
    } else {
        let pool = crate::pool::pool();
        pool.run(items, items.div_ceil(4 * pool.threads()), &work);
    }
}

thread_local! {
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Every query head of one row (`q`, head `h` at `h * d`) over the keys at `positions`,
/// into `out` (the same layout). Keys, then values, are read once per row, in position
/// order (a sequential stream of the cache). Each head's arithmetic is what it would be
/// alone: scores in key order, the softmax with its maximum subtracted, then the
/// weighted values in key order.
fn one_row(
    q: &[f32],
    cache: &HostKv,
    kv_of_q: &[usize],
    positions: Range<usize>,
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let (w, n, n_q) = (cache.width, positions.len(), kv_of_q.len());
    let d = q.len() / n_q.max(1);
    scores.clear();
    // Scores `[n_q, n]`, then one reciprocal sum per head.
    scores.resize(n_q * n + n_q, 0.0);
    for (i, t) in positions.clone().enumerate() {
        let k = &cache.k[t * w..][..w];
        for (h, &g) in kv_of_q.iter().enumerate() {
            scores[h * n + i] = dot(&q[h * d..][..d], &k[g * d..][..d]) * scale;
        }
    }
    let (s, inv) = scores.split_at_mut(n_q * n);
    for (s, inv) in s.chunks_exact_mut(n.max(1)).zip(inv.iter_mut()) {
        let max = s.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let mut sum = 0f32;
        for x in s.iter_mut() {
            *x = (*x - max).exp();
            sum += *x;
        }
        *inv = 1.0 / sum;
    }
    out.fill(0.0);
    for (i, t) in positions.enumerate() {
        let v = &cache.v[t * w..][..w];
        for (h, &g) in kv_of_q.iter().enumerate() {
            let p = s[h * n + i];
            for (o, x) in out[h * d..(h + 1) * d].iter_mut().zip(&v[g * d..][..d]) {
                *o += p * x;
            }
        }
    }
    for (o, inv) in out.chunks_exact_mut(d.max(1)).zip(inv.iter()) {
        for o in o {
            *o *= inv;
        }
    }
}

/// Eight lane sums over `i % 8`, then `((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7))`, then the
/// tail in order.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n8 = a.len() / 8 * 8;
    let mut acc = [0f32; 8];
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx") {
            // SAFETY: AVX is present; both slices hold `n8` floats.
            unsafe { avx_lanes(&a[..n8], &b[..n8], &mut acc) };
        } else {
            scalar_lanes(&a[..n8], &b[..n8], &mut acc);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    scalar_lanes(&a[..n8], &b[..n8], &mut acc);
    let mut s = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
    for i in n8..a.len() {
        s += a[i] * b[i];
    }
    s
}

/// `acc[l] += a[i] * b[i]` for `i % 8 == l`, in increasing `i`: a rounded product, then
/// a rounded sum, in both forms.
fn scalar_lanes(a: &[f32], b: &[f32], acc: &mut [f32; 8]) {
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn avx_lanes(a: &[f32], b: &[f32], acc: &mut [f32; 8]) {
    use std::arch::x86_64::*;
    let mut v = _mm256_loadu_ps(acc.as_ptr());
    for i in (0..a.len()).step_by(8) {
        v = _mm256_add_ps(v, _mm256_mul_ps(_mm256_loadu_ps(a.as_ptr().add(i)), _mm256_loadu_ps(b.as_ptr().add(i))));
    }
    _mm256_storeu_ps(acc.as_mut_ptr(), v);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv_cache::LayerKv;
    use candle_core::{Device, Tensor};

    fn randn(n: usize) -> Vec<f32> {
        Tensor::randn(0f32, 1.0, n, &Device::Cpu).unwrap().to_vec1::<f32>().unwrap()
    }

    /// Softmax attention in f64 with an explicit mask.
    fn reference(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        pos: usize,
        first: usize,
        n_kv: usize,
        g: usize,
        d: usize,
        scale: f64,
    ) -> Vec<f64> {
        let w = n_kv * d;
        let s: Vec<f64> = (first..=pos)
            .map(|t| (0..d).map(|i| q[i] as f64 * k[t * w + g * d + i] as f64).sum::<f64>() * scale)
            .collect();
        let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
        let z: f64 = e.iter().sum();
        (0..d).map(|i| (first..=pos).zip(&e).map(|(t, p)| p * v[t * w + g * d + i] as f64).sum::<f64>() / z).collect()
    }

    #[test]
    fn matches_masked_softmax_attention_with_gqa_and_a_window() {
        let (n_q, n_kv, d, len) = (4, 2, 12, 9);
        for window in [None, Some(4)] {
            let kv_rows = randn(len * 2 * n_kv * d);
            let mut cache = LayerKv::default();
            cache.append_host(&kv_rows, 2 * n_kv * d, 0, n_kv * d, len, n_kv * d).unwrap();
            let q = randn(len * n_q * d);
            let heads = Heads { n_q, head_dim: d, kv_of_q: vec![0, 0, 1, 1], window, scale: 0.3 };
            let mut out = vec![0f32; len * n_q * d];
            // The last 5 positions as one chunk, the first 4 as another.
            let h = cache.host().unwrap();
            let queries = [Query { rows: 0..4, start_pos: 0, cache: h }, Query { rows: 4..9, start_pos: 4, cache: h }];
            attend(&q, n_q * d, &queries, &heads, &mut out);
            for row in 0..len {
                for hq in 0..n_q {
                    let g = heads.kv_of_q[hq];
                    let want = reference(
                        &q[(row * n_q + hq) * d..][..d],
                        &h.k,
                        &h.v,
                        row,
                        first_visible(row, window),
                        n_kv,
                        g,
                        d,
                        0.3,
                    );
                    for (a, b) in out[(row * n_q + hq) * d..][..d].iter().zip(&want) {
                        assert!((*a as f64 - b).abs() < 1e-5, "{window:?} row {row} head {hq}: {a} vs {b}");
                    }
                }
            }
        }
    }

    #[test]
    fn simd_dot_equals_the_scalar_one() {
        let (a, b) = (randn(72), randn(72));
        let (mut x, mut y) = ([0.25f32; 8], [0.25f32; 8]);
        scalar_lanes(&a, &b, &mut x);
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx") {
            unsafe { avx_lanes(&a, &b, &mut y) };
            assert!(x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()));
        }
    }

    #[test]
    fn a_row_is_bit_identical_alone_and_in_a_batch() {
        let (n_q, d) = (3, 64);
        let heads = Heads { n_q, head_dim: d, kv_of_q: vec![0; 3], window: None, scale: 0.125 };
        // 6 sequences of 200..205 positions; the batch holds each one's last position.
        let caches: Vec<LayerKv> = (0..6)
            .map(|i| {
                let mut c = LayerKv::default();
                let n = 200 + i;
                c.append_host(&randn(n * 2 * d), 2 * d, 0, d, n, d).unwrap();
                c
            })
            .collect();
        let q = randn(6 * n_q * d);
        let queries: Vec<Query> = caches
            .iter()
            .enumerate()
            .map(|(i, c)| Query { rows: i..i + 1, start_pos: c.len() - 1, cache: c.host().unwrap() })
            .collect();
        let mut batch = vec![0f32; 6 * n_q * d];
        attend(&q, n_q * d, &queries, &heads, &mut batch);
        for (i, c) in caches.iter().enumerate() {
            let mut alone = vec![0f32; n_q * d];
            let one = [Query { rows: 0..1, start_pos: c.len() - 1, cache: c.host().unwrap() }];
            attend(&q[i * n_q * d..(i + 1) * n_q * d], n_q * d, &one, &heads, &mut alone);
            let same = alone.iter().zip(&batch[i * n_q * d..]).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "sequence {i}");
        }
    }
}
