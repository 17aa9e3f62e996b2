//! The NEON kernel bodies, written once and instantiated twice: in `neon` (8-bit products
//! through `smull` + `sadalp`) and in `dotprod` (through `sdot`). Each module defines
//! `dot16(acc, a, b)`, adding the 16 products a[i] * b[i] into the four i32 lanes of `acc`,
//! and expands `neon_kernels!` with its target features. The two `dot16`s spread the
//! products over the lanes differently, so the bodies only ever use the sum of the lanes
//! (or all lanes times one scale): their integer sums are the scalar reference's, exactly.

/// Expands, inside a level's module, to every NEON dot product. `$feat` is the module's
/// target-feature list; `dot16` must be defined in the calling module.
#[macro_export]
#[doc(hidden)]
macro_rules! neon_kernels {
    ($feat:literal) => {
        use $crate::blocks::*;
        use $crate::scalar::{iq4_xs_scale, k_scale_min, q3_k_scales};

        /// The 32 nibbles of a Q4-style block at `p` (16 bytes): (low nibbles = elements
        /// 0-15, high nibbles = elements 16-31).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn nibbles(p: *const u8) -> (uint8x16_t, uint8x16_t) {
            let b = vld1q_u8(p);
            (vandq_u8(b, vdupq_n_u8(15)), vshrq_n_u8(b, 4))
        }

        /// The 32 5-bit values of a Q5_0/Q5_1 block: nibbles as Q4, bit j of `qh` (little
        /// endian) is bit 4 of element j.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn q5_values(qs: &[u8; 16], qh: [u8; 4]) -> (int8x16_t, int8x16_t) {
            let (lo, hi) = nibbles(qs.as_ptr());
            // Byte k of each half tests bit k % 8 of the qh byte it was filled with.
            let bit = vreinterpretq_u8_u64(vdupq_n_u64(0x8040_2010_0804_0201));
            let h_lo = vtstq_u8(vcombine_u8(vdup_n_u8(qh[0]), vdup_n_u8(qh[1])), bit);
            let h_hi = vtstq_u8(vcombine_u8(vdup_n_u8(qh[2]), vdup_n_u8(qh[3])), bit);
            let sixteen = vdupq_n_u8(16);
            (
                vreinterpretq_s8_u8(vorrq_u8(lo, vandq_u8(h_lo, sixteen))),
                vreinterpretq_s8_u8(vorrq_u8(hi, vandq_u8(h_hi, sixteen))),
            )
        }

        /// The 32 IQ4 values of 16 bytes at `p`: nibbles looked up in the codebook `book`.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn iq4_values(book: int8x16_t, p: *const u8) -> (int8x16_t, int8x16_t) {
            let (lo, hi) = nibbles(p);
            (vqtbl1q_s8(book, lo), vqtbl1q_s8(book, hi))
        }

        /// A 32-value block's products: `a` against the 32 activations at `y`.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn dot32(a: (int8x16_t, int8x16_t), y: *const i8) -> int32x4_t {
            dot16(dot16(vdupq_n_s32(0), a.0, vld1q_s8(y)), a.1, vld1q_s8(y.add(16)))
        }

        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
            let mut acc = vdupq_n_f32(0.0);
            let eight = vdupq_n_s8(8);
            for (a, b) in x.iter().zip(y) {
                let (lo, hi) = nibbles(a.qs.as_ptr());
                let q = (vsubq_s8(vreinterpretq_s8_u8(lo), eight), vsubq_s8(vreinterpretq_s8_u8(hi), eight));
                acc = vmlaq_n_f32(acc, vcvtq_f32_s32(dot32(q, b.qs.as_ptr())), f16_le(a.d) * f16_le(b.d));
            }
            vaddvq_f32(acc)
        }

        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
            let mut acc = vdupq_n_f32(0.0);
            let mut offsets = 0f32;
            for (a, b) in x.iter().zip(y) {
                let (lo, hi) = nibbles(a.qs.as_ptr());
                let q = (vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi));
                acc = vmlaq_n_f32(acc, vcvtq_f32_s32(dot32(q, b.qs.as_ptr())), f16_le(a.d) * f16_le(b.d));
                offsets += f16_le(a.m) * f16_le(b.s);
            }
            vaddvq_f32(acc) + offsets
        }

        /// Q5_0: 5-bit values offset by -16.
        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_q5_0_q8_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
            let mut acc = vdupq_n_f32(0.0);
            let sixteen = vdupq_n_s8(16);
            for (a, b) in x.iter().zip(y) {
                let (lo, hi) = q5_values(&a.qs, a.qh);
                let q = (vsubq_s8(lo, sixteen), vsubq_s8(hi, sixteen));
                acc = vmlaq_n_f32(acc, vcvtq_f32_s32(dot32(q, b.qs.as_ptr())), f16_le(a.d) * f16_le(b.d));
            }
            vaddvq_f32(acc)
        }

        /// Q5_1: 5-bit values, the `+ m` term through Q8_1's `s` (as Q4_1).
        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_q5_1_q8_1(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
            let mut acc = vdupq_n_f32(0.0);
            let mut offsets = 0f32;
            for (a, b) in x.iter().zip(y) {
                let q = q5_values(&a.qs, a.qh);
                acc = vmlaq_n_f32(acc, vcvtq_f32_s32(dot32(q, b.qs.as_ptr())), f16_le(a.d) * f16_le(b.d));
                offsets += f16_le(a.m) * f16_le(b.s);
            }
            vaddvq_f32(acc) + offsets
        }

        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
            let mut acc = vdupq_n_f32(0.0);
            for (a, b) in x.iter().zip(y) {
                let q = (vld1q_s8(a.qs.as_ptr()), vld1q_s8(a.qs.as_ptr().add(16)));
                acc = vmlaq_n_f32(acc, vcvtq_f32_s32(dot32(q, b.qs.as_ptr())), f16_le(a.d) * f16_le(b.d));
            }
            vaddvq_f32(acc)
        }

        /// IQ4_NL: Q4_0's nibble layout, values from the 16-entry codebook (`tbl`).
        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_iq4_nl_q8_0(x: &[BlockIQ4NL], y: &[BlockQ8_0]) -> f32 {
            let mut acc = vdupq_n_f32(0.0);
            let book = vld1q_s8(KVALUES_IQ4NL.as_ptr());
            for (a, b) in x.iter().zip(y) {
                let q = iq4_values(book, a.qs.as_ptr());
                acc = vmlaq_n_f32(acc, vcvtq_f32_s32(dot32(q, b.qs.as_ptr())), f16_le(a.d) * f16_le(b.d));
            }
            vaddvq_f32(acc)
        }

        /// Q2_K: 16 groups of 16. Bytes l of the two 16-byte rows of each 32-byte half hold
        /// groups 2k (row 0) and 2k+1 (row 1) of the half in bits 2k..2k+2, k = 0..4.
        ///   d * dy * sum_g (sc_g & 15) * sum(q*qy) - dmin * dy * sum_g (sc_g >> 4) * bsum_g
        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_q2_k_q8_k(x: &[BlockQ2K], y: &[BlockQ8K]) -> f32 {
            let mut sum = 0f32;
            let m3 = vdupq_n_u8(3);
            for (a, b) in x.iter().zip(y) {
                let yq = b.qs.as_ptr();
                let mut sq = vdupq_n_s32(0);
                for half in 0..2 {
                    let mut q = [vld1q_u8(a.qs.as_ptr().add(32 * half)), vld1q_u8(a.qs.as_ptr().add(32 * half + 16))];
                    for k in 0..4 {
                        for (part, qp) in q.iter_mut().enumerate() {
                            let g = 8 * half + 2 * k + part;
                            let v = vreinterpretq_s8_u8(vandq_u8(*qp, m3));
                            let s = dot16(vdupq_n_s32(0), v, vld1q_s8(yq.add(16 * g)));
                            sq = vmlaq_n_s32(sq, s, (a.scales[g] & 15) as i32);
                            *qp = vshrq_n_u8(*qp, 2);
                        }
                    }
                }
                // The minimum terms: the 16 high nibbles of the scales against the 16 bsums.
                let m = vshrq_n_u8(vld1q_u8(a.scales.as_ptr()), 4);
                let m0 = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(m)));
                let m1 = vreinterpretq_s16_u16(vmovl_high_u8(m));
                let (bs0, bs1) = (vld1q_s16(b.bsums.as_ptr()), vld1q_s16(b.bsums.as_ptr().add(8)));
                let sm = vmlal_high_s16(vmull_s16(vget_low_s16(m0), vget_low_s16(bs0)), m0, bs0);
                let sm = vmlal_high_s16(vmlal_s16(sm, vget_low_s16(m1), vget_low_s16(bs1)), m1, bs1);
                sum += b.d * (f16_le(a.d) * vaddvq_s32(sq) as f32 - f16_le(a.dmin) * vaddvq_s32(sm) as f32);
            }
            sum
        }

        /// Q3_K: Q2_K's low two bits; bit 4*half + k of hmask byte l (row `part`) is the third
        /// bit, and a cleared third bit subtracts 4. Signed 6-bit scales, no minimums.
        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_q3_k_q8_k(x: &[BlockQ3K], y: &[BlockQ8K]) -> f32 {
            let mut sum = 0f32;
            let (m3, four) = (vdupq_n_u8(3), vdupq_n_u8(4));
            for (a, b) in x.iter().zip(y) {
                let scales = q3_k_scales(&a.scales);
                let hm = [vld1q_u8(a.hmask.as_ptr()), vld1q_u8(a.hmask.as_ptr().add(16))];
                let yq = b.qs.as_ptr();
                let mut total = vdupq_n_s32(0);
                for half in 0..2 {
                    let mut q = [vld1q_u8(a.qs.as_ptr().add(32 * half)), vld1q_u8(a.qs.as_ptr().add(32 * half + 16))];
                    for k in 0..4 {
                        let bit = vdupq_n_u8(1 << (4 * half + k));
                        for (part, qp) in q.iter_mut().enumerate() {
                            let g = 8 * half + 2 * k + part;
                            let sub = vbicq_u8(four, vtstq_u8(hm[part], bit));
                            let v = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(*qp, m3)), vreinterpretq_s8_u8(sub));
                            let s = dot16(vdupq_n_s32(0), v, vld1q_s8(yq.add(16 * g)));
                            total = vmlaq_n_s32(total, s, scales[g] as i32);
                            *qp = vshrq_n_u8(*qp, 2);
                        }
                    }
                }
                sum += b.d * f16_le(a.d) * vaddvq_s32(total) as f32;
            }
            sum
        }

        /// Q4_K: see the scalar reference for the layout; groups of 32 scaled by 6-bit scales,
        /// minimums folded in through the activation's bsums.
        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_q4_k_q8_k(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
            let mut sum = 0f32;
            for (a, b) in x.iter().zip(y) {
                let (mut sq, mut sm) = (vdupq_n_s32(0), 0i32);
                for p in 0..4 {
                    let (sc0, m0) = k_scale_min(2 * p, &a.scales);
                    let (sc1, m1) = k_scale_min(2 * p + 1, &a.scales);
                    sm += m0 as i32 * (b.bsums[4 * p] as i32 + b.bsums[4 * p + 1] as i32);
                    sm += m1 as i32 * (b.bsums[4 * p + 2] as i32 + b.bsums[4 * p + 3] as i32);
                    let (lo0, hi0) = nibbles(a.qs.as_ptr().add(32 * p));
                    let (lo1, hi1) = nibbles(a.qs.as_ptr().add(32 * p + 16));
                    let yp = b.qs.as_ptr().add(64 * p);
                    let s0 = dot32((vreinterpretq_s8_u8(lo0), vreinterpretq_s8_u8(lo1)), yp);
                    let s1 = dot32((vreinterpretq_s8_u8(hi0), vreinterpretq_s8_u8(hi1)), yp.add(32));
                    sq = vmlaq_n_s32(vmlaq_n_s32(sq, s0, sc0 as i32), s1, sc1 as i32);
                }
                sum += b.d * (f16_le(a.d) * vaddvq_s32(sq) as f32 - f16_le(a.dmin) * sm as f32);
            }
            sum
        }

        /// Q5_K: Q4_K with the fifth bit of group g in bit g of qh[l].
        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_q5_k_q8_k(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
            let mut sum = 0f32;
            let (m4, one, two) = (vdupq_n_u8(15), vdupq_n_u8(1), vdupq_n_u8(2));
            for (a, b) in x.iter().zip(y) {
                let (mut sq, mut sm) = (vdupq_n_s32(0), 0i32);
                // Shifted right by 2 per pair p, so groups 2p and 2p+1 find their bits at 0 and 1.
                let mut qh = [vld1q_u8(a.qh.as_ptr()), vld1q_u8(a.qh.as_ptr().add(16))];
                for p in 0..4 {
                    let (sc0, m0) = k_scale_min(2 * p, &a.scales);
                    let (sc1, m1) = k_scale_min(2 * p + 1, &a.scales);
                    sm += m0 as i32 * (b.bsums[4 * p] as i32 + b.bsums[4 * p + 1] as i32);
                    sm += m1 as i32 * (b.bsums[4 * p + 2] as i32 + b.bsums[4 * p + 3] as i32);
                    let yp = b.qs.as_ptr().add(64 * p);
                    for (part, h) in qh.iter_mut().enumerate() {
                        let q = vld1q_u8(a.qs.as_ptr().add(32 * p + 16 * part));
                        let lo = vorrq_u8(vandq_u8(q, m4), vshlq_n_u8(vandq_u8(*h, one), 4));
                        let hi = vorrq_u8(vshrq_n_u8(q, 4), vshlq_n_u8(vandq_u8(*h, two), 3));
                        let s0 = dot16(vdupq_n_s32(0), vreinterpretq_s8_u8(lo), vld1q_s8(yp.add(16 * part)));
                        let s1 = dot16(vdupq_n_s32(0), vreinterpretq_s8_u8(hi), vld1q_s8(yp.add(32 + 16 * part)));
                        sq = vmlaq_n_s32(vmlaq_n_s32(sq, s0, sc0 as i32), s1, sc1 as i32);
                        *h = vshrq_n_u8(*h, 2);
                    }
                }
                sum += b.d * (f16_le(a.d) * vaddvq_s32(sq) as f32 - f16_le(a.dmin) * sm as f32);
            }
            sum
        }

        /// Q6_K: 6-bit values rebuilt from ql/qh 16 at a time, offset by -32, groups of 16.
        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_q6_k_q8_k(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
            let mut sum = 0f32;
            let m4 = vdupq_n_u8(15);
            let m2 = vdupq_n_u8(3);
            let off = vdupq_n_s8(32);
            for (a, b) in x.iter().zip(y) {
                let mut total = vdupq_n_s32(0);
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
                            total = vmlaq_n_s32(total, s, a.scales[e / 16] as i32);
                        }
                    }
                }
                sum += b.d * f16_le(a.d) * vaddvq_s32(total) as f32;
            }
            sum
        }

        /// IQ4_XS: 8 groups of 32, each 16 bytes of nibbles as IQ4_NL, 6-bit scales - 32.
        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_iq4_xs_q8_k(x: &[BlockIQ4XS], y: &[BlockQ8K]) -> f32 {
            let mut sum = 0f32;
            let book = vld1q_s8(KVALUES_IQ4NL.as_ptr());
            for (a, b) in x.iter().zip(y) {
                let mut total = vdupq_n_s32(0);
                for g in 0..8 {
                    let s = dot32(iq4_values(book, a.qs.as_ptr().add(16 * g)), b.qs.as_ptr().add(32 * g));
                    total = vmlaq_n_s32(total, s, iq4_xs_scale(a, g));
                }
                sum += b.d * f16_le(a.d) * vaddvq_s32(total) as f32;
            }
            sum
        }

        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_f32(x: &[u8], y: &[f32]) -> f32 {
            let n = y.len().min(x.len() / 4);
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
            vaddvq_f32(s) + $crate::scalar::vec_dot_f32(&x[4 * i..], &y[i..])
        }

        /// Eight f16 values at `p` (16 bytes) as f32, through `fcvtl`/`fcvtl2` (base NEON; the
        /// f16 intrinsics are not stable Rust). The conversion is exact.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn f16x8(p: *const u8) -> (float32x4_t, float32x4_t) {
            let h = vld1q_u8(p);
            let (lo, hi): (float32x4_t, float32x4_t);
            // SAFETY: register-only conversions, no memory access; fcvtl is in every NEON CPU.
            std::arch::asm!("fcvtl {lo:v}.4s, {h:v}.4h", h = in(vreg) h, lo = lateout(vreg) lo,
                options(pure, nomem, nostack, preserves_flags));
            // SAFETY: as above.
            std::arch::asm!("fcvtl2 {hi:v}.4s, {h:v}.8h", h = in(vreg) h, hi = lateout(vreg) hi,
                options(pure, nomem, nostack, preserves_flags));
            (lo, hi)
        }

        /// Eight bf16 values at `p` (16 bytes) as f32: each is the top half of its f32.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn bf16x8(p: *const u8) -> (float32x4_t, float32x4_t) {
            let h = vreinterpretq_u16_u8(vld1q_u8(p));
            (
                vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h))),
                vreinterpretq_f32_u32(vshll_high_n_u16::<16>(h)),
            )
        }

        /// 16-bit float weights (f16, or bf16 if `BF16`) against f32 activations.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn dot_halves<const BF16: bool>(x: &[u8], y: &[f32]) -> f32 {
            let n = y.len().min(x.len() / 2);
            let mut acc = [vdupq_n_f32(0.0); 4];
            let mut i = 0;
            while i + 16 <= n {
                for k in 0..2 {
                    let p = x.as_ptr().add(2 * (i + 8 * k));
                    let (lo, hi) = if BF16 { bf16x8(p) } else { f16x8(p) };
                    let yp = y.as_ptr().add(i + 8 * k);
                    acc[2 * k] = vfmaq_f32(acc[2 * k], lo, vld1q_f32(yp));
                    acc[2 * k + 1] = vfmaq_f32(acc[2 * k + 1], hi, vld1q_f32(yp.add(4)));
                }
                i += 16;
            }
            let s = vaddvq_f32(vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3])));
            let (x, y) = (&x[2 * i..], &y[i..]);
            s + if BF16 { $crate::scalar::vec_dot_bf16_f32(x, y) } else { $crate::scalar::vec_dot_f16_f32(x, y) }
        }

        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_f16_f32(x: &[u8], y: &[f32]) -> f32 {
            dot_halves::<false>(x, y)
        }

        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_bf16_f32(x: &[u8], y: &[f32]) -> f32 {
            dot_halves::<true>(x, y)
        }
    };
}
