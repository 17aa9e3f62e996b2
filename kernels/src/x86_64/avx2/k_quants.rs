//! 256-bit dot products of the K types (Q4_K, Q6_K, IQ4_XS) with Q8_K activations; one body
//! for the avx2, avxvnni and avx512 levels (see legacy.rs). Q2_K, Q3_K, Q5_K: k_quants_more.rs.

#[macro_export]
#[doc(hidden)]
macro_rules! x86_k_kernels {
    ($feat:literal) => {
        // f16 scales by inline F16C (`f16_le` calls out to `half`, with a feature check
        // per call).
        use $crate::x86_64::f16_to_f32 as f16c;

        /// `i16` lanes all equal to word `w` of each 128-bit lane of a register of 8 words
        /// (a `vpshufb` mask).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn word_mask(lo: usize, hi: usize) -> __m256i {
            let m = |w: usize| ((2 * w + 1) << 8 | 2 * w) as i16;
            _mm256_set_m128i(_mm_set1_epi16(m(hi)), _mm_set1_epi16(m(lo)))
        }

        /// Q4_K tile: `$R` weight rows against `$C` activation rows (1x1 for decode, 4x2 for
        /// prefill). Block: 8 groups of 32 weights; the 32 bytes of qs pair p hold group
        /// 2p (low nibbles) and 2p+1 (high); 6-bit (scale, min) per group in 12 bytes.
        ///   sum = d * dy * sum_g sc_g * sum(q*qy) - dmin * dy * sum_g m_g * bsum_g
        /// Each weight block is unpacked once (nibbles, scales) for all `$C` activation rows;
        /// the scale multiplies the `vpmaddubsw` pairs in the same `vpmaddwd` that sums them.
        macro_rules! q4_k_tile {
            ($R:literal, $C:literal, $x:expr, $y:expr) => {
                'tile: {
                    let (x, y): ([&[BlockQ4K]; $R], [&[BlockQ8K]; $C]) = ($x, $y);
                    let n = y[0].len();
                    if x.iter().any(|r| r.len() != n) || y.iter().any(|c| c.len() != n) {
                        break 'tile [[f32::NAN; $R]; $C];
                    }
                    let m4 = _mm256_set1_epi8(15);
                    let mut acc = [[_mm256_setzero_ps(); $R]; $C];
                    for bi in 0..n {
                        // (Plain loops, not closures: a closure would not inherit the target features.)
                        // SAFETY: bi < n, the length of every row (checked above).
                        let mut b: [&BlockQ8K; $C] = [unsafe { y[0].get_unchecked(bi) }; $C];
                        // Sums of the activations over each group of 32 (pairs of the 16-sums).
                        let mut bsum = [_mm_setzero_si128(); $C];
                        for c in 0..$C {
                            // SAFETY: as above.
                            b[c] = unsafe { y[c].get_unchecked(bi) };
                            let p = b[c].bsums.as_ptr() as *const __m128i;
                            bsum[c] = _mm_hadd_epi16(_mm_loadu_si128(p), _mm_loadu_si128(p.add(1)));
                        }
                        for r in 0..$R {
                            // Ask for the row's data about 3 KiB (20 blocks) ahead: the loads
                            // the out-of-order core keeps in flight alone fall short of the
                            // memory's bandwidth (a prefetch never faults; the address is only
                            // computed). 4 blocks ahead, the avx2 decode from the file's rows
                            // ran 5-9% slower (1B and 8B Q4_K_M, `--no-repack`).
                            let ahead = x[r].as_ptr().wrapping_add(bi + 20) as *const i8;
                            for line in 0..3 {
                                _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(64 * line));
                            }
                            // SAFETY: as above.
                            let a = unsafe { x[r].get_unchecked(bi) };
                            let (sc, mn) = $crate::scalar::k_scales_mins(&a.scales);
                            let sc =
                                _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(sc as i64)));
                            let mn = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(mn as i64));
                            let mut sumi = [_mm256_setzero_si256(); $C];
                            for p in 0..4 {
                                let q = _mm256_loadu_si256(a.qs.as_ptr().add(32 * p) as *const __m256i);
                                let lo = _mm256_and_si256(q, m4);
                                let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                                let s0 = _mm256_shuffle_epi8(sc, word_mask(2 * p, 2 * p));
                                let s1 = _mm256_shuffle_epi8(sc, word_mask(2 * p + 1, 2 * p + 1));
                                for c in 0..$C {
                                    let y0 =
                                        _mm256_loadu_si256(b[c].qs.as_ptr().add(64 * p) as *const __m256i);
                                    let y1 = _mm256_loadu_si256(
                                        b[c].qs.as_ptr().add(64 * p + 32) as *const __m256i
                                    );
                                    // u8 <= 15 times i8: pairs fit i16; times sc <= 63 fits i32.
                                    let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, y0), s0);
                                    let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, y1), s1);
                                    sumi[c] = _mm256_add_epi32(sumi[c], _mm256_add_epi32(p0, p1));
                                }
                            }
                            let (d, dmin) = (f16c(a.d), f16c(a.dmin));
                            for c in 0..$C {
                                let mins = _mm256_set_m128i(_mm_setzero_si128(), _mm_madd_epi16(mn, bsum[c]));
                                let v = _mm256_fmadd_ps(
                                    _mm256_set1_ps(d * b[c].d),
                                    _mm256_cvtepi32_ps(sumi[c]),
                                    acc[c][r],
                                );
                                acc[c][r] = _mm256_fnmadd_ps(
                                    _mm256_set1_ps(dmin * b[c].d),
                                    _mm256_cvtepi32_ps(mins),
                                    v,
                                );
                            }
                        }
                    }
                    let mut out = [[0f32; $R]; $C];
                    for c in 0..$C {
                        for r in 0..$R {
                            out[c][r] = hsum(acc[c][r]);
                        }
                    }
                    out
                }
            };
        }

        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_q4_k_q8_k(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
            q4_k_tile!(1, 1, [x], [y])[0][0]
        }

        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot4x2_q4_k_q8_k(x: [&[BlockQ4K]; 4], y: [&[BlockQ8K]; 2]) -> [[f32; 4]; 2] {
            q4_k_tile!(4, 2, x, y)
        }

        /// Q6_K tile (shapes as `q4_k_tile!`). Per 128-half: ql 64 bytes, qh 32 bytes;
        /// quarter k (32 weights) takes the low (k<2) or high nibbles of ql[32*(k%2)..] and
        /// bits 2k..2k+1 of qh. 16 groups of 16 with i8 scales; q in 0..64 is offset by -32,
        /// folded in through bsums:
        ///   sum = d * dy * sum_g sc_g * (sum(q*qy) - 32 * bsum_g)
        macro_rules! q6_k_tile {
            ($R:literal, $C:literal, $x:expr, $y:expr) => {
                'tile: {
                    let (x, y): ([&[BlockQ6K]; $R], [&[BlockQ8K]; $C]) = ($x, $y);
                    let n = y[0].len();
                    if x.iter().any(|r| r.len() != n) || y.iter().any(|c| c.len() != n) {
                        break 'tile [[f32::NAN; $R]; $C];
                    }
                    let m4 = _mm256_set1_epi8(15);
                    let m2 = _mm256_set1_epi8(3);
                    let mut acc = [[_mm256_setzero_ps(); $R]; $C];
                    for bi in 0..n {
                        // SAFETY: bi < n, the length of every row (checked above).
                        let mut b: [&BlockQ8K; $C] = [unsafe { y[0].get_unchecked(bi) }; $C];
                        let mut bsums = [_mm256_setzero_si256(); $C];
                        for c in 0..$C {
                            // SAFETY: as above.
                            b[c] = unsafe { y[c].get_unchecked(bi) };
                            bsums[c] = _mm256_loadu_si256(b[c].bsums.as_ptr() as *const __m256i);
                        }
                        for r in 0..$R {
                            // As in q4_k_tile! (14 blocks: about 3 KiB).
                            let ahead = x[r].as_ptr().wrapping_add(bi + 14) as *const i8;
                            for line in 0..4 {
                                _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(64 * line));
                            }
                            // SAFETY: as above.
                            let a = unsafe { x[r].get_unchecked(bi) };
                            let scales = _mm_loadu_si128(a.scales.as_ptr() as *const __m128i);
                            // The -32 offset: 32 * sum_g sc_g * bsum_g, in 8 i32 lanes.
                            let all = _mm256_cvtepi8_epi16(scales);
                            let mut sumi = [_mm256_setzero_si256(); $C];
                            for c in 0..$C {
                                let off = _mm256_slli_epi32(_mm256_madd_epi16(all, bsums[c]), 5);
                                sumi[c] = _mm256_sub_epi32(sumi[c], off);
                            }
                            for half in 0..2 {
                                // Groups 8h..8h+8 as i16 words, in both 128-bit lanes.
                                let sc8 = if half == 0 { scales } else { _mm_srli_si128(scales, 8) };
                                let sc = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(sc8));
                                let ql0 = _mm256_loadu_si256(a.ql.as_ptr().add(64 * half) as *const __m256i);
                                let ql1 =
                                    _mm256_loadu_si256(a.ql.as_ptr().add(64 * half + 32) as *const __m256i);
                                let qh = _mm256_loadu_si256(a.qh.as_ptr().add(32 * half) as *const __m256i);
                                let quarters = [
                                    _mm256_or_si256(
                                        _mm256_and_si256(ql0, m4),
                                        _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4),
                                    ),
                                    _mm256_or_si256(
                                        _mm256_and_si256(ql1, m4),
                                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4),
                                    ),
                                    _mm256_or_si256(
                                        _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4),
                                    ),
                                    _mm256_or_si256(
                                        _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4),
                                    ),
                                ];
                                for (k, q) in quarters.iter().enumerate() {
                                    // Quarter k spans groups 2k (low 128-bit lane) and 2k+1 (high).
                                    let s = _mm256_shuffle_epi8(sc, word_mask(2 * k, 2 * k + 1));
                                    for c in 0..$C {
                                        let e = 128 * half + 32 * k;
                                        let v = _mm256_loadu_si256(b[c].qs.as_ptr().add(e) as *const __m256i);
                                        // u8 < 64 times i8: pairs fit i16; times |sc| <= 128 fits i32.
                                        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(*q, v), s);
                                        sumi[c] = _mm256_add_epi32(sumi[c], p);
                                    }
                                }
                            }
                            let d = f16c(a.d);
                            for c in 0..$C {
                                acc[c][r] = _mm256_fmadd_ps(
                                    _mm256_set1_ps(d * b[c].d),
                                    _mm256_cvtepi32_ps(sumi[c]),
                                    acc[c][r],
                                );
                            }
                        }
                    }
                    let mut out = [[0f32; $R]; $C];
                    for c in 0..$C {
                        for r in 0..$R {
                            out[c][r] = hsum(acc[c][r]);
                        }
                    }
                    out
                }
            };
        }

        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_q6_k_q8_k(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
            q6_k_tile!(1, 1, [x], [y])[0][0]
        }

        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot4x2_q6_k_q8_k(x: [&[BlockQ6K]; 4], y: [&[BlockQ8K]; 2]) -> [[f32; 4]; 2] {
            q6_k_tile!(4, 2, x, y)
        }

        /// IQ4_XS x Q8_K: 8 groups of 32 weights; each group's nibbles go through the IQ4
        /// codebook (`vpshufb`) and its integer sum is scaled by the group's 6-bit scale - 32.
        ///
        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_iq4_xs_q8_k(x: &[BlockIQ4XS], y: &[BlockQ8K]) -> f32 {
            let book = _mm256_broadcastsi128_si256(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i));
            let mut acc = _mm256_setzero_ps();
            for (a, b) in x.iter().zip(y) {
                let mut sumi = _mm256_setzero_si256();
                for g in 0..8 {
                    let qs: &[u8; 16] = a.qs[16 * g..16 * g + 16].try_into().expect("16 bytes");
                    let q = _mm256_shuffle_epi8(book, unpack_nibbles(qs));
                    let v = _mm256_loadu_si256(b.qs.as_ptr().add(32 * g) as *const __m256i);
                    let p = mul_sum_i8(_mm256_setzero_si256(), q, v);
                    let sc = $crate::scalar::iq4_xs_scale(a, g);
                    sumi = _mm256_add_epi32(sumi, _mm256_mullo_epi32(p, _mm256_set1_epi32(sc)));
                }
                let d = b.d * f16c(a.d);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
            }
            hsum(acc)
        }
    };
}
