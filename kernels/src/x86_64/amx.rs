//! AMX int8 tiles for prefill (Intel Sapphire Rapids and later): `tdpbssd` multiplies a tile
//! of up to 16 activation rows (32 signed bytes each: one Q8_0 block) by a tile of 16 weight
//! rows (the same block, as signed bytes) into 16x16 i32 sums in one instruction; AVX-512
//! then applies the two blocks' scales and accumulates in f32 (the sums tiles start from a
//! float's bits, so no conversion is needed: `MAGIC`). The weights are unpacked
//! once per 16-row pair into `Panel32`s, which are already in the tile's layout: row k of a
//! block's B tile holds bytes 4k..4k+4 of each of the 16 weight rows. The K types instead
//! sum whole 256-value super-blocks in the tiles (`PanelSB`, `vec_dot_sb_x16_fused`: the section
//! "K types" below).
//!
//! Stable Rust has no AMX intrinsics, so the tile instructions are `asm!`. The tiles live
//! outside the compiler's view: each kernel call uses tiles 0-7 after loading its
//! configuration where the thread's tiles do not hold it already (`configure`); they stay
//! configured until the thread's next kernel of another kind, or until it parks
//! (`release_tiles`). Nothing else in the process uses AMX.
//!
//! The activations are laid out once per batch as tiles (`ActTile`: one block of 16 rows in
//! 512 contiguous bytes, their scales beside; `ActTileK` and `ActTileS` likewise for Q8_1 and
//! Q8_K), so a tile load reads whole cache lines.

use super::avx512::{
    dpwssd, f16x16_pair, five_bit_x16, i8x16_pair, join32, magic_scaled, neg_magic, nibbles_x16,
    prefetch_lines, prefetch_pair, u8x16_pair, unpack_nibbles_x16, Group16x16, Panel32, Panel32M, MAGIC,
};
use crate::blocks::{BlockIQ4XSx8, BlockQ4_0x8, BlockQ5_0x8, BlockQ8_0x8, KBlockX8, KVALUES_IQ4NL};
use crate::dispatch::{ActTile, ActTileK, ActTileS, Out16};
// The next call's weights (`next`, what the next pair's unpacking reads) go to L2 a share
// per step while the tiles run, instead of all at once when the unpacker reaches them (or
// in a burst that stalls the core).
use crate::matmul::{prefetch_write, L2Shares};
use std::arch::asm;
use std::arch::x86_64::*;

/// Whether this CPU has AMX-TILE and AMX-INT8, the OS saves their state, and the kernel
/// granted this process the tile data permission (asked for here, once: Linux 5.16+).
pub fn available() -> bool {
    use std::sync::OnceLock;
    if cfg!(ferrite_amx_emulate) {
        return true;
    }
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let (l1, l7) = (__cpuid_count(1, 0), __cpuid_count(7, 0));
        let (tile, int8, osxsave) = (l7.edx >> 24 & 1 == 1, l7.edx >> 25 & 1 == 1, l1.ecx >> 27 & 1 == 1);
        if !(tile && int8 && osxsave) {
            return false;
        }
        // XCR0 bits 17 (XTILECFG) and 18 (XTILEDATA): the OS manages the tile state.
        // SAFETY: OSXSAVE is set (checked above), so xgetbv is enabled.
        let xcr0 = unsafe { xgetbv0() };
        xcr0 >> 17 & 3 == 3 && request_tile_permission()
    })
}

/// XCR0, read with `xgetbv` (the intrinsic needs the `xsave` target feature; this does not).
///
/// # Safety
/// CPUID must report OSXSAVE.
unsafe fn xgetbv0() -> u64 {
    let (lo, hi): (u32, u32);
    asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags));
    (hi as u64) << 32 | lo as u64
}

/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: Linux refuses tile instructions
/// (SIGILL) in a process that has not asked. True if granted.
#[cfg(target_os = "linux")]
fn request_tile_permission() -> bool {
    const SYS_ARCH_PRCTL: usize = 158;
    const ARCH_REQ_XCOMP_PERM: usize = 0x1023;
    const XFEATURE_XTILEDATA: usize = 18;
    let ret: isize;
    // SAFETY: a plain system call that changes only this process's permission set; the
    // registers the syscall instruction clobbers (rcx, r11) are declared.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL as isize => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack)
        )
    };
    ret == 0
}

#[cfg(not(target_os = "linux"))]
fn request_tile_permission() -> bool {
    false
}

/// The 64-byte tile configuration (palette 1): tiles 0-3 hold 16x16 i32 sums, 4-5 16
/// activation rows of one block (16 rows of 32 bytes), 6-7 one block of 16 weight rows (8
/// rows of 64 bytes). Block j uses sums tile j % 4 and input tiles 4 + j % 2, 6 + j % 2, so
/// that the products of the next two blocks run while block j's sums are scaled.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    _reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

const _: () = assert!(std::mem::size_of::<TileConfig>() == 64);

/// A palette-1 configuration of tiles 0-7: bytes per row and rows of each.
#[cfg_attr(ferrite_amx_emulate, allow(dead_code))]
const fn tiles8(colsb: [u16; 8], rows: [u8; 8]) -> TileConfig {
    let mut c = TileConfig { palette: 1, start_row: 0, _reserved: [0; 14], colsb: [0; 16], rows: [0; 16] };
    let mut t = 0;
    while t < 8 {
        (c.colsb[t], c.rows[t]) = (colsb[t], rows[t]);
        t += 1;
    }
    c
}

#[cfg_attr(ferrite_amx_emulate, allow(dead_code))]
static CONFIG: TileConfig = tiles8([64, 64, 64, 64, 32, 32, 64, 64], [16, 16, 16, 16, 16, 16, 8, 8]);

