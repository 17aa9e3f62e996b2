//! Matrix-vector (decode) and matrix-matrix (prefill) products of a quantized weight matrix
//! with f32 activations. The activations are quantized once per call into a reusable
//! `ActBuf`; weight rows are split across rayon workers in chunks.
//!
//! Weights: `rows` rows of `cols` elements, row-major as stored in GGUF (each row a run of
//! whole blocks). Output: `y[i * rows + r]` = row r of the weights . activation row i.

use crate::dispatch::{
    ActBuf, ActIn, ActRef, ActTile, ActTileK, ActTileS, ActTiles, ActType, Dot16x4Fn, Dot16x8Fn, Dot4Fn,
    Dot4x2Fn, Dot4x4Fn, Dot8Fn, Dot8x4Fn, DotFn, Kernels, Line64, Out16, Panel16Fns, PanelEightFn,
    RowsDecodeFn, RowsUnpackFn, Tile16Fns,
};
use crate::pool::SharedMut;
use std::cell::RefCell;

/// Activation rows from which a layout's unpack-once panel (`Kernels::panel16`) pays: the
/// unpacking costs about as much as one pass of 8 rows through the per-call kernels.
pub const PANEL_MIN_ROWS: usize = 16;

/// Activation rows from which a layout's AMX path (`Kernels::amx16`) runs: one tile's worth.
pub const AMX_MIN_ROWS: usize = 16;

/// Bytes of a batch's activation tiles that the AMX path keeps in L2 (2 MiB per core on the
/// CPUs that have AMX): a longer batch runs in parts of whole tiles, each through every
/// weight. Each weight pair's tile loop passes over all of the batch's activation tiles, so
/// a 512-token batch of a 1B model's FFN down projection (8192 columns, 4.5 MiB of tiles)
/// read them from L3 once per pair: 279 GMAC/s against the 344 of the up projection (2048
/// columns), the same weights, one thread. The parts repeat each pair's unpacking and read
/// the weights once per part (from L2 or memory), which costs less.
pub const AMX_TILES_L2: usize = 1 << 20;

/// Bytes of one activation row in the AMX tiles: about 1.125 per value (a Q8_0 tile: 32
/// bytes and a 4-byte scale per 32 values).
fn cols_bytes(cols: usize) -> usize {
    cols + cols / 8
}

/// Activation rows from which a matrix kept in the file's row layout runs through its type's
/// interleaved kernels, each worker repacking 16 rows at a time into a small buffer that
/// stays in cache (`FLY`): the repacking costs about what the panel unpacking does, so it
/// pays where the panels do.
pub const FLY_MIN_ROWS: usize = PANEL_MIN_ROWS;

thread_local! {
    /// Each worker's panel buffer: it grows to the largest panel once and is reused after.
    static PANEL: RefCell<Vec<Line64>> = const { RefCell::new(Vec::new()) };
    /// The calling thread's activation tiles for the AMX path (`tile_activations`).
    static ACT_TILES: RefCell<Vec<ActTile>> = const { RefCell::new(Vec::new()) };
    /// The same for Q8_1 activations (`tile_activations_q8_1`).
    static ACT_TILES_K: RefCell<Vec<ActTileK>> = const { RefCell::new(Vec::new()) };
    /// The same for Q8_K activations (`tile_activations_sb`).
    static ACT_TILES_S: RefCell<Vec<ActTileS>> = const { RefCell::new(Vec::new()) };
    /// Each worker's rows repacked on the fly (`FLY_MIN_ROWS`): one or two groups.
    static FLY: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}
use crate::repack::{Layout, Stores, GROUP};
use crate::types::GgmlType;
use crate::KernelError;

/// Rows per task: about four tasks per thread, 16 to 4096 rows, a multiple of 16. Big tasks
/// matter: each is one contiguous stream of weights that the hardware prefetcher follows,
/// and every jump to a new task restarts it (64-row tasks decode the 1B shape's Q4_0 at 24
/// tokens/s where 16-row tasks gave 20; 1024-row tasks for its 8192-row FFN matrices
/// instead of 256 decode 3-6% faster). Four per thread keep the threads balanced.
fn rows_per_task(rows: usize, threads: usize) -> usize {
    (rows / (4 * threads.max(1)) / 16 * 16).clamp(16, 4096)
}
/// Rows per task for a batch (16 rows or more): as `rows_per_task`, but whole 16-row pairs
/// and, where some size allows it, a number of tasks that the threads share evenly. A small
/// model's 576-row matrices made nine 64-row tasks, five for one thread and four for the
/// other; twelve of 48 rows keep both busy to the end.
fn rows_per_task_batch(rows: usize, threads: usize) -> usize {
    let t = threads.max(1);
    let pairs = rows / 16;
    let most = (pairs / (4 * t)).clamp(1, 256);
    (1..=most)
        .rev()
        .find(|&p| pairs.is_multiple_of(p) && (pairs / p).is_multiple_of(t))
        .map_or(rows_per_task(rows, threads), |p| 16 * p)
}

