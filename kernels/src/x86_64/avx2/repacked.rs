//! Kernels for the interleaved layouts of `repack` (one body for the avx2, avxvnni and
//! avx512 levels; each level defines `dot_u4x8`).

#[macro_export]
#[doc(hidden)]
macro_rules! x86_repacked_kernels {
    ($feat:literal) => {
        /// Q4_0x8 tile: one group of 8 weight rows against `$C` activation rows; lane r of
        /// every register is row r. sum((q - 8) * y) = sum(q * y) - 8 * sum(y): the nibbles
        /// go in unsigned and the activation block's sum, shared by the 8 rows, comes off once.
        macro_rules! q4_0x8_tile {
            ($C:literal, $x:expr, $y:expr) => {
                'tile: {
                    let (x, y): (&[BlockQ4_0x8], [&[BlockQ8_0]; $C]) = ($x, $y);
                    let n = x.len();
                    if y.iter().any(|c| c.len() != n) {
                        break 'tile [[f32::NAN; 8]; $C];
                    }
                    let m4 = _mm256_set1_epi8(15);
                    let mut acc = [_mm256_setzero_ps(); $C];
                    for j in 0..n {
                        // Ask for the weights PF blocks ahead: the loads the out-of-order core
                        // keeps in flight alone fall short of the memory's bandwidth (a
                        // prefetch never faults; the address is only computed).
                        let ahead = x.as_ptr().wrapping_add(j + PF) as *const i8;
                        _mm_prefetch::<_MM_HINT_T0>(ahead);
                        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64));
                        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(128));
                        // SAFETY: j < n, the length of x and (checked above) of every y row.
                        let b = unsafe { x.get_unchecked(j) };
                        let d = _mm256_cvtph_ps(_mm_loadu_si128(b.d.as_ptr() as *const __m128i));
                        // q[k]: weights 4k..4k+4 of each row (k < 4 low nibbles; k >= 4 high
                        // nibbles, elements 16 + 4(k-4) = 4k as well).
                        let mut q = [_mm256_setzero_si256(); 8];
                        for c in 0..4 {
                            let v = _mm256_loadu_si256(b.qs.as_ptr().add(32 * c) as *const __m256i);
                            q[c] = _mm256_and_si256(v, m4);
                            q[4 + c] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                        }
                        for col in 0..$C {
                            // SAFETY: as above.
                            let a = unsafe { y[col].get_unchecked(j) };
                            let p = a.qs.as_ptr() as *const i32;
                            let mut ya = [_mm256_setzero_si256(); 8];
                            for k in 0..8 {
                                // Activations 4k..4k+4 in every lane.
                                ya[k] = _mm256_set1_epi32(p.add(k).read_unaligned());
                            }
                            let sy = sum_i8(_mm256_loadu_si256(a.qs.as_ptr() as *const __m256i));
                            let s = _mm256_sub_epi32(dot_u4x8(&q, &ya), _mm256_slli_epi32(sy, 3));
                            acc[col] =
                                _mm256_fmadd_ps(_mm256_mul_ps(d, h2f8(a.d)), _mm256_cvtepi32_ps(s), acc[col]);
                        }
                    }
                    let mut out = [[0f32; 8]; $C];
                    for col in 0..$C {
                        _mm256_storeu_ps(out[col].as_mut_ptr(), acc[col]);
                    }
                    out
                }
            };
        }

        /// Prefetch distance of the interleaved kernels, in blocks.
        const PF: usize = 8;

        /// The sum of 32 signed bytes, in every i32 lane.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn sum_i8(v: __m256i) -> __m256i {
            let s = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), v), _mm256_set1_epi16(1));
            let s = _mm256_add_epi32(s, _mm256_shuffle_epi32(s, 0x4e));
            let s = _mm256_add_epi32(s, _mm256_shuffle_epi32(s, 0xb1));
            _mm256_add_epi32(s, _mm256_permute2x128_si256(s, s, 1))
        }

        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_q4_0x8_q8_0(x: &[BlockQ4_0x8], y: &[BlockQ8_0]) -> [f32; 8] {
            q4_0x8_tile!(1, x, [y])[0]
        }

        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_q4_0x8x4_q8_0(x: &[BlockQ4_0x8], y: [&[BlockQ8_0]; 4]) -> [[f32; 8]; 4] {
            q4_0x8_tile!(4, x, y)
        }
    };
}