thread_local! {
    /// The configuration this thread's tiles hold (null: none, the tiles released).
    static LOADED: std::cell::Cell<*const TileConfig> = const { std::cell::Cell::new(std::ptr::null()) };
}

/// Loads a tile configuration, unless this thread's tiles hold it already: the tiles stay
/// configured from one kernel call to the next (`ldtilecfg` and `tilerelease` around each
/// 16-row pair's call cost 2-10% of a prompt's matmuls, most with short rows: 64 x 576 x 192
/// Q4_0 ran at 227-233 GMAC/s that way, 252-259 without). Nothing else in the process uses
/// the tiles (`examples/amx_ceiling.rs` runs its own loops before any kernel call).
///
/// # Safety
/// The CPU has AMX and the permission was granted (`available()`).
#[cfg(not(ferrite_amx_emulate))]
#[inline(always)]
unsafe fn configure(config: &'static TileConfig) {
    let config = config as *const TileConfig;
    if LOADED.get() != config {
        asm!("ldtilecfg [{}]", in(reg) config, options(nostack, readonly));
        LOADED.set(config);
    }
}

/// Returns this thread's tiles to their initial state, if it configured them, so that the
/// OS need not save their 8 KiB at each switch: the pool's workers call it before they park.
pub fn release_tiles() {
    if !LOADED.get().is_null() {
        // SAFETY: the tiles were configured on this thread, so the CPU has AMX and the
        // permission was granted.
        #[cfg(not(ferrite_amx_emulate))]
        unsafe {
            asm!("tilerelease", options(nostack, nomem))
        };
        LOADED.set(std::ptr::null());
    }
}

/// Loads activation block `a` (16 rows of 32 signed bytes, back to back) and weight block
/// `b` (8 rows of 64 bytes) into input tiles `4 + c % 2` and `6 + c % 2` and multiplies them
/// into sums tile `c`, which starts from `MAGIC_SUMS` (so each lane ends as the float C + S).
///
/// # Safety
/// Tiles configured by `configure`; `a` (512 bytes) and `b` (512 bytes) readable.
#[cfg(not(ferrite_amx_emulate))]
#[inline(always)]
unsafe fn product(c: usize, a: *const u8, b: *const u8) {
    macro_rules! ops {
        ($c:literal, $a:literal, $b:literal) => {
            asm!(
                concat!("tileloadd tmm", $a, ", [{a} + {s32}*1]"),
                concat!("tileloadd tmm", $b, ", [{b} + {s64}*1]"),
                concat!("tileloadd tmm", $c, ", [{m} + {s64}*1]"),
                concat!("tdpbssd tmm", $c, ", tmm", $a, ", tmm", $b),
                a = in(reg) a, b = in(reg) b, m = in(reg) MAGIC_SUMS.0.as_ptr(), s32 = in(reg) 32usize, s64 = in(reg) 64usize,
                options(nostack, readonly)
            )
        };
    }
    match c {
        0 => ops!("0", "4", "6"),
        1 => ops!("1", "5", "7"),
        2 => ops!("2", "4", "6"),
        _ => ops!("3", "5", "7"),
    }
}

/// Stores sums tile `c` (16 rows of 16 i32) to `out`.
///
/// # Safety
/// As `product`; `out` writable for 1 KiB.
#[cfg(not(ferrite_amx_emulate))]
#[inline(always)]
unsafe fn store(c: usize, out: *mut [i32; 16]) {
    macro_rules! st {
        ($c:literal) => {
            asm!(concat!("tilestored [{o} + {s64}*1], tmm", $c), o = in(reg) out, s64 = in(reg) 64usize, options(nostack))
        };
    }
    match c {
        0 => st!("0"),
        1 => st!("1"),
        2 => st!("2"),
        _ => st!("3"),
    }
}

/// The tile instructions in plain Rust, for checking the kernel's loop, addressing and
/// scaling on a CPU without AMX (`RUSTFLAGS="--cfg ferrite_amx_emulate"`, tests only: the
/// instructions themselves are checked on a CPU that has them).
#[cfg(ferrite_amx_emulate)]
mod emulated {
    use std::cell::RefCell;
    thread_local! {
        pub(super) static SUMS: RefCell<[[[i32; 16]; 16]; 4]> = const { RefCell::new([[[0; 16]; 16]; 4]) };
    }
    pub unsafe fn configure(_: &super::TileConfig) {}
    pub unsafe fn product(c: usize, a: *const u8, b: *const u8) {
        SUMS.with_borrow_mut(|sums| {
            for i in 0..16 {
                for n in 0..16 {
                    sums[c][i][n] = super::MAGIC
                        + (0..32)
                            .map(|k| {
                                *a.add(32 * i + k) as i8 as i32
                                    * *b.add(k / 4 * 64 + 4 * n + k % 4) as i8 as i32
                            })
                            .sum::<i32>();
                }
            }
        })
    }
    pub unsafe fn store(c: usize, out: *mut [i32; 16]) {
        SUMS.with_borrow(|sums| {
            for i in 0..16 {
                *out.add(i) = sums[c][i];
            }
        })
    }
}
#[cfg(ferrite_amx_emulate)]
use emulated::{configure, product, store};

/// A tile kernel's 16x16 sums of one block, as stored from a tile.
#[repr(C, align(64))]
struct Sums([[i32; 16]; 16]);

/// Every lane of a sums tile starts from `MAGIC` (the bits of the float C = 1.5 x 2^23; see
/// `avx512::MAGIC`) instead of zero, so that after `tdpbssd` adds a sum S the lane reads as
/// the float C + S, and `scaled_sums` gives S x d with one FMA where `vcvtdq2ps` (port 0
/// only) and a multiply took two uops per row: the Q4_0 kernel 4-8% faster (`ab-pair`, one
/// thread).
#[cfg_attr(ferrite_amx_emulate, allow(dead_code))]
static MAGIC_SUMS: Sums = Sums([[MAGIC; 16]; 16]);

