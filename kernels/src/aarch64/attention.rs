//! NEON attention over the f16 cache, with the same bits as the references in `attention`:
//! `attend_f16` as `attend_f16_ref` in llama.cpp's NEON dot order (four accumulators of four
//! lanes), `attend_many` as `attend_many_ref`. The f16 conversions go through `fcvtl`/`fcvtn`
//! (base NEON) instead of `half`'s per-element calls; the softmax's own steps (maximum,
//! exponentials, sums) are the references' code.

use std::arch::aarch64::*;
use std::arch::asm;

use half::f16;

use crate::attention::{
    block_sum, normalize, raise_max, KvRows, MANY_BLOCK as B, MANY_MAX_HD, MAX_HEAD_DIM, MAX_MANY,
};
use crate::math::exp_approx;

/// Four f16 at `p` as f32 (exact).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn load4(p: *const f16) -> float32x4_t {
    let h = vld1_u16(p as *const u16);
    let out: float32x4_t;
    // SAFETY: register-only conversion; fcvtl is base NEON.
    asm!("fcvtl {o:v}.4s, {h:v}.4h", h = in(vreg) h, o = lateout(vreg) out,
        options(pure, nomem, nostack, preserves_flags));
    out
}

/// Four lanes rounded to f16 (to nearest, ties to even, as `f16::from_f32`) and back.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn round4(x: float32x4_t) -> float32x4_t {
    let out: float32x4_t;
    // SAFETY: register-only conversions; fcvtn and fcvtl are base NEON.
    asm!("fcvtn {o:v}.4h, {x:v}.4s", "fcvtl {o:v}.4s, {o:v}.4h", x = in(vreg) x, o = lateout(vreg) out,
        options(pure, nomem, nostack, preserves_flags));
    out
}

/// The dot product of `q` (a multiple of 16 long) and the f16 row at `k` in llama.cpp's NEON
/// order (`DotOrder::Lanes(4)`): element i + 4j + l into lane l of accumulator j by fused
/// multiply-adds, then (0 + 2) + (1 + 3) per lane and the lanes by pairs (`faddp`).
///
/// # Safety
/// `k` must point at `q.len()` readable f16 values.
#[inline]
#[target_feature(enable = "neon")]
pub(crate) unsafe fn dot_f16(q: &[f32], k: *const f16) -> f32 {
    let mut a = [vdupq_n_f32(0.0); 4];
    for i in (0..q.len()).step_by(16) {
        for (j, a) in a.iter_mut().enumerate() {
            *a = vfmaq_f32(*a, vld1q_f32(q.as_ptr().add(i + 4 * j)), load4(k.add(i + 4 * j)));
        }
    }
    vaddvq_f32(vaddq_f32(vaddq_f32(a[0], a[2]), vaddq_f32(a[1], a[3])))
}

/// `attention::attend_f16` at the NEON level.
///
/// # Safety
/// The caller checked that `out` is as long as `q`, that the rows hold `len` positions of
/// that width, and that the width is a multiple of 16 and at most `MAX_HEAD_DIM`.
#[target_feature(enable = "neon")]
pub unsafe fn attend_f16(q: &[f32], keys: KvRows, values: KvRows, len: usize, scale: f32, out: &mut [f32]) {
    let hd = q.len();
    let mut qf = [0f32; MAX_HEAD_DIM];
    for d in (0..hd).step_by(4) {
        vst1q_f32(qf.as_mut_ptr().add(d), round4(vld1q_f32(q.as_ptr().add(d))));
    }
    out.fill(0.0);
    let acc = out.as_mut_ptr();
    let (mut m, mut sum) = (f32::NEG_INFINITY, 0f32);
    for t in 0..len {
        let kp = keys.data.as_ptr().add(t * keys.stride + keys.offset);
        let sc = dot_f16(&qf[..hd], kp) * scale;
        let (ms, vs) = if sc > m {
            let ms = (m - sc).exp();
            m = sc;
            for d in (0..hd).step_by(4) {
                let p = acc.add(d);
                vst1q_f32(p, round4(vmulq_n_f32(vld1q_f32(p), ms)));
            }
            (ms, 1.0)
        } else {
            (1.0, (sc - m).exp())
        };
        let vp = values.data.as_ptr().add(t * values.stride + values.offset);
        for d in (0..hd).step_by(4) {
            let p = acc.add(d);
            vst1q_f32(p, round4(vfmaq_n_f32(vld1q_f32(p), load4(vp.add(d)), vs)));
        }
        sum = sum.mul_add(ms, vs);
    }
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    out.iter_mut().for_each(|a| *a *= inv);
}

