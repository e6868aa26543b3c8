//! A CPU matrix multiply `y = x W^T` whose cost grows slowly with the number of rows of
//! `x`, and whose every output is bit-identical for any number of rows (batch invariant
//! by construction).
//!
//! candle's quantized CPU matmul quantizes each row of `x` and runs one integer dot
//! product per (row, output), reading the whole weight again for every row: a batch of
//! 16 rows costs 16 times one row. Here the weight is read once per call and every row
//! of a batch reuses it from cache.
//!
//! - Q4_1, Q8_0, Q5_0, Q4_K and Q6_K weights stay quantized, repacked in panels of 16
//!   rows for integer kernels (`vpdpbusd` on AVX-512 VNNI): see [`int8`] for their layout
//!   and numerics (candle's and llama.cpp's: `x` quantized per block of 32 to 8 bits) and
//!   [`repack`] for the exact rewrite of the last three into blocks of 32.
//! - Dense weights (and quant types without a kernel here, dequantized once at load)
//!   are f32 panels of 8 rows: see [`dense`] for their layout and numerics (eight
//!   lane-wise FMA chains per output, then a fixed sum of the lanes).
//!
//! This file prepares a weight and splits a call into work items (row blocks × panels)
//! on the [`pool`]; the kernels do the arithmetic.
//!
//! Either way an output is computed the same way whatever the tiling, the thread, or `m`.

use std::cell::RefCell;
use std::ops::Range;

use candle_core::{DType, Device, Result, Storage, Tensor};

use super::aligned::Aligned;
use super::dense::{self, deinterleave, interleave, lane_sums, row_tiles, PANEL};
use super::tiles::even_tiles;
use super::{int8, pool, repack};
use crate::weight::Weight;

/// Rows of `x` per work item: bounds the `x` slice kept in cache while a panel is reused.
const ROW_BLOCK: usize = 64;
/// Columns of `x` and `w` per pass over a row block (a multiple of 8): long enough that a
/// tile call's setup and accumulator round trip stay small next to its FMAs, short enough
/// that six rows of `x` and the panel's weights stay in a 32 KB L1 (12 + 16 KB).
const K_CHUNK: usize = 512;

#[derive(Debug, Clone)]
enum Store {
    /// `[n_pad, k_pad]`, zero padded, as interleaved panels ([`PANEL`]).
    F32(Aligned),
    /// Q4_1 or Q8_0 blocks in panels of 16 rows ([`int8::pack`]).
    Quant(int8::Format, Aligned),
}

/// `n` GGUF rows of `nb` blocks as [`int8`] panels.
fn pack_panels(fmt: int8::Format, gguf: &[u8], n: usize, nb: usize) -> Aligned {
    let mut out = Aligned::zeroed_bytes(n.div_ceil(int8::ROWS) * nb * fmt.panel_bytes());
    int8::pack(fmt, gguf, n, nb, out.bytes_mut());
    out
}

/// The parts of a weight whose products are not kept apart: one, all of `0..k`.
#[allow(clippy::single_range_in_vec_init)] // a list of one range, not the range's numbers
fn whole(k: usize) -> Vec<Range<usize>> {
    vec![0..k]
}

/// A `[n, k]` weight prepared for [`BatchedWeight::forward`].
#[derive(Debug, Clone)]
pub struct BatchedWeight {
    n: usize,
    k: usize,
    /// `k` rounded up to the 8-lane step (quantized rows are always a multiple of 32).
    k_pad: usize,
    store: Store,
    /// Column ranges whose products are kept apart ([`Self::forward_parts`]); one part,
    /// `0..k`, unless [`Self::with_parts`] set more.
    parts: Vec<Range<usize>>,
}

impl BatchedWeight {
    /// Weights this kernel beats candle's on: dense ones, and the quant types it has
    /// integer kernels for. (Others would have to be stored as f32, which makes a
    /// single-sequence decode read several times the bytes.)
    pub fn supports(w: &Weight) -> bool {
        match w {
            Weight::Dense(_) => true,
            Weight::Quant(q) => q.shape().dims2().is_ok_and(|(_, k)| Self::supports_quant(q.dtype(), k)),
        }
    }

    /// Whether a quantized `[n, k]` weight of `dtype` takes the integer kernels.
    pub fn supports_quant(dtype: candle_core::quantized::GgmlDType, k: usize) -> bool {
        repack::format_of(dtype).is_some() && k.is_multiple_of(dtype.block_size()) && k.is_multiple_of(int8::BLOCK)
    }