/// Row `r` of a sums tile that started from `MAGIC_SUMS`, times `d` (f16 values, one per
/// weight row), rounded once; `neg_cd` = `neg_magic(d)`.
#[inline(always)]
unsafe fn scaled_sums(r: &[i32; 16], d: __m512, neg_cd: __m512) -> __m512 {
    magic_scaled(_mm512_load_si512(r.as_ptr().cast()), d, neg_cd)
}

/// Chunk `c`'s 16 rows of 16 outputs, from the accumulators, stored where `out` says.
///
/// # Safety
/// As `Out16::new` (what its maker promised).
#[inline(always)]
unsafe fn store_out(out: &Out16, c: usize, acc: &[__m512; 16]) {
    let rows = out.rows_of(c);
    if rows == 16 {
        for (i, v) in acc.iter().enumerate() {
            _mm512_storeu_ps(out.row_ptr(c, i), *v);
        }
    } else {
        for (i, v) in acc.iter().enumerate().take(rows) {
            _mm512_storeu_ps(out.row_ptr(c, i), *v);
        }
    }
}

/// Asks for rows `rows` of chunk `c`'s output lines, for writing, while the chunk computes.
#[inline(always)]
fn prefetch_out(out: &Out16, c: usize, rows: std::ops::Range<usize>) {
    for i in rows {
        prefetch_write(out.row_ptr(c, i));
    }
}

/// The loop of the tile kernels, inside one `target_feature` function: for each of `chunks`
/// chunks of 16 activation rows, `nb` 32-value blocks whose A tile (16 rows of 32 bytes) is
/// at `$a(chunk, j)` and B tile (8 rows of 64 bytes) at `$b(j)`; `$scale(chunk, j, sums, acc)`
/// adds block j's sums into the 16 accumulators, and the chunk's 16 rows of 16 outputs are
/// stored through `$out` (an `Out16`), whose lines are asked for, one or two per block step,
/// while the chunk computes. The tiles are configured once for all chunks; `$next` (the next
/// call's weights) goes to L2 a share per block.
macro_rules! tile_loop {
    ($chunks:expr, $nb:expr, $a:expr, $b:expr, $scale:expr, $out:expr, $next:expr) => {{
        let (chunks, nb): (usize, usize) = ($chunks, $nb);
        let next = L2Shares::new($next, chunks * nb);
        configure(&CONFIG);
        // Each step's tile store writes its buffer whole before that step's scaling reads
        // it, so the buffers are not zeroed first (2 KiB a call: a `memset` per pair).
        let mut c = std::mem::MaybeUninit::<[Sums; 2]>::uninit();
        let c = c.as_mut_ptr() as *mut Sums;
        for chunk in 0..chunks {
            let (rows, per) = ($out.rows_of(chunk), $out.rows_of(chunk).div_ceil(nb));
            let mut acc = [_mm512_setzero_ps(); 16];
            let start = |j: usize| product(j % 4, $a(chunk, j), $b(j));
            // Two blocks ahead: while blocks j + 1 and j + 2 multiply, block j's sums are
            // stored and block j - 1's (stored one step earlier, so the loads need not wait
            // on the tile store) are scaled.
            start(0);
            if nb > 1 {
                start(1);
            }
            for j in 0..nb {
                if j + 2 < nb {
                    start(j + 2);
                }
                next.fetch(chunk * nb + j);
                prefetch_out(&$out, chunk, (j * per).min(rows)..((j + 1) * per).min(rows));
                store(j % 4, c.add(j % 2).cast());
                if j > 0 {
                    // SAFETY: written whole by step j - 1's store.
                    $scale(chunk, j - 1, &*c.add((j - 1) % 2), &mut acc);
                }
            }
            // SAFETY: as above, by the last step's store.
            $scale(chunk, nb - 1, &*c.add((nb - 1) % 2), &mut acc);
            store_out(&$out, chunk, &acc);
        }
    }};
}

/// 16 weight rows (a `Panel32` per block, values as signed bytes) against every chunk of 16
/// activation rows (`ActTile`s, chunk c's block j at `c * nb + j`, `nb` = the panels' count):
/// output r of activation row 16c + i (stored through `out`, rows past its count not) =
/// weight row r . activation row 16c + i.
///
/// # Safety
/// The CPU must have AMX-TILE, AMX-INT8 and the avx512 level's features, and the tile
/// permission granted (`available()`; reached only through dispatch).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn vec_dot_panel32x16_q8_0(p: &[Panel32], ys: &[ActTile], next: &[u8], out: Out16) {
    let nb = p.len();
    if nb == 0 || !ys.len().is_multiple_of(nb) {
        return;
    }
    let y = |chunk: usize, j: usize| &*ys.as_ptr().add(chunk * nb + j);
    let scale = |chunk: usize, j: usize, c: &Sums, acc: &mut [__m512; 16]| {
        let (d, dy) = (_mm512_load_ps((*p.as_ptr().add(j)).d.as_ptr()), &y(chunk, j).d);
        let neg_cd = neg_magic(d);
        for i in 0..16 {
            acc[i] = _mm512_fmadd_ps(scaled_sums(&c.0[i], d, neg_cd), _mm512_set1_ps(dy[i]), acc[i]);
        }
    };
    tile_loop!(
        ys.len() / nb,
        nb,
        |chunk, j| y(chunk, j).qs.as_ptr().cast::<u8>(),
        |j| p.as_ptr().add(j).cast::<u8>(),
        scale,
        out,
        next
    );
}

