//! RMSNorm, with the residual add that precedes it fused on the CPU.

use candle_core::{DType, Device, Result, Tensor};

use crate::numerics::invariant;
use crate::simd;
use crate::weight::Weight;

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
        Self::with_weight(w.dequantize(device)?.flatten_all()?, eps as f32)
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
/// vectorizes without changing it), then [`simd::lane_total`], then the tail.
fn host_rms_row(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let mut lanes = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            lanes[l] += c[l] * c[l];
        }
    }
    let sum2 = tail.iter().fold(simd::lane_total(&lanes), |a, v| a + v * v);
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
}
