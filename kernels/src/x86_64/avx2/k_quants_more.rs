//! 256-bit dot products of Q2_K, Q3_K and Q5_K with Q8_K activations; one body for the
//! avx2, avxvnni and avx512 levels (see legacy.rs). Each group's u8 x i8 products are
//! summed in pairs by `vpmaddubsw`, and `vpmaddwd` with the group's i16 scale (broadcast
//! by `vpshufb` from the block's unpacked scales) fuses the next pair-sum with the scale.
//! Offsets (Q2_K/Q5_K mins, Q3_K's -4) go through the activation's per-16 `bsums`.

#[macro_export]
#[doc(hidden)]
macro_rules! x86_k_more_kernels {
    ($feat:literal) => {
        /// `vpshufb` control that fills the low 128 bits with i16 lane `lo` (bytes 2lo, 2lo+1)
        /// and the high 128 bits with i16 lane `hi`, each of the source's 128-bit lane.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn word_pick(lo: i16, hi: i16) -> __m256i {
            _mm256_set_m128i(_mm_set1_epi16(0x0202 * hi + 0x0100), _mm_set1_epi16(0x0202 * lo + 0x0100))
        }

        /// The i16 scales of groups `8h + 2j` (low 128 bits) and `8h + 2j + 1` (high 128 bits),
        /// each in 8 lanes, from the group-of-16 scales `s` (i16, groups 8h..8h+8 in both 128-bit
        /// lanes): what `vpmaddwd` needs for the 32 bytes that hold those two groups.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn pair_scales(s: __m256i, j: i16) -> __m256i {
            _mm256_shuffle_epi8(s, word_pick(2 * j, 2 * j + 1))
        }

        /// Lanes 0-7 (i16) of `v` in both 128-bit lanes.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn both_lanes(v: __m128i) -> __m256i {
            _mm256_broadcastsi128_si256(v)
        }

        /// Q2_K x Q8_K. Half h (32 bytes of qs) holds groups 8h..8h+8: bits 2j..2j+1 of byte l
        /// are element l of group 8h+2j (l < 16) or of group 8h+2j+1 (l >= 16, element l-16),
        /// whose activations are the 32 bytes at 128h + 32j. scales[g]: scale in the low
        /// nibble, min in the high one.
        ///   sum = dy * (d * sum_g sc_g * sum(q*qy) - dmin * sum_g m_g * bsum_g)
        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_q2_k_q8_k(x: &[BlockQ2K], y: &[BlockQ8K]) -> f32 {
            let m3 = _mm256_set1_epi8(3);
            let m4 = _mm_set1_epi8(15);
            let mut acc = _mm256_setzero_ps();
            let mut acc_m = _mm256_setzero_ps();
            for (a, b) in x.iter().zip(y) {
                let raw = _mm_loadu_si128(a.scales.as_ptr() as *const __m128i);
                let sc = _mm_and_si128(raw, m4);
                let mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), m4));
                let bsums = _mm256_loadu_si256(b.bsums.as_ptr() as *const __m256i);
                let mut sumi = _mm256_setzero_si256();
                for h in 0..2 {
                    let s =
                        both_lanes(_mm_cvtepu8_epi16(if h == 0 { sc } else { _mm_unpackhi_epi64(sc, sc) }));
                    let mut q = _mm256_loadu_si256(a.qs.as_ptr().add(32 * h) as *const __m256i);
                    for j in 0..4 {
                        let v = _mm256_loadu_si256(b.qs.as_ptr().add(128 * h + 32 * j) as *const __m256i);
                        let p = _mm256_maddubs_epi16(_mm256_and_si256(q, m3), v);
                        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, pair_scales(s, j as i16)));
                        q = _mm256_srli_epi16(q, 2);
                    }
                }
                let d = b.d * f16c(a.d);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
                let dm = b.d * f16c(a.dmin);
                acc_m = _mm256_fmadd_ps(
                    _mm256_set1_ps(dm),
                    _mm256_cvtepi32_ps(_mm256_madd_epi16(mins, bsums)),
                    acc_m,
                );
            }
            hsum(acc) - hsum(acc_m)
        }

        /// The sixteen Q3_K scales minus 32 as i8 (as `scalar::q3_k_scales`), by u64 word
        /// operations: low nibbles from bytes 0-7 (scales 0-7 low, 8-15 high nibbles), the two
        /// high bits of scale j from bits 2(j/4) of byte 8 + j%4.
        #[inline]
        #[target_feature(enable = $feat)]
        pub(crate) unsafe fn q3_k_scales_i8(s: &[u8; 12]) -> __m128i {
            const NIB: u64 = 0x0f0f_0f0f_0f0f_0f0f;
            const TWO: u64 = 0x0303_0303;
            let lo = u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]);
            let hi = u32::from_le_bytes([s[8], s[9], s[10], s[11]]) as u64;
            let h0 = (hi & TWO) | ((hi << 30) & (TWO << 32));
            let h1 = ((hi >> 4) & TWO) | ((hi << 26) & (TWO << 32));
            let s0 = (lo & NIB) | (h0 << 4);
            let s1 = ((lo >> 4) & NIB) | (h1 << 4);
            _mm_sub_epi8(_mm_set_epi64x(s1 as i64, s0 as i64), _mm_set1_epi8(32))
        }

        /// Q3_K x Q8_K. The two low bits as Q2_K; the third of group 8h+2j+part in bit 4h+j of
        /// hmask[16 part + l]. With u = low | third << 2 in 0..8 the weight is u - 4:
        ///   sum = d * dy * sum_g sc_g * (sum(u*qy) - 4 * bsum_g)
        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_q3_k_q8_k(x: &[BlockQ3K], y: &[BlockQ8K]) -> f32 {
            let m3 = _mm256_set1_epi8(3);
            let four = _mm256_set1_epi8(4);
            let mut acc = _mm256_setzero_ps();
            for (a, b) in x.iter().zip(y) {
                let sc = q3_k_scales_i8(&a.scales);
                let bsums = _mm256_loadu_si256(b.bsums.as_ptr() as *const __m256i);
                let offset = _mm256_madd_epi16(_mm256_cvtepi8_epi16(sc), bsums);
                let mut sumi = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(offset, 2));
                // Shifted right once per group pair: bit 0 of each byte is then the third bit.
                let mut hm = _mm256_loadu_si256(a.hmask.as_ptr() as *const __m256i);
                for h in 0..2 {
                    let s =
                        both_lanes(_mm_cvtepi8_epi16(if h == 0 { sc } else { _mm_unpackhi_epi64(sc, sc) }));
                    let mut q = _mm256_loadu_si256(a.qs.as_ptr().add(32 * h) as *const __m256i);
                    for j in 0..4 {
                        let u = _mm256_or_si256(
                            _mm256_and_si256(q, m3),
                            _mm256_and_si256(_mm256_slli_epi16(hm, 2), four),
                        );
                        let v = _mm256_loadu_si256(b.qs.as_ptr().add(128 * h + 32 * j) as *const __m256i);
                        let p = _mm256_maddubs_epi16(u, v);
                        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, pair_scales(s, j as i16)));
                        q = _mm256_srli_epi16(q, 2);
                        hm = _mm256_srli_epi16(hm, 1);
                    }
                }
                let d = b.d * f16c(a.d);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
            }
            hsum(acc)
        }

        /// Q4_K/Q5_K's eight (scale, min) pairs (as `scalar::k_scale_min`) by u32 word
        /// operations: bytes 0-7 the scales, bytes 8-15 the mins.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn k_scales_mins(q: &[u8; 12]) -> __m128i {
            const SIX: u32 = 0x3f3f_3f3f;
            const NIB: u32 = 0x0f0f_0f0f;
            const TOP: u32 = 0x3030_3030;
            let u0 = u32::from_le_bytes([q[0], q[1], q[2], q[3]]);
            let u1 = u32::from_le_bytes([q[4], q[5], q[6], q[7]]);
            let u2 = u32::from_le_bytes([q[8], q[9], q[10], q[11]]);
            let sc = (u0 & SIX) as u64 | (((u2 & NIB) | ((u0 >> 2) & TOP)) as u64) << 32;
            let m = (u1 & SIX) as u64 | ((((u2 >> 4) & NIB) | ((u1 >> 2) & TOP)) as u64) << 32;
            _mm_set_epi64x(m as i64, sc as i64)
        }

        /// Q5_K x Q8_K: as Q4_K (group 2p in the low nibbles of qs[32p..32p+32], group 2p+1 in
        /// the high ones) with the fifth bit of group g in bit g of qh[l].
        ///   sum = dy * (d * sum_g sc_g * sum(q*qy) - dmin * sum_g m_g * (bsum_2g + bsum_2g+1))
        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_q5_k_q8_k(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
            let m4 = _mm256_set1_epi8(15);
            let sixteen = _mm256_set1_epi8(16);
            let mut acc = _mm256_setzero_ps();
            let mut acc_m = _mm256_setzero_ps();
            for (a, b) in x.iter().zip(y) {
                let sm = k_scales_mins(&a.scales);
                let s = both_lanes(_mm_cvtepu8_epi16(sm));
                // Each min twice (i16 lanes 2g, 2g+1), against the bsums of its two halves.
                let mins = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(sm, sm));
                let bsums = _mm256_loadu_si256(b.bsums.as_ptr() as *const __m256i);
                let dm = b.d * f16c(a.dmin);
                acc_m = _mm256_fmadd_ps(
                    _mm256_set1_ps(dm),
                    _mm256_cvtepi32_ps(_mm256_madd_epi16(mins, bsums)),
                    acc_m,
                );
                // Shifted right by 2 per pair: bits 0 and 1 of each byte are then the fifth bits
                // of groups 2p and 2p+1.
                let mut qh = _mm256_loadu_si256(a.qh.as_ptr() as *const __m256i);
                let mut sumi = _mm256_setzero_si256();
                for p in 0..4 {
                    let q = _mm256_loadu_si256(a.qs.as_ptr().add(32 * p) as *const __m256i);
                    let lo = _mm256_or_si256(
                        _mm256_and_si256(q, m4),
                        _mm256_and_si256(_mm256_slli_epi16(qh, 4), sixteen),
                    );
                    let hi = _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(q, 4), m4),
                        _mm256_and_si256(_mm256_slli_epi16(qh, 3), sixteen),
                    );
                    qh = _mm256_srli_epi16(qh, 2);
                    let y0 = _mm256_loadu_si256(b.qs.as_ptr().add(64 * p) as *const __m256i);
                    let y1 = _mm256_loadu_si256(b.qs.as_ptr().add(64 * p + 32) as *const __m256i);
                    let g = 2 * p as i16;
                    let p0 = _mm256_madd_epi16(
                        _mm256_maddubs_epi16(lo, y0),
                        _mm256_shuffle_epi8(s, word_pick(g, g)),
                    );
                    let p1 = _mm256_madd_epi16(
                        _mm256_maddubs_epi16(hi, y1),
                        _mm256_shuffle_epi8(s, word_pick(g + 1, g + 1)),
                    );
                    sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
                }
                let d = b.d * f16c(a.d);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
            }
            hsum(acc) - hsum(acc_m)
        }
    };
}