/// Q4_1 and Q5_1: 16 weight rows (`Panel32M`s: one block each, values 0..31, d and the
/// negated min m per row) against every chunk of 16 activation rows (`ActTileK`s from Q8_1,
/// chunk c's block j at `c * nb + j`), as `vec_dot_panel32x16_q8_0`: per block, the sums
/// times d x the activation's scale, plus m x the activation's scaled sum.
///
/// # Safety
/// As `vec_dot_panel32x16_q8_0`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn vec_dot_panel32m_x16(p: &[Panel32M], ys: &[ActTileK], next: &[u8], out: Out16) {
    let nb = p.len();
    if nb == 0 || !ys.len().is_multiple_of(nb) {
        return;
    }
    let y = |chunk: usize, j: usize| &*ys.as_ptr().add(chunk * nb + j);
    let w = |j: usize| &*p.as_ptr().add(j);
    let scale = |chunk: usize, j: usize, c: &Sums, acc: &mut [__m512; 16]| {
        let t = y(chunk, j);
        let (d, m) = (_mm512_load_ps(w(j).d.as_ptr()), _mm512_load_ps(w(j).m.as_ptr()));
        let neg_cd = neg_magic(d);
        for i in 0..16 {
            acc[i] = _mm512_fmadd_ps(scaled_sums(&c.0[i], d, neg_cd), _mm512_set1_ps(t.d[i]), acc[i]);
            acc[i] = _mm512_fmadd_ps(m, _mm512_set1_ps(t.dsum[i]), acc[i]);
        }
    };
    tile_loop!(
        ys.len() / nb,
        nb,
        |chunk, j| y(chunk, j).qs.as_ptr().cast::<u8>(),
        |j| w(j).q.as_ptr().cast::<u8>(),
        scale,
        out,
        next
    );
}

/// Q4_0's nibble values minus 8.
pub(crate) const Q4_0_BOOK: [i8; 16] = [-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7];

/// Unpacks two Q4_0x8 groups into signed panels (values -8..7).
///
/// # Safety
/// The CPU must have the avx512 level's features (reached only through dispatch).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn unpack_q4_0x16(xa: &[BlockQ4_0x8], xb: &[BlockQ4_0x8], out: &mut [Panel32]) {
    unpack_nibbles_x16(xa, xb, out, &Q4_0_BOOK)
}

/// Unpacks two IQ4_NLx8 groups (in `BlockQ4_0x8`s) into signed panels (codebook values).
///
/// # Safety
/// As `unpack_q4_0x16`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn unpack_iq4_nlx16(xa: &[BlockQ4_0x8], xb: &[BlockQ4_0x8], out: &mut [Panel32]) {
    unpack_nibbles_x16(xa, xb, out, &KVALUES_IQ4NL)
}

/// Unpacks two Q8_0x8 groups into panels: the weights as they are.
///
/// # Safety
/// As `unpack_q4_0x16`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn unpack_q8_0x16(xa: &[BlockQ8_0x8], xb: &[BlockQ8_0x8], out: &mut [Panel32]) {
    for (j, ((a, b), p)) in xa.iter().zip(xb).zip(out.iter_mut()).enumerate() {
        prefetch_pair(xa, xb, j + 4, 5);
        for k in 0..8 {
            let v = join32(a.qs.as_ptr().add(32 * k), b.qs.as_ptr().add(32 * k));
            _mm512_storeu_si512(p.q[k].as_mut_ptr() as *mut __m512i, v);
        }
        _mm512_storeu_ps(p.d.as_mut_ptr(), f16x16_pair(&a.d, &b.d));
    }
}

/// Unpacks two Q5_0x8 groups into signed panels (values -16..15).
///
/// # Safety
/// As `unpack_q4_0x16`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn unpack_q5_0x16(xa: &[BlockQ5_0x8], xb: &[BlockQ5_0x8], out: &mut [Panel32]) {
    let sixteen = _mm512_set1_epi8(16);
    for (j, ((a, b), p)) in xa.iter().zip(xb).zip(out.iter_mut()).enumerate() {
        prefetch_pair(xa, xb, j + 8, 3);
        for (k, q) in five_bit_x16([&a.qs, &b.qs], [&a.qh, &b.qh]).iter().enumerate() {
            _mm512_storeu_si512(p.q[k].as_mut_ptr() as *mut __m512i, _mm512_sub_epi8(*q, sixteen));
        }
        _mm512_storeu_ps(p.d.as_mut_ptr(), f16x16_pair(&a.d, &b.d));
    }
}

// ---- K types: whole 256-value super-blocks in the tiles ----
//
// A K-type weight is d x (its sub-block's integer scale) x q (minus dmin x the sub-block's
// min for Q4_K and Q5_K). With the integer scale folded into the weight, w = sc x q needs
// up to 13 bits, so it is held as two byte planes, w = 256 hi + lo (lo unsigned, hi signed):
// `tdpbsud` and `tdpbssd` then sum a whole super-block, 64 values per instruction, in the
// tiles, and its sums leave them once per 256 values with one float scale, instead of once
// per 32 values with a scale per sub-block (the store and the scaling, not the products,
// are what bound the 32-deep tiles). Twice the products, an eighth of the scaling.

/// The tile configuration of the super-block kernel: every tile 16 rows of 64 bytes.
/// Tiles 0-3: the (lo, hi) sums of two steps (super-block, chunk); 4-5: activation steps
/// (alternating); 6-7: the lo and hi weight planes of a step.
#[cfg_attr(ferrite_amx_emulate, allow(dead_code))]
static CONFIG_SB: TileConfig = tiles8([64; 8], [16; 8]);

