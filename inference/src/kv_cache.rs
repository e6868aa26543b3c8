//! Per-sequence KV cache. Each rank keeps the keys and values of its own KV heads.
//!
//! Storage is preallocated in chunks and grows by doubling, so appending a decode token
//! is an in-place write, not a copy of the whole history.

use candle_core::{Result, Tensor};

/// Keys and values of one layer: `[n_kv, capacity, head_dim]`, the first `len` valid.
#[derive(Debug, Clone, Default)]
pub struct LayerKv {
    k: Option<Tensor>,
    v: Option<Tensor>,
    len: usize,
}

const MIN_CAPACITY: usize = 64;

impl LayerKv {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn capacity(&self) -> usize {
        self.k.as_ref().map_or(0, |k| k.dim(1).unwrap_or(0))
    }

    /// Appends `k`, `v: [n_kv, n, d]`; returns views of all cached keys and values.
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = k.dim(1)?;
        let need = self.len + n;
        if need > self.capacity() {
            let (n_kv, _, d) = k.dims3()?;
            let cap = need.next_power_of_two().max(MIN_CAPACITY);
            let new_k = Tensor::zeros((n_kv, cap, d), k.dtype(), k.device())?;
            let new_v = Tensor::zeros((n_kv, cap, d), v.dtype(), v.device())?;
            if let (Some(old_k), Some(old_v)) = (&self.k, &self.v) {
                new_k.slice_set(&old_k.narrow(1, 0, self.len)?.contiguous()?, 1, 0)?;
                new_v.slice_set(&old_v.narrow(1, 0, self.len)?.contiguous()?, 1, 0)?;
            }
            self.k = Some(new_k);
            self.v = Some(new_v);
        }
        let (ck, cv) = (self.k.as_ref().expect("allocated"), self.v.as_ref().expect("allocated"));
        ck.slice_set(&k.contiguous()?, 1, self.len)?;
        cv.slice_set(&v.contiguous()?, 1, self.len)?;
        self.len = need;
        Ok((ck.narrow(1, 0, self.len)?, cv.narrow(1, 0, self.len)?))
    }

    /// Forgets everything after the first `len` positions.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    pub fn bytes(&self) -> usize {
        self.k.as_ref().map_or(0, |k| k.elem_count() * k.dtype().size_in_bytes()) * 2
    }

    /// A copy of the first `len` positions (for sharing a cached prefix).
    pub fn prefix(&self, len: usize) -> Result<LayerKv> {
        let len = len.min(self.len);
        let mut out = LayerKv::default();
        if let (Some(k), Some(v)) = (&self.k, &self.v) {
            if len > 0 {
                out.append(&k.narrow(1, 0, len)?, &v.narrow(1, 0, len)?)?;
            }
        }
        Ok(out)
    }
}

/// All layers of one sequence on one rank.
#[derive(Debug, Clone)]
pub struct SeqCache {
    pub layers: Vec<LayerKv>,
}

impl SeqCache {
    pub fn new(n_layers: usize) -> Self {
        Self { layers: vec![LayerKv::default(); n_layers] }
    }
    /// Number of positions cached (all layers hold the same number).
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, LayerKv::len)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(LayerKv::bytes).sum()
    }
    pub fn truncate(&mut self, len: usize) {
        self.layers.iter_mut().for_each(|l| l.truncate(len));
    }
    pub fn prefix(&self, len: usize) -> Result<SeqCache> {
        Ok(SeqCache { layers: self.layers.iter().map(|l| l.prefix(len)).collect::<Result<_>>()? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn append_grows_and_keeps_history() {
        let dev = Device::Cpu;
        let mut kv = LayerKv::default();
        let mut expect = Vec::new();
        for step in 0..100u32 {
            let n = if step == 0 { 5 } else { 1 };
            let vals: Vec<f32> = (0..2 * n * 3).map(|i| (step * 100 + i as u32) as f32).collect();
            let k = Tensor::from_vec(vals.clone(), (2, n, 3), &dev).unwrap();
            let (all_k, all_v) = kv.append(&k, &k).unwrap();
            expect.push(k);
            let want = Tensor::cat(&expect, 1).unwrap();
            assert_eq!(all_k.contiguous().unwrap().to_vec3::<f32>().unwrap(), want.to_vec3::<f32>().unwrap());
            assert_eq!(all_v.dims(), want.dims());
        }
        assert_eq!(kv.len(), 104);
        let p = kv.prefix(7).unwrap();
        assert_eq!(p.len(), 7);
        kv.truncate(10);
        assert_eq!(kv.len(), 10);
    }
}
