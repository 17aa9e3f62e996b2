//! Decode from the file's row layout at the avx512 level: many weight rows against one
//! activation row in one call, so the activation side of every block (its bytes, aligned;
//! its scale as f32; its sum times the weights' offset) is worked out once per call instead
//! of once per row, and eight weight scales are converted in one instruction. What is left
//! per block is the nibbles' unpacking, one `vpdpbusd` and one FMA.

use crate::blocks::{BlockQ4K, BlockQ4_0, BlockQ5K, BlockQ6K, BlockQ8K, BlockQ8_0};
use crate::scalar::k_scales_mins;
use std::arch::x86_64::*;
use std::mem::MaybeUninit;

/// Most blocks per row the per-call activation tables hold (k = 16384).
pub const MAX_BLOCKS: usize = 512;

/// Most super-blocks (256 values) per row the K kernels' tables hold (k = 16384).
pub const MAX_SUPER: usize = 64;

/// How far ahead of its reads a kernel asks for the weights (a prefetch never faults; the
/// address is only computed). 8B Q8_0 `--no-repack` tg16 on the Zen 4, three alternated
/// rounds: 4.55-4.67 t/s at 1 KiB, 4.85-5.04 at 3 KiB; 6 KiB no better; Q4_0 the same at
/// all three. Q4_K_M, five rounds: 5.51-6.33 at four super-blocks (576 bytes), 6.23-6.63
/// at 3 KiB.
const PREFETCH: usize = 3072;

/// The activation side of a call, once: the bytes 32-byte aligned (no load splits a cache
/// line), each block's scale as f32, and `-offset * scale * sum` (the weights go in as
/// unsigned bytes, `offset` above their value, which this takes back off).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn prepare(
    a: &[BlockQ8_0],
    offset: i32,
    qs: &mut [MaybeUninit<__m256i>; MAX_BLOCKS],
    da: &mut [f32; MAX_BLOCKS],
    off: &mut [f32; MAX_BLOCKS],
) {
    for (b, blk) in a.iter().enumerate() {
        let v = _mm256_loadu_si256(blk.qs.as_ptr() as *const __m256i);
        qs[b].write(v);
        da[b] = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(u16::from_le_bytes(blk.d) as i32)));
        // The bytes made unsigned (+128) and summed by `vpsadbw`.
        let s = _mm256_sad_epu8(_mm256_xor_si256(v, _mm256_set1_epi8(-128)), _mm256_setzero_si256());
        let s = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        let sum = _mm_cvtsi128_si32(_mm_add_epi64(s, _mm_unpackhi_epi64(s, s))) - 32 * 128;
        off[b] = -(offset as f32) * da[b] * sum as f32;
    }
}