/// One super-block's products into sums tiles `2 x pair` (lo) and `2 x pair + 1` (hi), zeroed
/// first: 4 steps of 64 values, activation step s at `a + 1024 s` (16 rows of 64 bytes), the
/// weights' lo plane at `w + 1024 s` and hi plane at `w + 4096 + 1024 s` (16 rows of 64
/// bytes, as `Panel32::q`).
///
/// # Safety
/// Tiles configured with `CONFIG_SB`; `a` and `w` readable for 4 KiB and 8 KiB.
#[cfg(not(ferrite_amx_emulate))]
#[inline(always)]
unsafe fn product_sb(pair: usize, a: *const u8, w: *const u8) {
    macro_rules! ops {
        ($lo:literal, $hi:literal) => {
            asm!(
                concat!("tilezero tmm", $lo),
                concat!("tilezero tmm", $hi),
                "tileloadd tmm4, [{a} + {s}*1]",
                "tileloadd tmm6, [{w} + {s}*1]",
                concat!("tdpbsud tmm", $lo, ", tmm4, tmm6"),
                "tileloadd tmm7, [{w} + {s}*1 + 4096]",
                concat!("tdpbssd tmm", $hi, ", tmm4, tmm7"),
                "tileloadd tmm5, [{a} + {s}*1 + 1024]",
                "tileloadd tmm6, [{w} + {s}*1 + 1024]",
                concat!("tdpbsud tmm", $lo, ", tmm5, tmm6"),
                "tileloadd tmm7, [{w} + {s}*1 + 5120]",
                concat!("tdpbssd tmm", $hi, ", tmm5, tmm7"),
                "tileloadd tmm4, [{a} + {s}*1 + 2048]",
                "tileloadd tmm6, [{w} + {s}*1 + 2048]",
                concat!("tdpbsud tmm", $lo, ", tmm4, tmm6"),
                "tileloadd tmm7, [{w} + {s}*1 + 6144]",
                concat!("tdpbssd tmm", $hi, ", tmm4, tmm7"),
                "tileloadd tmm5, [{a} + {s}*1 + 3072]",
                "tileloadd tmm6, [{w} + {s}*1 + 3072]",
                concat!("tdpbsud tmm", $lo, ", tmm5, tmm6"),
                "tileloadd tmm7, [{w} + {s}*1 + 7168]",
                concat!("tdpbssd tmm", $hi, ", tmm5, tmm7"),
                a = in(reg) a, w = in(reg) w, s = in(reg) 64usize,
                options(nostack, readonly)
            )
        };
    }
    if pair == 0 {
        ops!("0", "1")
    } else {
        ops!("2", "3")
    }
}

/// Two chunks' products of one super-block, weight planes loaded once for both: chunk 0's
/// (lo, hi) sums into tiles 0 and 1, chunk 1's into 2 and 3 (zeroed first), activation
/// steps at `a0` and `a1` (as `product_sb`'s `a`), the planes at `w`. Four tile loads per
/// four products instead of six.
///
/// # Safety
/// As `product_sb`, for both `a0` and `a1`.
#[cfg(not(ferrite_amx_emulate))]
#[inline(always)]
unsafe fn product_sb2(a0: *const u8, a1: *const u8, w: *const u8) {
    asm!(
        "tilezero tmm0",
        "tilezero tmm1",
        "tilezero tmm2",
        "tilezero tmm3",
        "tileloadd tmm6, [{w} + {s}*1]",
        "tileloadd tmm4, [{a0} + {s}*1]",
        "tdpbsud tmm0, tmm4, tmm6",
        "tileloadd tmm5, [{a1} + {s}*1]",
        "tdpbsud tmm2, tmm5, tmm6",
        "tileloadd tmm7, [{w} + {s}*1 + 4096]",
        "tdpbssd tmm1, tmm4, tmm7",
        "tdpbssd tmm3, tmm5, tmm7",
        "tileloadd tmm6, [{w} + {s}*1 + 1024]",
        "tileloadd tmm4, [{a0} + {s}*1 + 1024]",
        "tdpbsud tmm0, tmm4, tmm6",
        "tileloadd tmm5, [{a1} + {s}*1 + 1024]",
        "tdpbsud tmm2, tmm5, tmm6",
        "tileloadd tmm7, [{w} + {s}*1 + 5120]",
        "tdpbssd tmm1, tmm4, tmm7",
        "tdpbssd tmm3, tmm5, tmm7",
        "tileloadd tmm6, [{w} + {s}*1 + 2048]",
        "tileloadd tmm4, [{a0} + {s}*1 + 2048]",
        "tdpbsud tmm0, tmm4, tmm6",
        "tileloadd tmm5, [{a1} + {s}*1 + 2048]",
        "tdpbsud tmm2, tmm5, tmm6",
        "tileloadd tmm7, [{w} + {s}*1 + 6144]",
        "tdpbssd tmm1, tmm4, tmm7",
        "tdpbssd tmm3, tmm5, tmm7",
        "tileloadd tmm6, [{w} + {s}*1 + 3072]",
        "tileloadd tmm4, [{a0} + {s}*1 + 3072]",
        "tdpbsud tmm0, tmm4, tmm6",
        "tileloadd tmm5, [{a1} + {s}*1 + 3072]",
        "tdpbsud tmm2, tmm5, tmm6",
        "tileloadd tmm7, [{w} + {s}*1 + 7168]",
        "tdpbssd tmm1, tmm4, tmm7",
        "tdpbssd tmm3, tmm5, tmm7",
        a0 = in(reg) a0, a1 = in(reg) a1, w = in(reg) w, s = in(reg) 64usize,
        options(nostack, readonly)
    )
}

/// `product_sb2` in plain Rust (tests only).
#[cfg(ferrite_amx_emulate)]
unsafe fn product_sb2(a0: *const u8, a1: *const u8, w: *const u8) {
    product_sb(0, a0, w);
    product_sb(1, a1, w);
}