// Tasks of interleaved matrices hold whole groups.
const _: () = assert!(16 % GROUP == 0);

/// Bytes to bring into L2 a share at a time over the `steps` steps of a loop (the next
/// pair's weights while this one computes, the next row group while a repack copies): all at
/// once, the prefetches outnumber the line fill buffers and stall the core. The share size
/// is worked out once (a division per step showed in a small model's prompt).
#[derive(Clone, Copy)]
pub(crate) struct L2Shares<'a> {
    bytes: &'a [u8],
    per: usize,
}

impl<'a> L2Shares<'a> {
    pub(crate) fn new(bytes: &'a [u8], steps: usize) -> L2Shares<'a> {
        L2Shares { bytes, per: bytes.len().div_ceil(64).div_ceil(steps.max(1)) }
    }

    /// Share `step`'s bytes (cache lines `step * per..`), for a callee to ask for as it goes.
    pub(crate) fn share(&self, step: usize) -> &'a [u8] {
        let b = self.bytes;
        &b[(64 * step * self.per).min(b.len())..(64 * (step + 1) * self.per).min(b.len())]
    }

    /// Asks L2 for share `step` (a prefetch never faults).
    #[inline]
    pub(crate) fn fetch(&self, step: usize) {
        #[cfg(target_arch = "x86_64")]
        for line in self.share(step).chunks(64) {
            // SAFETY: prefetching has no architectural effect; SSE is baseline on x86_64.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(
                    line.as_ptr() as *const i8
                )
            };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = step;
    }
}

/// Asks for the cache line at `p` for writing (an output line about to be stored: its
/// read-for-ownership then overlaps the computing of it). A prefetch never faults.
#[inline(always)]
pub(crate) fn prefetch_write(p: *const f32) {
    // SAFETY: a prefetch has no architectural effect (on x86 CPUs without PREFETCHW it is a
    // no-op); it reads nothing and faults on no address.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::asm!("prefetchw [{}]", in(reg) p, options(nostack, preserves_flags))
    };
    // SAFETY: as above.
    #[cfg(target_arch = "aarch64")]
    unsafe {
        std::arch::asm!("prfm pstl1keep, [{}]", in(reg) p, options(nostack, preserves_flags))
    };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = p;
}

/// A weight matrix: type, shape and bytes (zero-copy from the file, or repacked at load).
#[derive(Clone, Copy, Debug)]
pub struct Matrix<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub layout: Layout,
    pub data: &'a [u8],
    /// In the row layout while its repacked copy is being made: computed as the copy will be,
    /// at every batch size (the rows repacked on the fly, as `FLY_MIN_ROWS` does for long
    /// batches), so that the results are the same to the bit before and after the copy
    /// arrives (`Matrix::as_copy`).
    pub as_copy: bool,
}

impl<'a> Matrix<'a> {
    pub fn new(ty: GgmlType, rows: usize, cols: usize, data: &'a [u8]) -> Result<Matrix<'a>, KernelError> {
        let bad = KernelError::BadLength { ty, bytes: data.len(), elems: rows.saturating_mul(cols) };
        let row_bytes = ty.row_bytes(cols).ok_or(bad.clone())?;
        if row_bytes.checked_mul(rows) != Some(data.len()) {
            return Err(bad);
        }
        Ok(Matrix { ty, rows, cols, layout: Layout::Rows, data, as_copy: false })
    }

    /// A matrix in an interleaved layout made by `repack::repack` (rows a multiple of the
    /// group).
    pub fn with_layout(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        layout: Layout,
        data: &'a [u8],
    ) -> Result<Matrix<'a>, KernelError> {
        if layout == Layout::Rows {
            return Matrix::new(ty, rows, cols, data);
        }
        if Layout::for_type(ty) != Some(layout) || !crate::repack::repackable(ty, rows, cols) {
            return Err(KernelError::Unsupported { ty, what: "this layout" });
        }
        let bytes = rows / GROUP * (cols / ty.block_size()) * layout.block_bytes();
        if data.len() != bytes {
            return Err(KernelError::BadLength { ty, bytes: data.len(), elems: rows * cols });
        }
        Ok(Matrix { ty, rows, cols, layout, data, as_copy: false })
    }

