//! Kernel levels and their tables. The CPU's features are checked once; a table for a level
//! exists only if the CPU runs it, which is what makes the `unsafe` calls to
//! `#[target_feature]` fns below sound. A level may have variants for optional extensions
//! (NEON with `sdot` where the CPU has dotprod); the best variant is the level's table.
//! `FERRITE_KERNELS=scalar|avx2|avxvnni|avx512|amx|neon`
//! lowers the level chosen by `Kernels::best()`; tests ask for each level explicitly.

use std::sync::OnceLock;

use crate::blocks::*;
use crate::pool::SharedMut;
use crate::repack::Layout;
use crate::scalar;
use crate::types::GgmlType;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Scalar,
    Avx2,
    AvxVnni,
    Avx512,
    /// avx512 plus AMX int8 tiles for the prefill of Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, Q4_K,
    /// Q5_K and IQ4_XS.
    Amx,
    Neon,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::AvxVnni => "avxvnni",
            Level::Avx512 => "avx512",
            Level::Amx => "amx",
            Level::Neon => "neon",
        }
    }

    pub fn from_name(s: &str) -> Option<Level> {
        LEVELS.into_iter().find(|l| l.name().eq_ignore_ascii_case(s))
    }

    /// Whether the level's tables run AVX-512 F/BW/VL code (avx512, and amx, which adds tiles
    /// to it).
    pub fn has_avx512(self) -> bool {
        matches!(self, Level::Avx512 | Level::Amx)
    }

    /// Whether the level's tables run AVX2 + FMA + F16C code (every x86 level above scalar).
    pub fn has_avx2(self) -> bool {
        matches!(self, Level::Avx2 | Level::AvxVnni) || self.has_avx512()
    }

    /// Whether this CPU runs the level.
    pub fn supported(self) -> bool {
        match self {
            Level::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Level::AvxVnni => {
                // (`--cfg ferrite_avxvnni_emulate`, tests only: the level built with AVX-512
                // VNNI's encoding of `vpdpbusd`, see `x86_64::avxvnni`.)
                Level::Avx2.supported()
                    && if cfg!(ferrite_avxvnni_emulate) {
                        is_x86_feature_detected!("avx512f")
                            && is_x86_feature_detected!("avx512vl")
                            && is_x86_feature_detected!("avx512vnni")
                    } else {
                        is_x86_feature_detected!("avxvnni")
                    }
            }
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => {
                Level::Avx2.supported()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512vnni")
                    // Every AVX-512 CPU has it; the row-layout IQ4_XS kernel uses `pdep`.
                    && is_x86_feature_detected!("bmi2")
            }
            #[cfg(target_arch = "x86_64")]
            Level::Amx => Level::Avx512.supported() && crate::x86_64::amx::available(),
            #[cfg(target_arch = "aarch64")]
            Level::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}

/// The activation format a weight type's dot product takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActType {
    Q8_0,
    /// Q8_0 with each block's sum (`BlockQ8_0S`), for the interleaved Q4_0/Q5_0/Q8_0 kernels.
    Q8_0S,
    Q8_1,
    Q8K,
    F32,
}

impl ActType {
    pub fn for_weight(ty: GgmlType) -> Option<ActType> {
        use GgmlType::*;
        Some(match ty {
            Q4_0 | Q5_0 | Q8_0 | IQ4_NL => ActType::Q8_0,
            Q4_1 | Q5_1 => ActType::Q8_1,
            Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | IQ4_XS => ActType::Q8K,
            F32 | F16 | BF16 => ActType::F32,
            _ => return None,
        })
    }

    /// Elements per activation block.
    pub const fn block(self) -> usize {
        match self {
            ActType::Q8_0 | ActType::Q8_0S | ActType::Q8_1 => 32,
            ActType::Q8K => QK_K,
            ActType::F32 => 1,
        }
    }
}

