//! A CPU matrix multiply `y = x W^T` whose cost grows slowly with the number of rows of
//! `x`, and whose every output is bit-identical for any number of rows (batch invariant
//! by construction).
//!
//! candle's quantized CPU matmul quantizes each row of `x` and runs one integer dot
//! product per (row, output), reading the whole weight again for every row: a batch of
//! 16 rows costs 16 times one row. Here the weight is read once per call and every row
//! of a batch reuses it from cache.
//!
//! - Q4_1 and Q8_0 weights stay quantized, repacked in panels of 16 rows for integer
//!   kernels (`vpdpbusd` on AVX-512 VNNI): see [`int8`] for their layout and numerics
//!   (candle's and llama.cpp's: `x` quantized per block of 32 to 8 bits).
//! - Dense weights (and quant types without a kernel here, dequantized once at load)
//!   are f32 panels of 8 rows. Output `(i, j)` is eight lane-wise FMA chains over `k` in
//!   steps of 8 (lane `l` takes elements `8t + l`), starting from zero, then the fixed
//!   sum `((l0+l1) + (l2+l3)) + ((l4+l5) + (l6+l7))` (the order two rounds of `hadd`
//!   give, so eight outputs are summed at once). The portable fallback emulates the same
//!   lanes with `mul_add`.
//!
//! Either way an output is computed the same way whatever the tiling, the thread, or `m`.

use std::cell::RefCell;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Result, Storage, Tensor};

use crate::parallel::linear::Weight;

use super::{int8, pages};

/// Dense weight rows per f32 panel. A panel
/// is stored interleaved: element `(c, p)` at `(p / 8) * 64 + c * 8 + p % 8`, so that the
/// 8 rows' lanes for one step of 8 columns are 256 contiguous bytes (4 AVX-512 vectors,
/// each holding two weight rows' lanes).
const PANEL: usize = 8;
/// Rows of `x` per work item: bounds the `x` slice kept in cache while a panel is reused.
const ROW_BLOCK: usize = 64;
/// Most rows of `x` in one register tile (of 2 weight rows): 12 accumulators, 2 weight
/// vectors and one `x` vector fit the 16 ymm registers (a spilled accumulator turns the
/// loop into a store-to-load chain and halves its speed), and 10 to 12 independent FMA
/// chains cover the FMA latency on two ports.
const MAX_TILE_ROWS: usize = 6;

/// `(first row, rows)` of tiles of at most `max` rows: as few as possible, as even as
/// possible.
fn even_tiles(rows: std::ops::Range<usize>, max: usize) -> Vec<(usize, usize)> {
    even_split(rows, max).collect()
}

/// [`even_tiles`] without the allocation (for a kernel's own split of a tile).
pub(super) fn even_split(rows: std::ops::Range<usize>, max: usize) -> impl Iterator<Item = (usize, usize)> {
    let m = rows.len();
    let t = m.div_ceil(max);
    let mut i = rows.start;
    (0..t).map(move |j| {
        let r = m / t + usize::from(j < m % t);
        i += r;
        (i - r, r)
    })
}

