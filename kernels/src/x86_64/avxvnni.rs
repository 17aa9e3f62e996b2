//! AVX2 with AVX-VNNI: u8 x i8 products summed by `vpdpbusd` (VEX encoding).
//!
//! Under `--cfg ferrite_avxvnni_emulate` (tests only) the level is built with the same
//! instruction in its EVEX form (AVX-512 VNNI with VL) instead, so that a CPU with AVX-512
//! VNNI but no AVX-VNNI runs this level's code: the same arithmetic, another encoding.

use std::arch::x86_64::*;

#[cfg(not(ferrite_avxvnni_emulate))]
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn mul_sum(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    _mm256_dpbusd_avx_epi32(acc, u, s)
}

#[cfg(ferrite_avxvnni_emulate)]
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
unsafe fn mul_sum(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(acc, u, s)
}

/// acc + the i16 pairs of `a` times those of `b`, summed per i32 lane: one `vpdpwssd` (in
/// `asm!`: LLVM turns the intrinsic into `vpmaddwd` + `vpaddd`).
#[cfg(not(ferrite_avxvnni_emulate))]
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn mul_sum16(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
    let mut acc = acc;
    // SAFETY: a register-only AVX-VNNI instruction, which this function's callers run.
    unsafe {
        std::arch::asm!(
            "{{vex}} vpdpwssd {acc}, {a}, {b}",
            acc = inout(ymm_reg) acc,
            a = in(ymm_reg) a,
            b = in(ymm_reg) b,
            options(pure, nomem, nostack, preserves_flags)
        )
    };
    acc
}

/// As above, in the EVEX encoding (AVX-512 VNNI with VL).
#[cfg(ferrite_avxvnni_emulate)]
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
unsafe fn mul_sum16(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
    crate::x86_64::avx512::dpwssd256(acc, a, b)
}

/// `mul_sum` is one `vpdpbusd`: the interleaved K kernels sum each group in i32.
const VNNI: bool = true;

/// The level's kernels, compiled for the target features `$feat`.
macro_rules! level {
    ($feat:literal) => {
        crate::x86_legacy_kernels!($feat);
        crate::x86_k_kernels!($feat);
        crate::x86_k_more_kernels!($feat);
        crate::x86_repacked_kernels!($feat);
        crate::x86_rows_kernels!($feat);
    };
}

#[cfg(not(ferrite_avxvnni_emulate))]
level!("avx2,fma,f16c,avxvnni");
#[cfg(ferrite_avxvnni_emulate)]
level!("avx2,fma,f16c,avx512f,avx512vl,avx512vnni");
