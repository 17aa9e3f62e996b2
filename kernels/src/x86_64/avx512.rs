//! AVX-512 (F, BW, VL) with VNNI: `vpdpbusd` on 256-bit registers (EVEX encoding).

use crate::blocks::{BlockQ4_0x8, BlockQ8_0S};
use std::arch::x86_64::*;

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn mul_sum(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(acc, u, s)
}

/// `mul_sum` is one `vpdpbusd`: the interleaved K kernels sum each group in i32.
const VNNI: bool = true;

crate::x86_legacy_kernels!("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni");
crate::x86_k_kernels!("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni");
crate::x86_k_more_kernels!("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni");
crate::x86_repacked_kernels!("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni");

/// Eight u8 x i8 products of 4 summed per i32 lane (see avx2::dot_u4x8).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dot_u4x8(q: &[__m256i; 8], y: &[__m256i; 8]) -> __m256i {
    let mut s = _mm256_setzero_si256();
    for k in 0..8 {
        s = _mm256_dpbusd_epi32(s, q[k], y[k]);
    }
    s
}

/// Two Q4_0x8 groups (16 rows) against 4 activation rows in 512-bit registers: lanes 0-7
/// are group `xa`'s rows, lanes 8-15 group `xb`'s; one `vpdpbusd` then does 16 rows, so a
/// broadcast activation word and the per-column bookkeeping serve twice the rows of the
/// 256-bit tile (same sums as `q4_0x8_tile!`, lane for lane).
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL and VNNI (reached only through dispatch).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn vec_dot_q4_0x16x4_q8_0(
    xa: &[BlockQ4_0x8],
    xb: &[BlockQ4_0x8],
    y: [&[BlockQ8_0S]; 4],
) -> [[f32; 16]; 4] {
    let n = xa.len();
    if xb.len() != n || y.iter().any(|c| c.len() != n) {
        return [[f32::NAN; 16]; 4];
    }
    let m4 = _mm512_set1_epi8(15);
    let mut acc = [_mm512_setzero_ps(); 4];
    for j in 0..n {
        for x in [xa, xb] {
            let ahead = x.as_ptr().wrapping_add(j + 8) as *const i8;
            for line in 0..3 {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * line));
            }
        }
        // SAFETY: j < n, the length of xa, xb and (checked above) every y row.
        let (a, b) = unsafe { (xa.get_unchecked(j), xb.get_unchecked(j)) };
        let da = _mm_loadu_si128(a.d.as_ptr() as *const __m128i);
        let db = _mm_loadu_si128(b.d.as_ptr() as *const __m128i);
        let d = _mm512_cvtph_ps(_mm256_set_m128i(db, da));
        let mut q = [_mm512_setzero_si512(); 8];
        for c in 0..4 {
            let va = _mm256_loadu_si256(a.qs.as_ptr().add(32 * c) as *const __m256i);
            let vb = _mm256_loadu_si256(b.qs.as_ptr().add(32 * c) as *const __m256i);
            let v = _mm512_inserti64x4(_mm512_castsi256_si512(va), vb, 1);
            q[c] = _mm512_and_si512(v, m4);
            q[4 + c] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
        }
        for col in 0..4 {
            // SAFETY: as above.
            let act = unsafe { y[col].get_unchecked(j) };
            let p = act.qs.as_ptr() as *const i32;
            let mut s = _mm512_setzero_si512();
            for k in 0..8 {
                s = _mm512_dpbusd_epi32(s, q[k], _mm512_set1_epi32(p.add(k).read_unaligned()));
            }
            let s = _mm512_sub_epi32(s, _mm512_set1_epi32(8 * act.sum));
            acc[col] =
                _mm512_fmadd_ps(_mm512_mul_ps(d, _mm512_set1_ps(act.d)), _mm512_cvtepi32_ps(s), acc[col]);
        }
    }
    let mut out = [[0f32; 16]; 4];
    for col in 0..4 {
        _mm512_storeu_ps(out[col].as_mut_ptr(), acc[col]);
    }
    out
}
