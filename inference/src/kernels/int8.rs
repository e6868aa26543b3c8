//! Integer kernels for quantized weights: each row of `x` is quantized to 8 bits per
//! block of 32 (a scale `d` and 32 `i8`, as ggml's Q8_1), and each (row, weight row,
//! block) product is an exact integer dot product, scaled into an f32 accumulator.
//!
//! This is the arithmetic of candle's and llama.cpp's Q4_1 × Q8_1 and Q8_0 × Q8_0 dot
//! products, with the weights laid out for `vpdpbusd`: a panel of [`ROWS`] weight rows
//! holds, per block, 8 vectors of 64 bytes, vector `s` holding the 4 values `4s..4s + 4`
//! of each of the 16 rows. One `vpdpbusd` against 4 bytes of a row of `x` broadcast
//! adds 64 products into 16 lanes, one lane per weight row, so no lane is ever summed
//! across: the output `(i, c)` is lane `c`'s chain.
//!
//! GGUF's other types are rewritten exactly into these blocks of 32 when a weight is
//! loaded (see [`super::repack`]): Q5_0 as [`Format::Q5`] (its high bits regrouped), Q4_K
//! as [`Format::Q4F`] (Q4_1 with f32 scale and offset), Q6_K as [`Format::Q6H`] (6-bit
//! quants, an f32 scale per half).
//!
//! Numerics (every kernel, every tile, any `m`): for the blocks `b` of a part in order,
//! `acc = fma(f32(Σ w·q), d_w · d_x, acc)`, then for Q4_1 and Q4F
//! `acc = fma(m_w, d_x · Σq, acc)`; Q6H takes its halves in order,
//! `acc = fma(f32(Σ_lo w·q), d_lo · d_x, acc)`, `acc = fma(f32(Σ_hi w·q), d_hi · d_x, acc)`;
//! from `acc = 0`. The integer sums are exact, whatever order a kernel adds in.

use std::ops::Range;

use super::tiles::even_split;
use crate::simd;

/// Weight rows per panel: one lane of an AVX-512 vector each.
pub(super) const ROWS: usize = 16;
/// Values per quant block (of the weight and of `x`).
pub(super) const BLOCK: usize = 32;

/// The weight formats the integer kernels take: a block of one row as [`pack`] takes it
/// (GGUF's own block for Q4_1 and Q8_0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    /// GGUF block: f16 d, f16 m, 16 bytes of nibbles (value `j` low nibble of byte `j`,
    /// value `j + 16` its high nibble); `w = q · d + m`, `q` in `0..16`.
    Q4_1,
    /// GGUF block: f16 d, 32 `i8`; `w = q · d`.
    Q8_0,
    /// Q4_1 with f32 `d` and `m` (a Q4_K sub-block: `d · sc` and `-dmin · m`, exact in
    /// f32): f32 d, f32 m, 16 bytes of nibbles as Q4_1's.
    Q4F,
    /// Two halves of 16 values with their own scale (Q6_K's sub-blocks: `d · sc`, exact
    /// in f32): f32 d_lo, f32 d_hi, 32 bytes `q` in `0..64`; `w = (q - 32) · d_half`.
    Q6H,
    /// Q5_0 with its high bits regrouped: f16 d, 4 bytes of high bits (bit `s` of byte
    /// `j` for value `4s + j`), 16 bytes of nibbles as Q4_1's; `w = (q - 16) · d`, `q` in
    /// `0..32`.
    Q5,
}

/// A kernel's format parameter (`const F: u8`): [`Format`]'s discriminant.
const F_Q4_1: u8 = 0;
const F_Q8_0: u8 = 1;
const F_Q4F: u8 = 2;
const F_Q6H: u8 = 3;
const F_Q5: u8 = 4;

impl Format {
    /// The format a kernel's `F` parameter names.
    const fn of(f: u8) -> Format {
        match f {
            F_Q4_1 => Format::Q4_1,
            F_Q8_0 => Format::Q8_0,
            F_Q4F => Format::Q4F,
            F_Q6H => Format::Q6H,
            _ => Format::Q5,
        }
    }

    /// Bytes of one block of one row as [`pack`] takes it.
    pub(super) fn gguf_bytes(self) -> usize {
        match self {
            Format::Q4_1 => 20,
            Format::Q8_0 => 34,
            Format::Q4F => 24,
            Format::Q6H => 40,
            Format::Q5 => 22,
        }
    }

    /// Bytes of one block of a whole panel: the 16 rows' scales (`d` at 0, then Q4_1's
    /// `m` at 32 (f16), Q4F's `m` or Q6H's `d_hi` at 64 (f32)), then the quants (Q4_1 at
    /// 64, Q4F at 128: 4 vectors of nibbles, vector `t` holding steps `t` (low nibbles)
    /// and `t + 4` (high); Q8_0 at 32, Q6H at 128: 8 vectors). Q5: f16 `d` at 0, a
    /// vector of high bits at 32 (byte `4c + j` holding row `c`'s byte `j`), nibbles as
    /// Q4_1's at 96.
    pub(super) fn panel_bytes(self) -> usize {
        match self {
            Format::Q4_1 => 64 + 4 * 64,
            Format::Q8_0 => 32 + 8 * 64,
            Format::Q4F => 128 + 4 * 64,
            Format::Q6H => 128 + 8 * 64,
            Format::Q5 => 96 + 4 * 64,
        }
    }

    /// Where byte `i` of row `c`'s block goes in its panel block.
    fn place(self, c: usize, i: usize) -> usize {
        match (self, i) {
            (Format::Q4_1 | Format::Q8_0 | Format::Q5, 0 | 1) => 2 * c + i,
            (Format::Q5, 2..6) => 32 + 4 * c + i - 2,
            (Format::Q5, _) => {
                let j = i - 6;
                96 + (j / 4) * 64 + 4 * c + j % 4
            }
            (Format::Q4_1, 2 | 3) => 32 + 2 * c + i - 2,
            (Format::Q4_1, _) => {
                let j = i - 4;
                64 + (j / 4) * 64 + 4 * c + j % 4
            }
            (Format::Q8_0, _) => {
                let e = i - 2;
                32 + (e / 4) * 64 + 4 * c + e % 4
            }
            (Format::Q4F | Format::Q6H, 0..4) => 4 * c + i,
            (Format::Q4F | Format::Q6H, 4..8) => 64 + 4 * c + i - 4,
            (Format::Q4F | Format::Q6H, _) => {
                let e = i - 8;
                128 + (e / 4) * 64 + 4 * c + e % 4
            }
        }
    }
}

