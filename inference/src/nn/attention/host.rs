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
//! Products are added by FMA (`mul_add` in the scalar forms, which are the fallback
//! without AVX2/FMA) and the softmax uses [`simd::exp_shifted`], so the
//! vectorized and the scalar forms of every loop give the same bits.

use std::cell::RefCell;
use std::ops::Range;

use crate::kernels::pool;
use crate::nn::kv_cache::HostKv;
use crate::simd::{self, lane_total};

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
                // SAFETY: `out` holds `rows * n_q * d` floats (asserted above) and outlives the
                // pool call; row `row` is in exactly one work item, so these slices never overlap.
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
        let pool = pool::pool();
        pool.run(items, items.div_ceil(4 * pool.threads()), &work);
    }
}

thread_local! {
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Every query head of one row (`q`, head `h` at `h * d`) over the keys at `positions`,
/// into `out` (the same layout), head by head: scores in key order (four keys at a time,
/// each its own chain), the softmax with its maximum subtracted, then the weighted values
/// in key order with the sums in registers.
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
    for (h, &g) in kv_of_q.iter().enumerate() {
        head_scores(&q[h * d..][..d], &cache.k, w, g * d, positions.clone(), scale, &mut scores[h * n..(h + 1) * n]);
    }
    let (s, inv) = scores.split_at_mut(n_q * n);
    for (s, inv) in s.chunks_exact_mut(n.max(1)).zip(inv.iter_mut()) {
        let max = s.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        simd::exp_shifted_in_place(s, max);
        *inv = 1.0 / s.iter().fold(0f32, |a, &x| a + x);
    }
    for (h, &g) in kv_of_q.iter().enumerate() {
        weighted_values(&s[h * n..(h + 1) * n], &cache.v, w, g * d, positions.start, &mut out[h * d..(h + 1) * d]);
    }
    for (o, inv) in out.chunks_exact_mut(d.max(1)).zip(inv.iter()) {
        for o in o {
            *o *= inv;
        }
    }
}

/// `out[i] = dot(q, key at positions.start + i) * scale`, keys `w` apart in `k` from
/// offset `off`: [`dot`]'s bits, eight keys at a time (independent chains, their lane
/// totals taken together).
fn head_scores(q: &[f32], k: &[f32], w: usize, off: usize, positions: Range<usize>, scale: f32, out: &mut [f32]) {
    let d = q.len();
    #[cfg(target_arch = "x86_64")]
    if d.is_multiple_of(8) && simd::has_avx2_fma() {
        assert!(positions.end == positions.start || (positions.end - 1) * w + off + d <= k.len());
        assert!(out.len() >= positions.len());
        // SAFETY: AVX2 and FMA were detected just above; the asserts bound every key read
        // (`n` keys `w` apart from `positions.start`, `d` floats each) and score written, and
        // the first key's offset is in bounds (callers pass a query's own position at least).
        unsafe { fma_scores(q, k.as_ptr().add(positions.start * w + off), w, positions.len(), scale, out) };
        return;
    }
    for (i, t) in positions.enumerate() {
        out[i] = dot(q, &k[t * w + off..][..d]) * scale;
    }
}

