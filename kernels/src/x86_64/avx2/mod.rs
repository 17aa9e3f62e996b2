//! AVX2 + FMA + F16C level: u8 x i8 products through `vpmaddubsw` + `vpmaddwd`.

mod k_quants;
mod k_quants_more;
mod legacy;

use std::arch::x86_64::*;

/// Pairs of u8 x i8 products summed to i16 (cannot saturate for our ranges: |q| <= 127,
/// u <= 127 after the sign trick or <= 63 for 6-bit values), then to i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn mul_sum(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)))
}

crate::x86_legacy_kernels!("avx2,fma,f16c");
crate::x86_k_kernels!("avx2,fma,f16c");
crate::x86_k_more_kernels!("avx2,fma,f16c");
