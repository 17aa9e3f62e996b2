//! NEON with the dot-product extension (FEAT_DotProd): `sdot` adds four 8-bit products into
//! each i32 lane in one instruction. Its intrinsic (`vdotq_s32`) is not stable Rust, so it is
//! reached through `asm!`; the assembler accepts it because the fn enables `dotprod`.

use std::arch::aarch64::*;

/// Sum of the 16 products a[i]*b[i] into 4 i32 lanes (lane j gets products 4j..4j+4).
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn dot16(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: register-only arithmetic, no memory access; the CPU has dotprod, as every fn
    // here requires (the table holding them is built only after checking it).
    std::arch::asm!(
        "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
        acc = inout(vreg) acc,
        a = in(vreg) a,
        b = in(vreg) b,
        options(pure, nomem, nostack, preserves_flags)
    );
    acc
}

crate::neon_kernels!("neon,dotprod");
