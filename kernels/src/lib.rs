//! ferrite-kernels: the numeric core of ferrite. Block layouts, dequantization,
//! quantization and dot products for the GGUF weight types, as a scalar reference and
//! SIMD levels chosen at run time. No I/O and no model knowledge.

// Kernels index blocks by position on purpose: the loops mirror the block layouts.
#![allow(clippy::needless_range_loop)]

#[cfg(target_arch = "aarch64")]
pub mod aarch64;
pub mod attention;
pub mod blocks;
pub mod dispatch;
pub mod math;
pub mod matmul;
pub mod memory;
pub mod pool;
pub mod repack;
pub mod scalar;
pub mod types;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;

pub use dispatch::{ActBuf, ActIn, ActRef, ActType, Kernels, Level, Prep};
pub use matmul::{matmul, matmul_multi, matmul_multi_in, matvec, Matrix};
pub use scalar::quantize::{can_quantize, quantize};
pub use types::GgmlType;

use blocks::as_blocks;
use half::{bf16, f16};

/// Why a kernel call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelError {
    /// No kernel exists for this type (yet).
    Unsupported { ty: GgmlType, what: &'static str },
    /// Input bytes or output length do not fit the type's block layout.
    BadLength { ty: GgmlType, bytes: usize, elems: usize },
}

impl std::fmt::Display for KernelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KernelError::Unsupported { ty, what } => {
                write!(f, "{what} is not supported for type {ty}")
            }
            KernelError::BadLength { ty, bytes, elems } => {
                write!(f, "{bytes} bytes of {ty} do not hold {elems} elements")
            }
        }
    }
}

impl std::error::Error for KernelError {}

/// Whether `dequantize` handles this type.
pub fn can_dequantize(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16
            | BF16
            | Q4_0
            | Q4_1
            | Q5_0
            | Q5_1
            | Q8_0
            | Q8_1
            | Q2_K
            | Q3_K
            | Q4_K
            | Q5_K
            | Q6_K
            | IQ4_NL
            | IQ4_XS
    )
}

/// Dequantize `bytes` (whole blocks of `ty`) into `out`, whose length must be the number
/// of elements the bytes hold.
pub fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), KernelError> {
    use GgmlType::*;
    let bad = || KernelError::BadLength { ty, bytes: bytes.len(), elems: out.len() };
    if ty.row_bytes(out.len()) != Some(bytes.len()) {
        return Err(bad());
    }
    macro_rules! blocks {
        ($f:path) => {
            $f(as_blocks(bytes).ok_or_else(bad)?, out)
        };
    }
    match ty {
        F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        Q4_0 => blocks!(scalar::dequantize_q4_0),
        Q4_1 => blocks!(scalar::dequantize_q4_1),
        Q5_0 => blocks!(scalar::dequantize_q5_0),
        Q5_1 => blocks!(scalar::dequantize_q5_1),
        Q8_0 => blocks!(scalar::dequantize_q8_0),
        Q8_1 => blocks!(scalar::dequantize_q8_1),
        Q2_K => blocks!(scalar::dequantize_q2_k),
        Q3_K => blocks!(scalar::dequantize_q3_k),
        Q4_K => blocks!(scalar::dequantize_q4_k),
        Q5_K => blocks!(scalar::dequantize_q5_k),
        Q6_K => blocks!(scalar::dequantize_q6_k),
        IQ4_NL => blocks!(scalar::dequantize_iq4_nl),
        IQ4_XS => blocks!(scalar::dequantize_iq4_xs),
        _ => return Err(KernelError::Unsupported { ty, what: "dequantization" }),
    }
    Ok(())
}

/// Dot product of one weight row (`bytes`, whole blocks of `ty`) with an activation row of
/// the type `ActType::for_weight(ty)` and the same length.
pub fn vec_dot(k: &Kernels, ty: GgmlType, bytes: &[u8], act: ActRef) -> Result<f32, KernelError> {
    let bad = KernelError::BadLength { ty, bytes: bytes.len(), elems: act.len() };
    if ActType::for_weight(ty) != Some(act.act_type()) {
        return Err(KernelError::Unsupported { ty, what: "this activation type" });
    }
    if ty.row_bytes(act.len()) != Some(bytes.len()) {
        return Err(bad);
    }
    let dot = k.dot(ty).ok_or(KernelError::Unsupported { ty, what: "dot product" })?;
    Ok(dot(bytes, act))
}
