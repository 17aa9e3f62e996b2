//! AVX-512 (F, BW, VL) with VNNI: `vpdpbusd` on 256-bit registers (EVEX encoding).

use std::arch::x86_64::*;

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn mul_sum(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(acc, u, s)
}

/// `mul_sum` is one `vpdpbusd`: the interleaved K kernels sum each group in i32.
const VNNI: bool = true;

crate::x86_legacy_kernels!("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni");
crate::x86_k_kernels!("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni");
crate::x86_k_more_kernels!("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni");
crate::x86_repacked_kernels!("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni");

/// Eight u8 x i8 products of 4 summed per i32 lane (see avx2::dot_u4x8).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dot_u4x8(q: &[__m256i; 8], y: &[__m256i; 8]) -> __m256i {
    let mut s = _mm256_setzero_si256();
    for k in 0..8 {
        s = _mm256_dpbusd_epi32(s, q[k], y[k]);
    }
    s
}
