//! GGUF's Q5_0, Q4_K and Q6_K rows rewritten exactly as rows of the [`int8`] kernels'
//! blocks of 32, once when a weight is loaded:
//! - Q4_0 (`w = (q - 8) · d`, `q` in `0..16`): a Q8_0 block, `q - 8` as `i8`, the same f16 `d`;
//! - Q5_0 (`w = (q - 16) · d`, `q` in `0..32`): a [`Format::Q5`] block, the same `d` and
//!   nibbles, the high bits regrouped by 4-value step;
//! - Q4_K (a superblock of 8 sub-blocks of 32, `w = d · sc · q - dmin · m`, 6-bit `sc`
//!   and `m`): per sub-block a [`Format::Q4F`] block, `d · sc` and `-dmin · m` in f32
//!   (an f16 times a 6-bit integer: exact);
//! - Q6_K (a superblock of 16 sub-blocks of 16, `w = d · sc · (q - 32)`, `i8` `sc`):
//!   per 32 values a [`Format::Q6H`] block, the halves' `d · sc` in f32 (exact) and `q`.
//!
//! Every weight value is the same real number before and after.

use candle_core::quantized::GgmlDType;

use super::int8::{self, Format, BLOCK};

/// Values per K-quant superblock.
const QK_K: usize = 256;

/// The format `dtype` is rewritten into, if the kernels take it.
pub(super) fn format_of(dtype: GgmlDType) -> Option<Format> {
    match dtype {
        GgmlDType::Q4_1 => Some(Format::Q4_1),
        GgmlDType::Q8_0 | GgmlDType::Q4_0 => Some(Format::Q8_0),
        GgmlDType::Q5_0 => Some(Format::Q5),
        GgmlDType::Q4K => Some(Format::Q4F),
        GgmlDType::Q6K => Some(Format::Q6H),
        _ => None,
    }
}

/// `n` rows of `k` values of GGUF `dtype` as rows of `k / 32` blocks of
/// [`format_of`]`(dtype)` (`None` for GGUF's own Q4_1 and Q8_0 blocks, taken as they are,
/// and for types without a kernel).
pub(super) fn rewrite(dtype: GgmlDType, gguf: &[u8], n: usize, k: usize) -> Option<Vec<u8>> {
    let fmt = format_of(dtype)?;
    let (gbs, gts) = (dtype.block_size(), dtype.type_size());
    let convert: fn(&[u8], &mut [u8]) = match dtype {
        GgmlDType::Q4_0 => q4_0,
        GgmlDType::Q5_0 => q5_0,
        GgmlDType::Q4K => q4_k,
        GgmlDType::Q6K => q6_k,
        _ => return None,
    };
    let blocks = n * k / gbs;
    assert!(k.is_multiple_of(gbs) && gguf.len() >= blocks * gts);
    // One GGUF block gives `gbs / 32` of ours.
    let ob = gbs / BLOCK * fmt.gguf_bytes();
    let mut out = vec![0u8; blocks * ob];
    for (src, dst) in gguf.chunks_exact(gts).zip(out.chunks_exact_mut(ob)) {
        convert(src, dst);
    }
    Some(out)
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    int8::f16_to_f32(u16::from_le_bytes([b[i], b[i + 1]]))
}

/// ggml's `block_q4_0`: f16 d, 16 bytes of nibbles (value `j` low nibble of byte `j`,
/// value `j + 16` its high nibble).
fn q4_0(src: &[u8], dst: &mut [u8]) {
    dst[..2].copy_from_slice(&src[..2]);
    for e in 0..BLOCK {
        let byte = src[2 + e % 16];
        let q = if e < 16 { byte & 0x0f } else { byte >> 4 };
        dst[2 + e] = (q as i8 - 8) as u8;
    }
}

/// ggml's `block_q5_0`: f16 d, 4 bytes of high bits (bit `j` for value `j`), 16 bytes of
/// nibbles (value `j` low nibble of byte `j`, value `j + 16` its high nibble).
fn q5_0(src: &[u8], dst: &mut [u8]) {
    dst[..2].copy_from_slice(&src[..2]);
    let qh = u32::from_le_bytes([src[2], src[3], src[4], src[5]]);
    for (j, byte) in dst[2..6].iter_mut().enumerate() {
        *byte = (0..8).map(|s| (((qh >> (4 * s + j)) & 1) as u8) << s).sum();
    }
    dst[6..22].copy_from_slice(&src[6..22]);
}

