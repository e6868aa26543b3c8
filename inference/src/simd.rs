//! SIMD in one place: which vector instructions this CPU has, and the math that several
//! modules share in a scalar and a vector form with the same bits (the kernels, the
//! attention, the MLP and sampling all rely on that equality).
//!
//! The vector forms are `unsafe fn`s with `#[target_feature]`: calling one is sound once
//! its `has_*` check has passed, and each caller's `// SAFETY:` comment names that check.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// AVX2 (the fast `exp` and the SiLU).
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
}

/// AVX2 and FMA (the attention's dot products).
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn has_avx2_fma() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// AVX2, FMA and F16C: the batched matmul's AVX2 kernels.
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn has_avx2_fma_f16c() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
}

/// AVX-512 F and DQ (and [`has_avx2_fma_f16c`]): the batched matmul's AVX-512 tiles, unless
/// `STUDIO_NO_AVX512` is set (to compare the two; they give the same bits).
pub fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *ON.get_or_init(|| {
            is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512dq")
                && has_avx2_fma_f16c()
                && std::env::var_os("STUDIO_NO_AVX512").is_none()
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// [`has_avx512`] with BW and VNNI: the integer kernels' `vpdpbusd`.
#[cfg(target_arch = "x86_64")]
pub fn has_avx512_vnni() -> bool {
    has_avx512() && is_x86_feature_detected!("avx512bw") && is_x86_feature_detected!("avx512vnni")
}

/// `((l0+l1) + (l2+l3)) + ((l4+l5) + (l6+l7))`: the fixed order in which eight lane sums
/// are added, the order two rounds of `hadd` and a sum of the 128-bit halves give.
#[inline]
pub fn lane_total(l: &[f32; 8]) -> f32 {
    ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))
}

/// [`lane_total`] of eight accumulators at once: lane `j` of the result is `a[j]`'s.
///
/// # Safety
/// The CPU has AVX2 ([`has_avx2`]).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
pub unsafe fn avx2_lane_totals(a: &[__m256; 8]) -> __m256 {
    let (h01, h23) = (_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
    let (h45, h67) = (_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
    // Per 128-bit half: accumulators 0..4 (resp. 4..8), lanes 0..4 (low half) or 4..8 (high).
    let (q0, q1) = (_mm256_hadd_ps(h01, h23), _mm256_hadd_ps(h45, h67));
    _mm256_add_ps(_mm256_permute2f128_ps(q0, q1, 0x20), _mm256_permute2f128_ps(q0, q1, 0x31))
}

/// `acc[l] += exp_shifted(x[i] - max)` for `i % 8 == l`, in increasing `i` (`x`: whole
/// chunks of 8), in f64: eight lanes at a time with AVX2, the same bits either way.
pub fn exp_sums(x: &[f32], max: f32, acc: &mut [f64; 8]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 was detected just above.
        unsafe { avx2_exp_sums(x, max, acc) };
        return;
    }
    scalar_exp_sums(x, max, acc);
}

/// [`exp_sums`] one element at a time.
fn scalar_exp_sums(x: &[f32], max: f32, acc: &mut [f64; 8]) {
    for c in x.chunks_exact(8) {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f64::from(exp_shifted(v - max));
        }
    }
}

// ln 2 in two parts, so that `n * ln 2` is exact enough; Cephes' expf polynomial.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const EXP_POLY: [f32; 6] = [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5];

