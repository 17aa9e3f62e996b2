//! Decode from the file's row layout at the avx512 level (`Kernels::rows_decode`): a task's
//! weight rows against one activation row in one call, so the activation side of every
//! block (its bytes 32-byte aligned, its scale as f32, its sum times the weights' offset, or
//! the K types' group sums) is worked out once per call instead of once per row.
//!
//! - `legacy_rows` (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL): values into `vpdpbusd` as
//!   unsigned bytes, the offset or min taken back off a group of blocks at a time; the group's
//!   weight scales gathered by one `vpermt2w` and converted at once; per block one `vpdpbusd`
//!   and one FMA.
//! - `k_rows_q8_k` (Q4_K, Q5_K) and `sixteens_rows` (Q6_K, Q3_K, Q2_K): per group of 32 or 16
//!   weights one `vpmaddubsw` and one `vpdpwssd` by the group's scale; `iq4_xs_rows_q8_k`: the
//!   codebook through `vpshufb`, `vpdpbusd`, the scales by `vpmulld`.
//!
//! Each is tested against the scalar reference in `kernels/tests/levels.rs`
//! (`rows_decode_matches_scalar`).

use crate::blocks::{
    BlockIQ4NL, BlockIQ4XS, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0,
    BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0, BlockQ8_1,
};
use crate::scalar::k_scales_mins;
use crate::x86_64::avx512::{dpwssd256 as dpwssd, IQ4NL_BOOK_U};
use std::arch::x86_64::*;
use std::mem::MaybeUninit;

/// The widest rows the per-call activation tables hold (`dispatch::ROWS_MAX_COLS`).
const MAX_COLS: usize = crate::dispatch::ROWS_MAX_COLS;
/// The same in 32-value blocks and in 256-value super-blocks.
const MAX_BLOCKS: usize = MAX_COLS / 32;
const MAX_SUPER: usize = MAX_COLS / 256;

/// How far ahead of its reads a kernel asks for the weights (a prefetch never faults; the
/// address is only computed). 8B Q8_0 `--no-repack` tg16 on the Zen 4, three alternated
/// rounds: 4.55-4.67 t/s at 1 KiB, 4.85-5.04 at 3 KiB; 6 KiB no better; Q4_0 the same at
/// all three. Q4_K_M, five rounds: 5.51-6.33 at four super-blocks (576 bytes), 6.23-6.63
/// at 3 KiB. Into L2 (`_MM_HINT_T1`, as the interleaved kernels' `pf_blocks`): on the
/// Sapphire Rapids machine, two rounds, `--no-repack` tg32 at avx512 and avx2, 1B Q8_0
/// 13.7-16.2 -> 17.5-19.6 t/s, 1B Q4_0 21.7-22.3 -> 23.4-25.3, 8B Q4_K_M 4.04-4.20 ->
/// 4.57-4.68; 8 KiB ahead then was 2-10% slower than 3.
const PREFETCH: usize = 3072;

/// An activation block of the 32-value types as the row kernels of every x86 level read it
/// (these and `x86_rows_kernels!`'s).
pub trait RowAct {
    fn d(&self) -> [u8; 2];
    fn qs(&self) -> &[i8; 32];
    /// The term the weights' offset or min multiplies: `-offset * d * sum(qs)` (Q8_0), or
    /// `s` (Q8_1, which carries `d * sum(qs)`: Q4_1's min multiplies it). Worked out once
    /// per block and call, so plain code serves every level.
    fn extra(&self, offset: i32, d: f32) -> f32;
}

impl RowAct for BlockQ8_0 {
    fn d(&self) -> [u8; 2] {
        self.d
    }
    fn qs(&self) -> &[i8; 32] {
        &self.qs
    }
    fn extra(&self, offset: i32, d: f32) -> f32 {
        let sum: i32 = self.qs.iter().map(|&q| q as i32).sum();
        -(offset as f32) * d * sum as f32
    }
}

impl RowAct for BlockQ8_1 {
    fn d(&self) -> [u8; 2] {
        self.d
    }
    fn qs(&self) -> &[i8; 32] {
        &self.qs
    }
    fn extra(&self, _offset: i32, _d: f32) -> f32 {
        crate::blocks::f16_le(self.s)
    }
}

use super::f16_to_f32;

