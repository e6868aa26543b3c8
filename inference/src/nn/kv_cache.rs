//! Per-sequence KV cache. Each rank keeps the keys and values of its own KV heads.
//!
//! Storage is preallocated in chunks and grows by doubling, so appending a decode token
//! is an in-place write, not a copy of the whole history.
//!
//! Two forms: device tensors (candle's attention, any device), or host vectors that the
//! CPU attention kernel ([`super::attention::host`]) reads directly. A cache uses one form for
//! its whole life; the model picks it when it loads.

use candle_core::{Result, Tensor};

/// Keys and values of one layer: `[n_kv, capacity, head_dim]`, the first `len` valid
/// (device form), or `[len, n_kv, head_dim]` vectors (host form).
#[derive(Debug, Clone, Default)]
pub struct LayerKv {
    k: Option<Tensor>,
    v: Option<Tensor>,
    host: Option<HostKv>,
    len: usize,
}

/// Position-major keys and values: position `t`, head `h` at `(t * n_kv + h) * d`.
/// Growing is a `Vec` append (amortized doubling), never a re-layout.
#[derive(Debug, Clone, Default)]
pub struct HostKv {
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    /// Floats per position: `n_kv * head_dim`.
    pub width: usize,
}

const MIN_CAPACITY: usize = 64;

impl LayerKv {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The host form, if this cache has it.
    pub fn host(&self) -> Option<&HostKv> {
        self.host.as_ref()
    }

    /// Appends `n` positions to the host form. Row `r` of the new keys is
    /// `src[r * stride + k_off..][..width]`, of the values the same at `v_off`.
    pub fn append_host(
        &mut self,
        src: &[f32],
        stride: usize,
        k_off: usize,
        v_off: usize,
        n: usize,
        width: usize,
    ) -> Result<()> {
        if self.k.is_some() {
            candle_core::bail!("this KV cache holds device tensors");
        }
        let host = self.host.get_or_insert_with(|| HostKv { width, ..HostKv::default() });
        if host.width != width {
            candle_core::bail!("KV cache rows are {} wide, got {width}", host.width);
        }
        host.k.truncate(self.len * width);
        host.v.truncate(self.len * width);
        for r in 0..n {
            host.k.extend_from_slice(&src[r * stride + k_off..][..width]);
            host.v.extend_from_slice(&src[r * stride + v_off..][..width]);
        }
        self.len += n;
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.k.as_ref().map_or(0, |k| k.dim(1).unwrap_or(0))
    }

    /// Appends `k`, `v: [n_kv, n, d]`; returns views of all cached keys and values.
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        if self.host.is_some() {
            candle_core::bail!("this KV cache holds host vectors");
        }
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
        if let Some(h) = &mut self.host {
            h.k.truncate(self.len * h.width);
            h.v.truncate(self.len * h.width);
        }
    }

    pub fn bytes(&self) -> usize {
        let device = self.k.as_ref().map_or(0, |k| k.elem_count() * k.dtype().size_in_bytes()) * 2;
        let host = self.host.as_ref().map_or(0, |h| (h.k.capacity() + h.v.capacity()) * 4);
        device + host
    }

    /// A copy of the first `len` positions (for sharing a cached prefix).
    pub fn prefix(&self, len: usize) -> Result<LayerKv> {
        let len = len.min(self.len);
        let mut out = LayerKv::default();
        if let Some(h) = &self.host {
            let n = len * h.width;
            out.host = Some(HostKv { k: h.k[..n].to_vec(), v: h.v[..n].to_vec(), width: h.width });
            out.len = len;
            return Ok(out);
        }
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

    #[test]
    fn host_form_appends_truncates_and_copies_prefixes() {
        // Rows of [k(4) | v(4) | junk(2)]: width 4, stride 10.
        let rows = |n: usize, base: f32| -> Vec<f32> { (0..n * 10).map(|i| base + i as f32).collect() };
        let mut kv = LayerKv::default();
        kv.append_host(&rows(3, 0.0), 10, 0, 4, 3, 4).unwrap();
        kv.append_host(&rows(1, 100.0), 10, 0, 4, 1, 4).unwrap();
        assert_eq!(kv.len(), 4);
        let h = kv.host().unwrap();
        assert_eq!(&h.k[..4], &[0.0, 1.0, 2.0, 3.0]);
        assert_eq!(&h.v[4..8], &[14.0, 15.0, 16.0, 17.0]);
        assert_eq!(&h.k[12..16], &[100.0, 101.0, 102.0, 103.0]);
        let p = kv.prefix(2).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p.host().unwrap().k, h.k[..8].to_vec());
        // A rewind then an append overwrites the dropped positions.
        kv.truncate(1);
        kv.append_host(&rows(1, 500.0), 10, 0, 4, 1, 4).unwrap();
        assert_eq!(kv.len(), 2);
        assert_eq!(&kv.host().unwrap().v[4..8], &[504.0, 505.0, 506.0, 507.0]);
        assert!(kv
            .append(
                &Tensor::zeros((1, 1, 4), candle_core::DType::F32, &Device::Cpu).unwrap(),
                &Tensor::zeros((1, 1, 4), candle_core::DType::F32, &Device::Cpu).unwrap()
            )
            .is_err());
    }
}