/// `exp(x)` for `x <= 0` (a logit minus the row's maximum), within 2 ulp of libm:
/// `2^n * p(r)` with `r = x - n ln 2`. Below -87 (and for -inf) the result is 0; NaN stays
/// NaN. Separate multiplies and adds, so [`avx2_exp_shifted`] gives the same bits.
pub fn exp_shifted(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    if x < -87.0 {
        return 0.0;
    }
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = EXP_POLY[0];
    for c in &EXP_POLY[1..] {
        p = p * r + c;
    }
    let p = p * (r * r) + r + 1.0;
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// `x = exp_shifted(x - max)` for every element (max: the row's maximum).
pub fn exp_shifted_in_place(x: &mut [f32], max: f32) {
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        done = x.len() / 8 * 8;
        // SAFETY: AVX2 was detected just above; every load and store is one whole chunk of
        // 8 floats of `x[..done]`.
        unsafe {
            let m = _mm256_set1_ps(max);
            for c in x[..done].chunks_exact_mut(8) {
                let e = avx2_exp_shifted(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), m));
                _mm256_storeu_ps(c.as_mut_ptr(), e);
            }
        }
    }
    for v in &mut x[done..] {
        *v = exp_shifted(*v - max);
    }
}

/// [`exp_shifted`] on 8 lanes, with the same bits.
///
/// # Safety
/// The CPU has AVX2 ([`has_avx2`]).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
pub unsafe fn avx2_exp_shifted(v: __m256) -> __m256 {
    let floor_at = _mm256_set1_ps(-87.0);
    // Lanes below -87 (and -inf) give 0; NaN lanes stay NaN through the arithmetic.
    let under = _mm256_cmp_ps(v, floor_at, _CMP_LT_OQ);
    let vc = _mm256_blendv_ps(v, floor_at, under);
    let n = _mm256_floor_ps(_mm256_add_ps(
        _mm256_mul_ps(vc, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        _mm256_set1_ps(0.5),
    ));
    let r = _mm256_sub_ps(
        _mm256_sub_ps(vc, _mm256_mul_ps(n, _mm256_set1_ps(LN2_HI))),
        _mm256_mul_ps(n, _mm256_set1_ps(LN2_LO)),
    );
    let mut p = _mm256_set1_ps(EXP_POLY[0]);
    for k in &EXP_POLY[1..] {
        p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(*k));
    }
    let p = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(p, _mm256_mul_ps(r, r)), r), _mm256_set1_ps(1.0));
    let bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)), 23);
    _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(bits)))
}

/// [`scalar_exp_sums`] eight lanes at a time, with the same bits.
///
/// # Safety
/// The CPU has AVX2 ([`has_avx2`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2_exp_sums(x: &[f32], max: f32, acc: &mut [f64; 8]) {
    let (mut lo, mut hi) = (_mm256_loadu_pd(acc.as_ptr()), _mm256_loadu_pd(acc.as_ptr().add(4)));
    let m = _mm256_set1_ps(max);
    for c in x.chunks_exact(8) {
        let e = avx2_exp_shifted(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), m));
        lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    _mm256_storeu_pd(acc.as_mut_ptr(), lo);
    _mm256_storeu_pd(acc.as_mut_ptr().add(4), hi);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_within_two_ulp_of_libm_and_the_vector_form_is_identical() {
        let mut worst = 0i64;
        for i in 0..=200_000 {
            let x = -(i as f32) * 87.0 / 200_000.0;
            let (got, want) = (exp_shifted(x), x.exp());
            worst = worst.max((got.to_bits() as i64 - want.to_bits() as i64).abs());
        }
        assert!(worst <= 2, "{worst} ulp");
        assert_eq!(exp_shifted(0.0), 1.0);
        assert_eq!(exp_shifted(-100.0), 0.0);
        assert_eq!(exp_shifted(f32::NEG_INFINITY), 0.0);
        assert!(exp_shifted(f32::NAN).is_nan());
        let row: Vec<f32> =
            (0..4096).map(|i| ((i * 7919) % 2003) as f32 * -0.05 + 3.0).chain([f32::NEG_INFINITY; 8]).collect();
        let (mut a, mut b) = ([0.5f64; 8], [0.5f64; 8]);
        scalar_exp_sums(&row, 3.0, &mut a);
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: AVX2 was detected just above.
            unsafe { avx2_exp_sums(&row, 3.0, &mut b) };
            assert_eq!(a.map(f64::to_bits), b.map(f64::to_bits));
        }
    }
}
