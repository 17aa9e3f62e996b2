//! Reference dequantization, one function per type: `blocks -> f32`, `y.len()` equal to
//! the number of elements. Formulas follow ggml-quants.c's `dequantize_row_*`.

use crate::blocks::*;

pub fn dequantize_q4_0(x: &[BlockQ4_0], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(32)) {
        let d = f16_le(b.d);
        for j in 0..16 {
            y[j] = ((b.qs[j] & 15) as i32 - 8) as f32 * d;
            y[j + 16] = ((b.qs[j] >> 4) as i32 - 8) as f32 * d;
        }
    }
}

pub fn dequantize_q4_1(x: &[BlockQ4_1], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(32)) {
        let (d, m) = (f16_le(b.d), f16_le(b.m));
        for j in 0..16 {
            y[j] = (b.qs[j] & 15) as f32 * d + m;
            y[j + 16] = (b.qs[j] >> 4) as f32 * d + m;
        }
    }
}

/// The two 5-bit values of byte j of a Q5 block: (q[j], q[j+16]).
#[inline(always)]
pub(crate) fn q5_pair(qs: &[u8; 16], qh: u32, j: usize) -> (u8, u8) {
    let h0 = (((qh >> j) & 1) << 4) as u8;
    let h1 = (((qh >> (j + 16)) & 1) << 4) as u8;
    ((qs[j] & 15) | h0, (qs[j] >> 4) | h1)
}

pub fn dequantize_q5_0(x: &[BlockQ5_0], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(32)) {
        let d = f16_le(b.d);
        let qh = u32::from_le_bytes(b.qh);
        for j in 0..16 {
            let (q0, q1) = q5_pair(&b.qs, qh, j);
            y[j] = (q0 as i32 - 16) as f32 * d;
            y[j + 16] = (q1 as i32 - 16) as f32 * d;
        }
    }
}

pub fn dequantize_q5_1(x: &[BlockQ5_1], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(32)) {
        let (d, m) = (f16_le(b.d), f16_le(b.m));
        let qh = u32::from_le_bytes(b.qh);
        for j in 0..16 {
            let (q0, q1) = q5_pair(&b.qs, qh, j);
            y[j] = q0 as f32 * d + m;
            y[j + 16] = q1 as f32 * d + m;
        }
    }
}

pub fn dequantize_q8_0(x: &[BlockQ8_0], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(32)) {
        let d = f16_le(b.d);
        for j in 0..32 {
            y[j] = b.qs[j] as f32 * d;
        }
    }
}

pub fn dequantize_q8_1(x: &[BlockQ8_1], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(32)) {
        let d = f16_le(b.d);
        for j in 0..32 {
            y[j] = b.qs[j] as f32 * d;
        }
    }
}

pub fn dequantize_q8_k(x: &[BlockQ8K], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        for j in 0..QK_K {
            y[j] = b.qs[j] as f32 * b.d;
        }
    }
}

pub fn dequantize_iq4_nl(x: &[BlockIQ4NL], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(32)) {
        let d = f16_le(b.d);
        for j in 0..16 {
            y[j] = KVALUES_IQ4NL[(b.qs[j] & 15) as usize] as f32 * d;
            y[j + 16] = KVALUES_IQ4NL[(b.qs[j] >> 4) as usize] as f32 * d;
        }
    }
}

/// Q2_K: 2-bit values; byte l of each 32-byte half holds four values, of groups that are
/// 32 elements apart (bits 0-1, 2-3, 4-5, 6-7). scales[i]: low nibble scale, high nibble min.
pub fn dequantize_q2_k(x: &[BlockQ2K], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let (d, dmin) = (f16_le(b.d), f16_le(b.dmin));
        let mut i = 0;
        for half in 0..2 {
            let q = &b.qs[half * 32..half * 32 + 32];
            for shift in [0, 2, 4, 6] {
                for part in 0..2 {
                    let sc = b.scales[i / 16];
                    let (dl, ml) = (d * (sc & 15) as f32, dmin * (sc >> 4) as f32);
                    for l in 0..16 {
                        y[i] = dl * ((q[part * 16 + l] >> shift) & 3) as f32 - ml;
                        i += 1;
                    }
                }
            }
        }
    }
}