/// A 32-value weight block type as `legacy_rows` reads it: its values go into `vpdpbusd`
/// as unsigned bytes, `OFFSET` above what they stand for.
pub trait LegacyRows: Sized {
    type Act: RowAct;
    /// Blocks per scale conversion (4 or 8).
    const GROUP: usize;
    const OFFSET: i32;
    /// Where a group's f16 scales are: words `SCALE_WORDS` of the 64 bytes at its start
    /// (0-31) and of the 64 at byte `SECOND` (32-63), all inside the group. Lanes 0..GROUP:
    /// the scales; with `MINS`, lanes 4-7 the mins (Q4_1, Q5_1).
    const SCALE_WORDS: [i16; 8];
    const SECOND: usize;
    const MINS: bool;
    /// One block's scale and the factor of the activations' extra term (its scale again, or
    /// its min), as f16 bytes: the blocks after the last group.
    fn scales(&self) -> ([u8; 2], [u8; 2]);
    /// `acc += (values . activation bytes at a) as f32 * sv[lane]`.
    ///
    /// # Safety
    /// AVX-512F/BW/VL and VNNI; `a` points at 32 bytes, 32-byte aligned.
    unsafe fn block(acc: __m256, x: &Self, a: *const __m256i, sv: __m256, lane: __m256i) -> __m256;
}

/// The scales of the GROUP blocks at `p` (lanes 0..GROUP) and the factors of the
/// activations' extra terms (the scales again, or the mins), the other lanes zero: one
/// `vpermt2w` over two 64-byte loads, one f16 conversion.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn group_scales<B: LegacyRows>(p: *const B) -> (__m256, __m256) {
    let p = p as *const u8;
    let idx = _mm512_zextsi128_si512(_mm_loadu_si128(B::SCALE_WORDS.as_ptr() as *const __m128i));
    let (lo, hi) = (_mm512_loadu_si512(p as *const _), _mm512_loadu_si512(p.add(B::SECOND) as *const _));
    let v = _mm256_cvtph_ps(_mm512_castsi512_si128(_mm512_permutex2var_epi16(lo, idx, hi)));
    let low4 = _mm256_zextps128_ps256(_mm256_castps256_ps128(v));
    match (B::MINS, B::GROUP) {
        (true, _) => (low4, _mm256_zextps128_ps256(_mm256_extractf128_ps::<1>(v))),
        (false, 4) => (low4, low4),
        _ => (v, v),
    }
}

/// Implements `LegacyRows` for a block type: activations, group size, offset, where a
/// group's scales are, whether it has mins, and its block step.
macro_rules! legacy_rows_type {
    ($b:ty, $act:ty, $group:literal, $offset:literal, $words:expr, $second:literal, mins: $mins:tt,
     |$x:ident, $acc:ident, $a:ident, $sv:ident, $lane:ident| $step:expr) => {
        impl LegacyRows for $b {
            type Act = $act;
            const GROUP: usize = $group;
            const OFFSET: i32 = $offset;
            const SCALE_WORDS: [i16; 8] = $words;
            const SECOND: usize = $second;
            const MINS: bool = legacy_rows_type!(@mins $mins);
            fn scales(&self) -> ([u8; 2], [u8; 2]) {
                legacy_rows_type!(@scales self, $mins)
            }
            #[inline]
            #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
            unsafe fn block(
                $acc: __m256,
                $x: &Self,
                $a: *const __m256i,
                $sv: __m256,
                $lane: __m256i,
            ) -> __m256 {
                $step
            }
        }
    };
    (@mins m) => { true };
    (@mins none) => { false };
    (@scales $s:ident, m) => { ($s.d, $s.m) };
    (@scales $s:ident, none) => { ($s.d, $s.d) };
}

// Q4_0 and IQ4_NL: every 9th word of eight blocks' first 128 bytes.
legacy_rows_type!(BlockQ4_0, BlockQ8_0, 8, 8, [0, 9, 18, 27, 36, 45, 54, 63], 64, mins: none,
    |x, acc, a, sv, lane| dot_fma(acc, nibbles(&x.qs), a, sv, lane));
legacy_rows_type!(BlockIQ4NL, BlockQ8_0, 8, 128, [0, 9, 18, 27, 36, 45, 54, 63], 64, mins: none,
|x, acc, a, sv, lane| {
    let book = _mm256_broadcastsi128_si256(_mm_loadu_si128(IQ4NL_BOOK_U.as_ptr() as *const __m128i));
    dot_fma(acc, _mm256_shuffle_epi8(book, nibbles(&x.qs)), a, sv, lane)
});
// Q4_1: d at words 0, 10, 20, 30 of four blocks, m one word after (the second load unused).
legacy_rows_type!(BlockQ4_1, BlockQ8_1, 4, 0, [0, 10, 20, 30, 1, 11, 21, 31], 16, mins: m,
    |x, acc, a, sv, lane| dot_fma(acc, nibbles(&x.qs), a, sv, lane));