/// The super-block tile instructions in plain Rust (as `emulated`; tests only).
#[cfg(ferrite_amx_emulate)]
unsafe fn product_sb(pair: usize, a: *const u8, w: *const u8) {
    emulated::SUMS.with_borrow_mut(|sums| {
        for (plane, c) in [2 * pair, 2 * pair + 1].into_iter().enumerate() {
            for i in 0..16 {
                for n in 0..16 {
                    sums[c][i][n] = (0..256)
                        .map(|k| {
                            let (s, k) = (k / 64, k % 64);
                            let b = *w.add(4096 * plane + 1024 * s + k / 4 * 64 + 4 * n + k % 4);
                            // lo unsigned (`tdpbsud`), hi signed (`tdpbssd`).
                            let b = if plane == 0 { b as i32 } else { b as i8 as i32 };
                            *a.add(1024 * s + 64 * i + k) as i8 as i32 * b
                        })
                        .sum();
                }
            }
        }
    })
}

/// 16 weight rows (two groups of 8) of one super-block for `vec_dot_sb_x16_fused`: w = (q + OFF)
/// x sc per weight as the planes `lo` (w & 255) and `hi` (w >> 8, signed), step s (values
/// 64s..64s + 64) in rows 16s..16s + 16 of each, laid out as `Panel32::q` (so that row 8g + c
/// of a plane is bytes 4c..4c + 4 of 32-value sub-block g); per row d, and for Q4_K and Q5_K
/// dmin and the mins of sub-blocks 2k and 2k + 1 as an i16 pair (zero for the others).
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub struct PanelSB {
    lo: [[u8; 64]; 64],
    hi: [[u8; 64]; 64],
    d: [f32; 16],
    dmin: [f32; 16],
    mins: [[i16; 32]; 4],
}

const _: () = assert!(std::mem::size_of::<PanelSB>() == 8576);

/// An i32 lane per row (16 rows) as the same value in both i16 halves: the multiplier of
/// the row's 4 bytes once they are widened to i16.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn per_row_i16(sc: __m512i) -> __m512i {
    _mm512_or_si512(_mm512_and_si512(sc, _mm512_set1_epi32(0xffff)), _mm512_slli_epi32(sc, 16))
}

/// Stores values `q` (signed bytes, 4 per row of 16, as `Panel32::q`) times their row's
/// multiplier `s16` (`per_row_i16`; |q x sc| < 2^15) as the planes: lo = w & 255, hi = w >> 8.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn store_planes(q: __m512i, s16: __m512i, lo: &mut [u8; 64], hi: &mut [u8; 64]) {
    // Even and odd bytes widened to i16, multiplied, and the products' low and high bytes
    // put back in place.
    let even = _mm512_mullo_epi16(_mm512_srai_epi16(_mm512_slli_epi16(q, 8), 8), s16);
    let odd = _mm512_mullo_epi16(_mm512_srai_epi16(q, 8), s16);
    let l = _mm512_or_si512(_mm512_and_si512(even, _mm512_set1_epi16(0xff)), _mm512_slli_epi16(odd, 8));
    let h = _mm512_or_si512(_mm512_srli_epi16(even, 8), _mm512_and_si512(odd, _mm512_set1_epi16(-256)));
    _mm512_storeu_si512(lo.as_mut_ptr() as *mut __m512i, l);
    _mm512_storeu_si512(hi.as_mut_ptr() as *mut __m512i, h);
}

/// `store_planes` for unsigned values (0..31) and scales (0..63): each byte's product by
/// `vpmaddubsw` against the scale in its own byte position (`s16` as bytes: (sc, 0, sc, 0)
/// per row; shifted a byte up for the odd bytes), with no sign extension or `vpmullw`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn store_planes_u(q: __m512i, s16: __m512i, lo: &mut [u8; 64], hi: &mut [u8; 64]) {
    let even = _mm512_maddubs_epi16(q, s16);
    let odd = _mm512_maddubs_epi16(q, _mm512_slli_epi16(s16, 8));
    let l = _mm512_or_si512(_mm512_and_si512(even, _mm512_set1_epi16(0xff)), _mm512_slli_epi16(odd, 8));
    let h = _mm512_or_si512(_mm512_srli_epi16(even, 8), _mm512_and_si512(odd, _mm512_set1_epi16(-256)));
    _mm512_storeu_si512(lo.as_mut_ptr() as *mut __m512i, l);
    _mm512_storeu_si512(hi.as_mut_ptr() as *mut __m512i, h);
}

