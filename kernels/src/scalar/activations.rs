//! Reference quantizers for activations (and Q8_0 weights): Q8_0, Q8_1, Q8_K, following
//! ggml's `quantize_row_q8_{0,1,K}_ref` exactly (same rounding, same f16 conversions).

use crate::blocks::*;

/// x.len() == 32 * y.len().
pub fn quantize_q8_0(x: &[f32], y: &mut [BlockQ8_0]) {
    for (x, b) in x.chunks_exact(32).zip(y.iter_mut()) {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16_bytes(d);
        for (q, v) in b.qs.iter_mut().zip(x) {
            *q = (v * id).round() as i8;
        }
    }
}

/// As Q8_0, plus s = d * sum(q) for the offset term of Q4_1/Q5_1 dot products.
pub fn quantize_q8_1(x: &[f32], y: &mut [BlockQ8_1]) {
    for (x, b) in x.chunks_exact(32).zip(y.iter_mut()) {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16_bytes(d);
        let mut sum = 0i32;
        for (q, v) in b.qs.iter_mut().zip(x) {
            *q = (v * id).round() as i8;
            sum += *q as i32;
        }
        b.s = f16_bytes(sum as f32 * d);
    }
}

/// 256 values per block; the scale maps the value of largest magnitude to -127 (sign kept),
/// rounding half to even as ggml's `nearest_int`.
pub fn quantize_q8_k(x: &[f32], y: &mut [BlockQ8K]) {
    for (x, b) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in x {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            *b = BlockQ8K::default();
            continue;
        }
        let iscale = -127.0 / max;
        for (q, v) in b.qs.iter_mut().zip(x) {
            *q = (rint(iscale * v) as i32).min(127) as i8;
        }
        for (j, s) in b.bsums.iter_mut().enumerate() {
            *s = b.qs[j * 16..j * 16 + 16].iter().map(|&q| q as i16).sum();
        }
        b.d = 1.0 / iscale;
    }
}

/// Round half to even without a libm call (`f32::round_ties_even` becomes `rintf` on the
/// x86_64 baseline): adding and removing 1.5 * 2^23 leaves the nearest integer under the
/// default rounding mode. Valid for |x| < 2^22, far beyond the +-127.5 used here.
#[inline(always)]
fn rint(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (x + MAGIC) - MAGIC
}

/// Activations at run time: as llama.cpp's x86 `quantize_row_q8_0` (not its reference):
/// the multiplier is 127 / amax and values round half to even. Both differ from the
/// reference by an ulp or a tie now and then; matching them keeps our logits on llama.cpp's.
pub fn quantize_q8_0_act(x: &[f32], y: &mut [BlockQ8_0]) {
    for (x, b) in x.chunks_exact(32).zip(y.iter_mut()) {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        b.d = f16_bytes(d);
        for (q, v) in b.qs.iter_mut().zip(x) {
            *q = rint(v * id) as i8;
        }
    }
}

/// As `quantize_q8_0_act` (the same q and the f16 scale's value), plus the sum of q.
pub fn quantize_q8_0s_act(x: &[f32], y: &mut [BlockQ8_0S]) {
    for (x, b) in x.chunks_exact(32).zip(y.iter_mut()) {
        let mut q = [BlockQ8_0::default()];
        quantize_q8_0_act(x, &mut q);
        b.d = crate::blocks::f16_le(q[0].d);
        b.qs = q[0].qs;
        b.sum = q[0].qs.iter().map(|&v| v as i32).sum();
    }
}

/// As `quantize_q8_0_act`, plus s = d * sum(q).
pub fn quantize_q8_1_act(x: &[f32], y: &mut [BlockQ8_1]) {
    for (x, b) in x.chunks_exact(32).zip(y.iter_mut()) {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        b.d = f16_bytes(d);
        let mut sum = 0i32;
        for (q, v) in b.qs.iter_mut().zip(x) {
            *q = rint(v * id) as i8;
            sum += *q as i32;
        }
        b.s = f16_bytes(d * sum as f32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Q8_0S is Q8_0 (same q, the f16 scale's value) with the exact sum of q.
    #[test]
    fn q8_0s_is_q8_0_with_its_sum() {
        let x: Vec<f32> = (0..32 * 9).map(|i| ((i * 7919) % 613) as f32 / 40.0 - 7.0).collect();
        let mut x = x;
        x[32..64].iter_mut().for_each(|v| *v = 0.0);
        let (mut a, mut b) = (vec![BlockQ8_0::default(); 9], vec![BlockQ8_0S::default(); 9]);
        quantize_q8_0_act(&x, &mut a);
        quantize_q8_0s_act(&x, &mut b);
        for (a, b) in a.iter().zip(&b) {
            assert_eq!(a.qs, b.qs);
            assert_eq!(f16_le(a.d).to_bits(), b.d.to_bits());
            assert_eq!(b.sum, a.qs.iter().map(|&q| q as i32).sum::<i32>());
        }
        assert_eq!(b[1].sum, 0);
    }
}