/// A quantized activation row (or several rows back to back).
#[derive(Clone, Copy, Debug)]
pub enum ActRef<'a> {
    Q8_0(&'a [BlockQ8_0]),
    Q8_0S(&'a [BlockQ8_0S]),
    Q8_1(&'a [BlockQ8_1]),
    Q8K(&'a [BlockQ8K]),
    F32(&'a [f32]),
}

impl<'a> ActRef<'a> {
    pub fn act_type(&self) -> ActType {
        match self {
            ActRef::Q8_0(_) => ActType::Q8_0,
            ActRef::Q8_0S(_) => ActType::Q8_0S,
            ActRef::Q8_1(_) => ActType::Q8_1,
            ActRef::Q8K(_) => ActType::Q8K,
            ActRef::F32(_) => ActType::F32,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            ActRef::Q8_0(a) => a.len() * 32,
            ActRef::Q8_0S(a) => a.len() * 32,
            ActRef::Q8_1(a) => a.len() * 32,
            ActRef::Q8K(a) => a.len() * QK_K,
            ActRef::F32(a) => a.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `r` of rows `n` elements long. (Prefill tiles take 8 rows per call: each arm
    /// divides by its own block size, a constant, where one division by a looked-up block
    /// size cost a few percent of a small model's prompt.)
    #[inline]
    pub fn row(&self, r: usize, n: usize) -> ActRef<'a> {
        fn row_of<T>(a: &[T], r: usize, blocks: usize) -> &[T] {
            &a[r * blocks..(r + 1) * blocks]
        }
        match *self {
            ActRef::Q8_0(a) => ActRef::Q8_0(row_of(a, r, n / const { ActType::Q8_0.block() })),
            ActRef::Q8_0S(a) => ActRef::Q8_0S(row_of(a, r, n / const { ActType::Q8_0S.block() })),
            ActRef::Q8_1(a) => ActRef::Q8_1(row_of(a, r, n / const { ActType::Q8_1.block() })),
            ActRef::Q8K(a) => ActRef::Q8K(row_of(a, r, n / const { ActType::Q8K.block() })),
            ActRef::F32(a) => ActRef::F32(row_of(a, r, n)),
        }
    }
}

/// A step that makes activation row `i` (of the whole batch) in place, run where the row is
/// quantized: a norm or SwiGLU folded into the next matmul's quantization, one parallel
/// section instead of two.
pub type Prep<'a> = &'a (dyn Fn(usize, &mut [f32]) + Sync);

/// A matmul's activation rows: ready, or to be made by `Prep` as they are quantized (rows
/// `row0..` of the batch; each row is made exactly once, before anything reads it).
pub enum ActIn<'a> {
    Ready(&'a [f32]),
    Prep(&'a mut [f32], Prep<'a>, usize),
}

impl<'a> ActIn<'a> {
    pub fn len(&self) -> usize {
        match self {
            ActIn::Ready(x) => x.len(),
            ActIn::Prep(x, _, _) => x.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows `i0..i1` (`cols` wide) of these rows.
    pub fn rows(&mut self, i0: usize, i1: usize, cols: usize) -> ActIn<'_> {
        match self {
            ActIn::Ready(x) => ActIn::Ready(&x[i0 * cols..i1 * cols]),
            ActIn::Prep(x, f, row0) => ActIn::Prep(&mut x[i0 * cols..i1 * cols], *f, *row0 + i0),
        }
    }

    /// The rows made (`Prep` run over them in one parallel section), for the paths that
    /// read them whole.
    pub fn ready(self, cols: usize) -> &'a [f32] {
        match self {
            ActIn::Ready(x) => x,
            ActIn::Prep(x, f, row0) => {
                let (p, n) = (SharedMut(x.as_mut_ptr()), x.len() / cols.max(1));
                // Runs of rows, about four per thread (a task per row is a claim per row).
                let pool = crate::pool::global();
                let per = n.div_ceil(4 * pool.threads()).max(1);
                let run = |t: usize| {
                    for i in t * per..n.min((t + 1) * per) {
                        // SAFETY: row i (i < n, inside x) belongs to this task alone, and `x`
                        // outlives the parallel section.
                        f(row0 + i, unsafe { std::slice::from_raw_parts_mut(p.ptr().add(i * cols), cols) })
                    }
                };
                match n >= 2 {
                    true => pool.run(n.div_ceil(per), &run),
                    false => (0..n).for_each(run),
                }
                x
            }
        }
    }
}

/// Reusable activation scratch: quantize once per matmul input, no allocation once warm.
#[derive(Default)]
pub struct ActBuf {
    q8_0: Vec<BlockQ8_0>,
    q8_0s: Vec<BlockQ8_0S>,
    q8_1: Vec<BlockQ8_1>,
    q8k: Vec<BlockQ8K>,
    f32: Vec<f32>,
}

impl ActBuf {
    pub fn new() -> ActBuf {
        ActBuf::default()
    }

    /// Quantize `n` rows `x` to `kind` (as `quantize`) and lay them out as AMX tiles in the
    /// buffer of that kind (`ActTiles` for Q8_0S, Q8_K and Q8_1; others: no tiles). Not
    /// from inside a `pool` task.
    pub fn quantize_tiled<'a, 'b>(
        &'a mut self,
        kind: ActType,
        x: ActIn,
        n: usize,
        t0: &'b mut Vec<ActTile>,
        t1: &'b mut Vec<ActTileK>,
        t2: &'b mut Vec<ActTileS>,
    ) -> (ActRef<'a>, ActTiles<'b>) {
        let nb = x.len() / kind.block();
        match kind {
            ActType::Q8_0S => {
                let y = grown(&mut self.q8_0s, nb);
                let zero = ActTile { qs: [[0; 32]; 16], d: [0.0; 16] };
                let f = act_quant::quantize_q8_0s_act;
                quantize_lay_out(x, y, 32, n, f, zero, t0, |t, r, b| {
                    t.qs[r] = b.qs;
                    t.d[r] = b.d;
                });
                (ActRef::Q8_0S(&self.q8_0s[..nb]), ActTiles::Q8_0(t0))
            }
            ActType::Q8K => {
                let y = grown(&mut self.q8k, nb);
                let zero = ActTileS { qs: [[[0; 64]; 16]; 4], d: [0.0; 16], bsums: [[0; 4]; 16] };
                let f = act_quant::quantize_q8_k;
                quantize_lay_out(x, y, QK_K, n, f, zero, t2, |t, r, b| {
                    for (s, q) in t.qs.iter_mut().enumerate() {
                        q[r].copy_from_slice(&b.qs[64 * s..64 * s + 64]);
                    }
                    t.d[r] = b.d;
                    for (k, pair) in t.bsums[r].iter_mut().enumerate() {
                        // bsums are 16-value sums; a 32-value sum is at most 32 x 128, an i16.
                        let sub = |g: usize| {
                            (b.bsums[2 * g] as i32 + b.bsums[2 * g + 1] as i32) as i16 as u16 as u32
                        };
                        *pair = (sub(2 * k) | sub(2 * k + 1) << 16) as i32;
                    }
                });
                (ActRef::Q8K(&self.q8k[..nb]), ActTiles::Q8K(t2))
            }
            ActType::Q8_1 => {
                let y = grown(&mut self.q8_1, nb);
                let zero = ActTileK { qs: [[0; 32]; 16], d: [0.0; 16], dsum: [0.0; 16] };
                let f = act_quant::quantize_q8_1_act;
                quantize_lay_out(x, y, 32, n, f, zero, t1, |t, r, b| {
                    t.qs[r] = b.qs;
                    t.d[r] = f16_le(b.d);
                    t.dsum[r] = f16_le(b.s);
                });
                (ActRef::Q8_1(&self.q8_1[..nb]), ActTiles::Q8_1(t1))
            }
            _ => {
                let cols = x.len() / n.max(1);
                (self.quantize(kind, x.ready(cols)), ActTiles::Q8_0(&[]))
            }
        }
    }

    /// Quantize `x` (rows of `n` elements, `n` a multiple of the block size) to `kind`.
    /// Not from inside a `pool` task: a long input is quantized in parallel on the pool.
    pub fn quantize(&mut self, kind: ActType, x: &[f32]) -> ActRef<'_> {
        let nb = x.len() / kind.block();
        match kind {
            ActType::Q8_0 => {
                par_quantize(x, grown(&mut self.q8_0, nb), 32, act_quant::quantize_q8_0_act);
                ActRef::Q8_0(&self.q8_0[..nb])
            }
            ActType::Q8_0S => {
                par_quantize(x, grown(&mut self.q8_0s, nb), 32, act_quant::quantize_q8_0s_act);
                ActRef::Q8_0S(&self.q8_0s[..nb])
            }
            ActType::Q8_1 => {
                par_quantize(x, grown(&mut self.q8_1, nb), 32, act_quant::quantize_q8_1_act);
                ActRef::Q8_1(&self.q8_1[..nb])
            }
            ActType::Q8K => {
                par_quantize(x, grown(&mut self.q8k, nb), QK_K, act_quant::quantize_q8_k);
                ActRef::Q8K(&self.q8k[..nb])
            }
            ActType::F32 => {
                self.f32.clear();
                self.f32.extend_from_slice(x);
                ActRef::F32(&self.f32)
            }
        }
    }
}

/// The first `n` blocks of a buffer that only grows: a batch's inputs of different widths
/// (576 and 1536 values in a small model) resized it down and up at every matmul, filling
/// the regrown blocks with defaults on one thread while the others waited.
fn grown<B: Default + Clone>(v: &mut Vec<B>, n: usize) -> &mut [B] {
    if v.len() < n {
        v.resize(n, B::default());
    }
    &mut v[..n]
}

/// Sixteen activation rows of one Q8_0 block, as an AMX tile loads them (16 rows of 32 bytes
/// back to back), with their scales. `tile_activations` lays a batch out in these: chunk c
/// of 16 rows, block j at index `c * blocks + j`.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub struct ActTile {
    pub qs: [[i8; 32]; 16],
    pub d: [f32; 16],
}

const _: () = assert!(std::mem::size_of::<ActTile>() == 576);

/// Sixteen activation rows of one Q8_1 block, as an AMX tile loads them, with each row's
/// block scale `d` and `dsum` = d x the 32 values' sum (for the weights' mins).
/// `tile_activations_q8_1` lays a batch out in these: chunk c, block b at `c * blocks + b`.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub struct ActTileK {
    pub qs: [[i8; 32]; 16],
    pub d: [f32; 16],
    pub dsum: [f32; 16],
}

const _: () = assert!(std::mem::size_of::<ActTileK>() == 640);

/// Sixteen activation rows of one Q8_K block as the super-block tiles load them: step s
/// (values 64s..64s + 64) of the 16 rows in `qs[s]`, each row's scale `d`, and in
/// `bsums[r][k]` row r's sums of the 32 values of sub-blocks 2k and 2k + 1 as an i16 pair
/// (for the weights' mins). `tile_activations_sb` lays a batch out in these: chunk c,
/// block b at `c * blocks + b`.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub struct ActTileS {
    pub qs: [[[i8; 64]; 16]; 4],
    pub d: [f32; 16],
    pub bsums: [[i32; 4]; 16],
}

const _: () = assert!(std::mem::size_of::<ActTileS>() == 4416);

/// Quantizes `n` activation rows of `x` into `y` (blocks of `block` values, with `f`, as
/// `ActBuf::quantize` does) and lays them out as tiles of 16 rows, a tile per block:
/// `put(tile, r, block)` writes a block into row r of its tile. One task per 16 rows
/// on the pool, so each chunk's blocks are laid out while they are still in L1 (one parallel
/// section and one pass over the batch, where quantizing and laying out were two of each).
/// `out` only grows: in the last chunk the rows past n keep an earlier batch's values, whose
/// products the kernels compute and `matmul` never reads (each output row depends on its own
/// activation row only).
#[allow(clippy::too_many_arguments)]
fn quantize_lay_out<B: Send + Sync, T: Copy + Send>(
    x: ActIn,
    y: &mut [B],
    block: usize,
    n: usize,
    f: fn(&[f32], &mut [B]),
    zero: T,
    out: &mut Vec<T>,
    put: impl Fn(&mut T, usize, &B) + Sync,
) {
    let blocks = y.len() / n.max(1);
    if n == 0 || blocks * n != y.len() || x.len() != y.len() * block {
        return;
    }
    let len = n.div_ceil(16) * blocks;
    if out.len() < len {
        out.resize(len, zero);
    }
    // Each chunk's task writes only its own blocks and tiles (see `chunk`), and makes only
    // its own rows.
    let (ys, tiles) = (SharedMut(y.as_mut_ptr()), SharedMut(out.as_mut_ptr()));
    let cols = blocks * block;
    let (xr, prep, row0) = match x {
        ActIn::Ready(x) => (SharedMut(x.as_ptr() as *mut f32), None, 0),
        ActIn::Prep(x, f, row0) => (SharedMut(x.as_mut_ptr()), Some(f), row0),
    };
    let chunk = |c: usize| {
        let rows = 16.min(n - 16 * c);
        // SAFETY: rows 16c..16c + rows of `y` (blocks 16c x blocks.., inside y: n x blocks),
        // of `x` (inside x: n x cols, checked above) and chunk c's tiles (c x blocks.., inside
        // `out`: at least `len`) belong to this task alone; `x` is written only through
        // `Prep` (the `Prep` variant holds it mutably); `x`, `y` and `out` outlive the
        // parallel section.
        let (yc, ts) = unsafe {
            (
                std::slice::from_raw_parts_mut(ys.ptr().add(16 * c * blocks), rows * blocks),
                std::slice::from_raw_parts_mut(tiles.ptr().add(c * blocks), blocks),
            )
        };
        let (at, len) = (16 * c * cols, rows * cols);
        let xc: &[f32] = match prep {
            Some(f) => {
                // SAFETY: as above (the `Prep` variant's rows are held mutably).
                let xc = unsafe { std::slice::from_raw_parts_mut(xr.ptr().add(at), len) };
                for (r, row) in xc.chunks_exact_mut(cols).enumerate() {
                    f(row0 + 16 * c + r, row);
                }
                xc
            }
            // SAFETY: as above (only read).
            None => unsafe { std::slice::from_raw_parts(xr.ptr().add(at), len) },
        };
        f(xc, yc);
        for (r, row) in yc.chunks_exact(blocks).enumerate() {
            for (t, b) in ts.iter_mut().zip(row) {
                put(t, r, b);
            }
        }
    };
    let chunks = n.div_ceil(16);
    if chunks >= 2 {
        crate::pool::global().run(chunks, &chunk);
    } else {
        chunk(0);
    }
}

/// A batch laid out as AMX tiles, for the kernels of its activation type.
#[derive(Clone, Copy)]
pub enum ActTiles<'a> {
    Q8_0(&'a [ActTile]),
    Q8K(&'a [ActTileS]),
    Q8_1(&'a [ActTileK]),
}

/// The activation quantizers: AVX2 where the CPU has it (bit for bit the scalar ones, so
/// the choice never changes a result), the scalar reference elsewhere.
mod act_quant {
    use crate::blocks::*;
    use crate::scalar;

    macro_rules! pick {
        ($($name:ident: $B:ty),*) => {$(
            pub fn $name(x: &[f32], y: &mut [$B]) {
                #[cfg(target_arch = "x86_64")]
                if crate::x86_64::quantize::available() {
                    // SAFETY: the CPU has AVX2 (checked just above).
                    return unsafe { crate::x86_64::quantize::$name(x, y) };
                }
                scalar::$name(x, y)
            }
        )*};
    }
    pick!(quantize_q8_0_act: BlockQ8_0, quantize_q8_0s_act: BlockQ8_0S, quantize_q8_1_act: BlockQ8_1,
          quantize_q8_k: BlockQ8K);
}

/// Blocks quantized per task when an input is split across the pool (16K values: below
/// that, waking the workers costs more than the quantization).
const QUANT_TASK: usize = 1 << 14;

/// `f(x, y)` for `y`'s blocks of `block` values, split across the pool for long inputs
/// (prefill: a 64-token batch of 8192-wide rows is half a million values).
fn par_quantize<B: Send>(x: &[f32], y: &mut [B], block: usize, f: fn(&[f32], &mut [B])) {
    let per = (QUANT_TASK / block).max(1);
    let tasks = y.len().div_ceil(per);
    if tasks <= 1 || crate::pool::global().threads() == 1 {
        f(x, y);
        return;
    }
    // Each task writes its own disjoint range of blocks.
    let (out, n) = (SharedMut(y.as_mut_ptr()), y.len());
    crate::pool::global().run(tasks, &|t| {
        let (b0, b1) = (t * per, ((t + 1) * per).min(n));
        // SAFETY: blocks b0..b1 < n belong to task t alone, and `y` outlives the run.
        let ys = unsafe { std::slice::from_raw_parts_mut(out.ptr().add(b0), b1 - b0) };
        f(&x[b0 * block..b1 * block], ys);
    });
}

/// A weight row's bytes against an activation row of the matching type.
pub type DotFn = fn(&[u8], ActRef) -> f32;

/// Expands to a safe wrapper `fn(&[u8], ActRef) -> f32` around a kernel.
/// The caller (`Kernels::vec_dot` and the matmuls) has checked that the bytes are whole
/// blocks and that the activation has the weight type's `ActType` and length.
macro_rules! wrap {
    ($f:path, $w:ty, $act:ident) => {{
        fn w(x: &[u8], a: ActRef) -> f32 {
            let (Some(x), ActRef::$act(a)) = (as_blocks::<$w>(x), a) else { return f32::NAN };
            #[allow(unused_unsafe)]
            // SAFETY: this wrapper is stored only in a table (of a level, or a variant of one)
            // whose features the CPU was checked to have (`Kernels::tables`).
            unsafe {
                $f(x, a)
            }
        }
        w as DotFn
    }};
    (float $f:path) => {{
        fn w(x: &[u8], a: ActRef) -> f32 {
            let ActRef::F32(a) = a else { return f32::NAN };
            #[allow(unused_unsafe)]
            // SAFETY: as above.
            unsafe {
                $f(x, a)
            }
        }
        w as DotFn
    }};
}

/// Four weight rows against one activation row.
pub type Dot4Fn = fn([&[u8]; 4], ActRef) -> [f32; 4];

/// Expands to a safe wrapper `Dot4Fn` around a four-row kernel (same contract as `wrap!`).
#[cfg(target_arch = "x86_64")]
macro_rules! wrap4 {
    ($f:path, $w:ty, $act:ident) => {{
        fn w(x: [&[u8]; 4], a: ActRef) -> [f32; 4] {
            let ActRef::$act(a) = a else { return [f32::NAN; 4] };
            let (Some(x0), Some(x1), Some(x2), Some(x3)) =
                (as_blocks::<$w>(x[0]), as_blocks::<$w>(x[1]), as_blocks::<$w>(x[2]), as_blocks::<$w>(x[3]))
            else {
                return [f32::NAN; 4];
            };
            // SAFETY: stored only in the table of a level the CPU was checked to run.
            unsafe { $f([x0, x1, x2, x3], a) }
        }
        w as Dot4Fn
    }};
}

/// Four weight rows against two activation rows (a prefill register tile).
pub type Dot4x2Fn = fn([&[u8]; 4], [ActRef; 2]) -> [[f32; 4]; 2];

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
macro_rules! wrap4x2 {
    ($f:path, $w:ty, $act:ident) => {{
        fn w(x: [&[u8]; 4], a: [ActRef; 2]) -> [[f32; 4]; 2] {
            let (ActRef::$act(a0), ActRef::$act(a1)) = (a[0], a[1]) else { return [[f32::NAN; 4]; 2] };
            let (Some(x0), Some(x1), Some(x2), Some(x3)) =
                (as_blocks::<$w>(x[0]), as_blocks::<$w>(x[1]), as_blocks::<$w>(x[2]), as_blocks::<$w>(x[3]))
            else {
                return [[f32::NAN; 4]; 2];
            };
            // SAFETY: stored only in the table of a level the CPU was checked to run.
            unsafe { $f([x0, x1, x2, x3], [a0, a1]) }
        }
        w as Dot4x2Fn
    }};
}

/// Four weight rows against four activation rows (the NEON level's prefill tile for the
/// 32-value types).
pub type Dot4x4Fn = fn([&[u8]; 4], [ActRef; 4]) -> [[f32; 4]; 4];

#[cfg(target_arch = "aarch64")]
macro_rules! wrap4x4 {
    ($f:path, $w:ty, $act:ident) => {{
        fn w(x: [&[u8]; 4], a: [ActRef; 4]) -> [[f32; 4]; 4] {
            let (ActRef::$act(a0), ActRef::$act(a1), ActRef::$act(a2), ActRef::$act(a3)) =
                (a[0], a[1], a[2], a[3])
            else {
                return [[f32::NAN; 4]; 4];
            };
            let (Some(x0), Some(x1), Some(x2), Some(x3)) =
                (as_blocks::<$w>(x[0]), as_blocks::<$w>(x[1]), as_blocks::<$w>(x[2]), as_blocks::<$w>(x[3]))
            else {
                return [[f32::NAN; 4]; 4];
            };
            // SAFETY: stored only in the table of a level the CPU was checked to run.
            unsafe { $f([x0, x1, x2, x3], [a0, a1, a2, a3]) }
        }
        w as Dot4x4Fn
    }};
}

/// A group of 8 interleaved weight rows (`repack::Layout::Q4_0x8`) against one activation
/// row, and against four.
pub type Dot8Fn = fn(&[u8], ActRef) -> [f32; 8];
/// Two interleaved groups (16 rows) against four activation rows, in 512-bit registers.
pub type Dot16x4Fn = fn(&[u8], &[u8], [ActRef; 4]) -> [[f32; 16]; 4];
pub type Dot8x4Fn = fn(&[u8], [ActRef; 4]) -> [[f32; 8]; 4];
/// Two interleaved groups against eight activation rows (prefill of 8 rows or more).
pub type Dot16x8Fn = fn(&[u8], &[u8], &[ActRef; 8]) -> [[f32; 16]; 8];

/// One 64-byte line of a pre-unpacked weight panel (the storage of `Panel16Fns`).
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub struct Line64(pub [u8; 64]);

/// A prefill path for layouts whose unpacking costs more than their dot products: `.0`
/// unpacks two interleaved groups (16 rows) into a panel once (growing the buffer if needed;
/// false on malformed input), `.1` runs the panel against 8 activation rows. `matmul` uses it
/// when a batch has enough rows to repay the unpacking.
pub type Panel16Fns = (fn(&[u8], &[u8], &mut Vec<Line64>) -> bool, PanelEightFn);

/// The AMX prefill path of a layout: `.0` unpacks two interleaved groups (16 rows) into a
/// panel, as `Panel16Fns`'s; `.1` runs the panel (its first `nb` blocks; or, for the K
/// types, the two groups given as they are stored, unpacked a super-block at a time into
/// the panel buffer as it goes: `wrap_amx_fused`) against every
/// chunk of 16 activation rows (tiles from `tile_activations`, `tile_activations_q8_1` or
/// `tile_activations_sb`, as the layout's activations are), storing chunk c's 16 rows of 16
/// outputs through `Out16`, and meanwhile asks L2 for the bytes given (the next pair's
/// weights); false if the tiles are of another type or too few.
pub type Tile16Fns = (
    fn(&[u8], &[u8], &mut Vec<Line64>) -> bool,
    fn(&mut [Line64], (&[u8], &[u8]), ActTiles, usize, usize, &[u8], Out16) -> bool,
);

/// Where a tile kernel stores its results: activation row i's 16 outputs (16 weight rows)
/// at `ptr + i * stride`, for the first `rows` activation rows (the tiles' padding rows
/// beyond are not stored). The kernel stores them straight from its registers: handed over
/// as arrays to a copying callback instead, the copy was 4% of a small model's prompt.
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub struct Out16 {
    ptr: *mut f32,
    stride: usize,
    rows: usize,
}

impl Out16 {
    /// # Safety
    /// For every i < rows, the 16 f32 at `ptr + i * stride` are writable, and nothing else
    /// reads or writes them while a kernel holds this.
    pub unsafe fn new(ptr: *mut f32, stride: usize, rows: usize) -> Out16 {
        Out16 { ptr, stride, rows }
    }

    /// Activation rows stored of chunk `c` (16 rows each): 0 to 16.
    #[inline(always)]
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn rows_of(&self, c: usize) -> usize {
        self.rows.saturating_sub(16 * c).min(16)
    }

    /// Where row `i` of chunk `c` goes (i < `rows_of(c)`).
    #[inline(always)]
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn row_ptr(&self, c: usize, i: usize) -> *mut f32 {
        self.ptr.wrapping_add((16 * c + i) * self.stride)
    }
}

/// Unpacks 16 rows of a matrix in the file's layout (their bytes) straight into the panel
/// that `Panel16Fns::0` (or with AMX, `Tile16Fns::0`) makes from two interleaved groups;
/// false if the bytes are not 16 whole rows (`Kernels::rows_unpack16`).
pub type RowsUnpackFn = fn(&[u8], &mut Vec<Line64>) -> bool;

/// Many rows of a matrix in the file's layout (their bytes) against one activation row:
/// `out[r]` = row r . a for `out.len()` rows; false if the bytes or the activations do not
/// fit the kernel (`Kernels::rows_decode`; the caller then goes row by row).
pub type RowsDecodeFn = fn(&[u8], ActRef, &mut [f32]) -> bool;

/// Widest activation row (in values) of the decode kernels over many rows: their per-call
/// tables are on the stack, sized from this (8B's widest row, 14336, fits). Wider rows go row
/// by row.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) const ROWS_MAX_COLS: usize = 16384;

/// Expands to a safe `RowsDecodeFn` around a decode kernel over many rows (an expression
/// callable as `kernel(blocks, activations, out)`): the activations must be of the `ActRef`
/// variant `$act`, at most `ROWS_MAX_COLS` wide, and the bytes whole blocks that fill `out`.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
macro_rules! wrap_rows {
    ($kernel:expr, $w:ty, $act:ident) => {{
        fn w(rows: &[u8], a: ActRef, out: &mut [f32]) -> bool {
            let n = a.len();
            let (ActRef::$act(a), Some(w)) = (a, as_blocks::<$w>(rows)) else { return false };
            if a.is_empty() || n > ROWS_MAX_COLS || w.len() != out.len() * a.len() {
                return false;
            }
            // SAFETY: stored only in the table of a level (or variant) whose features the
            // CPU was checked to have (`Kernels::tables`); the lengths are checked above.
            unsafe { $kernel(w, a, out) };
            true
        }
        w as RowsDecodeFn
    }};
}

/// The avx512 (and amx) level's decode kernels over many rows (`x86_64::rows_decode`).
#[cfg(target_arch = "x86_64")]
fn x86_rows_table() -> Vec<(GgmlType, RowsDecodeFn)> {
    use crate::x86_64::rows_decode::{iq4_xs_rows_q8_k, k_rows_q8_k, legacy_rows, sixteens_rows};
    use GgmlType::*;
    vec![
        (Q4_0, wrap_rows!(legacy_rows, BlockQ4_0, Q8_0)),
        (Q4_1, wrap_rows!(legacy_rows, BlockQ4_1, Q8_1)),
        (Q5_0, wrap_rows!(legacy_rows, BlockQ5_0, Q8_0)),
        (Q5_1, wrap_rows!(legacy_rows, BlockQ5_1, Q8_1)),
        (Q8_0, wrap_rows!(legacy_rows, BlockQ8_0, Q8_0)),
        (IQ4_NL, wrap_rows!(legacy_rows, BlockIQ4NL, Q8_0)),
        (Q4_K, wrap_rows!(k_rows_q8_k, BlockQ4K, Q8K)),
        (Q5_K, wrap_rows!(k_rows_q8_k, BlockQ5K, Q8K)),
        (Q6_K, wrap_rows!(sixteens_rows, BlockQ6K, Q8K)),
        (Q3_K, wrap_rows!(sixteens_rows, BlockQ3K, Q8K)),
        (Q2_K, wrap_rows!(sixteens_rows, BlockQ2K, Q8K)),
        (IQ4_XS, wrap_rows!(iq4_xs_rows_q8_k, BlockIQ4XS, Q8K)),
    ]
}

/// The avx2 or avxvnni level's decode kernels over many rows (the module `rows` that
/// `x86_rows_kernels!` makes in the level's module).
#[cfg(target_arch = "x86_64")]
macro_rules! x86_ymm_rows_table {
    ($m:path) => {{
        use $m as r;
        use GgmlType::*;
        vec![
            (Q4_0, wrap_rows!(r::legacy_rows, BlockQ4_0, Q8_0)),
            (Q4_1, wrap_rows!(r::legacy_rows, BlockQ4_1, Q8_1)),
            (Q5_0, wrap_rows!(r::legacy_rows, BlockQ5_0, Q8_0)),
            (Q5_1, wrap_rows!(r::legacy_rows, BlockQ5_1, Q8_1)),
            (Q8_0, wrap_rows!(r::legacy_rows, BlockQ8_0, Q8_0)),
            (IQ4_NL, wrap_rows!(r::legacy_rows, BlockIQ4NL, Q8_0)),
        ]
    }};
}

/// A NEON variant's decode kernels over many rows (`small_rows`, `super_rows` of the module
/// `$m`).
#[cfg(target_arch = "aarch64")]
macro_rules! neon_rows_table {
    ($m:path) => {{
        use $m as k;
        use GgmlType::*;
        vec![
            (Q4_0, wrap_rows!(k::small_rows::<BlockQ4_0>, BlockQ4_0, Q8_0)),
            (Q4_1, wrap_rows!(k::small_rows::<BlockQ4_1>, BlockQ4_1, Q8_1)),
            (Q5_0, wrap_rows!(k::small_rows::<BlockQ5_0>, BlockQ5_0, Q8_0)),
            (Q5_1, wrap_rows!(k::small_rows::<BlockQ5_1>, BlockQ5_1, Q8_1)),
            (Q8_0, wrap_rows!(k::small_rows::<BlockQ8_0>, BlockQ8_0, Q8_0)),
            (IQ4_NL, wrap_rows!(k::small_rows::<BlockIQ4NL>, BlockIQ4NL, Q8_0)),
            (Q2_K, wrap_rows!(k::super_rows::<BlockQ2K>, BlockQ2K, Q8K)),
            (Q3_K, wrap_rows!(k::super_rows::<BlockQ3K>, BlockQ3K, Q8K)),
            (Q4_K, wrap_rows!(k::super_rows::<BlockQ4K>, BlockQ4K, Q8K)),
            (Q5_K, wrap_rows!(k::super_rows::<BlockQ5K>, BlockQ5K, Q8K)),
            (Q6_K, wrap_rows!(k::super_rows::<BlockQ6K>, BlockQ6K, Q8K)),
            (IQ4_XS, wrap_rows!(k::super_rows::<BlockIQ4XS>, BlockIQ4XS, Q8K)),
        ]
    }};
}

/// Defines the safe wrapper (`RowsUnpackFn`) `$name` of an unpacker from 16 rows: the
/// block type, the panel type, the unpacker, and any arguments it takes after the rows and
/// the panels.
#[cfg(target_arch = "x86_64")]
macro_rules! rows_unpacker {
    ($vis:vis $name:ident, $w:ty, $panel:ty, $unpack:path $(, $arg:expr)*) => {
        $vis fn $name(rows: &[u8], buf: &mut Vec<Line64>) -> bool {
            const LINES: usize = std::mem::size_of::<$panel>() / 64;
            let Some(blocks) = as_blocks::<$w>(rows) else { return false };
            if blocks.is_empty() || !blocks.len().is_multiple_of(16) {
                return false;
            }
            let nb = blocks.len() / 16;
            if buf.len() < nb * LINES {
                buf.resize(nb * LINES, Line64([0; 64]));
            }
            // SAFETY: the panel type is LINES whole 64-byte lines, 64-byte aligned like
            // Line64, and made of integers and floats only; the buffer holds nb panels.
            let panels = unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr() as *mut $panel, nb) };
            // SAFETY: `Kernels::rows_unpack16` hands this out only from the avx512 and amx
            // tables, which exist only where the CPU has their features.
            unsafe { $unpack(blocks, panels $(, $arg)*) };
            true
        }
    };
}

// Q8_0: unsigned panels (the avx512 panel kernel's) and signed ones (the AMX tiles'). Q6_K's,
// Q4_K's and Q5_K's panels: avx512 only.
#[cfg(target_arch = "x86_64")]
rows_unpacker!(
    rows_q8_0_u,
    BlockQ8_0,
    crate::x86_64::avx512::Panel32,
    crate::x86_64::avx512::unpack_q8_0_rows16::<true>
);
#[cfg(target_arch = "x86_64")]
rows_unpacker!(
    rows_q8_0_s,
    BlockQ8_0,
    crate::x86_64::avx512::Panel32,
    crate::x86_64::avx512::unpack_q8_0_rows16::<false>
);
#[cfg(target_arch = "x86_64")]
rows_unpacker!(
    rows_q6_k,
    BlockQ6K,
    crate::x86_64::avx512::PanelQ6K,
    crate::x86_64::avx512::unpack_q6_k_rows16
);

// The 32-value types through `unpack_legacy_rows16`, with the book and offset of each panel:
// the avx512 kernels take Q4_0 as 0..15 (offset 8 in the kernel), IQ4_NL as codebook + 128,
// Q5_0 as 0..31 (offset 16 in the kernel); the AMX tiles take them signed. Q4_1 and Q5_1
// share one unsigned panel (with m) between both.
#[cfg(target_arch = "x86_64")]
mod legacy_rows {
    use super::{as_blocks, Line64};
    use crate::blocks::{BlockIQ4NL, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, KVALUES_IQ4NL};
    use crate::x86_64::amx::Q4_0_BOOK;
    use crate::x86_64::avx512::{unpack_legacy_rows16 as unpack, Panel32, Panel32M, IQ4NL_BOOK_U, NIBBLES_U};
    rows_unpacker!(pub(super) q4_0_u, BlockQ4_0, Panel32, unpack, &NIBBLES_U, 0);
    rows_unpacker!(pub(super) q4_0_s, BlockQ4_0, Panel32, unpack, &Q4_0_BOOK, 0);
    rows_unpacker!(pub(super) iq4_nl_u, BlockIQ4NL, Panel32, unpack, &IQ4NL_BOOK_U, 0);
    rows_unpacker!(pub(super) iq4_nl_s, BlockIQ4NL, Panel32, unpack, &KVALUES_IQ4NL, 0);
    rows_unpacker!(pub(super) q5_0_u, BlockQ5_0, Panel32, unpack, &NIBBLES_U, 0);
    rows_unpacker!(pub(super) q5_0_s, BlockQ5_0, Panel32, unpack, &NIBBLES_U, 16);
    rows_unpacker!(pub(super) q4_1, BlockQ4_1, Panel32M, unpack, &NIBBLES_U, 0);
    rows_unpacker!(pub(super) q5_1, BlockQ5_1, Panel32M, unpack, &NIBBLES_U, 0);
}
#[cfg(target_arch = "x86_64")]
rows_unpacker!(
    rows_q4_k,
    BlockQ4K,
    crate::x86_64::avx512::PanelQ4K,
    crate::x86_64::avx512::unpack_k_rows16::<BlockQ4K>
);
#[cfg(target_arch = "x86_64")]
rows_unpacker!(
    rows_q5_k,
    BlockQ5K,
    crate::x86_64::avx512::PanelQ4K,
    crate::x86_64::avx512::unpack_k_rows16::<BlockQ5K>
);

/// Defines `LINES` (64-byte lines per panel) and the safe wrapper `unpack` (`Panel16Fns::0`,
/// `Tile16Fns::0`) of a panel unpacker: the block type, the panel type, the unpacker.
#[cfg(target_arch = "x86_64")]
macro_rules! panel_unpacker {
    ($w:ty, $panel:ty, $unpack:path) => {
        const LINES: usize = std::mem::size_of::<$panel>() / 64;
        fn unpack(xa: &[u8], xb: &[u8], buf: &mut Vec<Line64>) -> bool {
            let (Some(xa), Some(xb)) = (as_blocks::<$w>(xa), as_blocks::<$w>(xb)) else { return false };
            if xa.len() != xb.len() {
                return false;
            }
            if buf.len() < xa.len() * LINES {
                buf.resize(xa.len() * LINES, Line64([0; 64]));
            }
            // SAFETY: the panel type is a whole number of 64-byte lines, 64-byte aligned like
            // Line64, and made of integers and floats only (every bit pattern is a value);
            // the buffer holds at least xa.len() panels.
            let panels = unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr() as *mut $panel, xa.len()) };
            // SAFETY: stored only in the table of a level the CPU was checked to run.
            unsafe { $unpack(xa, xb, panels) };
            true
        }
    };
}