/// The sixteen 6-bit Q3_K scales (before the -32 offset), unpacked from 12 bytes:
/// low 4 bits in bytes 0-7 (two per byte), high 2 bits in bytes 8-11.
#[inline]
pub fn q3_k_scales(s: &[u8; 12]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (j, o) in out.iter_mut().enumerate() {
        let low = if j < 8 { s[j] & 15 } else { s[j - 8] >> 4 };
        let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        *o = (low | (high << 4)) as i8 - 32;
    }
    out
}

/// Q3_K: 2 low bits as Q2_K, the third bit in hmask (bit `group/2` of byte l); a cleared
/// high bit subtracts 4.
pub fn dequantize_q3_k(x: &[BlockQ3K], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = f16_le(b.d);
        let scales = q3_k_scales(&b.scales);
        let mut i = 0;
        let mut m = 1u8;
        for half in 0..2 {
            let q = &b.qs[half * 32..half * 32 + 32];
            for shift in [0, 2, 4, 6] {
                for part in 0..2 {
                    let dl = d * scales[i / 16] as f32;
                    for l in 0..16 {
                        let idx = part * 16 + l;
                        let lo = ((q[idx] >> shift) & 3) as i32;
                        let hi = if b.hmask[idx] & m != 0 { 0 } else { 4 };
                        y[i] = dl * (lo - hi) as f32;
                        i += 1;
                    }
                }
                m <<= 1;
            }
        }
    }
}

/// The j-th (scale, min) pair of Q4_K/Q5_K's 12 packed bytes: 6 bits each; pairs 0-3 sit in
/// the low 6 bits of bytes 0-7, pairs 4-7 take their low nibble from bytes 8-11 and their top
/// two bits from the top bits of bytes 0-7.
#[inline(always)]
pub fn k_scale_min(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 15) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// All eight (scale, min) pairs of a Q4_K/Q5_K block at once with word operations (for the
/// SIMD kernels): returns the scales as the bytes of one u64 (group 0 in the low byte) and
/// the mins likewise. Same values as `k_scale_min(0..8)`.
pub fn k_scales_mins(q: &[u8; 12]) -> (u64, u64) {
    let w = |i: usize| u32::from_le_bytes([q[4 * i], q[4 * i + 1], q[4 * i + 2], q[4 * i + 3]]);
    let (w0, w1, w2) = (w(0), w(1), w(2));
    // Groups 0-3: the low 6 bits of bytes 0-3 (scales) and 4-7 (mins). Groups 4-7: a nibble
    // of bytes 8-11, plus the top 2 bits of bytes 0-3 (scales) or 4-7 (mins) above it.
    let sc_lo = w0 & 0x3f3f_3f3f;
    let m_lo = w1 & 0x3f3f_3f3f;
    let sc_hi = (w2 & 0x0f0f_0f0f) | (((w0 >> 6) & 0x0303_0303) << 4);
    let m_hi = ((w2 >> 4) & 0x0f0f_0f0f) | (((w1 >> 6) & 0x0303_0303) << 4);
    (sc_lo as u64 | (sc_hi as u64) << 32, m_lo as u64 | (m_hi as u64) << 32)
}

/// Q4_K: 8 groups of 32; each 32 bytes of qs hold two groups (low nibbles, then high).
pub fn dequantize_q4_k(x: &[BlockQ4K], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let (d, dmin) = (f16_le(b.d), f16_le(b.dmin));
        for g in 0..8 {
            let (sc, m) = k_scale_min(g, &b.scales);
            let (dl, ml) = (d * sc as f32, dmin * m as f32);
            let q = &b.qs[(g / 2) * 32..(g / 2) * 32 + 32];
            let shift = 4 * (g % 2);
            for l in 0..32 {
                y[g * 32 + l] = dl * ((q[l] >> shift) & 15) as f32 - ml;
            }
        }
    }
}

