//! Weight layouts rearranged at load time where a kernel gains from them.
//!
//! `Q4_0x8`: eight rows of a Q4_0 matrix interleaved block by block (`BlockQ4_0x8`). A
//! 256-bit register then holds 4 weights of each of 8 rows, so one `vpmaddubsw` works for
//! 8 rows at once against 4 broadcast activations, the 8 row sums land in the 8 lanes of
//! one register (no horizontal sums) and the 8 scales convert in one instruction. Same
//! bytes as the original (a copy: the original pages of the file are no longer read).
//!
//! `Q4_Kx8`: the same for Q4_K, with each row's 6-bit scales and mins unpacked to bytes
//! (1184 bytes per 8 blocks instead of 1152, +2.8%). One `vpmaddwd` applies 8 rows' scales.
//! `Q8_0x8`: Q8_0 interleaved 4 bytes per row the same way (same size); `Q4_1x8` and `Q5_0x8`
//! as Q4_0x8; `Q6Kx8`: Q6_K's ql and qh bytes interleaved 4 per row (same size).

use crate::blocks::{as_blocks, BlockQ4K, BlockQ4_0, BlockQ4_0x8, BlockQ4_1, BlockQ5_0, BlockQ6K, BlockQ8_0};
use crate::types::GgmlType;

/// How a matrix's bytes are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// As in the GGUF file: row after row.
    Rows,
    /// Q4_0 in groups of 8 rows, `BlockQ4_0x8` (rows a multiple of 8).
    Q4_0x8,
    /// Q4_K in groups of 8 rows, `BlockQ4Kx8`.
    Q4Kx8,
    /// Q8_0 in groups of 8 rows, `BlockQ8_0x8`.
    Q8_0x8,
    /// Q4_1 in groups of 8 rows, `BlockQ4_1x8`.
    Q4_1x8,
    /// Q5_0 in groups of 8 rows, `BlockQ5_0x8`.
    Q5_0x8,
    /// Q6_K in groups of 8 rows, `BlockQ6Kx8`.
    Q6Kx8,
}

impl Layout {
    /// The interleaved layout for a weight type, if there is one.
    pub fn for_type(ty: GgmlType) -> Option<Layout> {
        match ty {
            GgmlType::Q4_0 => Some(Layout::Q4_0x8),
            GgmlType::Q4_K => Some(Layout::Q4Kx8),
            GgmlType::Q8_0 => Some(Layout::Q8_0x8),
            GgmlType::Q4_1 => Some(Layout::Q4_1x8),
            GgmlType::Q5_0 => Some(Layout::Q5_0x8),
            GgmlType::Q6_K => Some(Layout::Q6Kx8),
            _ => None,
        }
    }

    /// Bytes of one interleaved block (8 rows by one block column).
    pub fn block_bytes(self) -> usize {
        match self {
            Layout::Rows => 0,
            Layout::Q4_0x8 => 144,
            Layout::Q4Kx8 => 1184,
            Layout::Q8_0x8 => 272,
            Layout::Q4_1x8 => 160,
            Layout::Q5_0x8 => 176,
            Layout::Q6Kx8 => 1680,
        }
    }
}

/// Rows per group of the interleaved layouts.
pub const GROUP: usize = 8;

/// Whether `repack` rearranges a matrix of this type and shape.
pub fn repackable(ty: GgmlType, rows: usize, cols: usize) -> bool {
    Layout::for_type(ty).is_some()
        && rows.is_multiple_of(GROUP)
        && cols.is_multiple_of(ty.block_size())
        && cols > 0
}

/// The interleaved layout of a Q4_0 or Q4_K matrix (`None` if it is not `repackable`).
pub fn repack(ty: GgmlType, rows: usize, cols: usize, data: &[u8]) -> Option<(Layout, Vec<u8>)> {
    if !repackable(ty, rows, cols) || Some(data.len()) != ty.row_bytes(cols).map(|b| b * rows) {
        return None;
    }
    match ty {
        GgmlType::Q4_0 => Some((Layout::Q4_0x8, repack_q4_0(as_blocks(data)?, rows, cols / 32))),
        GgmlType::Q4_K => Some((Layout::Q4Kx8, repack_q4_k(as_blocks(data)?, rows, cols / 256))),
        GgmlType::Q8_0 => Some((Layout::Q8_0x8, repack_q8_0(as_blocks(data)?, rows, cols / 32))),
        GgmlType::Q4_1 => Some((Layout::Q4_1x8, repack_q4_1(as_blocks(data)?, rows, cols / 32))),
        GgmlType::Q5_0 => Some((Layout::Q5_0x8, repack_q5_0(as_blocks(data)?, rows, cols / 32))),
        GgmlType::Q6_K => Some((Layout::Q6Kx8, repack_q6_k(as_blocks(data)?, rows, cols / 256))),
        _ => None,
    }
}