// Q5_0: d at bytes 0, 22, 44, 66 of four blocks: words 0, 11, 22, and 21 of the 64 from byte
// 24 (inside the group's 88).
legacy_rows_type!(BlockQ5_0, BlockQ8_0, 4, 16, [0, 11, 22, 53, 0, 0, 0, 0], 24, mins: none,
    |x, acc, a, sv, lane| dot_fma(acc, five_bits(&x.qs, &x.qh), a, sv, lane));
// Q5_1: d at bytes 0, 24, 48, 72, m two after: words 0, 12, 24 (1, 13, 25), and 20 (21) of
// the 64 from byte 32.
legacy_rows_type!(BlockQ5_1, BlockQ8_1, 4, 0, [0, 12, 24, 52, 1, 13, 25, 53], 32, mins: m,
    |x, acc, a, sv, lane| dot_fma(acc, five_bits(&x.qs, &x.qh), a, sv, lane));
// Q8_0: every 17th word of four blocks' first 128 bytes.
legacy_rows_type!(BlockQ8_0, BlockQ8_0, 4, 128, [0, 17, 34, 51, 0, 0, 0, 0], 64, mins: none,
    |x, acc, a, sv, lane| dot_fma(acc, q8_unsigned(&x.qs), a, sv, lane));

/// Rows of a 32-value block type (`w`: `out.len()` rows of `a.len()` blocks) against one
/// activation row: `out[r]` = row r . a, the sums of the type's `vec_dot` accumulated in
/// another order: `d_w * d_a * sum(u * a)` per block (u the values as unsigned bytes), plus
/// the extra terms (`d_w * (-offset * d_a * sum(a))`, or Q4_1's `m * s`) GROUP blocks at a
/// time. The activation side (bytes 32-byte aligned, so no load splits a cache line; scale as
/// f32; extra term) is worked out once per call, and GROUP weight scales are gathered by one
/// `vpermt2w` and converted at once.
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL and VNNI (reached only through dispatch); `w.len() ==
/// out.len() * a.len()` and rows at most `MAX_COLS` values wide.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn legacy_rows<B: LegacyRows>(w: &[B], a: &[B::Act], out: &mut [f32]) {
    let nb = a.len();
    debug_assert!(nb <= MAX_BLOCKS && w.len() == out.len() * nb);
    let mut qs = [MaybeUninit::<__m256i>::uninit(); MAX_BLOCKS];
    // Eight more than the blocks: a group's 8-lane loads may reach past the last block (the
    // lanes past the group are multiplied by zeros). Only what is read is written: this runs
    // once per task of every matrix-vector product.
    let mut da = [MaybeUninit::<f32>::uninit(); MAX_BLOCKS + 8];
    let mut extra = [MaybeUninit::<f32>::uninit(); MAX_BLOCKS + 8];
    for (b, blk) in a.iter().enumerate() {
        qs[b].write(_mm256_loadu_si256(blk.qs().as_ptr() as *const __m256i));
        let d = f16_to_f32(blk.d());
        da[b].write(d);
        extra[b].write(blk.extra(B::OFFSET, d));
    }
    for b in nb..nb + 8 {
        da[b].write(0.0);
        extra[b].write(0.0);
    }
    let qs = qs.as_ptr() as *const __m256i;
    let (da, extra) = (da.as_ptr() as *const f32, extra.as_ptr() as *const f32);
    let lane: [__m256i; 8] = std::array::from_fn(|j| _mm256_set1_epi32(j as i32));
    let groups = nb / B::GROUP;
    let lines = (B::GROUP * std::mem::size_of::<B>()).div_ceil(64);
    for (r, o) in out.iter_mut().enumerate() {
        let x = &w[r * nb..(r + 1) * nb];
        let xp = x.as_ptr();
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut extras = _mm256_setzero_ps();
        for g in 0..groups {
            let p = xp.add(B::GROUP * g);
            // A line per 64 bytes of the group, PREFETCH bytes ahead.
            for line in 0..lines {
                _mm_prefetch::<_MM_HINT_T1>((p as *const i8).wrapping_add(PREFETCH + 64 * line));
            }
            let (dw, fw) = group_scales(p);
            // SAFETY: GROUP * g + 8 <= nb + 8: written above.
            extras = _mm256_fmadd_ps(fw, _mm256_loadu_ps(extra.add(B::GROUP * g)), extras);
            let sv = _mm256_mul_ps(dw, _mm256_loadu_ps(da.add(B::GROUP * g)));
            for (j, lj) in lane.iter().enumerate().take(B::GROUP) {
                // SAFETY: b < GROUP * groups <= nb, the length of x and of the tables' used part.
                let b = B::GROUP * g + j;
                acc[j % 4] = B::block(acc[j % 4], &*xp.add(b), qs.add(b), sv, *lj);
            }
        }
        let mut tail = 0f32;
        for b in B::GROUP * groups..nb {
            let (dw, fw) = x[b].scales();
            let (dw, fw) = (f16_to_f32(dw), f16_to_f32(fw));
            acc[b % 4] = B::block(acc[b % 4], &x[b], qs.add(b), _mm256_set1_ps(dw * *da.add(b)), lane[0]);
            tail += fw * *extra.add(b);
        }
        let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        *o = total(_mm256_add_ps(v, extras), _mm_setzero_ps()) + tail;
    }
}

