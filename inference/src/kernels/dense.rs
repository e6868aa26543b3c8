//! The batched matmul's f32 kernels: dense weights (and quant types without an integer
//! kernel, dequantized once at load) as interleaved panels of [`PANEL`] rows, multiplied
//! by register tiles of rows of `x`.
//!
//! Output `(i, j)` is eight lane-wise FMA chains over `k` in steps of 8 (lane `l` takes
//! elements `8t + l`), starting from zero, then the fixed sum [`simd::lane_total`]
//! (`((l0+l1) + (l2+l3)) + ((l4+l5) + (l6+l7))`, the order two rounds of `hadd` give, so
//! eight outputs are summed at once). The AVX2 tiles, the AVX-512 tiles (two weight rows
//! per vector) and the portable fallback (the same lanes with `mul_add`) give the same
//! bits, whatever the tiling.

use std::ops::Range;

use super::aligned::Aligned;
use super::tiles::even_tiles;
use crate::simd;

/// Dense weight rows per f32 panel. A panel
/// is stored interleaved: element `(c, p)` at `(p / 8) * 64 + c * 8 + p % 8`, so that the
/// 8 rows' lanes for one step of 8 columns are 256 contiguous bytes (4 AVX-512 vectors,
/// each holding two weight rows' lanes).
pub(super) const PANEL: usize = 8;
/// Most rows of `x` in one register tile (of 2 weight rows): 12 accumulators, 2 weight
/// vectors and one `x` vector fit the 16 ymm registers (a spilled accumulator turns the
/// loop into a store-to-load chain and halves its speed), and 10 to 12 independent FMA
/// chains cover the FMA latency on two ports.
const MAX_TILE_ROWS: usize = 6;

/// The f32 register tiles of a row block: [`even_tiles`] of 6 (16 rows: 6 + 5 + 5, every
/// tile with 10+ FMA chains); 3 rows become 2 + 1.
pub(super) fn row_tiles(rows: Range<usize>) -> Vec<(usize, usize)> {
    even_tiles(rows, MAX_TILE_ROWS)
        .into_iter()
        .flat_map(|(i, r)| {
            // No 3-row kernel: 6 chains would leave the FMA ports idle half the time.
            if r == 3 {
                vec![(i, 2), (i + 2, 1)]
            } else {
                vec![(i, r)]
            }
        })
        .collect()
}

/// Row-major `[n, kp]` rows as interleaved panels ([`PANEL`]), zero padded to whole panels.
pub(super) fn interleave(rows: &[f32], n: usize, kp: usize) -> Aligned {
    let mut out = Aligned::zeros(n.div_ceil(PANEL) * PANEL * kp);
    let o = out.as_mut_slice();
    for (r, row) in rows.chunks_exact(kp).take(n).enumerate() {
        let base = (r / PANEL) * PANEL * kp + (r % PANEL) * 8;
        for (t, lanes) in row.chunks_exact(8).enumerate() {
            o[base + t * PANEL * 8..][..8].copy_from_slice(lanes);
        }
    }
    out
}

/// The inverse of [`interleave`]: `[n, kp]` row-major.
pub(super) fn deinterleave(data: &[f32], n: usize, kp: usize) -> Vec<f32> {
    let mut rows = vec![0f32; n * kp];
    for (r, row) in rows.chunks_exact_mut(kp).enumerate() {
        let base = (r / PANEL) * PANEL * kp + (r % PANEL) * 8;
        for (t, lanes) in row.chunks_exact_mut(8).enumerate() {
            lanes.copy_from_slice(&data[base + t * PANEL * 8..][..8]);
        }
    }
    rows
}