/// Q5_K: as Q4_K, the fifth bit of group g in bit g of qh[l].
pub fn dequantize_q5_k(x: &[BlockQ5K], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let (d, dmin) = (f16_le(b.d), f16_le(b.dmin));
        for g in 0..8 {
            let (sc, m) = k_scale_min(g, &b.scales);
            let (dl, ml) = (d * sc as f32, dmin * m as f32);
            let q = &b.qs[(g / 2) * 32..(g / 2) * 32 + 32];
            let shift = 4 * (g % 2);
            for l in 0..32 {
                let v = ((q[l] >> shift) & 15) | (((b.qh[l] >> g) & 1) << 4);
                y[g * 32 + l] = dl * v as f32 - ml;
            }
        }
    }
}

/// The 6-bit value i (0..256) of a Q6_K block: per 128-half, ql has 64 bytes (low nibbles for
/// elements 0-63, high nibbles for 64-127) and qh 32 bytes (2 bits for each of 4 quarters).
#[inline(always)]
pub fn q6_k_value(b: &BlockQ6K, i: usize) -> i32 {
    let (half, r) = (i / 128, i % 128);
    let (quarter, l) = (r / 32, r % 32);
    let ql = b.ql[half * 64 + l + 32 * (quarter % 2)];
    let lo = if quarter < 2 { ql & 15 } else { ql >> 4 };
    let hi = (b.qh[half * 32 + l] >> (2 * quarter)) & 3;
    (lo | (hi << 4)) as i32 - 32
}

pub fn dequantize_q6_k(x: &[BlockQ6K], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = f16_le(b.d);
        // As `q6_k_value`, a quarter of a half at a time: loops the compiler vectorizes,
        // where the per-value form worked out each value's indices apart (this is also the
        // token embedding's lookup for Q6_K files).
        for (half, y) in y.chunks_exact_mut(128).enumerate() {
            let (ql, qh) = (&b.ql[half * 64..half * 64 + 64], &b.qh[half * 32..half * 32 + 32]);
            for (quarter, y) in y.chunks_exact_mut(32).enumerate() {
                let ql = &ql[32 * (quarter % 2)..32 * (quarter % 2) + 32];
                let shift = if quarter < 2 { 0 } else { 4 };
                for (l, v) in y.iter_mut().enumerate() {
                    let q = ((ql[l] >> shift) & 15) | (((qh[l] >> (2 * quarter)) & 3) << 4);
                    let sc = b.scales[half * 8 + quarter * 2 + l / 16];
                    *v = d * sc as f32 * (q as i32 - 32) as f32;
                }
            }
        }
    }
}

/// The 6-bit scale of group g of an IQ4_XS block, minus 32.
#[inline(always)]
pub fn iq4_xs_scale(b: &BlockIQ4XS, g: usize) -> i32 {
    let h = u16::from_le_bytes(b.scales_h);
    let ls = ((b.scales_l[g / 2] >> (4 * (g % 2))) & 15) as i32 | ((((h >> (2 * g)) & 3) as i32) << 4);
    ls - 32
}

pub fn dequantize_iq4_xs(x: &[BlockIQ4XS], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = f16_le(b.d);
        for g in 0..8 {
            let dl = d * iq4_xs_scale(b, g) as f32;
            let q = &b.qs[g * 16..g * 16 + 16];
            for j in 0..16 {
                y[g * 32 + j] = dl * KVALUES_IQ4NL[(q[j] & 15) as usize] as f32;
                y[g * 32 + j + 16] = dl * KVALUES_IQ4NL[(q[j] >> 4) as usize] as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_k_scales_match_per_group_decoding() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..10_000 {
            let mut q = [0u8; 12];
            for b in q.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
            let (sc, m) = k_scales_mins(&q);
            for j in 0..8 {
                assert_eq!(
                    k_scale_min(j, &q),
                    ((sc >> (8 * j)) as u8, (m >> (8 * j)) as u8),
                    "{q:?} group {j}"
                );
            }
        }
    }
}