/// The 256 activation bytes of a Q8_K block as eight registers (copied once per call into
/// aligned memory).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q8k_bytes(y: &BlockQ8K) -> [__m256i; 8] {
    let mut v = [_mm256_setzero_si256(); 8];
    for (i, vi) in v.iter_mut().enumerate() {
        *vi = _mm256_loadu_si256(y.qs.as_ptr().add(32 * i) as *const __m256i);
    }
    v
}

/// A Q8_K block's sums over each group of 32 (pairs of its 16-sums), as eight i16 words.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q8k_group_sums(y: &BlockQ8K) -> __m128i {
    let p = y.bsums.as_ptr() as *const __m128i;
    _mm_hadd_epi16(_mm_loadu_si128(p), _mm_loadu_si128(p.add(1)))
}

/// The sum of `acc`'s eight lanes less the sum of `minus`'s four.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn total(acc: __m256, minus: __m128) -> f32 {
    let v = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    let v = _mm_sub_ps(v, minus);
    let v = _mm_add_ps(v, _mm_movehl_ps(v, v));
    _mm_cvtss_f32(_mm_add_ss(v, _mm_movehdup_ps(v)))
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
/// out.len() * a.len()` and rows at most `MAX_COLS` values wide.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn k_rows_q8_k<B: KRows>(w: &[B], a: &[BlockQ8K], out: &mut [f32]) {
    let nb = a.len();
    debug_assert!(nb <= MAX_SUPER && w.len() == out.len() * nb);
    let mut qs = [MaybeUninit::<[__m256i; 8]>::uninit(); MAX_SUPER];
    // Sums of the activations over each group of 32 (pairs of the 16-sums), as i16 words.
    // Written for every b < nb below, and read only there (as are the bytes).
    let mut gsum = [MaybeUninit::<__m128i>::uninit(); MAX_SUPER];
    for (b, y) in a.iter().enumerate() {
        qs[b].write(q8k_bytes(y));
        gsum[b].write(q8k_group_sums(y));
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
                _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(64 * line));
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
            let mins = _mm_madd_epi16(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(mn as i64)), gsum[b].assume_init());
            // [d, dmin] times the activations' scale.
            let dd = _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from_le_bytes([d[0], d[1], dmin[0], dmin[1]])));
            let dd = _mm_mul_ps(dd, _mm_set1_ps(a[b].d));
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_broadcastss_ps(dd), acc);
            mins_acc = _mm_fmadd_ps(_mm_cvtepi32_ps(mins), _mm_shuffle_ps::<0b0101_0101>(dd, dd), mins_acc);
        }
        *o = total(acc, mins_acc);
    }
}