/// The f32 register tiles of a row block: [`even_tiles`] of 6 (16 rows: 6 + 5 + 5, every
/// tile with 10+ FMA chains); 3 rows become 2 + 1.
fn row_tiles(rows: std::ops::Range<usize>) -> Vec<(usize, usize)> {
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
/// Columns of `x` and `w` per pass over a row block (a multiple of 8): long enough that a
/// tile call's setup and accumulator round trip stay small next to its FMAs, short enough
/// that six rows of `x` and the panel's weights stay in a 32 KB L1 (12 + 16 KB).
const K_CHUNK: usize = 512;

/// 64-byte aligned storage: a panel's vector loads never straddle two cache lines. On the
/// heap while a weight is built, in 2 MB pages once it is final ([`pages`]).
#[derive(Debug)]
enum Aligned {
    Heap(Vec<Line>),
    Pages(pages::Block),
}

impl Default for Aligned {
    fn default() -> Self {
        Aligned::Heap(Vec::new())
    }
}

impl Clone for Aligned {
    /// A copy on the heap.
    fn clone(&self) -> Self {
        match self {
            Aligned::Heap(v) => Aligned::Heap(v.clone()),
            Aligned::Pages(_) => {
                let mut a = Aligned::zeroed_bytes(self.bytes().len());
                a.bytes_mut().copy_from_slice(self.bytes());
                a
            }
        }
    }
}

impl Aligned {
    fn zeroed_bytes(len: usize) -> Self {
        Aligned::zeros(len.div_ceil(4))
    }
    fn bytes(&self) -> &[u8] {
        match self {
            // SAFETY: `Line` is 64 bytes with no padding.
            Aligned::Heap(v) => unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, v.len() * 64) },
            // SAFETY: the block is `len` initialized bytes (a whole number of lines).
            Aligned::Pages(b) => unsafe { std::slice::from_raw_parts(b.as_ptr(), b.len()) },
        }
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            // SAFETY: as above.
            Aligned::Heap(v) => unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, v.len() * 64) },
            // SAFETY: as above; the block's range is this value's alone.
            Aligned::Pages(b) => unsafe { std::slice::from_raw_parts_mut(b.as_mut_ptr(), b.len()) },
        }
    }
    /// The same bytes in 2 MB pages (unchanged if none could be had).
    fn into_pages(self) -> Self {
        match pages::copy_of(self.bytes()) {
            Some(b) => Aligned::Pages(b),
            None => self,
        }
    }
}

#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

impl Aligned {
    fn zeros(len: usize) -> Self {
        Aligned::Heap(vec![Line([0.0; 16]); len.div_ceil(16)])
    }
    fn as_slice(&self) -> &[f32] {
        let b = self.bytes();
        // SAFETY: 64-byte aligned, a whole number of 64-byte lines of f32s.
        unsafe { std::slice::from_raw_parts(b.as_ptr() as *const f32, b.len() / 4) }
    }
    fn as_mut_slice(&mut self) -> &mut [f32] {
        let b = self.bytes_mut();
        // SAFETY: as above.
        unsafe { std::slice::from_raw_parts_mut(b.as_mut_ptr() as *mut f32, b.len() / 4) }
    }
}

/// Row-major `[n, kp]` rows as interleaved panels ([`PANEL`]), zero padded to whole panels.
fn interleave(rows: &[f32], n: usize, kp: usize) -> Aligned {
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
fn deinterleave(data: &[f32], n: usize, kp: usize) -> Vec<f32> {
    let mut rows = vec![0f32; n * kp];
    for (r, row) in rows.chunks_exact_mut(kp).enumerate() {
        let base = (r / PANEL) * PANEL * kp + (r % PANEL) * 8;
        for (t, lanes) in row.chunks_exact_mut(8).enumerate() {
            lanes.copy_from_slice(&data[base + t * PANEL * 8..][..8]);
        }
    }
    rows
}

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
    parts: Vec<std::ops::Range<usize>>,
}

impl BatchedWeight {
    /// Weights this kernel beats candle's on: dense ones, and the quant types it has
    /// integer kernels for. (Others would have to be stored as f32, which makes a
    /// single-sequence decode read several times the bytes.)
    pub fn supports(w: &Weight) -> bool {
        match w {
            Weight::Dense(_) => true,
            Weight::Quant(q) => {
                matches!(q.dtype(), GgmlDType::Q4_1 | GgmlDType::Q8_0)
                    && q.shape().dims2().is_ok_and(|(_, k)| k % 32 == 0)
            }
        }
    }