/// GGUF rows (`n` rows of `nb` blocks) as panels of [`ROWS`] rows, zero padded; block `b`
/// of panel `p` at `(p * nb + b) * panel_bytes`.
pub(super) fn pack(fmt: Format, gguf: &[u8], n: usize, nb: usize, out: &mut [u8]) {
    let (gb, pb) = (fmt.gguf_bytes(), fmt.panel_bytes());
    assert!(gguf.len() >= n * nb * gb && out.len() >= n.div_ceil(ROWS) * nb * pb);
    for r in 0..n {
        let (p, c) = (r / ROWS, r % ROWS);
        for b in 0..nb {
            let src = &gguf[(r * nb + b) * gb..][..gb];
            let dst = &mut out[(p * nb + b) * pb..][..pb];
            for (i, v) in src.iter().enumerate() {
                dst[fmt.place(c, i)] = *v;
            }
        }
    }
}

/// The inverse of [`pack`]: `n` GGUF rows.
pub(super) fn unpack(fmt: Format, panels: &[u8], n: usize, nb: usize) -> Vec<u8> {
    let (gb, pb) = (fmt.gguf_bytes(), fmt.panel_bytes());
    let mut rows = vec![0u8; n * nb * gb];
    for r in 0..n {
        let (p, c) = (r / ROWS, r % ROWS);
        for b in 0..nb {
            let src = &panels[(p * nb + b) * pb..][..pb];
            for (i, v) in rows[(r * nb + b) * gb..][..gb].iter_mut().enumerate() {
                *v = src[fmt.place(c, i)];
            }
        }
    }
    rows
}

/// Rows of `x` quantized per block of 32: `q = round(x / d)` (ties to even) with
/// `d = max|x| / 127`, as ggml's Q8_1 (which rounds ties away from zero).
#[derive(Debug, Default)]
pub(super) struct QuantRows {
    /// Blocks per row.
    pub nb: usize,
    /// `[m, nb * 32]`.
    pub q: Vec<i8>,
    /// `[m, nb]`: the scale `d`.
    pub d: Vec<f32>,
    /// `[m, nb]`: `d · Σq` (Q4_1's offset term).
    pub ds: Vec<f32>,
    /// `[m, nb]`: `Σq`.
    pub sum: Vec<i32>,
    /// `[m, nb]`: `Σq` over the block's first 16 values (Q6H's halves).
    pub hsum: Vec<i32>,
}

impl QuantRows {
    /// `x: [m, nb * 32]`, reusing this buffer's allocations.
    #[cfg(test)]
    pub fn quantize(&mut self, x: &[f32], m: usize, nb: usize) {
        self.resize(m, nb);
        // SAFETY: `resize` sized `self` for `m` rows just above, `self` outlives the
        // handle (a temporary), and this thread is the only one writing.
        unsafe { self.rows().quantize(x, 0..m) }
    }

    /// Room for `m` rows of `nb` blocks (keeping the allocations).
    pub fn resize(&mut self, m: usize, nb: usize) {
        self.nb = nb;
        self.q.resize(m * nb * BLOCK, 0);
        self.d.resize(m * nb, 0.0);
        self.ds.resize(m * nb, 0.0);
        self.sum.resize(m * nb, 0);
        self.hsum.resize(m * nb, 0);
    }

    /// A handle that threads quantize disjoint rows through.
    pub fn rows(&mut self) -> RowWriter {
        RowWriter {
            nb: self.nb,
            q: self.q.as_mut_ptr(),
            d: self.d.as_mut_ptr(),
            ds: self.ds.as_mut_ptr(),
            sum: self.sum.as_mut_ptr(),
            hsum: self.hsum.as_mut_ptr(),
        }
    }
}

/// Raw access to a [`QuantRows`]'s rows, for quantizing them on several threads.
pub(super) struct RowWriter {
    nb: usize,
    q: *mut i8,
    d: *mut f32,
    ds: *mut f32,
    sum: *mut i32,
    hsum: *mut i32,
}

// SAFETY: a shared handle only writes through its pointers in `quantize`, whose contract
// has the threads sharing it write disjoint rows of a buffer that outlives it.
unsafe impl Sync for RowWriter {}

impl RowWriter {
    /// Quantizes rows `rows` of `x` (`[m, nb * 32]`).
    ///
    /// # Safety
    /// The [`QuantRows`] is sized for these rows and outlives this handle, and no other
    /// thread writes them meanwhile.
    pub unsafe fn quantize(&self, x: &[f32], rows: Range<usize>) {
        let nb = self.nb;
        for j in rows.start * nb..rows.end * nb {
            let xb: &[f32; BLOCK] = x[j * BLOCK..][..BLOCK].try_into().expect("a block");
            let q = &mut *(self.q.add(j * BLOCK) as *mut [i8; BLOCK]);
            let (d, sum) = quantize_block(xb, q);
            *self.d.add(j) = d;
            *self.sum.add(j) = sum;
            *self.hsum.add(j) = q[..BLOCK / 2].iter().map(|&v| i32::from(v)).sum();
            *self.ds.add(j) = d * sum as f32;
        }
    }
}

/// One block: returns `(d, Σq)`.
fn quantize_block(x: &[f32; BLOCK], q: &mut [i8; BLOCK]) -> (f32, i32) {
    #[cfg(target_arch = "x86_64")]
    if simd::has_avx512() {
        // SAFETY: AVX-512 F and DQ were detected just above (the kernel takes references only).
        return unsafe { x512::quantize_block(x, q) };
    }
    #[cfg(target_arch = "x86_64")]
    if simd::has_avx2_fma_f16c() {
        // SAFETY: AVX2 was detected just above (the kernel takes references only).
        return unsafe { x86::quantize_block(x, q) };
    }
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut sum = 0;
    for (q, v) in q.iter_mut().zip(x) {
        let r = (v * id).round_ties_even() as i32;
        *q = r as i8;
        sum += r;
    }
    (d, sum)
}

/// Which kernel family runs: AVX-512 VNNI, AVX2, or portable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Vnni512,
}

impl Kernel {
    /// The fastest this machine runs (`STUDIO_NO_AVX512` turns AVX-512 off).
    pub(super) fn best() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if simd::has_avx512_vnni() {
                return Kernel::Vnni512;
            }
            if simd::has_avx2_fma_f16c() {
                return Kernel::Avx2;
            }
        }
        Kernel::Portable
    }
}

/// Most rows of `x` in one AVX-512 register tile: R accumulators, the panel's 8 weight vectors,
/// its scales and two integer sums fit the 32 zmm registers.
pub(super) const MAX_TILE_ROWS: usize = 16;

/// Most rows of `x` in one AVX2 (and portable) tile: 8 integer sums in registers, the f32
/// totals beside them in L1.
const AVX2_TILE_ROWS: usize = 8;

