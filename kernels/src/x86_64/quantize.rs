//! AVX2 (+F16C) activation quantizers, bit for bit the scalar ones of `scalar::activations` (the
//! same f32 products, round half to even, the same scalar scale arithmetic and f16
//! conversions). A block the fast path cannot take exactly (a NaN or infinite value, or a
//! scale that overflows) goes through the scalar code. Prefill quantizes every matrix
//! input, and at ~2 ns a value the scalar code was a tenth of SmolLM2's prompt time.

use crate::blocks::*;
use crate::scalar::activations as scalar;
use std::arch::x86_64::*;

/// Whether the CPU runs this file's code (cached by std after the first call).
pub fn available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("f16c")
}

// The f16 round trip by inline F16C: `half`'s call (its F16C function compiled for other
// target features) cost as much as the rest of a block's quantization.
use super::f32_to_f16 as to_f16;

/// 8 lanes of |x|, the largest kept in `m`; `nan` collects unordered lanes. `max_ps(v, m)`
/// returns `m` for a NaN `v`, as the scalar fold's `f32::max` ignores it.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn abs_max(v: __m256, m: __m256, nan: __m256) -> (__m256, __m256) {
    let a = _mm256_andnot_ps(_mm256_set1_ps(-0.0), v);
    (_mm256_max_ps(a, m), _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q)))
}

#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn hmax(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)))
}

/// 32 values times `id`, rounded half to even, as i8 (|x * id| <= 127 by the callers'
/// checks, so nothing saturates), and their sum.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn round32(x: *const f32, id: f32, out: *mut i8) -> i32 {
    let idv = _mm256_set1_ps(id);
    let r = |k: usize| {
        let p = _mm256_mul_ps(_mm256_loadu_ps(x.add(8 * k)), idv);
        _mm256_cvtps_epi32(_mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(p))
    };
    let (a, b, c, d) = (r(0), r(1), r(2), r(3));
    // packs work within 128-bit lanes: the permute puts the 32 bytes back in order.
    let ab = _mm256_packs_epi32(a, b);
    let cd = _mm256_packs_epi32(c, d);
    let q =
        _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(out as *mut __m256i, q);
    let s = _mm256_madd_epi16(_mm256_add_epi16(ab, cd), _mm256_set1_epi16(1));
    let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01)))
}

/// The scales of eight consecutive blocks of 32 values, worked out together: lane k is
/// block k. One block at a time, its horizontal maximum, two divisions and the f16 round
/// trip made a chain that each block waited on (1.5 cycles a value).
struct Scales8 {
    /// amax / 127, its f16 bits, and that f16's value.
    d: [f32; 8],
    dh: [[u8; 2]; 8],
    dq: [f32; 8],
    /// 127 / amax.
    id: [f32; 8],
    /// Bit k: block k takes the fast path (no NaN or infinite value, amax > 0, 127 / amax
    /// finite); the others go through the scalar code.
    ok: u32,
}

/// `Scales8` of the 256 values at `x`.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn scales8(x: *const f32) -> Scales8 {
    let mut m = [_mm256_setzero_ps(); 8];
    let mut nan_bits = 0u32;
    for (k, mk) in m.iter_mut().enumerate() {
        let mut nan = _mm256_setzero_ps();
        for j in 0..4 {
            (*mk, nan) = abs_max(_mm256_loadu_ps(x.add(32 * k + 8 * j)), *mk, nan);
        }
        nan_bits |= ((_mm256_movemask_ps(nan) != 0) as u32) << k;
    }
    // Eight horizontal maxima into the lanes of one register (max is exact in any order).
    let pair = |a: __m256, b: __m256| _mm256_max_ps(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
    let (a01, a23, a45, a67) = (pair(m[0], m[1]), pair(m[2], m[3]), pair(m[4], m[5]), pair(m[6], m[7]));
    let quad = |a: __m256, b: __m256| {
        _mm256_max_ps(_mm256_shuffle_ps::<0b01_00_01_00>(a, b), _mm256_shuffle_ps::<0b11_10_11_10>(a, b))
    };
    let (b0, b1) = (quad(a01, a23), quad(a45, a67));
    let amax = _mm256_max_ps(_mm256_permute2f128_ps::<0x20>(b0, b1), _mm256_permute2f128_ps::<0x31>(b0, b1));
    let d = _mm256_div_ps(amax, _mm256_set1_ps(127.0));
    let id = _mm256_div_ps(_mm256_set1_ps(127.0), amax);
    let dh = _mm256_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT }>(d);
    let inf = _mm256_set1_ps(f32::INFINITY);
    let good = _mm256_and_ps(
        _mm256_and_ps(_mm256_cmp_ps::<_CMP_LT_OQ>(amax, inf), _mm256_cmp_ps::<_CMP_LT_OQ>(id, inf)),
        _mm256_cmp_ps::<_CMP_GT_OQ>(amax, _mm256_setzero_ps()),
    );
    let mut s = Scales8 {
        d: [0.0; 8],
        dh: [[0; 2]; 8],
        dq: [0.0; 8],
        id: [0.0; 8],
        ok: _mm256_movemask_ps(good) as u32 & !nan_bits,
    };
    _mm256_storeu_ps(s.d.as_mut_ptr(), d);
    _mm256_storeu_ps(s.id.as_mut_ptr(), id);
    _mm256_storeu_ps(s.dq.as_mut_ptr(), _mm256_cvtph_ps(dh));
    _mm_storeu_si128(s.dh.as_mut_ptr() as *mut __m128i, dh);
    s
}

