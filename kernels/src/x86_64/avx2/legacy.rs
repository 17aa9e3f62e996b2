//! 256-bit dot products of the 32-element block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
//! IQ4_NL) with Q8_0/Q8_1 activations, and of the float types (F32, F16, BF16). One body serves the avx2, avxvnni and avx512 levels: `x86_kernels!`
//! instantiates it with each level's `mul_sum` (u8 x i8 products summed in i32 lanes).

/// Expands, inside a level's module, to that level's legacy-type kernels. `$feat` is the
/// target-feature list; `mul_sum(acc, u, s)` must be defined in the calling module.
#[macro_export]
#[doc(hidden)]
macro_rules! x86_legacy_kernels {
    ($feat:literal) => {
        use $crate::blocks::*;

        /// The 32 nibbles of a Q4 block as bytes 0..16: low nibbles in lanes 0-15 (elements
        /// 0-15), high nibbles in lanes 16-31 (elements 16-31).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn unpack_nibbles(qs: &[u8; 16]) -> __m256i {
            let b = _mm_loadu_si128(qs.as_ptr() as *const __m128i);
            let lo = _mm_and_si128(b, _mm_set1_epi8(15));
            let hi = _mm_and_si128(_mm_srli_epi16(b, 4), _mm_set1_epi8(15));
            _mm256_set_m128i(hi, lo)
        }

        /// An f16 scale broadcast to 8 f32 lanes.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn h2f8(b: [u8; 2]) -> __m256 {
            _mm256_cvtph_ps(_mm_set1_epi16(i16::from_le_bytes(b)))
        }

        /// Q4_1's per-block m * s for four rows at once (lane r = row r), multiplied and added
        /// as separate f32 operations in block order, as llama.cpp's scalar sum does.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn min_terms(acc: __m128, a: [&BlockQ4_1; 4], b: &BlockQ8_1) -> __m128 {
            let m = _mm_setr_epi16(
                i16::from_le_bytes(a[0].m),
                i16::from_le_bytes(a[1].m),
                i16::from_le_bytes(a[2].m),
                i16::from_le_bytes(a[3].m),
                0,
                0,
                0,
                0,
            );
            let s = _mm_cvtph_ps(_mm_set1_epi16(i16::from_le_bytes(b.s)));
            _mm_add_ps(acc, _mm_mul_ps(_mm_cvtph_ps(m), s))
        }

        /// Signed x signed bytes summed into i32 lanes: |x| as unsigned times y with x's sign.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn mul_sum_i8(acc: __m256i, x: __m256i, y: __m256i) -> __m256i {
            mul_sum(acc, _mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
        }

        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn hsum(v: __m256) -> f32 {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }

        /// One block's contribution: acc += dx * dy * (i32 lanes as f32).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn scale_acc(acc: __m256, dx: [u8; 2], dy: [u8; 2], s: __m256i) -> __m256 {
            _mm256_fmadd_ps(_mm256_mul_ps(h2f8(dx), h2f8(dy)), _mm256_cvtepi32_ps(s), acc)
        }

        /// Runs `$block(a, b) -> __m256` (one block's scaled products) over block pairs into
        /// two accumulators, so consecutive blocks do not wait on one FMA chain.
        macro_rules! two_chains {
            ($x:expr, $y:expr, $block:expr) => {{
                let (x, y) = ($x, $y);
                let n = x.len().min(y.len());
                let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                for (xa, ya) in x[..n].chunks_exact(2).zip(y[..n].chunks_exact(2)) {
                    // Ask for the weights ~512 bytes ahead (see q4_k_tile!); one line per pair
                    // of blocks covers blocks of up to 32 bytes, the rest still gains.
                    let ahead = xa.as_ptr().wrapping_add(1024 / std::mem::size_of_val(&xa[0]));
                    _mm_prefetch::<_MM_HINT_T1>(ahead as *const i8);
                    acc0 = $block(acc0, &xa[0], &ya[0]);
                    acc1 = $block(acc1, &xa[1], &ya[1]);
                }
                if n % 2 == 1 {
                    acc0 = $block(acc0, &x[n - 1], &y[n - 1]);
                }
                _mm256_add_ps(acc0, acc1)
            }};
        }

        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
            let eight = _mm256_set1_epi8(8);
            let acc = two_chains!(x, y, |acc, a: &BlockQ4_0, b: &BlockQ8_0| {
                let q = _mm256_sub_epi8(unpack_nibbles(&a.qs), eight);
                let v = _mm256_loadu_si256(b.qs.as_ptr() as *const __m256i);
                scale_acc(acc, a.d, b.d, mul_sum_i8(_mm256_setzero_si256(), q, v))
            });
            hsum(acc)
        }

        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
            let acc = two_chains!(x, y, |acc, a: &BlockQ4_1, b: &BlockQ8_1| {
                let q = unpack_nibbles(&a.qs);
                let v = _mm256_loadu_si256(b.qs.as_ptr() as *const __m256i);
                scale_acc(acc, a.d, b.d, mul_sum(_mm256_setzero_si256(), q, v))
            });
            // The m * s terms summed in block order, as llama.cpp does. The portable f16
            // conversion here: the scalar F16C sequence compiles to an insert into a live
            // register, chaining every block to the previous one. (Only rows left over from
            // the four-row kernel come here.)
            let mut offsets = 0f32;
            for (a, b) in x.iter().zip(y) {
                offsets += f16_le(a.m) * f16_le(b.s);
            }
            hsum(acc) + offsets
        }

        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
            let acc = two_chains!(x, y, |acc, a: &BlockQ8_0, b: &BlockQ8_0| {
                let q = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
                let v = _mm256_loadu_si256(b.qs.as_ptr() as *const __m256i);
                scale_acc(acc, a.d, b.d, mul_sum_i8(_mm256_setzero_si256(), q, v))
            });
            hsum(acc)
        }

        /// The 32 five-bit values of a Q5 block: the nibbles as `unpack_nibbles`, plus 16
        /// where bit e of qh is set (element e). Each qh byte is copied to 8 lanes, and each
        /// lane tests its own bit.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn unpack_q5(qs: &[u8; 16], qh: [u8; 4]) -> __m256i {
            let rep = _mm256_shuffle_epi8(
                _mm256_set1_epi32(i32::from_le_bytes(qh)),
                _mm256_setr_epi64x(0, 0x0101_0101_0101_0101, 0x0202_0202_0202_0202, 0x0303_0303_0303_0303),
            );
            let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
            let set = _mm256_cmpeq_epi8(_mm256_and_si256(rep, bit), bit);
            _mm256_or_si256(unpack_nibbles(qs), _mm256_and_si256(set, _mm256_set1_epi8(16)))
        }

        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_q5_0_q8_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
            let sixteen = _mm256_set1_epi8(16);
            let acc = two_chains!(x, y, |acc, a: &BlockQ5_0, b: &BlockQ8_0| {
                let q = _mm256_sub_epi8(unpack_q5(&a.qs, a.qh), sixteen);
                let v = _mm256_loadu_si256(b.qs.as_ptr() as *const __m256i);
                scale_acc(acc, a.d, b.d, mul_sum_i8(_mm256_setzero_si256(), q, v))
            });
            hsum(acc)
        }

        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_q5_1_q8_1(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
            let acc = two_chains!(x, y, |acc, a: &BlockQ5_1, b: &BlockQ8_1| {
                let v = _mm256_loadu_si256(b.qs.as_ptr() as *const __m256i);
                scale_acc(acc, a.d, b.d, mul_sum(_mm256_setzero_si256(), unpack_q5(&a.qs, a.qh), v))
            });
            // m * s in block order with the portable conversion (see vec_dot_q4_1_q8_1).
            let mut offsets = 0f32;
            for (a, b) in x.iter().zip(y) {
                offsets += f16_le(a.m) * f16_le(b.s);
            }
            hsum(acc) + offsets
        }

        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_iq4_nl_q8_0(x: &[BlockIQ4NL], y: &[BlockQ8_0]) -> f32 {
            // The 16-entry codebook in both 128-bit lanes: `vpshufb` maps each nibble to its
            // signed value.
            let book = _mm256_broadcastsi128_si256(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i));
            let acc = two_chains!(x, y, |acc, a: &BlockIQ4NL, b: &BlockQ8_0| {
                let q = _mm256_shuffle_epi8(book, unpack_nibbles(&a.qs));
                let v = _mm256_loadu_si256(b.qs.as_ptr() as *const __m256i);
                scale_acc(acc, a.d, b.d, mul_sum_i8(_mm256_setzero_si256(), q, v))
            });
            hsum(acc)
        }

        /// Four weight rows against one activation row (decode, and each activation row
        /// of a prefill tile): the activation block is loaded and its scale converted once
        /// for four rows, and the four rows are four independent FMA chains.
        macro_rules! four_rows {
            ($x:expr, $y:expr, $W:ty, $A:ty, |$a:ident, $b:ident, $v:ident, $dy:ident| $sum:expr, $min:expr) => {{
                let (x, y): ([&[$W]; 4], &[$A]) = ($x, $y);
                let n = y.len();
                if x.iter().any(|r| r.len() != n) {
                    return [f32::NAN; 4];
                }
                let mut acc = [_mm256_setzero_ps(); 4];
                // Lane r: the block-order sum of row r's extra per-block term (Q4_1's m * s).
                let mut extra = _mm_setzero_ps();
                for bi in 0..n {
                    // SAFETY: bi < n, the length of y and (checked above) of every row.
                    let $b = unsafe { y.get_unchecked(bi) };
                    let $v = _mm256_loadu_si256($b.qs.as_ptr() as *const __m256i);
                    let $dy = h2f8($b.d);
                    for r in 0..4 {
                        // Four interleaved streams: ask for each one's data ahead of time
                        // (a prefetch never faults; the address is only computed).
                        _mm_prefetch::<_MM_HINT_T1>(x[r].as_ptr().wrapping_add(bi + 12) as *const i8);
                        // SAFETY: as above.
                        let $a = unsafe { x[r].get_unchecked(bi) };
                        let s: __m256i = $sum;
                        acc[r] = _mm256_fmadd_ps(_mm256_mul_ps(h2f8($a.d), $dy), _mm256_cvtepi32_ps(s), acc[r]);
                    }
                    // SAFETY: as above.
                    extra = $min(extra, unsafe { [x[0].get_unchecked(bi), x[1].get_unchecked(bi), x[2].get_unchecked(bi), x[3].get_unchecked(bi)] }, $b);
                }
                let mut e = [0f32; 4];
                _mm_storeu_ps(e.as_mut_ptr(), extra);
                [hsum(acc[0]) + e[0], hsum(acc[1]) + e[1], hsum(acc[2]) + e[2], hsum(acc[3]) + e[3]]
            }};
        }

        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot4_q4_1_q8_1(x: [&[BlockQ4_1]; 4], y: &[BlockQ8_1]) -> [f32; 4] {
            four_rows!(x, y, BlockQ4_1, BlockQ8_1, |a, b, v, dy| {
                mul_sum(_mm256_setzero_si256(), unpack_nibbles(&a.qs), v)
            }, |extra, a: [&BlockQ4_1; 4], b: &BlockQ8_1| min_terms(extra, a, b))
        }

        /// Register tile for prefill: four weight rows against two activation rows. Each
        /// weight block is unpacked once and used for both activation rows.
        macro_rules! four_by_two {
            ($x:expr, $y:expr, $W:ty, $A:ty, |$a:ident| $unpack:expr, |$q:ident, $v:ident| $sum:expr, $min:expr) => {{
                let (x, y): ([&[$W]; 4], [&[$A]; 2]) = ($x, $y);
                let n = y[0].len();
                if x.iter().any(|r| r.len() != n) || y[1].len() != n {
                    return [[f32::NAN; 4]; 2];
                }
                let mut acc = [[_mm256_setzero_ps(); 4]; 2];
                let mut extra = [_mm_setzero_ps(); 2];
                for bi in 0..n {
                    // SAFETY: bi < n, the length of every row (checked above).
                    let (b0, b1) = unsafe { (y[0].get_unchecked(bi), y[1].get_unchecked(bi)) };
                    let v = [
                        _mm256_loadu_si256(b0.qs.as_ptr() as *const __m256i),
                        _mm256_loadu_si256(b1.qs.as_ptr() as *const __m256i),
                    ];
                    let dy = [h2f8(b0.d), h2f8(b1.d)];
                    for r in 0..4 {
                        // SAFETY: as above.
                        let $a = unsafe { x[r].get_unchecked(bi) };
                        let $q: __m256i = $unpack;
                        let dx = h2f8($a.d);
                        for c in 0..2 {
                            let $v = v[c];
                            let s: __m256i = $sum;
                            acc[c][r] = _mm256_fmadd_ps(_mm256_mul_ps(dx, dy[c]), _mm256_cvtepi32_ps(s), acc[c][r]);
                        }
                    }
                    // SAFETY: as above.
                    let rows = unsafe { [x[0].get_unchecked(bi), x[1].get_unchecked(bi), x[2].get_unchecked(bi), x[3].get_unchecked(bi)] };
                    extra[0] = $min(extra[0], rows, b0);
                    extra[1] = $min(extra[1], rows, b1);
                }
                let mut out = [[0f32; 4]; 2];
                for c in 0..2 {
                    let mut e = [0f32; 4];
                    _mm_storeu_ps(e.as_mut_ptr(), extra[c]);
                    for r in 0..4 {
                        out[c][r] = hsum(acc[c][r]) + e[r];
                    }
                }
                out
            }};
        }

        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot4x2_q4_0_q8_0(x: [&[BlockQ4_0]; 4], y: [&[BlockQ8_0]; 2]) -> [[f32; 4]; 2] {
            let eight = _mm256_set1_epi8(8);
            four_by_two!(x, y, BlockQ4_0, BlockQ8_0, |a| _mm256_sub_epi8(unpack_nibbles(&a.qs), eight), |q, v| {
                mul_sum_i8(_mm256_setzero_si256(), q, v)
            }, |extra, _, _| extra)
        }

        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot4x2_q4_1_q8_1(x: [&[BlockQ4_1]; 4], y: [&[BlockQ8_1]; 2]) -> [[f32; 4]; 2] {
            four_by_two!(x, y, BlockQ4_1, BlockQ8_1, |a| unpack_nibbles(&a.qs), |q, v| {
                mul_sum(_mm256_setzero_si256(), q, v)
            }, |extra, a: [&BlockQ4_1; 4], b: &BlockQ8_1| min_terms(extra, a, b))
        }

        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot4x2_q8_0_q8_0(x: [&[BlockQ8_0]; 4], y: [&[BlockQ8_0]; 2]) -> [[f32; 4]; 2] {
            four_by_two!(x, y, BlockQ8_0, BlockQ8_0, |a| _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i), |q, v| {
                mul_sum_i8(_mm256_setzero_si256(), q, v)
            }, |extra, _, _| extra)
        }

        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_f32(x: &[u8], y: &[f32]) -> f32 {
            let n = y.len();
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            while i + 32 <= n {
                for (k, a) in acc.iter_mut().enumerate() {
                    let w = _mm256_loadu_ps(x.as_ptr().add(4 * (i + 8 * k)) as *const f32);
                    *a = _mm256_fmadd_ps(w, _mm256_loadu_ps(y.as_ptr().add(i + 8 * k)), *a);
                }
                i += 32;
            }
            let mut s = hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
            s += $crate::scalar::vec_dot_f32(&x[4 * i..], &y[i..]);
            s
        }

        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_f16_f32(x: &[u8], y: &[f32]) -> f32 {
            let n = y.len();
            let mut acc = [_mm256_setzero_ps(); 2];
            let mut i = 0;
            while i + 16 <= n {
                for (k, a) in acc.iter_mut().enumerate() {
                    let h = _mm_loadu_si128(x.as_ptr().add(2 * (i + 8 * k)) as *const __m128i);
                    *a = _mm256_fmadd_ps(_mm256_cvtph_ps(h), _mm256_loadu_ps(y.as_ptr().add(i + 8 * k)), *a);
                }
                i += 16;
            }
            hsum(_mm256_add_ps(acc[0], acc[1])) + $crate::scalar::vec_dot_f16_f32(&x[2 * i..], &y[i..])
        }

        /// bf16 weights: each u16 widened to 32 bits and moved to the top half is the f32.
        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_bf16_f32(x: &[u8], y: &[f32]) -> f32 {
            let n = y.len();
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            while i + 32 <= n {
                for (k, a) in acc.iter_mut().enumerate() {
                    let h = _mm_loadu_si128(x.as_ptr().add(2 * (i + 8 * k)) as *const __m128i);
                    let w = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
                    *a = _mm256_fmadd_ps(w, _mm256_loadu_ps(y.as_ptr().add(i + 8 * k)), *a);
                }
                i += 32;
            }
            let s = hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
            s + $crate::scalar::vec_dot_bf16_f32(&x[2 * i..], &y[i..])
        }
    };
}