/// `r` rows (`1..=6`, not 3: see [`row_tiles`]) of `x` (at `x`, `k` apart) times the
/// whole panel `w` over columns `cols`: the lanes of `PANEL` accumulators per row at `acc`
/// (rows `acc_row` apart), zero first when `fresh`. One AVX-512 tile covers the panel;
/// otherwise [`tile`]s of 2, 4 or 8 of its weight rows (the fewer rows of `x`, the more).
///
/// # Safety
/// As for [`tile`] with `R = r` and `C = PANEL`.
#[allow(clippy::too_many_arguments)] // a kernel's pointers, strides and column range
#[inline]
pub(super) unsafe fn panel_tile(
    r: usize,
    x: *const f32,
    w: *const f32,
    k: usize,
    cols: Range<usize>,
    fresh: bool,
    acc: *mut f32,
    acc_row: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if simd::has_avx512() {
        // The same lanes, two weight rows per vector: a whole panel per tile.
        match r {
            6 => x512::tile::<6>(x, w, k, cols, fresh, acc, acc_row),
            5 => x512::tile::<5>(x, w, k, cols, fresh, acc, acc_row),
            4 => x512::tile::<4>(x, w, k, cols, fresh, acc, acc_row),
            2 => x512::tile::<2>(x, w, k, cols, fresh, acc, acc_row),
            _ => x512::tile::<1>(x, w, k, cols, fresh, acc, acc_row),
        }
        return;
    }
    macro_rules! tiles {
        ($r:literal, $c:literal) => {
            for c0 in (0..PANEL).step_by($c) {
                tile::<$r, $c>(x, w.add(c0 * 8), k, cols.clone(), fresh, acc.add(c0 * 8), acc_row);
            }
        };
    }
    match r {
        6 => tiles!(6, 2),
        5 => tiles!(5, 2),
        4 => tiles!(4, 2),
        2 => tiles!(2, 4),
        _ => tiles!(1, 8),
    }
}

/// For `r < R`, `c < C`: lane `l` of `acc[r][c]` (at `acc + r * acc_row + c * 8`; zero
/// first when `fresh`) gets `x[r][p] * w[c][p]` added by FMA for `p` in `cols` with
/// `p % 8 == l`, in increasing `p`. Rows of `x` are `k` apart; `w` is a panel
/// ([`PANEL`]) from its column `c0`: `w[c][p]` at `(p / 8) * 64 + c * 8 + p % 8`.
///
/// # Safety
/// `cols` starts and ends on multiples of 8; for `r < R`, `c < C` and `p` in `cols`,
/// `x + r * k + p` and `w + (p / 8) * 64 + c * 8 + p % 8` can be read, and the 8 floats
/// at `acc + r * acc_row + c * 8` can be written (and read unless `fresh`).
#[inline]
pub(super) unsafe fn tile<const R: usize, const C: usize>(
    x: *const f32,
    w: *const f32,
    k: usize,
    cols: Range<usize>,
    fresh: bool,
    acc: *mut f32,
    acc_row: usize,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if simd::has_avx2_fma_f16c() {
            return x86::tile::<R, C>(x, w, k, cols, fresh, acc, acc_row);
        }
    }
    portable_tile::<R, C>(x, w, k, cols, fresh, acc, acc_row)
}

/// The same lanes as the AVX2 kernel, in scalar code.
///
/// # Safety
/// As for [`tile`].
unsafe fn portable_tile<const R: usize, const C: usize>(
    x: *const f32,
    w: *const f32,
    k: usize,
    cols: Range<usize>,
    fresh: bool,
    acc: *mut f32,
    acc_row: usize,
) {
    for r in 0..R {
        for c in 0..C {
            let a = acc.add(r * acc_row + c * 8);
            if fresh {
                std::ptr::write_bytes(a, 0, 8);
            }
            for p in cols.clone() {
                let l = a.add(p % 8);
                *l = (*x.add(r * k + p)).mul_add(*w.add((p / 8) * 64 + c * 8 + p % 8), *l);
            }
        }
    }
}