/// Expands to the safe wrappers (`Tile16Fns`) of an AMX panel: the block type, the panel
/// type, its unpacker, the `ActTiles` variant it reads, the tiles per block and the kernel.
#[cfg(target_arch = "x86_64")]
macro_rules! wrap_amx {
    ($w:ty, $panel:ty, $unpack:path, $act:ident, $per:expr, $kernel:path) => {{
        panel_unpacker!($w, $panel, $unpack);
        fn tile(
            p: &mut [Line64],
            _pair: (&[u8], &[u8]),
            y: ActTiles,
            nb: usize,
            chunks: usize,
            next: &[u8],
            out: Out16,
        ) -> bool {
            let ActTiles::$act(y) = y else { return false };
            let Some(y) = y.get(..chunks * nb * $per) else { return false };
            if p.len() < nb * LINES {
                return false;
            }
            // SAFETY: as in `unpack`: nb whole panels lie at the start of p.
            let panels = unsafe { std::slice::from_raw_parts(p.as_ptr() as *const $panel, nb) };
            // SAFETY: stored only in the amx table (the CPU has AMX and the tile permission
            // was granted).
            unsafe { $kernel(panels, y, next, out) };
            true
        }
        let fns: Tile16Fns = (unpack, tile);
        fns
    }};
}

