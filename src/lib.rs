//! ferrite: a pure-Rust CPU runtime for GGUF quantized Llama-family models.

pub mod error;
pub mod gguf;
pub mod inspect;

pub use error::{Error, Result};
pub use ferrite_kernels as kernels;