/// ggml's `get_scale_min_k4`: sub-block `j`'s 6-bit scale and min from the 12 packed bytes.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// ggml's `block_q4_K`: f16 d, f16 dmin, 12 bytes of scales and mins, 128 bytes of
/// nibbles (values `64c..64c + 32` the low nibbles of bytes `32c..32c + 32`, the next 32
/// their high nibbles).
fn q4_k(src: &[u8], dst: &mut [u8]) {
    let (d, dmin) = (f16_at(src, 0), f16_at(src, 2));
    let (scales, qs) = (&src[4..16], &src[16..144]);
    for (sb, out) in dst.chunks_exact_mut(Format::Q4F.gguf_bytes()).enumerate() {
        let (sc, m) = scale_min_k4(sb, scales);
        out[..4].copy_from_slice(&(d * f32::from(sc)).to_le_bytes());
        out[4..8].copy_from_slice(&(-(dmin * f32::from(m))).to_le_bytes());
        let (bytes, shift) = (&qs[32 * (sb / 2)..][..32], 4 * (sb % 2));
        let value = |l: usize| (bytes[l] >> shift) & 0x0f;
        for j in 0..16 {
            out[8 + j] = value(j) | value(j + 16) << 4;
        }
    }
}

/// ggml's `block_q6_K`: 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 `i8`
/// scales, f16 d. Value `v = 128 h + 32 g + l` has its low nibble in byte
/// `64 h + 32 (g % 2) + l` (high nibble when `g >= 2`), its high bits at `2 g` of byte
/// `32 h + l`, and scale `v / 16`.
fn q6_k(src: &[u8], dst: &mut [u8]) {
    let (ql, qh, sc) = (&src[..128], &src[128..192], &src[192..208]);
    let d = f16_at(src, 208);
    for (b, out) in dst.chunks_exact_mut(Format::Q6H.gguf_bytes()).enumerate() {
        for h in 0..2 {
            let s = d * f32::from(sc[2 * b + h] as i8);
            out[4 * h..4 * h + 4].copy_from_slice(&s.to_le_bytes());
        }
        for e in 0..BLOCK {
            let v = BLOCK * b + e;
            let (h, g, l) = (v / 128, (v % 128) / 32, v % 32);
            let low = (ql[64 * h + 32 * (g % 2) + l] >> (4 * (g / 2))) & 0x0f;
            let high = (qh[32 * h + l] >> (2 * g)) & 3;
            out[8 + e] = low | high << 4;
        }
    }
    debug_assert_eq!(dst.len() * BLOCK / Format::Q6H.gguf_bytes(), QK_K);
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    /// The value `e` of a rewritten block, as the kernels' formula reads it.
    fn value(fmt: Format, b: &[u8], e: usize) -> f32 {
        let f32_at = |i: usize| f32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let nibble = |at: usize| f32::from(if e < 16 { b[at + e] & 15 } else { b[at + e - 16] >> 4 });
        match fmt {
            Format::Q4_1 => nibble(4) * f16_at(b, 0) + f16_at(b, 2),
            Format::Q8_0 => f32::from(b[2 + e] as i8) * f16_at(b, 0),
            Format::Q4F => nibble(8) * f32_at(0) + f32_at(4),
            Format::Q6H => (f32::from(b[8 + e]) - 32.0) * f32_at(4 * (e / 16)),
            Format::Q5 => (nibble(6) + f32::from((b[2 + e % 4] >> (e / 4)) & 1) * 16.0 - 16.0) * f16_at(b, 0),
        }
    }

    /// Each rewritten block holds candle's dequantized values (to f32 rounding of the
    /// formula `q · d + m`, which candle computes the same way).
    #[test]
    fn rewritten_blocks_hold_candles_dequantized_values() {
        for dt in [GgmlDType::Q4_0, GgmlDType::Q5_0, GgmlDType::Q4K, GgmlDType::Q6K] {
            let (n, k) = (3, 512);
            let t = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap();
            let q = QTensor::quantize(&t, dt).unwrap();
            let want = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let fmt = format_of(dt).unwrap();
            let rows = rewrite(dt, &q.data().unwrap(), n, k).unwrap();
            assert_eq!(rows.len(), n * k / BLOCK * fmt.gguf_bytes());
            for (i, w) in want.iter().enumerate() {
                let got = value(fmt, &rows[(i / BLOCK) * fmt.gguf_bytes()..][..fmt.gguf_bytes()], i % BLOCK);
                assert!((got - w).abs() <= 1e-6 * w.abs().max(1e-3), "{dt:?} value {i}: {got} vs {w}");
            }
            // Q6H's quants are unsigned 6-bit, Q5_0's in -16..15.
            for b in rows.chunks_exact(fmt.gguf_bytes()) {
                match fmt {
                    Format::Q6H => assert!(b[8..].iter().all(|&q| q < 64)),
                    Format::Q8_0 => assert!(b[2..].iter().all(|&q| (-8..8).contains(&(q as i8)))),
                    _ => {}
                }
            }
        }
    }
}