    /// This matrix (in the row layout) computed as its interleaved copy would be, where the
    /// level has one for it: every batch size through the interleaved kernels, each task
    /// repacking its rows on the fly. A model whose copies are made in the background uses
    /// this until each copy is ready, so that what it computes does not depend on when.
    pub fn as_copy(self, k: &Kernels) -> Matrix<'a> {
        let pending =
            self.layout == Layout::Rows && k.preferred_layout(self.ty, self.rows, self.cols).is_some();
        Matrix { as_copy: pending, ..self }
    }

    /// The bytes of group `g` (rows 8g..8g+8) of an interleaved layout.
    fn group(&self, g: usize) -> &'a [u8] {
        self.groups(g, 1)
    }

    /// `count` consecutive groups from group `g` (they are contiguous).
    fn groups(&self, g: usize, count: usize) -> &'a [u8] {
        let gb = self.cols / self.ty.block_size() * self.layout.block_bytes();
        &self.data[g * gb..(g + count) * gb]
    }

    /// The activation format this matrix's kernels take: the weight type's, except that the
    /// interleaved Q4_0/Q5_0/Q8_0 kernels take Q8_0 blocks with their sums.
    pub fn act_type(&self) -> Option<ActType> {
        act_type(self.ty, self.layout)
    }

    /// The activation format `matmul` quantizes to for this matrix against `n` rows: as
    /// `act_type`, except that a matrix in the row layout runs through its type's interleaved
    /// kernels from `FLY_MIN_ROWS` rows on. (Matrices sharing an input in `matmul_multi`
    /// must agree on it.)
    pub fn act_type_for(&self, k: &Kernels, n: usize) -> Option<ActType> {
        act_type(self.ty, kernel_layout(k, self, n))
    }

    /// The bytes of rows `r0..r1` of a matrix in the row layout.
    fn rows_bytes(&self, r0: usize, r1: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.data[r0 * rb..r1 * rb]
    }

    pub fn row_bytes(&self) -> usize {
        self.data.len() / self.rows.max(1)
    }

    pub fn row(&self, r: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }
}

/// The activation format of a type's kernels in a layout (see `Matrix::act_type`).
fn act_type(ty: GgmlType, layout: Layout) -> Option<ActType> {
    match layout {
        Layout::Q4_0x8 | Layout::Q5_0x8 | Layout::Q8_0x8 | Layout::IQ4NLx8 => Some(ActType::Q8_0S),
        _ => ActType::for_weight(ty),
    }
}

/// The layout whose kernels run a matrix against `n` activation rows: its own, or for a
/// matrix in the row layout from `FLY_MIN_ROWS` rows on, the interleaved layout the level
/// prefers for its type (repacked on the fly).
fn kernel_layout(k: &Kernels, w: &Matrix, n: usize) -> Layout {
    match w.layout {
        Layout::Rows if n >= FLY_MIN_ROWS || w.as_copy => {
            k.preferred_layout(w.ty, w.rows, w.cols).unwrap_or(Layout::Rows)
        }
        l => l,
    }
}

fn prepare(k: &Kernels, w: &Matrix, n: usize) -> Result<(DotFn, ActType), KernelError> {
    let unsupported = KernelError::Unsupported { ty: w.ty, what: "matrix multiplication" };
    let act = act_type(w.ty, kernel_layout(k, w, n)).ok_or(unsupported.clone())?;
    let dot = k.dot(w.ty).ok_or(unsupported)?;
    if !w.cols.is_multiple_of(act.block()) {
        return Err(KernelError::BadLength { ty: w.ty, bytes: w.data.len(), elems: w.cols });
    }
    Ok((dot, act))
}

/// y = W x for one activation row (decode).
pub fn matvec(
    k: &Kernels,
    w: &Matrix,
    x: &[f32],
    y: &mut [f32],
    scratch: &mut ActBuf,
) -> Result<(), KernelError> {
    matmul(k, w, x, 1, y, scratch)
}