/// Runs `fast(block, x, k, scales)` over the blocks eight at a time where `Scales8` allows
/// (`slow(block, x)`, the scalar code, for the rest and for a last group of fewer than 8).
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn by_eights<B>(
    x: &[f32],
    y: &mut [B],
    mut fast: impl FnMut(&mut B, &[f32], usize, &Scales8),
    slow: fn(&[f32], &mut [B]),
) {
    let nb = (x.len() / 32).min(y.len());
    let mut b = 0;
    while b + 8 <= nb {
        let s = scales8(x.as_ptr().add(32 * b));
        for k in 0..8 {
            let xs = &x[32 * (b + k)..32 * (b + k + 1)];
            if s.ok & (1 << k) != 0 {
                fast(&mut y[b + k], xs, k, &s);
            } else {
                slow(xs, std::slice::from_mut(&mut y[b + k]));
            }
        }
        b += 8;
    }
    slow(&x[32 * b..32 * nb], &mut y[b..nb]);
}

/// `scalar::quantize_q8_0s_act`.
///
/// # Safety
/// The CPU must have AVX2 and F16C (`available`).
#[target_feature(enable = "avx2,f16c")]
pub unsafe fn quantize_q8_0s_act(x: &[f32], y: &mut [BlockQ8_0S]) {
    by_eights(
        x,
        y,
        |b, x, k, s| {
            b.d = s.dq[k];
            b.sum = round32(x.as_ptr(), s.id[k], b.qs.as_mut_ptr());
        },
        scalar::quantize_q8_0s_act,
    );
}

/// `scalar::quantize_q8_0_act`.
///
/// # Safety
/// The CPU must have AVX2 and F16C (`available`).
#[target_feature(enable = "avx2,f16c")]
pub unsafe fn quantize_q8_0_act(x: &[f32], y: &mut [BlockQ8_0]) {
    by_eights(
        x,
        y,
        |b, x, k, s| {
            b.d = s.dh[k];
            round32(x.as_ptr(), s.id[k], b.qs.as_mut_ptr());
        },
        scalar::quantize_q8_0_act,
    );
}

/// `scalar::quantize_q8_1_act`.
///
/// # Safety
/// The CPU must have AVX2 and F16C (`available`).
#[target_feature(enable = "avx2,f16c")]
pub unsafe fn quantize_q8_1_act(x: &[f32], y: &mut [BlockQ8_1]) {
    by_eights(
        x,
        y,
        |b, x, k, s| {
            b.d = s.dh[k];
            let sum = round32(x.as_ptr(), s.id[k], b.qs.as_mut_ptr());
            b.s = to_f16(s.d[k] * sum as f32);
        },
        scalar::quantize_q8_1_act,
    );
}

