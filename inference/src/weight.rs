//! A 2-D weight as stored, and the slices of it that tensor parallelism cuts.
//!
//! Quantized weights stay quantized: a row slice cuts whole rows; a column slice cuts at
//! quant-block boundaries, and when it cannot (the split is not block-aligned) the tensor
//! is dequantized and the load log says so.

use std::ops::Range;
use std::sync::Arc;

use candle_core::quantized::{QMatMul, QStorage, QTensor};
use candle_core::{DType, Device, Result, Tensor};

/// A 2-D weight `[out, in]` as stored: quantized (GGUF) or dense (safetensors, norms).
#[derive(Debug, Clone)]
pub enum Weight {
    Quant(Arc<QTensor>),
    Dense(Tensor),
}

impl Weight {
    pub fn dims2(&self) -> Result<(usize, usize)> {
        match self {
            Weight::Quant(q) => q.shape().dims2(),
            Weight::Dense(t) => t.dims2(),
        }
    }

    /// Quant block size along the input dimension (1 for dense weights).
    pub fn block_size(&self) -> usize {
        match self {
            Weight::Quant(q) => q.dtype().block_size(),
            Weight::Dense(_) => 1,
        }
    }

    pub fn device(&self) -> Device {
        match self {
            Weight::Quant(q) => q.device(),
            Weight::Dense(t) => t.device().clone(),
        }
    }

    pub fn dequantize(&self, device: &Device) -> Result<Tensor> {
        match self {
            Weight::Quant(q) => q.dequantize(device),
            Weight::Dense(t) => t.to_dtype(DType::F32),
        }
    }

    /// Output rows `range` (whole rows: always possible without dequantizing).
    pub fn rows(&self, range: Range<usize>) -> Result<Weight> {
        let (out, inp) = self.dims2()?;
        if range == (0..out) {
            return Ok(self.clone());
        }
        match self {
            Weight::Dense(t) => Ok(Weight::Dense(t.narrow(0, range.start, range.len())?)),
            Weight::Quant(q) => {
                let row_bytes = inp / q.dtype().block_size() * q.dtype().type_size();
                let data = q.data()?;
                let bytes = &data[range.start * row_bytes..range.end * row_bytes];
                let storage = QStorage::from_data(bytes.to_vec().into(), &q.device(), q.dtype())?;
                Ok(Weight::Quant(Arc::new(QTensor::new(storage, (range.len(), inp))?)))
            }
        }
    }

    /// Input columns `range`. Returns the weight and whether it had to be dequantized
    /// because the range does not fall on quant-block boundaries.
    pub fn cols(&self, range: Range<usize>, device: &Device) -> Result<(Weight, bool)> {
        let (out, inp) = self.dims2()?;
        if range == (0..inp) {
            return Ok((self.clone(), false));
        }
        match self {
            Weight::Dense(t) => Ok((Weight::Dense(t.narrow(1, range.start, range.len())?.contiguous()?), false)),
            Weight::Quant(q) => {
                let bs = q.dtype().block_size();
                if !range.start.is_multiple_of(bs) || !range.end.is_multiple_of(bs) {
                    let dense = q.dequantize(device)?.narrow(1, range.start, range.len())?.contiguous()?;
                    return Ok((Weight::Dense(dense), true));
                }
                let ts = q.dtype().type_size();
                let row_bytes = inp / bs * ts;
                let (b0, b1) = (range.start / bs * ts, range.end / bs * ts);
                let data = q.data()?;
                let mut bytes = Vec::with_capacity(out * (b1 - b0));
                for r in 0..out {
                    bytes.extend_from_slice(&data[r * row_bytes + b0..r * row_bytes + b1]);
                }
                let storage = QStorage::from_data(bytes.into(), &q.device(), q.dtype())?;
                Ok((Weight::Quant(Arc::new(QTensor::new(storage, (out, range.len()))?)), false))
            }
        }
    }

    /// candle's matmul for this weight (dense weights as f32).
    pub(crate) fn into_matmul(self) -> Result<QMatMul> {
        match self {
            Weight::Quant(q) => QMatMul::from_arc(q),
            Weight::Dense(t) => Ok(QMatMul::Tensor(t.to_dtype(DType::F32)?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::GgmlDType;

    fn quantized(rows: usize, cols: usize, dt: GgmlDType) -> (Tensor, Weight) {
        let data: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
        let t = Tensor::from_vec(data, (rows, cols), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, dt).unwrap();
        let deq = q.dequantize(&Device::Cpu).unwrap();
        (deq, Weight::Quant(Arc::new(q)))
    }

    #[test]
    fn quantized_row_and_block_aligned_col_slices_stay_quantized_and_exact() {
        for dt in [GgmlDType::Q4_1, GgmlDType::Q8_0, GgmlDType::Q4K, GgmlDType::Q6K] {
            let bs = dt.block_size();
            let (deq, w) = quantized(6, bs * 4, dt);
            let r = w.rows(2..5).unwrap();
            assert!(matches!(r, Weight::Quant(_)));
            let got = r.dequantize(&Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
            assert_eq!(got, deq.narrow(0, 2, 3).unwrap().to_vec2::<f32>().unwrap());

            let (c, dequantized) = w.cols(bs..bs * 3, &Device::Cpu).unwrap();
            assert!(!dequantized, "{dt:?}");
            assert!(matches!(c, Weight::Quant(_)));
            let got = c.dequantize(&Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
            assert_eq!(got, deq.narrow(1, bs, bs * 2).unwrap().to_vec2::<f32>().unwrap());
        }
    }

    #[test]
    fn unaligned_col_slice_falls_back_to_dense() {
        let (deq, w) = quantized(3, 512, GgmlDType::Q4K);
        let (c, dequantized) = w.cols(100..300, &Device::Cpu).unwrap();
        assert!(dequantized);
        assert!(matches!(c, Weight::Dense(_)));
        let got = c.dequantize(&Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(got, deq.narrow(1, 100, 200).unwrap().to_vec2::<f32>().unwrap());
    }
}
