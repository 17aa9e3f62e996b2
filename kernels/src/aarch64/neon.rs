//! NEON dot products: Q4_0/Q8_0 x Q8_0, Q4_1 x Q8_1, Q4_K/Q6_K x Q8_K, f32.

use std::arch::aarch64::*;

use crate::blocks::*;

/// Sum of the 16 products a[i]*b[i] into 4 i32 lanes. Products of |a| <= 128 and |b| <= 127
/// fit i16 in pairs.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn dot16(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    let hi = vmull_high_s8(a, b);
    vpadalq_s16(vpadalq_s16(acc, lo), hi)
}

/// The 32 nibbles of a Q4 block: (low nibbles = elements 0-15, high = 16-31).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn nibbles(qs: &[u8; 16]) -> (int8x16_t, int8x16_t) {
    let b = vld1q_u8(qs.as_ptr());
    (vreinterpretq_s8_u8(vandq_u8(b, vdupq_n_u8(15))), vreinterpretq_s8_u8(vshrq_n_u8(b, 4)))
}

/// # Safety
/// The CPU must have this level's target features (reached only through dispatch).
#[target_feature(enable = "neon")]
pub unsafe fn vec_dot_q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    let mut acc = vdupq_n_f32(0.0);
    let eight = vdupq_n_s8(8);
    for (a, b) in x.iter().zip(y) {
        let (lo, hi) = nibbles(&a.qs);
        let s = dot16(vdupq_n_s32(0), vsubq_s8(lo, eight), vld1q_s8(b.qs.as_ptr()));
        let s = dot16(s, vsubq_s8(hi, eight), vld1q_s8(b.qs.as_ptr().add(16)));
        acc = vmlaq_n_f32(acc, vcvtq_f32_s32(s), f16_le(a.d) * f16_le(b.d));
    }
    vaddvq_f32(acc)
}

/// # Safety
/// The CPU must have this level's target features (reached only through dispatch).
#[target_feature(enable = "neon")]
pub unsafe fn vec_dot_q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    let mut acc = vdupq_n_f32(0.0);
    let mut offsets = 0f32;
    for (a, b) in x.iter().zip(y) {
        let (lo, hi) = nibbles(&a.qs);
        let s = dot16(vdupq_n_s32(0), lo, vld1q_s8(b.qs.as_ptr()));
        let s = dot16(s, hi, vld1q_s8(b.qs.as_ptr().add(16)));
        acc = vmlaq_n_f32(acc, vcvtq_f32_s32(s), f16_le(a.d) * f16_le(b.d));
        offsets += f16_le(a.m) * f16_le(b.s);
    }
    vaddvq_f32(acc) + offsets
}

/// # Safety
/// The CPU must have this level's target features (reached only through dispatch).
#[target_feature(enable = "neon")]
pub unsafe fn vec_dot_q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    let mut acc = vdupq_n_f32(0.0);
    for (a, b) in x.iter().zip(y) {
        let s = dot16(vdupq_n_s32(0), vld1q_s8(a.qs.as_ptr()), vld1q_s8(b.qs.as_ptr()));
        let s = dot16(s, vld1q_s8(a.qs.as_ptr().add(16)), vld1q_s8(b.qs.as_ptr().add(16)));
        acc = vmlaq_n_f32(acc, vcvtq_f32_s32(s), f16_le(a.d) * f16_le(b.d));
    }
    vaddvq_f32(acc)
}