/// IQ4_XS rows (`w`: `out.len()` rows of `a.len()` super-blocks) against one Q8_K activation
/// row: `out[r]` = row r . a, the sums of `vec_dot_iq4_xs_q8_k` (per super-block `d * dy *
/// sum_g ls_g * sum(book[q] * a)`, ls_g the 6-bit scale - 32, the integer sums exact)
/// accumulated in another order. Each 32 bytes of qs hold groups 2p and 2p+1 (16 bytes each:
/// low nibbles elements 0-15, high ones 16-31), so the activations are laid out once per
/// call to match (the low nibbles' register: elements 0-15 of both groups); each nibble goes
/// through the codebook + 128 (`vpshufb`: unsigned for `vpdpbusd`, whose sums do not
/// saturate as `vpmaddubsw`'s would), the pair's sums are multiplied by their scales in one
/// `vpmulld`, and `128 * sum_g ls_g * sum_g(a)` comes back off per super-block.
///
/// # Safety
/// As `k_rows_q8_k`, and BMI2 (which the avx512 level requires).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,bmi2")]
pub unsafe fn iq4_xs_rows_q8_k(w: &[BlockIQ4XS], a: &[BlockQ8K], out: &mut [f32]) {
    let nb = a.len();
    debug_assert!(nb <= MAX_SUPER && w.len() == out.len() * nb);
    let mut qs = [MaybeUninit::<[__m256i; 8]>::uninit(); MAX_SUPER];
    // Written for every b < nb below, and read only there (as are the bytes).
    let mut gsum = [MaybeUninit::<__m128i>::uninit(); MAX_SUPER];
    for (b, y) in a.iter().enumerate() {
        // Pair p: [group 2p's elements 0-15 | group 2p+1's 0-15], then their 16-31. (Loops,
        // not closures: a closure would not inherit the target features.)
        let mut parts = [_mm256_setzero_si256(); 8];
        for (i, part) in parts.iter_mut().enumerate() {
            let (p, half) = (i / 2, i % 2);
            let q = |j: usize| y.qs.as_ptr().add(16 * j) as *const __m128i;
            *part = _mm256_set_m128i(_mm_loadu_si128(q(4 * p + 2 + half)), _mm_loadu_si128(q(4 * p + half)));
        }
        qs[b].write(parts);
        gsum[b].write(q8k_group_sums(y));
    }
    let qs = qs.as_ptr() as *const __m256i;
    let m4 = _mm256_set1_epi8(15);
    let book = _mm256_broadcastsi128_si256(_mm_loadu_si128(IQ4NL_BOOK_U.as_ptr() as *const __m128i));
    // Pair p's scales: lanes 0-3 group 2p's, lanes 4-7 group 2p+1's (a `vpermd` index).
    let mut pair_idx = [_mm256_setzero_si256(); 4];
    for (p, idx) in pair_idx.iter_mut().enumerate() {
        let (g0, g1) = (2 * p as i32, 2 * p as i32 + 1);
        *idx = _mm256_setr_epi32(g0, g0, g0, g0, g1, g1, g1, g1);
    }
    for (r, o) in out.iter_mut().enumerate() {
        let x = &w[r * nb..(r + 1) * nb];
        let mut acc = _mm256_setzero_ps();
        let mut offs = _mm_setzero_ps();
        for (b, xb) in x.iter().enumerate() {
            let ahead = (x.as_ptr().wrapping_add(b) as *const i8).wrapping_add(PREFETCH);
            for line in 0..3 {
                _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(64 * line));
            }
            // The eight scales ls_g (6 bits - 32) as i16 words and as i32 lanes.
            // Byte g: nibble g of scales_l, and bits 2g..2g+2 of scales_h above it (`pdep`).
            let h = u16::from_le_bytes(xb.scales_h) as u64;
            let l = u32::from_le_bytes(xb.scales_l) as u64;
            let bytes = _pdep_u64(l, 0x0f0f_0f0f_0f0f_0f0f) | _pdep_u64(h, 0x3030_3030_3030_3030);
            let lsw = _mm_sub_epi16(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(bytes as i64)), _mm_set1_epi16(32));
            let lsd = _mm256_cvtepi16_epi32(lsw);
            let mut sumi = _mm256_setzero_si256();
            for (p, idx) in pair_idx.iter().enumerate() {
                // SAFETY: p < 4: 32 of the 128 bytes of qs, two of the super-block's eight
                // 32-byte activation parts.
                let q = _mm256_loadu_si256(xb.qs.as_ptr().add(32 * p) as *const __m256i);
                let lo = _mm256_shuffle_epi8(book, _mm256_and_si256(q, m4));
                let hi = _mm256_shuffle_epi8(book, _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4));
                let (a0, a1) =
                    (_mm256_load_si256(qs.add(8 * b + 2 * p)), _mm256_load_si256(qs.add(8 * b + 2 * p + 1)));
                let t = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), lo, a0), hi, a1);
                sumi = _mm256_add_epi32(sumi, _mm256_mullo_epi32(t, _mm256_permutevar8x32_epi32(lsd, *idx)));
            }
            // The codebook's +128: 128 * sum_g ls_g * sum_g(a), in four i32 lanes.
            let off = _mm_madd_epi16(lsw, gsum[b].assume_init());
            let dd = f16_to_f32(xb.d) * a[b].d;
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(dd), acc);
            offs = _mm_fmadd_ps(_mm_cvtepi32_ps(off), _mm_set1_ps(128.0 * dd), offs);
        }
        *o = total(acc, offs);
    }
}

