//! AVX-512 (F, BW, VL) with VNNI: `vpdpbusd` on 256-bit registers (EVEX encoding).

use crate::blocks::{
    BlockIQ4XSx8, BlockQ2Kx8, BlockQ3Kx8, BlockQ4K, BlockQ4Kx8, BlockQ4_0x8, BlockQ5Kx8, BlockQ5_0x8,
    BlockQ5_1x8, BlockQ6Kx8, BlockQ8K, BlockQ8_0, BlockQ8_0S, BlockQ8_0x8,
};
use crate::matmul::L2Shares;
use std::arch::x86_64::*;

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn mul_sum(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(acc, u, s)
}

/// acc + the i16 pairs of `a` times those of `b` per i32 lane: `dpwssd` on 256 bits.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn mul_sum16(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
    dpwssd256(acc, a, b)
}

/// `mul_sum` is one `vpdpbusd`: the interleaved K kernels sum each group in i32.
const VNNI: bool = true;

crate::x86_legacy_kernels!("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni");
crate::x86_k_kernels!("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni");
crate::x86_k_more_kernels!("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni");
crate::x86_repacked_kernels!("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni");

/// 32 bytes at `a` (lanes 0-7: group a's rows) and 32 at `b` (lanes 8-15) in one register.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn join32(a: *const u8, b: *const u8) -> __m512i {
    let va = _mm256_loadu_si256(a as *const __m256i);
    let vb = _mm256_loadu_si256(b as *const __m256i);
    _mm512_inserti64x4(_mm512_castsi256_si512(va), vb, 1)
}

/// Asks for `lines` cache lines of both groups' block `j + ahead` (a prefetch never faults).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn prefetch_pair<T>(xa: &[T], xb: &[T], at: usize, lines: usize) {
    for x in [xa, xb] {
        let p = x.as_ptr().wrapping_add(at) as *const i8;
        for line in 0..lines {
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64 * line));
        }
    }
}

/// Asks for lines `from..from + count` of both groups' block `at`, clipped to the block's
/// size: the K-type unpackers spread the next block's lines over their loop, since asking
/// for all of them at once stalls the loads of the current one.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn prefetch_lines<T>(xa: &[T], xb: &[T], at: usize, from: usize, count: usize) {
    let lines = std::mem::size_of::<T>().div_ceil(64);
    for x in [xa, xb] {
        let p = x.as_ptr().wrapping_add(at) as *const i8;
        for line in from..(from + count).min(lines) {
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64 * line));
        }
    }
}

/// The mins' term of K-type sums: acc -= dmin * dy * summ, per column (dy its activation
/// scale).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn sub_mins16<const C: usize>(acc: &mut [__m512; C], dmin: __m512, dy: [f32; C], summ: &[__m512i; C]) {
    for col in 0..C {
        let v = _mm512_mul_ps(dmin, _mm512_set1_ps(dy[col]));
        acc[col] = _mm512_fnmadd_ps(v, _mm512_cvtepi32_ps(summ[col]), acc[col]);
    }
}

/// `acc + vpmaddwd(a, b)` as the one instruction `vpdpwssd`: LLVM turns the intrinsic
/// `_mm512_dpwssd_epi32` into `vpmaddwd` and `vpaddd`, two instructions for one, in the
/// K-type panels' mins and offsets (4-8 per column and block). 1B Q4_K_M pp256, one thread
/// on a Zen 4, eight alternated rounds: median 136.5 -> 140.1 t/s.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn dpwssd(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
    let mut acc = acc;
    // SAFETY: a register-only instruction of AVX512-VNNI, which this function's callers run.
    unsafe {
        std::arch::asm!(
            "vpdpwssd {acc}, {a}, {b}",
            acc = inout(zmm_reg) acc,
            a = in(zmm_reg) a,
            b = in(zmm_reg) b,
            options(pure, nomem, nostack, preserves_flags)
        )
    };
    acc
}

/// `dpwssd` on 256-bit registers (EVEX, AVX-512 VNNI with VL): one instruction where LLVM
/// splits the intrinsic into two.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
pub(crate) unsafe fn dpwssd256(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
    let mut acc = acc;
    // SAFETY: a register-only instruction of AVX512-VNNI (VL), which this function's callers run.
    unsafe {
        std::arch::asm!(
            "vpdpwssd {acc}, {a}, {b}",
            acc = inout(ymm_reg) acc,
            a = in(ymm_reg) a,
            b = in(ymm_reg) b,
            options(pure, nomem, nostack, preserves_flags)
        )
    };
    acc
}

/// Integer sums read as floats without a conversion. A sum S (|S| < 2^22) accumulated in
/// integer lanes that start from `MAGIC`, the bits of the float C = 1.5 x 2^23, ends as the
/// bits of the float C + S, exactly; one FMA, (C + S) x d - C x d (`magic_scaled`), then
/// gives S x d rounded once, because C x d is exact for an f16 d (3 x 2^22 x an 11-bit
/// mantissa). Per block and column that is one FMA where `vcvtdq2ps` and a multiply took
/// two uops, the conversion on port 0 only, beside the `vpdpbusd`s. For the 32-value types,
/// whose block sums stay far below 2^22 (32 x 255 x 128 at most).
pub(crate) const MAGIC: i32 = 0x4B40_0000;

/// `MAGIC` plus `offset` in every lane: where a block's integer sums start.
#[inline(always)]
pub(crate) unsafe fn magic_from(offset: i32) -> __m512i {
    _mm512_set1_epi32(MAGIC + offset)
}

/// -C x d, for `magic_scaled` (`d`: f16 values).
#[inline(always)]
pub(crate) unsafe fn neg_magic(d: __m512) -> __m512 {
    _mm512_mul_ps(d, _mm512_set1_ps(-12_582_912.0))
}

/// S x d, rounded once, from lanes holding C + S (see `MAGIC`); `neg_cd` = `neg_magic(d)`.
#[inline(always)]
pub(crate) unsafe fn magic_scaled(s: __m512i, d: __m512, neg_cd: __m512) -> __m512 {
    _mm512_fmadd_ps(_mm512_castsi512_ps(s), d, neg_cd)
}

/// `avx2::swiglu` 16 lanes at a time: `exp16` gives `exp8`'s bits, division is exact, and
/// the last n % 16 values go through the 8-lane code (the same elements as there go through
/// `math::exp_approx` and the tail through libm), so the results are the same bits.
///
/// # Safety
/// The CPU must have the avx512 level's features (reached only through `math::swiglu`).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn swiglu(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let full = n / 16 * 16;
    for i in (0..full).step_by(16) {
        let g = _mm512_loadu_ps(gate.as_ptr().add(i));
        let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), g));
        let s = _mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0), e));
        _mm512_storeu_ps(gate.as_mut_ptr().add(i), _mm512_mul_ps(s, _mm512_loadu_ps(up.as_ptr().add(i))));
    }
    crate::x86_64::avx2::swiglu(&mut gate[full..n], &up[full..n]);
}

/// C accumulators as rows of 16 outputs.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn storen<const C: usize>(acc: &[__m512; C]) -> [[f32; 16]; C] {
    let mut out = [[0f32; 16]; C];
    for (o, a) in out.iter_mut().zip(acc) {
        _mm512_storeu_ps(o.as_mut_ptr(), *a);
    }
    out
}

/// The four accumulators as rows of 16 outputs.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn store16(acc: &[__m512; 4]) -> [[f32; 16]; 4] {
    let mut out = [[0f32; 16]; 4];
    for (o, a) in out.iter_mut().zip(acc) {
        _mm512_storeu_ps(o.as_mut_ptr(), *a);
    }
    out
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
    q4_0x16::<4>(xa, xb, y)
}

/// `vec_dot_q4_0x16x4_q8_0` against 8 activation rows: each unpacked weight register serves
/// twice the columns.
///
/// # Safety
/// As `vec_dot_q4_0x16x4_q8_0`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn vec_dot_q4_0x16x8_q8_0(
    xa: &[BlockQ4_0x8],
    xb: &[BlockQ4_0x8],
    y: [&[BlockQ8_0S]; 8],
) -> [[f32; 16]; 8] {
    q4_0x16::<8>(xa, xb, y)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q4_0x16<const C: usize>(
    xa: &[BlockQ4_0x8],
    xb: &[BlockQ4_0x8],
    y: [&[BlockQ8_0S]; C],
) -> [[f32; 16]; C] {
    let n = xa.len();
    if xb.len() != n || y.iter().any(|c| c.len() != n) {
        return [[f32::NAN; 16]; C];
    }
    let m4 = _mm512_set1_epi8(15);
    let mut acc = [_mm512_setzero_ps(); C];
    for j in 0..n {
        prefetch_pair(xa, xb, j + 8, 3);
        // SAFETY: j < n, the length of xa, xb and (checked above) every y row.
        let (a, b) = unsafe { (xa.get_unchecked(j), xb.get_unchecked(j)) };
        let d = f16x16_pair(&a.d, &b.d);
        let neg_cd = neg_magic(d);
        let mut q = [_mm512_setzero_si512(); 8];
        for c in 0..4 {
            let v = join32(a.qs.as_ptr().add(32 * c), b.qs.as_ptr().add(32 * c));
            q[c] = _mm512_and_si512(v, m4);
            q[4 + c] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
        }
        for col in 0..C {
            // SAFETY: as above.
            let act = unsafe { y[col].get_unchecked(j) };
            let p = act.qs.as_ptr() as *const i32;
            // The weights' offset of 8 taken off up front: the sums start at -8 x the
            // activations' sum (from `MAGIC`, so that they read as floats).
            let mut s = magic_from(-8 * act.sum);
            for k in 0..8 {
                s = _mm512_dpbusd_epi32(s, q[k], _mm512_set1_epi32(p.add(k).read_unaligned()));
            }
            acc[col] = _mm512_fmadd_ps(magic_scaled(s, d, neg_cd), _mm512_set1_ps(act.d), acc[col]);
        }
    }
    storen(&acc)
}

/// Eight bytes of `a` then eight of `b`, widened to the 16 u32 lanes of a 512-bit register
/// (row r of group a in lane r, of group b in lane 8 + r).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn u8x16_pair(a: *const u8, b: *const u8) -> __m512i {
    let lo = _mm_loadl_epi64(a as *const __m128i);
    let hi = _mm_loadl_epi64(b as *const __m128i);
    _mm512_cvtepu8_epi32(_mm_unpacklo_epi64(lo, hi))
}

/// The 16 f16 scales of two groups (8 each) as f32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn f16x16_pair(a: &[u8; 16], b: &[u8; 16]) -> __m512 {
    let (da, db) =
        (_mm_loadu_si128(a.as_ptr() as *const __m128i), _mm_loadu_si128(b.as_ptr() as *const __m128i));
    _mm512_cvtph_ps(_mm256_set_m128i(db, da))
}

/// Two Q4_Kx8 groups (16 rows) against 4 activation rows in 512-bit registers (as
/// `vec_dot_q4_0x16x4_q8_0`; the sums of `q4_kx8_tile!`'s VNNI path, lane for lane).
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL and VNNI (reached only through dispatch).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn vec_dot_q4_kx16x4_q8_k(
    xa: &[BlockQ4Kx8],
    xb: &[BlockQ4Kx8],
    y: [&[BlockQ8K]; 4],
) -> [[f32; 16]; 4] {
    q4_kx16::<4>(xa, xb, y)
}

