//! Rotary position embeddings, in both layouts (interleaved and half-split).

use candle_core::{DType, Device, Result, Tensor};

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
