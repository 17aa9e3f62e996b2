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
//! as Q4_0x8; `Q6Kx8`: Q6_K's ql and qh bytes interleaved 4 per row (same size); `Q5Kx8`: as
//! Q4_Kx8, with qh interleaved 4 bytes per row (1440 bytes per 8 blocks instead of 1408).
//! `IQ4XSx8`: IQ4_XS's codebook indices interleaved as Q4_0x8's per group of 32, with each
//! row's 6-bit group scales unpacked to signed bytes (1104 bytes per 8 blocks instead of 1088).
//! `IQ4NLx8`: IQ4_NL's blocks (Q4_0's fields: d and 16 bytes of codebook indices) interleaved
//! as Q4_0x8, in `BlockQ4_0x8`s.
//! `Q2Kx8`: Q2_K's qs as Q3Kx8's, scale bytes by group and row (same size).
//! `Q3Kx8`: Q3_K's qs and hmask interleaved 4 bytes per row, the 6-bit scales unpacked to
//! signed bytes (912 bytes per 8 blocks instead of 880).
//! `Q5_1x8`: Q5_0x8's qh and qs with Q4_1x8's d and m (same size).

use crate::blocks::{
    as_blocks, as_blocks_mut, as_bytes, Block, BlockIQ4NL, BlockIQ4XS, BlockIQ4XSx8, BlockQ2K, BlockQ2Kx8,
    BlockQ3K, BlockQ3Kx8, BlockQ4K, BlockQ4Kx8, BlockQ4_0, BlockQ4_0x8, BlockQ4_1, BlockQ4_1x8, BlockQ5K,
    BlockQ5Kx8, BlockQ5_0, BlockQ5_0x8, BlockQ5_1, BlockQ5_1x8, BlockQ6K, BlockQ6Kx8, BlockQ8_0, BlockQ8_0x8,
};
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
    /// Q5_K in groups of 8 rows, `BlockQ5Kx8`.
    Q5Kx8,
    /// IQ4_XS in groups of 8 rows, `BlockIQ4XSx8`.
    IQ4XSx8,
    /// Q3_K in groups of 8 rows, `BlockQ3Kx8`.
    Q3Kx8,
    /// Q2_K in groups of 8 rows, `BlockQ2Kx8`.
    Q2Kx8,
    /// IQ4_NL in groups of 8 rows, `BlockQ4_0x8` (the same fields as Q4_0).
    IQ4NLx8,
    /// Q5_1 in groups of 8 rows, `BlockQ5_1x8`.
    Q5_1x8,
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
            GgmlType::Q5_K => Some(Layout::Q5Kx8),
            GgmlType::IQ4_XS => Some(Layout::IQ4XSx8),
            GgmlType::Q3_K => Some(Layout::Q3Kx8),
            GgmlType::Q2_K => Some(Layout::Q2Kx8),
            GgmlType::IQ4_NL => Some(Layout::IQ4NLx8),
            GgmlType::Q5_1 => Some(Layout::Q5_1x8),
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
            Layout::Q5Kx8 => 1440,
            Layout::IQ4XSx8 => 1104,
            Layout::Q3Kx8 => 912,
            Layout::Q2Kx8 => 672,
            Layout::IQ4NLx8 => 144,
            Layout::Q5_1x8 => 192,
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

/// The interleaved layout of a matrix (`None` if it is not `repackable`), in a new buffer.
pub fn repack(ty: GgmlType, rows: usize, cols: usize, data: &[u8]) -> Option<(Layout, Vec<u8>)> {
    let mut out = vec![0u8; repacked_len(ty, rows, cols)?];
    let layout = repack_into(ty, rows, cols, data, &mut out, Stores::Cached)?;
    Some((layout, out))
}