/// For each of the 8 columns' lanes `l = lanes[8c..8c + 8]`: [`simd::lane_total`].
pub(super) fn lane_sums(lanes: &[f32; 8 * PANEL], out: &mut [f32; PANEL]) {
    #[cfg(target_arch = "x86_64")]
    {
        if simd::has_avx2_fma_f16c() {
            // SAFETY: AVX2 was detected just above (the kernel takes references only).
            return unsafe { x86::lane_sums(lanes, out) };
        }
    }
    for (o, l) in out.iter_mut().zip(lanes.as_chunks::<8>().0) {
        *o = simd::lane_total(l);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use std::ops::Range;

    /// Explicit accumulators: LLVM spills and shuffles arrays of `__m256` in this loop.
    ///
    /// # Safety
    /// As for [`super::tile`]; the CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile<const R: usize, const C: usize>(
        x: *const f32,
        w: *const f32,
        k: usize,
        cols: Range<usize>,
        fresh: bool,
        acc: *mut f32,
        acc_row: usize,
    ) {
        match (R, C) {
            (6, 2) => tile_6x2(x, w, k, cols, fresh, acc, acc_row),
            (5, 2) => tile_5x2(x, w, k, cols, fresh, acc, acc_row),
            (4, 2) => tile_4x2(x, w, k, cols, fresh, acc, acc_row),
            (2, 4) => tile_2x4(x, w, k, cols, fresh, acc, acc_row),
            (1, 8) => tile_1x8(x, w, cols, fresh, acc),
            _ => {
                for r in 0..R {
                    for c in 0..C {
                        let a = acc.add(r * acc_row + c * 8);
                        let mut v = if fresh { _mm256_setzero_ps() } else { _mm256_loadu_ps(a) };
                        for p in cols.clone().step_by(8) {
                            v = _mm256_fmadd_ps(
                                _mm256_loadu_ps(x.add(r * k + p)),
                                _mm256_loadu_ps(w.add(p * 8 + c * 8)),
                                v,
                            );
                        }
                        _mm256_storeu_ps(a, v);
                    }
                }
            }
        }
    }

    /// # Safety
    /// As for [`tile`] with `R × C = 6 × 2`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile_6x2(
        x: *const f32,
        w: *const f32,
        k: usize,
        cols: Range<usize>,
        fresh: bool,
        acc: *mut f32,
        ar: usize,
    ) {
        let ld =
            |r: usize, c: usize| if fresh { _mm256_setzero_ps() } else { _mm256_loadu_ps(acc.add(r * ar + c * 8)) };
        let (mut a00, mut a01, mut a10, mut a11) = (ld(0, 0), ld(0, 1), ld(1, 0), ld(1, 1));
        let (mut a20, mut a21, mut a30, mut a31) = (ld(2, 0), ld(2, 1), ld(3, 0), ld(3, 1));
        let (mut a40, mut a41, mut a50, mut a51) = (ld(4, 0), ld(4, 1), ld(5, 0), ld(5, 1));
        let (w0, w1) = (w, w.add(8));
        let mut p = cols.start;
        while p < cols.end {
            let (v0, v1) = (_mm256_loadu_ps(w0.add(p * 8)), _mm256_loadu_ps(w1.add(p * 8)));
            let u = _mm256_loadu_ps(x.add(p));
            a00 = _mm256_fmadd_ps(u, v0, a00);
            a01 = _mm256_fmadd_ps(u, v1, a01);
            let u = _mm256_loadu_ps(x.add(k + p));
            a10 = _mm256_fmadd_ps(u, v0, a10);
            a11 = _mm256_fmadd_ps(u, v1, a11);
            let u = _mm256_loadu_ps(x.add(2 * k + p));
            a20 = _mm256_fmadd_ps(u, v0, a20);
            a21 = _mm256_fmadd_ps(u, v1, a21);
            let u = _mm256_loadu_ps(x.add(3 * k + p));
            a30 = _mm256_fmadd_ps(u, v0, a30);
            a31 = _mm256_fmadd_ps(u, v1, a31);
            let u = _mm256_loadu_ps(x.add(4 * k + p));
            a40 = _mm256_fmadd_ps(u, v0, a40);
            a41 = _mm256_fmadd_ps(u, v1, a41);
            let u = _mm256_loadu_ps(x.add(5 * k + p));
            a50 = _mm256_fmadd_ps(u, v0, a50);
            a51 = _mm256_fmadd_ps(u, v1, a51);
            p += 8;
        }
        for (r, row) in [[a00, a01], [a10, a11], [a20, a21], [a30, a31], [a40, a41], [a50, a51]].iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                _mm256_storeu_ps(acc.add(r * ar + c * 8), *v);
            }
        }
    }

    /// # Safety
    /// As for [`tile`] with `R × C = 5 × 2`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile_5x2(
        x: *const f32,
        w: *const f32,
        k: usize,
        cols: Range<usize>,
        fresh: bool,
        acc: *mut f32,
        ar: usize,
    ) {
        let ld =
            |r: usize, c: usize| if fresh { _mm256_setzero_ps() } else { _mm256_loadu_ps(acc.add(r * ar + c * 8)) };
        let (mut a00, mut a01, mut a10, mut a11) = (ld(0, 0), ld(0, 1), ld(1, 0), ld(1, 1));
        let (mut a20, mut a21, mut a30, mut a31) = (ld(2, 0), ld(2, 1), ld(3, 0), ld(3, 1));
        let (mut a40, mut a41) = (ld(4, 0), ld(4, 1));
        let (w0, w1) = (w, w.add(8));
        let mut p = cols.start;
        while p < cols.end {
            let (v0, v1) = (_mm256_loadu_ps(w0.add(p * 8)), _mm256_loadu_ps(w1.add(p * 8)));
            let u = _mm256_loadu_ps(x.add(p));
            a00 = _mm256_fmadd_ps(u, v0, a00);
            a01 = _mm256_fmadd_ps(u, v1, a01);
            let u = _mm256_loadu_ps(x.add(k + p));
            a10 = _mm256_fmadd_ps(u, v0, a10);
            a11 = _mm256_fmadd_ps(u, v1, a11);
            let u = _mm256_loadu_ps(x.add(2 * k + p));
            a20 = _mm256_fmadd_ps(u, v0, a20);
            a21 = _mm256_fmadd_ps(u, v1, a21);
            let u = _mm256_loadu_ps(x.add(3 * k + p));
            a30 = _mm256_fmadd_ps(u, v0, a30);
            a31 = _mm256_fmadd_ps(u, v1, a31);
            let u = _mm256_loadu_ps(x.add(4 * k + p));
            a40 = _mm256_fmadd_ps(u, v0, a40);
            a41 = _mm256_fmadd_ps(u, v1, a41);
            p += 8;
        }
        for (r, row) in [[a00, a01], [a10, a11], [a20, a21], [a30, a31], [a40, a41]].iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                _mm256_storeu_ps(acc.add(r * ar + c * 8), *v);
            }
        }
    }

    /// # Safety
    /// As for [`tile`] with `R × C = 4 × 2`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile_4x2(
        x: *const f32,
        w: *const f32,
        k: usize,
        cols: Range<usize>,
        fresh: bool,
        acc: *mut f32,
        ar: usize,
    ) {
        let ld =
            |r: usize, c: usize| if fresh { _mm256_setzero_ps() } else { _mm256_loadu_ps(acc.add(r * ar + c * 8)) };
        let (mut a00, mut a01, mut a10, mut a11) = (ld(0, 0), ld(0, 1), ld(1, 0), ld(1, 1));
        let (mut a20, mut a21, mut a30, mut a31) = (ld(2, 0), ld(2, 1), ld(3, 0), ld(3, 1));
        let (w0, w1) = (w, w.add(8));
        let mut p = cols.start;
        while p < cols.end {
            let (v0, v1) = (_mm256_loadu_ps(w0.add(p * 8)), _mm256_loadu_ps(w1.add(p * 8)));
            let u = _mm256_loadu_ps(x.add(p));
            a00 = _mm256_fmadd_ps(u, v0, a00);
            a01 = _mm256_fmadd_ps(u, v1, a01);
            let u = _mm256_loadu_ps(x.add(k + p));
            a10 = _mm256_fmadd_ps(u, v0, a10);
            a11 = _mm256_fmadd_ps(u, v1, a11);
            let u = _mm256_loadu_ps(x.add(2 * k + p));
            a20 = _mm256_fmadd_ps(u, v0, a20);
            a21 = _mm256_fmadd_ps(u, v1, a21);
            let u = _mm256_loadu_ps(x.add(3 * k + p));
            a30 = _mm256_fmadd_ps(u, v0, a30);
            a31 = _mm256_fmadd_ps(u, v1, a31);
            p += 8;
        }
        for (r, row) in [[a00, a01], [a10, a11], [a20, a21], [a30, a31]].iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                _mm256_storeu_ps(acc.add(r * ar + c * 8), *v);
            }
        }
    }

    /// # Safety
    /// As for [`tile`] with `R × C = 2 × 4`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile_2x4(
        x: *const f32,
        w: *const f32,
        k: usize,
        cols: Range<usize>,
        fresh: bool,
        acc: *mut f32,
        ar: usize,
    ) {
        let ld =
            |r: usize, c: usize| if fresh { _mm256_setzero_ps() } else { _mm256_loadu_ps(acc.add(r * ar + c * 8)) };
        let (mut a00, mut a01, mut a02, mut a03) = (ld(0, 0), ld(0, 1), ld(0, 2), ld(0, 3));
        let (mut a10, mut a11, mut a12, mut a13) = (ld(1, 0), ld(1, 1), ld(1, 2), ld(1, 3));
        let (w0, w1, w2, w3) = (w, w.add(8), w.add(16), w.add(24));
        let mut p = cols.start;
        while p < cols.end {
            let (v0, v1, v2, v3) = (
                _mm256_loadu_ps(w0.add(p * 8)),
                _mm256_loadu_ps(w1.add(p * 8)),
                _mm256_loadu_ps(w2.add(p * 8)),
                _mm256_loadu_ps(w3.add(p * 8)),
            );
            let u = _mm256_loadu_ps(x.add(p));
            a00 = _mm256_fmadd_ps(u, v0, a00);
            a01 = _mm256_fmadd_ps(u, v1, a01);
            a02 = _mm256_fmadd_ps(u, v2, a02);
            a03 = _mm256_fmadd_ps(u, v3, a03);
            let u = _mm256_loadu_ps(x.add(k + p));
            a10 = _mm256_fmadd_ps(u, v0, a10);
            a11 = _mm256_fmadd_ps(u, v1, a11);
            a12 = _mm256_fmadd_ps(u, v2, a12);
            a13 = _mm256_fmadd_ps(u, v3, a13);
            p += 8;
        }
        for (r, row) in [[a00, a01, a02, a03], [a10, a11, a12, a13]].iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                _mm256_storeu_ps(acc.add(r * ar + c * 8), *v);
            }
        }
    }

    /// # Safety
    /// As for [`tile`] with `R × C = 1 × 8` (`k` and `acc_row` play no part).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile_1x8(x: *const f32, w: *const f32, cols: Range<usize>, fresh: bool, acc: *mut f32) {
        let ld = |c: usize| if fresh { _mm256_setzero_ps() } else { _mm256_loadu_ps(acc.add(c * 8)) };
        let (mut a0, mut a1, mut a2, mut a3) = (ld(0), ld(1), ld(2), ld(3));
        let (mut a4, mut a5, mut a6, mut a7) = (ld(4), ld(5), ld(6), ld(7));
        let mut p = cols.start;
        while p < cols.end {
            let u = _mm256_loadu_ps(x.add(p));
            a0 = _mm256_fmadd_ps(u, _mm256_loadu_ps(w.add(p * 8)), a0);
            a1 = _mm256_fmadd_ps(u, _mm256_loadu_ps(w.add(p * 8 + 8)), a1);
            a2 = _mm256_fmadd_ps(u, _mm256_loadu_ps(w.add(p * 8 + 2 * 8)), a2);
            a3 = _mm256_fmadd_ps(u, _mm256_loadu_ps(w.add(p * 8 + 3 * 8)), a3);
            a4 = _mm256_fmadd_ps(u, _mm256_loadu_ps(w.add(p * 8 + 4 * 8)), a4);
            a5 = _mm256_fmadd_ps(u, _mm256_loadu_ps(w.add(p * 8 + 5 * 8)), a5);
            a6 = _mm256_fmadd_ps(u, _mm256_loadu_ps(w.add(p * 8 + 6 * 8)), a6);
            a7 = _mm256_fmadd_ps(u, _mm256_loadu_ps(w.add(p * 8 + 7 * 8)), a7);
            p += 8;
        }
        for (c, v) in [a0, a1, a2, a3, a4, a5, a6, a7].iter().enumerate() {
            _mm256_storeu_ps(acc.add(c * 8), *v);
        }
    }

    /// [`crate::simd::avx2_lane_totals`] of the 8 columns' lanes: two rounds of `hadd`
    /// pair adjacent lanes, then the 128-bit halves are added.
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn lane_sums(lanes: &[f32; 64], out: &mut [f32; 8]) {
        let l = lanes.as_ptr();
        let a = [
            _mm256_loadu_ps(l),
            _mm256_loadu_ps(l.add(8)),
            _mm256_loadu_ps(l.add(16)),
            _mm256_loadu_ps(l.add(24)),
            _mm256_loadu_ps(l.add(32)),
            _mm256_loadu_ps(l.add(40)),
            _mm256_loadu_ps(l.add(48)),
            _mm256_loadu_ps(l.add(56)),
        ];
        _mm256_storeu_ps(out.as_mut_ptr(), crate::simd::avx2_lane_totals(&a));
    }
}