/// Q4_0 rows (`w`: `out.len()` rows of `a.len()` blocks) against one Q8_0 activation row:
/// `out[r]` = row r . a, the sums of `vec_dot_q4_0_q8_0` (per block `d_w * d_a * sum((q - 8) *
/// a)`) accumulated in another order: `d_w * d_a * sum(q * a)` per block, plus `d_w * (-8 *
/// d_a * sum(a))` eight blocks at a time.
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL and VNNI (reached only through dispatch); `w.len() ==
/// out.len() * a.len()` and `a.len() <= MAX_BLOCKS`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn q4_0_rows_q8_0(w: &[BlockQ4_0], a: &[BlockQ8_0], out: &mut [f32]) {
    let nb = a.len();
    debug_assert!(nb <= MAX_BLOCKS && w.len() == out.len() * nb);
    let mut qs = [MaybeUninit::<__m256i>::uninit(); MAX_BLOCKS];
    let (mut da, mut off) = ([0f32; MAX_BLOCKS], [0f32; MAX_BLOCKS]);
    prepare(a, 8, &mut qs, &mut da, &mut off);
    let qs = qs.as_ptr() as *const __m256i;
    // Word i of the 128 bytes of eight blocks: the f16 scale of block i (every 9th word).
    let scale_words = _mm512_set_epi16(
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 63, 54, 45, 36, 27, 18, 9, 0,
    );
    // Lanes 0-15: the low nibbles (elements 0-15); lanes 16-31, the high ones (16-31).
    let shifts = _mm256_setr_epi64x(0, 0, 4, 4);
    let low4 = _mm256_set1_epi8(15);
    let groups = nb / 8;
    let lane: [__m256i; 8] = std::array::from_fn(|j| _mm256_set1_epi32(j as i32));
    for (r, o) in out.iter_mut().enumerate() {
        let x = &w[r * nb..(r + 1) * nb];
        let xp = x.as_ptr();
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut offsets = _mm256_setzero_ps();
        for g in 0..groups {
            let p = xp.add(8 * g) as *const u8;
            // One line per 64 bytes of the group's 144, PREFETCH bytes ahead.
            for line in 0..3 {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH + 64 * line) as *const i8);
            }
            // The group's eight weight scales in one f16 conversion.
            let lo = _mm512_loadu_si512(p as *const _);
            let hi = _mm512_loadu_si512(p.add(64) as *const _);
            let dw = _mm256_cvtph_ps(_mm512_castsi512_si128(_mm512_permutex2var_epi16(lo, scale_words, hi)));
            offsets = _mm256_fmadd_ps(dw, _mm256_loadu_ps(off.as_ptr().add(8 * g)), offsets);
            let sv = _mm256_mul_ps(dw, _mm256_loadu_ps(da.as_ptr().add(8 * g)));
            for (j, ij) in lane.iter().enumerate() {
                // SAFETY: b < 8 * groups <= nb, the length of x and of the tables' used part.
                let b = 8 * g + j;
                acc[j % 4] = block_fma(acc[j % 4], &*xp.add(b), qs.add(b), sv, *ij, shifts, low4);
            }
        }
        let mut tail = 0f32;
        for b in 8 * groups..nb {
            let dw = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(u16::from_le_bytes(x[b].d) as i32)));
            acc[b % 4] =
                block_fma(acc[b % 4], &x[b], qs.add(b), _mm256_set1_ps(dw * da[b]), lane[0], shifts, low4);
            tail += dw * off[b];
        }
        let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let v = _mm256_add_ps(v, offsets);
        let v = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let v = _mm_add_ps(v, _mm_movehl_ps(v, v));
        *o = _mm_cvtss_f32(_mm_add_ss(v, _mm_movehdup_ps(v))) + tail;
    }
}

/// Q8_0 rows (`w`: `out.len()` rows of `a.len()` blocks) against one Q8_0 activation row:
/// `out[r]` = row r . a, the sums of `vec_dot_q8_0_q8_0` accumulated in another order: the
/// weights go in as unsigned bytes (+128, one `vpxor`), `d_w * d_a * sum((w + 128) * a)` per
/// block, plus `d_w * (-128 * d_a * sum(a))` four blocks at a time.
///
/// # Safety
/// As `q4_0_rows_q8_0`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn q8_0_rows_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0], out: &mut [f32]) {
    let nb = a.len();
    debug_assert!(nb <= MAX_BLOCKS && w.len() == out.len() * nb);
    let mut qs = [MaybeUninit::<__m256i>::uninit(); MAX_BLOCKS];
    let (mut da, mut off) = ([0f32; MAX_BLOCKS], [0f32; MAX_BLOCKS]);
    prepare(a, 128, &mut qs, &mut da, &mut off);
    let qs = qs.as_ptr() as *const __m256i;
    // Word i of the 128 bytes from four blocks' start: the f16 scale of block i (every 17th).
    let scale_words = _mm512_set_epi16(
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 51, 34, 17, 0,
    );
    let lane: [__m256i; 4] = std::array::from_fn(|j| _mm256_set1_epi32(j as i32));
    let sign = _mm256_set1_epi8(-128);
    let groups = nb / 4;
    for (r, o) in out.iter_mut().enumerate() {
        let x = &w[r * nb..(r + 1) * nb];
        let xp = x.as_ptr();
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut offsets = _mm_setzero_ps();
        for g in 0..groups {
            let p = xp.add(4 * g) as *const u8;
            // One line per 64 bytes of the group's 136 (and a bit), PREFETCH bytes ahead.
            for line in 0..3 {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH + 64 * line) as *const i8);
            }
            // The group's four weight scales in one f16 conversion.
            let lo = _mm512_loadu_si512(p as *const _);
            let hi = _mm512_loadu_si512(p.add(64) as *const _);
            let dw = _mm_cvtph_ps(_mm512_castsi512_si128(_mm512_permutex2var_epi16(lo, scale_words, hi)));
            offsets = _mm_fmadd_ps(dw, _mm_loadu_ps(off.as_ptr().add(4 * g)), offsets);
            let sv = _mm256_castps128_ps256(_mm_mul_ps(dw, _mm_loadu_ps(da.as_ptr().add(4 * g))));
            for (j, lj) in lane.iter().enumerate() {
                // SAFETY: b < 4 * groups <= nb, the length of x and of the tables' used part.
                let b = 4 * g + j;
                acc[j] = block_fma_q8(acc[j], &*xp.add(b), qs.add(b), sv, *lj, sign);
            }
        }
        let mut tail = 0f32;
        for b in 4 * groups..nb {
            let dw = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(u16::from_le_bytes(x[b].d) as i32)));
            acc[b % 4] =
                block_fma_q8(acc[b % 4], &x[b], qs.add(b), _mm256_set1_ps(dw * da[b]), lane[0], sign);
            tail += dw * off[b];
        }
        let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let v = _mm_add_ps(_mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)), offsets);
        let v = _mm_add_ps(v, _mm_movehl_ps(v, v));
        *o = _mm_cvtss_f32(_mm_add_ss(v, _mm_movehdup_ps(v))) + tail;
    }
}