/// `vec_dot_q4_kx16x4_q8_k` against 8 activation rows (each unpacked weight register serves twice the
/// columns).
///
/// # Safety
/// As `vec_dot_q4_kx16x4_q8_k`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn vec_dot_q4_kx16x8_q8_k(
    xa: &[BlockQ4Kx8],
    xb: &[BlockQ4Kx8],
    y: [&[BlockQ8K]; 8],
) -> [[f32; 16]; 8] {
    q4_kx16::<8>(xa, xb, y)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q4_kx16<const C: usize>(
    xa: &[BlockQ4Kx8],
    xb: &[BlockQ4Kx8],
    y: [&[BlockQ8K]; C],
) -> [[f32; 16]; C] {
    let n = xa.len();
    if xb.len() != n || y.iter().any(|c| c.len() != n) {
        return [[f32::NAN; 16]; C];
    }
    let m4 = _mm512_set1_epi8(15);
    let mut acc = [_mm512_setzero_ps(); C];
    for j in 0..n {
        // SAFETY: j < n, the length of xa, xb and (checked above) every y row.
        let (a, b) = unsafe { (xa.get_unchecked(j), xb.get_unchecked(j)) };
        // SAFETY: as above.
        let act: [&BlockQ8K; C] = std::array::from_fn(|c| unsafe { y[c].get_unchecked(j) });
        let (pa, pb) =
            (xa.as_ptr().wrapping_add(j + 1) as *const i8, xb.as_ptr().wrapping_add(j + 1) as *const i8);
        let mut sumi = [_mm512_setzero_si512(); C];
        for g in 0..8 {
            // The next blocks, 19 lines each, a few lines per group (see q4_kx8_tile!).
            for l in 0..3 {
                if 3 * g + l < 19 {
                    _mm_prefetch::<_MM_HINT_T0>(pa.wrapping_add(64 * (3 * g + l)));
                    _mm_prefetch::<_MM_HINT_T0>(pb.wrapping_add(64 * (3 * g + l)));
                }
            }
            let (p, shift) = (g / 2, 4 * (g % 2) as u32);
            let mut s32 = [_mm512_setzero_si512(); C];
            for c in 0..8 {
                let v = join32(a.qs.as_ptr().add(256 * p + 32 * c), b.qs.as_ptr().add(256 * p + 32 * c));
                let q = _mm512_and_si512(_mm512_srl_epi16(v, _mm_cvtsi32_si128(shift as i32)), m4);
                for col in 0..C {
                    let ya = (act[col].qs.as_ptr().add(32 * g + 4 * c) as *const i32).read_unaligned();
                    s32[col] = _mm512_dpbusd_epi32(s32[col], q, _mm512_set1_epi32(ya));
                }
            }
            let sc = u8x16_pair(a.scales.as_ptr().add(8 * g), b.scales.as_ptr().add(8 * g));
            for col in 0..C {
                sumi[col] = _mm512_add_epi32(sumi[col], _mm512_mullo_epi32(s32[col], sc));
            }
        }
        // Mins: row r's (m_2k, m_2k+1) as i16 in lanes 2r, 2r + 1 against the activation's
        // (bsum_2k, bsum_2k+1) broadcast (see q4_kx8_tile!).
        let mut mins = [_mm512_setzero_si512(); 4];
        for k in 0..4 {
            let lo = u8x16_pair(a.mins.as_ptr().add(16 * k), b.mins.as_ptr().add(16 * k));
            let hi = u8x16_pair(a.mins.as_ptr().add(16 * k + 8), b.mins.as_ptr().add(16 * k + 8));
            mins[k] = _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
        }
        let d = f16x16_pair(&a.d, &b.d);
        let dmin = f16x16_pair(&a.dmin, &b.dmin);
        for col in 0..C {
            let bs = _mm256_loadu_si256(act[col].bsums.as_ptr() as *const __m256i);
            let b16 = _mm256_packs_epi32(_mm256_madd_epi16(bs, _mm256_set1_epi16(1)), _mm256_setzero_si256());
            let mut summ = _mm512_setzero_si512();
            for k in 0..4 {
                let pair = _mm256_permutevar8x32_epi32(b16, _mm256_set1_epi32((4 * (k / 2) + k % 2) as i32));
                let pair = _mm512_broadcastd_epi32(_mm256_castsi256_si128(pair));
                summ = _mm512_add_epi32(summ, _mm512_madd_epi16(mins[k], pair));
            }
            let dy = _mm512_set1_ps(act[col].d);
            let v = _mm512_fmadd_ps(_mm512_mul_ps(d, dy), _mm512_cvtepi32_ps(sumi[col]), acc[col]);
            acc[col] = _mm512_fnmadd_ps(_mm512_mul_ps(dmin, dy), _mm512_cvtepi32_ps(summ), v);
        }
    }
    storen(&acc)
}

/// Two Q8_0x8 groups (16 rows) against 4 activation rows in 512-bit registers: weights go
/// in as unsigned w + 128 with 128 * sum(y) taken off per block (the sums of
/// `q8_0x8_tile!`'s VNNI path, lane for lane).
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL and VNNI (reached only through dispatch).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn vec_dot_q8_0x16x4_q8_0(
    xa: &[BlockQ8_0x8],
    xb: &[BlockQ8_0x8],
    y: [&[BlockQ8_0S]; 4],
) -> [[f32; 16]; 4] {
    q8_0x16::<4>(xa, xb, y)
}

/// `vec_dot_q8_0x16x4_q8_0` against 8 activation rows (each unpacked weight register serves twice the
/// columns).
///
/// # Safety
/// As `vec_dot_q8_0x16x4_q8_0`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn vec_dot_q8_0x16x8_q8_0(
    xa: &[BlockQ8_0x8],
    xb: &[BlockQ8_0x8],
    y: [&[BlockQ8_0S]; 8],
) -> [[f32; 16]; 8] {
    q8_0x16::<8>(xa, xb, y)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q8_0x16<const C: usize>(
    xa: &[BlockQ8_0x8],
    xb: &[BlockQ8_0x8],
    y: [&[BlockQ8_0S]; C],
) -> [[f32; 16]; C] {
    let n = xa.len();
    if xb.len() != n || y.iter().any(|c| c.len() != n) {
        return [[f32::NAN; 16]; C];
    }
    let flip = _mm512_set1_epi8(-128);
    let mut acc = [_mm512_setzero_ps(); C];
    for j in 0..n {
        prefetch_pair(xa, xb, j + 4, 5);
        // SAFETY: j < n, the length of xa, xb and (checked above) every y row.
        let (a, b) = unsafe { (xa.get_unchecked(j), xb.get_unchecked(j)) };
        // The unsigned trick's offset of 128 taken off up front: the sums start at -128 x
        // the activations' sum.
        let mut s: [__m512i; C] = std::array::from_fn(|col| magic_from(-128 * y[col].get_unchecked(j).sum));
        for k in 0..8 {
            let u = _mm512_xor_si512(join32(a.qs.as_ptr().add(32 * k), b.qs.as_ptr().add(32 * k)), flip);
            for col in 0..C {
                // SAFETY: as above.
                let act = unsafe { y[col].get_unchecked(j) };
                let ya = (act.qs.as_ptr().add(4 * k) as *const i32).read_unaligned();
                s[col] = _mm512_dpbusd_epi32(s[col], u, _mm512_set1_epi32(ya));
            }
        }
        let d = f16x16_pair(&a.d, &b.d);
        let neg_cd = neg_magic(d);
        for col in 0..C {
            // SAFETY: as above.
            let act = unsafe { y[col].get_unchecked(j) };
            acc[col] = _mm512_fmadd_ps(magic_scaled(s[col], d, neg_cd), _mm512_set1_ps(act.d), acc[col]);
        }
    }
    storen(&acc)
}

/// Two Q5_0x8 groups (16 rows) against 4 activation rows in 512-bit registers (the sums of
/// `q5_0x8_tile!`, lane for lane; the fifth bits set through a byte mask).
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL and VNNI (reached only through dispatch).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn vec_dot_q5_0x16x4_q8_0(
    xa: &[BlockQ5_0x8],
    xb: &[BlockQ5_0x8],
    y: [&[BlockQ8_0S]; 4],
) -> [[f32; 16]; 4] {
    q5_0x16::<4>(xa, xb, y)
}

/// `vec_dot_q5_0x16x4_q8_0` against 8 activation rows (each unpacked weight register serves twice the
/// columns).
///
/// # Safety
/// As `vec_dot_q5_0x16x4_q8_0`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn vec_dot_q5_0x16x8_q8_0(
    xa: &[BlockQ5_0x8],
    xb: &[BlockQ5_0x8],
    y: [&[BlockQ8_0S]; 8],
) -> [[f32; 16]; 8] {
    q5_0x16::<8>(xa, xb, y)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q5_0x16<const C: usize>(
    xa: &[BlockQ5_0x8],
    xb: &[BlockQ5_0x8],
    y: [&[BlockQ8_0S]; C],
) -> [[f32; 16]; C] {
    let n = xa.len();
    if xb.len() != n || y.iter().any(|c| c.len() != n) {
        return [[f32::NAN; 16]; C];
    }
    let m4 = _mm512_set1_epi8(15);
    let sixteen = _mm512_set1_epi8(16);
    // Byte 4i of each dword, for the byte copies (per 128-bit lane, as in q5_0x8_tile!).
    let half = _mm256_add_epi8(
        _mm256_set1_epi64x(0x0404_0404_0000_0000),
        _mm256_setr_epi64x(0, 0x0808_0808_0808_0808, 0, 0x0808_0808_0808_0808),
    );
    let dword_base = _mm512_inserti64x4(_mm512_castsi256_si512(half), half, 1);
    let mut acc = [_mm512_setzero_ps(); C];
    for j in 0..n {
        prefetch_pair(xa, xb, j + 8, 3);
        // SAFETY: j < n, the length of xa, xb and (checked above) every y row.
        let (a, b) = unsafe { (xa.get_unchecked(j), xb.get_unchecked(j)) };
        let qh = join32(a.qh.as_ptr(), b.qh.as_ptr());
        let mut q = [_mm512_setzero_si512(); 8];
        for c in 0..4 {
            let v = join32(a.qs.as_ptr().add(32 * c), b.qs.as_ptr().add(32 * c));
            q[c] = _mm512_and_si512(v, m4);
            q[4 + c] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
        }
        for k in 0..8 {
            let rep = _mm512_shuffle_epi8(qh, _mm512_add_epi8(dword_base, _mm512_set1_epi8((k / 2) as i8)));
            let bit = _mm512_set1_epi32((0x0804_0201u32 << (4 * (k % 2))) as i32);
            let set = _mm512_test_epi8_mask(rep, bit);
            q[k] = _mm512_mask_add_epi8(q[k], set, q[k], sixteen);
        }
        let d = f16x16_pair(&a.d, &b.d);
        let neg_cd = neg_magic(d);
        for col in 0..C {
            // SAFETY: as above.
            let act = unsafe { y[col].get_unchecked(j) };
            let p = act.qs.as_ptr() as *const i32;
            let mut s = magic_from(-16 * act.sum);
            for k in 0..8 {
                s = _mm512_dpbusd_epi32(s, q[k], _mm512_set1_epi32(p.add(k).read_unaligned()));
            }
            acc[col] = _mm512_fmadd_ps(magic_scaled(s, d, neg_cd), _mm512_set1_ps(act.d), acc[col]);
        }
    }
    storen(&acc)
}

/// Eight signed bytes of `a` then eight of `b`, widened to 16 i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn i8x16_pair(a: *const u8, b: *const u8) -> __m512i {
    let lo = _mm_loadl_epi64(a as *const __m128i);
    let hi = _mm_loadl_epi64(b as *const __m128i);
    _mm512_cvtepi8_epi32(_mm_unpacklo_epi64(lo, hi))
}

/// Step (h, c) of two Q6_Kx8 groups: weights 128h + 32k + 4c..+4 of each of the 16 rows for
/// k = 0..4, the low (k < 2) or high nibble of ql plus bits 2k, 2k+1 of qh at bits 4, 5
/// (as `q6_kx8_tile!`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q6_kx16_values(a: &BlockQ6Kx8, b: &BlockQ6Kx8, h: usize, c: usize) -> [__m512i; 4] {
    let (m4, m30) = (_mm512_set1_epi8(15), _mm512_set1_epi8(0x30));
    let ql0 = join32(a.ql.as_ptr().add(512 * h + 32 * c), b.ql.as_ptr().add(512 * h + 32 * c));
    let ql1 = join32(a.ql.as_ptr().add(512 * h + 256 + 32 * c), b.ql.as_ptr().add(512 * h + 256 + 32 * c));
    let qh = join32(a.qh.as_ptr().add(256 * h + 32 * c), b.qh.as_ptr().add(256 * h + 32 * c));
    [
        _mm512_or_si512(_mm512_and_si512(ql0, m4), _mm512_and_si512(_mm512_slli_epi16(qh, 4), m30)),
        _mm512_or_si512(_mm512_and_si512(ql1, m4), _mm512_and_si512(_mm512_slli_epi16(qh, 2), m30)),
        _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql0, 4), m4), _mm512_and_si512(qh, m30)),
        _mm512_or_si512(
            _mm512_and_si512(_mm512_srli_epi16(ql1, 4), m4),
            _mm512_and_si512(_mm512_srli_epi16(qh, 2), m30),
        ),
    ]
}