/// Expands to the safe wrappers (`Tile16Fns`) of a K type's AMX path that unpacks each
/// super-block right before its tiles (`amx::vec_dot_sb_x16_fused`): the block type, its
/// super-block unpacker, and whether it has mins. `.0` only makes room for one panel.
#[cfg(target_arch = "x86_64")]
macro_rules! wrap_amx_fused {
    ($w:ty, $unpack:path, $mins:expr) => {{
        use crate::x86_64::amx::PanelSB;
        const LINES: usize = std::mem::size_of::<PanelSB>() / 64;
        fn unpack(xa: &[u8], xb: &[u8], buf: &mut Vec<Line64>) -> bool {
            if xa.len() != xb.len() || as_blocks::<$w>(xa).is_none() {
                return false;
            }
            if buf.len() < LINES {
                buf.resize(LINES, Line64([0; 64]));
            }
            true
        }
        fn tile(
            p: &mut [Line64],
            (xa, xb): (&[u8], &[u8]),
            y: ActTiles,
            nb: usize,
            chunks: usize,
            next: &[u8],
            out: Out16,
        ) -> bool {
            let ActTiles::Q8K(y) = y else { return false };
            let (Some(xa), Some(xb)) = (as_blocks::<$w>(xa), as_blocks::<$w>(xb)) else { return false };
            let Some(y) = y.get(..chunks * nb) else { return false };
            if xa.len() != nb || xb.len() != nb || p.len() < LINES {
                return false;
            }
            // SAFETY: PanelSB is a whole number of 64-byte lines, 64-byte aligned like Line64,
            // made of integers and floats only; p holds at least one.
            let scratch = unsafe { &mut *(p.as_mut_ptr() as *mut PanelSB) };
            // SAFETY: stored only in the amx table (the CPU has AMX and the tile permission
            // was granted); the unpacker's features are the level's.
            unsafe {
                crate::x86_64::amx::vec_dot_sb_x16_fused::<$w, $mins>(xa, xb, $unpack, scratch, y, next, out)
            };
            true
        }
        let fns: Tile16Fns = (unpack, tile);
        fns
    }};
}

/// Expands to the safe wrappers (`Panel16Fns`) of an avx512 unpack-once panel: the block
/// type, the panel type, its unpacker and its 8-row kernel.
#[cfg(target_arch = "x86_64")]
macro_rules! wrap_panel {
    ($w:ty, $act:ident, $panel:ty, $unpack:path, $($eight:tt)+) => {{
        panel_unpacker!($w, $panel, $unpack);
        panel_eight!(eight, $act, $panel, $($eight)+);
        let fns: Panel16Fns = (unpack, eight);
        Some(fns)
    }};
}

/// Defines the safe wrapper `$name` (`PanelEightFn`) of a panel's 8-row kernel: the
/// activation type, the panel type, the kernel.
#[cfg(target_arch = "x86_64")]
macro_rules! panel_eight {
    // The kernel spreads the prefetch over its work itself.
    ($name:ident, $act:ident, $panel:ty, spread $eight:path) => {
        panel_eight!($name, $act, $panel, |panels, rows, next| $eight(panels, rows, next));
    };
    ($name:ident, $act:ident, $panel:ty, |$pn:ident, $rw:ident, $nx:ident| $call:expr) => {
        fn $name(p: &[Line64], a: [ActRef; 8], $nx: &[u8]) -> [[f32; 16]; 8] {
            const LINES: usize = std::mem::size_of::<$panel>() / 64;
            let mut rows = [&[][..]; 8];
            for (r, a) in rows.iter_mut().zip(a) {
                let ActRef::$act(a) = a else { return [[f32::NAN; 16]; 8] };
                *r = a;
            }
            let n = rows[0].len();
            if p.len() < n * LINES {
                return [[f32::NAN; 16]; 8];
            }
            // SAFETY: the panel type is LINES whole 64-byte lines, 64-byte aligned like
            // Line64, and made of integers and floats only; n whole panels lie at the start
            // of p.
            let $pn = unsafe { std::slice::from_raw_parts(p.as_ptr() as *const $panel, n) };
            let $rw = rows;
            // SAFETY: stored only in tables of levels the CPU was checked to run.
            unsafe { $call }
        }
    };
}

/// A panel's 8-row kernel (`Panel16Fns::1`): the panel against eight activation rows. The
/// bytes given (a share of the next pair's weights) go to L2 meanwhile, spread over the
/// call's work (a few lines per block at avx512, a quarter per pass of four rows at the
/// 256-bit levels): in one burst the prefetches outnumbered the line fill buffers.
pub type PanelEightFn = fn(&[Line64], [ActRef; 8], &[u8]) -> [[f32; 16]; 8];