/// Bytes of the interleaved copy of a matrix (`None` if it is not `repackable`).
pub fn repacked_len(ty: GgmlType, rows: usize, cols: usize) -> Option<usize> {
    if !repackable(ty, rows, cols) {
        return None;
    }
    let layout = Layout::for_type(ty)?;
    Some(rows / GROUP * (cols / ty.block_size()) * layout.block_bytes())
}

/// How a repack writes its output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stores {
    /// Non-temporal stores where the CPU has them (x86): for a copy into memory that is not
    /// in cache and will not be read for a while, fetching its lines first would only
    /// double the traffic and evict the source.
    Streaming,
    /// Ordinary stores: a buffer read right after it is written (`matmul`'s rows repacked on
    /// the fly), which non-temporal stores would send out to memory first (the avx2 1B
    /// Q4_K_M prefill from the file's rows ran 11-15% slower with them); and the model's
    /// copies at load, whose fresh pages the kernel has just zeroed (so in cache).
    Cached,
}

/// Writes the interleaved layout of a matrix into `out`, which the caller allocates with
/// `repacked_len` bytes (so that it can choose the memory: the model asks for huge pages).
/// `None`, with `out` untouched, if the matrix is not `repackable` or a length disagrees.
pub fn repack_into(
    ty: GgmlType,
    rows: usize,
    cols: usize,
    data: &[u8],
    out: &mut [u8],
    stores: Stores,
) -> Option<Layout> {
    if Some(data.len()) != ty.row_bytes(cols).map(|b| b * rows)
        || Some(out.len()) != repacked_len(ty, rows, cols)
    {
        return None;
    }
    let nb = cols / ty.block_size();
    match ty {
        GgmlType::Q4_0 => repack_q4_0(as_blocks(data)?, rows, nb, out, stores),
        GgmlType::Q4_K => repack_q4_k(as_blocks(data)?, rows, nb, out, stores),
        GgmlType::Q8_0 => repack_q8_0(as_blocks(data)?, rows, nb, out, stores),
        GgmlType::Q4_1 => repack_q4_1(as_blocks(data)?, rows, nb, out, stores),
        GgmlType::Q5_0 => repack_q5_0(as_blocks(data)?, rows, nb, out, stores),
        GgmlType::Q5_1 => repack_q5_1(as_blocks(data)?, rows, nb, out, stores),
        GgmlType::Q6_K => repack_q6_k(as_blocks(data)?, rows, nb, out, stores),
        GgmlType::Q5_K => repack_q5_k(as_blocks(data)?, rows, nb, out, stores),
        GgmlType::IQ4_XS => repack_iq4_xs(as_blocks(data)?, rows, nb, out, stores),
        GgmlType::Q3_K => repack_q3_k(as_blocks(data)?, rows, nb, out, stores),
        GgmlType::Q2_K => repack_q2_k(as_blocks(data)?, rows, nb, out, stores),
        GgmlType::IQ4_NL => {
            interleave_nibbles::<BlockIQ4NL>(as_blocks(data)?, rows, nb, out, stores, |b| (&b.d, &b.qs))
        }
        _ => return None,
    }
    Layout::for_type(ty)
}