/// Two Q6_Kx8 groups (16 rows) against 4 activation rows in 512-bit registers (the sums of
/// `q6_kx8_tile!`'s VNNI path, lane for lane).
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL and VNNI (reached only through dispatch).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn vec_dot_q6_kx16x4_q8_k(
    xa: &[BlockQ6Kx8],
    xb: &[BlockQ6Kx8],
    y: [&[BlockQ8K]; 4],
) -> [[f32; 16]; 4] {
    let n = xa.len();
    if xb.len() != n || y.iter().any(|c| c.len() != n) {
        return [[f32::NAN; 16]; 4];
    }
    let mut acc = [_mm512_setzero_ps(); 4];
    for j in 0..n {
        // SAFETY: j < n, the length of xa, xb and (checked above) every y row.
        let (a, b) = unsafe { (xa.get_unchecked(j), xb.get_unchecked(j)) };
        // SAFETY: as above.
        let act: [&BlockQ8K; 4] = std::array::from_fn(|c| unsafe { y[c].get_unchecked(j) });
        let (pa, pb) =
            (xa.as_ptr().wrapping_add(j + 2) as *const i8, xb.as_ptr().wrapping_add(j + 2) as *const i8);
        let mut sumi = [_mm512_setzero_si512(); 4];
        for h in 0..2 {
            for half in 0..2 {
                // Each group's sum starts at -32 x its activation sum: the -32 offset of
                // the 6-bit values comes off before the scale multiplies.
                let mut s32: [[__m512i; 4]; 4] = std::array::from_fn(|col| {
                    std::array::from_fn(|k| {
                        _mm512_set1_epi32(-32 * act[col].bsums[8 * h + 2 * k + half] as i32)
                    })
                });
                for t in 0..4 {
                    let c = 4 * half + t;
                    let pf = 8 * h + 4 * half + t;
                    if pf < 14 {
                        for p in [pa, pb] {
                            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(128 * pf));
                            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(128 * pf + 64));
                        }
                    }
                    let q = q6_kx16_values(a, b, h, c);
                    for col in 0..4 {
                        let p = act[col].qs.as_ptr().add(128 * h + 4 * c);
                        for k in 0..4 {
                            let ya = (p.add(32 * k) as *const i32).read_unaligned();
                            s32[col][k] = _mm512_dpbusd_epi32(s32[col][k], q[k], _mm512_set1_epi32(ya));
                        }
                    }
                }
                for k in 0..4 {
                    let g = 8 * h + 2 * k + half;
                    let sc = i8x16_pair(a.scales.as_ptr().add(8 * g), b.scales.as_ptr().add(8 * g));
                    for col in 0..4 {
                        sumi[col] = _mm512_add_epi32(sumi[col], _mm512_mullo_epi32(s32[col][k], sc));
                    }
                }
            }
        }
        let d = f16x16_pair(&a.d, &b.d);
        for col in 0..4 {
            let total = sumi[col];
            let dy = _mm512_set1_ps(act[col].d);
            acc[col] = _mm512_fmadd_ps(_mm512_mul_ps(d, dy), _mm512_cvtepi32_ps(total), acc[col]);
        }
    }
    store16(&acc)
}

/// Sixteen rows (two groups of 8) of one 32-column Q5_0 or Q8_0 block, unpacked once
/// for a whole prefill batch (as `PanelQ6K`): unsigned values and the row scales.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub struct Panel32 {
    /// `q[k]`: bytes 4k..4k+4 of the block, row r in lane r: for the panel kernels here
    /// unsigned values (Q5_0: 0..31, Q8_0: w + 128, IQ4_NL: the codebook value + 128), for
    /// the AMX tiles (`x86_64::amx`) the signed values themselves.
    pub(crate) q: [[u8; 64]; 8],
    pub(crate) d: [f32; 16],
}

const _: () = assert!(std::mem::size_of::<Panel32>() == 576);

/// Unpacks blocks of two Q8_0x8 groups (16 rows) into `out`, one panel per block (the
/// weights as w + 128, as `q8_0x16` feeds them).
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL and VNNI (reached only through dispatch).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn unpack_q8_0x16(xa: &[BlockQ8_0x8], xb: &[BlockQ8_0x8], out: &mut [Panel32]) {
    let flip = _mm512_set1_epi8(-128);
    for (j, ((a, b), p)) in xa.iter().zip(xb).zip(out.iter_mut()).enumerate() {
        prefetch_pair(xa, xb, j + 4, 5);
        for k in 0..8 {
            let u = _mm512_xor_si512(join32(a.qs.as_ptr().add(32 * k), b.qs.as_ptr().add(32 * k)), flip);
            _mm512_storeu_si512(p.q[k].as_mut_ptr() as *mut __m512i, u);
        }
        _mm512_storeu_ps(p.d.as_mut_ptr(), f16x16_pair(&a.d, &b.d));
    }
}

/// Lane indices of `transpose_16x8`'s three rounds of `vpermt2d` (index 16 + i: lane i of
/// the second source).
const fn transpose_idx(round: usize, second: bool) -> [i32; 16] {
    let mut idx = [0i32; 16];
    let mut l = 0;
    while l < 16 {
        idx[l] = match round {
            // Rows 4p..4p + 4 (two sources of two rows of 8 dwords): lane 4k + r holds row r's
            // dword k (k < 4; the second output dwords 4..8).
            1 => {
                let (k, r) = (l / 4 + if second { 4 } else { 0 }, l % 4);
                (r / 2 * 16 + r % 2 * 8 + k) as i32
            }
            // Rows 8q..8q + 8 from two of those: lane 8k + r, k < 2 (the second: 2..4).
            2 => {
                let (k, r) = (l / 8 + if second { 2 } else { 0 }, l % 8);
                (r / 4 * 16 + k * 4 + r % 4) as i32
            }
            // All 16 rows from two of those: lane r, one dword (the second: the next).
            _ => {
                let k = if second { 1 } else { 0 };
                (l / 8 * 16 + k * 8 + l % 8) as i32
            }
        };
        l += 1;
    }
    idx
}

/// 16 rows of 8 dwords, `z[i]` holding rows 2i (lanes 0-7) and 2i + 1 (lanes 8-15), turned
/// into 8 registers of one dword of every row (`out[k]` lane r: row r's dword k).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn transpose_16x8(z: [__m512i; 8]) -> [__m512i; 8] {
    // (No closures here: a closure does not take the function's target features, and the
    // intrinsics in it would not be inlined.)
    const IDX: [[i32; 16]; 6] = [
        transpose_idx(1, false),
        transpose_idx(1, true),
        transpose_idx(2, false),
        transpose_idx(2, true),
        transpose_idx(3, false),
        transpose_idx(3, true),
    ];
    let mut idx = [_mm512_setzero_si512(); 6];
    for (v, a) in idx.iter_mut().zip(IDX.iter()) {
        *v = _mm512_loadu_si512(a.as_ptr() as *const __m512i);
    }
    // Per 4 rows p: dwords 0-3 (x1[p]) and 4-7 (x1[4 + p]).
    let mut x1 = [_mm512_setzero_si512(); 8];
    for p in 0..4 {
        x1[p] = _mm512_permutex2var_epi32(z[2 * p], idx[0], z[2 * p + 1]);
        x1[4 + p] = _mm512_permutex2var_epi32(z[2 * p], idx[1], z[2 * p + 1]);
    }
    // Per 8 rows q: dwords (0,1), (2,3), (4,5), (6,7) at x2[2 * pair + q].
    let mut x2 = [_mm512_setzero_si512(); 8];
    for h in 0..2 {
        for q in 0..2 {
            let (a, b) = (x1[4 * h + 2 * q], x1[4 * h + 2 * q + 1]);
            x2[4 * h + q] = _mm512_permutex2var_epi32(a, idx[2], b);
            x2[4 * h + 2 + q] = _mm512_permutex2var_epi32(a, idx[3], b);
        }
    }
    // All 16 rows, one dword each.
    let mut out = [_mm512_setzero_si512(); 8];
    for pair in 0..4 {
        let (a, b) = (x2[2 * pair], x2[2 * pair + 1]);
        out[2 * pair] = _mm512_permutex2var_epi32(a, idx[4], b);
        out[2 * pair + 1] = _mm512_permutex2var_epi32(a, idx[5], b);
    }
    out
}

/// `transpose_16x8` for rows of 4 dwords (`z[i]` lanes 0-3 and 8-11; the other lanes are
/// not read): `out[k]` lane r holds row r's dword k.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn transpose_16x4(z: [__m512i; 8]) -> [__m512i; 4] {
    const IDX: [[i32; 16]; 4] =
        [transpose_idx(1, false), transpose_idx(2, false), transpose_idx(2, true), transpose_idx(3, false)];
    let mut idx = [_mm512_setzero_si512(); 4];
    for (v, a) in idx.iter_mut().zip(IDX.iter()) {
        *v = _mm512_loadu_si512(a.as_ptr() as *const __m512i);
    }
    let mut x1 = [_mm512_setzero_si512(); 4];
    for (p, x) in x1.iter_mut().enumerate() {
        *x = _mm512_permutex2var_epi32(z[2 * p], idx[0], z[2 * p + 1]);
    }
    // Per 8 rows q: dwords (0, 1) at x2[q], (2, 3) at x2[2 + q].
    let mut x2 = [_mm512_setzero_si512(); 4];
    for q in 0..2 {
        x2[q] = _mm512_permutex2var_epi32(x1[2 * q], idx[1], x1[2 * q + 1]);
        x2[2 + q] = _mm512_permutex2var_epi32(x1[2 * q], idx[2], x1[2 * q + 1]);
    }
    let second = _mm512_add_epi32(idx[3], _mm512_set1_epi32(8));
    [
        _mm512_permutex2var_epi32(x2[0], idx[3], x2[1]),
        _mm512_permutex2var_epi32(x2[0], second, x2[1]),
        _mm512_permutex2var_epi32(x2[2], idx[3], x2[3]),
        _mm512_permutex2var_epi32(x2[2], second, x2[3]),
    ]
}

/// The 32 nibbles of one block of 16 rows (`qs[r]`: row r's 16 bytes) as a panel's 8 lines
/// (line c: values 4c..4c + 4 of every row, from the low nibbles for c < 4, the high ones
/// after), each looked up in `book` (16 bytes in every 128-bit lane).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn nibble_lines16(qs: [&[u8; 16]; 16], book: __m512i) -> [__m512i; 8] {
    let m4 = _mm512_set1_epi8(15);
    let mut z = [_mm512_setzero_si512(); 8];
    for (i, v) in z.iter_mut().enumerate() {
        let lo = _mm_loadu_si128(qs[2 * i].as_ptr() as *const __m128i);
        let hi = _mm_loadu_si128(qs[2 * i + 1].as_ptr() as *const __m128i);
        *v = _mm512_inserti32x4::<2>(_mm512_castsi128_si512(lo), hi);
    }
    let mut out = [_mm512_setzero_si512(); 8];
    for (c, v) in transpose_16x4(z).into_iter().enumerate() {
        out[c] = _mm512_shuffle_epi8(book, _mm512_and_si512(v, m4));
        out[4 + c] = _mm512_shuffle_epi8(book, _mm512_and_si512(_mm512_srli_epi16(v, 4), m4));
    }
    out
}

/// The nibbles as they are (0..15): Q4_0 for the panel kernel with its offset 8
/// (`vec_dot_panel32x16x8_q8_0::<8>`), and the low four bits of Q4_1, Q5_0 and Q5_1.
pub(crate) const NIBBLES_U: [i8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

/// Unpacks 16 rows of a Q8_0 matrix in the file's layout (`rows`: row r's blocks at
/// `rows[r * nb..]`, nb = `out.len()`) straight into panels, as `unpack_q8_0x16` does from
/// two interleaved groups: with `FLIP` the weights as w + 128 (the panel kernels here),
/// without them as they are (the AMX tiles). A prefill without repacked copies then skips
/// the interleaving.
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL and VNNI (reached only through dispatch).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn unpack_q8_0_rows16<const FLIP: bool>(rows: &[BlockQ8_0], out: &mut [Panel32]) {
    let nb = out.len();
    if rows.len() != 16 * nb {
        return;
    }
    let flip = _mm512_set1_epi8(if FLIP { -128 } else { 0 });
    for (j, p) in out.iter_mut().enumerate() {
        let b = |r: usize| &rows[r * nb + j];
        for r in 0..16 {
            _mm_prefetch::<_MM_HINT_T0>((b(r) as *const BlockQ8_0 as *const i8).wrapping_add(4 * 34));
        }
        let mut z = [_mm512_setzero_si512(); 8];
        for (i, v) in z.iter_mut().enumerate() {
            *v = join32(b(2 * i).qs.as_ptr() as *const u8, b(2 * i + 1).qs.as_ptr() as *const u8);
        }
        for (k, v) in transpose_16x8(z).into_iter().enumerate() {
            _mm512_storeu_si512(p.q[k].as_mut_ptr() as *mut __m512i, _mm512_xor_si512(v, flip));
        }
        _mm512_storeu_ps(p.d.as_mut_ptr(), f16x16_of(std::array::from_fn(|r| &b(r).d)));
    }
}

/// IQ4_NL's codebook + 128, as the unsigned panels of `vec_dot_panel32x16x8_q8_0::<128>` hold it.
pub(crate) const IQ4NL_BOOK_U: [i8; 16] = {
    let mut b = KVALUES_IQ4NL;
    let mut i = 0;
    while i < 16 {
        b[i] ^= -128;
        i += 1;
    }
    b
};

/// Unpacks blocks of two 4-bit groups (Q4_0x8 or IQ4_NLx8: 16 rows) into panels: each
/// nibble looked up in `book` (the panel's byte for each of the 16 values).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn unpack_nibbles_x16(
    xa: &[BlockQ4_0x8],
    xb: &[BlockQ4_0x8],
    out: &mut [Panel32],
    book: &[i8; 16],
) {
    let book = _mm512_broadcast_i32x4(_mm_loadu_si128(book.as_ptr() as *const __m128i));
    for (j, ((a, b), p)) in xa.iter().zip(xb).zip(out.iter_mut()).enumerate() {
        prefetch_pair(xa, xb, j + 8, 3);
        nibbles_x16(a.qs.as_ptr(), b.qs.as_ptr(), book, &mut p.q);
        _mm512_storeu_ps(p.d.as_mut_ptr(), f16x16_pair(&a.d, &b.d));
    }
}

