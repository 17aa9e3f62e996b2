//! Reference dot products of a weight row with a quantized activation row, the pairing
//! llama.cpp uses: Q4_0/Q5_0/Q8_0/IQ4_NL x Q8_0, Q4_1/Q5_1 x Q8_1, K types and IQ4_XS x Q8_K.
//! Integer sums per block (or group) are exact; they are scaled to f32 once per block.

use super::dequant::{iq4_xs_scale, k_scale_min, q3_k_scales, q5_pair, q6_k_value};
use crate::blocks::*;

/// sum over j of (q4[j] - 8) * q8[j] per block.
pub fn vec_dot_q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    let mut sum = 0f32;
    for (a, b) in x.iter().zip(y) {
        let mut s = 0i32;
        for j in 0..16 {
            s += ((a.qs[j] & 15) as i32 - 8) * b.qs[j] as i32;
            s += ((a.qs[j] >> 4) as i32 - 8) * b.qs[j + 16] as i32;
        }
        sum += s as f32 * f16_le(a.d) * f16_le(b.d);
    }
    sum
}

/// (d*q + m) . (dy*qy) = d*dy*sum(q*qy) + m*(dy*sum(qy)); the last factor is Q8_1's `s`.
pub fn vec_dot_q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    let mut sum = 0f32;
    for (a, b) in x.iter().zip(y) {
        let mut s = 0i32;
        for j in 0..16 {
            s += (a.qs[j] & 15) as i32 * b.qs[j] as i32;
            s += (a.qs[j] >> 4) as i32 * b.qs[j + 16] as i32;
        }
        sum += s as f32 * f16_le(a.d) * f16_le(b.d) + f16_le(a.m) * f16_le(b.s);
    }
    sum
}

pub fn vec_dot_q5_0_q8_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    let mut sum = 0f32;
    for (a, b) in x.iter().zip(y) {
        let qh = u32::from_le_bytes(a.qh);
        let mut s = 0i32;
        for j in 0..16 {
            let (q0, q1) = q5_pair(&a.qs, qh, j);
            s += (q0 as i32 - 16) * b.qs[j] as i32 + (q1 as i32 - 16) * b.qs[j + 16] as i32;
        }
        sum += s as f32 * f16_le(a.d) * f16_le(b.d);
    }
    sum
}

pub fn vec_dot_q5_1_q8_1(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
    let mut sum = 0f32;
    for (a, b) in x.iter().zip(y) {
        let qh = u32::from_le_bytes(a.qh);
        let mut s = 0i32;
        for j in 0..16 {
            let (q0, q1) = q5_pair(&a.qs, qh, j);
            s += q0 as i32 * b.qs[j] as i32 + q1 as i32 * b.qs[j + 16] as i32;
        }
        sum += s as f32 * f16_le(a.d) * f16_le(b.d) + f16_le(a.m) * f16_le(b.s);
    }
    sum
}

pub fn vec_dot_q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    let mut sum = 0f32;
    for (a, b) in x.iter().zip(y) {
        let s: i32 = a.qs.iter().zip(&b.qs).map(|(&p, &q)| p as i32 * q as i32).sum();
        sum += s as f32 * f16_le(a.d) * f16_le(b.d);
    }
    sum
}

pub fn vec_dot_iq4_nl_q8_0(x: &[BlockIQ4NL], y: &[BlockQ8_0]) -> f32 {
    let mut sum = 0f32;
    for (a, b) in x.iter().zip(y) {
        let mut s = 0i32;
        for j in 0..16 {
            s += KVALUES_IQ4NL[(a.qs[j] & 15) as usize] as i32 * b.qs[j] as i32;
            s += KVALUES_IQ4NL[(a.qs[j] >> 4) as usize] as i32 * b.qs[j + 16] as i32;
        }
        sum += s as f32 * f16_le(a.d) * f16_le(b.d);
    }
    sum
}

/// Q2_K: d * sum_g (sc_g & 15) * sum(q*qy) - dmin * sum_g (sc_g >> 4) * bsum_g.
pub fn vec_dot_q2_k_q8_k(x: &[BlockQ2K], y: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (a, b) in x.iter().zip(y) {
        let (mut sq, mut sm) = (0i32, 0i32);
        for g in 0..16 {
            let sc = a.scales[g];
            let (half, r) = (g / 8, g % 8);
            let (shift, part) = (2 * (r / 2), r % 2);
            let mut s = 0i32;
            for l in 0..16 {
                let q = (a.qs[half * 32 + part * 16 + l] >> shift) & 3;
                s += q as i32 * b.qs[g * 16 + l] as i32;
            }
            sq += (sc & 15) as i32 * s;
            sm += (sc >> 4) as i32 * b.bsums[g] as i32;
        }
        sum += b.d * (f16_le(a.d) * sq as f32 - f16_le(a.dmin) * sm as f32);
    }
    sum
}

