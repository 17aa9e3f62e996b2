//! ferrite: a pure-Rust CPU runtime for GGUF quantized Llama-family models.

pub mod bench;
pub mod chat;
pub mod error;
pub mod escape;
pub mod explain;
pub mod generate;
pub mod gguf;
pub mod inspect;
pub mod model;
pub mod ops;
pub mod perplexity;
pub mod quantize;
pub mod sampler;
pub mod server;
pub mod synth;
pub mod tokenizer;

pub use error::{Error, Result};
pub use ferrite_kernels as kernels;
