//! NEON without the dot-product extension: 8-bit products widened with `smull` and
//! pairwise-accumulated to i32 (`sadalp`).

use std::arch::aarch64::*;

/// Sum of the 16 products a[i]*b[i] into 4 i32 lanes. Each product (|a|, |b| <= 128) fits
/// i16, and `sadalp` adds them in pairs to the i32 lanes: exact for all i8 inputs.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn dot16(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    let hi = vmull_high_s8(a, b);
    vpadalq_s16(vpadalq_s16(acc, lo), hi)
}

crate::neon_kernels!("neon");