/// A Q6_K, Q3_K or Q2_K super-block as `sixteens_rows` reads it: 16 groups of 16 weights
/// with 8-bit scales, the values as unsigned bytes `OFFSET` above what they stand for, and
/// (Q2_K) a min per group.
pub trait SixteensRows {
    /// The values' offset (Q6_K: 32, Q3_K: 4, Q2_K: 0).
    const OFFSET: i32;
    fn d(&self) -> [u8; 2];
    /// dmin and the 16 mins (as bytes), where the type has them.
    ///
    /// # Safety
    /// The CPU must have the avx512 level's features.
    unsafe fn mins(&self) -> Option<([u8; 2], __m128i)> {
        None
    }
    /// The 16 group scales.
    ///
    /// # Safety
    /// The CPU must have the avx512 level's features.
    unsafe fn scales(&self) -> __m128i;
    /// Half h's four quarters of 32 values (quarter k: groups 8h+2k, then 8h+2k+1).
    ///
    /// # Safety
    /// AVX-512F/BW/VL; h < 2.
    unsafe fn quarters(&self, h: usize) -> [__m256i; 4];
}

impl SixteensRows for BlockQ6K {
    const OFFSET: i32 = 32;
    fn d(&self) -> [u8; 2] {
        self.d
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn scales(&self) -> __m128i {
        _mm_loadu_si128(self.scales.as_ptr() as *const __m128i)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn quarters(&self, h: usize) -> [__m256i; 4] {
        let (m4, m30) = (_mm256_set1_epi8(0x0f), _mm256_set1_epi8(0x30));
        // SAFETY: h < 2: 64 of ql's 128 bytes, 32 of qh's 64.
        let (ql0, ql1, qh) = unsafe {
            (
                _mm256_loadu_si256(self.ql.as_ptr().add(64 * h) as *const __m256i),
                _mm256_loadu_si256(self.ql.as_ptr().add(64 * h + 32) as *const __m256i),
                _mm256_loadu_si256(self.qh.as_ptr().add(32 * h) as *const __m256i),
            )
        };
        // Low four bits from ql, bits 4-5 from qh (moved into place, masked): the 16-bit
        // shifts carry bits across bytes only where the masks drop them.
        [
            merge6(ql0, _mm256_and_si256(_mm256_slli_epi16::<4>(qh), m30), m4),
            merge6(ql1, _mm256_and_si256(_mm256_slli_epi16::<2>(qh), m30), m4),
            merge6(_mm256_srli_epi16::<4>(ql0), _mm256_and_si256(qh, m30), m4),
            merge6(_mm256_srli_epi16::<4>(ql1), _mm256_and_si256(_mm256_srli_epi16::<2>(qh), m30), m4),
        ]
    }
}

impl SixteensRows for BlockQ3K {
    const OFFSET: i32 = 4;
    fn d(&self) -> [u8; 2] {
        self.d
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn scales(&self) -> __m128i {
        crate::x86_64::avx512::q3_k_scales_i8(&self.scales)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn quarters(&self, h: usize) -> [__m256i; 4] {
        // Quarter j: bits 2j..2j+2 of qs[32h..32h+32], plus 4 where bit 4h+j of hmask is set
        // (tested into a mask register).
        // SAFETY: h < 2: 32 of qs's 64 bytes.
        let q = unsafe { _mm256_loadu_si256(self.qs.as_ptr().add(32 * h) as *const __m256i) };
        let hm = _mm256_loadu_si256(self.hmask.as_ptr() as *const __m256i);
        let (m3, four) = (_mm256_set1_epi8(3), _mm256_set1_epi8(4));
        let lows = [q, _mm256_srli_epi16::<2>(q), _mm256_srli_epi16::<4>(q), _mm256_srli_epi16::<6>(q)];
        let mut out = [_mm256_setzero_si256(); 4];
        for (j, (o, low)) in out.iter_mut().zip(lows).enumerate() {
            let lo = _mm256_and_si256(low, m3);
            let k = _mm256_test_epi8_mask(hm, _mm256_set1_epi8((1u8 << (4 * h + j)) as i8));
            *o = _mm256_mask_add_epi8(lo, k, lo, four);
        }
        out
    }
}

impl SixteensRows for BlockQ2K {
    const OFFSET: i32 = 0;
    fn d(&self) -> [u8; 2] {
        self.d
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn mins(&self) -> Option<([u8; 2], __m128i)> {
        let s = _mm_loadu_si128(self.scales.as_ptr() as *const __m128i);
        Some((self.dmin, _mm_and_si128(_mm_srli_epi16::<4>(s), _mm_set1_epi8(15))))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn scales(&self) -> __m128i {
        _mm_and_si128(_mm_loadu_si128(self.scales.as_ptr() as *const __m128i), _mm_set1_epi8(15))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn quarters(&self, h: usize) -> [__m256i; 4] {
        // Quarter j: bits 2j..2j+2 of qs[32h..32h+32].
        // SAFETY: h < 2: 32 of qs's 64 bytes.
        let q = unsafe { _mm256_loadu_si256(self.qs.as_ptr().add(32 * h) as *const __m256i) };
        let m3 = _mm256_set1_epi8(3);
        [
            _mm256_and_si256(q, m3),
            _mm256_and_si256(_mm256_srli_epi16::<2>(q), m3),
            _mm256_and_si256(_mm256_srli_epi16::<4>(q), m3),
            _mm256_and_si256(_mm256_srli_epi16::<6>(q), m3),
        ]
    }
}

/// Q6_K, Q3_K or Q2_K rows (`w`: `out.len()` rows of `a.len()` super-blocks) against one
/// Q8_K activation row: `out[r]` = row r . a, the sums of the type's `vec_dot` (per
/// super-block `d * dy * sum_g sc_g * (sum(u * a) - offset * sum_g(a))` over 16 groups of 16,
/// the integer sums exact, less Q2_K's `dmin * dy * sum_g m_g * sum_g(a)`) accumulated in
/// another order. Per 32 weights one `vpmaddubsw` and one `vpdpwssd` by the two groups'
/// scales.
///
/// # Safety
/// As `k_rows_q8_k`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn sixteens_rows<B: SixteensRows>(w: &[B], a: &[BlockQ8K], out: &mut [f32]) {
    let nb = a.len();
    debug_assert!(nb <= MAX_SUPER && w.len() == out.len() * nb);
    let mut qs = [MaybeUninit::<[__m256i; 8]>::uninit(); MAX_SUPER];
    // The activations' sums over each group of 16, as i16 words.
    // Written for every b < nb below, and read only there (as are the bytes).
    let mut bsums = [MaybeUninit::<__m256i>::uninit(); MAX_SUPER];
    for (b, y) in a.iter().enumerate() {
        qs[b].write(q8k_bytes(y));
        bsums[b].write(_mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i));
    }
    let qs = qs.as_ptr() as *const __m256i;
    let masks = WORD_MASKS.0.as_ptr() as *const __m256i;
    // Quarter k of a half: groups 2k (low 128-bit lane, word 2k) and 2k+1 (high, word 2k+1).
    let mut quarter_masks = [_mm256_setzero_si256(); 4];
    for (k, m) in quarter_masks.iter_mut().enumerate() {
        *m = _mm256_permute2x128_si256::<0x30>(
            _mm256_load_si256(masks.add(2 * k)),
            _mm256_load_si256(masks.add(2 * k + 1)),
        );
    }
    let lines = std::mem::size_of::<B>().div_ceil(64);
    for (r, o) in out.iter_mut().enumerate() {
        let x = &w[r * nb..(r + 1) * nb];
        let (mut acc, mut mins_acc) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for (b, xb) in x.iter().enumerate() {
            let ahead = (x.as_ptr().wrapping_add(b) as *const i8).wrapping_add(PREFETCH);
            for line in 0..lines {
                _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(64 * line));
            }
            // The offset: -offset * sum_g sc_g * bsum_g, in 8 i32 lanes.
            let scales = xb.scales();
            let mut sums = [_mm256_setzero_si256(); 2];
            if B::OFFSET != 0 {
                let off = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scales), bsums[b].assume_init());
                sums[0] = _mm256_mullo_epi32(off, _mm256_set1_epi32(-B::OFFSET));
            }
            for half in 0..2 {
                // Groups 8h..8h+8 as i16 words, in both 128-bit lanes.
                let sc8 = if half == 0 { scales } else { _mm_srli_si128::<8>(scales) };
                let sc = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(sc8));
                for (k, q) in xb.quarters(half).into_iter().enumerate() {
                    // SAFETY: 4 * half + k < 8: one of the super-block's eight 32-byte parts.
                    let v = _mm256_load_si256(qs.add(8 * b + 4 * half + k));
                    let s = _mm256_shuffle_epi8(sc, quarter_masks[k]);
                    sums[k % 2] = dpwssd(sums[k % 2], _mm256_maddubs_epi16(q, v), s);
                }
            }
            let d = f16_to_f32(xb.d());
            let sumi = _mm256_add_epi32(sums[0], sums[1]);
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(d * a[b].d), acc);
            if let Some((dmin, mins)) = xb.mins() {
                let m = _mm256_madd_epi16(_mm256_cvtepu8_epi16(mins), bsums[b].assume_init());
                let dm = _mm256_set1_ps(f16_to_f32(dmin) * a[b].d);
                mins_acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(m), dm, mins_acc);
            }
        }
        let minus = _mm_add_ps(_mm256_castps256_ps128(mins_acc), _mm256_extractf128_ps(mins_acc, 1));
        *o = total(acc, minus);
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

/// `acc += (u . activation bytes at a) as f32 * sv[lane]`: one block's `vpdpbusd` (u its
/// values as unsigned bytes), its scale taken from `sv` by `vpermps`, one FMA. In `asm!`, as
/// are the weights' loads below: in intrinsics the compiler turned the weights' loads into
/// shuffles of the group scales' 128-byte load and each scale's broadcast into two shuffles.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dot_fma(acc: __m256, u: __m256i, a: *const __m256i, sv: __m256, lane: __m256i) -> __m256 {
    let mut acc = acc;
    // SAFETY: reads 32 (aligned) bytes at a, inside the caller's activations; registers only
    // otherwise. The caller runs AVX-512F/VL/VNNI.
    unsafe {
        std::arch::asm!(
            "vpxor {t:x}, {t:x}, {t:x}",
            "vpdpbusd {t}, {u}, ymmword ptr [{a}]",
            "vcvtdq2ps {t}, {t}",
            "vpermps {s}, {lane}, {sv}",
            "vfmadd231ps {acc}, {t}, {s}",
            acc = inout(ymm_reg) acc,
            t = out(ymm_reg) _,
            s = out(ymm_reg) _,
            u = in(ymm_reg) u,
            a = in(reg) a,
            sv = in(ymm_reg) sv,
            lane = in(ymm_reg) lane,
            options(pure, readonly, nostack, preserves_flags)
        )
    };
    acc
}