/// The 32 values of two 8-row groups' nibbles (128 bytes each at `qa` and `qb`, laid out as
/// `BlockQ4_0x8::qs`: low nibbles values 0..16, high 16..32) into `Panel32::q`'s layout,
/// each nibble looked up in `book` (16 bytes broadcast to every 128-bit lane).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn nibbles_x16(qa: *const u8, qb: *const u8, book: __m512i, q: &mut [[u8; 64]; 8]) {
    let m4 = _mm512_set1_epi8(15);
    for c in 0..4 {
        let v = join32(qa.add(32 * c), qb.add(32 * c));
        let lo = _mm512_shuffle_epi8(book, _mm512_and_si512(v, m4));
        let hi = _mm512_shuffle_epi8(book, _mm512_and_si512(_mm512_srli_epi16(v, 4), m4));
        _mm512_storeu_si512(q[c].as_mut_ptr() as *mut __m512i, lo);
        _mm512_storeu_si512(q[4 + c].as_mut_ptr() as *mut __m512i, hi);
    }
}

/// Unpacks blocks of two IQ4_NLx8 groups (16 rows, in `BlockQ4_0x8`s) into Q8_0's panels:
/// the codebook values + 128, which `vec_dot_panel32x16x8_q8_0::<128>` takes as it takes Q8_0's.
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL and VNNI (reached only through dispatch).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn unpack_iq4_nlx16(xa: &[BlockQ4_0x8], xb: &[BlockQ4_0x8], out: &mut [Panel32]) {
    unpack_nibbles_x16(xa, xb, out, &IQ4NL_BOOK_U)
}

/// The 5-bit values of one block of two Q5_0x8 or Q5_1x8 groups (16 rows) as `Panel32::q`
/// holds them: nibbles from qs, fifth bits from qh (row r's 32 bits in dword r of its group).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn five_bit_x16(qs: [&[u8; 128]; 2], qh: [&[u8; 32]; 2]) -> [__m512i; 8] {
    let m4 = _mm512_set1_epi8(15);
    let qh = join32(qh[0].as_ptr(), qh[1].as_ptr());
    let mut q = [_mm512_setzero_si512(); 8];
    for c in 0..4 {
        let v = join32(qs[0].as_ptr().add(32 * c), qs[1].as_ptr().add(32 * c));
        q[c] = _mm512_and_si512(v, m4);
        q[4 + c] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
    }
    add_fifth_bits(&mut q, qh);
    q
}

/// Adds 16 to the values of a panel's 8 lines (`q[k]`: values 4k..4k + 4 of each row, the
/// layout of `Panel32::q`) whose fifth bit is set: bit l of dword r of `qh` for row r's
/// value l.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn add_fifth_bits(q: &mut [__m512i; 8], qh: __m512i) {
    let sixteen = _mm512_set1_epi8(16);
    // Byte 4i of each dword, for the byte copies (per 128-bit lane, as in q5_0x8_tile!).
    let half = _mm256_add_epi8(
        _mm256_set1_epi64x(0x0404_0404_0000_0000),
        _mm256_setr_epi64x(0, 0x0808_0808_0808_0808, 0, 0x0808_0808_0808_0808),
    );
    let dword_base = _mm512_inserti64x4(_mm512_castsi256_si512(half), half, 1);
    for (k, q) in q.iter_mut().enumerate() {
        let rep = _mm512_shuffle_epi8(qh, _mm512_add_epi8(dword_base, _mm512_set1_epi8((k / 2) as i8)));
        let bit = _mm512_set1_epi32((0x0804_0201u32 << (4 * (k % 2))) as i32);
        let set = _mm512_test_epi8_mask(rep, bit);
        *q = _mm512_mask_add_epi8(*q, set, *q, sixteen);
    }
}

/// The 16 rows' 32 fifth bits (`qh[r]`) as the dwords of one register, for `add_fifth_bits`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn qh16(qh: [&[u8; 4]; 16]) -> __m512i {
    let h = |r: usize| i32::from_le_bytes(*qh[r]);
    _mm512_setr_epi32(
        h(0),
        h(1),
        h(2),
        h(3),
        h(4),
        h(5),
        h(6),
        h(7),
        h(8),
        h(9),
        h(10),
        h(11),
        h(12),
        h(13),
        h(14),
        h(15),
    )
}

/// The fields of a 32-value block type for `unpack_legacy_rows16`: d, the min m (Q4_1,
/// Q5_1), the fifth bits qh (Q5_0, Q5_1), the 16 bytes of nibbles.
pub trait LegacyRow {
    #[allow(clippy::type_complexity)]
    fn fields(&self) -> (&[u8; 2], Option<&[u8; 2]>, Option<&[u8; 4]>, &[u8; 16]);
}

impl LegacyRow for BlockQ4_0 {
    fn fields(&self) -> (&[u8; 2], Option<&[u8; 2]>, Option<&[u8; 4]>, &[u8; 16]) {
        (&self.d, None, None, &self.qs)
    }
}

impl LegacyRow for BlockIQ4NL {
    fn fields(&self) -> (&[u8; 2], Option<&[u8; 2]>, Option<&[u8; 4]>, &[u8; 16]) {
        (&self.d, None, None, &self.qs)
    }
}

impl LegacyRow for BlockQ4_1 {
    fn fields(&self) -> (&[u8; 2], Option<&[u8; 2]>, Option<&[u8; 4]>, &[u8; 16]) {
        (&self.d, Some(&self.m), None, &self.qs)
    }
}

impl LegacyRow for BlockQ5_0 {
    fn fields(&self) -> (&[u8; 2], Option<&[u8; 2]>, Option<&[u8; 4]>, &[u8; 16]) {
        (&self.d, None, Some(&self.qh), &self.qs)
    }
}

impl LegacyRow for BlockQ5_1 {
    fn fields(&self) -> (&[u8; 2], Option<&[u8; 2]>, Option<&[u8; 4]>, &[u8; 16]) {
        (&self.d, Some(&self.m), Some(&self.qh), &self.qs)
    }
}

/// A panel of 32-value blocks: `Panel32` (d) or `Panel32M` (d and m).
pub trait Panel32Like {
    #[allow(clippy::type_complexity)]
    fn parts(&mut self) -> (&mut [[u8; 64]; 8], &mut [f32; 16], Option<&mut [f32; 16]>);
}

impl Panel32Like for Panel32 {
    fn parts(&mut self) -> (&mut [[u8; 64]; 8], &mut [f32; 16], Option<&mut [f32; 16]>) {
        (&mut self.q, &mut self.d, None)
    }
}

impl Panel32Like for Panel32M {
    fn parts(&mut self) -> (&mut [[u8; 64]; 8], &mut [f32; 16], Option<&mut [f32; 16]>) {
        (&mut self.q, &mut self.d, Some(&mut self.m))
    }
}

/// Unpacks 16 rows of a Q4_0, IQ4_NL, Q4_1, Q5_0 or Q5_1 matrix in the file's layout (row r's
/// blocks at `rows[r * nb..]`, nb = `out.len()`) straight into the panels that the unpackers
/// of two interleaved groups make: each nibble looked up in `book`, 16 added where the fifth
/// bit is set, `off` taken off, and the m of Q4_1 and Q5_1 into `Panel32M`. The books and
/// offsets each panel takes are in `dispatch.rs` (`rows_unpacker!`).
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL and VNNI (reached only through dispatch).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn unpack_legacy_rows16<B: LegacyRow, P: Panel32Like>(
    rows: &[B],
    out: &mut [P],
    book: &[i8; 16],
    off: i8,
) {
    let nb = out.len();
    if rows.len() != 16 * nb {
        return;
    }
    let book = _mm512_broadcast_i32x4(_mm_loadu_si128(book.as_ptr() as *const __m128i));
    let ahead = std::mem::size_of::<B>() * 8;
    for (j, p) in out.iter_mut().enumerate() {
        let b = |r: usize| rows[r * nb + j].fields();
        for r in 0..16 {
            _mm_prefetch::<_MM_HINT_T0>((&rows[r * nb + j] as *const B as *const i8).wrapping_add(ahead));
        }
        let mut q = nibble_lines16(std::array::from_fn(|r| b(r).3), book);
        if b(0).2.is_some() {
            add_fifth_bits(&mut q, qh16(std::array::from_fn(|r| b(r).2.unwrap_or(&[0; 4]))));
        }
        let (pq, pd, pm) = p.parts();
        for (k, v) in q.into_iter().enumerate() {
            _mm512_storeu_si512(
                pq[k].as_mut_ptr() as *mut __m512i,
                _mm512_sub_epi8(v, _mm512_set1_epi8(off)),
            );
        }
        _mm512_storeu_ps(pd.as_mut_ptr(), f16x16_of(std::array::from_fn(|r| b(r).0)));
        if let Some(pm) = pm {
            let m = f16x16_of(std::array::from_fn(|r| b(r).1.unwrap_or(&[0; 2])));
            _mm512_storeu_ps(pm.as_mut_ptr(), m);
        }
    }
}

/// Unpacks blocks of two Q5_0x8 groups (16 rows) into `out`, one panel per block (the
/// values of `q5_0x16`, fifth bits set).
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL and VNNI (reached only through dispatch).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn unpack_q5_0x16(xa: &[BlockQ5_0x8], xb: &[BlockQ5_0x8], out: &mut [Panel32]) {
    for (j, ((a, b), p)) in xa.iter().zip(xb).zip(out.iter_mut()).enumerate() {
        prefetch_pair(xa, xb, j + 8, 3);
        for (k, q) in five_bit_x16([&a.qs, &b.qs], [&a.qh, &b.qh]).iter().enumerate() {
            _mm512_storeu_si512(p.q[k].as_mut_ptr() as *mut __m512i, *q);
        }
        _mm512_storeu_ps(p.d.as_mut_ptr(), f16x16_pair(&a.d, &b.d));
    }
}

/// Sixteen Q4_1 or Q5_1 rows (two Q4_1x8 or Q5_1x8 groups) of one 32-column block, unpacked
/// once for a whole prefill batch: values (Q4_1 0..15, Q5_1 0..31), scales and mins as f32.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub struct Panel32M {
    /// As `Panel32::q`.
    pub(crate) q: [[u8; 64]; 8],
    pub(crate) d: [f32; 16],
    pub(crate) m: [f32; 16],
}

const _: () = assert!(std::mem::size_of::<Panel32M>() == 640);

/// Unpacks blocks of two Q4_1x8 groups (16 rows) into `out`, one panel per block.
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL and VNNI (reached only through dispatch).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn unpack_q4_1x16(xa: &[BlockQ4_1x8], xb: &[BlockQ4_1x8], out: &mut [Panel32M]) {
    let m4 = _mm512_set1_epi8(15);
    for (j, ((a, b), p)) in xa.iter().zip(xb).zip(out.iter_mut()).enumerate() {
        prefetch_pair(xa, xb, j + 8, 3);
        for c in 0..4 {
            let v = join32(a.qs.as_ptr().add(32 * c), b.qs.as_ptr().add(32 * c));
            _mm512_storeu_si512(p.q[c].as_mut_ptr() as *mut __m512i, _mm512_and_si512(v, m4));
            let hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
            _mm512_storeu_si512(p.q[4 + c].as_mut_ptr() as *mut __m512i, hi);
        }
        _mm512_storeu_ps(p.d.as_mut_ptr(), f16x16_pair(&a.d, &b.d));
        _mm512_storeu_ps(p.m.as_mut_ptr(), f16x16_pair(&a.m, &b.m));
    }
}

/// Unpacks blocks of two Q5_1x8 groups (16 rows) into Q4_1's panels (values 0..31: the
/// panel kernel's i32 sums have room), one panel per block.
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL and VNNI (reached only through dispatch).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn unpack_q5_1x16(xa: &[BlockQ5_1x8], xb: &[BlockQ5_1x8], out: &mut [Panel32M]) {
    for (j, ((a, b), p)) in xa.iter().zip(xb).zip(out.iter_mut()).enumerate() {
        prefetch_pair(xa, xb, j + 8, 3);
        for (k, q) in five_bit_x16([&a.qs, &b.qs], [&a.qh, &b.qh]).iter().enumerate() {
            _mm512_storeu_si512(p.q[k].as_mut_ptr() as *mut __m512i, *q);
        }
        _mm512_storeu_ps(p.d.as_mut_ptr(), f16x16_pair(&a.d, &b.d));
        _mm512_storeu_ps(p.m.as_mut_ptr(), f16x16_pair(&a.m, &b.m));
    }
}

