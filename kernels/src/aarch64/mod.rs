//! aarch64 NEON level, in two variants chosen at run time: `dotprod` where the CPU has the
//! dot-product extension (`sdot`), `neon` elsewhere. One set of kernel bodies
//! (`kernels.rs`) serves both; attention over the f16 cache (`attention.rs`) needs NEON
//! alone. Every kernel fn here is reached only through a kernel table, built after the CPU
//! was checked to have the variant's features (`dispatch`).

mod kernels;

/// Widest row of the NEON decode kernels over many rows, in 32-value blocks
/// (`dispatch::ROWS_MAX_COLS`; wider rows go row by row).
pub const ROWS_MAX_BLOCKS: usize = crate::dispatch::ROWS_MAX_COLS / 32;

pub mod attention;

pub mod dotprod;
pub mod neon;