    /// Q4_1, Q8_0, Q5_0, Q4_K and Q6_K stay quantized (the last three rewritten exactly
    /// into blocks of 32, [`repack`]); other quant types are dequantized to f32 once here.
    pub fn new(w: &Weight) -> Result<Self> {
        let (n, k) = w.dims2()?;
        let k_pad = k.div_ceil(8) * 8;
        let store = match w {
            Weight::Quant(q) if Self::supports(w) => {
                let fmt = repack::format_of(q.dtype()).expect("a supported type");
                let data = q.data()?;
                let rows = repack::rewrite(q.dtype(), &data, n, k);
                Store::Quant(fmt, pack_panels(fmt, rows.as_deref().unwrap_or(&data), n, k / int8::BLOCK))
            }
            _ => {
                let dense = w.dequantize(&Device::Cpu)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
                let mut rows = vec![0f32; n * k_pad];
                for (r, row) in dense.iter().enumerate() {
                    rows[r * k_pad..r * k_pad + k].copy_from_slice(row);
                }
                Store::F32(interleave(&rows, n, k_pad))
            }
        };
        Ok(Self { n, k, k_pad, store, parts: whole(k) })
    }

    /// Keeps the products of the column ranges `parts` (consecutive, covering `0..k`, on
    /// the 8-lane step, or on quant blocks of 32 for a quantized weight) apart: each
    /// part's outputs are its own chains from zero, as if each part were a weight of its
    /// own, in one pass over the weight.
    pub fn with_parts(mut self, parts: &[Range<usize>]) -> Result<Self> {
        let step = if matches!(self.store, Store::Quant(..)) { int8::BLOCK } else { 8 };
        let mut at = 0;
        for r in parts {
            if r.start != at || r.end <= r.start || (r.start % step != 0) {
                candle_core::bail!("batched matmul parts {parts:?} must split 0..{} on multiples of {step}", self.k);
            }
            at = r.end;
        }
        if at != self.k || (parts.len() > 1 && self.k_pad != self.k) {
            candle_core::bail!("batched matmul parts {parts:?} must split 0..{} on multiples of {step}", self.k);
        }
        self.parts = parts.to_vec();
        Ok(self)
    }

    /// Stacks the output rows of weights with the same input width and storage: one
    /// matmul gives what `ws` give one after the other (each output computed as before).
    pub fn concat_rows(ws: &[BatchedWeight]) -> Option<BatchedWeight> {
        let first = ws.first()?;
        if ws.iter().any(|w| w.k != first.k || w.parts.len() != 1) {
            return None;
        }
        let n: usize = ws.iter().map(|w| w.n).sum();
        let store = match &first.store {
            Store::Quant(fmt, _) => {
                let nb = first.k / int8::BLOCK;
                let mut rows = Vec::new();
                for w in ws {
                    match &w.store {
                        Store::Quant(f, panels) if f == fmt => rows.extend(int8::unpack(*f, panels.bytes(), w.n, nb)),
                        _ => return None,
                    }
                }
                Store::Quant(*fmt, pack_panels(*fmt, &rows, n, nb))
            }
            Store::F32(_) => {
                let kp = first.k_pad;
                let mut rows = Vec::with_capacity(n * kp);
                for w in ws {
                    let Store::F32(d) = &w.store else { return None };
                    rows.extend(deinterleave(d.as_slice(), w.n, kp));
                }
                Store::F32(interleave(&rows, n, kp))
            }
        };
        Some(BatchedWeight { n, k: first.k, k_pad: first.k_pad, store, parts: whole(first.k) })
    }

    /// This weight with its panels moved into 2 MB pages ([`pages`]): for a weight that
    /// is final (building a weight from others, as [`Self::concat_rows`] does, frees them
    /// and would leave holes there).
    pub fn in_huge_pages(mut self) -> Self {
        self.store = match self.store {
            Store::F32(a) => Store::F32(a.into_pages()),
            Store::Quant(f, a) => Store::Quant(f, a.into_pages()),
        };
        self
    }

    /// How many column parts [`Self::forward_parts`] returns.
    pub fn n_parts(&self) -> usize {
        self.parts.len()
    }