/// Unpacks two Q4_Kx8 or Q5_Kx8 groups into `PanelSB`s: sub-block g's values from the low
/// (even g) or high nibbles of its pair's quants, Q5_K's fifth bit (bit g of qh) added, times
/// the sub-block's scale; d, dmin and the mins.
///
/// # Safety
/// As `unpack_q4_0x16`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn unpack_k_sb<B: KBlockX8>(xa: &[B], xb: &[B], out: &mut [PanelSB]) {
    let (m4, bit4) = (_mm512_set1_epi8(15), _mm512_set1_epi8(0x10));
    for (j, ((a, b), p)) in xa.iter().zip(xb).zip(out.iter_mut()).enumerate() {
        // The fields once per block (as `avx512::unpack_k16`).
        let (qs, qh, sc, ms) =
            ((a.qs(), b.qs()), a.qh().zip(b.qh()), (a.scales(), b.scales()), (a.mins(), b.mins()));
        let mut mins = [_mm512_setzero_si512(); 8];
        for (g, m) in mins.iter_mut().enumerate() {
            // The next block's lines, a share per sub-block (all at once would stall these
            // loads).
            prefetch_lines(xa, xb, j + 1, 3 * g, 3);
            let s16 = per_row_i16(u8x16_pair(sc.0.as_ptr().add(8 * g), sc.1.as_ptr().add(8 * g)));
            let (shift, hshift) = (_mm_cvtsi32_si128(4 * (g % 2) as i32), _mm_cvtsi32_si128(g as i32));
            for c in 0..8 {
                let at = 256 * (g / 2) + 32 * c;
                let v = join32(qs.0.as_ptr().add(at), qs.1.as_ptr().add(at));
                let mut q = _mm512_and_si512(_mm512_srl_epi16(v, shift), m4);
                if let Some((ha, hb)) = qh {
                    let h = join32(ha.as_ptr().add(32 * c), hb.as_ptr().add(32 * c));
                    let h = _mm512_slli_epi16(_mm512_srl_epi16(h, hshift), 4);
                    q = _mm512_or_si512(q, _mm512_and_si512(h, bit4));
                }
                store_planes_u(q, s16, &mut p.lo[8 * g + c], &mut p.hi[8 * g + c]);
            }
            *m = u8x16_pair(ms.0.as_ptr().add(8 * g), ms.1.as_ptr().add(8 * g));
        }
        for (k, pair) in p.mins.iter_mut().enumerate() {
            let lo = _mm512_and_si512(mins[2 * k], _mm512_set1_epi32(0xffff));
            let v = _mm512_or_si512(lo, _mm512_slli_epi32(mins[2 * k + 1], 16));
            _mm512_storeu_si512(pair.as_mut_ptr() as *mut __m512i, v);
        }
        _mm512_store_ps(p.d.as_mut_ptr(), f16x16_pair(a.d(), b.d()));
        _mm512_store_ps(p.dmin.as_mut_ptr(), f16x16_pair(a.dmin(), b.dmin()));
    }
}

/// Unpacks two IQ4_XSx8 groups into `PanelSB`s: each sub-block's codebook values (its quants
/// are laid out as a Q4_0x8 block's) times its signed scale; d; no mins.
///
/// # Safety
/// As `unpack_q4_0x16`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn unpack_iq4_xs_sb(xa: &[BlockIQ4XSx8], xb: &[BlockIQ4XSx8], out: &mut [PanelSB]) {
    let book = _mm512_broadcast_i32x4(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i));
    let mut q = [[0u8; 64]; 8];
    for (j, ((a, b), p)) in xa.iter().zip(xb).zip(out.iter_mut()).enumerate() {
        for g in 0..8 {
            prefetch_lines(xa, xb, j + 1, 3 * g, 3);
            nibbles_x16(a.qs.as_ptr().add(128 * g), b.qs.as_ptr().add(128 * g), book, &mut q);
            let s16 = per_row_i16(i8x16_pair(
                a.scales.as_ptr().add(8 * g).cast(),
                b.scales.as_ptr().add(8 * g).cast(),
            ));
            for (c, v) in q.iter().enumerate() {
                let v = _mm512_loadu_si512(v.as_ptr() as *const __m512i);
                store_planes(v, s16, &mut p.lo[8 * g + c], &mut p.hi[8 * g + c]);
            }
        }
        _mm512_store_ps(p.d.as_mut_ptr(), f16x16_pair(&a.d, &b.d));
        _mm512_store_ps(p.dmin.as_mut_ptr(), _mm512_setzero_ps());
        p.mins = [[0; 32]; 4];
    }
}

/// Unpacks two groups of a 16-value-group type without mins (Q6_K, Q3_K) into `PanelSB`s:
/// (q + OFF) x the group's signed scale; d; no mins. 16-value group g, step t (bytes 4t..4t
/// + 4 of the group) is plane row 4g + t (as `PanelQ6K::q`).
///
/// # Safety
/// As `unpack_q4_0x16`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn unpack_g16_sb<B: Group16x16>(xa: &[B], xb: &[B], out: &mut [PanelSB]) {
    let lines = std::mem::size_of::<B>().div_ceil(64).div_ceil(16);
    let off = _mm512_set1_epi8(B::OFF as i8);
    for (j, ((a, b), p)) in xa.iter().zip(xb).zip(out.iter_mut()).enumerate() {
        let s16: [__m512i; 16] = std::array::from_fn(|g| {
            per_row_i16(i8x16_pair(a.scales().as_ptr().add(8 * g), b.scales().as_ptr().add(8 * g)))
        });
        for h in 0..2 {
            for half in 0..2 {
                for t in 0..4 {
                    prefetch_lines(xa, xb, j + 1, lines * (8 * h + 4 * half + t), lines);
                    for (k, q) in B::values16(a, b, h, 4 * half + t).into_iter().enumerate() {
                        let g = 8 * h + 2 * k + half;
                        let (lo, hi) = (&mut p.lo[4 * g + t], &mut p.hi[4 * g + t]);
                        store_planes(_mm512_add_epi8(q, off), s16[g], lo, hi);
                    }
                }
            }
        }
        _mm512_store_ps(p.d.as_mut_ptr(), f16x16_pair(a.d(), b.d()));
        _mm512_store_ps(p.dmin.as_mut_ptr(), _mm512_setzero_ps());
        p.mins = [[0; 32]; 4];
    }
}