/// The 32 nibbles of 16 bytes as bytes: the low nibbles (elements 0-15) in lanes 0-15, the
/// high ones (16-31) in lanes 16-31.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn nibbles(qs: &[u8; 16]) -> __m256i {
    let shifts = _mm256_setr_epi64x(0, 0, 4, 4);
    let low4 = _mm256_set1_epi8(15);
    let q;
    // SAFETY: reads the 16 bytes of qs; registers only otherwise. The caller runs AVX2.
    unsafe {
        std::arch::asm!(
            "vbroadcasti128 {q}, xmmword ptr [{x}]",
            "vpsrlvq {q}, {q}, {shifts}",
            "vpand {q}, {q}, {low4}",
            q = out(ymm_reg) q,
            x = in(reg) qs.as_ptr(),
            shifts = in(ymm_reg) shifts,
            low4 = in(ymm_reg) low4,
            options(pure, readonly, nostack, preserves_flags)
        )
    };
    q
}

/// A Q5_0 or Q5_1 block's values: the nibbles, plus 16 where qh has element e's bit (qh
/// loaded straight into a mask register, 16 added under it).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn five_bits(qs: &[u8; 16], qh: &[u8; 4]) -> __m256i {
    let n = nibbles(qs);
    _mm256_mask_add_epi8(n, u32::from_le_bytes(*qh), n, _mm256_set1_epi8(16))
}

/// A Q8_0 block's bytes made unsigned (+128) by one `vpxor`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q8_unsigned(qs: &[i8; 32]) -> __m256i {
    let sign = _mm256_set1_epi8(-128);
    let q;
    // SAFETY: reads the 32 bytes of qs; registers only otherwise. The caller runs AVX2.
    unsafe {
        std::arch::asm!(
            "vpxor {q}, {sign}, ymmword ptr [{x}]",
            q = out(ymm_reg) q,
            x = in(reg) qs.as_ptr(),
            sign = in(ymm_reg) sign,
            options(pure, readonly, nostack, preserves_flags)
        )
    };
    q
}