/// `vpshufb` masks: mask g copies word g of each 128-bit lane to all eight of its words.
#[repr(align(32))]
struct WordMasks([[u8; 32]; 8]);
static WORD_MASKS: WordMasks = WordMasks({
    let mut m = [[0u8; 32]; 8];
    let mut g = 0;
    while g < 8 {
        let mut i = 0;
        while i < 32 {
            m[g][i] = (2 * g + i % 2) as u8;
            i += 1;
        }
        g += 1;
    }
    m
});

/// A Q4_K or Q5_K super-block as `k_rows_q8_k` reads it.
pub trait KRows {
    /// d, dmin and the packed 6-bit scales and mins.
    fn head(&self) -> ([u8; 2], [u8; 2], &[u8; 12]);
    /// The values of groups 2p (first) and 2p+1 (second) as unsigned bytes.
    ///
    /// # Safety
    /// The CPU must have AVX-512F/BW/VL; p < 4.
    unsafe fn pair(&self, p: usize, m4: __m256i) -> (__m256i, __m256i);
}

impl KRows for BlockQ4K {
    fn head(&self) -> ([u8; 2], [u8; 2], &[u8; 12]) {
        (self.d, self.dmin, &self.scales)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn pair(&self, p: usize, m4: __m256i) -> (__m256i, __m256i) {
        // SAFETY: p < 4: 32 of the 128 bytes of qs.
        let q = unsafe { _mm256_loadu_si256(self.qs.as_ptr().add(32 * p) as *const __m256i) };
        (_mm256_and_si256(q, m4), _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4))
    }
}

impl KRows for BlockQ5K {
    fn head(&self) -> ([u8; 2], [u8; 2], &[u8; 12]) {
        (self.d, self.dmin, &self.scales)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn pair(&self, p: usize, m4: __m256i) -> (__m256i, __m256i) {
        // SAFETY: p < 4: 32 of the 128 bytes of qs.
        let q = unsafe { _mm256_loadu_si256(self.qs.as_ptr().add(32 * p) as *const __m256i) };
        let qh = _mm256_loadu_si256(self.qh.as_ptr() as *const __m256i);
        // The fifth bit of element l of group g is bit g of qh[l]: tested into a mask, 16
        // added where it is set.
        let (lo, hi) = (_mm256_and_si256(q, m4), _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4));
        let sixteen = _mm256_set1_epi8(16);
        let k_lo = _mm256_test_epi8_mask(qh, _mm256_set1_epi8(1 << (2 * p)));
        let k_hi = _mm256_test_epi8_mask(qh, _mm256_set1_epi8((2u8 << (2 * p)) as i8));
        (_mm256_mask_add_epi8(lo, k_lo, lo, sixteen), _mm256_mask_add_epi8(hi, k_hi, hi, sixteen))
    }
}