/// `scalar::quantize_q8_k`: the scale maps the first value of largest magnitude to -127.
///
/// # Safety
/// The CPU must have AVX2 and F16C (`available`).
#[target_feature(enable = "avx2,f16c")]
pub unsafe fn quantize_q8_k(x: &[f32], y: &mut [BlockQ8K]) {
    for (x, b) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
        let p = x.as_ptr();
        let (mut m, mut nan) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for k in 0..QK_K / 8 {
            (m, nan) = abs_max(_mm256_loadu_ps(p.add(8 * k)), m, nan);
        }
        let amax = hmax(m);
        if _mm256_movemask_ps(nan) != 0 || !amax.is_finite() || amax == 0.0 {
            scalar::quantize_q8_k(x, std::slice::from_mut(b));
            continue;
        }
        // The first value whose magnitude is amax (the scalar scan keeps the first).
        let av = _mm256_set1_ps(amax);
        let mut max = amax;
        for k in 0..QK_K / 8 {
            let a = _mm256_andnot_ps(_mm256_set1_ps(-0.0), _mm256_loadu_ps(p.add(8 * k)));
            let hit = _mm256_movemask_ps(_mm256_cmp_ps(a, av, _CMP_EQ_OQ));
            if hit != 0 {
                max = x[8 * k + hit.trailing_zeros() as usize];
                break;
            }
        }
        let iscale = -127.0 / max;
        if !iscale.is_finite() {
            scalar::quantize_q8_k(x, std::slice::from_mut(b));
            continue;
        }
        // |iscale * v| <= 127 up to an ulp: rounding gives -127..=127, as the scalar
        // code's clamp at 127 leaves it.
        for g in 0..QK_K / 32 {
            round32(p.add(32 * g), iscale, b.qs.as_mut_ptr().add(32 * g));
        }
        for (j, s) in b.bsums.iter_mut().enumerate() {
            let q = _mm_loadu_si128(b.qs.as_ptr().add(16 * j) as *const __m128i);
            let w = _mm256_madd_epi16(_mm256_cvtepi8_epi16(q), _mm256_set1_epi16(1));
            let w = _mm_add_epi32(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
            let w = _mm_add_epi32(w, _mm_shuffle_epi32(w, 0b01_00_11_10));
            *s = _mm_cvtsi128_si32(_mm_add_epi32(w, _mm_shuffle_epi32(w, 0b10_11_00_01))) as i16;
        }
        b.d = 1.0 / iscale;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks of every kind the fast path meets or hands back: random, zero, ties of
    /// magnitude with both signs, exact .5 products, tiny, huge, NaN, infinite.
    fn inputs() -> Vec<f32> {
        let mut s = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        let mut x = Vec::new();
        for kind in 0..15 {
            let mut b: Vec<f32> = (0..QK_K).map(|_| next() * 3.0).collect();
            match kind {
                1 => b.iter_mut().for_each(|v| *v = 0.0),
                2 => (b[17], b[200]) = (-5.0, 5.0),
                3 => (b[3], b[9]) = (5.0, -5.0),
                13 => (b[66], b[69]) = (-5.0, 5.0),
                4 => b.iter_mut().enumerate().for_each(|(i, v)| *v = (i % 64) as f32 - 31.5),
                5 => b.iter_mut().for_each(|v| *v *= 1e-38),
                6 => b.iter_mut().for_each(|v| *v *= 1e-44),
                7 => b.iter_mut().for_each(|v| *v *= 3e38),
                8 => b[100] = f32::NAN,
                9 => b[31] = f32::INFINITY,
                10 => b[40] = f32::NEG_INFINITY,
                11 => b[0..32].iter_mut().for_each(|v| *v = 0.0),
                12 => b.iter_mut().enumerate().for_each(|(i, v)| *v = ((i * 37) % 255) as f32 - 127.0),
                _ => {}
            }
            x.extend(b);
        }
        x
    }

    #[test]
    fn avx2_quantizers_match_scalar_bit_for_bit() {
        if !available() {
            eprintln!("no AVX2 here: skipped");
            return;
        }
        let all = inputs();
        // Whole groups of eight blocks, and a last group of five (the per-block code).
        for x in [&all[..], &all[..all.len() - 3 * 32]] {
            check_32_value_quantizers(x);
        }
        let (x, n) = (&all[..], all.len());
        let (mut a, mut b) = (vec![BlockQ8K::default(); n / QK_K], vec![BlockQ8K::default(); n / QK_K]);
        scalar::quantize_q8_k(x, &mut a);
        // SAFETY: AVX2 checked above.
        unsafe { quantize_q8_k(x, &mut b) };
        for (i, (a, b)) in a.iter().zip(&b).enumerate() {
            assert!(
                a.qs == b.qs && a.bsums == b.bsums && a.d.to_bits() == b.d.to_bits(),
                "q8_k block {i}: {:?} vs {:?}",
                &a.qs[..8],
                &b.qs[..8]
            );
        }
    }

    fn check_32_value_quantizers(x: &[f32]) {
        let n = x.len();
        let (mut a, mut b) = (vec![BlockQ8_0S::default(); n / 32], vec![BlockQ8_0S::default(); n / 32]);
        scalar::quantize_q8_0s_act(x, &mut a);
        // SAFETY: the caller checked that the CPU has AVX2 and F16C (`available`).
        unsafe { quantize_q8_0s_act(x, &mut b) };
        for (i, (a, b)) in a.iter().zip(&b).enumerate() {
            assert!(a.qs == b.qs && a.sum == b.sum && a.d.to_bits() == b.d.to_bits(), "q8_0s block {i}");
        }
        let (mut a, mut b) = (vec![BlockQ8_0::default(); n / 32], vec![BlockQ8_0::default(); n / 32]);
        scalar::quantize_q8_0_act(x, &mut a);
        // SAFETY: as above.
        unsafe { quantize_q8_0_act(x, &mut b) };
        for (i, (a, b)) in a.iter().zip(&b).enumerate() {
            assert!(a.qs == b.qs && a.d == b.d, "q8_0 block {i}");
        }
        let (mut a, mut b) = (vec![BlockQ8_1::default(); n / 32], vec![BlockQ8_1::default(); n / 32]);
        scalar::quantize_q8_1_act(x, &mut a);
        // SAFETY: as above.
        unsafe { quantize_q8_1_act(x, &mut b) };
        for (i, (a, b)) in a.iter().zip(&b).enumerate() {
            assert!(a.qs == b.qs && a.d == b.d && a.s == b.s, "q8_1 block {i}");
        }
    }
}
