//! The pieces both differentiable forwards are made of, written out in plain candle ops
//! (candle-nn's fused rms_norm, softmax and rotary kernels have no backward): a frozen
//! linear map, RMSNorm, rotary embeddings in both layouts, causal attention with GQA and
//! an optional sliding window, and the cross-entropy of chosen rows.
//!
//! Everything runs in the dtype of its weights: f32 for training, f64 for the
//! finite-difference checks.

use candle_core::{bail, CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Storage, Tensor, D};

/// A frozen weight `[out, in]` applied as `y = x Wᵀ`.
///
/// candle's matmul backward also computes the gradient of the weight, even when the weight
/// is a constant: for the tied 262k-row head of Gemma that is a 670 MB tensor per step, and
/// for every layer a second matmul as large as the forward's. Here the matmul is a custom op
/// whose backward gives only the input's gradient, `dx = dy W`.
#[derive(Debug, Clone)]
pub struct FrozenLinear {
    weight: Tensor,
}

impl FrozenLinear {
    pub fn new(weight: Tensor) -> Result<Self> {
        weight.dims2()?;
        Ok(Self { weight })
    }
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
    /// `x: [tokens, in]` to `[tokens, out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.contiguous()?.apply_op1(FrozenMatmul { weight: self.weight.clone() })
    }
}

struct FrozenMatmul {
    weight: Tensor,
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some((start, end)) = layout.contiguous_offsets() else { bail!("frozen-matmul: input not contiguous") };
        let x = match storage {
            CpuStorage::F32(v) => Tensor::from_slice(&v[start..end], layout.shape().clone(), &Device::Cpu)?,
            CpuStorage::F64(v) => Tensor::from_slice(&v[start..end], layout.shape().clone(), &Device::Cpu)?,
            _ => bail!("frozen-matmul: f32 or f64 input expected"),
        };
        let y = x.matmul(&self.weight.t()?)?;
        let (out, _) = y.storage_and_layout();
        match &*out {
            Storage::Cpu(s) => Ok((s.clone(), y.shape().clone())),
            _ => bail!("frozen-matmul: CPU only"),
        }
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, grad_y: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad_y.matmul(&self.weight)?))
    }
}

/// `x / sqrt(mean(x²) + eps) * w` over the last dimension, as candle-nn's fused kernel.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let rms = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?;
    x.broadcast_div(&rms)?.broadcast_mul(weight)
}

/// Softmax over the last dimension. The row maximum is subtracted for range only; it is
/// detached because the softmax does not depend on it.
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// `log softmax(x)` over the last dimension.
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    shifted.broadcast_sub(&shifted.exp()?.sum_keepdim(D::Minus1)?.log()?)
}

/// Sum over rows of `-log p(target)`: `logits: [n, vocab]`, one target per row.
pub fn cross_entropy_sum(logits: &Tensor, targets: &[u32]) -> Result<Tensor> {
    let targets = Tensor::new(targets, logits.device())?.unsqueeze(1)?;
    log_softmax(logits)?.gather(&targets, 1)?.sum_all()?.neg()
}

/// Rotary tables for positions `0..len`, computed as [`crate::nn::Rope`] computes them.
#[derive(Debug, Clone)]
pub struct Rotary {
    cos: Tensor,
    sin: Tensor,
    /// GGUF llama weights: pairs `(2i, 2i+1)` rotate together; otherwise `(i, i + d/2)`.
    interleaved: bool,
}

impl Rotary {
    pub fn new(
        head_dim: usize,
        base: f32,
        len: usize,
        interleaved: bool,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let inv_freq: Vec<f32> =
            (0..head_dim).step_by(2).map(|i| 1f32 / base.powf(i as f32 / head_dim as f32)).collect();
        let inv_freq = Tensor::new(inv_freq.as_slice(), device)?.reshape((1, head_dim / 2))?;
        let angles =
            Tensor::arange(0, len as u32, device)?.to_dtype(DType::F32)?.reshape((len, 1))?.matmul(&inv_freq)?;
        Ok(Self { cos: angles.cos()?.to_dtype(dtype)?, sin: angles.sin()?.to_dtype(dtype)?, interleaved })
    }

    /// `x: [heads, len, head_dim]` at positions `0..len`.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let (heads, len, d) = x.dims3()?;
        let half = d / 2;
        let (cos, sin) = (self.cos.narrow(0, 0, len)?, self.sin.narrow(0, 0, len)?);
        if self.interleaved {
            let pairs = x.reshape((heads, len, half, 2))?;
            let (x0, x1) = (pairs.narrow(3, 0, 1)?, pairs.narrow(3, 1, 1)?);
            let (cos, sin) = (cos.reshape((len, half, 1))?, sin.reshape((len, half, 1))?);
            let r0 = (x0.broadcast_mul(&cos)? - x1.broadcast_mul(&sin)?)?;
            let r1 = (x0.broadcast_mul(&sin)? + x1.broadcast_mul(&cos)?)?;
            Tensor::cat(&[r0, r1], 3)?.reshape((heads, len, d))
        } else {
            let (x0, x1) = (x.narrow(2, 0, half)?, x.narrow(2, half, half)?);
            let r0 = (x0.broadcast_mul(&cos)? - x1.broadcast_mul(&sin)?)?;
            let r1 = (x0.broadcast_mul(&sin)? + x1.broadcast_mul(&cos)?)?;
            Tensor::cat(&[r0, r1], 2)
        }
    }
}

