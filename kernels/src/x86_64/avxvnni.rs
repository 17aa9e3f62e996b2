//! AVX2 with AVX-VNNI: u8 x i8 products summed by `vpdpbusd` (VEX encoding).

use std::arch::x86_64::*;

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn mul_sum(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    _mm256_dpbusd_avx_epi32(acc, u, s)
}

/// `mul_sum` is one `vpdpbusd`: the interleaved K kernels sum each group in i32.
const VNNI: bool = true;

crate::x86_legacy_kernels!("avx2,fma,f16c,avxvnni");
crate::x86_k_kernels!("avx2,fma,f16c,avxvnni");
crate::x86_k_more_kernels!("avx2,fma,f16c,avxvnni");
crate::x86_repacked_kernels!("avx2,fma,f16c,avxvnni");
crate::x86_rows_kernels!("avx2,fma,f16c,avxvnni");