/// One register tile's outputs: `(i0 + r, c)` for `r < rows`, `c < width` (at
/// `y + r * ldy + c`) over blocks `blocks` of one panel (`w`: the panel's first block) for
/// rows `i0..` of `x`; with `add`, each is added to what `y` holds (`y + out`).
#[derive(Clone)]
pub(super) struct Tile<'a> {
    pub x: &'a QuantRows,
    pub i0: usize,
    pub w: *const u8,
    pub blocks: Range<usize>,
    /// Later parts (block ranges), each one's product added in order to the total:
    /// `((p0 + p1) + p2) + ...`, the bits of storing `p0` and then adding each part to
    /// `y` (with `add` false).
    pub rest: &'a [Range<usize>],
    pub y: *mut f32,
    pub ldy: usize,
    pub width: usize,
    pub add: bool,
}

/// Computes `t` for `rows` rows with `kernel`.
///
/// # Safety
/// `t.w` holds the panel's blocks `t.blocks`, `t.x` holds rows `t.i0..t.i0 + rows`, and
/// `t.y` has room for every output written; `kernel` runs on this machine;
/// `rows <= MAX_TILE_ROWS`.
pub(super) unsafe fn tile(kernel: Kernel, fmt: Format, t: &Tile, rows: usize) {
    debug_assert!((1..=MAX_TILE_ROWS).contains(&rows));
    debug_assert!(!t.add || t.rest.is_empty(), "a running total starts from zero");
    #[cfg(target_arch = "x86_64")]
    let in_kernel = kernel == Kernel::Avx2;
    #[cfg(not(target_arch = "x86_64"))]
    let in_kernel = false;
    if !in_kernel && !t.rest.is_empty() {
        // Kernels without a running total: the first part stored, each later one added.
        tile(kernel, fmt, &Tile { rest: &[], ..t.clone() }, rows);
        for part in t.rest {
            tile(kernel, fmt, &Tile { blocks: part.clone(), rest: &[], add: true, ..t.clone() }, rows);
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Vnni512 {
        macro_rules! by_rows {
            ($f:ident, $($r:literal)*) => {
                match rows {
                    $($r => x512::tile::<$r, $f>(t),)*
                    _ => unreachable!("at most {MAX_TILE_ROWS} rows"),
                }
            };
        }
        match fmt {
            Format::Q4_1 => by_rows!(F_Q4_1, 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16),
            Format::Q8_0 => by_rows!(F_Q8_0, 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16),
            Format::Q4F => by_rows!(F_Q4F, 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16),
            Format::Q6H => by_rows!(F_Q6H, 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16),
            Format::Q5 => by_rows!(F_Q5, 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16),
        }
        return;
    }
    // The other kernels hold fewer accumulators: tiles of at most `AVX2_TILE_ROWS` rows,
    // split evenly ([`even_split`]: 12 rows are 6 + 6, not 8 + 4).
    for (i, r) in even_split(0..rows, AVX2_TILE_ROWS) {
        let t = &Tile { i0: t.i0 + i, y: t.y.add(i * t.ldy), ..t.clone() };
        macro_rules! by_rows {
            ($($f:ident)::+, $fmt:ident) => {
                match r {
                    1 => $($f)::+::<1, $fmt>(t),
                    2 => $($f)::+::<2, $fmt>(t),
                    3 => $($f)::+::<3, $fmt>(t),
                    4 => $($f)::+::<4, $fmt>(t),
                    5 => $($f)::+::<5, $fmt>(t),
                    6 => $($f)::+::<6, $fmt>(t),
                    7 => $($f)::+::<7, $fmt>(t),
                    _ => $($f)::+::<8, $fmt>(t),
                }
            };
        }
        match (kernel, fmt) {
            #[cfg(target_arch = "x86_64")]
            (Kernel::Avx2, Format::Q4_1) => by_rows!(x86::tile, F_Q4_1),
            #[cfg(target_arch = "x86_64")]
            (Kernel::Avx2, Format::Q8_0) => by_rows!(x86::tile, F_Q8_0),
            #[cfg(target_arch = "x86_64")]
            (Kernel::Avx2, Format::Q4F) => by_rows!(x86::tile, F_Q4F),
            #[cfg(target_arch = "x86_64")]
            (Kernel::Avx2, Format::Q6H) => by_rows!(x86::tile, F_Q6H),
            #[cfg(target_arch = "x86_64")]
            (Kernel::Avx2, Format::Q5) => by_rows!(x86::tile, F_Q5),
            (_, Format::Q4_1) => by_rows!(portable, F_Q4_1),
            (_, Format::Q8_0) => by_rows!(portable, F_Q8_0),
            (_, Format::Q4F) => by_rows!(portable, F_Q4F),
            (_, Format::Q6H) => by_rows!(portable, F_Q6H),
            (_, Format::Q5) => by_rows!(portable, F_Q5),
        }
    }
}

/// The reference arithmetic, one lane at a time.
///
/// # Safety
/// As for [`tile`] with `rows = R`.
unsafe fn portable<const R: usize, const F: u8>(t: &Tile) {
    let Tile { x, i0, w, y, ldy, width, add, .. } = *t;
    let fmt = Format::of(F);
    let pb = fmt.panel_bytes();
    let nb = x.nb;
    for r in 0..R {
        let i = i0 + r;
        for c in 0..width {
            let mut acc = 0f32;
            for b in t.blocks.clone() {
                let wb = std::slice::from_raw_parts(w.add(b * pb), pb);
                let at = |i: usize| wb[fmt.place(c, i)];
                let half = |i: usize| f16_to_f32(u16::from_le_bytes([at(i), at(i + 1)]));
                let single = |i: usize| f32::from_le_bytes([at(i), at(i + 1), at(i + 2), at(i + 3)]);
                let j = i * nb + b;
                let xq = &x.q[j * BLOCK..][..BLOCK];
                // Σ w·q over values `e` of the block, `wq(e)` the weight's integer.
                let dot =
                    |e: Range<usize>, wq: &dyn Fn(usize) -> i32| -> i32 { e.map(|e| wq(e) * i32::from(xq[e])).sum() };
                match fmt {
                    Format::Q4_1 | Format::Q4F => {
                        let (d, mn, q0) =
                            if fmt == Format::Q4_1 { (half(0), half(2), 4) } else { (single(0), single(4), 8) };
                        let nibble = |e: usize| {
                            let byte = at(q0 + e % 16);
                            i32::from(if e < 16 { byte & 0x0f } else { byte >> 4 })
                        };
                        acc = (dot(0..BLOCK, &nibble) as f32).mul_add(d * x.d[j], acc);
                        acc = mn.mul_add(x.ds[j], acc);
                    }
                    Format::Q8_0 => {
                        let dq = dot(0..BLOCK, &|e| i32::from(at(2 + e) as i8));
                        acc = (dq as f32).mul_add(half(0) * x.d[j], acc);
                    }
                    Format::Q6H => {
                        for h in 0..2 {
                            let dq = dot(16 * h..16 * h + 16, &|e| i32::from(at(8 + e)) - 32);
                            acc = (dq as f32).mul_add(single(4 * h) * x.d[j], acc);
                        }
                    }
                    Format::Q5 => {
                        let q = |e: usize| {
                            let byte = at(6 + e % 16);
                            let low = if e < 16 { byte & 0x0f } else { byte >> 4 };
                            let high = (at(2 + e % 4) >> (e / 4)) & 1;
                            i32::from(low | high << 4) - 16
                        };
                        acc = (dot(0..BLOCK, &q) as f32).mul_add(half(0) * x.d[j], acc);
                    }
                }
            }
            let out = y.add(r * ldy + c);
            *out = if add { *out + acc } else { acc };
        }
    }
}

/// An IEEE half (a GGUF block's scale) as f32, exactly.
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
    use super::*;
    use std::arch::x86_64::*;

    /// [`super::quantize_block`]'s arithmetic: the same `d`, `1 / d`, products and
    /// ties-to-even rounding (the default MXCSR mode); a maximum is exact in any order.
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn quantize_block(x: &[f32; BLOCK], q: &mut [i8; BLOCK]) -> (f32, i32) {
        let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(x.as_ptr().add(8 * i)));
        let abs = |v: __m256| _mm256_andnot_ps(_mm256_set1_ps(-0.0), v);
        let m = _mm256_max_ps(_mm256_max_ps(abs(v[0]), abs(v[1])), _mm256_max_ps(abs(v[2]), abs(v[3])));
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), m);
        let amax = lanes.iter().fold(0f32, |a, &v| a.max(v));
        let d = amax / 127.0;
        let id = _mm256_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
        let qi: [__m256i; 4] = std::array::from_fn(|i| _mm256_cvtps_epi32(_mm256_mul_ps(v[i], id)));
        // i32 → i16 → i8 by 128-bit lanes: dword `j` of `bytes` holds 4 values of vector
        // `j % 4`, from its low half (`j < 4`) or high half; the permute puts them in order.
        let bytes = _mm256_packs_epi16(_mm256_packs_epi32(qi[0], qi[1]), _mm256_packs_epi32(qi[2], qi[3]));
        let bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, bytes);
        let s = _mm256_add_epi32(_mm256_add_epi32(qi[0], qi[1]), _mm256_add_epi32(qi[2], qi[3]));
        let mut sums = [0i32; 8];
        _mm256_storeu_si256(sums.as_mut_ptr() as *mut __m256i, s);
        (d, sums.iter().sum())
    }

    /// One half of a panel (8 weight rows) at a time, one ymm per 4-value step: 4 bytes
    /// per row. Each weight vector is unpacked once per block for all `R` rows.
    ///
    /// Q4_1 and Q4F: `maddubs` of nibbles (0..15) and `x` (-127..127) gives pairs of at
    /// most 2 · 15 · 127 = 3810 in size, so a block's 8 steps add up in 16 bits (30480
    /// at most) and widen once per block: 9 multiplies per row and block instead of 12,
    /// and multiplies are what this loop waits on. Q8_0 values stay signed (`maddubs`
    /// takes `|w|` and `x` with `w`'s sign); their pairs reach 32512 and widen each step.
    /// Q6H's quants are unsigned (0..63, pairs up to 16002), each half's sum widened per
    /// step, `32 · Σq` of the half taken off, then scaled before the next half.
    ///
    /// # Safety
    /// As for [`super::tile`] with `rows = R <= 8`; the CPU has AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn tile<const R: usize, const F: u8>(t: &Tile) {
        let Tile { x, i0, w, y, ldy, width, add, .. } = *t;
        let fmt = Format::of(F);
        let pb = fmt.panel_bytes();
        let nib = matches!(fmt, Format::Q4_1 | Format::Q4F);
        // Where the quants start, and whether the scales are f32.
        let (q0, wide) = match fmt {
            Format::Q4_1 => (64, false),
            Format::Q8_0 => (32, false),
            Format::Q4F | Format::Q6H => (128, true),
            Format::Q5 => (96, false),
        };
        let nb = x.nb;
        let (xq, xd, xds, xsum, xhsum) = (x.q.as_ptr(), x.d.as_ptr(), x.ds.as_ptr(), x.sum.as_ptr(), x.hsum.as_ptr());
        let (lo, ones) = (_mm256_set1_epi8(0x0f), _mm256_set1_epi16(1));
        // Row `r`'s 4 bytes of step `s` of block `b`, broadcast.
        let xb = |r: usize, b: usize, s: usize| {
            _mm256_set1_epi32((xq.add(((i0 + r) * nb + b) * BLOCK) as *const i32).add(s).read_unaligned())
        };
        // 8 rows' scales at byte `at` of a panel block (`at + 32 h` for f32, `at + 16 h` for f16).
        let scales = |wb: *const u8, at: usize, h: usize| {
            if wide {
                _mm256_loadu_ps(wb.add(at + 32 * h) as *const f32)
            } else {
                _mm256_cvtph_ps(_mm_loadu_si128(wb.add(at + 16 * h) as *const __m128i))
            }
        };
        for h in 0..if width > 8 { 2 } else { 1 } {
            // The running total over parts and one part's sums: updated once per block or
            // part, so they may wait in L1.
            let mut total = [_mm256_setzero_ps(); AVX2_TILE_ROWS];
            for (q, blocks) in std::iter::once(&t.blocks).chain(t.rest).enumerate() {
                let mut acc = [_mm256_setzero_ps(); AVX2_TILE_ROWS];
                for b in blocks.clone() {
                    let wb = w.add(b * pb);
                    // Integer sums named by constants, so that they stay in registers.
                    let mut sum = [_mm256_setzero_si256(); AVX2_TILE_ROWS];
                    if nib {
                        for s in 0..4 {
                            let p = _mm256_loadu_si256(wb.add(q0 + 64 * s + 32 * h) as *const __m256i);
                            let (v0, v1) = (_mm256_and_si256(p, lo), _mm256_and_si256(_mm256_srli_epi16(p, 4), lo));
                            macro_rules! step {
                                ($($r:literal)*) => {$(
                                    if $r < R {
                                        let pair = _mm256_add_epi16(
                                            _mm256_maddubs_epi16(v0, xb($r, b, s)),
                                            _mm256_maddubs_epi16(v1, xb($r, b, s + 4)),
                                        );
                                        sum[$r] = _mm256_add_epi16(sum[$r], pair);
                                    }
                                )*};
                            }
                            step!(0 1 2 3 4 5 6 7);
                        }
                    } else if fmt == Format::Q8_0 {
                        for s in 0..8 {
                            let v = _mm256_loadu_si256(wb.add(q0 + 64 * s + 32 * h) as *const __m256i);
                            let av = _mm256_abs_epi8(v);
                            macro_rules! step {
                                ($($r:literal)*) => {$(
                                    if $r < R {
                                        let p = _mm256_maddubs_epi16(av, _mm256_sign_epi8(xb($r, b, s), v));
                                        sum[$r] = _mm256_add_epi32(sum[$r], _mm256_madd_epi16(p, ones));
                                    }
                                )*};
                            }
                            step!(0 1 2 3 4 5 6 7);
                        }
                    } else if fmt == Format::Q5 {
                        // Nibbles with their high bits (16 where bit `s` of the row's byte
                        // `j` is set); pairs reach 2 · 31 · 127 = 15748: widened each step.
                        let hv = _mm256_loadu_si256(wb.add(32 + 32 * h) as *const __m256i);
                        let sixteen = _mm256_set1_epi8(16);
                        let high = |s: usize| {
                            let bit = _mm256_set1_epi8((1u8 << s) as i8);
                            _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hv, bit), bit), sixteen)
                        };
                        for s in 0..4 {
                            let p = _mm256_loadu_si256(wb.add(q0 + 64 * s + 32 * h) as *const __m256i);
                            let v0 = _mm256_or_si256(_mm256_and_si256(p, lo), high(s));
                            let v1 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(p, 4), lo), high(s + 4));
                            macro_rules! step {
                                ($($r:literal)*) => {$(
                                    if $r < R {
                                        let pair = _mm256_add_epi16(
                                            _mm256_maddubs_epi16(v0, xb($r, b, s)),
                                            _mm256_maddubs_epi16(v1, xb($r, b, s + 4)),
                                        );
                                        sum[$r] = _mm256_add_epi32(sum[$r], _mm256_madd_epi16(pair, ones));
                                    }
                                )*};
                            }
                            step!(0 1 2 3 4 5 6 7);
                        }
                        let d = scales(wb, 0, h);
                        macro_rules! scale {
                            ($($r:literal)*) => {$(
                                if $r < R {
                                    let j = (i0 + $r) * nb + b;
                                    let isum = _mm256_sub_epi32(sum[$r], _mm256_set1_epi32(*xsum.add(j) << 4));
                                    let scale = _mm256_mul_ps(d, _mm256_set1_ps(*xd.add(j)));
                                    acc[$r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[$r]);
                                }
                            )*};
                        }
                        scale!(0 1 2 3 4 5 6 7);
                        continue;
                    } else {
                        // Q6H: each half's sum, scaled into `acc` before the next.
                        for half in 0..2 {
                            for s in 4 * half..4 * half + 4 {
                                let v = _mm256_loadu_si256(wb.add(q0 + 64 * s + 32 * h) as *const __m256i);
                                macro_rules! step {
                                    ($($r:literal)*) => {$(
                                        if $r < R {
                                            let p = _mm256_maddubs_epi16(v, xb($r, b, s));
                                            sum[$r] = _mm256_add_epi32(sum[$r], _mm256_madd_epi16(p, ones));
                                        }
                                    )*};
                                }
                                step!(0 1 2 3 4 5 6 7);
                            }
                            let d = scales(wb, 64 * half, h);
                            macro_rules! scale {
                                ($($r:literal)*) => {$(
                                    if $r < R {
                                        let j = (i0 + $r) * nb + b;
                                        let hs = if half == 0 { *xhsum.add(j) } else { *xsum.add(j) - *xhsum.add(j) };
                                        let isum = _mm256_sub_epi32(sum[$r], _mm256_set1_epi32(hs << 5));
                                        let scale = _mm256_mul_ps(d, _mm256_set1_ps(*xd.add(j)));
                                        acc[$r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[$r]);
                                        sum[$r] = _mm256_setzero_si256();
                                    }
                                )*};
                            }
                            scale!(0 1 2 3 4 5 6 7);
                        }
                        continue;
                    }
                    let d = scales(wb, 0, h);
                    let mn = if nib { scales(wb, if wide { 64 } else { 32 }, h) } else { _mm256_setzero_ps() };
                    macro_rules! scale {
                        ($($r:literal)*) => {$(
                            if $r < R {
                                let j = (i0 + $r) * nb + b;
                                let isum = if nib { _mm256_madd_epi16(sum[$r], ones) } else { sum[$r] };
                                let scale = _mm256_mul_ps(d, _mm256_set1_ps(*xd.add(j)));
                                acc[$r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[$r]);
                                if nib {
                                    acc[$r] = _mm256_fmadd_ps(mn, _mm256_set1_ps(*xds.add(j)), acc[$r]);
                                }
                            }
                        )*};
                    }
                    scale!(0 1 2 3 4 5 6 7);
                }
                for (total, acc) in total.iter_mut().zip(&acc).take(R) {
                    *total = if q == 0 { *acc } else { _mm256_add_ps(*total, *acc) };
                }
            }
            let cols = width.saturating_sub(8 * h).min(8);
            for (r, acc) in total.iter().take(R).enumerate() {
                let dst = y.add(r * ldy + 8 * h);
                if cols == 8 {
                    // A whole vector: no copy through a buffer (a call per row).
                    let v = if add { _mm256_add_ps(_mm256_loadu_ps(dst), *acc) } else { *acc };
                    _mm256_storeu_ps(dst, v);
                    continue;
                }
                let mut out = [0f32; 8];
                _mm256_storeu_ps(out.as_mut_ptr(), *acc);
                for (c, v) in out[..cols].iter().enumerate() {
                    *dst.add(c) = if add { *dst.add(c) + v } else { *v };
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x512 {
    use super::*;
    use std::arch::x86_64::*;

    /// A whole panel per vector. `vpdpbusd` multiplies unsigned by signed bytes: Q8_0's
    /// signed weights are flipped to `w + 128` and `128 · Σq` taken off the sum; Q6H's
    /// are stored unsigned (`w + 32`), `32 · Σq` of each half taken off its sum, and Q5's
    /// (`w + 16`) `16 · Σq`.
    ///
    /// # Safety
    /// As for [`super::tile`] with `rows = R`; the CPU has AVX-512 F, BW and VNNI, AVX2,
    /// FMA and F16C.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    pub(super) unsafe fn tile<const R: usize, const F: u8>(t: &Tile) {
        let Tile { x, i0, w, y, ldy, width, add, .. } = *t;
        let fmt = Format::of(F);
        let pb = fmt.panel_bytes();
        let nib = matches!(fmt, Format::Q4_1 | Format::Q4F);
        let six = fmt == Format::Q6H;
        let nb = x.nb;
        let (lo, flip) = (_mm512_set1_epi8(0x0f), _mm512_set1_epi8(-128));
        let (xq, xd, xds, xsum, xhsum) = (x.q.as_ptr(), x.d.as_ptr(), x.ds.as_ptr(), x.sum.as_ptr(), x.hsum.as_ptr());
        // Accumulators named by constants (rows past `R` are dead code): indexed by a loop
        // variable, LLVM kept them on the stack, a store and a load per block.
        let mut acc = [_mm512_setzero_ps(); MAX_TILE_ROWS];
        for b in t.blocks.clone() {
            let wb = w.add(b * pb);
            let mut v = [_mm512_setzero_si512(); 8];
            // `d` (Q6H: `d_lo`), and `m` (Q6H: `d_hi`).
            let (d, mn) = match fmt {
                Format::Q4_1 => (
                    _mm512_cvtph_ps(_mm256_loadu_si256(wb as *const __m256i)),
                    _mm512_cvtph_ps(_mm256_loadu_si256(wb.add(32) as *const __m256i)),
                ),
                Format::Q8_0 | Format::Q5 => {
                    (_mm512_cvtph_ps(_mm256_loadu_si256(wb as *const __m256i)), _mm512_setzero_ps())
                }
                Format::Q4F | Format::Q6H => {
                    (_mm512_loadu_ps(wb as *const f32), _mm512_loadu_ps(wb.add(64) as *const f32))
                }
            };
            match fmt {
                Format::Q4_1 | Format::Q4F => {
                    let q0 = if fmt == Format::Q4_1 { 64 } else { 128 };
                    for t in 0..4 {
                        let p = _mm512_loadu_si512(wb.add(q0 + 64 * t) as *const __m512i);
                        v[t] = _mm512_and_si512(p, lo);
                        v[t + 4] = _mm512_and_si512(_mm512_srli_epi16(p, 4), lo);
                    }
                }
                Format::Q8_0 => {
                    for (s, v) in v.iter_mut().enumerate() {
                        *v = _mm512_xor_si512(_mm512_loadu_si512(wb.add(32 + 64 * s) as *const __m512i), flip);
                    }
                }
                Format::Q6H => {
                    for (s, v) in v.iter_mut().enumerate() {
                        *v = _mm512_loadu_si512(wb.add(128 + 64 * s) as *const __m512i);
                    }
                }
                Format::Q5 => {
                    // 16 where bit `s` of the row's high-bit byte is set.
                    let hv = _mm512_loadu_si512(wb.add(32) as *const __m512i);
                    let high = |s: usize| {
                        let k = _mm512_test_epi8_mask(hv, _mm512_set1_epi8((1u8 << s) as i8));
                        _mm512_maskz_mov_epi8(k, _mm512_set1_epi8(16))
                    };
                    for t in 0..4 {
                        let p = _mm512_loadu_si512(wb.add(96 + 64 * t) as *const __m512i);
                        v[t] = _mm512_or_si512(_mm512_and_si512(p, lo), high(t));
                        v[t + 4] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(p, 4), lo), high(t + 4));
                    }
                }
            }
            macro_rules! row {
                ($($r:literal)*) => {$(
                    if $r < R {
                        let j = (i0 + $r) * nb + b;
                        let xp = xq.add(j * BLOCK) as *const i32;
                        // Two chains: a single one would wait on each `vpdpbusd` in turn
                        // (Q6H: one per half, steps 0..4 and 4..8).
                        let (mut s0, mut s1) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                        for u in 0..4 {
                            let (a, c) = if six { (u, u + 4) } else { (2 * u, 2 * u + 1) };
                            s0 = _mm512_dpbusd_epi32(s0, v[a], _mm512_set1_epi32(xp.add(a).read_unaligned()));
                            s1 = _mm512_dpbusd_epi32(s1, v[c], _mm512_set1_epi32(xp.add(c).read_unaligned()));
                        }
                        let dx = _mm512_set1_ps(*xd.add(j));
                        if six {
                            let (hs, all) = (*xhsum.add(j), *xsum.add(j));
                            let first = _mm512_sub_epi32(s0, _mm512_set1_epi32(hs << 5));
                            let second = _mm512_sub_epi32(s1, _mm512_set1_epi32((all - hs) << 5));
                            acc[$r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(first), _mm512_mul_ps(d, dx), acc[$r]);
                            acc[$r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(second), _mm512_mul_ps(mn, dx), acc[$r]);
                        } else {
                            let mut isum = _mm512_add_epi32(s0, s1);
                            if fmt == Format::Q8_0 {
                                isum = _mm512_sub_epi32(isum, _mm512_set1_epi32(*xsum.add(j) << 7));
                            } else if fmt == Format::Q5 {
                                isum = _mm512_sub_epi32(isum, _mm512_set1_epi32(*xsum.add(j) << 4));
                            }
                            acc[$r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(d, dx), acc[$r]);
                            if nib {
                                acc[$r] = _mm512_fmadd_ps(mn, _mm512_set1_ps(*xds.add(j)), acc[$r]);
                            }
                        }
                    }
                )*};
            }
            row!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
        }
        let mask = if width >= ROWS { 0xffff } else { (1u16 << width) - 1 };
        macro_rules! store {
            ($($r:literal)*) => {$(
                if $r < R {
                    let out = y.add($r * ldy);
                    let v = if add { _mm512_add_ps(_mm512_maskz_loadu_ps(mask, out), acc[$r]) } else { acc[$r] };
                    _mm512_mask_storeu_ps(out, mask, v);
                }
            )*};
        }
        store!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
    }

    /// [`super::quantize_block`]'s arithmetic: the same `d`, `1 / d`, products and
    /// ties-to-even rounding (the default MXCSR mode).
    ///
    /// # Safety
    /// The CPU has AVX-512 F and DQ.
    #[target_feature(enable = "avx512f,avx512dq")]
    pub(super) unsafe fn quantize_block(x: &[f32; BLOCK], q: &mut [i8; BLOCK]) -> (f32, i32) {
        let (a, b) = (_mm512_loadu_ps(x.as_ptr()), _mm512_loadu_ps(x.as_ptr().add(16)));
        let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
        let d = amax / 127.0;
        let id = _mm512_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
        let (qa, qb) = (_mm512_cvtps_epi32(_mm512_mul_ps(a, id)), _mm512_cvtps_epi32(_mm512_mul_ps(b, id)));
        _mm_storeu_si128(q.as_mut_ptr() as *mut __m128i, _mm512_cvtepi32_epi8(qa));
        _mm_storeu_si128(q.as_mut_ptr().add(16) as *mut __m128i, _mm512_cvtepi32_epi8(qb));
        (d, _mm512_reduce_add_epi32(_mm512_add_epi32(qa, qb)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_gguf(fmt: Format, n: usize, nb: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        let mut next = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 33) as u32
        };
        let mut out = Vec::new();
        for _ in 0..n * nb {
            // Small positive and negative f16 scales (exponent 8..13, random mantissa).
            let mut scale = || ((next() % 2) << 15 | (8 + next() % 6) << 10 | (next() % 1024)) as u16;
            match fmt {
                Format::Q4_1 => {
                    out.extend(scale().to_le_bytes());
                    out.extend(scale().to_le_bytes());
                    out.extend((0..16).map(|_| next() as u8));
                }
                // GGUF's Q8_0 quants are in -127..=127.
                Format::Q8_0 => {
                    out.extend(scale().to_le_bytes());
                    out.extend((0..32).map(|_| (next() % 255) as i32 - 127).map(|v| v as i8 as u8));
                }
                Format::Q5 => {
                    out.extend(scale().to_le_bytes());
                    out.extend((0..20).map(|_| next() as u8));
                }
                // f32 scales as Q4_K's and Q6_K's rewrites hold them: an f16 times a small integer.
                Format::Q4F | Format::Q6H => {
                    for _ in 0..2 {
                        let h = scale();
                        let s = f16_to_f32(h) * (h % 127) as f32;
                        out.extend(s.to_le_bytes());
                    }
                    if fmt == Format::Q4F {
                        out.extend((0..16).map(|_| next() as u8));
                    } else {
                        out.extend((0..32).map(|_| (next() % 64) as u8));
                    }
                }
            }
        }
        out
    }

    fn random_x(m: usize, k: usize) -> Vec<f32> {
        (0..m * k).map(|i| ((i * 7919 + 13) % 1000) as f32 / 250.0 - 2.0 + (i % 7) as f32 * 1e-3).collect()
    }

    const FORMATS: [Format; 5] = [Format::Q4_1, Format::Q8_0, Format::Q4F, Format::Q6H, Format::Q5];

    fn kernels() -> Vec<Kernel> {
        let mut ks = vec![Kernel::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if simd::has_avx2_fma_f16c() {
                ks.push(Kernel::Avx2);
            }
            if Kernel::best() == Kernel::Vnni512 {
                ks.push(Kernel::Vnni512);
            }
        }
        ks
    }

    #[test]
    fn packing_round_trips() {
        for fmt in FORMATS {
            let (n, nb) = (21, 3);
            let gguf = random_gguf(fmt, n, nb, 5);
            let mut panels = vec![0u8; 2 * nb * fmt.panel_bytes()];
            pack(fmt, &gguf, n, nb, &mut panels);
            assert_eq!(unpack(fmt, &panels, n, nb), gguf);
            // Every byte of a full panel block is used exactly once.
            let mut seen = vec![0; fmt.panel_bytes()];
            for c in 0..ROWS {
                for i in 0..fmt.gguf_bytes() {
                    seen[fmt.place(c, i)] += 1;
                }
            }
            assert!(seen.iter().all(|&s| s == 1), "{fmt:?}");
        }
    }

    #[test]
    fn quantized_rows_follow_ggml() {
        let x = random_x(3, 64);
        let mut q = QuantRows::default();
        q.quantize(&x, 3, 2);
        for (j, xb) in x.chunks_exact(32).enumerate() {
            let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            assert_eq!(q.d[j], d);
            let qs = &q.q[j * 32..][..32];
            assert!(qs.iter().any(|v| v.abs() == 127));
            for (v, qv) in xb.iter().zip(qs) {
                assert!((v / d - *qv as f32).abs() <= 0.5 + 1e-4, "{v} {qv}");
            }
            assert_eq!(q.sum[j], qs.iter().map(|v| *v as i32).sum::<i32>());
            assert_eq!(q.ds[j], d * q.sum[j] as f32);
        }
        // The vector and scalar quantizers agree bit for bit, ties included.
        let mut ties = [0f32; 32];
        ties[0] = 127.0;
        for (i, t) in ties.iter_mut().enumerate().skip(1) {
            *t = i as f32 - 15.5;
        }
        for xb in x.chunks_exact(32).chain([&ties[..], &[0f32; 32][..]]) {
            let xb: &[f32; 32] = xb.try_into().unwrap();
            let mut a = [0i8; 32];
            let got = quantize_block(xb, &mut a);
            let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let b: Vec<i8> = xb.iter().map(|v| (v * id).round_ties_even() as i8).collect();
            assert_eq!(a.to_vec(), b);
            assert_eq!(got, (d, b.iter().map(|v| *v as i32).sum()));
            // The AVX2 form too, where AVX-512 would have been chosen above.
            #[cfg(target_arch = "x86_64")]
            if simd::has_avx2_fma_f16c() {
                let mut c = [0i8; 32];
                // SAFETY: AVX2 was detected just above (the kernel takes references only).
                let avx2 = unsafe { x86::quantize_block(xb, &mut c) };
                assert_eq!(avx2, got);
                assert_eq!(c, a);
            }
        }
    }

    /// Every kernel and tile height gives the portable kernel's bits, and the portable
    /// kernel is the documented formula over dequantized values.
    #[test]
    fn every_kernel_gives_the_reference_bits() {
        for fmt in FORMATS {
            let (n, nb, m) = (19, 5, 16);
            let gguf = random_gguf(fmt, n, nb, 11);
            let mut panels = vec![0u8; 2 * nb * fmt.panel_bytes()];
            pack(fmt, &gguf, n, nb, &mut panels);
            let mut xq = QuantRows::default();
            xq.quantize(&random_x(m, nb * 32), m, nb);
            // The formula, from the GGUF bytes.
            let gb = fmt.gguf_bytes();
            let half = |b: &[u8], i: usize| f16_to_f32(u16::from_le_bytes([b[i], b[i + 1]]));
            let single = |b: &[u8], i: usize| f32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
            let want = |i: usize, j: usize, blocks: Range<usize>| {
                let mut acc = 0f32;
                for b in blocks {
                    let g = &gguf[(j * nb + b) * gb..][..gb];
                    let xs = &xq.q[(i * nb + b) * 32..][..32];
                    let nibble =
                        |at: usize, e: usize| i32::from(if e < 16 { g[at + e] & 15 } else { g[at + e - 16] >> 4 });
                    let dot = |e: Range<usize>| -> i32 {
                        e.map(|e| {
                            let w = match fmt {
                                Format::Q4_1 => nibble(4, e),
                                Format::Q8_0 => i32::from(g[2 + e] as i8),
                                Format::Q4F => nibble(8, e),
                                Format::Q6H => i32::from(g[8 + e]) - 32,
                                Format::Q5 => (nibble(6, e) | i32::from((g[2 + e % 4] >> (e / 4)) & 1) << 4) - 16,
                            };
                            w * i32::from(xs[e])
                        })
                        .sum()
                    };
                    let dx = xq.d[i * nb + b];
                    match fmt {
                        Format::Q4_1 => {
                            acc = (dot(0..32) as f32).mul_add(half(g, 0) * dx, acc);
                            acc = half(g, 2).mul_add(xq.ds[i * nb + b], acc);
                        }
                        Format::Q8_0 | Format::Q5 => acc = (dot(0..32) as f32).mul_add(half(g, 0) * dx, acc),
                        Format::Q4F => {
                            acc = (dot(0..32) as f32).mul_add(single(g, 0) * dx, acc);
                            acc = single(g, 4).mul_add(xq.ds[i * nb + b], acc);
                        }
                        Format::Q6H => {
                            acc = (dot(0..16) as f32).mul_add(single(g, 0) * dx, acc);
                            acc = (dot(16..32) as f32).mul_add(single(g, 4) * dx, acc);
                        }
                    }
                }
                acc
            };
            for kernel in kernels() {
                for rows in 1..=MAX_TILE_ROWS {
                    for (p, blocks) in [(0, 0..nb), (1, 1..4)] {
                        let width = if p == 0 { 16 } else { n - 16 };
                        let ldy = 20;
                        let mut y = vec![f32::NAN; rows * ldy];
                        let i0 = m - rows;
                        // SAFETY: `kernels()` are the ones this CPU runs; panel `p` of `panels`
                        // holds `nb` blocks (`blocks` and its parts within them); `xq` holds rows
                        // `i0..i0 + rows = m - rows..m`; `y`, `t` and `parts` hold `rows` rows
                        // of `ldy >= width` outputs; `rows <= MAX_TILE_ROWS`.
                        unsafe {
                            let w = panels.as_ptr().add(p * nb * fmt.panel_bytes());
                            let job = Tile {
                                x: &xq,
                                i0,
                                w,
                                blocks: blocks.clone(),
                                rest: &[],
                                y: y.as_mut_ptr(),
                                ldy,
                                width,
                                add: false,
                            };
                            tile(kernel, fmt, &job, rows);
                            // Adding to a total: `total + out`.
                            let mut t: Vec<f32> = (0..rows * ldy).map(|i| i as f32 * 0.1).collect();
                            tile(kernel, fmt, &Tile { y: t.as_mut_ptr(), add: true, ..job }, rows);
                            for (i, t) in t.iter().enumerate() {
                                if i % ldy < width {
                                    assert_eq!(t.to_bits(), (i as f32 * 0.1 + y[i]).to_bits(), "{kernel:?} add");
                                }
                            }
                            // Three parts as a running total: `((p0 + p1) + p2)`.
                            let (a, mid) = (blocks.start + 1, (blocks.start + 1 + blocks.end) / 2);
                            let rest = [a..mid, mid..blocks.end];
                            let mut parts = vec![f32::NAN; rows * ldy];
                            let job3 = Tile { blocks: blocks.start..a, rest: &rest, y: parts.as_mut_ptr(), ..job };
                            tile(kernel, fmt, &job3, rows);
                            for (i, got) in parts.iter().enumerate() {
                                let (r, c) = (i / ldy, i % ldy);
                                if c < width {
                                    let want = |b: Range<usize>| want(i0 + r, 16 * p + c, b);
                                    let sum = (want(blocks.start..a) + want(a..mid)) + want(mid..blocks.end);
                                    assert_eq!(got.to_bits(), sum.to_bits(), "{kernel:?} {fmt:?} parts ({r},{c})");
                                }
                            }
                        }
                        for r in 0..rows {
                            for c in 0..ldy {
                                let got = y[r * ldy + c];
                                if c < width {
                                    let w = want(i0 + r, 16 * p + c, blocks.clone());
                                    assert_eq!(got.to_bits(), w.to_bits(), "{kernel:?} {fmt:?} {rows} rows ({r},{c})");
                                } else {
                                    assert!(got.is_nan(), "{kernel:?} wrote past the panel's width");
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The largest quants (nibbles of 15, Q8_0's ±127, `x` at ±127) neither saturate nor
    /// wrap in any kernel's integer sums.
    #[test]
    fn extreme_quants_keep_exact_sums() {
        for fmt in FORMATS {
            let (n, nb, m) = (16, 3, 8);
            let mut gguf = Vec::new();
            for j in 0..n * nb {
                match fmt {
                    Format::Q4_1 => {
                        gguf.extend(0x3c00u16.to_le_bytes()); // d = 1
                        gguf.extend(0u16.to_le_bytes()); // m = 0
                        gguf.extend([0xffu8; 16]);
                    }
                    Format::Q8_0 => {
                        gguf.extend(0x3c00u16.to_le_bytes());
                        gguf.extend([if j % 2 == 0 { 127u8 } else { (-127i8) as u8 }; 32]);
                    }
                    Format::Q4F => {
                        gguf.extend(1f32.to_le_bytes());
                        gguf.extend(0f32.to_le_bytes());
                        gguf.extend([0xffu8; 16]);
                    }
                    // Quants 31 (w = 15) or 0 (w = -16).
                    Format::Q5 => {
                        gguf.extend(0x3c00u16.to_le_bytes());
                        gguf.extend([if j % 2 == 0 { 0xffu8 } else { 0 }; 20]);
                    }
                    // Quants 63 (w = 31) or 0 (w = -32), both halves.
                    Format::Q6H => {
                        gguf.extend(1f32.to_le_bytes());
                        gguf.extend(1f32.to_le_bytes());
                        gguf.extend([if j % 2 == 0 { 63u8 } else { 0 }; 32]);
                    }
                }
            }
            let mut panels = vec![0u8; nb * fmt.panel_bytes()];
            pack(fmt, &gguf, n, nb, &mut panels);
            // Rows of +1 and -1: every quant of x is ±127, d = 1/127.
            let x: Vec<f32> = (0..m * nb * 32).map(|i| if (i / (nb * 32)) % 2 == 0 { 1.0 } else { -1.0 }).collect();
            let mut xq = QuantRows::default();
            xq.quantize(&x, m, nb);
            for kernel in kernels() {
                let mut y = vec![0f32; m * n];
                let job = Tile {
                    x: &xq,
                    i0: 0,
                    w: panels.as_ptr(),
                    blocks: 0..nb,
                    rest: &[],
                    y: y.as_mut_ptr(),
                    ldy: n,
                    width: n,
                    add: false,
                };
                // SAFETY: `kernels()` are the ones this CPU runs; `panels` is one panel of
                // `nb` blocks, `xq` holds the `m = 8` rows and `y` their `m × n` outputs.
                unsafe { tile(kernel, fmt, &job, m) };
                for (i, v) in y.iter().enumerate() {
                    let (r, c) = (i / n, i % n);
                    let sign = if r % 2 == 0 { 1.0 } else { -1.0 };
                    // Each block: 32 · w · 127 · (1/127); Q8_0 rows alternate ±127 per block.
                    let want: f64 = (0..nb)
                        .map(|b| match fmt {
                            Format::Q4_1 | Format::Q4F => 32.0 * 15.0,
                            Format::Q8_0 => 32.0 * if (c * nb + b) % 2 == 0 { 127.0 } else { -127.0 },
                            Format::Q6H => 32.0 * if (c * nb + b) % 2 == 0 { 31.0 } else { -32.0 },
                            Format::Q5 => 32.0 * if (c * nb + b) % 2 == 0 { 15.0 } else { -16.0 },
                        })
                        .sum::<f64>()
                        * sign;
                    assert!(
                        (*v as f64 - want).abs() < 1e-3 * want.abs().max(1.0),
                        "{kernel:?} {fmt:?} ({r},{c}): {v} vs {want}"
                    );
                }
            }
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
