//! AMX int8 tiles for prefill (Intel Sapphire Rapids and later): `tdpbssd` multiplies a tile
//! of up to 16 activation rows (32 signed bytes each: one Q8_0 block) by a tile of 16 weight
//! rows (the same block, as signed bytes) into 16x16 i32 sums in one instruction; AVX-512
//! then applies the two blocks' scales and accumulates in f32. The weights are unpacked
//! once per 16-row pair into `Panel32`s, which are already in the tile's layout: row k of a
//! block's B tile holds bytes 4k..4k+4 of each of the 16 weight rows.
//!
//! Stable Rust has no AMX intrinsics, so the tile instructions are `asm!`. The tiles live
//! outside the compiler's view: each kernel call loads its configuration, uses tiles 0-5,
//! and releases them before returning (nothing else in the process uses AMX).

use super::avx512::{f16x16_pair, five_bit_x16, join32, prefetch_pair, storen, unpack_nibbles_x16, Panel32};
use crate::blocks::{BlockQ4_0x8, BlockQ5_0x8, BlockQ8_0S, BlockQ8_0x8, KVALUES_IQ4NL};
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

/// The 64-byte tile configuration (palette 1): tiles 0-1 hold the 16x16 i32 sums (m rows),
/// 2-3 the activation rows (m rows of 32 bytes), 4-5 a block of 16 weight rows (8 rows of
/// 64 bytes). Even blocks use tiles 0, 2, 4 and odd blocks 1, 3, 5, so that one block's
/// product runs while the previous block's sums are scaled.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    _reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

const _: () = assert!(std::mem::size_of::<TileConfig>() == 64);

impl TileConfig {
    fn new(m: usize) -> TileConfig {
        let m = m as u8;
        let mut colsb = [0u16; 16];
        let mut rows = [0u8; 16];
        colsb[..6].copy_from_slice(&[64, 64, 32, 32, 64, 64]);
        rows[..6].copy_from_slice(&[m, m, m, m, 8, 8]);
        TileConfig { palette: 1, start_row: 0, _reserved: [0; 14], colsb, rows }
    }
}

