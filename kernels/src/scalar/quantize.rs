//! Reference weight quantizers (Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K), following
//! ggml's `quantize_row_*_ref`, so files we write are files llama.cpp reads the same way.
//! (Q8_0 weights use `activations::quantize_q8_0`, the same reference algorithm.)
//!
//! The output is meant to be byte-identical to llama.cpp's, so every float expression keeps
//! ggml's operation order (`a * b * c` is `(a * b) * c`, sums run front to back, no fused
//! multiply-add; ggml-base is built without FMA contraction), and rounding uses ggml's own
//! tricks: `nearest_int` (round half to even through the mantissa of `x + 1.5 * 2^23`) for
//! the K types, truncation of `x + 0.5` for the legacy types.

use crate::blocks::*;
use crate::scalar::activations::quantize_q8_0;
use crate::scalar::dequant::k_scale_min;
use crate::{GgmlType, KernelError};
use half::{bf16, f16};
use rayon::prelude::*;

/// ggml's `GROUP_MAX_EPS`: a group whose largest magnitude is below this is all zeros.
const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `nearest_int`: adding 1.5 * 2^23 leaves round-half-to-even(x) in the low mantissa
/// bits. Exact for |x| < 2^22; beyond that it wraps as ggml's does (same bits, same bytes).
#[inline(always)]
fn nearest_int(fval: f32) -> i32 {
    let val = fval + 12_582_912.0;
    (val.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// Legacy types: the largest-magnitude value (first one on ties) with its sign.
#[inline(always)]
fn signed_absmax(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

#[inline(always)]
fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// Q4_0: d = max / -8 (max = the signed value of largest magnitude, which lands on q = 0),
/// q = min(15, trunc(x / d + 8.5)). x.len() == 32 * y.len().
pub fn quantize_q4_0(x: &[f32], y: &mut [BlockQ4_0]) {
    debug_assert_eq!(x.len(), 32 * y.len());
    for (x, b) in x.chunks_exact(32).zip(y.iter_mut()) {
        let d = signed_absmax(x) / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16_bytes(d);
        for j in 0..16 {
            let q0 = ((x[j] * id + 8.5) as i8).min(15) as u8;
            let q1 = ((x[j + 16] * id + 8.5) as i8).min(15) as u8;
            b.qs[j] = q0 | (q1 << 4);
        }
    }
}

/// Q4_1: d = (max - min) / 15, m = min, q = min(15, trunc((x - min) / d + 0.5)).
pub fn quantize_q4_1(x: &[f32], y: &mut [BlockQ4_1]) {
    debug_assert_eq!(x.len(), 32 * y.len());
    for (x, b) in x.chunks_exact(32).zip(y.iter_mut()) {
        let (min, max) = min_max(x);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16_bytes(d);
        b.m = f16_bytes(min);
        for j in 0..16 {
            let q0 = (((x[j] - min) * id + 0.5) as i8).min(15) as u8;
            let q1 = (((x[j + 16] - min) * id + 0.5) as i8).min(15) as u8;
            b.qs[j] = q0 | (q1 << 4);
        }
    }
}

/// Q5_0: as Q4_0 with d = max / -16 and 5-bit q; bit 4 of q[j] goes to bit j of qh.
pub fn quantize_q5_0(x: &[f32], y: &mut [BlockQ5_0]) {
    debug_assert_eq!(x.len(), 32 * y.len());
    for (x, b) in x.chunks_exact(32).zip(y.iter_mut()) {
        let d = signed_absmax(x) / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16_bytes(d);
        let mut qh = 0u32;
        for j in 0..16 {
            let q0 = ((x[j] * id + 16.5) as i8).min(31) as u8;
            let q1 = ((x[j + 16] * id + 16.5) as i8).min(31) as u8;
            b.qs[j] = (q0 & 15) | ((q1 & 15) << 4);
            qh |= ((q0 as u32 & 0x10) >> 4) << j;
            qh |= ((q1 as u32 & 0x10) >> 4) << (j + 16);
        }
        b.qh = qh.to_le_bytes();
    }
}

/// Q5_1: as Q4_1 with d = (max - min) / 31 and 5-bit q (no clamp, as ggml).
pub fn quantize_q5_1(x: &[f32], y: &mut [BlockQ5_1]) {
    debug_assert_eq!(x.len(), 32 * y.len());
    for (x, b) in x.chunks_exact(32).zip(y.iter_mut()) {
        let (min, max) = min_max(x);
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16_bytes(d);
        b.m = f16_bytes(min);
        let mut qh = 0u32;
        for j in 0..16 {
            let q0 = ((x[j] - min) * id + 0.5) as u8;
            let q1 = ((x[j + 16] - min) * id + 0.5) as u8;
            b.qs[j] = (q0 & 15) | ((q1 & 15) << 4);
            qh |= ((q0 as u32 & 0x10) >> 4) << j;
            qh |= ((q1 as u32 & 0x10) >> 4) << (j + 16);
        }
        b.qh = qh.to_le_bytes();
    }
}

/// ggml's `make_qkx2_quants`: fit x ~ scale * L - the_min with L in 0..=nmax, minimising the
/// weighted error. Starts from the min/max grid, then tries nstep + 1 slightly different
/// grid sizes ((nmax + rmin + rdelta * is) / (max - min)), solving the 2x2 least-squares
/// system for (scale, min) on each and keeping the best. Returns (scale, the_min), the_min
/// >= 0 (the minimum is clamped at 0, so all-positive groups keep an offset of 0).
#[allow(clippy::too_many_arguments)]
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    l_aux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let n = x.len();
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out[..n].fill(0);
        return (0.0, -min);
    }
    let err = |d: f32| if use_mad { d.abs() } else { d * d };
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l_out[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        best_error += weights[i] * err(diff);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            l_aux[i] = l as u8;
            let (w, l) = (weights[i], l as f32);
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                let diff = this_scale * l_aux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * err(diff);
            }
            if cur_error < best_error {
                l_out[..n].copy_from_slice(&l_aux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// ggml's `make_qx_quants` with rmse_type 1 (weights x^2) and no importance weights: fit
/// x ~ scale * (L - nmax), L in 0..2 * nmax, trying 19 grid sizes around nmax / max and
/// keeping the one with the best weighted least-squares fit. Returns the scale.
fn make_qx_quants_rmse1(nmax: i32, x: &[f32], l_out: &mut [u8]) -> f32 {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out[..x.len()].fill(0);
        return 0.0;
    }
    // One pass at grid size `iscale`: the clamped integer levels l in -nmax..nmax and the
    // sums of w * x * l and w * l * l.
    let pass = |iscale: f32, mut store: Option<&mut [u8]>| {
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for (i, &v) in x.iter().enumerate() {
            let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
            if let Some(s) = store.as_deref_mut() {
                s[i] = (l + nmax) as u8;
            }
            let (w, l) = (v * v, l as f32);
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        (sumlx, suml2)
    };
    let (sumlx, suml2) = pass(-(nmax as f32) / max, Some(&mut *l_out));
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        let iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = pass(iscale, None);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            pass(iscale, Some(&mut *l_out));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Q4_K/Q5_K's 12 scale bytes from 8 (scale, min) pairs of 6 bits: pairs 0-3 in the low 6 bits
/// of bytes 0-3 (scales) and 4-7 (mins); pairs 4-7 as nibbles in bytes 8-11, their top two
/// bits in the top bits of bytes 0-7 (the inverse of `k_scale_min`).
fn pack_k_scales(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..4 {
        s[j] = ls[j] | ((ls[j + 4] >> 4) << 6);
        s[j + 4] = lm[j] | ((lm[j + 4] >> 4) << 6);
        s[j + 8] = (ls[j + 4] & 15) | ((lm[j + 4] & 15) << 4);
    }
    s
}

/// Q4_K and Q5_K share everything but the level count and the search range: per group of
/// 32, weights av_x + |x| (av_x the group's RMS) feed `make_qkx2_quants`; the 8 scales and
/// mins are quantized to 6 bits against d = max_scale / 63 and dmin = max_min / 63; then
/// every value is requantized against its group's rounded scale and min. Returns
/// (d, dmin, packed scales, levels).
fn quantize_k_super(x: &[f32], nmax: i32, rmin: f32, nstep: i32) -> ([u8; 2], [u8; 2], [u8; 12], [u8; QK_K]) {
    let mut levels = [0u8; QK_K];
    let mut l_aux = [0u8; 32];
    let mut weights = [0f32; 32];
    let (mut scales, mut mins) = ([0f32; 8], [0f32; 8]);
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (scale, min) = make_qkx2_quants(
            nmax,
            xs,
            &weights,
            &mut levels[32 * j..32 * j + 32],
            &mut l_aux,
            rmin,
            0.1,
            nstep,
            false,
        );
        scales[j] = scale;
        mins[j] = min;
        if scale > max_scale {
            max_scale = scale;
        }
        if min > max_min {
            max_min = min;
        }
    }
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    for j in 0..8 {
        // ggml stores nearest_int into a uint8_t before clamping: keep the same truncation.
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    let packed = pack_k_scales(&ls, &lm);
    let (d, dmin) = (f16_bytes(max_scale / 63.0), f16_bytes(max_min / 63.0));
    for j in 0..8 {
        let (sc, m) = k_scale_min(j, &packed);
        let dl = f16_le(d) * sc as f32;
        if dl == 0.0 {
            continue;
        }
        let dm = f16_le(dmin) * m as f32;
        for i in 32 * j..32 * j + 32 {
            levels[i] = nearest_int((x[i] + dm) / dl).clamp(0, nmax) as u8;
        }
    }
    (d, dmin, packed, levels)
}

/// Q4_K: 8 groups of 32, x ~ d * sc * q - dmin * m with 6-bit sc, m and 4-bit q.
/// x.len() == 256 * y.len().
pub fn quantize_q4_k(x: &[f32], y: &mut [BlockQ4K]) {
    debug_assert_eq!(x.len(), QK_K * y.len());
    for (x, b) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
        let (d, dmin, scales, l) = quantize_k_super(x, 15, -1.0, 20);
        b.d = d;
        b.dmin = dmin;
        b.scales = scales;
        // Each 32 bytes hold two groups: group 2k in the low nibbles, 2k+1 in the high.
        for k in 0..4 {
            for i in 0..32 {
                b.qs[32 * k + i] = l[64 * k + i] | (l[64 * k + 32 + i] << 4);
            }
        }
    }
}

/// Q5_K: as Q4_K with 5-bit q; the fifth bit of group g sits in bit g of qh[i].
pub fn quantize_q5_k(x: &[f32], y: &mut [BlockQ5K]) {
    debug_assert_eq!(x.len(), QK_K * y.len());
    for (x, b) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
        let (d, dmin, scales, l) = quantize_k_super(x, 31, -0.5, 15);
        b.d = d;
        b.dmin = dmin;
        b.scales = scales;
        b.qh = [0; 32];
        for k in 0..4 {
            for i in 0..32 {
                let (lo, hi) = (l[64 * k + i], l[64 * k + 32 + i]);
                b.qs[32 * k + i] = (lo & 15) | ((hi & 15) << 4);
                b.qh[i] |= ((lo >> 4) << (2 * k)) | ((hi >> 4) << (2 * k + 1));
            }
        }
    }
}

/// Q6_K: 16 groups of 16, x ~ d * sc * (q - 32) with 8-bit signed sc and 6-bit q. Each
/// group's scale comes from `make_qx_quants` (rmse_type 1); the scale of largest magnitude
/// maps to -128 (d = its value / -128), the others round against d, clamped at 127.
pub fn quantize_q6_k(x: &[f32], y: &mut [BlockQ6K]) {
    debug_assert_eq!(x.len(), QK_K * y.len());
    for (x, b) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
        let mut l = [0u8; QK_K];
        let mut scales = [0f32; 16];
        let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
        for g in 0..16 {
            let scale = make_qx_quants_rmse1(32, &x[16 * g..16 * g + 16], &mut l[16 * g..16 * g + 16]);
            scales[g] = scale;
            if scale.abs() > max_abs_scale {
                max_abs_scale = scale.abs();
                max_scale = scale;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            *b = BlockQ6K::default();
            continue;
        }
        let iscale = -128.0 / max_scale;
        b.d = f16_bytes(1.0 / iscale);
        for (q, &s) in b.scales.iter_mut().zip(&scales) {
            // In -128..=127 (|s| <= |max_scale|); `as i8` truncates as ggml's int8_t store.
            *q = nearest_int(iscale * s).min(127) as i8;
        }
        for g in 0..16 {
            let d = f16_le(b.d) * b.scales[g] as f32;
            if d == 0.0 {
                continue;
            }
            for i in 16 * g..16 * g + 16 {
                l[i] = (nearest_int(x[i] / d).clamp(-32, 31) + 32) as u8;
            }
        }
        // Per 128-half h: ql[64h + i] holds q[128h + i] (low nibble) and q[128h + 64 + i]
        // (high), ql[64h + 32 + i] likewise for +32 and +96; qh[32h + i] the top two bits of
        // the four quarters, quarter k at bits 2k.
        for h in 0..2 {
            let (l, ql, qh) =
                (&l[128 * h..128 * h + 128], &mut b.ql[64 * h..64 * h + 64], &mut b.qh[32 * h..]);
            for i in 0..32 {
                let (q1, q2, q3, q4) = (l[i], l[i + 32], l[i + 64], l[i + 96]);
                ql[i] = (q1 & 15) | ((q3 & 15) << 4);
                ql[i + 32] = (q2 & 15) | ((q4 & 15) << 4);
                qh[i] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
            }
        }
    }
}

/// Blocks quantized per task by `quantize`: large enough to amortise the hand-off, small
/// enough for a stack buffer.
const CHUNK_BLOCKS: usize = 64;

/// Quantize whole blocks into `out` through a stack buffer, `CHUNK_BLOCKS` at a time, in
/// parallel (every block is independent, so the bytes do not depend on the thread count).
fn run<B: Block + Default + Send>(x: &[f32], out: &mut [u8], f: fn(&[f32], &mut [B])) {
    x.par_chunks(CHUNK_BLOCKS * B::ELEMS).zip(out.par_chunks_mut(CHUNK_BLOCKS * B::BYTES)).for_each(
        |(x, out)| {
            let mut buf = [B::default(); CHUNK_BLOCKS];
            let n = x.len() / B::ELEMS;
            f(x, &mut buf[..n]);
            out.copy_from_slice(as_bytes(&buf[..n]));
        },
    );
}

/// Whether `quantize` handles this type.
pub fn can_quantize(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q4_K | Q5_K | Q6_K)
}

/// Quantize `x` into `out` as `ty` (whole blocks: `x.len()` a multiple of the block size,
/// `out.len()` the bytes they take), with llama.cpp's reference quantizers: the bytes are
/// those `llama-quantize` writes without an importance matrix. F16 and BF16 round to
/// nearest even, as ggml's conversions do.
pub fn quantize(ty: GgmlType, x: &[f32], out: &mut [u8]) -> Result<(), KernelError> {
    use GgmlType::*;
    if !can_quantize(ty) {
        return Err(KernelError::Unsupported { ty, what: "quantization" });
    }
    if ty.row_bytes(x.len()) != Some(out.len()) {
        return Err(KernelError::BadLength { ty, bytes: out.len(), elems: x.len() });
    }
    match ty {
        F32 => {
            for (o, v) in out.chunks_exact_mut(4).zip(x) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        F16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(x) {
                o.copy_from_slice(&f16::from_f32(*v).to_le_bytes());
            }
        }
        BF16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(x) {
                o.copy_from_slice(&bf16::from_f32(*v).to_le_bytes());
            }
        }
        Q4_0 => run(x, out, quantize_q4_0),
        Q4_1 => run(x, out, quantize_q4_1),
        Q5_0 => run(x, out, quantize_q5_0),
        Q5_1 => run(x, out, quantize_q5_1),
        Q8_0 => run(x, out, quantize_q8_0),
        Q4_K => run(x, out, quantize_q4_k),
        Q5_K => run(x, out, quantize_q5_k),
        Q6_K => run(x, out, quantize_q6_k),
        _ => unreachable!("checked by can_quantize"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        for (x, want) in [(0.5, 0), (1.5, 2), (2.5, 2), (-0.5, 0), (-1.5, -2), (3.49, 3), (-7.51, -8)] {
            assert_eq!(nearest_int(x), want, "{x}");
        }
    }

    #[test]
    fn k_scales_pack_is_the_inverse_of_k_scale_min() {
        let ls = [0, 1, 17, 63, 5, 32, 48, 63];
        let lm = [63, 0, 31, 16, 62, 15, 1, 33];
        let p = pack_k_scales(&ls, &lm);
        for j in 0..8 {
            assert_eq!(k_scale_min(j, &p), (ls[j], lm[j]), "pair {j}");
        }
    }

    /// Garbage in (NaN, infinities, f32::MAX) gives garbage blocks, never a panic.
    #[test]
    fn non_finite_input_does_not_panic() {
        let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MAX, -f32::MAX, 1e-45, 0.0];
        let x: Vec<f32> =
            (0..512).map(|i| specials[i % specials.len()] * if i % 3 == 0 { 1.0 } else { -1.0 }).collect();
        for ty in GgmlType::all().filter(|&t| can_quantize(t)) {
            let mut out = vec![0u8; ty.row_bytes(x.len()).unwrap()];
            quantize(ty, &x, &mut out).unwrap();
        }
    }

    #[test]
    fn quantize_checks_lengths_and_types() {
        let x = [0f32; 256];
        let mut out = vec![0u8; 144];
        assert!(quantize(GgmlType::Q4_K, &x, &mut out).is_ok());
        assert_eq!(
            quantize(GgmlType::Q4_K, &x[..255], &mut out),
            Err(KernelError::BadLength { ty: GgmlType::Q4_K, bytes: 144, elems: 255 })
        );
        assert_eq!(
            quantize(GgmlType::Q8_0, &x, &mut out),
            Err(KernelError::BadLength { ty: GgmlType::Q8_0, bytes: 144, elems: 256 })
        );
        assert!(matches!(quantize(GgmlType::Q2_K, &x, &mut out), Err(KernelError::Unsupported { .. })));
    }
}