/// Q4_K or Q5_K rows (`w`: `out.len()` rows of `a.len()` super-blocks) against one Q8_K
/// activation row: `out[r]` = row r . a, the sums of `vec_dot_q4_k_q8_k` /
/// `vec_dot_q5_k_q8_k` (per super-block `d * dy * sum_g sc_g * sum(q * a) - dmin * dy *
/// sum_g m_g * sum_g(a)`, the integer sums exact) accumulated in another order. The
/// activations' bytes (aligned) and group sums are worked out once per call; per group of
/// 32 weights, one `vpmaddubsw` and one `vpdpwssd` that multiplies by the group's scale and
/// accumulates.
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL and VNNI (reached only through dispatch); `w.len() ==
/// out.len() * a.len()` and `a.len() <= MAX_SUPER`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn k_rows_q8_k<B: KRows>(w: &[B], a: &[BlockQ8K], out: &mut [f32]) {
    let nb = a.len();
    debug_assert!(nb <= MAX_SUPER && w.len() == out.len() * nb);
    let mut qs = [MaybeUninit::<[__m256i; 8]>::uninit(); MAX_SUPER];
    // Sums of the activations over each group of 32 (pairs of the 16-sums), as i16 words.
    let mut gsum = [_mm_setzero_si128(); MAX_SUPER];
    for (b, y) in a.iter().enumerate() {
        qs[b].write(std::array::from_fn(|i| _mm256_loadu_si256(y.qs.as_ptr().add(32 * i) as *const __m256i)));
        let p = y.bsums.as_ptr() as *const __m128i;
        gsum[b] = _mm_hadd_epi16(_mm_loadu_si128(p), _mm_loadu_si128(p.add(1)));
    }
    let qs = qs.as_ptr() as *const __m256i;
    let m4 = _mm256_set1_epi8(15);
    let masks = WORD_MASKS.0.as_ptr() as *const __m256i;
    let lines = std::mem::size_of::<B>().div_ceil(64);
    for (r, o) in out.iter_mut().enumerate() {
        let x = &w[r * nb..(r + 1) * nb];
        let mut acc = _mm256_setzero_ps();
        let mut mins_acc = _mm_setzero_ps();
        for (b, xb) in x.iter().enumerate() {
            let ahead = (x.as_ptr().wrapping_add(b) as *const i8).wrapping_add(PREFETCH);
            for line in 0..lines {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * line));
            }
            let (d, dmin, scales) = xb.head();
            let (sc, mn) = k_scales_mins(scales);
            let scw = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(sc as i64)));
            // Two accumulators: each `vpdpwssd` waits on the one before in its chain.
            let mut sums = [_mm256_setzero_si256(); 2];
            for p in 0..4 {
                let (lo, hi) = xb.pair(p, m4);
                // SAFETY: p < 4: 64 of the super-block's 256 activation bytes, two of the
                // eight masks.
                let (a0, a1) =
                    (_mm256_load_si256(qs.add(8 * b + 2 * p)), _mm256_load_si256(qs.add(8 * b + 2 * p + 1)));
                let (s0, s1) = (_mm256_load_si256(masks.add(2 * p)), _mm256_load_si256(masks.add(2 * p + 1)));
                sums[0] = dpwssd(sums[0], _mm256_maddubs_epi16(lo, a0), _mm256_shuffle_epi8(scw, s0));
                sums[1] = dpwssd(sums[1], _mm256_maddubs_epi16(hi, a1), _mm256_shuffle_epi8(scw, s1));
            }
            let sumi = _mm256_add_epi32(sums[0], sums[1]);
            let mins = _mm_madd_epi16(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(mn as i64)), gsum[b]);
            // [d, dmin] times the activations' scale.
            let dd = _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from_le_bytes([d[0], d[1], dmin[0], dmin[1]])));
            let dd = _mm_mul_ps(dd, _mm_set1_ps(a[b].d));
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_broadcastss_ps(dd), acc);
            mins_acc = _mm_fmadd_ps(_mm_cvtepi32_ps(mins), _mm_shuffle_ps::<0b0101_0101>(dd, dd), mins_acc);
        }
        let v = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
        let v = _mm_sub_ps(v, mins_acc);
        let v = _mm_add_ps(v, _mm_movehl_ps(v, v));
        *o = _mm_cvtss_f32(_mm_add_ss(v, _mm_movehdup_ps(v)));
    }
}

