//! 256-bit dot products of the K types (Q4_K, Q6_K, IQ4_XS) with Q8_K activations; one body
//! for the avx2, avxvnni and avx512 levels (see legacy.rs). Q2_K, Q3_K, Q5_K: k_quants_more.rs.

#[macro_export]
#[doc(hidden)]
macro_rules! x86_k_kernels {
    ($feat:literal) => {
        /// Q4_K x Q8_K. Block: 8 groups of 32 weights; qs byte l of pair p holds group 2p
        /// (low nibble) and group 2p+1 (high nibble); (scale, min) per group in 12 bytes.
        ///   sum = d * dy * sum_g sc_g * sum(q*qy) - dmin * dy * sum_g m_g * bsum_g
        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_q4_k_q8_k(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
            let mut acc = _mm256_setzero_ps();
            let mut mins = 0f32;
            let m4 = _mm256_set1_epi8(15);
            for (a, b) in x.iter().zip(y) {
                let mut sm = 0i32;
                let mut sumi = _mm256_setzero_si256();
                for p in 0..4 {
                    let (sc0, m0) = $crate::scalar::k_scale_min(2 * p, &a.scales);
                    let (sc1, m1) = $crate::scalar::k_scale_min(2 * p + 1, &a.scales);
                    sm += m0 as i32 * (b.bsums[4 * p] as i32 + b.bsums[4 * p + 1] as i32);
                    sm += m1 as i32 * (b.bsums[4 * p + 2] as i32 + b.bsums[4 * p + 3] as i32);
                    let q = _mm256_loadu_si256(a.qs.as_ptr().add(32 * p) as *const __m256i);
                    let lo = _mm256_and_si256(q, m4);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                    let y0 = _mm256_loadu_si256(b.qs.as_ptr().add(64 * p) as *const __m256i);
                    let y1 = _mm256_loadu_si256(b.qs.as_ptr().add(64 * p + 32) as *const __m256i);
                    let p0 = mul_sum(_mm256_setzero_si256(), lo, y0);
                    let p1 = mul_sum(_mm256_setzero_si256(), hi, y1);
                    sumi = _mm256_add_epi32(sumi, _mm256_mullo_epi32(p0, _mm256_set1_epi32(sc0 as i32)));
                    sumi = _mm256_add_epi32(sumi, _mm256_mullo_epi32(p1, _mm256_set1_epi32(sc1 as i32)));
                }
                let d = b.d * f16_le(a.d);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
                mins += b.d * f16_le(a.dmin) * sm as f32;
            }
            hsum(acc) - mins
        }

        /// Q6_K x Q8_K. Per 128-half: ql 64 bytes, qh 32 bytes; quarter k (32 weights) takes
        /// low (k<2) or high nibbles of ql[32*(k%2)..] and bits 2k..2k+1 of qh. 16 groups of
        /// 16 with i8 scales; q in 0..64 is offset by -32, folded in through bsums:
        ///   sum = d * dy * sum_g sc_g * (sum(q*qy) - 32 * bsum_g)
        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_q6_k_q8_k(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
            let mut acc = _mm256_setzero_ps();
            let m4 = _mm256_set1_epi8(15);
            let m2 = _mm256_set1_epi8(3);
            for (a, b) in x.iter().zip(y) {
                let mut offset = 0i32;
                for g in 0..16 {
                    offset += a.scales[g] as i32 * b.bsums[g] as i32;
                }
                let mut sumi = _mm256_setzero_si256();
                for half in 0..2 {
                    let ql0 = _mm256_loadu_si256(a.ql.as_ptr().add(64 * half) as *const __m256i);
                    let ql1 = _mm256_loadu_si256(a.ql.as_ptr().add(64 * half + 32) as *const __m256i);
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
                        let e = 128 * half + 32 * k;
                        let v = _mm256_loadu_si256(b.qs.as_ptr().add(e) as *const __m256i);
                        let p = mul_sum(_mm256_setzero_si256(), *q, v);
                        let g = e / 16;
                        let sc = _mm256_set_m128i(
                            _mm_set1_epi32(a.scales[g + 1] as i32),
                            _mm_set1_epi32(a.scales[g] as i32),
                        );
                        sumi = _mm256_add_epi32(sumi, _mm256_mullo_epi32(p, sc));
                    }
                }
                let d = b.d * f16_le(a.d);
                let total = _mm256_sub_epi32(sumi, _mm256_setr_epi32(32 * offset, 0, 0, 0, 0, 0, 0, 0));
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(total), acc);
            }
            hsum(acc)
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
                let d = b.d * f16_le(a.d);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
            }
            hsum(acc)
        }
    };
}
