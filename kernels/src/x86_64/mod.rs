//! x86_64 SIMD levels. Every `#[target_feature]` fn here is reached only through a kernel
//! table that `dispatch` builds after checking the CPU has the level's features.

pub mod amx;
pub mod avx2;
pub mod avx512;
pub mod avxvnni;
pub mod quantize;
pub mod rows_decode;
