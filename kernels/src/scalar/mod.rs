//! The reference implementation of every kernel: plain Rust, always compiled, the
//! standard every SIMD level is tested against.

pub mod activations;
pub mod dequant;
pub mod dot;
pub mod quantize;

pub use activations::*;
pub use dequant::*;
pub use dot::*;