thread_local! {
    /// The f32 sums of each chunk of 16 activation rows while `vec_dot_sb_x16_fused` runs.
    static ACC: std::cell::RefCell<Vec<[[f32; 16]; 16]>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A super-block's (lo, hi) sums, as stored from the tiles.
#[repr(C, align(64))]
struct SumsSB([Sums; 2]);

/// Stores sums tiles `2 x pair` and `2 x pair + 1` to `out`.
///
/// # Safety
/// As `product_sb`; `out` writable for 2 KiB.
#[inline(always)]
unsafe fn store_sb(pair: usize, out: *mut SumsSB) {
    let planes = out as *mut Sums;
    store(2 * pair, planes.cast());
    store(2 * pair + 1, planes.add(1).cast());
}

/// 16 weight rows, two interleaved groups as they are stored (`xa`, `xb`), against every
/// chunk of 16 activation rows (`ActTileS`s, chunk c's super-block j at `c * nb + j`, `nb`
/// = the groups' blocks): per super-block, (lo + 256 hi) x d x the activation's scale,
/// minus (`MINS`) dmin x the activation's scale x the sum of the mins times the sub-blocks'
/// activation sums. Output r of activation row 16c + i (stored through `out`) = weight row
/// r . activation row 16c + i.
///
/// Each super-block is unpacked by `unpack` into `scratch` (a `PanelSB`) right before its
/// products, so that its 8 KiB of planes are read by the tiles from L1, where the whole
/// pair's panels (68 KiB at 2048 columns) went out to L2 and came back: 3-8% on one thread,
/// 64 x 14336 x 4096 Q4_K (`examples/matmul_speed.rs`).
///
/// # Safety
/// As `vec_dot_panel32x16_q8_0`; `unpack` is safe to call on this CPU.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn vec_dot_sb_x16_fused<B, const MINS: bool>(
    xa: &[B],
    xb: &[B],
    unpack: unsafe fn(&[B], &[B], &mut [PanelSB]),
    scratch: &mut PanelSB,
    ys: &[ActTileS],
    next: &[u8],
    out: Out16,
) {
    let nb = xa.len();
    if nb == 0 || xb.len() != nb || !ys.len().is_multiple_of(nb) {
        return;
    }
    let y = |chunk: usize, j: usize| &*ys.as_ptr().add(chunk * nb + j);
    let scale = |chunk: usize, j: usize, w: &PanelSB, c: &SumsSB, acc: &mut [__m512; 16]| {
        let t = y(chunk, j);
        let (d, dmin) = (_mm512_load_ps(w.d.as_ptr()), _mm512_load_ps(w.dmin.as_ptr()));
        let mins: [__m512i; 4] =
            std::array::from_fn(|k| _mm512_load_si512(w.mins[k].as_ptr() as *const __m512i));
        for i in 0..16 {
            let lo = _mm512_load_si512(c.0[0].0[i].as_ptr() as *const __m512i);
            let hi = _mm512_load_si512(c.0[1].0[i].as_ptr() as *const __m512i);
            let mut v = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_add_epi32(lo, _mm512_slli_epi32(hi, 8))));
            if MINS {
                let mut m = _mm512_setzero_si512();
                for (k, mk) in mins.iter().enumerate() {
                    m = dpwssd(m, _mm512_set1_epi32(t.bsums[i][k]), *mk);
                }
                v = _mm512_fnmadd_ps(dmin, _mm512_cvtepi32_ps(m), v);
            }
            acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(t.d[i]), v, acc[i]);
        }
    };
    let chunks = ys.len() / nb;
    let next = L2Shares::new(next, nb * chunks.div_ceil(2));
    // Super-block by super-block, every chunk against it, so that its 8 KiB of weight planes
    // are read from L1 by all the chunks; the chunks' f32 sums wait in `ACC` (in L1 too:
    // 1 KiB per chunk).
    ACC.with_borrow_mut(|accs| {
        // Only grows (no fill per call): super-block 0 writes each chunk's sums, later ones
        // add to them.
        if accs.len() < chunks {
            accs.resize(chunks, [[0.0; 16]; 16]);
        }
        configure(&CONFIG_SB);
        // Written whole by `store_sb` before each read (not zeroed: 4 KiB a call).
        let mut c = std::mem::MaybeUninit::<[SumsSB; 2]>::uninit();
        let c = c.as_mut_ptr() as *mut SumsSB;
        // (The last super-block's sums go straight to the outputs.)
        let scale_into = |j: usize, chunk: usize, w: &PanelSB, c: &SumsSB, acc: &mut [[f32; 16]; 16]| {
            let mut v: [__m512; 16] = if j == 0 {
                [_mm512_setzero_ps(); 16]
            } else {
                std::array::from_fn(|i| _mm512_loadu_ps(acc[i].as_ptr()))
            };
            scale(chunk, j, w, c, &mut v);
            if j + 1 == nb {
                store_out(&out, chunk, &v);
                return;
            }
            for (a, v) in acc.iter_mut().zip(v) {
                _mm512_storeu_ps(a.as_mut_ptr(), v);
            }
        };
        // Two chunks at a time against the super-block's planes (loaded once for both);
        // an odd last chunk alone.
        let mut s = 0;
        for j in 0..nb {
            unpack(&xa[j..j + 1], &xb[j..j + 1], std::slice::from_mut(scratch));
            let w: &PanelSB = scratch;
            let wp = (w as *const PanelSB).cast::<u8>();
            let mut chunk = 0;
            while chunk < chunks {
                let two = chunk + 1 < chunks;
                if j + 1 == nb {
                    // The outputs of these chunks are stored at the end of this step.
                    prefetch_out(&out, chunk, 0..out.rows_of(chunk));
                    if two {
                        prefetch_out(&out, chunk + 1, 0..out.rows_of(chunk + 1));
                    }
                }
                match two {
                    true => {
                        product_sb2(y(chunk, j).qs.as_ptr().cast(), y(chunk + 1, j).qs.as_ptr().cast(), wp)
                    }
                    false => product_sb(0, y(chunk, j).qs.as_ptr().cast(), wp),
                }
                next.fetch(s);
                store_sb(0, c);
                // SAFETY: written whole by the store just before (here and below).
                scale_into(j, chunk, w, &*c, &mut accs[chunk]);
                if two {
                    store_sb(1, c.add(1));
                    scale_into(j, chunk + 1, w, &*c.add(1), &mut accs[chunk + 1]);
                }
                chunk += 1 + two as usize;
                s += 1;
            }
        }
    });
}