// Q4_0 rows unpacked from the file's layout (values 0..15) run through the Q5_0/Q8_0 panel
// kernel with its offset 8 (`Kernels::rows_panel_kernel`).
#[cfg(target_arch = "x86_64")]
panel_eight!(
    q4_0_rows_eight,
    Q8_0S,
    crate::x86_64::avx512::Panel32,
    spread crate::x86_64::avx512::vec_dot_panel32x16x8_q8_0::<8>
);

/// The Q4_0 and Q5_1 panels of a 256-bit level (`PanelNib8`, from the shared body of
/// `x86_repacked_kernels!`; its Q4_1 and Q5_0 panels are in `x86_k_panels!`).
#[cfg(target_arch = "x86_64")]
macro_rules! x86_nib_panels {
    ($m:path) => {{
        use $m as k;
        (
            wrap_panel!(
                BlockQ4_0x8,
                Q8_0S,
                k::PanelNib2x8,
                k::unpack_pairs::<BlockQ4_0x8>,
                spread k::vec_dot_q4_0panel8x2x8_q8_0
            ),
            wrap_panel!(
                BlockQ5_1x8,
                Q8_1,
                k::PanelNib2x8,
                k::unpack_pairs::<BlockQ5_1x8>,
                spread k::vec_dot_q5_1panel8x2x8_q8_1
            ),
        )
    }};
}

/// The panel table entries (Q5_0, Q8_0, Q4_1, Q4_K, Q5_K, Q6_K, IQ4_XS, Q3_K, Q2_K, IQ4_NL)
/// of a 256-bit level: its Q5_0, Q4_1 and K-type panels from the shared body of
/// `x86_repacked_kernels!` (IQ4_XS's where `$vnni`: its values overflow the i16 pair sums of
/// the level without VNNI).
#[cfg(target_arch = "x86_64")]
macro_rules! x86_k_panels {
    ($m:path, $vnni:expr) => {{
        use $m as k;
        (
            wrap_panel!(
                BlockQ5_0x8,
                Q8_0S,
                k::PanelNib2x8,
                k::unpack_pairs::<BlockQ5_0x8>,
                spread k::vec_dot_q5_0panel8x2x8_q8_0
            ),
            None,
            wrap_panel!(
                BlockQ4_1x8,
                Q8_1,
                k::PanelNib2x8,
                k::unpack_pairs::<BlockQ4_1x8>,
                spread k::vec_dot_q4_1panel8x2x8_q8_1
            ),
            wrap_panel!(
                BlockQ4Kx8,
                Q8K,
                k::PanelQ4K2x8,
                k::unpack_pairs::<BlockQ4Kx8>,
                spread k::vec_dot_q4_kpanel8x2x8_q8_k
            ),
            wrap_panel!(
                BlockQ5Kx8,
                Q8K,
                k::PanelQ4K2x8,
                k::unpack_pairs::<BlockQ5Kx8>,
                spread k::vec_dot_q5_kpanel8x2x8_q8_k
            ),
            wrap_panel!(
                BlockQ6Kx8,
                Q8K,
                k::PanelQ6K2x8,
                k::unpack_pairs::<BlockQ6Kx8>,
                spread k::vec_dot_q6_kpanel8x2x8_q8_k
            ),
            if $vnni {
                wrap_panel!(
                    BlockIQ4XSx8,
                    Q8K,
                    k::PanelQ4K2x8,
                    k::unpack_pairs::<BlockIQ4XSx8>,
                    spread k::vec_dot_iq4_xspanel8x2x8_q8_k
                )
            } else {
                None
            },
            wrap_panel!(
                BlockQ3Kx8,
                Q8K,
                k::PanelQ6K2x8,
                k::unpack_pairs::<BlockQ3Kx8>,
                spread k::vec_dot_q6_kpanel8x2x8_q8_k
            ),
            wrap_panel!(
                BlockQ2Kx8,
                Q8K,
                k::PanelQ6K2x8,
                k::unpack_pairs::<BlockQ2Kx8>,
                spread k::vec_dot_q2_kpanel8x2x8_q8_k
            ),
            None,
        )
    }};
}

/// Expands to the safe wrappers (`Dot8Fn`, `Dot8x4Fn`) of a level's kernels for an
/// interleaved block type.
#[cfg(target_arch = "x86_64")]
macro_rules! wrap_x8 {
    ($one:path, $four:path, $w:ty, $act:ident) => {{
        fn one(x: &[u8], a: ActRef) -> [f32; 8] {
            let (Some(x), ActRef::$act(a)) = (as_blocks::<$w>(x), a) else { return [f32::NAN; 8] };
            // SAFETY: stored only in the table of a level the CPU was checked to run.
            unsafe { $one(x, a) }
        }
        fn four(x: &[u8], a: [ActRef; 4]) -> [[f32; 8]; 4] {
            let (Some(x), [ActRef::$act(a0), ActRef::$act(a1), ActRef::$act(a2), ActRef::$act(a3)]) =
                (as_blocks::<$w>(x), a)
            else {
                return [[f32::NAN; 8]; 4];
            };
            // SAFETY: as above.
            unsafe { $four(x, [a0, a1, a2, a3]) }
        }
        Some((one as Dot8Fn, four as Dot8x4Fn))
    }};
}

#[cfg(target_arch = "x86_64")]
macro_rules! x86_x8 {
    ($m:path) => {{
        use $m as k;
        (
            wrap_x8!(k::vec_dot_q4_0x8_q8_0, k::vec_dot_q4_0x8x4_q8_0, BlockQ4_0x8, Q8_0S),
            wrap_x8!(k::vec_dot_q4_kx8_q8_k, k::vec_dot_q4_kx8x4_q8_k, BlockQ4Kx8, Q8K),
            wrap_x8!(k::vec_dot_q8_0x8_q8_0, k::vec_dot_q8_0x8x4_q8_0, BlockQ8_0x8, Q8_0S),
            wrap_x8!(k::vec_dot_q4_1x8_q8_1, k::vec_dot_q4_1x8x4_q8_1, BlockQ4_1x8, Q8_1),
            wrap_x8!(k::vec_dot_q5_0x8_q8_0, k::vec_dot_q5_0x8x4_q8_0, BlockQ5_0x8, Q8_0S),
            wrap_x8!(k::vec_dot_q6_kx8_q8_k, k::vec_dot_q6_kx8x4_q8_k, BlockQ6Kx8, Q8K),
            wrap_x8!(k::vec_dot_q5_kx8_q8_k, k::vec_dot_q5_kx8x4_q8_k, BlockQ5Kx8, Q8K),
            wrap_x8!(k::vec_dot_iq4_xsx8_q8_k, k::vec_dot_iq4_xsx8x4_q8_k, BlockIQ4XSx8, Q8K),
            wrap_x8!(k::vec_dot_q3_kx8_q8_k, k::vec_dot_q3_kx8x4_q8_k, BlockQ3Kx8, Q8K),
            wrap_x8!(k::vec_dot_q2_kx8_q8_k, k::vec_dot_q2_kx8x4_q8_k, BlockQ2Kx8, Q8K),
            wrap_x8!(k::vec_dot_iq4_nlx8_q8_0, k::vec_dot_iq4_nlx8x4_q8_0, BlockQ4_0x8, Q8_0S),
            wrap_x8!(k::vec_dot_q5_1x8_q8_1, k::vec_dot_q5_1x8x4_q8_1, BlockQ5_1x8, Q8_1),
        )
    }};
}

/// Expands to the safe wrapper (`Dot16x4Fn`) of a 16-row avx512 kernel.
#[cfg(target_arch = "x86_64")]
macro_rules! wrap_x16 {
    ($f:path, $w:ty, $act:ident) => {{
        fn four(xa: &[u8], xb: &[u8], a: [ActRef; 4]) -> [[f32; 16]; 4] {
            let (
                Some(xa),
                Some(xb),
                [ActRef::$act(a0), ActRef::$act(a1), ActRef::$act(a2), ActRef::$act(a3)],
            ) = (as_blocks::<$w>(xa), as_blocks::<$w>(xb), a)
            else {
                return [[f32::NAN; 16]; 4];
            };
            // SAFETY: stored only in the avx512 table, which exists only if the CPU runs it.
            unsafe { $f(xa, xb, [a0, a1, a2, a3]) }
        }
        Some(four as Dot16x4Fn)
    }};
}

/// Expands to the safe wrapper (`Dot16x8Fn`) of a 16-row, 8-column avx512 kernel.
#[cfg(target_arch = "x86_64")]
macro_rules! wrap_x16x8 {
    ($f:path, $w:ty, $act:ident) => {{
        fn eight(xa: &[u8], xb: &[u8], a: &[ActRef; 8]) -> [[f32; 16]; 8] {
            let (Some(xa), Some(xb)) = (as_blocks::<$w>(xa), as_blocks::<$w>(xb)) else {
                return [[f32::NAN; 16]; 8];
            };
            let mut rows = [&[][..]; 8];
            for (r, a) in rows.iter_mut().zip(a) {
                let ActRef::$act(a) = *a else { return [[f32::NAN; 16]; 8] };
                *r = a;
            }
            // SAFETY: stored only in the avx512 table, which exists only if the CPU runs it.
            unsafe { $f(xa, xb, rows) }
        }
        Some(eight as Dot16x8Fn)
    }};
}

/// The kernels of one level.
pub struct Kernels {
    pub level: Level,
    /// The level's name, plus `+feature` for a variant that uses an optional extension
    /// (`neon+dotprod`).
    pub name: &'static str,
    dots: Vec<(GgmlType, DotFn)>,
    dots4: Vec<(GgmlType, Dot4Fn)>,
    dots4x2: Vec<(GgmlType, Dot4x2Fn)>,
    dots4x4: Vec<(GgmlType, Dot4x4Fn)>,
    /// Decode kernels over many rows in the file's layout (`rows_decode`).
    rows: Vec<(GgmlType, RowsDecodeFn)>,
    /// Kernels for Q4_0 rows repacked as `Layout::Q4_0x8`, where the level has them.
    q4_0x8: Option<(Dot8Fn, Dot8x4Fn)>,
    q4_kx8: Option<(Dot8Fn, Dot8x4Fn)>,
    q8_0x8: Option<(Dot8Fn, Dot8x4Fn)>,
    q4_1x8: Option<(Dot8Fn, Dot8x4Fn)>,
    q5_0x8: Option<(Dot8Fn, Dot8x4Fn)>,
    q6_kx8: Option<(Dot8Fn, Dot8x4Fn)>,
    q5_kx8: Option<(Dot8Fn, Dot8x4Fn)>,
    iq4_xsx8: Option<(Dot8Fn, Dot8x4Fn)>,
    q3_kx8: Option<(Dot8Fn, Dot8x4Fn)>,
    q2_kx8: Option<(Dot8Fn, Dot8x4Fn)>,
    iq4_nlx8: Option<(Dot8Fn, Dot8x4Fn)>,
    q5_1x8: Option<(Dot8Fn, Dot8x4Fn)>,
    /// 16-row Q4_0x8 and Q4_Kx8 prefill kernels (the avx512 level).
    q4_0x16: Option<Dot16x4Fn>,
    q4_kx16: Option<Dot16x4Fn>,
    q8_0x16: Option<Dot16x4Fn>,
    q5_0x16: Option<Dot16x4Fn>,
    q6_kx16: Option<Dot16x4Fn>,
    q4_0x16x8: Option<Dot16x8Fn>,
    q4_kx16x8: Option<Dot16x8Fn>,
    q8_0x16x8: Option<Dot16x8Fn>,
    q5_0x16x8: Option<Dot16x8Fn>,
    /// Unpack-once panels for the prefill of Q5_0x8, Q8_0x8, Q4_1x8, Q4_Kx8, Q5_Kx8 and Q6_Kx8
    /// (the avx512 level), and Q4_0x8, Q4_1x8 and the K types at the 256-bit levels.
    q4_0_panel: Option<Panel16Fns>,
    q5_0_panel: Option<Panel16Fns>,
    q8_0_panel: Option<Panel16Fns>,
    q4_1_panel: Option<Panel16Fns>,
    q5_k_panel: Option<Panel16Fns>,
    q4_k_panel: Option<Panel16Fns>,
    q6_k_panel: Option<Panel16Fns>,
    iq4_xs_panel: Option<Panel16Fns>,
    q3_k_panel: Option<Panel16Fns>,
    q2_k_panel: Option<Panel16Fns>,
    iq4_nl_panel: Option<Panel16Fns>,
    q5_1_panel: Option<Panel16Fns>,
    /// AMX tiles for the prefill of the 32-value block layouts, Q4Kx8, Q5Kx8 and IQ4XSx8 (the
    /// amx level).
    amx: Vec<(Layout, Tile16Fns)>,
}