/// Unpacked Q4_1 panels against 8 Q8_1 activation rows: per block d * dy * sum(q * y), then
/// + m * s (the activation's dy * sum(y)), as the 8-row tile `q4_1x8_tile!` adds them.
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL and VNNI (reached only through dispatch).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn vec_dot_q4_1panel16x8_q8_1(
    p: &[Panel32M],
    y: [&[BlockQ8_1]; 8],
    next: &[u8],
) -> [[f32; 16]; 8] {
    let n = p.len();
    if y.iter().any(|c| c.len() != n) {
        return [[f32::NAN; 16]; 8];
    }
    // An f16 broadcast to 16 f32 lanes.
    let h2f = |b: [u8; 2]| _mm512_cvtph_ps(_mm256_set1_epi16(i16::from_le_bytes(b)));
    let mut acc = [_mm512_setzero_ps(); 8];
    // The next pair's share, a few lines per block (in one burst it stalled the core).
    let next = L2Shares::new(next, n);
    for j in 0..n {
        next.fetch(j);
        // SAFETY: j < n, the length of p and (checked above) every y row.
        let b = unsafe { p.get_unchecked(j) };
        // SAFETY: as above.
        let act: [&BlockQ8_1; 8] = std::array::from_fn(|c| unsafe { y[c].get_unchecked(j) });
        let mut s = [magic_from(0); 8];
        for k in 0..8 {
            let q = _mm512_loadu_si512(b.q[k].as_ptr() as *const __m512i);
            for col in 0..8 {
                let ya = (act[col].qs.as_ptr().add(4 * k) as *const i32).read_unaligned();
                s[col] = _mm512_dpbusd_epi32(s[col], q, _mm512_set1_epi32(ya));
            }
        }
        let (d, m) = (_mm512_loadu_ps(b.d.as_ptr()), _mm512_loadu_ps(b.m.as_ptr()));
        let neg_cd = neg_magic(d);
        for col in 0..8 {
            let dy = h2f(act[col].d);
            let v = _mm512_fmadd_ps(magic_scaled(s[col], d, neg_cd), dy, acc[col]);
            acc[col] = _mm512_fmadd_ps(m, h2f(act[col].s), v);
        }
    }
    storen(&acc)
}

/// Unpacked 32-column panels (`unpack_q5_0x16`, `unpack_q8_0x16`) against 8
/// activation rows, the values' offset `OFF` (16, 128) taken off as OFF x sum(y): the
/// sums of the 16-row tiles, lane for lane (each column's sum starts at -OFF x sum(y) instead
/// of subtracting it after: the same integer).
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL and VNNI (reached only through dispatch).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn vec_dot_panel32x16x8_q8_0<const OFF: i32>(
    p: &[Panel32],
    y: [&[BlockQ8_0S]; 8],
    next: &[u8],
) -> [[f32; 16]; 8] {
    let n = p.len();
    if y.iter().any(|c| c.len() != n) {
        return [[f32::NAN; 16]; 8];
    }
    let mut acc = [_mm512_setzero_ps(); 8];
    // The next pair's share, a few lines per block (in one burst it stalled the core).
    let next = L2Shares::new(next, n);
    for j in 0..n {
        next.fetch(j);
        // SAFETY: j < n, the length of p and (checked above) every y row.
        let b = unsafe { p.get_unchecked(j) };
        // SAFETY: as above.
        let act: [&BlockQ8_0S; 8] = std::array::from_fn(|c| unsafe { y[c].get_unchecked(j) });
        let mut s: [__m512i; 8] = std::array::from_fn(|c| magic_from(-OFF * act[c].sum));
        for k in 0..8 {
            let q = _mm512_loadu_si512(b.q[k].as_ptr() as *const __m512i);
            for col in 0..8 {
                let ya = (act[col].qs.as_ptr().add(4 * k) as *const i32).read_unaligned();
                s[col] = _mm512_dpbusd_epi32(s[col], q, _mm512_set1_epi32(ya));
            }
        }
        let d = _mm512_loadu_ps(b.d.as_ptr());
        let neg_cd = neg_magic(d);
        for col in 0..8 {
            acc[col] = _mm512_fmadd_ps(magic_scaled(s[col], d, neg_cd), _mm512_set1_ps(act[col].d), acc[col]);
        }
    }
    storen(&acc)
}

/// Sixteen Q4_K rows (two Q4_Kx8 groups) of one 256-column block, unpacked once for a whole
/// prefill batch (as `PanelQ6K`): each weight register becomes one load instead of a load,
/// an insert, a shift and a mask per 4 activation rows.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub struct PanelQ4K {
    /// `q[8g + c]`: bytes 4c..4c+4 of 32-value group g, row r in lane r, values 0..15
    /// (Q4_K; 0..31 from Q5_K, the IQ4_XS codebook + 128 from IQ4_XS).
    q: [[u8; 64]; 64],
    /// Group g's scale of each row as i32 lanes.
    sc: [[i32; 16]; 8],
    /// The mins of groups 2k and 2k + 1 of each row as an i16 pair: one `vpdpwssd` against
    /// the activation's sums of those two groups (`pair_sums`) gives both terms.
    mins: [[i16; 32]; 4],
    d: [f32; 16],
    dmin: [f32; 16],
}

const _: () = assert!(std::mem::size_of::<PanelQ4K>() == 4992);

/// Unpacks blocks of two Q4_Kx8 or Q5_Kx8 groups (16 rows) into Q4_K panels, one per block:
/// Q5_K is Q4_K with a fifth bit per value (values 0..31, same scales and mins), so the Q4_K
/// panel kernel runs both.
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL and VNNI (reached only through dispatch).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn unpack_k16<B: KBlockX8>(xa: &[B], xb: &[B], out: &mut [PanelQ4K]) {
    let m4 = _mm512_set1_epi8(15);
    for (j, ((a, b), p)) in xa.iter().zip(xb).zip(out.iter_mut()).enumerate() {
        // The fields once per block: `qh()` called per 64 bytes in the loop below (not
        // inlined), with the registers spilled around the call, made this unpacking 5x slower.
        // (Inlining the accessors instead slowed Q5_K's decode kernel by 10%.)
        let (qs, qh, sc, mins) =
            ((a.qs(), b.qs()), a.qh().zip(b.qh()), (a.scales(), b.scales()), (a.mins(), b.mins()));
        for g in 0..8 {
            prefetch_lines(xa, xb, j + 1, 3 * g, 3);
            let (h, shift) = (g / 2, 4 * (g % 2) as i32);
            for c in 0..8 {
                // The same values as `q4_kx16`'s `q`.
                let v = join32(qs.0.as_ptr().add(256 * h + 32 * c), qs.1.as_ptr().add(256 * h + 32 * c));
                let mut q = _mm512_and_si512(_mm512_srl_epi16(v, _mm_cvtsi32_si128(shift)), m4);
                if let Some((ha, hb)) = qh {
                    // Bit g of qh byte l is the fifth bit of value 32g + l: to bit 4 (16-bit
                    // shifts; bits from the neighbouring byte fall outside the mask).
                    let qh = join32(ha.as_ptr().add(32 * c), hb.as_ptr().add(32 * c));
                    let hi = _mm512_slli_epi16(_mm512_srl_epi16(qh, _mm_cvtsi32_si128(g as i32)), 4);
                    q = _mm512_or_si512(q, _mm512_and_si512(hi, _mm512_set1_epi8(0x10)));
                }
                _mm512_storeu_si512(p.q[8 * g + c].as_mut_ptr() as *mut __m512i, q);
            }
            let sc = u8x16_pair(sc.0.as_ptr().add(8 * g), sc.1.as_ptr().add(8 * g));
            _mm512_storeu_si512(p.sc[g].as_mut_ptr() as *mut __m512i, sc);
        }
        for k in 0..4 {
            let lo = u8x16_pair(mins.0.as_ptr().add(16 * k), mins.1.as_ptr().add(16 * k));
            let hi = u8x16_pair(mins.0.as_ptr().add(16 * k + 8), mins.1.as_ptr().add(16 * k + 8));
            _mm512_storeu_si512(
                p.mins[k].as_mut_ptr() as *mut __m512i,
                _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)),
            );
        }
        _mm512_storeu_ps(p.d.as_mut_ptr(), f16x16_pair(a.d(), b.d()));
        _mm512_storeu_ps(p.dmin.as_mut_ptr(), f16x16_pair(a.dmin(), b.dmin()));
    }
}

/// 16 f16 values (one per row) as f32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn f16x16_of(b: [&[u8; 2]; 16]) -> __m512 {
    let h = |r: usize| i16::from_le_bytes(*b[r]);
    _mm512_cvtph_ps(_mm256_set_epi16(
        h(15),
        h(14),
        h(13),
        h(12),
        h(11),
        h(10),
        h(9),
        h(8),
        h(7),
        h(6),
        h(5),
        h(4),
        h(3),
        h(2),
        h(1),
        h(0),
    ))
}

/// A Q4_K or Q5_K block's fields for `unpack_k_rows16`: d, dmin, the packed scales, the
/// nibbles, and Q5_K's fifth bits.
pub trait KRow {
    #[allow(clippy::type_complexity)]
    fn fields(&self) -> (&[u8; 2], &[u8; 2], &[u8; 12], &[u8; 128], Option<&[u8; 32]>);
}

impl KRow for BlockQ4K {
    fn fields(&self) -> (&[u8; 2], &[u8; 2], &[u8; 12], &[u8; 128], Option<&[u8; 32]>) {
        (&self.d, &self.dmin, &self.scales, &self.qs, None)
    }
}

impl KRow for BlockQ5K {
    fn fields(&self) -> (&[u8; 2], &[u8; 2], &[u8; 12], &[u8; 128], Option<&[u8; 32]>) {
        (&self.d, &self.dmin, &self.scales, &self.qs, Some(&self.qh))
    }
}

/// Unpacks 16 rows of a Q4_K or Q5_K matrix in the file's layout (row r's blocks at
/// `rows[r * nb..]`, nb = `out.len()`) straight into Q4_K panels, the same panels `unpack_k16`
/// makes from two interleaved groups: each 32 bytes of a row's nibbles (two groups), and
/// Q5_K's 32 bytes of fifth bits, through `transpose_16x8`; the 6-bit scales and mins with
/// `k_scales_mins`.
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL and VNNI (reached only through dispatch).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn unpack_k_rows16<B: KRow>(rows: &[B], out: &mut [PanelQ4K]) {
    let nb = out.len();
    if rows.len() != 16 * nb {
        return;
    }
    let (m4, bit4) = (_mm512_set1_epi8(15), _mm512_set1_epi8(0x10));
    let lines = std::mem::size_of::<B>().div_ceil(64);
    for (j, p) in out.iter_mut().enumerate() {
        let b = |r: usize| rows[r * nb + j].fields();
        for r in 0..16 {
            let next = (&rows[r * nb + j] as *const B).wrapping_add(1) as *const i8;
            for line in 0..lines {
                _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(64 * line));
            }
        }
        // Q5_K: bit g of qh byte l is the fifth bit of value 32g + l (`unpack_k16`).
        let mut qh = None;
        if b(0).4.is_some() {
            let mut z = [_mm512_setzero_si512(); 8];
            for (i, v) in z.iter_mut().enumerate() {
                let (x, y) = (b(2 * i).4.unwrap_or(&[0; 32]), b(2 * i + 1).4.unwrap_or(&[0; 32]));
                *v = join32(x.as_ptr(), y.as_ptr());
            }
            qh = Some(transpose_16x8(z));
        }
        // Bytes 32h..32h + 32 of qs: group 2h in the low nibbles, 2h + 1 in the high.
        for h in 0..4 {
            let mut z = [_mm512_setzero_si512(); 8];
            for (i, v) in z.iter_mut().enumerate() {
                *v = join32(b(2 * i).3.as_ptr().add(32 * h), b(2 * i + 1).3.as_ptr().add(32 * h));
            }
            for (c, v) in transpose_16x8(z).into_iter().enumerate() {
                let mut lo = _mm512_and_si512(v, m4);
                let mut hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
                if let Some(t) = qh {
                    // Bits 2h and 2h + 1 to bit 4 (16-bit shifts; bits from the neighbouring
                    // byte fall outside the mask).
                    let (g0, g1) = (_mm_cvtsi32_si128(2 * h as i32), _mm_cvtsi32_si128(2 * h as i32 + 1));
                    lo = _mm512_or_si512(
                        lo,
                        _mm512_and_si512(_mm512_slli_epi16(_mm512_srl_epi16(t[c], g0), 4), bit4),
                    );
                    hi = _mm512_or_si512(
                        hi,
                        _mm512_and_si512(_mm512_slli_epi16(_mm512_srl_epi16(t[c], g1), 4), bit4),
                    );
                }
                _mm512_storeu_si512(p.q[16 * h + c].as_mut_ptr() as *mut __m512i, lo);
                _mm512_storeu_si512(p.q[16 * h + 8 + c].as_mut_ptr() as *mut __m512i, hi);
            }
        }
        for r in 0..16 {
            let (sc, mn) = crate::scalar::dequant::k_scales_mins(b(r).2);
            for (g, s) in p.sc.iter_mut().enumerate() {
                s[r] = (sc >> (8 * g)) as u8 as i32;
            }
            for (k, m) in p.mins.iter_mut().enumerate() {
                m[2 * r] = (mn >> (16 * k)) as u8 as i16;
                m[2 * r + 1] = (mn >> (16 * k + 8)) as u8 as i16;
            }
        }
        _mm512_storeu_ps(p.d.as_mut_ptr(), f16x16_of(std::array::from_fn(|r| b(r).0)));
        _mm512_storeu_ps(p.dmin.as_mut_ptr(), f16x16_of(std::array::from_fn(|r| b(r).1)));
    }
}