/// Y = X W^T for `n` activation rows (prefill). Each task takes a chunk of weight rows and
/// runs every activation row against them while they are in cache.
pub fn matmul(
    k: &Kernels,
    w: &Matrix,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    scratch: &mut ActBuf,
) -> Result<(), KernelError> {
    matmul_multi(k, &[*w], x, n, &mut [y], scratch)
}

/// Most matrices sharing one input in a `matmul_multi` call.
pub const MAX_SHARED: usize = 4;

/// Several matrices that share an input (Q, K and V; gate and up): the input is quantized
/// once and all their rows are spread over the workers in one parallel section.
/// `ys[j]` receives `n x ws[j].rows` values.
pub fn matmul_multi(
    k: &Kernels,
    ws: &[Matrix],
    x: &[f32],
    n: usize,
    ys: &mut [&mut [f32]],
    scratch: &mut ActBuf,
) -> Result<(), KernelError> {
    matmul_multi_in(k, ws, ActIn::Ready(x), n, ys, scratch)
}

/// `matmul_multi` on input rows that are ready (`ActIn::Ready`) or made by a `Prep` where
/// they are quantized (`ActIn::Prep`: `prep(i, row)` makes row i in place, once; a norm or
/// SwiGLU and the quantization of its output in one parallel section). The rows made are
/// left in place; the results are those of making the rows first, then `matmul_multi`.
pub fn matmul_multi_in(
    k: &Kernels,
    ws: &[Matrix],
    mut x: ActIn,
    n: usize,
    ys: &mut [&mut [f32]],
    scratch: &mut ActBuf,
) -> Result<(), KernelError> {
    let Some(first) = ws.first() else { return Ok(()) };
    if ws.len() != ys.len() || ws.len() > MAX_SHARED {
        return Err(KernelError::BadLength { ty: first.ty, bytes: ys.len(), elems: ws.len() });
    }
    let (_, act) = prepare(k, first, n)?;
    let mut dots: [Option<DotFn>; MAX_SHARED] = [None; MAX_SHARED];
    let mut dots4: [Option<Dot4Fn>; MAX_SHARED] = [None; MAX_SHARED];
    let mut rows_decode: [Option<RowsDecodeFn>; MAX_SHARED] = [None; MAX_SHARED];
    let mut tiles: [Option<Dot4x2Fn>; MAX_SHARED] = [None; MAX_SHARED];
    let mut tiles44: [Option<Dot4x4Fn>; MAX_SHARED] = [None; MAX_SHARED];
    let mut x8: [Option<(Dot8Fn, Dot8x4Fn)>; MAX_SHARED] = [None; MAX_SHARED];
    let mut x16: [Option<Dot16x4Fn>; MAX_SHARED] = [None; MAX_SHARED];
    let mut x16x8: [Option<Dot16x8Fn>; MAX_SHARED] = [None; MAX_SHARED];
    let mut panels: [Option<Panel16Fns>; MAX_SHARED] = [None; MAX_SHARED];
    let mut amx: [Option<Tile16Fns>; MAX_SHARED] = [None; MAX_SHARED];
    // Matrices in the row layout run through interleaved kernels (repacked on the fly), or
    // where the level has an unpacker from rows, through its panels or tiles directly.
    let mut fly = [false; MAX_SHARED];
    let mut direct: [Option<RowsUnpackFn>; MAX_SHARED] = [None; MAX_SHARED];
    // The 8-row kernel of those panels, where the layout has no panel path of its own.
    let mut rows_eight: [Option<PanelEightFn>; MAX_SHARED] = [None; MAX_SHARED];
    // First task of each matrix (task t belongs to the last j with starts[j] <= t).
    let mut starts = [usize::MAX; MAX_SHARED + 1];
    let mut tasks = 0;
    let threads = crate::pool::global().threads();
    let mut chunk = [0usize; MAX_SHARED];
    for (j, (w, y)) in ws.iter().zip(ys.iter()).enumerate() {
        let (dot, a) = prepare(k, w, n)?;
        if a != act || w.cols != first.cols {
            return Err(KernelError::Unsupported {
                ty: w.ty,
                what: "a shared input with a different layout",
            });
        }
        if x.len() != n * w.cols || y.len() != n * w.rows {
            return Err(KernelError::BadLength { ty: w.ty, bytes: x.len() * 4, elems: n * w.cols });
        }
        dots[j] = Some(dot);
        dots4[j] = k.dot4(w.ty);
        rows_decode[j] = k.rows_decode(w.ty).filter(|_| w.layout == Layout::Rows);
        tiles[j] = k.dot4x2(w.ty);
        tiles44[j] = k.dot4x4(w.ty);
        let layout = kernel_layout(k, w, n);
        if layout != Layout::Rows {
            fly[j] = w.layout == Layout::Rows;
            x8[j] = k.repacked(layout);
            x16[j] = k.repacked16(layout);
            x16x8[j] = k.repacked16x8(layout);
            panels[j] = k.panel16(layout);
            amx[j] = k.amx16(layout).filter(|_| n >= AMX_MIN_ROWS);
            // (Not for a matrix computed as its copy: it runs through the copy's own kernels
            // on rows repacked on the fly, at every batch size and level, so that its results
            // are the copy's by construction; the unpackers feed other kernels for some types,
            // Q4_0 rows the Q5_0 panels at avx512.)
            if fly[j] && n >= FLY_MIN_ROWS && !w.as_copy {
                rows_eight[j] = k.rows_panel_kernel(w.ty).filter(|_| panels[j].is_none());
                if amx[j].is_some() || panels[j].is_some() || rows_eight[j].is_some() {
                    direct[j] = k.rows_unpack16(w.ty, amx[j].is_some());
                }
            }
            if x8[j].is_none() {
                return Err(KernelError::Unsupported { ty: w.ty, what: "this layout at this kernel level" });
            }
        }
        starts[j] = tasks;
        chunk[j] = match n >= FLY_MIN_ROWS {
            true => rows_per_task_batch(w.rows, threads),
            false => rows_per_task(w.rows, threads),
        };
        tasks += w.rows.div_ceil(chunk[j]);
    }
    starts[ws.len()] = tasks;
    // A long batch whose activation tiles outgrow L2 runs in parts that fit (see
    // `AMX_TILES_L2`), where every matrix takes every row through the tiles, so each row's
    // results are what the whole batch would give.
    let cols = first.cols;
    let amx_all = (0..ws.len()).all(|j| amx[j].is_some());
    let part = (AMX_TILES_L2 / cols_bytes(cols).max(1) / AMX_MIN_ROWS * AMX_MIN_ROWS).max(AMX_MIN_ROWS);
    if amx_all && n >= part + AMX_MIN_ROWS {
        let mut i0 = 0;
        while i0 < n {
            // (A last part under a tile's rows joins the one before it.)
            let m = if n - i0 < part + AMX_MIN_ROWS { n - i0 } else { part };
            let mut parts: [&mut [f32]; MAX_SHARED] = Default::default();
            for (j, (y, w)) in ys.iter_mut().zip(ws).enumerate() {
                parts[j] = &mut y[i0 * w.rows..(i0 + m) * w.rows];
            }
            matmul_multi_in(k, ws, x.rows(i0, i0 + m, cols), m, &mut parts[..ws.len()], scratch)?;
            i0 += m;
        }
        return Ok(());
    }
    // The AMX path reads the batch laid out as tiles, once for all its matrices (quantized
    // and laid out in one pass).
    let (mut tiles_buf, mut tiles_k_buf, mut tiles_s_buf) =
        (ACT_TILES.take(), ACT_TILES_K.take(), ACT_TILES_S.take());
    let use_amx = amx.iter().any(|t| t.is_some());
    let (a, act_tiles) = match use_amx {
        true => scratch.quantize_tiled(act, x, n, &mut tiles_buf, &mut tiles_k_buf, &mut tiles_s_buf),
        false => (scratch.quantize(act, x.ready(cols)), ActTiles::Q8_0(&[])),
    };
    // Each task writes the outputs of its own weight rows only.
    let mut outs = [SharedMut(std::ptr::null_mut::<f32>()); MAX_SHARED];
    for (o, y) in outs.iter_mut().zip(ys.iter_mut()) {
        *o = SharedMut(y.as_mut_ptr());
    }
    let outs = outs;
    crate::pool::global().run(tasks, &|t| {
        let j = (0..ws.len()).rev().find(|&j| starts[j] <= t).unwrap_or(0);
        let (w, out) = (&ws[j], outs[j]);
        let Some(dot) = dots[j] else { return };
        let r0 = (t - starts[j]) * chunk[j];
        let r1 = (r0 + chunk[j]).min(w.rows);
        // Where the output of activation row i and weight row r goes (inside ys[j] for i < n
        // and r < w.rows, its length checked to be n * w.rows).
        let at = |i: usize, r: usize| out.ptr().wrapping_add(i * w.rows + r);
        let write = |i: usize, r: usize, v: f32| {
            // SAFETY: callers pass i < n and r < w.rows, so the element is inside ys[j]; only
            // this task writes rows r0..r1 of matrix j.
            unsafe { *at(i, r) = v };
        };
        // The 16 outputs of a two-group tile for activation row i, rows r..r + 16.
        let write16 = |i: usize, r: usize, v: &[f32; 16]| {
            debug_assert!(i < n && r + 16 <= w.rows);
            // SAFETY: as `write`: i < n and r + 16 <= w.rows (r is the first row of two
            // whole groups of this task), so the 16 elements are inside ys[j] and this
            // task's own.
            unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), at(i, r), 16) };
        };
        // A 16-row kernel's eight activation rows from i, weight rows r..r + 16: their output
        // lines asked for (for writing) before the kernel runs, so that the stores need not
        // wait on them, then its results written.
        macro_rules! eight_rows {
            ($i:expr, $r:expr, $kernel:expr) => {{
                let (i, r): (usize, usize) = ($i, $r);
                (i..i + 8).for_each(|i| prefetch_write(at(i, r)));
                for (c, vc) in $kernel.iter().enumerate() {
                    write16(i + c, r, vc);
                }
            }};
        }
        // The tile kernels' outputs for weight rows r..r + 16, every activation row.
        let out16 = |r: usize| {
            debug_assert!(r + 16 <= w.rows);
            // SAFETY: as `write16`, for each activation row i < n: r is the first row of two
            // whole groups of this task.
            unsafe { Out16::new(at(0, r), w.rows, n) }
        };
        // Interleaved layout: groups of 8 rows (r0 and r1 are multiples of 8: the chunk
        // is, and so are the rows of a repacked matrix); four activation rows at a time.
        if let Some((one, four)) = x8[j] {
            let (g1, mut g) = (r1 / GROUP, r0 / GROUP);
            let panel = panels[j].filter(|_| n >= PANEL_MIN_ROWS);
            // A matrix in the row layout: `count` groups from group `g` repacked into this
            // worker's buffer (the file's rows are read once per call either way).
            // (The type and shape were found repackable for the whole matrix, so every run of
            // whole groups is.)
            let mut fly_buf = if fly[j] { FLY.take() } else { Vec::new() };
            let fetch = |buf: &mut Vec<u8>, g: usize, count: usize| -> usize {
                let rows = count * GROUP;
                let len = crate::repack::repacked_len(w.ty, rows, cols).unwrap_or(0);
                if buf.len() < len {
                    buf.resize(len, 0);
                }
                let src = w.rows_bytes(g * GROUP, g * GROUP + rows);
                let ok = crate::repack::repack_into(w.ty, rows, cols, src, &mut buf[..len], Stores::Cached)
                    .is_some();
                debug_assert!(ok);
                len
            };
            // A 16x8 kernel that unpacks as it goes (no panel): eight activation rows at a
            // time against every pair of this task's groups, so the rows stay in L1 while
            // the task's weights come from L2, instead of a long prompt's activations
            // streaming from L2 once per pair. (Blocks of up to 32 KiB of rows, which leave
            // a 32 KiB L1 no room for the weights, ran SmolLM2's Q4_0 prompts 2-10% slower
            // on one thread of a Zen 4, the same on two.) The pairs below then start at row
            // `blocked`.
            let mut blocked = 0;
            if let (Some(k8), None, None, true, false) = (x16x8[j], panel, amx[j], n >= 16, fly[j]) {
                blocked = n / 8 * 8;
                for i in (0..blocked).step_by(8) {
                    let rows = std::array::from_fn(|c| a.row(i + c, cols));
                    let mut h = g;
                    while h + 1 < g1 {
                        eight_rows!(i, h * GROUP, k8(w.group(h), w.group(h + 1), &rows));
                        h += 2;
                    }
                }
            }
            while g < g1 {
                // Two groups at once where the level has a 16-row kernel (prefill).
                if g + 1 < g1 && ((x16[j].is_some() && n >= 4) || panel.is_some() || amx[j].is_some()) {
                    // The next pair's weights go to L2 a share per pass over activation rows
                    // i..i + step, so that its first pass (or its unpacking) waits on memory
                    // less: 5-10% of a 1B Q4_0 prompt at 64 tokens.
                    // (The shares are sized once per pair: a division per tile showed in a
                    // small model's prompt.) Not for the AMX tiles: their unpackers prefetch
                    // the next block themselves, and the K types' tiles hand out every chunk
                    // at the end, where the shares were one burst that stalled (a 1B prompt's
                    // prefill 1-6% faster without).
                    let next = (g + 3 < w.rows / GROUP).then(|| match fly[j] {
                        true => w.rows_bytes((g + 2) * GROUP, (g + 4) * GROUP),
                        false => w.groups(g + 2, 2),
                    });
                    // A share per pass of eight (or four) activation rows; the panel kernels
                    // take theirs and spread it over their blocks.
                    let next = next.unwrap_or(&[]);
                    let (ahead8, ahead4) = (L2Shares::new(next, n / 8), L2Shares::new(next, n / 4));
                    // Rows in the file's layout unpacked straight into the panel, where the
                    // level can: every activation row through the panel or the tiles.
                    if let Some(unpack_rows) = direct[j] {
                        let done = PANEL.with_borrow_mut(|p| {
                            if !unpack_rows(w.rows_bytes(g * GROUP, (g + 2) * GROUP), p) {
                                return false;
                            }
                            if let Some((_, tile)) = amx[j] {
                                return tile(
                                    p,
                                    (&[], &[]),
                                    act_tiles,
                                    cols / w.ty.block_size(),
                                    n.div_ceil(16),
                                    next,
                                    out16(g * GROUP),
                                );
                            }
                            let Some(eight) = panel.map(|p| p.1).or(rows_eight[j]) else { return false };
                            // Eight rows at a time; a last partial eight runs as the batch's
                            // last eight rows (n >= 16), writing some outputs again, equal.
                            let mut i = 0;
                            while i < n {
                                let i0 = i.min(n - 8);
                                eight_rows!(i0, g * GROUP, {
                                    eight(
                                        p,
                                        std::array::from_fn(|c| a.row(i0 + c, cols)),
                                        ahead8.share(i / 8),
                                    )
                                });
                                i += 8;
                            }
                            true
                        });
                        if done {
                            g += 2;
                            continue;
                        }
                    }
                    let (xa, xb) = match fly[j] {
                        true => {
                            let len = fetch(&mut fly_buf, g, 2);
                            fly_buf[..len].split_at(len / 2)
                        }
                        false => (w.group(g), w.group(g + 1)),
                    };
                    let mut i = blocked;
                    // AMX: the pair unpacked once, then every activation row 16 at a time.
                    if let Some((unpack, tile)) = amx[j] {
                        PANEL.with_borrow_mut(|p| {
                            let nb = cols / w.ty.block_size();
                            if unpack(xa, xb, p)
                                && tile(p, (xa, xb), act_tiles, nb, n.div_ceil(16), next, out16(g * GROUP))
                            {
                                i = n;
                            }
                        });
                    }
                    // (Not when the tiles took every row: the unpacking alone was 7% of a 1B
                    // Q4_K_M prompt.)
                    if let (Some((unpack, eight)), true) = (panel, i + 8 <= n) {
                        PANEL.with_borrow_mut(|p| {
                            if unpack(xa, xb, p) {
                                while i + 8 <= n {
                                    eight_rows!(i, g * GROUP, {
                                        eight(
                                            p,
                                            std::array::from_fn(|c| a.row(i + c, cols)),
                                            ahead8.share(i / 8),
                                        )
                                    });
                                    i += 8;
                                }
                            }
                        });
                    }
                    if let Some(k8) = x16x8[j] {
                        while i + 8 <= n {
                            ahead8.fetch(i / 8);
                            eight_rows!(i, g * GROUP, {
                                k8(xa, xb, &std::array::from_fn(|c| a.row(i + c, cols)))
                            });
                            i += 8;
                        }
                    }
                    let rows4 = |i: usize| {
                        [a.row(i, cols), a.row(i + 1, cols), a.row(i + 2, cols), a.row(i + 3, cols)]
                    };
                    if let Some(k16) = x16[j] {
                        while i + 4 <= n {
                            ahead4.fetch(i / 4);
                            let v = k16(xa, xb, rows4(i));
                            for (c, vc) in v.iter().enumerate() {
                                write16(i + c, g * GROUP, vc);
                            }
                            i += 4;
                        }
                    }
                    // What is left (a layout with a panel but no 16-row tile): group by group.
                    for (h, x) in [xa, xb].into_iter().enumerate() {
                        let mut i = i;
                        while i + 4 <= n {
                            for (c, vc) in four(x, rows4(i)).iter().enumerate() {
                                for (d, &v) in vc.iter().enumerate() {
                                    write(i + c, (g + h) * GROUP + d, v);
                                }
                            }
                            i += 4;
                        }
                        for i in i..n {
                            for (d, v) in one(x, a.row(i, cols)).into_iter().enumerate() {
                                write(i, (g + h) * GROUP + d, v);
                            }
                        }
                    }
                    g += 2;
                    continue;
                }
                let x = match fly[j] {
                    true => {
                        let len = fetch(&mut fly_buf, g, 1);
                        &fly_buf[..len]
                    }
                    false => w.group(g),
                };
                let mut i = 0;
                while i + 4 <= n {
                    let v =
                        four(x, [a.row(i, cols), a.row(i + 1, cols), a.row(i + 2, cols), a.row(i + 3, cols)]);
                    for (c, vc) in v.iter().enumerate() {
                        for (d, &x) in vc.iter().enumerate() {
                            write(i + c, g * GROUP + d, x);
                        }
                    }
                    i += 4;
                }
                for i in i..n {
                    let ai: ActRef = if n == 1 { a } else { a.row(i, cols) };
                    for (d, x) in one(x, ai).into_iter().enumerate() {
                        write(i, g * GROUP + d, x);
                    }
                }
                g += 1;
            }
            if fly[j] {
                FLY.set(fly_buf);
            }
            return;
        }
        // Decode: the task's rows in one call where the level has a kernel for many rows.
        if let (Some(many), 1) = (rows_decode[j], n) {
            // SAFETY: rows r0..r1 of the single activation row are elements r0..r1 of ys[j]
            // (length n * w.rows, checked), written by this task only.
            let y = unsafe { std::slice::from_raw_parts_mut(out.ptr().add(r0), r1 - r0) };
            if many(w.rows_bytes(r0, r1), a, y) {
                return;
            }
        }
        // Prefill: register tiles of four weight rows by $C activation rows, four (then two)
        // at a time, where the level has them.
        let mut i0 = 0;
        macro_rules! tiles_by {
            ($tile:expr, $C:literal) => {
                while i0 + $C <= n {
                    let acts: [ActRef; $C] = std::array::from_fn(|c| a.row(i0 + c, cols));
                    let mut r = r0;
                    while r + 4 <= r1 {
                        let v = $tile([w.row(r), w.row(r + 1), w.row(r + 2), w.row(r + 3)], acts);
                        for (c, vc) in v.iter().enumerate() {
                            for (d, &x) in vc.iter().enumerate() {
                                write(i0 + c, r + d, x);
                            }
                        }
                        r += 4;
                    }
                    for rr in r..r1 {
                        for (c, &ac) in acts.iter().enumerate() {
                            write(i0 + c, rr, dot(w.row(rr), ac));
                        }
                    }
                    i0 += $C;
                }
            };
        }
        if let Some(tile) = tiles44[j] {
            tiles_by!(tile, 4);
        }
        if let Some(tile) = tiles[j] {
            tiles_by!(tile, 2);
        }
        for i in i0..n {
            let ai: ActRef = if n == 1 { a } else { a.row(i, cols) };
            let mut r = r0;
            if let Some(dot4) = dots4[j] {
                while r + 4 <= r1 {
                    let v = dot4([w.row(r), w.row(r + 1), w.row(r + 2), w.row(r + 3)], ai);
                    for (d, v) in v.into_iter().enumerate() {
                        write(i, r + d, v);
                    }
                    r += 4;
                }
            }
            while r < r1 {
                write(i, r, dot(w.row(r), ai));
                r += 1;
            }
        }
    });
    ACT_TILES.set(tiles_buf);
    ACT_TILES_K.set(tiles_k_buf);
    ACT_TILES_S.set(tiles_s_buf);
    Ok(())
}