pub fn vec_dot_q3_k_q8_k(x: &[BlockQ3K], y: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (a, b) in x.iter().zip(y) {
        let scales = q3_k_scales(&a.scales);
        let mut total = 0i32;
        for g in 0..16 {
            let (half, r) = (g / 8, g % 8);
            let (shift, part) = (2 * (r / 2), r % 2);
            let m = 1u8 << (half * 4 + r / 2);
            let mut s = 0i32;
            for l in 0..16 {
                let idx = part * 16 + l;
                let lo = ((a.qs[half * 32 + idx] >> shift) & 3) as i32;
                let hi = if a.hmask[idx] & m != 0 { 0 } else { 4 };
                s += (lo - hi) * b.qs[g * 16 + l] as i32;
            }
            total += scales[g] as i32 * s;
        }
        sum += b.d * f16_le(a.d) * total as f32;
    }
    sum
}

pub fn vec_dot_q4_k_q8_k(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (a, b) in x.iter().zip(y) {
        let (mut sq, mut sm) = (0i32, 0i32);
        for g in 0..8 {
            let (sc, m) = k_scale_min(g, &a.scales);
            let q = &a.qs[(g / 2) * 32..(g / 2) * 32 + 32];
            let shift = 4 * (g % 2);
            let s: i32 = (0..32).map(|l| ((q[l] >> shift) & 15) as i32 * b.qs[g * 32 + l] as i32).sum();
            sq += sc as i32 * s;
            sm += m as i32 * (b.bsums[2 * g] as i32 + b.bsums[2 * g + 1] as i32);
        }
        sum += b.d * (f16_le(a.d) * sq as f32 - f16_le(a.dmin) * sm as f32);
    }
    sum
}

pub fn vec_dot_q5_k_q8_k(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (a, b) in x.iter().zip(y) {
        let (mut sq, mut sm) = (0i32, 0i32);
        for g in 0..8 {
            let (sc, m) = k_scale_min(g, &a.scales);
            let q = &a.qs[(g / 2) * 32..(g / 2) * 32 + 32];
            let shift = 4 * (g % 2);
            let s: i32 = (0..32)
                .map(|l| {
                    let v = ((q[l] >> shift) & 15) | (((a.qh[l] >> g) & 1) << 4);
                    v as i32 * b.qs[g * 32 + l] as i32
                })
                .sum();
            sq += sc as i32 * s;
            sm += m as i32 * (b.bsums[2 * g] as i32 + b.bsums[2 * g + 1] as i32);
        }
        sum += b.d * (f16_le(a.d) * sq as f32 - f16_le(a.dmin) * sm as f32);
    }
    sum
}

pub fn vec_dot_q6_k_q8_k(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (a, b) in x.iter().zip(y) {
        let mut total = 0i32;
        for g in 0..16 {
            let s: i32 = (0..16).map(|l| q6_k_value(a, g * 16 + l) * b.qs[g * 16 + l] as i32).sum();
            total += a.scales[g] as i32 * s;
        }
        sum += b.d * f16_le(a.d) * total as f32;
    }
    sum
}

pub fn vec_dot_iq4_xs_q8_k(x: &[BlockIQ4XS], y: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (a, b) in x.iter().zip(y) {
        let mut total = 0i32;
        for g in 0..8 {
            let q = &a.qs[g * 16..g * 16 + 16];
            let mut s = 0i32;
            for j in 0..16 {
                s += KVALUES_IQ4NL[(q[j] & 15) as usize] as i32 * b.qs[g * 32 + j] as i32;
                s += KVALUES_IQ4NL[(q[j] >> 4) as usize] as i32 * b.qs[g * 32 + j + 16] as i32;
            }
            total += iq4_xs_scale(a, g) * s;
        }
        sum += b.d * f16_le(a.d) * total as f32;
    }
    sum
}

/// Float weights against f32 activations.
pub fn vec_dot_f32(x: &[u8], y: &[f32]) -> f32 {
    x.chunks_exact(4).zip(y).map(|(c, &v)| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) * v).sum()
}

pub fn vec_dot_f16_f32(x: &[u8], y: &[f32]) -> f32 {
    x.chunks_exact(2).zip(y).map(|(c, &v)| f16_le([c[0], c[1]]) * v).sum()
}

pub fn vec_dot_bf16_f32(x: &[u8], y: &[f32]) -> f32 {
    x.chunks_exact(2).zip(y).map(|(c, &v)| half::bf16::from_le_bytes([c[0], c[1]]).to_f32() * v).sum()
}