/// Unpacks blocks of two IQ4_XSx8 groups (16 rows) into Q4_K panels: value v of the codebook
/// as v + 128 (unsigned, as `vpdpbusd` takes it), the signed group scale as the scale, and
/// 128 x the scale as the "min" taken off against the group's activation sum, with dmin = d:
/// d * sc * (v + 128) - d * (128 * sc) = d * sc * v, so the Q4_K panel kernel runs IQ4_XS too.
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL and VNNI (reached only through dispatch).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn unpack_iq4_xsx16(xa: &[BlockIQ4XSx8], xb: &[BlockIQ4XSx8], out: &mut [PanelQ4K]) {
    let m4 = _mm512_set1_epi8(15);
    let signed = _mm512_broadcast_i32x4(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i));
    let book = _mm512_xor_si512(signed, _mm512_set1_epi8(-128));
    for (j, ((a, b), p)) in xa.iter().zip(xb).zip(out.iter_mut()).enumerate() {
        for g in 0..8 {
            prefetch_lines(xa, xb, j + 1, 3 * g, 3);
            // Group g is laid out as a Q4_0x8 block: low nibbles are steps 0..4, high 4..8.
            for c in 0..4 {
                let v = join32(a.qs.as_ptr().add(128 * g + 32 * c), b.qs.as_ptr().add(128 * g + 32 * c));
                let lo = _mm512_shuffle_epi8(book, _mm512_and_si512(v, m4));
                let hi = _mm512_shuffle_epi8(book, _mm512_and_si512(_mm512_srli_epi16(v, 4), m4));
                _mm512_storeu_si512(p.q[8 * g + c].as_mut_ptr() as *mut __m512i, lo);
                _mm512_storeu_si512(p.q[8 * g + 4 + c].as_mut_ptr() as *mut __m512i, hi);
            }
            let sc = i8x16_pair(
                a.scales.as_ptr().add(8 * g) as *const u8,
                b.scales.as_ptr().add(8 * g) as *const u8,
            );
            _mm512_storeu_si512(p.sc[g].as_mut_ptr() as *mut __m512i, sc);
            // 128 x sc (|.| <= 4096): group 2k's in the low i16 half of each lane, 2k + 1's in
            // the high half.
            let m = _mm512_slli_epi32(sc, 7);
            let k = p.mins[g / 2].as_mut_ptr() as *mut __m512i;
            let half = if g % 2 == 0 {
                _mm512_and_si512(m, _mm512_set1_epi32(0xFFFF))
            } else {
                _mm512_or_si512(_mm512_loadu_si512(k), _mm512_slli_epi32(m, 16))
            };
            _mm512_storeu_si512(k, half);
        }
        let d = f16x16_pair(&a.d, &b.d);
        _mm512_storeu_ps(p.d.as_mut_ptr(), d);
        _mm512_storeu_ps(p.dmin.as_mut_ptr(), d);
    }
}

/// A Q8_K block's activation sums of 32-value groups 2k and 2k + 1 as an i16 pair in
/// element k (each sum of 32 values fits: |.| <= 4096).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn pair_sums(bsums: &[i16; 16]) -> [i32; 4] {
    let bs = _mm256_loadu_si256(bsums.as_ptr() as *const __m256i);
    // Sums of 32 (eight i32), packed to i16 per 128-bit half: elements 0, 1 and 4, 5.
    let b16 = _mm256_packs_epi32(_mm256_madd_epi16(bs, _mm256_set1_epi16(1)), _mm256_setzero_si256());
    let mut e = [0i32; 8];
    _mm256_storeu_si256(e.as_mut_ptr() as *mut __m256i, b16);
    [e[0], e[1], e[4], e[5]]
}

/// Unpacked Q4_K panels (`unpack_k16`) against 8 activation rows: the sums of
/// `vec_dot_q4_kx16x8_q8_k`, lane for lane. `SAME_D` (IQ4_XS's panels, whose dmin is d):
/// the mins' term comes off the integer sum before the one conversion, as the IQ4_XSx8 tile
/// does. `HALVES`: the values are 0..15 (Q4_K's panels), so that half a group's sum fits
/// 16 bits.
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL and VNNI (reached only through dispatch).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn vec_dot_q4_kpanel16x8_q8_k<const SAME_D: bool, const HALVES: bool>(
    p: &[PanelQ4K],
    y: [&[BlockQ8K]; 8],
    next: &[u8],
) -> [[f32; 16]; 8] {
    let n = p.len();
    if y.iter().any(|c| c.len() != n) {
        return [[f32::NAN; 16]; 8];
    }
    let mut acc = [_mm512_setzero_ps(); 8];
    // The next pair's share, a few lines per block (in one burst it stalled the core).
    let next = L2Shares::new(next, n);
    for j in 0..n {
        next.fetch(j);
        // SAFETY: j < n, the length of p and (checked above) every y row.
        let b = unsafe { p.get_unchecked(j) };
        // SAFETY: as above.
        let act: [&BlockQ8K; 8] = std::array::from_fn(|c| unsafe { y[c].get_unchecked(j) });
        let mut sumi = [_mm512_setzero_si512(); 8];
        // Activation bytes 4c..4c + 4 of group g of each column, broadcast.
        let y4 = |col: usize, g: usize, c: usize| {
            _mm512_set1_epi32((act[col].qs.as_ptr().add(32 * g + 4 * c) as *const i32).read_unaligned())
        };
        for g in 0..8 {
            let sc = _mm512_loadu_si512(b.sc[g].as_ptr() as *const __m512i);
            if HALVES {
                // Each 16-value half's sum fits i16 (|.| <= 16 * 15 * 128), so one
                // `vpdpwssd` against the scale lanes (the i16 pair (sc, 0)) scales and adds
                // it: one instruction where `vpmulld` + `vpaddd` were three uops, and two
                // chains of four `vpdpbusd` per column instead of one of eight.
                let (mut lo, mut hi) = ([_mm512_setzero_si512(); 8], [_mm512_setzero_si512(); 8]);
                for c in 0..4 {
                    let qa = _mm512_loadu_si512(b.q[8 * g + c].as_ptr() as *const __m512i);
                    let qb = _mm512_loadu_si512(b.q[8 * g + c + 4].as_ptr() as *const __m512i);
                    for col in 0..8 {
                        lo[col] = _mm512_dpbusd_epi32(lo[col], qa, y4(col, g, c));
                        hi[col] = _mm512_dpbusd_epi32(hi[col], qb, y4(col, g, c + 4));
                    }
                }
                for col in 0..8 {
                    sumi[col] = dpwssd(dpwssd(sumi[col], lo[col], sc), hi[col], sc);
                }
                continue;
            }
            let mut s32 = [_mm512_setzero_si512(); 8];
            for c in 0..8 {
                let q = _mm512_loadu_si512(b.q[8 * g + c].as_ptr() as *const __m512i);
                for col in 0..8 {
                    s32[col] = _mm512_dpbusd_epi32(s32[col], q, y4(col, g, c));
                }
            }
            for col in 0..8 {
                sumi[col] = _mm512_add_epi32(sumi[col], _mm512_mullo_epi32(s32[col], sc));
            }
        }
        let mins: [__m512i; 4] =
            std::array::from_fn(|k| _mm512_loadu_si512(b.mins[k].as_ptr() as *const __m512i));
        let mut summ = [_mm512_setzero_si512(); 8];
        for col in 0..8 {
            let bs = pair_sums(&act[col].bsums);
            for (m, &s) in mins.iter().zip(&bs) {
                summ[col] = dpwssd(summ[col], *m, _mm512_set1_epi32(s));
            }
        }
        let d = _mm512_loadu_ps(b.d.as_ptr());
        for col in 0..8 {
            let dy = _mm512_set1_ps(act[col].d);
            let si = if SAME_D { _mm512_sub_epi32(sumi[col], summ[col]) } else { sumi[col] };
            acc[col] = _mm512_fmadd_ps(_mm512_mul_ps(d, dy), _mm512_cvtepi32_ps(si), acc[col]);
        }
        if !SAME_D {
            // The mins' term, after the scales' (the order of `q4_kx16`).
            sub_mins16(&mut acc, _mm512_loadu_ps(b.dmin.as_ptr()), std::array::from_fn(|c| act[c].d), &summ);
        }
    }
    storen(&acc)
}

/// Sixteen Q6_K rows (two Q6_Kx8 groups) of one 256-column block, unpacked once for a whole
/// prefill batch. `matmul` runs every activation row of the batch against the same 16 weight
/// rows; rebuilding the 6-bit values (three loads and a dozen masks and shifts per four
/// `vpdpbusd`) for every 4 activation rows cost more than the dot products themselves.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub struct PanelQ6K {
    /// `q[4g + t]`: bytes 4t..4t+4 of 16-value group g, row r in lane r (as `vpdpbusd` takes
    /// them), values 0..63 (the -32 offset is in `offs`).
    q: [[u8; 64]; 64],
    /// Group g's signed scale of each row, widened to i32 lanes.
    sc: [[i32; 16]; 16],
    /// -32 x the scales of groups 2m and 2m + 1 as an i16 pair per row, so that one
    /// `vpdpwssd` against the activation's (bsum_2m, bsum_2m+1) takes the offsets off.
    /// (Q3_K: -4 x the scales; Q2_K: the mins, scaled apart by dmin.)
    offs: [[i16; 32]; 8],
    d: [f32; 16],
    dmin: [f32; 16],
}

const _: () = assert!(std::mem::size_of::<PanelQ6K>() == 5760);

/// `Group16` (the 256-bit levels' trait for Q6_K and Q3_K, from `x86_repacked_kernels!`)
/// with the values of two groups (16 rows) at step (h, c) in 512-bit registers: the types
/// whose 16-row panel is `PanelQ6K`.
pub trait Group16x16: Group16 {
    /// # Safety
    /// The CPU must have AVX-512F/BW/VL and VNNI (reached only through dispatch).
    unsafe fn values16(a: &Self, b: &Self, h: usize, c: usize) -> [__m512i; 4];
}

impl Group16x16 for BlockQ6Kx8 {
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn values16(a: &Self, b: &Self, h: usize, c: usize) -> [__m512i; 4] {
        // The same values as `vec_dot_q6_kx16x4_q8_k`'s `q`.
        q6_kx16_values(a, b, h, c)
    }
}

impl Group16x16 for BlockQ2Kx8 {
    /// Bits 2k, 2k+1 of the qs bytes (as `q2_kx8_values`).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn values16(a: &Self, b: &Self, h: usize, c: usize) -> [__m512i; 4] {
        let v = join32(a.qs.as_ptr().add(256 * h + 32 * c), b.qs.as_ptr().add(256 * h + 32 * c));
        std::array::from_fn(|k| {
            _mm512_and_si512(_mm512_srl_epi16(v, _mm_cvtsi32_si128(2 * k as i32)), _mm512_set1_epi8(3))
        })
    }
}

impl Group16x16 for BlockQ3Kx8 {
    /// Bits 2k, 2k+1 of the qs bytes plus bit 4h + k of the hmask bytes at bit 2 (as
    /// `q3_kx8_values`).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn values16(a: &Self, b: &Self, h: usize, c: usize) -> [__m512i; 4] {
        let v = join32(a.qs.as_ptr().add(256 * h + 32 * c), b.qs.as_ptr().add(256 * h + 32 * c));
        let hm = join32(a.hmask.as_ptr().add(32 * c), b.hmask.as_ptr().add(32 * c));
        std::array::from_fn(|k| {
            let lo =
                _mm512_and_si512(_mm512_srl_epi16(v, _mm_cvtsi32_si128(2 * k as i32)), _mm512_set1_epi8(3));
            let bit = (4 * h + k) as i32;
            let hb = if bit >= 2 {
                _mm512_srl_epi16(hm, _mm_cvtsi32_si128(bit - 2))
            } else {
                _mm512_sll_epi16(hm, _mm_cvtsi32_si128(2 - bit))
            };
            _mm512_or_si512(lo, _mm512_and_si512(hb, _mm512_set1_epi8(4)))
        })
    }
}

