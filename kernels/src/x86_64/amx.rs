//! AMX int8 tiles for prefill (Intel Sapphire Rapids and later): `tdpbssd` multiplies a tile
//! of up to 16 activation rows (32 signed bytes each: one Q8_0 block) by a tile of 16 weight
//! rows (the same block, as signed bytes) into 16x16 i32 sums in one instruction; AVX-512
//! then applies the two blocks' scales and accumulates in f32. The weights are unpacked
//! once per 16-row pair into `Panel32`s, which are already in the tile's layout: row k of a
//! block's B tile holds bytes 4k..4k+4 of each of the 16 weight rows.
//!
//! Stable Rust has no AMX intrinsics, so the tile instructions are `asm!`. The tiles live
//! outside the compiler's view: each kernel call loads its configuration, uses tiles 0-7,
//! and releases them before returning (nothing else in the process uses AMX).
//!
//! The activations are laid out once per batch as tiles (`ActTile`: one block of 16 rows in
//! 512 contiguous bytes, their scales beside), so a tile load reads 8 whole cache lines.

use super::avx512::{f16x16_pair, five_bit_x16, join32, prefetch_pair, storen, unpack_nibbles_x16, Panel32};
use crate::blocks::{BlockQ4_0x8, BlockQ5_0x8, BlockQ8_0x8, KVALUES_IQ4NL};
use crate::dispatch::ActTile;
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

#[cfg_attr(ferrite_amx_emulate, allow(dead_code))]
const CONFIG: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    _reserved: [0; 14],
    colsb: [64, 64, 64, 64, 32, 32, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 16, 16, 16, 8, 8, 0, 0, 0, 0, 0, 0, 0, 0],
};

/// Loads the tile configuration.
///
/// # Safety
/// The CPU has AMX and the permission was granted (`available()`).
#[cfg(not(ferrite_amx_emulate))]
#[inline(always)]
unsafe fn configure() {
    asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly));
}

/// Returns the tiles to their initial state (the OS then need not save them).
///
/// # Safety
/// As `configure`.
#[cfg(not(ferrite_amx_emulate))]
#[inline(always)]
unsafe fn release() {
    asm!("tilerelease", options(nostack, nomem));
}

/// Loads activation block `a` (16 rows of 32 signed bytes, back to back) and weight block
/// `b` (8 rows of 64 bytes) into input tiles `4 + c % 2` and `6 + c % 2` and multiplies them
/// into sums tile `c`, zeroed first.
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
                concat!("tilezero tmm", $c),
                concat!("tdpbssd tmm", $c, ", tmm", $a, ", tmm", $b),
                a = in(reg) a, b = in(reg) b, s32 = in(reg) 32usize, s64 = in(reg) 64usize,
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
        static SUMS: RefCell<[[[i32; 16]; 16]; 4]> = const { RefCell::new([[[0; 16]; 16]; 4]) };
    }
    pub unsafe fn configure() {}
    pub unsafe fn release() {}
    pub unsafe fn product(c: usize, a: *const u8, b: *const u8) {
        SUMS.with_borrow_mut(|sums| {
            for i in 0..16 {
                for n in 0..16 {
                    sums[c][i][n] = (0..32)
                        .map(|k| *a.add(32 * i + k) as i8 as i32 * *b.add(k / 4 * 64 + 4 * n + k % 4) as i8 as i32)
                        .sum();
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
use emulated::{configure, product, release, store};

/// 16 weight rows (a `Panel32` per block, values as signed bytes) against every chunk of 16
/// activation rows (`ActTile`s, chunk c's block j at `c * nb + j`, `nb` = the panels' count):
/// `out(c, v)` receives chunk c's products, `v[i][r]` = weight row r . activation row
/// 16c + i. The tiles are configured once for all chunks.
///
/// # Safety
/// The CPU must have AMX-TILE, AMX-INT8 and the avx512 level's features, and the tile
/// permission granted (`available()`; reached only through dispatch).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn vec_dot_panel32x16_q8_0(p: &[Panel32], ys: &[ActTile], out: &mut dyn FnMut(usize, &[[f32; 16]; 16])) {
    let nb = p.len();
    if nb == 0 || ys.len() % nb != 0 {
        return;
    }
    configure();
    #[repr(C, align(64))]
    struct Sums([[i32; 16]; 16]);
    let mut c = [Sums([[0; 16]; 16]), Sums([[0; 16]; 16])];
    for (chunk, y) in ys.chunks_exact(nb).enumerate() {
        let mut acc = [_mm512_setzero_ps(); 16];
        let start = |j: usize| product(j % 4, y.as_ptr().add(j).cast(), p.as_ptr().add(j).cast());
        let scale = |j: usize, c: &Sums, acc: &mut [__m512; 16]| {
            let (d, dy) = (_mm512_load_ps((*p.as_ptr().add(j)).d.as_ptr()), &(*y.as_ptr().add(j)).d);
            for i in 0..16 {
                let s = _mm512_cvtepi32_ps(_mm512_load_si512(c.0[i].as_ptr() as *const __m512i));
                acc[i] = _mm512_fmadd_ps(_mm512_mul_ps(d, _mm512_set1_ps(dy[i])), s, acc[i]);
            }
        };
        // Two blocks ahead: while blocks j + 1 and j + 2 multiply, block j's sums are stored
        // and block j - 1's (stored one step earlier, so the loads need not wait on the tile
        // store) are scaled.
        start(0);
        if nb > 1 {
            start(1);
        }
        for j in 0..nb {
            if j + 2 < nb {
                start(j + 2);
            }
            store(j % 4, c[j % 2].0.as_mut_ptr());
            if j > 0 {
                scale(j - 1, &c[(j - 1) % 2], &mut acc);
            }
        }
        scale(nb - 1, &c[(nb - 1) % 2], &mut acc);
        out(chunk, &storen(&acc));
    }
    release();
}

/// Q4_0's nibble values minus 8.
const Q4_0_BOOK: [i8; 16] = [-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7];

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