/// Builds the interleaved matrix: for each group of 8 rows and block column j, `f` fills
/// one destination block from the 8 rows' blocks at column j, every byte of it (in place, or
/// for streaming stores assembled on the stack and stored whole).
fn interleave<S: Block, D: Block + Default>(
    blocks: &[S],
    rows: usize,
    nb: usize,
    out: &mut [u8],
    stores: Stores,
    f: impl Fn([&S; GROUP], &mut D),
) {
    debug_assert_eq!(out.len(), rows / GROUP * nb * D::BYTES);
    // Group by group: the eight rows' slices taken once, then one block column at a time.
    for (g, dst) in out.chunks_exact_mut(nb * D::BYTES).enumerate() {
        let rows_g: [&[S]; GROUP] = std::array::from_fn(|r| &blocks[(g * GROUP + r) * nb..][..nb]);
        // The next group's rows are one contiguous range: asked for a share per block
        // column, so that its eight rows' blocks are in cache when their turn comes. Only
        // for blocks of a line or more: the short blocks' eight streams are followed well
        // enough by the hardware (one thread, 14336 x 4096 from memory: Q4_K 3.5 -> 6.3 GB/s,
        // Q6_K 4.0 -> 7.8; Q8_0 9.5 -> 8.4, Q4_0 within noise; `examples/repack_speed.rs`).
        let next = match S::BYTES >= 64 {
            true => blocks.get((g + 1) * GROUP * nb..(g + 2) * GROUP * nb).map_or(&[][..], as_bytes),
            false => &[][..],
        };
        let next = crate::matmul::L2Shares::new(next, nb);
        // Ordinary stores: each block filled in place (every builder writes all its bytes:
        // `repack_writes_every_byte`), where assembling it on the stack, zeroed, and copying
        // it out took a fifth of a K type's repack.
        if let (Stores::Cached, Some(blocks_out)) = (stores, as_blocks_mut::<D>(dst)) {
            for (j, o) in blocks_out.iter_mut().enumerate() {
                next.fetch(j);
                f(std::array::from_fn(|r| &rows_g[r][j]), o);
            }
            continue;
        }
        for (j, chunk) in dst.chunks_exact_mut(D::BYTES).enumerate() {
            next.fetch(j);
            let src: [&S; GROUP] = std::array::from_fn(|r| &rows_g[r][j]);
            let mut d = D::default();
            f(src, &mut d);
            match stores {
                Stores::Streaming => store_streaming(chunk, as_bytes(std::slice::from_ref(&d))),
                Stores::Cached => chunk.copy_from_slice(as_bytes(std::slice::from_ref(&d))),
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    if stores == Stores::Streaming {
        // SAFETY: SSE is part of x86_64; the fence orders the streaming stores above before
        // anything that follows (the copy is read by other threads once the repack returns).
        unsafe { std::arch::x86_64::_mm_sfence() };
    }
}

/// Copies a finished block to its place. On x86 with 16-byte aligned places (every block
/// size is a multiple of 16 and the copies are page-aligned maps), non-temporal stores: the
/// copy is written once and not read for a while, so fetching its lines first would only
/// double the traffic and evict the source.
fn store_streaming(dst: &mut [u8], src: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    if (dst.as_ptr() as usize).is_multiple_of(16) && src.len().is_multiple_of(16) && dst.len() == src.len() {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_stream_si128};
        for (i, c) in src.chunks_exact(16).enumerate() {
            // SAFETY: SSE2 is part of x86_64; dst is 16-byte aligned and as long as src, so
            // every 16-byte store at 16 * i lies inside it, aligned.
            unsafe {
                _mm_stream_si128(
                    dst.as_mut_ptr().add(16 * i) as *mut __m128i,
                    _mm_loadu_si128(c.as_ptr() as *const __m128i),
                )
            };
        }
        return;
    }
    dst.copy_from_slice(src);
}

fn repack_q4_k(blocks: &[BlockQ4K], rows: usize, nb: usize, out: &mut [u8], stores: Stores) {
    interleave(blocks, rows, nb, out, stores, |src, o: &mut BlockQ4Kx8| {
        for (r, b) in src.iter().enumerate() {
            k_row_scales(r, (&b.d, &b.dmin, &b.scales), (&mut o.d, &mut o.dmin, &mut o.scales, &mut o.mins));
        }
        interleave_run(src.map(|b| &b.qs[..]), &mut o.qs);
    })
}

fn repack_q5_k(blocks: &[BlockQ5K], rows: usize, nb: usize, out: &mut [u8], stores: Stores) {
    interleave(blocks, rows, nb, out, stores, |src, o: &mut BlockQ5Kx8| {
        // Q4_K's fields in Q4_Kx8's order, plus the fifth bits interleaved as the nibbles.
        for (r, b) in src.iter().enumerate() {
            k_row_scales(r, (&b.d, &b.dmin, &b.scales), (&mut o.d, &mut o.dmin, &mut o.scales, &mut o.mins));
        }
        interleave_run(src.map(|b| &b.qs[..]), &mut o.qs);
        interleave_run(src.map(|b| &b.qh[..]), &mut o.qh);
    })
}

/// Row r of a Q4_K or Q5_K block into the shared scalar fields of Q4_Kx8 / Q5_Kx8: d and
/// dmin, the scales and mins unpacked to bytes (group-major, row-minor). (The nibbles go 4
/// bytes per row in turn: `interleave_run`.)
#[allow(clippy::type_complexity)]
fn k_row_scales(
    r: usize,
    (d, dmin, scales): (&[u8; 2], &[u8; 2], &[u8; 12]),
    (od, odmin, osc, omin): (&mut [u8; 16], &mut [u8; 16], &mut [u8; 64], &mut [u8; 64]),
) {
    od[2 * r..2 * r + 2].copy_from_slice(d);
    odmin[2 * r..2 * r + 2].copy_from_slice(dmin);
    let (sc, m) = crate::scalar::k_scales_mins(scales);
    for grp in 0..8 {
        osc[8 * grp + r] = (sc >> (8 * grp)) as u8;
        omin[8 * grp + r] = (m >> (8 * grp)) as u8;
    }
}

/// `out[32w + 4r..32w + 4r + 4]` = `rows[r][4w..4w + 4]` for every 4-byte word w: the
/// interleaving of the quant bytes of every type but Q2_K and Q3_K, 16 bytes of each row at
/// a time (`interleave_words`). Every row has the same length, a multiple of 16, and `out`
/// 8 times that.
#[inline(always)]
fn interleave_run(rows: [&[u8]; GROUP], out: &mut [u8]) {
    debug_assert!(rows.iter().all(|r| r.len() * GROUP == out.len() && r.len() % 16 == 0));
    for (m, o) in out.chunks_exact_mut(128).enumerate() {
        let piece: [&[u8; 16]; GROUP] =
            std::array::from_fn(|r| rows[r][16 * m..16 * m + 16].try_into().expect("16 bytes"));
        interleave_words(piece, o.try_into().expect("128 bytes"));
    }
}

/// The bytes of 32 signed values, borrowed (copying them with `map(|v| v as u8)` took Q8_0's
/// repack from 10 to 4.6 GB/s on one thread of the Zen 4).
fn bytemuck_i8(q: &[i8; 32]) -> &[u8; 32] {
    // SAFETY: i8 and u8 have the same size, alignment and validity (every bit pattern).
    unsafe { &*(q as *const [i8; 32] as *const [u8; 32]) }
}

fn repack_q8_0(blocks: &[BlockQ8_0], rows: usize, nb: usize, out: &mut [u8], stores: Stores) {
    interleave(blocks, rows, nb, out, stores, |src, o: &mut BlockQ8_0x8| {
        interleave_run(src.map(|b| &bytemuck_i8(&b.qs)[..]), &mut o.qs);
        for (r, b) in src.iter().enumerate() {
            o.d[2 * r..2 * r + 2].copy_from_slice(&b.d);
        }
    })
}

fn repack_q4_1(blocks: &[BlockQ4_1], rows: usize, nb: usize, out: &mut [u8], stores: Stores) {
    interleave(blocks, rows, nb, out, stores, |src, o: &mut BlockQ4_1x8| {
        for (r, b) in src.iter().enumerate() {
            o.d[2 * r..2 * r + 2].copy_from_slice(&b.d);
            o.m[2 * r..2 * r + 2].copy_from_slice(&b.m);
        }
        interleave_run(src.map(|b| &b.qs[..]), &mut o.qs);
    })
}

fn repack_q5_0(blocks: &[BlockQ5_0], rows: usize, nb: usize, out: &mut [u8], stores: Stores) {
    interleave(blocks, rows, nb, out, stores, |src, o: &mut BlockQ5_0x8| {
        for (r, b) in src.iter().enumerate() {
            o.d[2 * r..2 * r + 2].copy_from_slice(&b.d);
            o.qh[4 * r..4 * r + 4].copy_from_slice(&b.qh);
        }
        interleave_run(src.map(|b| &b.qs[..]), &mut o.qs);
    })
}

fn repack_q5_1(blocks: &[BlockQ5_1], rows: usize, nb: usize, out: &mut [u8], stores: Stores) {
    interleave(blocks, rows, nb, out, stores, |src, o: &mut BlockQ5_1x8| {
        for (r, b) in src.iter().enumerate() {
            o.d[2 * r..2 * r + 2].copy_from_slice(&b.d);
            o.m[2 * r..2 * r + 2].copy_from_slice(&b.m);
            o.qh[4 * r..4 * r + 4].copy_from_slice(&b.qh);
        }
        interleave_run(src.map(|b| &b.qs[..]), &mut o.qs);
    })
}

fn repack_q6_k(blocks: &[BlockQ6K], rows: usize, nb: usize, out: &mut [u8], stores: Stores) {
    interleave(blocks, rows, nb, out, stores, |src, o: &mut BlockQ6Kx8| {
        for (r, b) in src.iter().enumerate() {
            o.d[2 * r..2 * r + 2].copy_from_slice(&b.d);
            for grp in 0..16 {
                o.scales[8 * grp + r] = b.scales[grp] as u8;
            }
        }
        // ql and qh: 4 bytes per row in turn.
        interleave_run(src.map(|b| &b.ql[..]), &mut o.ql);
        interleave_run(src.map(|b| &b.qh[..]), &mut o.qh);
    })
}

fn repack_q2_k(blocks: &[BlockQ2K], rows: usize, nb: usize, out: &mut [u8], stores: Stores) {
    interleave(blocks, rows, nb, out, stores, |src, o: &mut BlockQ2Kx8| {
        for (r, b) in src.iter().enumerate() {
            o.d[2 * r..2 * r + 2].copy_from_slice(&b.d);
            o.dmin[2 * r..2 * r + 2].copy_from_slice(&b.dmin);
            for (g, &sc) in b.scales.iter().enumerate() {
                o.scales[8 * g + r] = sc;
            }
            interleave_2bit_row(r, &b.qs, &mut o.qs);
        }
    })
}

fn repack_q3_k(blocks: &[BlockQ3K], rows: usize, nb: usize, out: &mut [u8], stores: Stores) {
    interleave(blocks, rows, nb, out, stores, |src, o: &mut BlockQ3Kx8| {
        for (r, b) in src.iter().enumerate() {
            o.d[2 * r..2 * r + 2].copy_from_slice(&b.d);
            for (g, &sc) in crate::scalar::q3_k_scales(&b.scales).iter().enumerate() {
                o.scales[8 * g + r] = sc as u8;
            }
            interleave_2bit_row(r, &b.qs, &mut o.qs);
            for c in 0..8 {
                o.hmask[32 * c + 4 * r..32 * c + 4 * r + 4].copy_from_slice(&b.hmask[4 * c..4 * c + 4]);
            }
        }
    })
}

/// Row r's 2-bit quants (Q2_K, Q3_K: 64 bytes, two halves of 32) into Q2Kx8/Q3Kx8's qs:
/// bytes 32h + 4c..+4 at 256h + 32c + 4r.
fn interleave_2bit_row(r: usize, qs: &[u8; 64], out: &mut [u8; 512]) {
    for h in 0..2 {
        for c in 0..8 {
            let at = 256 * h + 32 * c + 4 * r;
            out[at..at + 4].copy_from_slice(&qs[32 * h + 4 * c..32 * h + 4 * c + 4]);
        }
    }
}

fn repack_iq4_xs(blocks: &[BlockIQ4XS], rows: usize, nb: usize, out: &mut [u8], stores: Stores) {
    interleave(blocks, rows, nb, out, stores, |src, o: &mut BlockIQ4XSx8| {
        for (r, b) in src.iter().enumerate() {
            o.d[2 * r..2 * r + 2].copy_from_slice(&b.d);
            for g in 0..8 {
                o.scales[8 * g + r] = crate::scalar::iq4_xs_scale(b, g) as i8;
                for c in 0..4 {
                    let at = 128 * g + 32 * c + 4 * r;
                    o.qs[at..at + 4].copy_from_slice(&b.qs[16 * g + 4 * c..16 * g + 4 * c + 4]);
                }
            }
        }
    })
}

fn repack_q4_0(blocks: &[BlockQ4_0], rows: usize, nb: usize, out: &mut [u8], stores: Stores) {
    interleave_nibbles(blocks, rows, nb, out, stores, |b| (&b.d, &b.qs))
}

/// A block type of Q4_0's fields (`fields` gives d and the 16 bytes of nibbles) into
/// `BlockQ4_0x8`s: Q4_0 and IQ4_NL.
fn interleave_nibbles<S: Block>(
    blocks: &[S],
    rows: usize,
    nb: usize,
    out: &mut [u8],
    stores: Stores,
    fields: impl Fn(&S) -> (&[u8; 2], &[u8; 16]),
) {
    interleave(blocks, rows, nb, out, stores, |src, o: &mut BlockQ4_0x8| {
        let parts: [(&[u8; 2], &[u8; 16]); GROUP] = std::array::from_fn(|r| fields(src[r]));
        for (r, (d, _)) in parts.iter().enumerate() {
            o.d[2 * r..2 * r + 2].copy_from_slice(*d);
        }
        interleave_words(parts.map(|(_, qs)| qs), &mut o.qs);
    })
}

/// `out[32c + 4r..32c + 4r + 4]` = `qs[r][4c..4c + 4]`: the 4-byte words of 8 rows' 16 bytes,
/// transposed (an 8x4 transpose of 32-bit words). Most of a Q4_0 repack's time, which is
/// most of decode's while a matrix waits for its copy (`Matrix::as_copy`).
#[inline(always)]
fn interleave_words(qs: [&[u8; 16]; GROUP], out: &mut [u8; 128]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of x86_64; every load reads the 16 bytes of a `[u8; 16]` and
        // every store writes 16 bytes at 16-byte steps inside the 128 of `out`.
        unsafe {
            for half in 0..2 {
                let q: [__m128i; 4] =
                    std::array::from_fn(|i| _mm_loadu_si128(qs[4 * half + i].as_ptr() as *const __m128i));
                // Words (row, c): t0 = (0,0) (1,0) (0,1) (1,1), t1 the same of rows 2 and 3, ...
                let t0 = _mm_unpacklo_epi32(q[0], q[1]);
                let t1 = _mm_unpacklo_epi32(q[2], q[3]);
                let t2 = _mm_unpackhi_epi32(q[0], q[1]);
                let t3 = _mm_unpackhi_epi32(q[2], q[3]);
                // Column c of these four rows: (0,c) (1,c) (2,c) (3,c).
                let cols = [
                    _mm_unpacklo_epi64(t0, t1),
                    _mm_unpackhi_epi64(t0, t1),
                    _mm_unpacklo_epi64(t2, t3),
                    _mm_unpackhi_epi64(t2, t3),
                ];
                for (c, v) in cols.into_iter().enumerate() {
                    _mm_storeu_si128(out.as_mut_ptr().add(32 * c + 16 * half) as *mut __m128i, v);
                }
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    for (r, q) in qs.iter().enumerate() {
        for c in 0..4 {
            out[32 * c + 4 * r..32 * c + 4 * r + 4].copy_from_slice(&q[4 * c..4 * c + 4]);
        }
    }
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