/// `attention::attend_many` at the NEON level: per block of `MANY_BLOCK` positions the keys
/// are converted once, transposed (position fastest), and the values once, for all the
/// queries; scores go 16 positions at a time, each a chain of fused multiply-adds in
/// head-dimension order, and the weighted values 16 dimensions at a time, positions in order.
///
/// # Safety
/// The caller checked the shapes (`attention::check_many`) and that the head width is a
/// multiple of 16.
#[target_feature(enable = "neon")]
pub unsafe fn attend_many(
    qs: &[&[f32]],
    lens: &[usize],
    keys: KvRows,
    values: KvRows,
    scale: f32,
    outs: &mut [&mut [f32]],
) {
    let Some(hd) = qs.first().map(|q| q.len()) else { return };
    let max_len = lens.iter().copied().max().unwrap_or(0);
    // Positions past a block's end keep earlier (finite) values: their scores are not read.
    // Only this head dimension's rows of keys are zeroed, the values not at all (only
    // written positions are read): zeroing both whole was 128 KiB per call.
    let mut kt_buf = std::mem::MaybeUninit::<[f32; MANY_MAX_HD * B]>::uninit();
    std::ptr::write_bytes(kt_buf.as_mut_ptr() as *mut f32, 0, hd * B);
    // SAFETY: hd <= MANY_MAX_HD (the caller checks it), and these hd x B floats were just
    // zeroed.
    let kt = std::slice::from_raw_parts_mut(kt_buf.as_mut_ptr() as *mut f32, hd * B);
    let mut vf_buf = std::mem::MaybeUninit::<[f32; B * MANY_MAX_HD]>::uninit();
    let vf = vf_buf.as_mut_ptr() as *mut f32;
    let mut m = [f32::NEG_INFINITY; MAX_MANY];
    let mut sum = [0f32; MAX_MANY];
    let (mut s, mut e) = ([0f32; B], [0f32; B]);
    outs.iter_mut().for_each(|o| o.fill(0.0));
    for b0 in (0..max_len).step_by(B) {
        let nb = B.min(max_len - b0);
        for p in 0..nb {
            let kp = keys.data.as_ptr().add((b0 + p) * keys.stride + keys.offset);
            let vp = values.data.as_ptr().add((b0 + p) * values.stride + values.offset);
            for d in (0..hd).step_by(4) {
                vst1q_f32(vf.add(p * hd + d), load4(vp.add(d)));
                let k = load4(kp.add(d));
                let at = kt.as_mut_ptr().add(d * B + p);
                vst1q_lane_f32::<0>(at, k);
                vst1q_lane_f32::<1>(at.add(B), k);
                vst1q_lane_f32::<2>(at.add(2 * B), k);
                vst1q_lane_f32::<3>(at.add(3 * B), k);
            }
        }
        for (i, (q, out)) in qs.iter().zip(outs.iter_mut()).enumerate() {
            let valid = nb.min(lens[i].saturating_sub(b0));
            if valid == 0 {
                continue;
            }
            for p0 in (0..valid).step_by(16) {
                let mut a = [vdupq_n_f32(0.0); 4];
                for (d, &x) in q.iter().enumerate() {
                    let kr = kt.as_ptr().add(d * B + p0);
                    for (c, a) in a.iter_mut().enumerate() {
                        *a = vfmaq_n_f32(*a, vld1q_f32(kr.add(4 * c)), x);
                    }
                }
                for (c, a) in a.iter().enumerate() {
                    vst1q_f32(s.as_mut_ptr().add(p0 + 4 * c), vmulq_n_f32(*a, scale));
                }
            }
            let mb = s[..valid].iter().copied().fold(f32::NEG_INFINITY, f32::max);
            raise_max(out, &mut sum[i], &mut m[i], mb);
            for (e, &sp) in e.iter_mut().zip(&s[..valid]) {
                *e = exp_approx(sp - m[i]);
            }
            sum[i] += block_sum(&e[..valid]);
            for dc in (0..hd).step_by(16) {
                let op = out.as_mut_ptr().add(dc);
                let mut a = [vdupq_n_f32(0.0); 4];
                for (c, a) in a.iter_mut().enumerate() {
                    *a = vld1q_f32(op.add(4 * c));
                }
                for (p, &w) in e[..valid].iter().enumerate() {
                    let vr = vf.add(p * hd + dc);
                    for (c, a) in a.iter_mut().enumerate() {
                        *a = vfmaq_n_f32(*a, vld1q_f32(vr.add(4 * c)), w);
                    }
                }
                for (c, a) in a.iter().enumerate() {
                    vst1q_f32(op.add(4 * c), *a);
                }
            }
        }
    }
    for (o, &sm) in outs.iter_mut().zip(&sum) {
        normalize(o, sm);
    }
}
