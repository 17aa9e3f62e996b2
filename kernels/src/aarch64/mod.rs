//! aarch64 NEON level: 8-bit products widened with `smull` and pairwise-accumulated to
//! i32 (`sadalp`). Every fn here is reached only through the `neon` kernel table, built
//! after the CPU was checked to have NEON.

pub mod neon;

use crate::blocks::*;
use crate::dispatch::{ActRef, DotFn};
use crate::types::GgmlType;

macro_rules! wrap {
    ($f:path, $w:ty, $act:ident) => {{
        fn w(x: &[u8], a: ActRef) -> f32 {
            let (Some(x), ActRef::$act(a)) = (as_blocks::<$w>(x), a) else { return f32::NAN };
            // SAFETY: stored only in the neon table, which exists only when the CPU has NEON.
            unsafe { $f(x, a) }
        }
        w as DotFn
    }};
}

pub fn neon_table() -> Vec<(GgmlType, DotFn)> {
    vec![
        (GgmlType::Q4_0, wrap!(neon::vec_dot_q4_0_q8_0, BlockQ4_0, Q8_0)),
        (GgmlType::Q4_1, wrap!(neon::vec_dot_q4_1_q8_1, BlockQ4_1, Q8_1)),
        (GgmlType::Q8_0, wrap!(neon::vec_dot_q8_0_q8_0, BlockQ8_0, Q8_0)),
        (GgmlType::Q4_K, wrap!(neon::vec_dot_q4_k_q8_k, BlockQ4K, Q8K)),
        (GgmlType::Q6_K, wrap!(neon::vec_dot_q6_k_q8_k, BlockQ6K, Q8K)),
        (GgmlType::F32, {
            fn w(x: &[u8], a: ActRef) -> f32 {
                let ActRef::F32(a) = a else { return f32::NAN };
                // SAFETY: as above.
                unsafe { neon::vec_dot_f32(x, a) }
            }
            w as DotFn
        }),
    ]
}
