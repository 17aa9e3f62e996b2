//! AVX-512 (F, BW, VL) with VNNI: `vpdpbusd` on 256-bit registers (EVEX encoding).

use std::arch::x86_64::*;

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn mul_sum(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(acc, u, s)
}

crate::x86_legacy_kernels!("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni");
crate::x86_k_kernels!("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni");
crate::x86_k_more_kernels!("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni");