/// `[len, len]`: 0 where query `i` may see key `j` (`j <= i`, and within the last
/// `window` positions when there is one, as [`crate::nn::attention`]'s `first_visible`),
/// minus infinity elsewhere.
pub fn causal_mask(len: usize, window: Option<usize>, dtype: DType, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..len)
        .flat_map(|i| {
            let first = match window {
                Some(w) if i + 1 > w => i + 1 - w,
                _ => 0,
            };
            (0..len).map(move |j| if j >= first && j <= i { 0.0 } else { f32::NEG_INFINITY })
        })
        .collect();
    Tensor::from_vec(mask, (len, len), device)?.to_dtype(dtype)
}

/// `[tokens, heads * d]` to `[heads, tokens, d]`.
pub fn to_heads(x: &Tensor, heads: usize, d: usize) -> Result<Tensor> {
    let tokens = x.dim(0)?;
    x.reshape((tokens, heads, d))?.transpose(0, 1)?.contiguous()
}

/// Causal attention of `q: [nq, T, d]` over `k, v: [nkv, T, d]` (query head `h` uses KV
/// head `h / (nq / nkv)`), scores scaled by `scale` and masked by `mask`; `[T, nq * d]`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor, scale: f64) -> Result<Tensor> {
    let (nq, len, d) = q.dims3()?;
    let nkv = k.dim(0)?;
    let (k, v) = (repeat_kv(k, nq / nkv)?, repeat_kv(v, nq / nkv)?);
    let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(mask)?;
    let y = softmax(&scores)?.matmul(&v)?;
    y.transpose(0, 1)?.reshape((len, nq * d))
}

/// `[nkv, T, d]` to `[nkv * group, T, d]`, each KV head repeated for its `group` query heads.
fn repeat_kv(x: &Tensor, group: usize) -> Result<Tensor> {
    if group == 1 {
        return Ok(x.clone());
    }
    let (nkv, len, d) = x.dims3()?;
    x.unsqueeze(1)?.broadcast_as((nkv, group, len, d))?.reshape((nkv * group, len, d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).unwrap().abs().unwrap().max_all().unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
    }

    #[test]
    fn written_out_ops_match_candles_fused_kernels() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (3, 5, 8), &dev).unwrap();
        let w = Tensor::randn(1f32, 0.1, 8, &dev).unwrap();
        assert!(max_diff(&rms_norm(&x, &w, 1e-6).unwrap(), &candle_nn::ops::rms_norm(&x, &w, 1e-6).unwrap()) < 1e-5);
        assert!(max_diff(&softmax(&x).unwrap(), &candle_nn::ops::softmax_last_dim(&x).unwrap()) < 1e-6);
        for interleaved in [false, true] {
            let ours = Rotary::new(8, 10_000.0, 5, interleaved, DType::F32, &dev).unwrap();
            let theirs = crate::nn::Rope::new(8, 10_000.0, 5, interleaved, &dev).unwrap();
            assert!(max_diff(&ours.apply(&x).unwrap(), &theirs.apply(&x, 0).unwrap()) < 1e-6, "{interleaved}");
        }
    }

    #[test]
    fn frozen_linear_matches_matmul_and_gives_the_input_gradient_only() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f64, 1.0, (4, 3), &dev).unwrap();
        let x = Var::from_tensor(&Tensor::randn(0f64, 1.0, (2, 3), &dev).unwrap()).unwrap();
        let lin = FrozenLinear::new(w.clone()).unwrap();
        let y = lin.forward(&x).unwrap();
        assert!(max_diff(&y, &x.matmul(&w.t().unwrap()).unwrap()) < 1e-12);
        let grads = y.sum_all().unwrap().backward().unwrap();
        // d(sum(x Wᵀ))/dx = 1 W: every row is the column sums of W.
        let want = Tensor::ones((2, 4), DType::F64, &dev).unwrap().matmul(&w).unwrap();
        assert!(max_diff(grads.get(&x).unwrap(), &want) < 1e-12);
        assert!(grads.get(&w).is_none());
    }

    #[test]
    fn sliding_window_mask_keeps_the_last_window_positions() {
        let m = causal_mask(4, Some(2), DType::F32, &Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
        let visible: Vec<Vec<bool>> = m.iter().map(|r| r.iter().map(|v| *v == 0.0).collect()).collect();
        assert_eq!(visible[0], [true, false, false, false]);
        assert_eq!(visible[3], [false, false, true, true]);
    }
}