/// Loads the tile configuration for m activation rows.
///
/// # Safety
/// The CPU has AMX and the permission was granted (`available()`).
#[cfg(not(ferrite_amx_emulate))]
#[inline(always)]
unsafe fn configure(m: usize) {
    let cfg = TileConfig::new(m);
    asm!("ldtilecfg [{}]", in(reg) &cfg, options(nostack, readonly));
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

/// Loads block `a` (m rows of 32 signed bytes, `stride` bytes apart) and weight block `b`
/// into tile set `T` (0 or 1) and multiplies them into its zeroed sums.
///
/// # Safety
/// Tiles configured by `configure(m)`; `a + i * stride` for i < m and `b` (512 bytes)
/// readable.
#[cfg(not(ferrite_amx_emulate))]
#[inline(always)]
unsafe fn product<const T: usize>(a: *const i8, stride: usize, b: *const u8) {
    if T == 0 {
        asm!(
            "tileloadd tmm2, [{a} + {s}*1]",
            "tileloadd tmm4, [{b} + {s64}*1]",
            "tilezero tmm0",
            "tdpbssd tmm0, tmm2, tmm4",
            a = in(reg) a, s = in(reg) stride, b = in(reg) b, s64 = in(reg) 64usize,
            options(nostack, readonly)
        );
    } else {
        asm!(
            "tileloadd tmm3, [{a} + {s}*1]",
            "tileloadd tmm5, [{b} + {s64}*1]",
            "tilezero tmm1",
            "tdpbssd tmm1, tmm3, tmm5",
            a = in(reg) a, s = in(reg) stride, b = in(reg) b, s64 = in(reg) 64usize,
            options(nostack, readonly)
        );
    }
}

/// Stores tile set `T`'s sums (m rows of 16 i32) to `c`.
///
/// # Safety
/// As `product`; `c` writable for m * 64 bytes.
#[cfg(not(ferrite_amx_emulate))]
#[inline(always)]
unsafe fn store<const T: usize>(c: *mut [i32; 16]) {
    if T == 0 {
        asm!("tilestored [{c} + {s64}*1], tmm0", c = in(reg) c, s64 = in(reg) 64usize, options(nostack));
    } else {
        asm!("tilestored [{c} + {s64}*1], tmm1", c = in(reg) c, s64 = in(reg) 64usize, options(nostack));
    }
}

/// The tile instructions in plain Rust, for checking the kernel's loop, addressing and
/// scaling on a CPU without AMX (`RUSTFLAGS="--cfg ferrite_amx_emulate"`, tests only: the
/// instructions themselves are checked on a CPU that has them).
#[cfg(ferrite_amx_emulate)]
mod emulated {
    use std::cell::RefCell;
    thread_local! {
        static TILES: RefCell<(usize, [[[i32; 16]; 16]; 2])> = const { RefCell::new((0, [[[0; 16]; 16]; 2])) };
    }
    pub unsafe fn configure(m: usize) {
        TILES.with_borrow_mut(|t| t.0 = m);
    }
    pub unsafe fn release() {
        TILES.with_borrow_mut(|t| t.0 = 0);
    }
    pub unsafe fn product<const T: usize>(a: *const i8, stride: usize, b: *const u8) {
        TILES.with_borrow_mut(|(m, c)| {
            for i in 0..*m {
                for n in 0..16 {
                    c[T][i][n] = (0..32)
                        .map(|k| {
                            let x = *a.add(i * stride + k) as i32;
                            x * *b.add(k / 4 * 64 + 4 * n + k % 4) as i8 as i32
                        })
                        .sum();
                }
            }
        })
    }
    pub unsafe fn store<const T: usize>(out: *mut [i32; 16]) {
        TILES.with_borrow(|(m, c)| {
            for i in 0..*m {
                *out.add(i) = c[T][i];
            }
        })
    }
}
#[cfg(ferrite_amx_emulate)]
use emulated::{configure, product, release, store};

/// 16 panels' worth of weight rows (a `Panel32` per block, values as signed bytes) against
/// `m` activation rows (1..=16, `y` holding them back to back, `p.len()` blocks each):
/// `out[i][r]` = weight row r . activation row i, for i < m (the rest are zero).
///
/// # Safety
/// The CPU must have AMX-TILE, AMX-INT8 and the avx512 level's features, and the tile
/// permission granted (`available()`; reached only through dispatch).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn vec_dot_panel32x16_q8_0(p: &[Panel32], y: &[BlockQ8_0S], m: usize) -> [[f32; 16]; 16] {
    let nb = p.len();
    if !(1..=16).contains(&m) || y.len() != m * nb || nb == 0 {
        return [[f32::NAN; 16]; 16];
    }
    configure(m);
    let stride = nb * std::mem::size_of::<BlockQ8_0S>();
    // Block j of activation row i's scale is at y[i * nb + j]; rows past m repeat row 0
    // (their sums are not stored, their results not returned).
    let rows: [usize; 16] = std::array::from_fn(|i| if i < m { i * nb } else { 0 });
    #[repr(C, align(64))]
    struct Sums([[i32; 16]; 16]);
    let mut c = Sums([[0; 16]; 16]);
    let mut acc = [_mm512_setzero_ps(); 16];
    let a_at = |j: usize| (*y.as_ptr().add(j)).qs.as_ptr();
    let b_at = |j: usize| p.as_ptr().add(j).cast::<u8>();
    // The sums of block j are scaled while block j + 1's product runs in the tile unit.
    let scale = |j: usize, c: &Sums, acc: &mut [__m512; 16]| {
        let d = _mm512_loadu_ps((*p.as_ptr().add(j)).d.as_ptr());
        for i in 0..16 {
            let dy = (*y.as_ptr().add(rows[i] + j)).d;
            let s = _mm512_cvtepi32_ps(_mm512_load_si512(c.0[i].as_ptr() as *const __m512i));
            acc[i] = _mm512_fmadd_ps(_mm512_mul_ps(d, _mm512_set1_ps(dy)), s, acc[i]);
        }
    };
    product::<0>(a_at(0), stride, b_at(0));
    let mut j = 0;
    while j < nb {
        if j + 1 < nb {
            product::<1>(a_at(j + 1), stride, b_at(j + 1));
        }
        store::<0>(c.0.as_mut_ptr());
        scale(j, &c, &mut acc);
        if j + 1 >= nb {
            break;
        }
        if j + 2 < nb {
            product::<0>(a_at(j + 2), stride, b_at(j + 2));
        }
        store::<1>(c.0.as_mut_ptr());
        scale(j + 1, &c, &mut acc);
        j += 2;
    }
    release();
    let mut out = storen(&acc);
    for o in out.iter_mut().skip(m) {
        *o = [0.0; 16];
    }
    out
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