fn repack_q4_k(blocks: &[BlockQ4K], rows: usize, nb: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows / GROUP * nb * Layout::Q4Kx8.block_bytes());
    for g in 0..rows / GROUP {
        for j in 0..nb {
            let row = |r: usize| &blocks[(g * GROUP + r) * nb + j];
            for r in 0..GROUP {
                out.extend_from_slice(&row(r).d);
            }
            for r in 0..GROUP {
                out.extend_from_slice(&row(r).dmin);
            }
            let unpacked: Vec<(u64, u64)> =
                (0..GROUP).map(|r| crate::scalar::k_scales_mins(&row(r).scales)).collect();
            for part in [0, 1] {
                for grp in 0..8 {
                    for &(sc, m) in &unpacked {
                        out.push(([sc, m][part] >> (8 * grp)) as u8);
                    }
                }
            }
            for p in 0..4 {
                for c in 0..8 {
                    for r in 0..GROUP {
                        out.extend_from_slice(&row(r).qs[32 * p + 4 * c..32 * p + 4 * c + 4]);
                    }
                }
            }
        }
    }
    out
}

fn repack_q8_0(blocks: &[BlockQ8_0], rows: usize, nb: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(blocks.len() * 34);
    for g in 0..rows / GROUP {
        for j in 0..nb {
            let row = |r: usize| &blocks[(g * GROUP + r) * nb + j];
            for r in 0..GROUP {
                out.extend_from_slice(&row(r).d);
            }
            for k in 0..8 {
                for r in 0..GROUP {
                    out.extend(row(r).qs[4 * k..4 * k + 4].iter().map(|&q| q as u8));
                }
            }
        }
    }
    out
}

fn repack_q4_1(blocks: &[BlockQ4_1], rows: usize, nb: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(blocks.len() * 20);
    for g in 0..rows / GROUP {
        for j in 0..nb {
            let row = |r: usize| &blocks[(g * GROUP + r) * nb + j];
            for r in 0..GROUP {
                out.extend_from_slice(&row(r).d);
            }
            for r in 0..GROUP {
                out.extend_from_slice(&row(r).m);
            }
            for c in 0..4 {
                for r in 0..GROUP {
                    out.extend_from_slice(&row(r).qs[4 * c..4 * c + 4]);
                }
            }
        }
    }
    out
}

fn repack_q5_0(blocks: &[BlockQ5_0], rows: usize, nb: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(blocks.len() * 22);
    for g in 0..rows / GROUP {
        for j in 0..nb {
            let row = |r: usize| &blocks[(g * GROUP + r) * nb + j];
            for r in 0..GROUP {
                out.extend_from_slice(&row(r).d);
            }
            for r in 0..GROUP {
                out.extend_from_slice(&row(r).qh);
            }
            for c in 0..4 {
                for r in 0..GROUP {
                    out.extend_from_slice(&row(r).qs[4 * c..4 * c + 4]);
                }
            }
        }
    }
    out
}

fn repack_q6_k(blocks: &[BlockQ6K], rows: usize, nb: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(blocks.len() * 210);
    for g in 0..rows / GROUP {
        for j in 0..nb {
            let row = |r: usize| &blocks[(g * GROUP + r) * nb + j];
            for r in 0..GROUP {
                out.extend_from_slice(&row(r).d);
            }
            for grp in 0..16 {
                for r in 0..GROUP {
                    out.push(row(r).scales[grp] as u8);
                }
            }
            for h in 0..2 {
                for s in 0..2 {
                    for c in 0..8 {
                        for r in 0..GROUP {
                            let o = 64 * h + 32 * s + 4 * c;
                            out.extend_from_slice(&row(r).ql[o..o + 4]);
                        }
                    }
                }
            }
            for h in 0..2 {
                for c in 0..8 {
                    for r in 0..GROUP {
                        let o = 32 * h + 4 * c;
                        out.extend_from_slice(&row(r).qh[o..o + 4]);
                    }
                }
            }
        }
    }
    out
}

fn repack_q4_0(blocks: &[BlockQ4_0], rows: usize, nb: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(blocks.len() * 18);
    for g in 0..rows / GROUP {
        for j in 0..nb {
            let row = |r: usize| &blocks[(g * GROUP + r) * nb + j];
            for r in 0..GROUP {
                out.extend_from_slice(&row(r).d);
            }
            for c in 0..4 {
                for r in 0..GROUP {
                    out.extend_from_slice(&row(r).qs[4 * c..4 * c + 4]);
                }
            }
        }
    }
    out
}

/// Row r of a Q4_0x8 block column back as a Q4_0 block (the inverse of `repack`).
pub fn unpack_q4_0x8(b: &BlockQ4_0x8, r: usize) -> BlockQ4_0 {
    let mut qs = [0u8; 16];
    for c in 0..4 {
        qs[4 * c..4 * c + 4].copy_from_slice(&b.qs[32 * c + 4 * r..32 * c + 4 * r + 4]);
    }
    BlockQ4_0 { d: [b.d[2 * r], b.d[2 * r + 1]], qs }
}

/// Scalar reference: the 8 rows of a group against one activation row, each row summed in
/// block order by `scalar::vec_dot_q4_0_q8_0`.
pub fn vec_dot_q4_0x8_q8_0(x: &[BlockQ4_0x8], y: &[BlockQ8_0]) -> [f32; 8] {
    let mut out = [0f32; 8];
    for (b, a) in x.iter().zip(y) {
        for (r, o) in out.iter_mut().enumerate() {
            *o += crate::scalar::vec_dot_q4_0_q8_0(&[unpack_q4_0x8(b, r)], std::slice::from_ref(a));
        }
    }
    out
}