    pub fn dims(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    /// `x: [m, k]` f32 on the CPU → `[m, n]` (a weight of one part).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.parts.len() != 1 {
            candle_core::bail!("batched matmul: a weight of {} parts needs forward_parts", self.parts.len());
        }
        let (y, m) = self.forward_parts(x)?;
        Tensor::from_vec(y, (m, self.n), &Device::Cpu)
    }

    /// `x: [m, k]` → `(y, m)`, `y: [parts, m, n]` row-major: part `q` is
    /// `x[:, part_q] W[:, part_q]^T`.
    pub fn forward_parts(&self, x: &Tensor) -> Result<(Vec<f32>, usize)> {
        self.products(x, false)
    }

    /// `x: [m, k]` → `[m, n]`: the parts' products added in their order,
    /// `((p0 + p1) + p2) + ...`, bit for bit what adding [`Self::forward_parts`]'s
    /// parts in that order gives (quantized weights add each part as it is done).
    pub fn forward_summed(&self, x: &Tensor) -> Result<Tensor> {
        let (y, m) = match self.store {
            Store::Quant(..) => self.products(x, true)?,
            Store::F32(_) => {
                let (y, m) = self.products(x, false)?;
                let (first, rest) = y.split_at(m * self.n);
                let mut acc = first.to_vec();
                for part in rest.chunks_exact(m * self.n) {
                    acc.iter_mut().zip(part).for_each(|(a, p)| *a += p);
                }
                (acc, m)
            }
        };
        Tensor::from_vec(y, (m, self.n), &Device::Cpu)
    }

    /// `summed`: `[m, n]` with the parts added in order (quantized weights only), else
    /// `[parts, m, n]`.
    fn products(&self, x: &Tensor, summed: bool) -> Result<(Vec<f32>, usize)> {
        let (m, k) = x.dims2()?;
        if k != self.k {
            candle_core::bail!("batched matmul: x has {k} columns, weight has {}", self.k);
        }
        let x = x.to_dtype(DType::F32)?.contiguous()?;
        let (storage, layout) = x.storage_and_layout();
        let Storage::Cpu(cpu) = &*storage else {
            candle_core::bail!("batched matmul runs on the CPU only");
        };
        let xs = &cpu.as_slice::<f32>()?[layout.start_offset()..layout.start_offset() + m * k];
        let len = if summed { 1 } else { self.parts.len() } * m * self.n;
        // Every output is written (a step's logits are megabytes: no zeroing pass first).
        let mut y = Vec::with_capacity(len);
        // SAFETY: `y` has capacity `len`, the `[parts, m, n]` (or, summed, `[m, n]`) floats
        // `matmul` writes, and it writes every one of them before `set_len` exposes them.
        unsafe {
            self.matmul(xs, m, y.as_mut_ptr(), summed);
            y.set_len(len);
        }
        Ok((y, m))
    }

    /// `y[parts, m, n] = x[m, k] W^T` per part, or the parts' sum (`summed`).
    ///
    /// # Safety
    /// `y` has room for `[parts, m, n]` (or `[m, n]` when `summed`) f32s.
    unsafe fn matmul(&self, x: &[f32], m: usize, y: *mut f32, summed: bool) {
        assert_eq!(x.len(), m * self.k);
        if m == 0 || self.n == 0 {
            return;
        }
        if let Store::Quant(fmt, panels) = &self.store {
            return self.matmul_int(*fmt, panels, x, m, y, summed);
        }
        assert!(!summed, "dense weights add their parts after the matmul");
        // Rows of x padded to the lane step (only when k is not a multiple of 8).
        let padded;
        let x: &[f32] = if self.k_pad == self.k {
            x
        } else {
            let mut p = vec![0f32; m * self.k_pad];
            for i in 0..m {
                p[i * self.k_pad..i * self.k_pad + self.k].copy_from_slice(&x[i * self.k..(i + 1) * self.k]);
            }
            padded = p;
            &padded
        };
        let panels = self.n.div_ceil(PANEL);
        let row_blocks = m.div_ceil(ROW_BLOCK);
        // Each row block's register tiles, worked out once for all its panels.
        let tiles: Vec<Vec<(usize, usize)>> =
            (0..row_blocks).map(|rb| row_tiles(rb * ROW_BLOCK..m.min((rb + 1) * ROW_BLOCK))).collect();
        let y_ptr = y as usize;
        let work = |range: Range<usize>| {
            for item in range {
                let (rb, p) = (item / panels, item % panels);
                let rows = rb * ROW_BLOCK..m.min((rb + 1) * ROW_BLOCK);
                // SAFETY: `y` has room for `[parts, m, n]` (this function's contract) and `x`
                // holds `m` rows of `k_pad`; item (rb, p) writes only outputs `rows × panel p`
                // of each part, so no two items (threads) write the same output.
                unsafe { self.panel(x, rows, &tiles[rb], p, y_ptr as *mut f32, m * self.n) };
            }
        };
        self.run(row_blocks * panels, m, &work);
    }

    /// Runs `items` work items here or on the pool.
    fn run(&self, items: usize, m: usize, work: &(dyn Fn(Range<usize>) + Sync)) {
        if m * self.n * self.k < 1 << 16 {
            work(0..items);
        } else {
            let pool = pool::pool();
            // A few chunks per thread: a straggler's share stays small.
            pool.run(items, items.div_ceil(4 * (pool.threads())), work);
        }
    }

    /// [`Self::matmul`] for a quantized weight: `x` quantized once per call, then
    /// integer tiles of up to [`int8::MAX_TILE_ROWS`] rows × one panel of 16 weight rows.
    ///
    /// # Safety
    /// As for [`Self::matmul`]; `panels` is this weight's store.
    unsafe fn matmul_int(&self, fmt: int8::Format, panels: &Aligned, x: &[f32], m: usize, y: *mut f32, summed: bool) {
        let (n, nb) = (self.n, self.k / int8::BLOCK);
        let kernel = int8_kernel();
        let n_panels = n.div_ceil(int8::ROWS);
        let row_blocks = m.div_ceil(ROW_BLOCK);
        let tiles: Vec<Vec<(usize, usize)>> = (0..row_blocks)
            .map(|rb| even_tiles(rb * ROW_BLOCK..m.min((rb + 1) * ROW_BLOCK), int8::MAX_TILE_ROWS))
            .collect();
        let panel_stride = nb * fmt.panel_bytes();
        let part_blocks: Vec<Range<usize>> =
            self.parts.iter().map(|p| p.start / int8::BLOCK..p.end / int8::BLOCK).collect();
        XQ.with(|xq| {
            let mut xq = xq.borrow_mut();
            xq.resize(m, nb);
            let rows = xq.rows();
            let quantize = |range: Range<usize>| {
                // SAFETY: `xq` was sized for `m` rows just above and outlives every call (the
                // pool returns once each claimed chunk is done); each row range goes to one
                // thread only, so no two threads write the same rows.
                unsafe { rows.quantize(x, range) }
            };
            if m * self.k >= 1 << 14 {
                pool::pool().run(m, m.div_ceil(2 * pool::pool().threads()), &quantize);
            } else {
                quantize(0..m);
            }
            let xq = &*xq;
            let (y_ptr, w_ptr) = (y as usize, panels.bytes().as_ptr() as usize);
            let work = |range: Range<usize>| {
                for item in range {
                    let (rb, p) = (item / n_panels, item % n_panels);
                    let (j0, w) = (p * int8::ROWS, (w_ptr as *const u8).wrapping_add(p * panel_stride));
                    let width = int8::ROWS.min(n - j0);
                    // Summed: one job per tile, the later parts added to a running total;
                    // else one job per part, each into its own `[m, n]`.
                    let jobs = if summed { 1 } else { part_blocks.len() };
                    for q in 0..jobs {
                        let rest = if summed { &part_blocks[1..] } else { &[] };
                        for &(i, r) in &tiles[rb] {
                            let out = (y_ptr as *mut f32).wrapping_add(q * m * n + i * n + j0);
                            let blocks = part_blocks[q].clone();
                            let job = int8::Tile { x: xq, i0: i, w, blocks, rest, y: out, ldy: n, width, add: false };
                            // SAFETY: `w` is panel `p`, which holds all `nb` blocks of every
                            // part; `xq` holds rows `i..i + r` (below `m`); the outputs
                            // `(i.., j0..j0 + width)` of part `q` lie in `y` (`[parts, m, n]`,
                            // or `[m, n]` summed), and each (row block, panel) item writes only
                            // its own; `kernel` is `Kernel::best()`, which this CPU runs; and
                            // `r <= MAX_TILE_ROWS` (`even_tiles`).
                            unsafe { int8::tile(kernel, fmt, &job, r) };
                        }
                    }
                }
            };
            self.run(row_blocks * n_panels, m, &work);
        })
    }

    /// Outputs `rows × panel p` of every part; part `q` starts at `y + q * part_stride`.
    ///
    /// # Safety
    /// `x` holds rows `rows` (`k_pad` each); `y` has room for every part's `[m, n]`
    /// outputs (`part_stride` apart) for the rows `rows`; no other thread writes outputs
    /// `rows × panel p` meanwhile.
    unsafe fn panel(
        &self,
        x: &[f32],
        rows: Range<usize>,
        tiles: &[(usize, usize)],
        p: usize,
        y: *mut f32,
        part_stride: usize,
    ) {
        let kp = self.k_pad;
        let j0 = p * PANEL;
        let width = PANEL.min(self.n - j0);
        let w: &[f32] = match &self.store {
            Store::F32(data) => &data.as_slice()[j0 * kp..(j0 + PANEL) * kp],
            Store::Quant(..) => unreachable!("quantized weights take the integer path"),
        };
        self.rows_times_panel(x, rows, tiles, w, j0, width, y, part_stride);
    }

    /// Multiplies `rows` of `x` by the 8 dequantized weight rows `w` in register tiles
    /// ([`row_tiles`]), `K_CHUNK` columns at a
    /// time so that the `x` and `w` slices in use stay in L1; the lane accumulators wait
    /// in `acc` between chunks, which leaves each output's FMA chain unchanged.
    ///
    /// # Safety
    /// As for [`Self::panel`], with `w` panel `j0 / PANEL`'s weights and `width` its rows.
    #[allow(clippy::too_many_arguments)] // a kernel's slices, offsets and strides
    unsafe fn rows_times_panel(
        &self,
        x: &[f32],
        rows: Range<usize>,
        tiles: &[(usize, usize)],
        w: &[f32],
        j0: usize,
        width: usize,
        y: *mut f32,
        part_stride: usize,
    ) {
        let (n, kp) = (self.n, self.k_pad);
        ACC.with(|a| {
            let mut acc = a.borrow_mut();
            // No zeroing: each part's first chunk starts its tiles from zero.
            if acc.len() < rows.len() * PANEL * 8 {
                acc.resize(rows.len() * PANEL * 8, 0.0);
            }
            let row_stride = PANEL * 8;
            let last = self.parts.len() - 1;
            for (q, part) in self.parts.iter().enumerate() {
                // The last part takes the lane padding (a single part: `0..k_pad`).
                let end = if q == last { kp } else { part.end };
                let mut p0 = part.start;
                while p0 < end {
                    let p1 = end.min(p0 + K_CHUNK);
                    let (cols, fresh) = (p0..p1, p0 == part.start);
                    for &(i, r) in tiles {
                        let a = acc.as_mut_ptr().add((i - rows.start) * row_stride);
                        let xi = x.as_ptr().add(i * kp);
                        dense::panel_tile(r, xi, w.as_ptr(), kp, cols.clone(), fresh, a, row_stride);
                    }
                    p0 = p1;
                }
                let yq = y.add(q * part_stride);
                for (r, lanes) in acc[..rows.len() * row_stride].chunks_exact(row_stride).enumerate() {
                    let out = yq.add((rows.start + r) * n + j0);
                    if width == PANEL {
                        lane_sums(lanes.try_into().expect("a panel of lanes"), &mut *(out as *mut [f32; PANEL]));
                    } else {
                        let mut sums = [0f32; PANEL];
                        lane_sums(lanes.try_into().expect("a panel of lanes"), &mut sums);
                        std::ptr::copy_nonoverlapping(sums.as_ptr(), out, width);
                    }
                }
            }
        })
    }
}

