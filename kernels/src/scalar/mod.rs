//! The reference implementation of every kernel: plain Rust, always compiled, the
//! standard every SIMD level is tested against.

pub mod dequant;
pub use dequant::*;
