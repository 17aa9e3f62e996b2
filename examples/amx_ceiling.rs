//! What bounds the AMX kernel of the 32-value block types (Q4_0, Q5_0, Q8_0, IQ4_NL): each
//! 32-deep product of 16 activation rows by 16 weight rows has its own pair of scales, so
//! its 16x16 sums leave the tiles after every `tdpbssd` (a tile store, then 16 vector loads
//! and two FMAs a row to scale them; the sums tile is first loaded with `MAGIC`, see
//! `kernels/src/x86_64/amx.rs`). One thread, everything in L1; times the pieces of one such
//! step in a loop of independent steps, and the kernel itself on L1-resident panels.
//!
//! `cargo run --release --example amx_ceiling` (x86_64 with AMX only). Prints ns per step
//! of 16 x 16 x 32 multiply-adds and the GMAC/s that rate would give.

#[cfg(target_arch = "x86_64")]
fn main() -> anyhow::Result<()> {
    x86::run()
}

#[cfg(not(target_arch = "x86_64"))]
fn main() -> anyhow::Result<()> {
    anyhow::bail!("AMX is an x86_64 extension")
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use ferrite::kernels::dispatch::{ActTile, Out16};
    use ferrite::kernels::x86_64::amx::{available, vec_dot_panel32x16_q8_0};
    use ferrite::kernels::x86_64::avx512::Panel32;
    use std::arch::asm;
    use std::arch::x86_64::*;
    use std::time::Instant;

    /// Palette 1, tiles as the Q4_0 kernel configures them: 0-3 sums (16 x 64 bytes),
    /// 4-5 activations (16 x 32), 6-7 weights (8 x 64).
    #[repr(C, align(64))]
    struct Config([u8; 64]);

    fn config() -> Config {
        let mut c = [0u8; 64];
        c[0] = 1;
        let (colsb, rows) = ([64u16, 64, 64, 64, 32, 32, 64, 64], [16u8, 16, 16, 16, 16, 16, 8, 8]);
        for t in 0..8 {
            c[16 + 2 * t..18 + 2 * t].copy_from_slice(&colsb[t].to_le_bytes());
            c[48 + t] = rows[t];
        }
        Config(c)
    }

    #[derive(Clone)]
    #[repr(C, align(64))]
    struct Buf([u8; 16384]);

    /// `name`: ns per step of `f`, which runs `per` steps, best of 20 runs of `n` calls.
    fn time(name: &str, per: usize, mut f: impl FnMut()) -> f64 {
        let n = 20_000 / per.min(100);
        let mut best = f64::MAX;
        for _ in 0..20 {
            let t = Instant::now();
            for _ in 0..n {
                f();
            }
            best = best.min(t.elapsed().as_secs_f64() / (n * per) as f64);
        }
        let ns = best * 1e9;
        println!("{name:58} {ns:6.2} ns/step  {:5.0} GMAC/s", 8192.0 / ns);
        ns
    }

    /// Tile loads of step `t` (sums tile t % 4, inputs 4 + t % 2 and 6 + t % 2) and its product.
    macro_rules! product {
        ($c:literal, $a:literal, $b:literal, $pa:expr, $pb:expr, $pm:expr) => {
            asm!(
                concat!("tileloadd tmm", $a, ", [{a} + {s32}*1]"),
                concat!("tileloadd tmm", $b, ", [{b} + {s64}*1]"),
                concat!("tileloadd tmm", $c, ", [{m} + {s64}*1]"),
                concat!("tdpbssd tmm", $c, ", tmm", $a, ", tmm", $b),
                a = in(reg) $pa, b = in(reg) $pb, m = in(reg) $pm, s32 = in(reg) 32usize, s64 = in(reg) 64usize,
                options(nostack, readonly)
            )
        };
    }
    macro_rules! store {
        ($c:literal, $o:expr) => {
            asm!(concat!("tilestored [{o} + {s64}*1], tmm", $c), o = in(reg) $o, s64 = in(reg) 64usize, options(nostack))
        };
    }

    /// The scaling of one stored sums tile into 16 accumulators, as the kernel does it
    /// (inlined into `steps`, whose target features it needs).
    ///
    /// # Safety
    /// AVX-512F; `sums` readable for 1 KiB and 64-byte aligned, `dy` for 16 floats.
    #[inline(always)]
    unsafe fn scale(sums: *const u8, d: __m512, neg_cd: __m512, dy: *const f32, acc: &mut [__m512; 16]) {
        for (i, a) in acc.iter_mut().enumerate() {
            let s = _mm512_castsi512_ps(_mm512_load_si512(sums.add(64 * i).cast()));
            *a = _mm512_fmadd_ps(_mm512_fmadd_ps(s, d, neg_cd), _mm512_set1_ps(*dy.add(i)), *a);
        }
    }

    /// What each step does besides its tile loads, product and store.
    #[derive(PartialEq, Eq)]
    enum Scaling {
        None,
        /// The sums scaled with scales held in registers.
        Registers,
        /// The scales read from memory as the kernel reads them: the weights' 16 scales and
        /// the activations' 16 just past each 512-byte tile (`Panel32`, `ActTile`).
        Memory,
    }

    /// `n` x 4 steps two ahead, as the kernel's loop: the products of step s + 2 (A and B
    /// tiles from 18 blocks 576 bytes apart, as `ActTile`s and `Panel32`s lie), the store of
    /// step s, and the scaling of step s - 1's sums into accumulators held in registers.
    ///
    /// # Safety
    /// AMX with the tiles configured by `config()`, AVX-512F; `a` and `b` readable for 18
    /// blocks of 576 bytes, `m` for 1 KiB, `o` writable for 2 KiB, all 64-byte aligned.
    #[target_feature(enable = "avx512f")]
    unsafe fn steps(n: usize, a: *const u8, b: *const u8, m: *const u8, o: *mut u8, scaling: Scaling) -> f32 {
        let dy = [0.25f32; 16];
        let (d0, neg0) = (_mm512_set1_ps(0.5), _mm512_set1_ps(-0.5 * 12_582_912.0));
        let mut acc = [_mm512_setzero_ps(); 16];
        let mut s = 0;
        for _ in 0..n {
            for k in 0..4 {
                let (pa, pb) = (a.add(576 * ((s + 2) % 18)), b.add(576 * ((s + 2) % 18)));
                let (now, prev) = (o.add(1024 * (k % 2)), o.add(1024 * ((k + 1) % 2)));
                match k {
                    0 => {
                        product!("2", "4", "6", pa, pb, m);
                        store!("0", now)
                    }
                    1 => {
                        product!("3", "5", "7", pa, pb, m);
                        store!("1", now)
                    }
                    2 => {
                        product!("0", "4", "6", pa, pb, m);
                        store!("2", now)
                    }
                    _ => {
                        product!("1", "5", "7", pa, pb, m);
                        store!("3", now)
                    }
                }
                let t = (s + 17) % 18;
                match scaling {
                    Scaling::None => {}
                    Scaling::Registers => scale(prev, d0, neg0, dy.as_ptr(), &mut acc),
                    Scaling::Memory => {
                        let d = _mm512_load_ps(b.add(576 * t + 512).cast());
                        let neg_cd = _mm512_mul_ps(d, _mm512_set1_ps(-12_582_912.0));
                        scale(prev, d, neg_cd, a.add(576 * t + 512).cast(), &mut acc)
                    }
                }
                s += 1;
            }
        }
        acc.iter().map(|a| _mm512_reduce_add_ps(*a)).sum()
    }

    pub fn run() -> anyhow::Result<()> {
        if !available() {
            anyhow::bail!("this CPU or kernel does not allow AMX tiles");
        }
        // 18 A tiles and 18 B tiles (each 512 bytes of values and 64 of scales), the sums
        // tile's starting values (`MAGIC` in every lane), two 1 KiB sums buffers.
        let mut a = vec![Buf([1; 16384]); 1];
        let mut b = vec![Buf([1; 16384]); 1];
        for x in [&mut a[0].0, &mut b[0].0] {
            for t in 0..18 {
                for f in x[576 * t + 512..576 * t + 576].chunks_exact_mut(4) {
                    f.copy_from_slice(&0.5f32.to_le_bytes());
                }
            }
        }
        let mut m = Box::new(Buf([0; 16384]));
        for w in m.0.chunks_exact_mut(4) {
            w.copy_from_slice(&0x4B40_0000u32.to_le_bytes());
        }
        let mut o = Box::new(Buf([0; 16384]));
        let (pa, pb, pm, po) = (a[0].0.as_ptr(), b[0].0.as_ptr(), m.0.as_ptr(), o.0.as_mut_ptr());
        let mut sink = 0f32;
        println!(
            "one thread, data in L1; a step: 16 x 16 x 32 multiply-adds, one 32-value block of 16 rows by 16"
        );
        // SAFETY: `available()` granted the tiles; every pointer has 16 KiB behind it, more
        // than any tile load or store here reaches; the CPU has AVX-512F with AMX.
        unsafe {
            asm!("ldtilecfg [{}]", in(reg) &config(), options(nostack, readonly));
            time("tdpbssd alone (four independent sums tiles)", 4, || {
                asm!(
                    "tdpbssd tmm0, tmm4, tmm6",
                    "tdpbssd tmm1, tmm5, tmm7",
                    "tdpbssd tmm2, tmm4, tmm6",
                    "tdpbssd tmm3, tmm5, tmm7",
                    options(nostack, nomem)
                );
            });
            time("tile loads of a step (A 16x32, B 8x64, sums 16x64)", 1, || {
                asm!("tileloadd tmm4, [{a} + {s32}*1]", "tileloadd tmm6, [{b} + {s64}*1]",
                     "tileloadd tmm0, [{m} + {s64}*1]", a = in(reg) pa, b = in(reg) pb, m = in(reg) pm,
                     s32 = in(reg) 32usize, s64 = in(reg) 64usize, options(nostack, readonly));
            });
            time("tile store of a step's sums (16x64)", 1, || store!("0", po));
            time("loads + tdpbssd + store, two steps ahead", 400, || {
                sink += steps(100, pa, pb, pm, po, Scaling::None)
            });
            time("  + scaling the sums, scales in registers", 400, || {
                sink += steps(100, pa, pb, pm, po, Scaling::Registers)
            });
            time("  + scaling the sums, scales read beside the tiles", 400, || {
                sink += steps(100, pa, pb, pm, po, Scaling::Memory)
            });
            asm!("tilerelease", options(nostack, nomem));
        }
        // The kernel itself: 16 weight rows of 18 blocks (a 576-wide row) against 4 chunks
        // of 16 activation rows, panels and tiles in L1.
        // SAFETY: a Panel32 is bytes and floats, all zero a valid value.
        let panels: Vec<Panel32> =
            (0..18).map(|_| unsafe { std::mem::MaybeUninit::<Panel32>::zeroed().assume_init() }).collect();
        let tiles: Vec<ActTile> = (0..72).map(|_| ActTile { qs: [[1; 32]; 16], d: [0.5; 16] }).collect();
        let mut outs = vec![0f32; 64 * 16];
        // SAFETY: AMX and the avx512 level are available (checked above); `outs` holds 64
        // rows of 16 outputs.
        time("vec_dot_panel32x16_q8_0 (4 chunks x 18 blocks)", 72, || unsafe {
            vec_dot_panel32x16_q8_0(&panels, &tiles, &[], Out16::new(outs.as_mut_ptr(), 16, 64));
        });
        sink += outs[0];
        std::hint::black_box((sink, &mut o));
        Ok(())
    }
}