thread_local! {
    static ACC: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The calling thread's quantized `x` (read by the pool's workers during the call).
    static XQ: RefCell<int8::QuantRows> = RefCell::new(int8::QuantRows::default());
}

fn int8_kernel() -> int8::Kernel {
    static KERNEL: std::sync::OnceLock<int8::Kernel> = std::sync::OnceLock::new();
    *KERNEL.get_or_init(int8::Kernel::best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use std::sync::Arc;

    fn weight(n: usize, k: usize, dt: Option<GgmlDType>) -> Weight {
        let t = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap();
        match dt {
            Some(dt) => Weight::Quant(Arc::new(QTensor::quantize(&t, dt).unwrap())),
            None => Weight::Dense(t),
        }
    }

    /// Plain dot products in f64 against the dequantized weight, with the sum of the
    /// products' magnitudes (the scale of any rounding error).
    fn reference(x: &[Vec<f32>], w: &Weight) -> Vec<Vec<(f64, f64)>> {
        let w = w.dequantize(&Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
        let dot = |xr: &[f32], wr: &[f32]| {
            let p = xr.iter().zip(wr).map(|(a, b)| *a as f64 * *b as f64);
            (p.clone().sum(), p.map(f64::abs).sum())
        };
        x.iter().map(|xr| w.iter().map(|wr| dot(xr, wr)).collect()).collect()
    }

    /// `x` as the integer kernels see it: each block of 32 quantized to `d · q`.
    fn as_quantized(x: &[Vec<f32>]) -> Vec<Vec<f32>> {
        x.iter()
            .map(|row| {
                let mut q = int8::QuantRows::default();
                q.quantize(row, 1, row.len() / 32);
                q.q.iter().enumerate().map(|(e, v)| *v as f32 * q.d[e / 32]).collect()
            })
            .collect()
    }

    #[test]
    fn matches_a_plain_dot_product() {
        for (dt, n, k) in [
            (Some(GgmlDType::Q4_1), 37, 576),
            (Some(GgmlDType::Q8_0), 16, 64),
            (Some(GgmlDType::Q4K), 9, 256),
            (Some(GgmlDType::Q5_0), 21, 96),
            (Some(GgmlDType::Q6K), 17, 512),
            (Some(GgmlDType::Q2K), 5, 256),
            (None, 13, 35),
        ] {
            let w = weight(n, k, dt);
            let bw = BatchedWeight::new(&w).unwrap();
            let int = matches!(bw.store, Store::Quant(..));
            for m in [1, 3, 4, 5, 70] {
                let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu).unwrap();
                let got = bw.forward(&x).unwrap().to_vec2::<f32>().unwrap();
                let xs = x.to_vec2::<f32>().unwrap();
                // Integer kernels: exact up to f32 rounding against the quantized x ...
                let want = reference(&if int { as_quantized(&xs) } else { xs.clone() }, &w);
                for (g, (w, mag)) in got.iter().flatten().zip(want.iter().flatten()) {
                    assert!((*g as f64 - w).abs() <= 1e-5 * mag, "{dt:?} m={m}: {g} vs {w}");
                }
                // ... and close to the exact product (8-bit x: under 1% of the products' size).
                for (g, (w, mag)) in got.iter().flatten().zip(reference(&xs, &w).iter().flatten()) {
                    assert!((*g as f64 - w).abs() <= 1e-2 * mag, "{dt:?} m={m}: {g} vs {w}");
                }
            }
        }
    }

    /// Gemma-3's file holds Q8_0, Q5_0, Q4_K and Q6_K matrices: each takes the integer
    /// kernels (none is left to candle's quantized matmul or dequantized to f32).
    #[test]
    fn every_matrix_of_gemma_takes_the_integer_kernels() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/gemma3-270m");
        let path = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "gguf"))
            .expect("the Gemma GGUF in models/");
        let content =
            candle_core::quantized::gguf_file::Content::read(&mut std::fs::File::open(&path).unwrap()).unwrap();
        let mut types = std::collections::BTreeSet::new();
        for (name, info) in &content.tensor_infos {
            let dense = matches!(info.ggml_dtype, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16);
            if let (&[_, k], false) = (info.shape.dims(), dense) {
                types.insert(format!("{:?}", info.ggml_dtype));
                assert!(
                    BatchedWeight::supports_quant(info.ggml_dtype, k),
                    "{name}: {:?} with {k} columns",
                    info.ggml_dtype
                );
            }
        }
        assert_eq!(types.into_iter().collect::<Vec<_>>(), ["Q4K", "Q5_0", "Q6K", "Q8_0"]);
    }

    /// `x` as candle's K-quant matmuls see it: each block of 256 quantized to 8 bits with
    /// one f32 scale (ggml's Q8_K, candle's `BlockQ8K::from_float`).
    fn as_q8k(x: &[Vec<f32>]) -> Vec<Vec<f32>> {
        x.iter()
            .map(|row| {
                row.chunks(256)
                    .flat_map(|b| {
                        let max = b.iter().fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
                        let iscale = if max == 0.0 { 0.0 } else { -127f32 / max };
                        let d = if max == 0.0 { 0.0 } else { 1.0 / iscale };
                        b.iter().map(move |&v| (iscale * v).round().clamp(-128.0, 127.0) * d).collect::<Vec<_>>()
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn quantized_weights_agree_with_candles_quantized_matmul() {
        // For Q4_1, Q8_0 and Q5_0 candle also quantizes x per block of 32 (Q8_1 or Q8_0):
        // the same integer sums, its scales rounded to f16.
        for (dt, k) in [(GgmlDType::Q4_1, 576), (GgmlDType::Q8_0, 576), (GgmlDType::Q5_0, 576)] {
            let w = weight(40, k, Some(dt));
            let Weight::Quant(q) = &w else { unreachable!() };
            let candle = candle_core::quantized::QMatMul::from_arc(q.clone()).unwrap();
            let x = Tensor::randn(0f32, 1.0, (5, k), &Device::Cpu).unwrap();
            let got = BatchedWeight::new(&w).unwrap().forward(&x).unwrap().to_vec2::<f32>().unwrap();
            let want = candle_core::Module::forward(&candle, &x).unwrap().to_vec2::<f32>().unwrap();
            let mags = reference(&x.to_vec2::<f32>().unwrap(), &w);
            for ((g, c), (_, mag)) in got.iter().flatten().zip(want.iter().flatten()).zip(mags.iter().flatten()) {
                assert!(((g - c) as f64).abs() <= 2e-3 * mag, "{dt:?}: {g} vs candle's {c}");
            }
        }
        // For Q4_K and Q6_K candle quantizes x per block of 256 (Q8_K), coarser than our
        // blocks of 32, so the two differ by x's rounding, which is random. Each is checked
        // against the exact product on the x it rounded, and they may differ by no more
        // than those two exact products do.
        for (dt, k) in [(GgmlDType::Q4K, 512), (GgmlDType::Q6K, 512)] {
            let w = weight(40, k, Some(dt));
            let Weight::Quant(q) = &w else { unreachable!() };
            let candle = candle_core::quantized::QMatMul::from_arc(q.clone()).unwrap();
            let x = Tensor::randn(0f32, 1.0, (5, k), &Device::Cpu).unwrap();
            let xs = x.to_vec2::<f32>().unwrap();
            let got = BatchedWeight::new(&w).unwrap().forward(&x).unwrap().to_vec2::<f32>().unwrap();
            let want = candle_core::Module::forward(&candle, &x).unwrap().to_vec2::<f32>().unwrap();
            let (ours, theirs) = (reference(&as_quantized(&xs), &w), reference(&as_q8k(&xs), &w));
            let cells =
                got.iter().flatten().zip(want.iter().flatten()).zip(ours.iter().flatten().zip(theirs.iter().flatten()));
            for ((&g, &c), (&(eo, mag), &(et, _))) in cells {
                assert!((g as f64 - eo).abs() <= 1e-5 * mag, "{dt:?}: {g} vs exact {eo} on our x");
                assert!((c as f64 - et).abs() <= 1e-5 * mag, "{dt:?}: candle's {c} vs exact {et} on Q8_K x");
                let apart = (eo - et).abs() + 2e-5 * mag;
                assert!(((g - c) as f64).abs() <= apart, "{dt:?}: {g} vs candle's {c}, allowed {apart}");
            }
        }
    }

    #[test]
    fn weights_in_huge_pages_give_the_same_bits_and_keep_apart() {
        let x = |k: usize| Tensor::randn(0f32, 1.0, (5, k), &Device::Cpu).unwrap();
        let bits = |t: Tensor| {
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        // Several weights share a chunk, one (over half a chunk) gets its own.
        let cases = [
            (Some(GgmlDType::Q4_1), 48, 576),
            (Some(GgmlDType::Q8_0), 33, 64),
            (None, 9, 44),
            (Some(GgmlDType::Q8_0), 32768, 576),
        ];
        let heap: Vec<(BatchedWeight, Tensor)> =
            cases.iter().map(|&(dt, n, k)| (BatchedWeight::new(&weight(n, k, dt)).unwrap(), x(k))).collect();
        let want: Vec<Vec<u32>> = heap.iter().map(|(w, x)| bits(w.forward(x).unwrap())).collect();
        let paged: Vec<BatchedWeight> = heap.iter().map(|(w, _)| w.clone().in_huge_pages()).collect();
        for (i, w) in paged.iter().enumerate() {
            let (Store::Quant(_, a) | Store::F32(a)) = &w.store;
            assert!(matches!(a, Aligned::Pages(_)), "weight {i} was not moved");
            assert_eq!(a.bytes().as_ptr() as usize % 64, 0);
        }
        // Every weight reads back its own panels (no two blocks overlap), and a clone of
        // a paged weight (on the heap) is the same weight.
        for ((w, (_, x)), want) in paged.iter().zip(&heap).zip(&want) {
            assert_eq!(&bits(w.forward(x).unwrap()), want);
            assert_eq!(&bits(w.clone().forward(x).unwrap()), want);
        }
        drop(heap);
        for ((w, &(dt, n, k)), want) in paged.iter().zip(&cases).zip(&want) {
            assert_eq!(w.dims(), (n, k), "{dt:?}");
            assert_eq!(want.len(), 5 * n);
        }
    }

    #[test]
    fn every_row_is_bit_identical_at_any_batch_size() {
        for (dt, n, k) in [
            (Some(GgmlDType::Q4_1), 200, 1536),
            (Some(GgmlDType::Q8_0), 77, 576),
            (Some(GgmlDType::Q5_0), 40, 640),
            (Some(GgmlDType::Q4K), 37, 1024),
            (Some(GgmlDType::Q6K), 33, 512),
            (None, 9, 44),
        ] {
            let w = weight(n, k, dt);
            let bw = BatchedWeight::new(&w).unwrap();
            let big = Tensor::randn(0f32, 1.0, (130, k), &Device::Cpu).unwrap();
            let all = bw.forward(&big).unwrap().to_vec2::<f32>().unwrap();
            for m in (1..=66).chain([129, 130]) {
                for start in [0, 130 - m] {
                    let got = bw.forward(&big.narrow(0, start, m).unwrap()).unwrap().to_vec2::<f32>().unwrap();
                    for (i, row) in got.iter().enumerate() {
                        let same = row.iter().zip(&all[start + i]).all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(same, "{dt:?}: row {} differs at m={m}", start + i);
                    }
                }
            }
        }
    }

    #[test]
    fn parts_equal_separate_weights_and_stacked_rows_equal_a_concatenation() {
        for (dt, k) in [
            (Some(GgmlDType::Q4_1), 192),
            (Some(GgmlDType::Q8_0), 192),
            (Some(GgmlDType::Q4K), 768),
            (Some(GgmlDType::Q6K), 768),
            (None, 192),
        ] {
            let n = 21;
            let w = weight(n, k, dt);
            let x = Tensor::randn(0f32, 1.0, (7, k), &Device::Cpu).unwrap();
            // Three column parts, as a row-parallel layer with three heads holds them (on
            // K-quant superblocks, so that each alone stays quantized).
            let ranges = if k == 192 { [0..64, 64..160, 160..192] } else { [0..256, 256..512, 512..768] };
            let fused = BatchedWeight::new(&w).unwrap().with_parts(&ranges).unwrap();
            let (y, m) = fused.forward_parts(&x).unwrap();
            assert_eq!((m, y.len()), (7, 3 * 7 * n));
            for (q, r) in ranges.iter().enumerate() {
                let (part, _) = w.cols(r.clone(), &Device::Cpu).unwrap();
                let alone =
                    BatchedWeight::new(&part).unwrap().forward(&x.narrow(1, r.start, r.len()).unwrap()).unwrap();
                let alone = alone.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let same = alone.iter().zip(&y[q * 7 * n..]).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{dt:?}: part {q}");
            }
            // Summed: the parts added in order, bit for bit.
            let mut fold = y[..7 * n].to_vec();
            for part in y[7 * n..].chunks_exact(7 * n) {
                fold.iter_mut().zip(part).for_each(|(a, p)| *a += p);
            }
            let summed = fused.forward_summed(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(summed.iter().zip(&fold).all(|(a, b)| a.to_bits() == b.to_bits()), "{dt:?}: summed");
            // Misaligned parts are refused.
            assert!(BatchedWeight::new(&w).unwrap().with_parts(&[0..60, 60..k]).is_err());

            let (a, b) = (weight(5, k, dt), weight(11, k, dt));
            let (a, b) = (BatchedWeight::new(&a).unwrap(), BatchedWeight::new(&b).unwrap());
            let stacked = BatchedWeight::concat_rows(&[a.clone(), b.clone()]).unwrap();
            let want = Tensor::cat(&[a.forward(&x).unwrap(), b.forward(&x).unwrap()], 1).unwrap();
            let got = stacked.forward(&x).unwrap();
            let (got, want) = (
                got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                want.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{dt:?}: stacked");
        }
        // Different storage types do not stack.
        let (a, b) = (weight(4, 64, Some(GgmlDType::Q4_1)), weight(4, 64, Some(GgmlDType::Q8_0)));
        assert!(
            BatchedWeight::concat_rows(&[BatchedWeight::new(&a).unwrap(), BatchedWeight::new(&b).unwrap()]).is_none()
        );
    }
}