/// Blocks of two groups (16 rows) of a `Group16x16` type into `out`, one panel per block: the
/// values, the scales as i32 lanes, OFF x the scales (Q2_K: the mins) of groups 2m, 2m + 1 as
/// i16 pairs, d and dmin.
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL and VNNI (reached only through dispatch).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn unpack_g16<B: Group16x16>(xa: &[B], xb: &[B], out: &mut [PanelQ6K]) {
    let lines = std::mem::size_of::<B>().div_ceil(64).div_ceil(16);
    for (j, ((a, b), p)) in xa.iter().zip(xb).zip(out.iter_mut()).enumerate() {
        for h in 0..2 {
            for half in 0..2 {
                for t in 0..4 {
                    prefetch_lines(xa, xb, j + 1, lines * (8 * h + 4 * half + t), lines);
                    let c = 4 * half + t;
                    for (k, q) in B::values16(a, b, h, c).into_iter().enumerate() {
                        let g = 8 * h + 2 * k + half;
                        _mm512_storeu_si512(p.q[4 * g + t].as_mut_ptr() as *mut __m512i, q);
                    }
                }
            }
        }
        // Each group's scales and the multipliers of its activation sum (see `g16_scales`).
        let mut off = [_mm512_setzero_si512(); 16];
        for (g, o) in off.iter_mut().enumerate() {
            let (pa, pb) = (a.scales().as_ptr().add(8 * g), b.scales().as_ptr().add(8 * g));
            let sc = if B::MINS {
                let raw = u8x16_pair(pa, pb);
                *o = _mm512_srli_epi32(raw, 4);
                _mm512_and_si512(raw, _mm512_set1_epi32(15))
            } else {
                let sc = i8x16_pair(pa, pb);
                *o = _mm512_mullo_epi32(sc, _mm512_set1_epi32(B::OFF));
                sc
            };
            _mm512_storeu_si512(p.sc[g].as_mut_ptr() as *mut __m512i, sc);
        }
        for m in 0..8 {
            let lo = _mm512_and_si512(off[2 * m], _mm512_set1_epi32(0xffff));
            let hi = _mm512_slli_epi32(off[2 * m + 1], 16);
            _mm512_storeu_si512(p.offs[m].as_mut_ptr() as *mut __m512i, _mm512_or_si512(lo, hi));
        }
        _mm512_storeu_ps(p.d.as_mut_ptr(), f16x16_pair(a.d(), b.d()));
        _mm512_storeu_ps(p.dmin.as_mut_ptr(), f16x16_pair(a.dmin(), b.dmin()));
    }
}

/// Unpacks 16 rows of a Q6_K matrix in the file's layout (row r's blocks at `rows[r * nb..]`,
/// nb = `out.len()`) straight into Q6_K panels, the same panels `unpack_g16` makes from two
/// Q6_Kx8 groups: each half's two 32-byte runs of ql and its 32 bytes of qh through
/// `transpose_16x8`, then the values as `q6_kx16_values` builds them.
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL and VNNI (reached only through dispatch).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn unpack_q6_k_rows16(rows: &[BlockQ6K], out: &mut [PanelQ6K]) {
    let nb = out.len();
    if rows.len() != 16 * nb {
        return;
    }
    let (m4, m30) = (_mm512_set1_epi8(15), _mm512_set1_epi8(0x30));
    for (j, p) in out.iter_mut().enumerate() {
        let b = |r: usize| &rows[r * nb + j];
        for r in 0..16 {
            for line in [0, 64, 128, 192] {
                _mm_prefetch::<_MM_HINT_T0>((b(r) as *const BlockQ6K as *const i8).wrapping_add(210 + line));
            }
        }
        for h in 0..2 {
            // Bytes `at..at + 32` of `field` of every row, transposed.
            let mut t = [[_mm512_setzero_si512(); 8]; 3];
            for (k, at) in [(0, 64 * h), (1, 64 * h + 32), (2, 32 * h)] {
                let mut z = [_mm512_setzero_si512(); 8];
                for (i, v) in z.iter_mut().enumerate() {
                    let f =
                        |r: usize| if k < 2 { b(r).ql.as_ptr().add(at) } else { b(r).qh.as_ptr().add(at) };
                    *v = join32(f(2 * i), f(2 * i + 1));
                }
                t[k] = transpose_16x8(z);
            }
            for c in 0..8 {
                let (ql0, ql1, qh) = (t[0][c], t[1][c], t[2][c]);
                let v = [
                    _mm512_or_si512(
                        _mm512_and_si512(ql0, m4),
                        _mm512_and_si512(_mm512_slli_epi16(qh, 4), m30),
                    ),
                    _mm512_or_si512(
                        _mm512_and_si512(ql1, m4),
                        _mm512_and_si512(_mm512_slli_epi16(qh, 2), m30),
                    ),
                    _mm512_or_si512(
                        _mm512_and_si512(_mm512_srli_epi16(ql0, 4), m4),
                        _mm512_and_si512(qh, m30),
                    ),
                    _mm512_or_si512(
                        _mm512_and_si512(_mm512_srli_epi16(ql1, 4), m4),
                        _mm512_and_si512(_mm512_srli_epi16(qh, 2), m30),
                    ),
                ];
                // Value 128h + 32k + 4c + i: group 8h + 2k + c / 4, step c % 4.
                for (k, q) in v.into_iter().enumerate() {
                    let g = 8 * h + 2 * k + c / 4;
                    _mm512_storeu_si512(p.q[4 * g + c % 4].as_mut_ptr() as *mut __m512i, q);
                }
            }
        }
        for r in 0..16 {
            let sc = &b(r).scales;
            for (g, s) in p.sc.iter_mut().enumerate() {
                s[r] = sc[g] as i32;
            }
            for (m, o) in p.offs.iter_mut().enumerate() {
                o[2 * r] = -32 * sc[2 * m] as i16;
                o[2 * r + 1] = -32 * sc[2 * m + 1] as i16;
            }
        }
        let d = f16x16_of(std::array::from_fn(|r| &b(r).d));
        _mm512_storeu_ps(p.d.as_mut_ptr(), d);
        _mm512_storeu_ps(p.dmin.as_mut_ptr(), d);
    }
}

/// Unpacked Q6_K panels (`unpack_g16`) against 8 activation rows: the sums of
/// `vec_dot_q6_kx16x4_q8_k`, lane for lane, with each weight register a single load.
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL and VNNI (reached only through dispatch).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn vec_dot_q6_kpanel16x8_q8_k<const MINS: bool>(
    p: &[PanelQ6K],
    y: [&[BlockQ8K]; 8],
    next: &[u8],
) -> [[f32; 16]; 8] {
    let n = p.len();
    if y.iter().any(|c| c.len() != n) {
        return [[f32::NAN; 16]; 8];
    }
    let mut acc = [_mm512_setzero_ps(); 8];
    // The next pair's share, a few lines per block (in one burst it stalled the core).
    let next = L2Shares::new(next, n);
    for j in 0..n {
        next.fetch(j);
        // SAFETY: j < n, the length of p and (checked above) every y row.
        let b = unsafe { p.get_unchecked(j) };
        // SAFETY: as above.
        let act: [&BlockQ8K; 8] = std::array::from_fn(|c| unsafe { y[c].get_unchecked(j) });
        let mut sumi = [_mm512_setzero_si512(); 8];
        for g in 0..16 {
            // Group g's 16 activation bytes (see `vec_dot_q6_kx16x4_q8_k`).
            let base = 128 * (g / 8) + 32 * ((g % 8) / 2) + 16 * (g % 2);
            let mut s32 = [_mm512_setzero_si512(); 8];
            for t in 0..4 {
                let q = _mm512_loadu_si512(b.q[4 * g + t].as_ptr() as *const __m512i);
                for col in 0..8 {
                    let ya = (act[col].qs.as_ptr().add(base + 4 * t) as *const i32).read_unaligned();
                    s32[col] = _mm512_dpbusd_epi32(s32[col], q, _mm512_set1_epi32(ya));
                }
            }
            let sc = _mm512_loadu_si512(b.sc[g].as_ptr() as *const __m512i);
            for col in 0..8 {
                sumi[col] = _mm512_add_epi32(sumi[col], _mm512_mullo_epi32(s32[col], sc));
            }
        }
        // The offsets into the integer sum, or (MINS, Q2_K) the mins apart.
        let mut summ = [_mm512_setzero_si512(); 8];
        for m in 0..8 {
            let o = _mm512_loadu_si512(b.offs[m].as_ptr() as *const __m512i);
            for col in 0..8 {
                let bs = (act[col].bsums.as_ptr().add(2 * m) as *const i32).read_unaligned();
                let t = if MINS { &mut summ[col] } else { &mut sumi[col] };
                *t = dpwssd(*t, o, _mm512_set1_epi32(bs));
            }
        }
        let d = _mm512_loadu_ps(b.d.as_ptr());
        for col in 0..8 {
            let dy = _mm512_set1_ps(act[col].d);
            acc[col] = _mm512_fmadd_ps(_mm512_mul_ps(d, dy), _mm512_cvtepi32_ps(sumi[col]), acc[col]);
        }
        if MINS {
            sub_mins16(&mut acc, _mm512_loadu_ps(b.dmin.as_ptr()), std::array::from_fn(|c| act[c].d), &summ);
        }
    }
    storen(&acc)
}

/// `attention::attend_f16` for llama.cpp's AVX-512 order (`DotOrder::Lanes(16)`): four
/// 16-lane fused multiply-add chains per position, gcc's `_mm512_reduce_add_ps` tree, the f16
/// accumulator rounded through `vcvtps2ph` (nearest even).
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VL, AVX2, FMA and F16C; `out.len() == q.len()`, `q.len()`
/// a multiple of 64 and at most `MAX_HEAD_DIM`, rows holding 0..len (`attend_f16` checks).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn attend_f16(
    q: &[f32],
    keys: crate::attention::KvRows,
    values: crate::attention::KvRows,
    len: usize,
    scale: f32,
    out: &mut [f32],
) {
    let hd = q.len();
    let round = |v: __m512| _mm512_cvtph_ps(_mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v));
    let mut qf = [0f32; crate::attention::MAX_HEAD_DIM];
    let (qp, qfp, ap) = (q.as_ptr(), qf.as_mut_ptr(), out.as_mut_ptr());
    for c in (0..hd).step_by(16) {
        _mm512_storeu_ps(qfp.add(c), round(_mm512_loadu_ps(qp.add(c))));
        _mm512_storeu_ps(ap.add(c), _mm512_setzero_ps());
    }
    let krow = |t: usize| keys.data.as_ptr().add(t * keys.stride + keys.offset) as *const __m256i;
    let vrow = |t: usize| values.data.as_ptr().add(t * values.stride + values.offset) as *const __m256i;
    let (mut m, mut sum) = (f32::NEG_INFINITY, 0f32);
    for t in 0..len {
        let kp = krow(t);
        let mut s = [_mm512_setzero_ps(); 4];
        for i in (0..hd).step_by(64) {
            for (j, s) in s.iter_mut().enumerate() {
                let kx = _mm512_cvtph_ps(_mm256_loadu_si256(kp.add(i / 16 + j)));
                *s = _mm512_fmadd_ps(_mm512_loadu_ps(qfp.add(i + 16 * j)), kx, *s);
            }
        }
        let x = _mm512_add_ps(_mm512_add_ps(s[0], s[2]), _mm512_add_ps(s[1], s[3]));
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(x)));
        let x8 = _mm256_add_ps(hi, _mm512_castps512_ps256(x));
        let x4 = _mm_add_ps(_mm256_extractf128_ps::<1>(x8), _mm256_castps256_ps128(x8));
        let x2 = _mm_add_ps(x4, _mm_shuffle_ps::<0b01_00_11_10>(x4, x4));
        let sc = (_mm_cvtss_f32(x2) + _mm_cvtss_f32(_mm_shuffle_ps::<1>(x2, x2))) * scale;
        let (ms, vs) = if sc > m {
            let ms = (m - sc).exp();
            m = sc;
            let msv = _mm512_set1_ps(ms);
            for c in (0..hd).step_by(16) {
                _mm512_storeu_ps(ap.add(c), round(_mm512_mul_ps(_mm512_loadu_ps(ap.add(c)), msv)));
            }
            (ms, 1.0)
        } else {
            (1.0, (sc - m).exp())
        };
        let (vp, vsv) = (vrow(t), _mm512_set1_ps(vs));
        for c in (0..hd).step_by(16) {
            let v = _mm512_cvtph_ps(_mm256_loadu_si256(vp.add(c / 16)));
            _mm512_storeu_ps(ap.add(c), round(_mm512_fmadd_ps(v, vsv, _mm512_loadu_ps(ap.add(c)))));
        }
        sum = sum.mul_add(ms, vs);
    }
    let inv = _mm512_set1_ps(if sum == 0.0 { 0.0 } else { 1.0 / sum });
    for c in (0..hd).step_by(16) {
        _mm512_storeu_ps(ap.add(c), _mm512_mul_ps(_mm512_loadu_ps(ap.add(c)), inv));
    }
}