fn scalar_dots() -> Vec<(GgmlType, DotFn)> {
    use GgmlType::*;
    vec![
        (Q4_0, wrap!(scalar::vec_dot_q4_0_q8_0, BlockQ4_0, Q8_0)),
        (Q4_1, wrap!(scalar::vec_dot_q4_1_q8_1, BlockQ4_1, Q8_1)),
        (Q5_0, wrap!(scalar::vec_dot_q5_0_q8_0, BlockQ5_0, Q8_0)),
        (Q5_1, wrap!(scalar::vec_dot_q5_1_q8_1, BlockQ5_1, Q8_1)),
        (Q8_0, wrap!(scalar::vec_dot_q8_0_q8_0, BlockQ8_0, Q8_0)),
        (IQ4_NL, wrap!(scalar::vec_dot_iq4_nl_q8_0, BlockIQ4NL, Q8_0)),
        (Q2_K, wrap!(scalar::vec_dot_q2_k_q8_k, BlockQ2K, Q8K)),
        (Q3_K, wrap!(scalar::vec_dot_q3_k_q8_k, BlockQ3K, Q8K)),
        (Q4_K, wrap!(scalar::vec_dot_q4_k_q8_k, BlockQ4K, Q8K)),
        (Q5_K, wrap!(scalar::vec_dot_q5_k_q8_k, BlockQ5K, Q8K)),
        (Q6_K, wrap!(scalar::vec_dot_q6_k_q8_k, BlockQ6K, Q8K)),
        (IQ4_XS, wrap!(scalar::vec_dot_iq4_xs_q8_k, BlockIQ4XS, Q8K)),
        (F32, wrap!(float scalar::vec_dot_f32)),
        (F16, wrap!(float scalar::vec_dot_f16_f32)),
        (BF16, wrap!(float scalar::vec_dot_bf16_f32)),
    ]
}

/// Replace the scalar entries with a level's own kernels.
fn with(mut dots: Vec<(GgmlType, DotFn)>, own: Vec<(GgmlType, DotFn)>) -> Vec<(GgmlType, DotFn)> {
    for (ty, f) in own {
        match dots.iter_mut().find(|(t, _)| *t == ty) {
            Some(e) => e.1 = f,
            None => dots.push((ty, f)),
        }
    }
    dots
}

#[cfg(target_arch = "x86_64")]
macro_rules! x86_table {
    ($m:path) => {{
        use $m as k;
        use GgmlType::*;
        vec![
            (Q4_0, wrap!(k::vec_dot_q4_0_q8_0, BlockQ4_0, Q8_0)),
            (Q4_1, wrap!(k::vec_dot_q4_1_q8_1, BlockQ4_1, Q8_1)),
            (Q5_0, wrap!(k::vec_dot_q5_0_q8_0, BlockQ5_0, Q8_0)),
            (Q5_1, wrap!(k::vec_dot_q5_1_q8_1, BlockQ5_1, Q8_1)),
            (Q8_0, wrap!(k::vec_dot_q8_0_q8_0, BlockQ8_0, Q8_0)),
            (IQ4_NL, wrap!(k::vec_dot_iq4_nl_q8_0, BlockIQ4NL, Q8_0)),
            (Q2_K, wrap!(k::vec_dot_q2_k_q8_k, BlockQ2K, Q8K)),
            (Q3_K, wrap!(k::vec_dot_q3_k_q8_k, BlockQ3K, Q8K)),
            (Q4_K, wrap!(k::vec_dot_q4_k_q8_k, BlockQ4K, Q8K)),
            (Q5_K, wrap!(k::vec_dot_q5_k_q8_k, BlockQ5K, Q8K)),
            (Q6_K, wrap!(k::vec_dot_q6_k_q8_k, BlockQ6K, Q8K)),
            (IQ4_XS, wrap!(k::vec_dot_iq4_xs_q8_k, BlockIQ4XS, Q8K)),
            (F32, wrap!(float k::vec_dot_f32)),
            (F16, wrap!(float k::vec_dot_f16_f32)),
            (BF16, wrap!(float k::vec_dot_bf16_f32)),
        ]
    }};
}

#[cfg(target_arch = "x86_64")]
macro_rules! x86_table4 {
    ($m:path) => {{
        use $m as k;
        use GgmlType::*;
        vec![
            (Q4_1, wrap4!(k::vec_dot4_q4_1_q8_1, BlockQ4_1, Q8_1)),
            // Q4_0, Q8_0, Q4_K and Q6_K decode stream faster through the one-row kernel (4
            // interleaved streams of short rows defeat the prefetcher; measured 40 vs 49
            // tokens/s on SmolLM2 Q8_0, 4.5 vs 11.7 on the 1B shape's Q4_K_M with 1 thread;
            // the 1B shape's Q4_0 without repacking, 2 threads, 22-23 vs 33-35).
        ]
    }};
}

#[cfg(target_arch = "x86_64")]
macro_rules! x86_table4x2 {
    ($m:path) => {{
        use $m as k;
        use GgmlType::*;
        vec![
            (Q4_0, wrap4x2!(k::vec_dot4x2_q4_0_q8_0, BlockQ4_0, Q8_0)),
            (Q4_1, wrap4x2!(k::vec_dot4x2_q4_1_q8_1, BlockQ4_1, Q8_1)),
            (Q8_0, wrap4x2!(k::vec_dot4x2_q8_0_q8_0, BlockQ8_0, Q8_0)),
            (Q4_K, wrap4x2!(k::vec_dot4x2_q4_k_q8_k, BlockQ4K, Q8K)),
            (Q6_K, wrap4x2!(k::vec_dot4x2_q6_k_q8_k, BlockQ6K, Q8K)),
        ]
    }};
}

#[cfg(target_arch = "aarch64")]
macro_rules! neon_table {
    ($m:path) => {{
        use $m as k;
        use GgmlType::*;
        vec![
            (Q4_0, wrap!(k::vec_dot_q4_0_q8_0, BlockQ4_0, Q8_0)),
            (Q4_1, wrap!(k::vec_dot_q4_1_q8_1, BlockQ4_1, Q8_1)),
            (Q5_0, wrap!(k::vec_dot_q5_0_q8_0, BlockQ5_0, Q8_0)),
            (Q5_1, wrap!(k::vec_dot_q5_1_q8_1, BlockQ5_1, Q8_1)),
            (Q8_0, wrap!(k::vec_dot_q8_0_q8_0, BlockQ8_0, Q8_0)),
            (IQ4_NL, wrap!(k::vec_dot_iq4_nl_q8_0, BlockIQ4NL, Q8_0)),
            (Q2_K, wrap!(k::vec_dot_q2_k_q8_k, BlockQ2K, Q8K)),
            (Q3_K, wrap!(k::vec_dot_q3_k_q8_k, BlockQ3K, Q8K)),
            (Q4_K, wrap!(k::vec_dot_q4_k_q8_k, BlockQ4K, Q8K)),
            (Q5_K, wrap!(k::vec_dot_q5_k_q8_k, BlockQ5K, Q8K)),
            (Q6_K, wrap!(k::vec_dot_q6_k_q8_k, BlockQ6K, Q8K)),
            (IQ4_XS, wrap!(k::vec_dot_iq4_xs_q8_k, BlockIQ4XS, Q8K)),
            (F32, wrap!(float k::vec_dot_f32)),
            (F16, wrap!(float k::vec_dot_f16_f32)),
            (BF16, wrap!(float k::vec_dot_bf16_f32)),
        ]
    }};
}

/// The NEON level's 4x2 prefill tiles (four weight rows against two activation rows).
#[cfg(target_arch = "aarch64")]
macro_rules! neon_table4x2 {
    ($m:path) => {{
        use $m as k;
        use GgmlType::*;
        vec![
            (Q4_0, wrap4x2!(k::vec_dot4x2_q4_0_q8_0, BlockQ4_0, Q8_0)),
            (Q4_1, wrap4x2!(k::vec_dot4x2_q4_1_q8_1, BlockQ4_1, Q8_1)),
            (Q5_0, wrap4x2!(k::vec_dot4x2_q5_0_q8_0, BlockQ5_0, Q8_0)),
            (Q5_1, wrap4x2!(k::vec_dot4x2_q5_1_q8_1, BlockQ5_1, Q8_1)),
            (Q8_0, wrap4x2!(k::vec_dot4x2_q8_0_q8_0, BlockQ8_0, Q8_0)),
            (IQ4_NL, wrap4x2!(k::vec_dot4x2_iq4_nl_q8_0, BlockIQ4NL, Q8_0)),
            (Q2_K, wrap4x2!(k::vec_dot4x2_q2_k_q8_k, BlockQ2K, Q8K)),
            (Q3_K, wrap4x2!(k::vec_dot4x2_q3_k_q8_k, BlockQ3K, Q8K)),
            (Q4_K, wrap4x2!(k::vec_dot4x2_q4_k_q8_k, BlockQ4K, Q8K)),
            (Q5_K, wrap4x2!(k::vec_dot4x2_q5_k_q8_k, BlockQ5K, Q8K)),
            (Q6_K, wrap4x2!(k::vec_dot4x2_q6_k_q8_k, BlockQ6K, Q8K)),
            (IQ4_XS, wrap4x2!(k::vec_dot4x2_iq4_xs_q8_k, BlockIQ4XS, Q8K)),
        ]
    }};
}

/// The NEON level's 4x4 prefill tiles (the 32-value types; the K types' four activation rows
/// of 64 values would not fit the registers beside their sums).
#[cfg(target_arch = "aarch64")]
macro_rules! neon_table4x4 {
    ($m:path) => {{
        use $m as k;
        vec![
            (Q4_0, wrap4x4!(k::vec_dot4x4_q4_0_q8_0, BlockQ4_0, Q8_0)),
            (Q4_1, wrap4x4!(k::vec_dot4x4_q4_1_q8_1, BlockQ4_1, Q8_1)),
            (Q5_0, wrap4x4!(k::vec_dot4x4_q5_0_q8_0, BlockQ5_0, Q8_0)),
            (Q5_1, wrap4x4!(k::vec_dot4x4_q5_1_q8_1, BlockQ5_1, Q8_1)),
            (Q8_0, wrap4x4!(k::vec_dot4x4_q8_0_q8_0, BlockQ8_0, Q8_0)),
            (IQ4_NL, wrap4x4!(k::vec_dot4x4_iq4_nl_q8_0, BlockIQ4NL, Q8_0)),
        ]
    }};
}