#[cfg(target_arch = "x86_64")]
mod x512 {
    use std::arch::x86_64::*;

    use std::ops::Range;

    /// `R` rows of `x` times a whole panel: vector `j` of a step holds weight rows `2j` and
    /// `2j + 1` (8 lanes each), `x`'s 8 lanes are repeated in both halves, so each lane
    /// runs the same FMA chain as [`super::tile`]'s. `4R` accumulators, 4 weight vectors
    /// and one `x` vector fit the 32 zmm registers up to `R = 6`.
    ///
    /// # Safety
    /// As for [`super::tile`] with `C = 8` (the whole panel: 64 floats of `acc` per row);
    /// the CPU has AVX-512 F and DQ, AVX2 and FMA.
    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    pub(super) unsafe fn tile<const R: usize>(
        x: *const f32,
        w: *const f32,
        k: usize,
        cols: Range<usize>,
        fresh: bool,
        acc: *mut f32,
        acc_row: usize,
    ) {
        let mut a = [[_mm512_setzero_ps(); 4]; R];
        if !fresh {
            for (r, row) in a.iter_mut().enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = _mm512_loadu_ps(acc.add(r * acc_row + 16 * j));
                }
            }
        }
        let mut p = cols.start;
        while p < cols.end {
            let wp = w.add(p * 8);
            let v = [
                _mm512_loadu_ps(wp),
                _mm512_loadu_ps(wp.add(16)),
                _mm512_loadu_ps(wp.add(32)),
                _mm512_loadu_ps(wp.add(48)),
            ];
            for (r, row) in a.iter_mut().enumerate() {
                let u = _mm512_broadcast_f32x8(_mm256_loadu_ps(x.add(r * k + p)));
                for (j, acc) in row.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(u, v[j], *acc);
                }
            }
            p += 8;
        }
        for (r, row) in a.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                _mm512_storeu_ps(acc.add(r * acc_row + 16 * j), *v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn portable_kernel_equals_the_simd_one() {
        let k = 40;
        let xs = Tensor::randn(0f32, 1.0, 6 * k, &Device::Cpu).unwrap().to_vec1::<f32>().unwrap();
        let ws = Tensor::randn(0f32, 1.0, 8 * k, &Device::Cpu).unwrap().to_vec1::<f32>().unwrap();
        // Each tile shape writes its own lanes of one accumulator block (rows 64 apart).
        let (mut a, mut b) = (vec![0.5f32; 6 * 64 + 64], vec![0.5f32; 6 * 64 + 64]);
        // SAFETY: `x` holds 6 rows of `k`, `w` one panel of `k` columns; tile `i` writes
        // rows 64 apart from float `8i` on, at most 6 rows of 64 lanes: within `a` and `b`.
        unsafe {
            for (i, (r, c)) in [(6, 2), (5, 2), (4, 2), (2, 4), (1, 8)].into_iter().enumerate() {
                let (a, b) = (a.as_mut_ptr().add(i * 8), b.as_mut_ptr().add(i * 8));
                let (x, w) = (xs.as_ptr(), ws.as_ptr());
                match (r, c) {
                    (6, 2) => (
                        tile::<6, 2>(x, w, k, 8..40, false, a, 64),
                        portable_tile::<6, 2>(x, w, k, 8..40, false, b, 64),
                    ),
                    (5, 2) => {
                        (tile::<5, 2>(x, w, k, 8..40, true, a, 64), portable_tile::<5, 2>(x, w, k, 8..40, true, b, 64))
                    }
                    (4, 2) => {
                        (tile::<4, 2>(x, w, k, 0..16, true, a, 64), portable_tile::<4, 2>(x, w, k, 0..16, true, b, 64))
                    }
                    (2, 4) => (
                        tile::<2, 4>(x, w, k, 8..40, false, a, 64),
                        portable_tile::<2, 4>(x, w, k, 8..40, false, b, 64),
                    ),
                    _ => {
                        (tile::<1, 8>(x, w, k, 8..40, true, a, 64), portable_tile::<1, 8>(x, w, k, 8..40, true, b, 64))
                    }
                };
            }
        }
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));

        // AVX-512 tiles cover a whole panel: compare each with the portable lanes.
        #[cfg(target_arch = "x86_64")]
        if simd::has_avx512() {
            for r in [1, 2, 4, 5, 6] {
                for (cols, fresh) in [(8..40, false), (0..16, true)] {
                    let (mut a, mut b) = (vec![0.25f32; 6 * 64], vec![0.25f32; 6 * 64]);
                    let (x, w) = (xs.as_ptr(), ws.as_ptr());
                    // SAFETY: AVX-512 was detected above; `x` holds 6 rows of `k`, `w` one
                    // panel, and each tile writes at most 6 rows of 64 lanes, `a`'s and `b`'s size.
                    unsafe {
                        let (ap, bp) = (a.as_mut_ptr(), b.as_mut_ptr());
                        macro_rules! both {
                            ($($r:literal)*) => {
                                match r {
                                    $($r => {
                                        x512::tile::<$r>(x, w, k, cols.clone(), fresh, ap, 64);
                                        portable_tile::<$r, 8>(x, w, k, cols, fresh, bp, 64);
                                    })*
                                    _ => unreachable!(),
                                }
                            };
                        }
                        both!(1 2 4 5 6);
                    }
                    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "avx-512 {r} rows");
                }
            }
        }
    }

    #[test]
    fn interleaved_panels_round_trip() {
        let (n, kp) = (13, 24);
        let rows: Vec<f32> = (0..n * kp).map(|i| i as f32).collect();
        let panels = interleave(&rows, n, kp);
        assert_eq!(panels.as_slice().len(), 16 * kp);
        assert_eq!(panels.as_slice().as_ptr() as usize % 64, 0);
        // Row 9, column 17: panel 1, row 1 of it, step 2, lane 1.
        assert_eq!(panels.as_slice()[8 * kp + 2 * 64 + 8 + 1], (9 * kp + 17) as f32);
        assert_eq!(deinterleave(panels.as_slice(), n, kp), rows);
    }

    #[test]
    fn row_tiles_are_few_and_even() {
        let sizes = |m: usize| row_tiles(10..10 + m).into_iter().map(|(_, r)| r).collect::<Vec<_>>();
        assert_eq!(sizes(16), vec![6, 5, 5]);
        assert_eq!(sizes(12), vec![6, 6]);
        assert_eq!(sizes(3), vec![2, 1]);
        assert_eq!(sizes(7), vec![4, 2, 1]);
        assert_eq!(sizes(1), vec![1]);
        for m in 1..70 {
            let t = row_tiles(10..10 + m);
            assert_eq!(t.iter().map(|(_, r)| r).sum::<usize>(), m);
            assert!(t.windows(2).all(|w| w[0].0 + w[0].1 == w[1].0) && t[0].0 == 10);
            assert!(t.iter().all(|&(_, r)| (1..=6).contains(&r) && r != 3));
        }
    }

    #[test]
    fn simd_lane_sums_equal_the_scalar_order() {
        let lanes: [f32; 64] = std::array::from_fn(|i| ((i * 7919) % 101) as f32 * 0.37 - 18.0 + 1e-7 * i as f32);
        let mut got = [0f32; 8];
        lane_sums(&lanes, &mut got);
        for (c, g) in got.iter().enumerate() {
            let l = &lanes[8 * c..8 * c + 8];
            let want = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
            assert_eq!(g.to_bits(), want.to_bits(), "column {c}");
        }
    }
}