/// [`head_scores`] with AVX2 and FMA: eight keys at a time, each its own chain, their lane
/// totals taken together ([`simd::avx2_lane_totals`]), then the rest one by one.
///
/// # Safety
/// The CPU has AVX2 and FMA; `d = q.len()` is a multiple of 8; for `i < n` the `d` floats
/// at `k + i * w` can be read; `out` holds at least `n` scores.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_scores(q: &[f32], k: *const f32, w: usize, n: usize, scale: f32, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let d = q.len();
    let sc = _mm256_set1_ps(scale);
    let mut i = 0;
    while i + 8 <= n {
        let kr: [*const f32; 8] = std::array::from_fn(|j| k.add((i + j) * w));
        let mut a = [_mm256_setzero_ps(); 8];
        for c in (0..d).step_by(8) {
            let u = _mm256_loadu_ps(q.as_ptr().add(c));
            a[0] = _mm256_fmadd_ps(u, _mm256_loadu_ps(kr[0].add(c)), a[0]);
            a[1] = _mm256_fmadd_ps(u, _mm256_loadu_ps(kr[1].add(c)), a[1]);
            a[2] = _mm256_fmadd_ps(u, _mm256_loadu_ps(kr[2].add(c)), a[2]);
            a[3] = _mm256_fmadd_ps(u, _mm256_loadu_ps(kr[3].add(c)), a[3]);
            a[4] = _mm256_fmadd_ps(u, _mm256_loadu_ps(kr[4].add(c)), a[4]);
            a[5] = _mm256_fmadd_ps(u, _mm256_loadu_ps(kr[5].add(c)), a[5]);
            a[6] = _mm256_fmadd_ps(u, _mm256_loadu_ps(kr[6].add(c)), a[6]);
            a[7] = _mm256_fmadd_ps(u, _mm256_loadu_ps(kr[7].add(c)), a[7]);
        }
        _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_mul_ps(simd::avx2_lane_totals(&a), sc));
        i += 8;
    }
    while i < n {
        let ki = k.add(i * w);
        let mut a = _mm256_setzero_ps();
        for c in (0..d).step_by(8) {
            a = _mm256_fmadd_ps(_mm256_loadu_ps(q.as_ptr().add(c)), _mm256_loadu_ps(ki.add(c)), a);
        }
        let mut l = [0f32; 8];
        _mm256_storeu_ps(l.as_mut_ptr(), a);
        out[i] = lane_total(&l) * scale;
        i += 1;
    }
}

/// `out[j] = sum over i of p[i] * v[(first + i) * w + off + j]`, from zero, in increasing
/// `i` by FMA, with the sums kept in registers.
fn weighted_values(p: &[f32], v: &[f32], w: usize, off: usize, first: usize, out: &mut [f32]) {
    let d = out.len();
    #[cfg(target_arch = "x86_64")]
    if d.is_multiple_of(8) && simd::has_avx2_fma() {
        assert!(p.is_empty() || (first + p.len() - 1) * w + off + d <= v.len());
        // SAFETY: AVX2 and FMA were detected just above; the assert bounds every value read
        // (`p.len()` positions `w` apart from `first`, `d` floats each), and the first one's
        // offset is in bounds (callers pass a query's own position at least).
        unsafe { fma_values(p, v.as_ptr().add(first * w + off), w, out) };
        return;
    }
    out.fill(0.0);
    for (i, p) in p.iter().enumerate() {
        for (o, x) in out.iter_mut().zip(&v[(first + i) * w + off..][..d]) {
            *o = p.mul_add(*x, *o);
        }
    }
}

/// [`weighted_values`] with AVX2 and FMA: 64 columns (8 chains) at a time, then 8.
///
/// # Safety
/// The CPU has AVX2 and FMA; `d = out.len()` is a multiple of 8; for `i < p.len()` the
/// `d` floats at `v + i * w` can be read.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_values(p: &[f32], v: *const f32, w: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let d = out.len();
    let mut c = 0;
    // 64 columns (8 chains) at a time, then 8.
    while c + 64 <= d {
        let mut a = [_mm256_setzero_ps(); 8];
        for (i, p) in p.iter().enumerate() {
            let (pv, row) = (_mm256_set1_ps(*p), v.add(i * w + c));
            for (j, a) in a.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(pv, _mm256_loadu_ps(row.add(8 * j)), *a);
            }
        }
        for (j, a) in a.iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add(c + 8 * j), *a);
        }
        c += 64;
    }
    while c < d {
        let mut a = _mm256_setzero_ps();
        for (i, p) in p.iter().enumerate() {
            a = _mm256_fmadd_ps(_mm256_set1_ps(*p), _mm256_loadu_ps(v.add(i * w + c)), a);
        }
        _mm256_storeu_ps(out.as_mut_ptr().add(c), a);
        c += 8;
    }
}

