//! The gated MLP's activation on the CPU: `silu(gate) * up` in one pass.

use std::ops::Range;

use candle_core::{Result, Tensor};

use crate::kernels::pool;
use crate::simd::{self, exp_shifted};

/// `silu(gate) * up` for `gate_up: [tokens, 2 ff]` (gate then up, side by side) on the
/// CPU, in one pass spread over the matmul pool: `g * s * u` with the logistic `s` from
/// [`exp_shifted`] (`1 / (1 + e)` or `e / (1 + e)`, `e = exp(-|g|)`), the
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
            // SAFETY: `out` holds `tokens * ff` floats and outlives the pool call; row `i` is
            // in exactly one work item, so these mutable slices never overlap.
            let o = unsafe { std::slice::from_raw_parts_mut((out_ptr as *mut f32).add(i * ff), ff) };
            silu_mul_row(g, u, o);
        }
    };
    if tokens * ff >= 1 << 13 {
        let pool = pool::pool();
        pool.run(tokens, tokens.div_ceil(2 * pool.threads()), &work);
    } else {
        work(0..tokens);
    }
    Tensor::from_vec(out, (tokens, ff), gate_up.device())
}

fn silu_mul_row(g: &[f32], u: &[f32], out: &mut [f32]) {
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if simd::has_avx2() {
        done = g.len() / 8 * 8;
        // SAFETY: AVX2 was detected just above (the kernel takes slices, each `done` long).
        unsafe { avx2_silu_mul(&g[..done], &u[..done], &mut out[..done]) };
    }
    for ((o, &g), &u) in out[done..].iter_mut().zip(&g[done..]).zip(&u[done..]) {
        let e = exp_shifted(-g.abs());
        let s = if g >= 0.0 { 1.0 / (1.0 + e) } else { e / (1.0 + e) };
        *o = g * s * u;
    }
}

/// [`silu_mul_row`]'s arithmetic on 8 lanes at a time (whole chunks of 8 of equal slices),
/// with the same bits.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2_silu_mul(g: &[f32], u: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let (one, sign) = (_mm256_set1_ps(1.0), _mm256_set1_ps(-0.0));
    for ((g, u), o) in g.chunks_exact(8).zip(u.chunks_exact(8)).zip(out.chunks_exact_mut(8)) {
        let g = _mm256_loadu_ps(g.as_ptr());
        let e = simd::avx2_exp_shifted(_mm256_or_ps(g, sign));
        let den = _mm256_add_ps(one, e);
        let neg = _mm256_cmp_ps(g, _mm256_setzero_ps(), _CMP_LT_OQ);
        let s = _mm256_div_ps(_mm256_blendv_ps(one, e, neg), den);
        _mm256_storeu_ps(o.as_mut_ptr(), _mm256_mul_ps(_mm256_mul_ps(g, s), _mm256_loadu_ps(u.as_ptr())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

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
                let e = exp_shifted(-g.abs());
                let s = if g >= 0.0 { 1.0 / (1.0 + e) } else { e / (1.0 + e) };
                assert_eq!((g * s * u).to_bits(), out[j].to_bits(), "column {j}");
            }
        }
        assert!(silu_mul(&gu, ff + 1).is_err());
    }
}