/// Q6_K rows (`w`: `out.len()` rows of `a.len()` super-blocks) against one Q8_K activation
/// row: `out[r]` = row r . a, the sums of `vec_dot_q6_k_q8_k` (per super-block `d * dy *
/// sum_g sc_g * (sum(q * a) - 32 * sum_g(a))` over 16 groups of 16, the integer sums exact)
/// accumulated in another order. Per 32 weights: the low four bits and the high two merged
/// by one `vpternlogd`, one `vpmaddubsw`, one `vpdpwssd` by the two groups' scales.
///
/// # Safety
/// As `k_rows_q8_k`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn q6_k_rows_q8_k(w: &[BlockQ6K], a: &[BlockQ8K], out: &mut [f32]) {
    let nb = a.len();
    debug_assert!(nb <= MAX_SUPER && w.len() == out.len() * nb);
    let mut qs = [MaybeUninit::<[__m256i; 8]>::uninit(); MAX_SUPER];
    // The activations' sums over each group of 16, as i16 words.
    let mut bsums = [_mm256_setzero_si256(); MAX_SUPER];
    for (b, y) in a.iter().enumerate() {
        qs[b].write(std::array::from_fn(|i| _mm256_loadu_si256(y.qs.as_ptr().add(32 * i) as *const __m256i)));
        bsums[b] = _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i);
    }
    let qs = qs.as_ptr() as *const __m256i;
    let (m4, m30) = (_mm256_set1_epi8(0x0f), _mm256_set1_epi8(0x30));
    let masks = WORD_MASKS.0.as_ptr() as *const __m256i;
    // Quarter k of a half: groups 2k (low 128-bit lane, word 2k) and 2k+1 (high, word 2k+1).
    let quarter_masks: [__m256i; 4] = std::array::from_fn(|k| {
        _mm256_permute2x128_si256::<0x30>(
            _mm256_load_si256(masks.add(2 * k)),
            _mm256_load_si256(masks.add(2 * k + 1)),
        )
    });
    for (r, o) in out.iter_mut().enumerate() {
        let x = &w[r * nb..(r + 1) * nb];
        let mut acc = _mm256_setzero_ps();
        for (b, xb) in x.iter().enumerate() {
            let ahead = (x.as_ptr().wrapping_add(b) as *const i8).wrapping_add(PREFETCH);
            for line in 0..4 {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * line));
            }
            // The -32 offset: -32 * sum_g sc_g * bsum_g, in 8 i32 lanes.
            let scales = _mm_loadu_si128(xb.scales.as_ptr() as *const __m128i);
            let off = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scales), bsums[b]);
            let mut sums = [
                _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32::<5>(off)),
                _mm256_setzero_si256(),
            ];
            for half in 0..2 {
                let ql0 = _mm256_loadu_si256(xb.ql.as_ptr().add(64 * half) as *const __m256i);
                let ql1 = _mm256_loadu_si256(xb.ql.as_ptr().add(64 * half + 32) as *const __m256i);
                let qh = _mm256_loadu_si256(xb.qh.as_ptr().add(32 * half) as *const __m256i);
                // Groups 8h..8h+8 as i16 words, in both 128-bit lanes.
                let sc8 = if half == 0 { scales } else { _mm_srli_si128::<8>(scales) };
                let sc = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(sc8));
                // Low four bits from ql, bits 4-5 from qh (moved into place, masked): the
                // 16-bit shifts carry bits across bytes only where the masks drop them.
                let quarters = [
                    merge6(ql0, _mm256_and_si256(_mm256_slli_epi16::<4>(qh), m30), m4),
                    merge6(ql1, _mm256_and_si256(_mm256_slli_epi16::<2>(qh), m30), m4),
                    merge6(_mm256_srli_epi16::<4>(ql0), _mm256_and_si256(qh, m30), m4),
                    merge6(
                        _mm256_srli_epi16::<4>(ql1),
                        _mm256_and_si256(_mm256_srli_epi16::<2>(qh), m30),
                        m4,
                    ),
                ];
                for (k, q) in quarters.into_iter().enumerate() {
                    // SAFETY: 4 * half + k < 8: one of the super-block's eight 32-byte parts.
                    let v = _mm256_load_si256(qs.add(8 * b + 4 * half + k));
                    let s = _mm256_shuffle_epi8(sc, quarter_masks[k]);
                    sums[k % 2] = dpwssd(sums[k % 2], _mm256_maddubs_epi16(q, v), s);
                }
            }
            let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(u16::from_le_bytes(xb.d) as i32)));
            let sumi = _mm256_add_epi32(sums[0], sums[1]);
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(d * a[b].d), acc);
        }
        let v = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
        let v = _mm_add_ps(v, _mm_movehl_ps(v, v));
        *o = _mm_cvtss_f32(_mm_add_ss(v, _mm_movehdup_ps(v)));
    }
}