/// `attention::attend_many_ref` in 512-bit registers, bit for bit (as `avx2::attend_many`:
/// each block's keys converted and transposed once, `kt[d][p]`): scores for eight queries x
/// 32 positions per step (`scores`), and the weighted values added for four queries at a
/// time, so that
/// eight or sixteen independent fused multiply-add chains of 16 lanes are in flight and each
/// loaded key or value vector serves several queries (one query's 64 lanes alone are four chains,
/// which wait on the latency). Each query's positions are still added in order.
///
/// # Safety
/// The CPU must have AVX-512F, AVX2, FMA and F16C; the shapes and rows are as `attend_many`
/// checks, and the head dimension is a multiple of 64.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn attend_many(
    qs: &[&[f32]],
    lens: &[usize],
    keys: crate::attention::KvRows,
    values: crate::attention::KvRows,
    scale: f32,
    outs: &mut [&mut [f32]],
) {
    use crate::attention::{MANY_BLOCK as B, MANY_MAX_HD, MAX_MANY};
    let nq = qs.len();
    let Some(hd) = qs.first().map(|q| q.len()) else { return };
    let max_len = lens.iter().copied().max().unwrap_or(0);
    // A block's keys (transposed: row d at d x B) and values, converted from f16. Only this
    // head dimension's rows of keys are zeroed (`scores` may read up to 16 positions past
    // the last written group, which must be finite), the values not at all (only written
    // positions are read): zeroing both whole was 128 KiB per call.
    let mut kt_buf = std::mem::MaybeUninit::<[f32; MANY_MAX_HD * B]>::uninit();
    std::ptr::write_bytes(kt_buf.as_mut_ptr() as *mut f32, 0, hd * B);
    // SAFETY: hd <= MANY_MAX_HD (the caller checks it), and these hd x B floats were just
    // zeroed.
    let kt = std::slice::from_raw_parts_mut(kt_buf.as_mut_ptr() as *mut f32, hd * B);
    let mut vf_buf = std::mem::MaybeUninit::<[f32; B * MANY_MAX_HD]>::uninit();
    let vf = vf_buf.as_mut_ptr() as *mut f32;
    let mut m = [f32::NEG_INFINITY; MAX_MANY];
    let mut sum = [0f32; MAX_MANY];
    const G: usize = 8;
    let mut s = [[0f32; B]; G];
    let mut e = [[0f32; B]; G];
    // Vector stores of a zero the compiler cannot see (`fill`, or stores of a known zero, it
    // turns into a `memset` call per query: 1-2% of a small model's prompt).
    let zero = std::hint::black_box(_mm512_setzero_ps());
    for o in outs.iter_mut() {
        for c in (0..hd).step_by(16) {
            _mm512_storeu_ps(o.as_mut_ptr().add(c), zero);
        }
    }
    for b0 in (0..max_len).step_by(B) {
        let nb = B.min(max_len - b0);
        for p in 0..nb {
            let vp = values.data.as_ptr().add((b0 + p) * values.stride + values.offset);
            for c in (0..hd).step_by(16) {
                _mm512_storeu_ps(
                    vf.add(p * hd + c),
                    _mm512_cvtph_ps(_mm256_loadu_si256(vp.add(c) as *const __m256i)),
                );
            }
        }
        // Keys in 16 x 16 tiles, transposed in registers (positions past nb are zeros,
        // never read).
        for p0 in (0..nb).step_by(16) {
            let cnt = (nb - p0).min(16);
            for d0 in (0..hd).step_by(16) {
                let rows: [__m512; 16] = std::array::from_fn(|j| {
                    if j < cnt {
                        let kp = keys.data.as_ptr().add((b0 + p0 + j) * keys.stride + keys.offset + d0);
                        _mm512_cvtph_ps(_mm256_loadu_si256(kp as *const __m256i))
                    } else {
                        _mm512_setzero_ps()
                    }
                });
                for (i, col) in transpose16(rows).into_iter().enumerate() {
                    _mm512_storeu_ps(kt.as_mut_ptr().add((d0 + i) * B + p0), col);
                }
            }
        }
        let valid = |i: usize| nb.min(lens[i].saturating_sub(b0));
        let mut i0 = 0;
        while i0 < nq {
            // Eight queries at a time: each key vector loaded serves eight fused multiply-adds,
            // whose query element is a broadcast operand of the instruction (with two key
            // vectors per step the broadcasts were instructions of their own: 2-3% slower
            // attention on a Zen 4; with four queries, the loads held the scores back).
            let g = (nq - i0).min(G);
            let most = (i0..i0 + g).map(valid).max().unwrap_or(0);
            // Missing queries of a last short group repeat the first (results unused).
            let qp: [*const f32; G] = std::array::from_fn(|j| qs[i0 + if j < g { j } else { 0 }].as_ptr());
            let sc = _mm512_set1_ps(scale);
            let mut p0 = 0;
            // 32 positions a step where there are more than 16 left: each query element
            // broadcast serves two key vectors (with one, the loads held the FMAs back).
            // (Lanes past `most` read the block's zero padding, as before.)
            while p0 + 16 < most {
                scores::<2, G>(kt, B, hd, p0, &qp, sc, &mut s);
                p0 += 32;
            }
            if p0 < most {
                scores::<1, G>(kt, B, hd, p0, &qp, sc, &mut s);
            }
            // Softmax weights of each query of the group (its output rescaled first).
            for j in 0..g {
                let i = i0 + j;
                let n = valid(i);
                if n == 0 {
                    continue;
                }
                // Lanes p.. of the block that are valid positions.
                let lanes = |p: usize| -> __mmask16 {
                    if n - p >= 16 {
                        0xffff
                    } else {
                        (1u16 << (n - p)) - 1
                    }
                };
                let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
                for p in (0..n).step_by(16) {
                    mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(mx, lanes(p), s[j].as_ptr().add(p)));
                }
                let mb = _mm512_reduce_max_ps(mx);
                crate::attention::raise_max(&mut *outs[i], &mut sum[i], &mut m[i], mb);
                let mv = _mm512_set1_ps(m[i]);
                let mut sv = _mm512_setzero_ps();
                for p in (0..n).step_by(16) {
                    let x = _mm512_sub_ps(_mm512_loadu_ps(s[j].as_ptr().add(p)), mv);
                    let ex = exp16(x);
                    _mm512_storeu_ps(e[j].as_mut_ptr().add(p), ex);
                    sv = _mm512_mask_add_ps(sv, lanes(p), sv, ex);
                }
                // Halves added as `attention::block_sum` adds them.
                let t8 = _mm256_add_ps(
                    _mm512_castps512_ps256(sv),
                    _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(sv))),
                );
                sum[i] += crate::x86_64::avx2::sum8_halves(t8);
            }
            // The weighted values, four queries at a time: the positions all four see, then
            // each query's own last ones.
            for j0 in (0..g).step_by(4) {
                let h = (g - j0).min(4);
                let ns: [usize; 4] = std::array::from_fn(|t| if t < h { valid(i0 + j0 + t) } else { 0 });
                let common = ns[..h].iter().copied().min().unwrap_or(0);
                let ops: [*mut f32; 4] =
                    std::array::from_fn(|t| outs[i0 + j0 + if t < h { t } else { 0 }].as_mut_ptr());
                let eps: [*const f32; 4] =
                    std::array::from_fn(|t| e[j0 + if t < h { t } else { 0 }].as_ptr());
                for dc in (0..hd).step_by(64) {
                    let mut a: [[__m512; 4]; 4] = std::array::from_fn(|t| {
                        std::array::from_fn(|c| _mm512_loadu_ps(ops[t].add(dc + 16 * c)))
                    });
                    for p in 0..common {
                        let vr = vf.add(p * hd + dc);
                        let v: [__m512; 4] = std::array::from_fn(|c| _mm512_loadu_ps(vr.add(16 * c)));
                        for (a, ep) in a.iter_mut().zip(eps) {
                            let w = _mm512_set1_ps(*ep.add(p));
                            for c in 0..4 {
                                a[c] = _mm512_fmadd_ps(w, v[c], a[c]);
                            }
                        }
                    }
                    for t in 0..h {
                        for p in common..ns[t] {
                            let (vr, w) = (vf.add(p * hd + dc), _mm512_set1_ps(*eps[t].add(p)));
                            for (c, a) in a[t].iter_mut().enumerate() {
                                *a = _mm512_fmadd_ps(w, _mm512_loadu_ps(vr.add(16 * c)), *a);
                            }
                        }
                        for c in 0..4 {
                            _mm512_storeu_ps(ops[t].add(dc + 16 * c), a[t][c]);
                        }
                    }
                }
            }
            i0 += g;
        }
    }
    for (o, &sm) in outs.iter_mut().zip(&sum) {
        crate::attention::normalize(o, sm);
    }
}

/// 16 vectors of 16 floats transposed: element j of result i is element i of input j.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
    // Pairs of rows interleaved within each 128-bit lane: [a0 b0 a1 b1], [a2 b2 a3 b3].
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // Then pairs of pairs: u[4g + k], lane L = element 4L + k of rows 4g..4g+4.
    let mut u = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        let (t0, t1, t2, t3) = (
            _mm512_castps_pd(t[4 * g]),
            _mm512_castps_pd(t[4 * g + 1]),
            _mm512_castps_pd(t[4 * g + 2]),
            _mm512_castps_pd(t[4 * g + 3]),
        );
        u[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
        u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
        u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
        u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
    }
    // Finally the 128-bit lanes: element 4L + k gathers lane L of u[k], u[4 + k], u[8 + k],
    // u[12 + k] (rows 0-3, 4-7, 8-11, 12-15).
    let mut out = [_mm512_setzero_ps(); 16];
    for k in 0..4 {
        let x = _mm512_shuffle_f32x4::<0x88>(u[k], u[4 + k]);
        let y = _mm512_shuffle_f32x4::<0xdd>(u[k], u[4 + k]);
        let z = _mm512_shuffle_f32x4::<0x88>(u[8 + k], u[12 + k]);
        let w = _mm512_shuffle_f32x4::<0xdd>(u[8 + k], u[12 + k]);
        out[k] = _mm512_shuffle_f32x4::<0x88>(x, z);
        out[8 + k] = _mm512_shuffle_f32x4::<0xdd>(x, z);
        out[4 + k] = _mm512_shuffle_f32x4::<0x88>(y, w);
        out[12 + k] = _mm512_shuffle_f32x4::<0xdd>(y, w);
    }
    out
}

/// `attend_many`'s scores of the G queries `qp` for positions p0..p0 + 16 K of the block's
/// transposed keys `kt` (row d at d x `b`), times `sc`, into `s` (each a chain over the
/// head dimension in order, as `attention::attend_many_ref`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn scores<const K: usize, const G: usize>(
    kt: &[f32],
    b: usize,
    hd: usize,
    p0: usize,
    qp: &[*const f32; G],
    sc: __m512,
    s: &mut [[f32; crate::attention::MANY_BLOCK]; G],
) {
    let mut acc = [[_mm512_setzero_ps(); K]; G];
    for d in 0..hd {
        let k: [__m512; K] = std::array::from_fn(|h| _mm512_loadu_ps(kt.as_ptr().add(d * b + p0 + 16 * h)));
        for (a, q) in acc.iter_mut().zip(qp) {
            let qd = _mm512_set1_ps(*q.add(d));
            for h in 0..K {
                a[h] = _mm512_fmadd_ps(qd, k[h], a[h]);
            }
        }
    }
    for (si, a) in s.iter_mut().zip(acc) {
        for (h, ah) in a.into_iter().enumerate() {
            _mm512_storeu_ps(si.as_mut_ptr().add(p0 + 16 * h), _mm512_mul_ps(ah, sc));
        }
    }
}

/// `math::exp_approx` on 16 lanes: `avx2::exp8`'s operations in 512-bit registers (so the same
/// bits); the rare inputs with |n| > 126 go through `exp8` half by half.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn exp16(x: __m512) -> __m512 {
    use crate::math::{C, LN2_HI, LN2_LO, LOG2E, SHIFT};
    let k = |bits: u32| _mm512_set1_ps(f32::from_bits(bits));
    let z = _mm512_fmadd_ps(x, k(LOG2E), k(SHIFT));
    let n = _mm512_sub_ps(z, k(SHIFT));
    let abs_n = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(n), _mm512_set1_epi32(0x7fff_ffff)));
    if _mm512_cmp_ps_mask::<_CMP_GT_OQ>(abs_n, _mm512_set1_ps(126.0)) != 0 {
        let lo = crate::x86_64::avx2::exp8(_mm512_castps512_ps256(x));
        let hi =
            crate::x86_64::avx2::exp8(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(x))));
        return _mm512_castpd_ps(_mm512_insertf64x4::<1>(
            _mm512_castpd256_pd512(_mm256_castps_pd(lo)),
            _mm256_castps_pd(hi),
        ));
    }
    let b = _mm512_fnmadd_ps(n, k(LN2_LO), _mm512_fnmadd_ps(n, k(LN2_HI), x));
    let e = _mm512_slli_epi32(_mm512_castps_si512(z), 23);
    let scale = _mm512_castsi512_ps(_mm512_add_epi32(e, _mm512_set1_epi32(1f32.to_bits() as i32)));
    let u = _mm512_mul_ps(b, b);
    let j = _mm512_fmadd_ps(
        _mm512_fmadd_ps(_mm512_fmadd_ps(k(C[4]), b, k(C[3])), u, _mm512_fmadd_ps(k(C[2]), b, k(C[1]))),
        u,
        _mm512_mul_ps(k(C[0]), b),
    );
    _mm512_fmadd_ps(j, scale, scale)
}