/// The NEON level's table: with `sdot` if `dotprod`, else with widening multiplies.
/// `dotprod` must be true only if the CPU has it (the table's kernels need it).
///
/// The Neon level uses the `sdot` table wherever the CPU has dotprod. There the plain one
/// is built too, as an extra entry of `Kernels::tables()`, so that tests check both.
#[cfg(target_arch = "aarch64")]
fn build_neon(dotprod: bool) -> Kernels {
    let (name, own, tiles, rows) = match dotprod {
        true => (
            "neon+dotprod",
            neon_table!(crate::aarch64::dotprod),
            neon_table4x2!(crate::aarch64::dotprod),
            neon_rows_table!(crate::aarch64::dotprod),
        ),
        false => (
            "neon",
            neon_table!(crate::aarch64::neon),
            neon_table4x2!(crate::aarch64::neon),
            neon_rows_table!(crate::aarch64::neon),
        ),
    };
    Kernels {
        level: Level::Neon,
        name,
        dots: with(scalar_dots(), own),
        dots4: Vec::new(),
        dots4x2: tiles,
        dots4x4: {
            use GgmlType::*;
            match dotprod {
                true => neon_table4x4!(crate::aarch64::dotprod),
                false => neon_table4x4!(crate::aarch64::neon),
            }
        },
        rows,
        q4_0x8: None,
        q4_kx8: None,
        q8_0x8: None,
        q4_1x8: None,
        q5_0x8: None,
        q6_kx8: None,
        q5_kx8: None,
        iq4_xsx8: None,
        q3_kx8: None,
        q2_kx8: None,
        iq4_nlx8: None,
        q5_1x8: None,
        q4_0x16: None,
        q4_kx16: None,
        q8_0x16: None,
        q5_0x16: None,
        q6_kx16: None,
        q4_0x16x8: None,
        q4_kx16x8: None,
        q8_0x16x8: None,
        q5_0x16x8: None,
        q4_0_panel: None,
        q5_0_panel: None,
        q8_0_panel: None,
        q4_1_panel: None,
        q5_k_panel: None,
        q4_k_panel: None,
        q6_k_panel: None,
        iq4_xs_panel: None,
        q3_k_panel: None,
        q2_k_panel: None,
        iq4_nl_panel: None,
        q5_1_panel: None,
        amx: Vec::new(),
    }
}

#[cfg(target_arch = "aarch64")]
fn has_dotprod() -> bool {
    std::arch::is_aarch64_feature_detected!("dotprod")
}

fn build(level: Level) -> Kernels {
    #[cfg(target_arch = "aarch64")]
    if level == Level::Neon {
        return build_neon(has_dotprod());
    }
    // AMX: the avx512 table, with tiles for the prefill of the 32-value block types and the
    // K types but Q2_K.
    #[cfg(target_arch = "x86_64")]
    if level == Level::Amx {
        use crate::x86_64::amx::{self as k, vec_dot_panel32x16_q8_0 as q8_0};
        use crate::x86_64::avx512::{self, Panel32, Panel32M};
        return Kernels {
            level,
            name: level.name(),
            amx: vec![
                (Layout::Q4_0x8, wrap_amx!(BlockQ4_0x8, Panel32, k::unpack_q4_0x16, Q8_0, 1, q8_0)),
                (Layout::Q5_0x8, wrap_amx!(BlockQ5_0x8, Panel32, k::unpack_q5_0x16, Q8_0, 1, q8_0)),
                (Layout::Q8_0x8, wrap_amx!(BlockQ8_0x8, Panel32, k::unpack_q8_0x16, Q8_0, 1, q8_0)),
                (Layout::IQ4NLx8, wrap_amx!(BlockQ4_0x8, Panel32, k::unpack_iq4_nlx16, Q8_0, 1, q8_0)),
                (
                    Layout::Q4_1x8,
                    wrap_amx!(
                        BlockQ4_1x8,
                        Panel32M,
                        avx512::unpack_q4_1x16,
                        Q8_1,
                        1,
                        k::vec_dot_panel32m_x16
                    ),
                ),
                (
                    Layout::Q5_1x8,
                    wrap_amx!(
                        BlockQ5_1x8,
                        Panel32M,
                        avx512::unpack_q5_1x16,
                        Q8_1,
                        1,
                        k::vec_dot_panel32m_x16
                    ),
                ),
                (Layout::Q4Kx8, wrap_amx_fused!(BlockQ4Kx8, k::unpack_k_sb::<BlockQ4Kx8>, true)),
                (Layout::Q5Kx8, wrap_amx_fused!(BlockQ5Kx8, k::unpack_k_sb::<BlockQ5Kx8>, true)),
                (Layout::IQ4XSx8, wrap_amx_fused!(BlockIQ4XSx8, k::unpack_iq4_xs_sb, false)),
                (Layout::Q6Kx8, wrap_amx_fused!(BlockQ6Kx8, k::unpack_g16_sb::<BlockQ6Kx8>, false)),
                (Layout::Q3Kx8, wrap_amx_fused!(BlockQ3Kx8, k::unpack_g16_sb::<BlockQ3Kx8>, false)),
            ],
            ..build(Level::Avx512)
        };
    }
    let dots4x2: Vec<(GgmlType, Dot4x2Fn)> = match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => x86_table4x2!(crate::x86_64::avx2),
        #[cfg(target_arch = "x86_64")]
        Level::AvxVnni => x86_table4x2!(crate::x86_64::avxvnni),
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => x86_table4x2!(crate::x86_64::avx512),
        _ => Vec::new(),
    };
    let rows: Vec<(GgmlType, RowsDecodeFn)> = match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => x86_ymm_rows_table!(crate::x86_64::avx2::rows),
        #[cfg(target_arch = "x86_64")]
        Level::AvxVnni => x86_ymm_rows_table!(crate::x86_64::avxvnni::rows),
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => x86_rows_table(),
        _ => Vec::new(),
    };
    let dots4: Vec<(GgmlType, Dot4Fn)> = match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => x86_table4!(crate::x86_64::avx2),
        #[cfg(target_arch = "x86_64")]
        Level::AvxVnni => x86_table4!(crate::x86_64::avxvnni),
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => x86_table4!(crate::x86_64::avx512),
        _ => Vec::new(),
    };
    let dots = match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => with(scalar_dots(), x86_table!(crate::x86_64::avx2)),
        #[cfg(target_arch = "x86_64")]
        Level::AvxVnni => with(scalar_dots(), x86_table!(crate::x86_64::avxvnni)),
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => with(scalar_dots(), x86_table!(crate::x86_64::avx512)),
        _ => scalar_dots(),
    };
    let (q4_0x8, q4_kx8, q8_0x8, q4_1x8, q5_0x8, q6_kx8, q5_kx8, iq4_xsx8, q3_kx8, q2_kx8, iq4_nlx8, q5_1x8) =
        match level {
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => x86_x8!(crate::x86_64::avx2),
            #[cfg(target_arch = "x86_64")]
            Level::AvxVnni => x86_x8!(crate::x86_64::avxvnni),
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => x86_x8!(crate::x86_64::avx512),
            _ => (None, None, None, None, None, None, None, None, None, None, None, None),
        };
    let (q4_0x16, q4_kx16, q8_0x16, q5_0x16, q6_kx16) = match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => {
            use crate::x86_64::avx512 as k;
            (
                wrap_x16!(k::vec_dot_q4_0x16x4_q8_0, BlockQ4_0x8, Q8_0S),
                wrap_x16!(k::vec_dot_q4_kx16x4_q8_k, BlockQ4Kx8, Q8K),
                wrap_x16!(k::vec_dot_q8_0x16x4_q8_0, BlockQ8_0x8, Q8_0S),
                wrap_x16!(k::vec_dot_q5_0x16x4_q8_0, BlockQ5_0x8, Q8_0S),
                wrap_x16!(k::vec_dot_q6_kx16x4_q8_k, BlockQ6Kx8, Q8K),
            )
        }
        _ => (None, None, None, None, None),
    };
    let (q4_0x16x8, q4_kx16x8, q8_0x16x8, q5_0x16x8) = match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => {
            use crate::x86_64::avx512 as k;
            (
                wrap_x16x8!(k::vec_dot_q4_0x16x8_q8_0, BlockQ4_0x8, Q8_0S),
                wrap_x16x8!(k::vec_dot_q4_kx16x8_q8_k, BlockQ4Kx8, Q8K),
                wrap_x16x8!(k::vec_dot_q8_0x16x8_q8_0, BlockQ8_0x8, Q8_0S),
                wrap_x16x8!(k::vec_dot_q5_0x16x8_q8_0, BlockQ5_0x8, Q8_0S),
            )
        }
        _ => (None, None, None, None),
    };
    // No Q4_0 panel: its nibbles unpack in two operations, and in the model its panel
    // matched the 16-row tile at 512 tokens and lost 5-8% at 64 (alternated runs).
    let (
        q5_0_panel,
        q8_0_panel,
        q4_1_panel,
        q4_k_panel,
        q5_k_panel,
        q6_k_panel,
        iq4_xs_panel,
        q3_k_panel,
        q2_k_panel,
        iq4_nl_panel,
    ) = match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => {
            use crate::x86_64::avx512 as k;
            (
                wrap_panel!(
                    BlockQ5_0x8,
                    Q8_0S,
                    k::Panel32,
                    k::unpack_q5_0x16,
                    spread k::vec_dot_panel32x16x8_q8_0::<16>
                ),
                wrap_panel!(
                    BlockQ8_0x8,
                    Q8_0S,
                    k::Panel32,
                    k::unpack_q8_0x16,
                    spread k::vec_dot_panel32x16x8_q8_0::<128>
                ),
                wrap_panel!(BlockQ4_1x8, Q8_1, k::Panel32M, k::unpack_q4_1x16, spread k::vec_dot_q4_1panel16x8_q8_1),
                wrap_panel!(
                    BlockQ4Kx8,
                    Q8K,
                    k::PanelQ4K,
                    k::unpack_k16::<BlockQ4Kx8>,
                    spread k::vec_dot_q4_kpanel16x8_q8_k::<false, true>
                ),
                wrap_panel!(
                    BlockQ5Kx8,
                    Q8K,
                    k::PanelQ4K,
                    k::unpack_k16::<BlockQ5Kx8>,
                    spread k::vec_dot_q4_kpanel16x8_q8_k::<false, false>
                ),
                wrap_panel!(
                    BlockQ6Kx8,
                    Q8K,
                    k::PanelQ6K,
                    k::unpack_g16::<BlockQ6Kx8>,
                    spread k::vec_dot_q6_kpanel16x8_q8_k::<false>
                ),
                wrap_panel!(
                    BlockIQ4XSx8,
                    Q8K,
                    k::PanelQ4K,
                    k::unpack_iq4_xsx16,
                    spread k::vec_dot_q4_kpanel16x8_q8_k::<true, false>
                ),
                wrap_panel!(
                    BlockQ3Kx8,
                    Q8K,
                    k::PanelQ6K,
                    k::unpack_g16::<BlockQ3Kx8>,
                    spread k::vec_dot_q6_kpanel16x8_q8_k::<false>
                ),
                wrap_panel!(
                    BlockQ2Kx8,
                    Q8K,
                    k::PanelQ6K,
                    k::unpack_g16::<BlockQ2Kx8>,
                    spread k::vec_dot_q6_kpanel16x8_q8_k::<true>
                ),
                wrap_panel!(
                    BlockQ4_0x8,
                    Q8_0S,
                    k::Panel32,
                    k::unpack_iq4_nlx16,
                    spread k::vec_dot_panel32x16x8_q8_0::<128>
                ),
            )
        }
        // AVX2 and AVX-VNNI: K-type panels of 8-row groups in 256-bit registers.
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => x86_k_panels!(crate::x86_64::avx2, false),
        #[cfg(target_arch = "x86_64")]
        Level::AvxVnni => x86_k_panels!(crate::x86_64::avxvnni, true),
        _ => (None, None, None, None, None, None, None, None, None, None),
    };
    // Q4_0 at the 256-bit levels, which have no 16-row tile for it: its nibbles unpacked
    // once per pair of groups instead of once per four activation rows. On a Zen 3 at avx2,
    // `matmul/q4_0` 131 -> 158 Gelem/s, 1B Q4_0 pp512 121-124 -> 144-153 t/s (the same
    // results: `legacy_panels_match_the_tiles_to_the_bit`). Q5_1: Q4_1's panel kernel over
    // 5-bit values (at avx2 on a Zen 3, 1B Q5_0 pp128 109-111 -> 145-150 t/s and Q5_1
    // 106-108 -> 137-138 with their panels).
    let (q4_0_panel, q5_1_panel) = match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => {
            use crate::x86_64::avx512 as k;
            (
                None,
                wrap_panel!(BlockQ5_1x8, Q8_1, k::Panel32M, k::unpack_q5_1x16, spread k::vec_dot_q4_1panel16x8_q8_1),
            )
        }
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => x86_nib_panels!(crate::x86_64::avx2),
        #[cfg(target_arch = "x86_64")]
        Level::AvxVnni => x86_nib_panels!(crate::x86_64::avxvnni),
        _ => (None, None),
    };
    Kernels {
        level,
        name: level.name(),
        dots,
        dots4,
        dots4x2,
        dots4x4: Vec::new(),
        rows,
        q4_0x8,
        q4_kx8,
        q8_0x8,
        q4_1x8,
        q5_0x8,
        q6_kx8,
        q5_kx8,
        iq4_xsx8,
        q3_kx8,
        q2_kx8,
        iq4_nlx8,
        q5_1x8,
        q4_0x16,
        q4_kx16,
        q8_0x16,
        q5_0x16,
        q6_kx16,
        q4_0x16x8,
        q4_kx16x8,
        q8_0x16x8,
        q5_0x16x8,
        q4_0_panel,
        q5_0_panel,
        q8_0_panel,
        q4_1_panel,
        q5_k_panel,
        q4_k_panel,
        q6_k_panel,
        iq4_xs_panel,
        q3_k_panel,
        q2_k_panel,
        iq4_nl_panel,
        q5_1_panel,
        amx: Vec::new(),
    }
}