/// Eight lane sums over `i % 8` by FMA, then [`lane_total`], then the tail in order.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n8 = a.len() / 8 * 8;
    let mut acc = [0f32; 8];
    #[cfg(target_arch = "x86_64")]
    {
        if simd::has_avx2_fma() {
            // SAFETY: AVX2 and FMA were detected just above; both slices are `n8` floats long
            // (the kernel reads whole chunks of 8 of them).
            unsafe { fma_lanes(&a[..n8], &b[..n8], &mut acc) };
        } else {
            scalar_lanes(&a[..n8], &b[..n8], &mut acc);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    scalar_lanes(&a[..n8], &b[..n8], &mut acc);
    let mut s = lane_total(&acc);
    for i in n8..a.len() {
        s = a[i].mul_add(b[i], s);
    }
    s
}

/// `acc[l] = fma(a[i], b[i], acc[l])` for `i % 8 == l`, in increasing `i`.
fn scalar_lanes(a: &[f32], b: &[f32], acc: &mut [f32; 8]) {
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for l in 0..8 {
            acc[l] = x[l].mul_add(y[l], acc[l]);
        }
    }
}

/// [`scalar_lanes`] with AVX2 and FMA, the same bits.
///
/// # Safety
/// The CPU has AVX2 and FMA; `a` and `b` have the same length, a multiple of 8.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_lanes(a: &[f32], b: &[f32], acc: &mut [f32; 8]) {
    use std::arch::x86_64::*;
    let mut v = _mm256_loadu_ps(acc.as_ptr());
    for i in (0..a.len()).step_by(8) {
        v = _mm256_fmadd_ps(_mm256_loadu_ps(a.as_ptr().add(i)), _mm256_loadu_ps(b.as_ptr().add(i)), v);
    }
    _mm256_storeu_ps(acc.as_mut_ptr(), v);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::kv_cache::LayerKv;
    use candle_core::{Device, Tensor};

    fn randn(n: usize) -> Vec<f32> {
        Tensor::randn(0f32, 1.0, n, &Device::Cpu).unwrap().to_vec1::<f32>().unwrap()
    }

    /// Softmax attention in f64 with an explicit mask, over KV head `g` of `kv`.
    fn reference(q: &[f32], kv: &HostKv, pos: usize, first: usize, g: usize, d: usize, scale: f64) -> Vec<f64> {
        let (k, v, w) = (&kv.k, &kv.v, kv.width);
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
                    let want =
                        reference(&q[(row * n_q + hq) * d..][..d], h, row, first_visible(row, window), g, d, 0.3);
                    for (a, b) in out[(row * n_q + hq) * d..][..d].iter().zip(&want) {
                        assert!((*a as f64 - b).abs() < 1e-5, "{window:?} row {row} head {hq}: {a} vs {b}");
                    }
                }
            }
        }
    }

    #[test]
    fn vector_scores_and_values_equal_the_scalar_forms() {
        let (d, w, off, n) = (64, 3 * 64, 64, 19);
        let (q, k, p) = (randn(d), randn(n * w), randn(n));
        let mut got = vec![0f32; n];
        head_scores(&q, &k, w, off, 0..n, 0.125, &mut got);
        for (i, g) in got.iter().enumerate() {
            assert_eq!(g.to_bits(), (dot(&q, &k[i * w + off..][..d]) * 0.125).to_bits(), "score {i}");
        }
        let (mut fast, mut plain) = (vec![1f32; d], vec![0f32; d]);
        weighted_values(&p[..n - 1], &k, w, off, 1, &mut fast);
        for (i, p) in p[..n - 1].iter().enumerate() {
            for (o, x) in plain.iter_mut().zip(&k[(1 + i) * w + off..][..d]) {
                *o = p.mul_add(*x, *o);
            }
        }
        assert!(fast.iter().zip(&plain).all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    #[test]
    fn simd_dot_equals_the_scalar_one() {
        let (a, b) = (randn(72), randn(72));
        let (mut x, mut y) = ([0.25f32; 8], [0.25f32; 8]);
        scalar_lanes(&a, &b, &mut x);
        #[cfg(target_arch = "x86_64")]
        if simd::has_avx2_fma() {
            // SAFETY: AVX2 and FMA were detected just above; `a` and `b` are 72 floats each.
            unsafe { fma_lanes(&a, &b, &mut y) };
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
