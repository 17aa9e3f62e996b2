//! x86_64 SIMD levels. Every `#[target_feature]` fn here is reached only through a kernel
//! table that `dispatch` builds after checking the CPU has the level's features.

pub mod amx;
pub mod avx2;
pub mod avx512;
pub mod avxvnni;
pub mod quantize;
pub mod rows_decode;

/// An f16 (little-endian bytes) as f32 by F16C, inlined into the kernels that call it
/// (`blocks::f16_le`, the portable conversion, is an out-of-line call into `half`).
///
/// # Safety
/// The CPU must have F16C.
#[inline]
#[target_feature(enable = "f16c")]
pub(crate) unsafe fn f16_to_f32(h: [u8; 2]) -> f32 {
    use std::arch::x86_64::*;
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(u16::from_le_bytes(h) as i32)))
}

/// An f32 as f16 bytes by F16C, rounded to nearest even (as `blocks::f16_bytes`).
///
/// # Safety
/// The CPU must have F16C.
#[inline]
#[target_feature(enable = "f16c")]
pub(crate) unsafe fn f32_to_f16(x: f32) -> [u8; 2] {
    use std::arch::x86_64::*;
    let h = _mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(x));
    (_mm_cvtsi128_si32(h) as u16).to_le_bytes()
}