const LEVELS: [Level; 6] =
    [Level::Scalar, Level::Avx2, Level::AvxVnni, Level::Avx512, Level::Amx, Level::Neon];

impl Kernels {
    /// The table of a level, if this CPU runs it.
    pub fn for_level(level: Level) -> Option<&'static Kernels> {
        Kernels::tables().iter().find(|k| k.level == level)
    }

    /// Every table this CPU runs: each level's, lowest first, then the variants a level
    /// passed over for a better one (NEON without `sdot` on a CPU with dotprod), which
    /// only tests and benchmarks reach.
    pub fn tables() -> &'static [Kernels] {
        static TABLES: OnceLock<Vec<Kernels>> = OnceLock::new();
        TABLES.get_or_init(|| {
            #[allow(unused_mut)]
            let mut tables: Vec<Kernels> = LEVELS.into_iter().filter(|l| l.supported()).map(build).collect();
            #[cfg(target_arch = "aarch64")]
            if Level::Neon.supported() && has_dotprod() {
                tables.push(build_neon(false));
            }
            tables
        })
    }

    /// Every level this CPU runs, lowest first.
    pub fn available() -> Vec<Level> {
        LEVELS.into_iter().filter(|l| l.supported()).collect()
    }

    /// The best level this CPU runs, lowered by `FERRITE_KERNELS` if set (an unknown or
    /// unsupported name falls back to the best level, with a warning on stderr).
    pub fn best() -> &'static Kernels {
        static BEST: OnceLock<Level> = OnceLock::new();
        let level = *BEST.get_or_init(|| {
            let best = *Kernels::available().last().expect("scalar is always available");
            match std::env::var("FERRITE_KERNELS") {
                Ok(name) => match Level::from_name(&name) {
                    Some(l) if l.supported() => l,
                    _ => {
                        eprintln!(
                            "warning: FERRITE_KERNELS={name} is not a level this CPU runs; using {}",
                            best.name()
                        );
                        best
                    }
                },
                Err(_) => best,
            }
        });
        Kernels::for_level(level).expect("a supported level has a table")
    }

    /// The dot product kernel for a weight type.
    pub fn dot(&self, ty: GgmlType) -> Option<DotFn> {
        self.dots.iter().find(|(t, _)| *t == ty).map(|(_, f)| *f)
    }

    /// The four-row kernel for a weight type, where the level has one.
    pub fn dot4(&self, ty: GgmlType) -> Option<Dot4Fn> {
        self.dots4.iter().find(|(t, _)| *t == ty).map(|(_, f)| *f)
    }

    /// The 4x2 register-tile kernel for a weight type, where the level has one.
    pub fn dot4x2(&self, ty: GgmlType) -> Option<Dot4x2Fn> {
        self.dots4x2.iter().find(|(t, _)| *t == ty).map(|(_, f)| *f)
    }

    /// Four weight rows against four activation rows, where the level has such a tile.
    pub fn dot4x4(&self, ty: GgmlType) -> Option<Dot4x4Fn> {
        self.dots4x4.iter().find(|(t, _)| *t == ty).map(|(_, f)| *f)
    }

    /// The kernels for an interleaved layout, where the level has them.
    /// The 16-row prefill kernel of an interleaved layout, where the level has one.
    pub fn repacked16x8(&self, layout: Layout) -> Option<Dot16x8Fn> {
        match layout {
            Layout::Q4_0x8 => self.q4_0x16x8,
            Layout::Q4Kx8 => self.q4_kx16x8,
            Layout::Q8_0x8 => self.q8_0x16x8,
            Layout::Q5_0x8 => self.q5_0x16x8,
            _ => None,
        }
    }

    /// The AMX prefill path of an interleaved layout, where the level has one.
    pub fn amx16(&self, layout: Layout) -> Option<Tile16Fns> {
        self.amx.iter().find(|(l, _)| *l == layout).map(|(_, f)| *f)
    }

    /// An unpacker from 16 rows in the file's layout into the panel of the type's
    /// interleaved layout (`amx`: the AMX path's panel, else `panel16`'s), where the level has
    /// one: Q8_0, Q4_0, IQ4_NL, Q4_1, Q5_0 and Q5_1 (both), Q4_K, Q5_K and Q6_K (`panel16`'s)
    /// at the avx512 and amx levels.
    pub fn rows_unpack16(&self, ty: GgmlType, amx: bool) -> Option<RowsUnpackFn> {
        #[cfg(target_arch = "x86_64")]
        {
            let avx512 = matches!(self.level, Level::Avx512 | Level::Amx);
            match (ty, amx) {
                (GgmlType::Q8_0, true) if self.level == Level::Amx => Some(rows_q8_0_s),
                (GgmlType::Q8_0, false) if avx512 => Some(rows_q8_0_u),
                // Q4_1, Q5_1: the same panels for the avx512 kernel and the AMX tiles.
                (GgmlType::Q4_1, _) if avx512 => Some(legacy_rows::q4_1),
                (GgmlType::Q5_1, _) if avx512 => Some(legacy_rows::q5_1),
                (GgmlType::Q5_0, true) if self.level == Level::Amx => Some(legacy_rows::q5_0_s),
                (GgmlType::Q5_0, false) if avx512 => Some(legacy_rows::q5_0_u),
                (GgmlType::Q4_0, true) if self.level == Level::Amx => Some(legacy_rows::q4_0_s),
                (GgmlType::Q4_0, false) if avx512 => Some(legacy_rows::q4_0_u),
                (GgmlType::IQ4_NL, true) if self.level == Level::Amx => Some(legacy_rows::iq4_nl_s),
                (GgmlType::IQ4_NL, false) if avx512 => Some(legacy_rows::iq4_nl_u),
                (GgmlType::Q4_K, false) if avx512 => Some(rows_q4_k),
                (GgmlType::Q5_K, false) if avx512 => Some(rows_q5_k),
                (GgmlType::Q6_K, false) if avx512 => Some(rows_q6_k),
                _ => None,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (ty, amx);
            None
        }
    }

    /// The decode kernel over many rows in the file's layout, where the level has one (every
    /// quantized type at the avx512, amx and neon levels).
    pub fn rows_decode(&self, ty: GgmlType) -> Option<RowsDecodeFn> {
        self.rows.iter().find(|(t, _)| *t == ty).map(|(_, f)| *f)
    }

    /// The 8-row kernel for the panels of `rows_unpack16(ty, false)` where the type's layout
    /// has no `panel16` (Q4_0 at the avx512 and amx levels: from the copies, its 16-row tile
    /// ran as fast as a panel at 512 tokens and faster at 64, but from rows the panel saves
    /// the interleaving).
    pub fn rows_panel_kernel(&self, ty: GgmlType) -> Option<PanelEightFn> {
        #[cfg(target_arch = "x86_64")]
        if ty == GgmlType::Q4_0 && matches!(self.level, Level::Avx512 | Level::Amx) {
            return Some(q4_0_rows_eight);
        }
        let _ = ty;
        None
    }

    /// The unpack-once prefill path of an interleaved layout, where the level has one.
    pub fn panel16(&self, layout: Layout) -> Option<Panel16Fns> {
        match layout {
            Layout::Q4_0x8 => self.q4_0_panel,
            Layout::Q5_0x8 => self.q5_0_panel,
            Layout::Q8_0x8 => self.q8_0_panel,
            Layout::Q4_1x8 => self.q4_1_panel,
            Layout::Q4Kx8 => self.q4_k_panel,
            Layout::Q5Kx8 => self.q5_k_panel,
            Layout::Q6Kx8 => self.q6_k_panel,
            Layout::IQ4XSx8 => self.iq4_xs_panel,
            Layout::Q3Kx8 => self.q3_k_panel,
            Layout::Q2Kx8 => self.q2_k_panel,
            Layout::IQ4NLx8 => self.iq4_nl_panel,
            Layout::Q5_1x8 => self.q5_1_panel,
            _ => None,
        }
    }

    pub fn repacked16(&self, layout: Layout) -> Option<Dot16x4Fn> {
        match layout {
            Layout::Q4_0x8 => self.q4_0x16,
            Layout::Q4Kx8 => self.q4_kx16,
            Layout::Q8_0x8 => self.q8_0x16,
            Layout::Q5_0x8 => self.q5_0x16,
            Layout::Q6Kx8 => self.q6_kx16,
            _ => None,
        }
    }

    pub fn repacked(&self, layout: Layout) -> Option<(Dot8Fn, Dot8x4Fn)> {
        match layout {
            Layout::Q4_0x8 => self.q4_0x8,
            Layout::Q4Kx8 => self.q4_kx8,
            Layout::Q8_0x8 => self.q8_0x8,
            Layout::Q4_1x8 => self.q4_1x8,
            Layout::Q5_0x8 => self.q5_0x8,
            Layout::Q6Kx8 => self.q6_kx8,
            Layout::Q5Kx8 => self.q5_kx8,
            Layout::IQ4XSx8 => self.iq4_xsx8,
            Layout::Q3Kx8 => self.q3_kx8,
            Layout::Q2Kx8 => self.q2_kx8,
            Layout::IQ4NLx8 => self.iq4_nlx8,
            Layout::Q5_1x8 => self.q5_1x8,
            Layout::Rows => None,
        }
    }

    /// The layout worth repacking a matrix into for this level, if any (see `repack`).
    pub fn preferred_layout(&self, ty: GgmlType, rows: usize, cols: usize) -> Option<Layout> {
        let layout = Layout::for_type(ty)?;
        (self.repacked(layout).is_some() && crate::repack::repackable(ty, rows, cols)).then_some(layout)
    }

    /// Whether this level has its own (non-scalar) kernel for the type.
    pub fn is_native(&self, ty: GgmlType) -> bool {
        match (self.dot(ty), Kernels::for_level(Level::Scalar).and_then(|s| s.dot(ty))) {
            (Some(a), Some(b)) => self.level == Level::Scalar || a as usize != b as usize,
            _ => false,
        }
    }
}
