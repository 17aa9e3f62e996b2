//! aarch64 NEON level, in two variants chosen at run time: `dotprod` where the CPU has the
//! dot-product extension (`sdot`), `neon` elsewhere. One set of kernel bodies
//! (`kernels.rs`) serves both. Every fn here is reached only through a kernel table, built
//! after the CPU was checked to have the variant's features (`dispatch`).

mod kernels;

pub mod attention;

pub mod dotprod;
pub mod neon;