    /// Q4_1 and Q8_0 stay quantized; other quant types are dequantized to f32 once here.
    pub fn new(w: &Weight) -> Result<Self> {
        let (n, k) = w.dims2()?;
        let k_pad = k.div_ceil(8) * 8;
        let store = match w {
            Weight::Quant(q) if matches!(q.dtype(), GgmlDType::Q4_1 | GgmlDType::Q8_0) && k % 32 == 0 => {
                let fmt = if q.dtype() == GgmlDType::Q4_1 { int8::Format::Q4_1 } else { int8::Format::Q8_0 };
                Store::Quant(fmt, pack_panels(fmt, &q.data()?, n, k / int8::BLOCK))
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
        Ok(Self { n, k, k_pad, store, parts: vec![0..k] })
    }

    /// Keeps the products of the column ranges `parts` (consecutive, covering `0..k`, on
    /// the 8-lane step, or on quant blocks of 32 for a quantized weight) apart: each
    /// part's outputs are its own chains from zero, as if each part were a weight of its
    /// own, in one pass over the weight.
    pub fn with_parts(mut self, parts: &[std::ops::Range<usize>]) -> Result<Self> {
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
        Some(BatchedWeight { n, k: first.k, k_pad: first.k_pad, store, parts: vec![0..first.k] })
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
        // SAFETY: `y` has room for `len` outputs and the matmul writes each of them.
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
        let work = |range: std::ops::Range<usize>| {
            for item in range {
                let (rb, p) = (item / panels, item % panels);
                let rows = rb * ROW_BLOCK..m.min((rb + 1) * ROW_BLOCK);
                // SAFETY: each (row block, panel) item writes only its own outputs.
                unsafe { self.panel(x, rows, &tiles[rb], p, y_ptr as *mut f32, m * self.n) };
            }
        };
        self.run(row_blocks * panels, m, &work);
    }

    /// Runs `items` work items here or on the pool.
    fn run(&self, items: usize, m: usize, work: &(dyn Fn(std::ops::Range<usize>) + Sync)) {
        if m * self.n * self.k < 1 << 16 {
            work(0..items);
        } else {
            let pool = crate::kernels::pool::pool();
            // A few chunks per thread: a straggler's share stays small.
            pool.run(items, items.div_ceil(4 * (pool.threads())), work);
        }
    }

    /// [`Self::matmul`] for a quantized weight: `x` quantized once per call, then
    /// integer tiles of up to [`int8::MAX_TILE_ROWS`] rows × one panel of 16 weight rows.
    unsafe fn matmul_int(&self, fmt: int8::Format, panels: &Aligned, x: &[f32], m: usize, y: *mut f32, summed: bool) {
        let (n, nb) = (self.n, self.k / int8::BLOCK);
        let kernel = int8_kernel();
        let n_panels = n.div_ceil(int8::ROWS);
        let row_blocks = m.div_ceil(ROW_BLOCK);
        let tiles: Vec<Vec<(usize, usize)>> = (0..row_blocks)
            .map(|rb| even_tiles(rb * ROW_BLOCK..m.min((rb + 1) * ROW_BLOCK), int8::MAX_TILE_ROWS))
            .collect();
        let panel_stride = nb * fmt.panel_bytes();
        let part_blocks: Vec<std::ops::Range<usize>> =
            self.parts.iter().map(|p| p.start / int8::BLOCK..p.end / int8::BLOCK).collect();
        XQ.with(|xq| {
            let mut xq = xq.borrow_mut();
            xq.resize(m, nb);
            let rows = xq.rows();
            let quantize = |range: std::ops::Range<usize>| {
                // SAFETY: each item quantizes only its own rows.
                unsafe { rows.quantize(x, range) }
            };
            if m * self.k >= 1 << 14 {
                crate::kernels::pool::pool().run(m, m.div_ceil(2 * crate::kernels::pool::pool().threads()), &quantize);
            } else {
                quantize(0..m);
            }
            let xq = &*xq;
            let (y_ptr, w_ptr) = (y as usize, panels.bytes().as_ptr() as usize);
            let work = |range: std::ops::Range<usize>| {
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
                            // SAFETY: the panel holds every block, `x` rows `i..i + r`, and
                            // each (row block, panel) item writes only its own outputs.
                            unsafe { int8::tile(kernel, fmt, &job, r) };
                        }
                    }
                }
            };
            self.run(row_blocks * n_panels, m, &work);
        })
    }

    /// Outputs `rows × panel p` of every part; part `q` starts at `y + q * part_stride`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn panel(
        &self,
        x: &[f32],
        rows: std::ops::Range<usize>,
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
    #[allow(clippy::too_many_arguments)]
    unsafe fn rows_times_panel(
        &self,
        x: &[f32],
        rows: std::ops::Range<usize>,
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
                        #[cfg(target_arch = "x86_64")]
                        if has_avx512() {
                            // The same lanes, two weight rows per vector: a whole panel per tile.
                            match r {
                                6 => x512::tile::<6>(xi, w.as_ptr(), kp, cols.clone(), fresh, a, row_stride),
                                5 => x512::tile::<5>(xi, w.as_ptr(), kp, cols.clone(), fresh, a, row_stride),
                                4 => x512::tile::<4>(xi, w.as_ptr(), kp, cols.clone(), fresh, a, row_stride),
                                2 => x512::tile::<2>(xi, w.as_ptr(), kp, cols.clone(), fresh, a, row_stride),
                                _ => x512::tile::<1>(xi, w.as_ptr(), kp, cols.clone(), fresh, a, row_stride),
                            }
                            continue;
                        }
                        macro_rules! tiles {
                            ($r:literal, $c:literal) => {
                                for c0 in (0..PANEL).step_by($c) {
                                    let wc = w.as_ptr().add(c0 * 8);
                                    tile::<$r, $c>(xi, wc, kp, cols.clone(), fresh, a.add(c0 * 8), row_stride);
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

/// For `r < R`, `c < C`: lane `l` of `acc[r][c]` (at `acc + r * acc_row + c * 8`; zero
/// first when `fresh`) gets `x[r][p] * w[c][p]` added by FMA for `p` in `cols` with
/// `p % 8 == l`, in increasing `p`. Rows of `x` are `k` apart; `w` is a panel
/// ([`PANEL`]) from its column `c0`: `w[c][p]` at `(p / 8) * 64 + c * 8 + p % 8`.
#[inline]
unsafe fn tile<const R: usize, const C: usize>(
    x: *const f32,
    w: *const f32,
    k: usize,
    cols: std::ops::Range<usize>,
    fresh: bool,
    acc: *mut f32,
    acc_row: usize,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2() {
            return x86::tile::<R, C>(x, w, k, cols, fresh, acc, acc_row);
        }
    }
    portable_tile::<R, C>(x, w, k, cols, fresh, acc, acc_row)
}

/// The same lanes as the AVX2 kernel, in scalar code.
unsafe fn portable_tile<const R: usize, const C: usize>(
    x: *const f32,
    w: *const f32,
    k: usize,
    cols: std::ops::Range<usize>,
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

/// For each of the 8 columns' lanes `l = lanes[8c..8c + 8]`:
/// `((l0+l1) + (l2+l3)) + ((l4+l5) + (l6+l7))`.
fn lane_sums(lanes: &[f32; 8 * PANEL], out: &mut [f32; PANEL]) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2() {
            return unsafe { x86::lane_sums(lanes, out) };
        }
    }
    for (o, l) in out.iter_mut().zip(lanes.chunks_exact(8)) {
        *o = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
}

/// AVX-512 tiles, unless `STUDIO_NO_AVX512` is set (to compare the two; they give the
/// same bits).
pub(super) fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *ON.get_or_init(|| {
            is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512dq")
                && has_avx2()
                && std::env::var_os("STUDIO_NO_AVX512").is_none()
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

pub(super) fn f16_to_f32(bits: u16) -> f32 {
    let sign = ((bits >> 15) as u32) << 31;
    let exp = ((bits >> 10) & 0x1f) as u32;
    let frac = (bits & 0x3ff) as u32;
    let v = match (exp, frac) {
        (0, 0) => sign,
        // Subnormal: exact as a product (a power of two times a small integer).
        (0, f) => return f32::from_bits(sign) + (if sign != 0 { -1.0 } else { 1.0 }) * f as f32 * (-24f32).exp2(),
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 112) << 23) | (f << 13),
    };
    f32::from_bits(v)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Explicit accumulators: LLVM spills and shuffles arrays of `__m256` in this loop.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile<const R: usize, const C: usize>(
        x: *const f32,
        w: *const f32,
        k: usize,
        cols: std::ops::Range<usize>,
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

    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile_6x2(
        x: *const f32,
        w: *const f32,
        k: usize,
        cols: std::ops::Range<usize>,
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

    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile_5x2(
        x: *const f32,
        w: *const f32,
        k: usize,
        cols: std::ops::Range<usize>,
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

    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile_4x2(
        x: *const f32,
        w: *const f32,
        k: usize,
        cols: std::ops::Range<usize>,
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

    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile_2x4(
        x: *const f32,
        w: *const f32,
        k: usize,
        cols: std::ops::Range<usize>,
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

    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile_1x8(x: *const f32, w: *const f32, cols: std::ops::Range<usize>, fresh: bool, acc: *mut f32) {
        let ld = |c: usize| if fresh { _mm256_setzero_ps() } else { _mm256_loadu_ps(acc.add(c * 8)) };
        let (mut a0, mut a1, mut a2, mut a3) = (ld(0), ld(1), ld(2), ld(3));
        let (mut a4, mut a5, mut a6, mut a7) = (ld(4), ld(5), ld(6), ld(7));
        let mut p = cols.start;
        while p < cols.end {
            let u = _mm256_loadu_ps(x.add(p));
            a0 = _mm256_fmadd_ps(u, _mm256_loadu_ps(w.add(p * 8)), a0);
            a1 = _mm256_fmadd_ps(u, _mm256_loadu_ps(w.add(p * 8 + 1 * 8)), a1);
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

    /// Two rounds of `hadd` pair adjacent lanes, then the 128-bit halves are added:
    /// `((l0+l1) + (l2+l3)) + ((l4+l5) + (l6+l7))` for 8 columns at once.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn lane_sums(lanes: &[f32; 64], out: &mut [f32; 8]) {
        let a = |c: usize| _mm256_loadu_ps(lanes.as_ptr().add(8 * c));
        let (h01, h23) = (_mm256_hadd_ps(a(0), a(1)), _mm256_hadd_ps(a(2), a(3)));
        let (h45, h67) = (_mm256_hadd_ps(a(4), a(5)), _mm256_hadd_ps(a(6), a(7)));
        // Per 128-bit half: columns 0..4 (resp. 4..8), lanes 0..4 (low half) or 4..8 (high).
        let (q0, q1) = (_mm256_hadd_ps(h01, h23), _mm256_hadd_ps(h45, h67));
        let lo = _mm256_permute2f128_ps(q0, q1, 0x20);
        let hi = _mm256_permute2f128_ps(q0, q1, 0x31);
        _mm256_storeu_ps(out.as_mut_ptr(), _mm256_add_ps(lo, hi));
    }
}

#[cfg(target_arch = "x86_64")]
mod x512 {
    use std::arch::x86_64::*;

    /// `R` rows of `x` times a whole panel: vector `j` of a step holds weight rows `2j` and
    /// `2j + 1` (8 lanes each), `x`'s 8 lanes are repeated in both halves, so each lane
    /// runs the same FMA chain as [`super::tile`]'s. `4R` accumulators, 4 weight vectors
    /// and one `x` vector fit the 32 zmm registers up to `R = 6`.
    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    pub(super) unsafe fn tile<const R: usize>(
        x: *const f32,
        w: *const f32,
        k: usize,
        cols: std::ops::Range<usize>,
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
    use candle_core::quantized::QTensor;
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

    #[test]
    fn quantized_weights_agree_with_candles_quantized_matmul() {
        // candle also quantizes x per block of 32 (Q8_1 for Q4_1 weights, Q8_0 for Q8_0):
        // the same integer sums, its scales rounded to f16.
        for dt in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
            let w = weight(40, 576, Some(dt));
            let Weight::Quant(q) = &w else { unreachable!() };
            let candle = candle_core::quantized::QMatMul::from_arc(q.clone()).unwrap();
            let x = Tensor::randn(0f32, 1.0, (5, 576), &Device::Cpu).unwrap();
            let got = BatchedWeight::new(&w).unwrap().forward(&x).unwrap().to_vec2::<f32>().unwrap();
            let want = candle_core::Module::forward(&candle, &x).unwrap().to_vec2::<f32>().unwrap();
            let mags = reference(&x.to_vec2::<f32>().unwrap(), &w);
            for ((g, c), (_, mag)) in got.iter().flatten().zip(want.iter().flatten()).zip(mags.iter().flatten()) {
                assert!(((g - c) as f64).abs() <= 2e-3 * mag, "{dt:?}: {g} vs candle's {c}");
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
        for (dt, n, k) in [(Some(GgmlDType::Q4_1), 200, 1536), (Some(GgmlDType::Q8_0), 77, 576), (None, 9, 44)] {
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
        for dt in [Some(GgmlDType::Q4_1), Some(GgmlDType::Q8_0), None] {
            let (n, k) = (21, 192);
            let w = weight(n, k, dt);
            let x = Tensor::randn(0f32, 1.0, (7, k), &Device::Cpu).unwrap();
            // Three column parts, as a row-parallel layer with three heads holds them.
            let ranges = [0..64, 64..160, 160..192];
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
            assert!(BatchedWeight::new(&w).unwrap().with_parts(&[0..60, 60..192]).is_err());

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

    #[test]
    fn portable_kernel_equals_the_simd_one() {
        let k = 40;
        let xs = Tensor::randn(0f32, 1.0, 6 * k, &Device::Cpu).unwrap().to_vec1::<f32>().unwrap();
        let ws = Tensor::randn(0f32, 1.0, 8 * k, &Device::Cpu).unwrap().to_vec1::<f32>().unwrap();
        // Each tile shape writes its own lanes of one accumulator block (rows 64 apart).
        let (mut a, mut b) = (vec![0.5f32; 6 * 64 + 64], vec![0.5f32; 6 * 64 + 64]);
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
        if has_avx512() {
            for r in [1, 2, 4, 5, 6] {
                for (cols, fresh) in [(8..40, false), (0..16, true)] {
                    let (mut a, mut b) = (vec![0.25f32; 6 * 64], vec![0.25f32; 6 * 64]);
                    let (x, w) = (xs.as_ptr(), ws.as_ptr());
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

    #[test]
    fn f16_conversion_is_exact() {
        for bits in [0u16, 0x8000, 0x0001, 0x03ff, 0x3c00, 0xbc00, 0x7bff, 0x7c00, 0x3555] {
            let want = match bits {
                0x0001 => 2f32.powi(-24),
                0x03ff => 1023.0 * 2f32.powi(-24),
                0x3c00 => 1.0,
                0xbc00 => -1.0,
                0x7bff => 65504.0,
                0x7c00 => f32::INFINITY,
                0x3555 => 0.333_251_95,
                _ => 0.0,
            };
            assert_eq!(f16_to_f32(bits), want, "{bits:#x}");
        }
    }
}