/// Q4_K: see the scalar reference for the layout; groups of 32 scaled by 6-bit scales,
/// minimums folded in through the activation's bsums.
/// # Safety
/// The CPU must have this level's target features (reached only through dispatch).
#[target_feature(enable = "neon")]
pub unsafe fn vec_dot_q4_k_q8_k(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    let m4 = vdupq_n_u8(15);
    for (a, b) in x.iter().zip(y) {
        let (mut sq, mut sm) = (0i32, 0i32);
        for p in 0..4 {
            let (sc0, m0) = crate::scalar::k_scale_min(2 * p, &a.scales);
            let (sc1, m1) = crate::scalar::k_scale_min(2 * p + 1, &a.scales);
            sm += m0 as i32 * (b.bsums[4 * p] as i32 + b.bsums[4 * p + 1] as i32);
            sm += m1 as i32 * (b.bsums[4 * p + 2] as i32 + b.bsums[4 * p + 3] as i32);
            let q0 = vld1q_u8(a.qs.as_ptr().add(32 * p));
            let q1 = vld1q_u8(a.qs.as_ptr().add(32 * p + 16));
            let yp = b.qs.as_ptr().add(64 * p);
            let mut s0 = dot16(vdupq_n_s32(0), vreinterpretq_s8_u8(vandq_u8(q0, m4)), vld1q_s8(yp));
            s0 = dot16(s0, vreinterpretq_s8_u8(vandq_u8(q1, m4)), vld1q_s8(yp.add(16)));
            let mut s1 = dot16(vdupq_n_s32(0), vreinterpretq_s8_u8(vshrq_n_u8(q0, 4)), vld1q_s8(yp.add(32)));
            s1 = dot16(s1, vreinterpretq_s8_u8(vshrq_n_u8(q1, 4)), vld1q_s8(yp.add(48)));
            sq += sc0 as i32 * vaddvq_s32(s0) + sc1 as i32 * vaddvq_s32(s1);
        }
        sum += b.d * (f16_le(a.d) * sq as f32 - f16_le(a.dmin) * sm as f32);
    }
    sum
}

/// Q6_K: 6-bit values rebuilt from ql/qh 16 at a time, offset by -32, groups of 16.
/// # Safety
/// The CPU must have this level's target features (reached only through dispatch).
#[target_feature(enable = "neon")]
pub unsafe fn vec_dot_q6_k_q8_k(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    let m4 = vdupq_n_u8(15);
    let m2 = vdupq_n_u8(3);
    let off = vdupq_n_s8(32);
    for (a, b) in x.iter().zip(y) {
        let mut total = 0i32;
        for half in 0..2 {
            for part in 0..2 {
                // Elements l = 16*part .. 16*part+16 of each quarter.
                let ql0 = vld1q_u8(a.ql.as_ptr().add(64 * half + 16 * part));
                let ql1 = vld1q_u8(a.ql.as_ptr().add(64 * half + 32 + 16 * part));
                let qh = vld1q_u8(a.qh.as_ptr().add(32 * half + 16 * part));
                let q = [
                    vorrq_u8(vandq_u8(ql0, m4), vshlq_n_u8(vandq_u8(qh, m2), 4)),
                    vorrq_u8(vandq_u8(ql1, m4), vshlq_n_u8(vandq_u8(vshrq_n_u8(qh, 2), m2), 4)),
                    vorrq_u8(vshrq_n_u8(ql0, 4), vshlq_n_u8(vandq_u8(vshrq_n_u8(qh, 4), m2), 4)),
                    vorrq_u8(vshrq_n_u8(ql1, 4), vshlq_n_u8(vshrq_n_u8(qh, 6), 4)),
                ];
                for (k, qk) in q.iter().enumerate() {
                    let e = 128 * half + 32 * k + 16 * part;
                    let v = vsubq_s8(vreinterpretq_s8_u8(*qk), off);
                    let s = dot16(vdupq_n_s32(0), v, vld1q_s8(b.qs.as_ptr().add(e)));
                    total += a.scales[e / 16] as i32 * vaddvq_s32(s);
                }
            }
        }
        sum += b.d * f16_le(a.d) * total as f32;
    }
    sum
}

/// # Safety
/// The CPU must have this level's target features (reached only through dispatch).
#[target_feature(enable = "neon")]
pub unsafe fn vec_dot_f32(x: &[u8], y: &[f32]) -> f32 {
    let n = y.len();
    let mut acc = [vdupq_n_f32(0.0); 4];
    let mut i = 0;
    while i + 16 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            let w = vreinterpretq_f32_u8(vld1q_u8(x.as_ptr().add(4 * (i + 4 * k))));
            *a = vfmaq_f32(*a, w, vld1q_f32(y.as_ptr().add(i + 4 * k)));
        }
        i += 16;
    }
    let s = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
    vaddvq_f32(s) + crate::scalar::vec_dot_f32(&x[4 * i..], &y[i..])
}