/// `(lo & 0x0f) | hi` per byte in one `vpternlogd` (`m4` selects lo's bits; hi's bits 6-7 and
/// 0-3 must be clear).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn merge6(lo: __m256i, hi: __m256i, m4: __m256i) -> __m256i {
    // Truth table over (A = lo, B = hi, C = m4): C ? A : B.
    _mm256_ternarylogic_epi32::<0xe4>(lo, hi, m4)
}

/// `acc + vpmaddwd(a, b)` as one `vpdpwssd` (LLVM splits the intrinsic into two).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dpwssd(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
    let mut acc = acc;
    // SAFETY: a register-only instruction of AVX512-VNNI/VL, which the callers run.
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

/// One Q8_0 block: `acc += ((w ^ 0x80) . activation bytes) as f32 * sv[lane]` (see
/// `block_fma`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn block_fma_q8(
    acc: __m256,
    x: &BlockQ8_0,
    a: *const __m256i,
    sv: __m256,
    lane: __m256i,
    sign: __m256i,
) -> __m256 {
    let mut acc = acc;
    // SAFETY: reads the 32 bytes of x.qs and 32 (aligned) at a, inside the caller's values;
    // registers only otherwise. The caller runs AVX-512F/VL/VNNI.
    unsafe {
        std::arch::asm!(
            "vpxor {q}, {sign}, ymmword ptr [{x}]",
            "vpxor {t:x}, {t:x}, {t:x}",
            "vpdpbusd {t}, {q}, ymmword ptr [{a}]",
            "vcvtdq2ps {t}, {t}",
            "vpermps {q}, {lane}, {sv}",
            "vfmadd231ps {acc}, {t}, {q}",
            acc = inout(ymm_reg) acc,
            q = out(ymm_reg) _,
            t = out(ymm_reg) _,
            x = in(reg) x.qs.as_ptr(),
            a = in(reg) a,
            sv = in(ymm_reg) sv,
            lane = in(ymm_reg) lane,
            sign = in(ymm_reg) sign,
            options(pure, readonly, nostack, preserves_flags)
        )
    };
    acc
}

/// One block: `acc += (unsigned nibbles . activation bytes) as f32 * s`, `s` broadcast from
/// memory by the FMA. In `asm!` so that the compiler neither turns the nibbles' load into
/// shuffles of the scales' 128-byte load nor each broadcast into shuffles of a register.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn block_fma(
    acc: __m256,
    x: &BlockQ4_0,
    a: *const __m256i,
    sv: __m256,
    lane: __m256i,
    shifts: __m256i,
    low4: __m256i,
) -> __m256 {
    let mut acc = acc;
    // SAFETY: reads the 16 bytes of x.qs and 32 (aligned) at a, inside the caller's values;
    // registers only otherwise. The caller runs AVX-512F/VL/VNNI.
    unsafe {
        std::arch::asm!(
            "vbroadcasti128 {q}, xmmword ptr [{x}]",
            "vpsrlvq {q}, {q}, {shifts}",
            "vpand {q}, {q}, {low4}",
            "vpxor {t:x}, {t:x}, {t:x}",
            "vpdpbusd {t}, {q}, ymmword ptr [{a}]",
            "vcvtdq2ps {t}, {t}",
            "vpermps {q}, {lane}, {sv}",
            "vfmadd231ps {acc}, {t}, {q}",
            acc = inout(ymm_reg) acc,
            q = out(ymm_reg) _,
            t = out(ymm_reg) _,
            x = in(reg) x.qs.as_ptr(),
            a = in(reg) a,
            sv = in(ymm_reg) sv,
            lane = in(ymm_reg) lane,
            shifts = in(ymm_reg) shifts,
            low4 = in(ymm_reg) low4,
            options(pure, readonly, nostack, preserves_flags)
        )
    };
    acc
}
