//! The NEON kernel bodies, written once and instantiated twice: in `neon` (8-bit products
//! through `smull` + `sadalp`) and in `dotprod` (through `sdot`). Each module defines
//! `dot16(acc, a, b)`, adding the 16 products a[i] * b[i] into the four i32 lanes of `acc`,
//! and expands `neon_kernels!` with its target features. The two `dot16`s spread the
//! products over the lanes differently, so the bodies only ever use the sum of the lanes
//! (or all lanes times one scale): their integer sums are the scalar reference's, exactly.
//!
//! Each block type says once how its values unpack to signed bytes (`Small` for the 32-value
//! types, `Super` for the 256-value ones); one generic body per family (`small_tile`,
//! `super_tile`) then makes R weight rows times C activation rows of products: R = C = 1 is
//! the one-row kernel, R = 4, C = 4 (the 32-value types) or 2 (the others) the prefill tiles,
//! which unpack each row's values once for all the activation rows and load each activation
//! block once for all four weight rows. Decode runs
//! a task's rows through `small_rows` / `super_rows` (`Kernels::rows_decode`). Integer sums are
//! exact and each block's float step is the scalar reference's, in its order, so every kernel
//! here gives the scalar reference's result to the bit (`scripts/neon-insns.sh` counts the
//! instructions per block).

/// Expands, inside a level's module, to every NEON dot product. `$feat` is the module's
/// target-feature list; `dot16` must be defined in the calling module.
#[macro_export]
#[doc(hidden)]
macro_rules! neon_kernels {
    ($feat:literal) => {
        use $crate::blocks::*;
        use $crate::scalar::iq4_xs_scale;

        /// An f16 scale (little-endian bytes) as f32, by `fcvt` from base ARMv8 floating point.
        /// (`half`'s conversion checks the CPU for FEAT_FP16 at run time and calls out of the
        /// loop, spilling the vector registers around the call: twice per block.)
        #[inline(always)]
        fn f16(b: [u8; 2]) -> f32 {
            let bits = u16::from_le_bytes(b) as u32;
            let out: f32;
            // SAFETY: register-only conversion, no memory access; `fmov` and `fcvt` (half to
            // single precision) are in every aarch64 CPU.
            unsafe {
                std::arch::asm!("fmov {o:s}, {i:w}", "fcvt {o:s}, {o:h}",
                    i = in(reg) bits, o = lateout(vreg) out, options(pure, nomem, nostack, preserves_flags));
            }
            out
        }

        /// Four f16 scales (little-endian bytes) as f32 lanes, by one `fcvtl` (exact, as `f16`).
        #[inline(always)]
        fn f16x4(b: [[u8; 2]; 4]) -> float32x4_t {
            let [[b0, b1], [b2, b3], [b4, b5], [b6, b7]] = b;
            let h = u64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7]);
            let out: float32x4_t;
            // SAFETY: register-only conversion, no memory access; `fmov` and `fcvtl` are in
            // every aarch64 CPU.
            unsafe {
                std::arch::asm!("fmov {o:d}, {i}", "fcvtl {o:v}.4s, {o:v}.4h",
                    i = in(reg) h, o = lateout(vreg) out, options(pure, nomem, nostack, preserves_flags));
            }
            out
        }

        /// Asks for the cache line at `p` (a hint: it never faults, whatever the address).
        #[inline(always)]
        fn prefetch(p: *const u8) {
            // SAFETY: `prfm` only hints the memory system; it reads no register but `p` and
            // raises no fault on any address.
            unsafe {
                std::arch::asm!("prfm pldl1keep, [{p}]", p = in(reg) p,
                    options(nostack, preserves_flags, readonly));
            }
        }

        /// The 32 nibbles of a Q4-style block at `p` (16 bytes): (low nibbles = elements
        /// 0-15, high nibbles = elements 16-31).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn nibbles(p: *const u8) -> (uint8x16_t, uint8x16_t) {
            let b = vld1q_u8(p);
            (vandq_u8(b, vdupq_n_u8(15)), vshrq_n_u8(b, 4))
        }

        /// The 32 5-bit values of a Q5_0/Q5_1 block: nibbles as Q4, bit j of `qh` (little
        /// endian) is bit 4 of element j.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn q5_values(qs: &[u8; 16], qh: [u8; 4]) -> (int8x16_t, int8x16_t) {
            let (lo, hi) = nibbles(qs.as_ptr());
            // The four qh bytes in every word; byte k of a half takes its qh byte by one `tbl`
            // (bytes 0 and 1 for elements 0-15, 2 and 3 for 16-31) and tests bit k % 8 of it.
            let h = vreinterpretq_u8_u32(vdupq_n_u32(u32::from_le_bytes(qh)));
            let bit = vreinterpretq_u8_u64(vdupq_n_u64(0x8040_2010_0804_0201));
            let first = vcombine_u64(vcreate_u64(0), vcreate_u64(0x0101_0101_0101_0101));
            let first = vreinterpretq_u8_u64(first);
            let h_lo = vtstq_u8(vqtbl1q_u8(h, first), bit);
            let h_hi = vtstq_u8(vqtbl1q_u8(h, vaddq_u8(first, vdupq_n_u8(2))), bit);
            let sixteen = vdupq_n_u8(16);
            (
                vreinterpretq_s8_u8(vorrq_u8(lo, vandq_u8(h_lo, sixteen))),
                vreinterpretq_s8_u8(vorrq_u8(hi, vandq_u8(h_hi, sixteen))),
            )
        }

        /// The 32 IQ4 values of 16 bytes at `p`: nibbles looked up in the codebook `book`.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn iq4_values(book: int8x16_t, p: *const u8) -> (int8x16_t, int8x16_t) {
            let (lo, hi) = nibbles(p);
            (vqtbl1q_s8(book, lo), vqtbl1q_s8(book, hi))
        }

        /// A 32-value block type (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL) as `small_tile` reads
        /// it. NEON is part of every aarch64 CPU, so these need no target features of their own.
        pub(crate) trait Small: Copy {
            /// The activation block: Q8_0, or Q8_1 for the types with a minimum.
            type Act: SmallAct;
            /// Whether the block adds `m * s` (Q4_1, Q5_1: x = d * q + m).
            const MIN: bool = false;
            /// The 32 values as the scalar reference multiplies them, elements 0-15 and 16-31.
            unsafe fn values(&self) -> (int8x16_t, int8x16_t);
            fn d(&self) -> [u8; 2];
            fn m(&self) -> [u8; 2] {
                [0, 0]
            }
        }

        /// The activation side of `Small`.
        pub(crate) trait SmallAct: Copy {
            fn d(&self) -> [u8; 2];
            fn qs(&self) -> &[i8; 32];
            /// d * sum(qs) (Q8_1 only).
            fn s(&self) -> [u8; 2] {
                [0, 0]
            }
        }

        impl SmallAct for BlockQ8_0 {
            fn d(&self) -> [u8; 2] {
                self.d
            }
            fn qs(&self) -> &[i8; 32] {
                &self.qs
            }
        }

        impl SmallAct for BlockQ8_1 {
            fn d(&self) -> [u8; 2] {
                self.d
            }
            fn qs(&self) -> &[i8; 32] {
                &self.qs
            }
            fn s(&self) -> [u8; 2] {
                self.s
            }
        }

        impl Small for BlockQ4_0 {
            type Act = BlockQ8_0;
            #[inline(always)]
            unsafe fn values(&self) -> (int8x16_t, int8x16_t) {
                let (lo, hi) = nibbles(self.qs.as_ptr());
                let eight = vdupq_n_s8(8);
                (vsubq_s8(vreinterpretq_s8_u8(lo), eight), vsubq_s8(vreinterpretq_s8_u8(hi), eight))
            }
            fn d(&self) -> [u8; 2] {
                self.d
            }
        }

        impl Small for BlockQ4_1 {
            type Act = BlockQ8_1;
            const MIN: bool = true;
            #[inline(always)]
            unsafe fn values(&self) -> (int8x16_t, int8x16_t) {
                let (lo, hi) = nibbles(self.qs.as_ptr());
                (vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi))
            }
            fn d(&self) -> [u8; 2] {
                self.d
            }
            fn m(&self) -> [u8; 2] {
                self.m
            }
        }

        impl Small for BlockQ5_0 {
            type Act = BlockQ8_0;
            #[inline(always)]
            unsafe fn values(&self) -> (int8x16_t, int8x16_t) {
                let (lo, hi) = q5_values(&self.qs, self.qh);
                let sixteen = vdupq_n_s8(16);
                (vsubq_s8(lo, sixteen), vsubq_s8(hi, sixteen))
            }
            fn d(&self) -> [u8; 2] {
                self.d
            }
        }

        impl Small for BlockQ5_1 {
            type Act = BlockQ8_1;
            const MIN: bool = true;
            #[inline(always)]
            unsafe fn values(&self) -> (int8x16_t, int8x16_t) {
                q5_values(&self.qs, self.qh)
            }
            fn d(&self) -> [u8; 2] {
                self.d
            }
            fn m(&self) -> [u8; 2] {
                self.m
            }
        }

        impl Small for BlockQ8_0 {
            type Act = BlockQ8_0;
            #[inline(always)]
            unsafe fn values(&self) -> (int8x16_t, int8x16_t) {
                (vld1q_s8(self.qs.as_ptr()), vld1q_s8(self.qs.as_ptr().add(16)))
            }
            fn d(&self) -> [u8; 2] {
                self.d
            }
        }

        impl Small for BlockIQ4NL {
            type Act = BlockQ8_0;
            /// Q4_0's nibble layout, values from the 16-entry codebook (`tbl`).
            #[inline(always)]
            unsafe fn values(&self) -> (int8x16_t, int8x16_t) {
                iq4_values(vld1q_s8(KVALUES_IQ4NL.as_ptr()), self.qs.as_ptr())
            }
            fn d(&self) -> [u8; 2] {
                self.d
            }
        }

        /// R (1 or 4) weight rows of a 32-value type against C activation rows: each block's
        /// values are unpacked once per row and each activation block loaded once, for all
        /// R x C products. A block's integer sums go to one lane per row (pairwise adds), then
        /// its float step runs four rows at a time as the scalar reference runs it, product by
        /// product (s * d_x * d_y, + m * s_y, added to the sum; no fused multiply-adds): every
        /// output is the scalar reference's to the bit, at every R and C.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn small_tile<W: Small, const R: usize, const C: usize>(
            x: [&[W]; R],
            y: [&[W::Act]; C],
        ) -> [[f32; R]; C] {
            const { assert!(R == 1 || R == 4) };
            let n = y[0].len();
            if x.iter().any(|r| r.len() != n) || y.iter().any(|c| c.len() != n) {
                return [[f32::NAN; R]; C];
            }
            // Lane r of acc[c]: row r against activation row c so far (one[c] if R = 1).
            let (mut acc, mut one) = ([vdupq_n_f32(0.0); C], [0f32; C]);
            for j in 0..n {
                let mut ya = [(vdupq_n_s8(0), vdupq_n_s8(0)); C];
                // SAFETY: j < n, the length of every row (checked above).
                let mut b: [&W::Act; C] = [unsafe { y[0].get_unchecked(j) }; C];
                for c in 0..C {
                    // SAFETY: j < n, the length of every row (checked above).
                    b[c] = unsafe { y[c].get_unchecked(j) };
                    ya[c] = (vld1q_s8(b[c].qs().as_ptr()), vld1q_s8(b[c].qs().as_ptr().add(16)));
                }
                // The rows' scales (and minimums) as f16 bytes, converted below.
                let (mut dx, mut m) = ([[0u8; 2]; 4], [[0u8; 2]; 4]);
                let mut s = [[vdupq_n_s32(0); 4]; C];
                for r in 0..R {
                    // SAFETY: as above.
                    let a = unsafe { x[r].get_unchecked(j) };
                    let q = a.values();
                    (dx[r], m[r]) = (a.d(), a.m());
                    for c in 0..C {
                        s[c][r] = dot16(dot16(vdupq_n_s32(0), q.0, ya[c].0), q.1, ya[c].1);
                    }
                }
                if R == 1 {
                    // One row: the same steps in scalar registers.
                    for c in 0..C {
                        let mut v = vaddvq_s32(s[c][0]) as f32 * f16(dx[0]) * f16(b[c].d());
                        if W::MIN {
                            v += f16(m[0]) * f16(b[c].s());
                        }
                        one[c] += v;
                    }
                    continue;
                }
                let (dx, m) = (f16x4(dx), f16x4(m));
                for c in 0..C {
                    let t = vpaddq_s32(vpaddq_s32(s[c][0], s[c][1]), vpaddq_s32(s[c][2], s[c][3]));
                    let mut v = vmulq_n_f32(vmulq_f32(vcvtq_f32_s32(t), dx), f16(b[c].d()));
                    if W::MIN {
                        v = vaddq_f32(v, vmulq_n_f32(m, f16(b[c].s())));
                    }
                    acc[c] = vaddq_f32(acc[c], v);
                }
            }
            let mut out = [[0f32; R]; C];
            for c in 0..C {
                if R == 1 {
                    out[c][0] = one[c];
                    continue;
                }
                let mut lanes = [0f32; 4];
                vst1q_f32(lanes.as_mut_ptr(), acc[c]);
                out[c].copy_from_slice(&lanes[..R]);
            }
            out
        }

        /// Decode over many rows in the file's layout (`Kernels::rows_decode`): each row of
        /// `w` (`y.len()` blocks) against `y`, into `out`, to the bit as the scalar reference,
        /// with the activation's scales converted once per call instead of once per row, and
        /// no call per row.
        ///
        /// # Safety
        /// The CPU must have this level's target features; `w` holds `out.len()` rows of
        /// `y.len()` blocks, and `y.len()` is at most `ROWS_MAX_BLOCKS`.
        #[target_feature(enable = $feat)]
        pub(crate) unsafe fn small_rows<W: Small>(w: &[W], y: &[W::Act], out: &mut [f32]) {
            let nb = y.len();
            // Written where read (j < nb) rather than zeroed: 2-4 KiB a call.
            let mut dy = [std::mem::MaybeUninit::<f32>::uninit(); super::ROWS_MAX_BLOCKS];
            let mut sy = [std::mem::MaybeUninit::<f32>::uninit(); super::ROWS_MAX_BLOCKS];
            for (j, b) in y.iter().enumerate() {
                dy[j].write(f16(b.d()));
                if W::MIN {
                    sy[j].write(f16(b.s()));
                }
            }
            // Four rows at a time: the activation block loaded once for the four, their
            // integer sums paired into one register and the float step run for the four at
            // once, in the scalar order (as `small_tile` with R = 4). Each row's bytes are asked
            // for `PREFETCH` ahead: the four rows are four streams, which a hardware prefetcher
            // may not follow over short rows (the x86 levels' four-row kernels lost to their
            // one-row kernels on SmolLM2's 576-wide rows).
            const PREFETCH: usize = 512;
            let mut r = 0;
            while r + 4 <= out.len() {
                let rows = [r, r + 1, r + 2, r + 3].map(|k| w.as_ptr().add(k * nb));
                let mut acc = vdupq_n_f32(0.0);
                for (j, b) in y.iter().enumerate() {
                    let p = b.qs().as_ptr();
                    let (y0, y1) = (vld1q_s8(p), vld1q_s8(p.add(16)));
                    let a = [0, 1, 2, 3].map(|k| &*rows[k].add(j));
                    if j % 2 == 0 {
                        for a in a {
                            prefetch((a as *const W as *const u8).wrapping_add(PREFETCH));
                        }
                    }
                    let mut s = [vdupq_n_s32(0); 4];
                    for k in 0..4 {
                        let q = a[k].values();
                        s[k] = dot16(dot16(vdupq_n_s32(0), q.0, y0), q.1, y1);
                    }
                    let t = vpaddq_s32(vpaddq_s32(s[0], s[1]), vpaddq_s32(s[2], s[3]));
                    // SAFETY: j < nb <= ROWS_MAX_BLOCKS, and entries 0..nb were written above.
                    let dyj = unsafe { dy.get_unchecked(j).assume_init() };
                    let dx = f16x4([a[0].d(), a[1].d(), a[2].d(), a[3].d()]);
                    let mut v = vmulq_n_f32(vmulq_f32(vcvtq_f32_s32(t), dx), dyj);
                    if W::MIN {
                        // SAFETY: as above (sy is written when W::MIN).
                        let syj = unsafe { sy.get_unchecked(j).assume_init() };
                        let m = f16x4([a[0].m(), a[1].m(), a[2].m(), a[3].m()]);
                        v = vaddq_f32(v, vmulq_n_f32(m, syj));
                    }
                    acc = vaddq_f32(acc, v);
                }
                vst1q_f32(out.as_mut_ptr().add(r), acc);
                r += 4;
            }
            for (row, o) in w[r * nb..].chunks_exact(nb).zip(&mut out[r..]) {
                let mut sum = 0f32;
                for (j, (a, b)) in row.iter().zip(y).enumerate() {
                    let q = a.values();
                    let p = b.qs().as_ptr();
                    let s = dot16(dot16(vdupq_n_s32(0), q.0, vld1q_s8(p)), q.1, vld1q_s8(p.add(16)));
                    // SAFETY: j < nb <= ROWS_MAX_BLOCKS, and entries 0..nb were written above.
                    let dyj = unsafe { dy.get_unchecked(j).assume_init() };
                    let mut v = vaddvq_s32(s) as f32 * f16(a.d()) * dyj;
                    if W::MIN {
                        // SAFETY: as above (sy is written when W::MIN).
                        v += f16(a.m()) * unsafe { sy.get_unchecked(j).assume_init() };
                    }
                    sum += v;
                }
                *o = sum;
            }
        }

        /// A 256-value super-block type (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS) as
        /// `super_tile` reads it: values 64 at a time, an integer scale per group (8 groups of
        /// 32 if `PAIRED`, else 16 of 16), and for the types with minimums their per-16 factors
        /// against the activation's bsums:
        ///   sum = dy * (d * sum_g sc_g * sum(q*qy) - dmin * sum_i mins_i * bsum_i)
        pub(crate) trait Super: Copy {
            const PAIRED: bool;
            const MINS: bool = false;
            /// Values 64K..64K + 64 as signed bytes (offsets such as Q6_K's -32 applied), in
            /// order, 16 per register.
            unsafe fn values<const K: usize>(&self) -> [int8x16_t; 4];
            /// The groups' scales (the first 8 if `PAIRED`) and the minimums per 16 values.
            fn scales(&self) -> ([i32; 16], [i16; 16]);
            fn d(&self) -> [u8; 2];
            fn dmin(&self) -> [u8; 2] {
                [0, 0]
            }
        }

        /// Groups of 32 with 6-bit scales and minimums packed in 12 bytes (Q4_K, Q5_K), all
        /// unpacked at once (`k_scale_min`, one group at a time, took a third of the K
        /// kernels' instructions): bytes 0-3 hold scales 0-3 and bytes 4-7 minimums 0-3 in
        /// their low 6 bits; scales and minimums 4-7 take their low 4 bits from the nibbles of
        /// bytes 8-11 and their top 2 bits from the top bits of bytes 0-3 and 4-7.
        #[inline(always)]
        fn k_scales(packed: &[u8; 12]) -> ([i32; 16], [i16; 16]) {
            let (mut sc, mut mins) = ([0i32; 16], [0i16; 16]);
            // SAFETY: NEON is in every aarch64 CPU; the loads read the 12 bytes of `packed`
            // (as 8 and 4) and the stores write within `sc` and `mins`.
            unsafe {
                let a = vld1_u8(packed.as_ptr());
                let b = u32::from_le_bytes([packed[8], packed[9], packed[10], packed[11]]);
                let b = vreinterpret_u8_u32(vdup_n_u32(b));
                // (scales 0-3, minimums 0-3), then (scales 4-7, minimums 4-7).
                let low = vand_u8(a, vdup_n_u8(63));
                // The nibbles of bytes 8-11: low ones for the scales, high ones for the minimums.
                let right = vreinterpret_s8_u64(vdup_n_u64(0xfcfc_fcfc_0000_0000));
                let nib = vand_u8(vshl_u8(b, right), vdup_n_u8(15));
                let high = vorr_u8(nib, vshl_n_u8(vshr_n_u8(a, 6), 4));
                let (low, high) = (vreinterpret_u32_u8(low), vreinterpret_u32_u8(high));
                let s8 = vreinterpret_u8_u32(vzip1_u32(low, high));
                let m8 = vreinterpret_u8_u32(vzip2_u32(low, high));
                let s16 = vmovl_u8(s8);
                vst1q_s32(sc.as_mut_ptr(), vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(s16))));
                vst1q_s32(sc.as_mut_ptr().add(4), vreinterpretq_s32_u32(vmovl_high_u16(s16)));
                // Minimum g serves bsums 2g and 2g + 1.
                let m16 = vzip_u8(m8, m8);
                vst1q_s16(mins.as_mut_ptr(), vreinterpretq_s16_u16(vmovl_u8(m16.0)));
                vst1q_s16(mins.as_mut_ptr().add(8), vreinterpretq_s16_u16(vmovl_u8(m16.1)));
            }
            (sc, mins)
        }

        impl Super for BlockQ4K {
            const PAIRED: bool = true;
            const MINS: bool = true;
            /// Bytes 32K..32K + 32: low nibbles are group 2K, high nibbles group 2K + 1.
            #[inline(always)]
            unsafe fn values<const K: usize>(&self) -> [int8x16_t; 4] {
                let (lo0, hi0) = nibbles(self.qs.as_ptr().add(32 * K));
                let (lo1, hi1) = nibbles(self.qs.as_ptr().add(32 * K + 16));
                let s = |v| vreinterpretq_s8_u8(v);
                [s(lo0), s(lo1), s(hi0), s(hi1)]
            }
            #[inline(always)]
            fn scales(&self) -> ([i32; 16], [i16; 16]) {
                k_scales(&self.scales)
            }
            fn d(&self) -> [u8; 2] {
                self.d
            }
            fn dmin(&self) -> [u8; 2] {
                self.dmin
            }
        }

        impl Super for BlockQ5K {
            const PAIRED: bool = true;
            const MINS: bool = true;
            /// Q4_K's nibbles plus the fifth bit of group g in bit g of qh[l].
            #[inline(always)]
            unsafe fn values<const K: usize>(&self) -> [int8x16_t; 4] {
                let (lo0, hi0) = nibbles(self.qs.as_ptr().add(32 * K));
                let (lo1, hi1) = nibbles(self.qs.as_ptr().add(32 * K + 16));
                let h = [vld1q_u8(self.qh.as_ptr()), vld1q_u8(self.qh.as_ptr().add(16))];
                let sixteen = vdupq_n_u8(16);
                let (b0, b1) = (vdupq_n_u8(1 << (2 * K)), vdupq_n_u8(2 << (2 * K)));
                let fifth = |v: uint8x16_t, h: uint8x16_t, bit: uint8x16_t| {
                    vreinterpretq_s8_u8(vorrq_u8(v, vandq_u8(vtstq_u8(h, bit), sixteen)))
                };
                [fifth(lo0, h[0], b0), fifth(lo1, h[1], b0), fifth(hi0, h[0], b1), fifth(hi1, h[1], b1)]
            }
            #[inline(always)]
            fn scales(&self) -> ([i32; 16], [i16; 16]) {
                k_scales(&self.scales)
            }
            fn d(&self) -> [u8; 2] {
                self.d
            }
            fn dmin(&self) -> [u8; 2] {
                self.dmin
            }
        }

        impl Super for BlockQ6K {
            const PAIRED: bool = false;
            /// Half h = K / 2 holds quarters 0-3 of 32 values; K even takes quarters 0 and 1
            /// (low nibbles of ql[64h..64h + 64], qh bits 0-3), K odd quarters 2 and 3 (high
            /// nibbles, qh bits 4-7). Offset by -32.
            #[inline(always)]
            unsafe fn values<const K: usize>(&self) -> [int8x16_t; 4] {
                let (h, high) = (K / 2, K % 2 == 1);
                let (m4, m2, off) = (vdupq_n_u8(15), vdupq_n_u8(3), vdupq_n_s8(32));
                let mut out = [vdupq_n_s8(0); 4];
                for (i, o) in out.iter_mut().enumerate() {
                    // Quarter 2 * (K % 2) + i / 2, elements 16 * (i % 2) .. + 16 of it.
                    let (quarter, part) = (2 * (K % 2) + i / 2, i % 2);
                    let ql = vld1q_u8(self.ql.as_ptr().add(64 * h + 32 * (quarter % 2) + 16 * part));
                    let qh = vld1q_u8(self.qh.as_ptr().add(32 * h + 16 * part));
                    let low = if high { vshrq_n_u8(ql, 4) } else { vandq_u8(ql, m4) };
                    let top = vandq_u8(vshlq_u8(qh, vdupq_n_s8(-2 * quarter as i8)), m2);
                    *o = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(low, vshlq_n_u8(top, 4))), off);
                }
                out
            }
            #[inline(always)]
            fn scales(&self) -> ([i32; 16], [i16; 16]) {
                let mut sc = [0i32; 16];
                for (o, &s) in sc.iter_mut().zip(&self.scales) {
                    *o = s as i32;
                }
                (sc, [0; 16])
            }
            fn d(&self) -> [u8; 2] {
                self.d
            }
        }

        /// Q2_K's and Q3_K's 2-bit fields: half h = K / 2 holds quarters j = 0..4 at bits
        /// 2j..2j + 2 of qs[32h..32h + 32]; K takes quarters 2 * (K % 2) and the next, each
        /// 32 values as two groups of 16. Register i of them, and its group's index.
        #[inline(always)]
        unsafe fn two_bits<const K: usize>(qs: &[u8; 64], i: usize) -> (uint8x16_t, usize) {
            let (h, quarter, part) = (K / 2, 2 * (K % 2) + i / 2, i % 2);
            let q = vld1q_u8(qs.as_ptr().add(32 * h + 16 * part));
            (vandq_u8(vshlq_u8(q, vdupq_n_s8(-2 * quarter as i8)), vdupq_n_u8(3)), 4 * h + quarter)
        }

        impl Super for BlockQ2K {
            const PAIRED: bool = false;
            const MINS: bool = true;
            #[inline(always)]
            unsafe fn values<const K: usize>(&self) -> [int8x16_t; 4] {
                let mut out = [vdupq_n_s8(0); 4];
                for (i, o) in out.iter_mut().enumerate() {
                    *o = vreinterpretq_s8_u8(two_bits::<K>(&self.qs, i).0);
                }
                out
            }
            /// Low nibbles the scales, high nibbles the minimums.
            #[inline(always)]
            fn scales(&self) -> ([i32; 16], [i16; 16]) {
                let (mut sc, mut mins) = ([0i32; 16], [0i16; 16]);
                for (g, &s) in self.scales.iter().enumerate() {
                    (sc[g], mins[g]) = ((s & 15) as i32, (s >> 4) as i16);
                }
                (sc, mins)
            }
            fn d(&self) -> [u8; 2] {
                self.d
            }
            fn dmin(&self) -> [u8; 2] {
                self.dmin
            }
        }

        impl Super for BlockQ3K {
            const PAIRED: bool = false;
            /// Q2_K's two bits; bit 4 * half + quarter of hmask byte l (16 * part + l) is the
            /// third bit, and a cleared one subtracts 4.
            #[inline(always)]
            unsafe fn values<const K: usize>(&self) -> [int8x16_t; 4] {
                let hm = [vld1q_u8(self.hmask.as_ptr()), vld1q_u8(self.hmask.as_ptr().add(16))];
                let mut out = [vdupq_n_s8(0); 4];
                for (i, o) in out.iter_mut().enumerate() {
                    let (low, bit) = two_bits::<K>(&self.qs, i);
                    let sub = vbicq_u8(vdupq_n_u8(4), vtstq_u8(hm[i % 2], vdupq_n_u8(1 << bit)));
                    *o = vsubq_s8(vreinterpretq_s8_u8(low), vreinterpretq_s8_u8(sub));
                }
                out
            }
            /// The 16 6-bit scales - 32: group j's low 4 bits are nibble j / 8 of byte j % 8,
            /// its high 2 bits bits 2(j / 4).. of byte 8 + j % 4. Unpacked all at once (the
            /// scalar unpacking took a third of the kernel's instructions).
            #[inline(always)]
            fn scales(&self) -> ([i32; 16], [i16; 16]) {
                let mut sc = [0i32; 16];
                // SAFETY: NEON is in every aarch64 CPU; the loads read the 8 and 16 bytes of
                // `s` and of the shift table, the stores write the 16 i32 of `sc`.
                unsafe {
                    let s = &self.scales;
                    let low8 = vld1_u8(s.as_ptr());
                    let low = vcombine_u8(vand_u8(low8, vdup_n_u8(15)), vshr_n_u8(low8, 4));
                    // Bytes 8..12 repeated four times, shifted right by 0, 2, 4, 6 per four lanes.
                    let top = u32::from_le_bytes([s[8], s[9], s[10], s[11]]);
                    let top = vreinterpretq_u8_u32(vdupq_n_u32(top));
                    let shifts = [0u32, 0xfefe_fefe, 0xfcfc_fcfc, 0xfafa_fafa];
                    let shifts = vreinterpretq_s8_u32(vld1q_u32(shifts.as_ptr()));
                    let top = vandq_u8(vshlq_u8(top, shifts), vdupq_n_u8(3));
                    let v = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(low, vshlq_n_u8(top, 4))), vdupq_n_s8(32));
                    let (w0, w1) = (vmovl_s8(vget_low_s8(v)), vmovl_high_s8(v));
                    vst1q_s32(sc.as_mut_ptr(), vmovl_s16(vget_low_s16(w0)));
                    vst1q_s32(sc.as_mut_ptr().add(4), vmovl_high_s16(w0));
                    vst1q_s32(sc.as_mut_ptr().add(8), vmovl_s16(vget_low_s16(w1)));
                    vst1q_s32(sc.as_mut_ptr().add(12), vmovl_high_s16(w1));
                }
                (sc, [0; 16])
            }
            fn d(&self) -> [u8; 2] {
                self.d
            }
        }

        impl Super for BlockIQ4XS {
            const PAIRED: bool = true;
            /// Group g: 16 bytes at 16g as IQ4_NL's nibbles (low: values 0-15, high: 16-31).
            #[inline(always)]
            unsafe fn values<const K: usize>(&self) -> [int8x16_t; 4] {
                let book = vld1q_s8(KVALUES_IQ4NL.as_ptr());
                let (a, b) = iq4_values(book, self.qs.as_ptr().add(32 * K));
                let (c, d) = iq4_values(book, self.qs.as_ptr().add(32 * K + 16));
                [a, b, c, d]
            }
            #[inline(always)]
            fn scales(&self) -> ([i32; 16], [i16; 16]) {
                let mut sc = [0i32; 16];
                for (g, s) in sc.iter_mut().take(8).enumerate() {
                    *s = iq4_xs_scale(self, g);
                }
                (sc, [0; 16])
            }
            fn d(&self) -> [u8; 2] {
                self.d
            }
        }

        /// R weight rows of a super-block type against C activation rows (Q8_K): per 64
        /// values, the activations are loaded once and each row's values unpacked once for
        /// all R x C products; the scales are unpacked once per row and super-block.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn super_tile<W: Super, const R: usize, const C: usize>(
            x: [&[W]; R],
            y: [&[BlockQ8K]; C],
        ) -> [[f32; R]; C] {
            let n = y[0].len();
            if x.iter().any(|r| r.len() != n) || y.iter().any(|c| c.len() != n) {
                return [[f32::NAN; R]; C];
            }
            let mut sum = [[0f32; R]; C];
            for j in 0..n {
                let mut sc = [[0i32; 16]; R];
                let mut mins = [[0i16; 16]; R];
                for r in 0..R {
                    // SAFETY: j < n, the length of every row (checked above).
                    (sc[r], mins[r]) = unsafe { x[r].get_unchecked(j) }.scales();
                }
                let mut sq = [[vdupq_n_s32(0); R]; C];
                // Values 64k..64k + 64 of every row against every activation row; k a
                // constant, so that each type's unpacking compiles to fixed shifts and masks.
                macro_rules! quarter {
                    ($k:literal) => {
                        let k: usize = $k;
                        let mut ya = [[vdupq_n_s8(0); 4]; C];
                        for c in 0..C {
                            // SAFETY: as above.
                            let p = unsafe { y[c].get_unchecked(j) }.qs.as_ptr().add(64 * k);
                            for (i, v) in ya[c].iter_mut().enumerate() {
                                *v = vld1q_s8(p.add(16 * i));
                            }
                        }
                        for r in 0..R {
                            // SAFETY: as above.
                            let q = unsafe { x[r].get_unchecked(j) }.values::<$k>();
                            for c in 0..C {
                                if W::PAIRED {
                                    let s0 = dot16(dot16(vdupq_n_s32(0), q[0], ya[c][0]), q[1], ya[c][1]);
                                    let s1 = dot16(dot16(vdupq_n_s32(0), q[2], ya[c][2]), q[3], ya[c][3]);
                                    sq[c][r] = vmlaq_n_s32(sq[c][r], s0, sc[r][2 * k]);
                                    sq[c][r] = vmlaq_n_s32(sq[c][r], s1, sc[r][2 * k + 1]);
                                } else {
                                    for i in 0..4 {
                                        let s = dot16(vdupq_n_s32(0), q[i], ya[c][i]);
                                        sq[c][r] = vmlaq_n_s32(sq[c][r], s, sc[r][4 * k + i]);
                                    }
                                }
                            }
                        }
                    };
                }
                quarter!(0);
                quarter!(1);
                quarter!(2);
                quarter!(3);
                for c in 0..C {
                    // SAFETY: as above.
                    let b = unsafe { y[c].get_unchecked(j) };
                    for r in 0..R {
                        // SAFETY: as above.
                        let a = unsafe { x[r].get_unchecked(j) };
                        let total = vaddvq_s32(sq[c][r]) as f32;
                        if W::MINS {
                            let (m0, m1) = (vld1q_s16(mins[r].as_ptr()), vld1q_s16(mins[r].as_ptr().add(8)));
                            let (b0, b1) = (vld1q_s16(b.bsums.as_ptr()), vld1q_s16(b.bsums.as_ptr().add(8)));
                            let sm = vmlal_high_s16(vmull_s16(vget_low_s16(m0), vget_low_s16(b0)), m0, b0);
                            let sm = vmlal_s16(sm, vget_low_s16(m1), vget_low_s16(b1));
                            let sm = vmlal_high_s16(sm, m1, b1);
                            sum[c][r] += b.d * (f16(a.d()) * total - f16(a.dmin()) * vaddvq_s32(sm) as f32);
                        } else {
                            sum[c][r] += b.d * f16(a.d()) * total;
                        }
                    }
                }
            }
            sum
        }

        /// The one-row, 4x2 and 4x4 kernels of a 32-value type.
        macro_rules! small_kernels {
            ($one:ident, $tile:ident, $tile44:ident, $W:ty, $A:ty) => {
                /// # Safety
                /// The CPU must have this level's target features (reached only through dispatch).
                #[target_feature(enable = $feat)]
                pub unsafe fn $one(x: &[$W], y: &[$A]) -> f32 {
                    small_tile::<$W, 1, 1>([x], [y])[0][0]
                }

                /// # Safety
                /// The CPU must have this level's target features (reached only through dispatch).
                #[target_feature(enable = $feat)]
                pub unsafe fn $tile(x: [&[$W]; 4], y: [&[$A]; 2]) -> [[f32; 4]; 2] {
                    small_tile::<$W, 4, 2>(x, y)
                }

                /// # Safety
                /// The CPU must have this level's target features (reached only through dispatch).
                #[target_feature(enable = $feat)]
                pub unsafe fn $tile44(x: [&[$W]; 4], y: [&[$A]; 4]) -> [[f32; 4]; 4] {
                    small_tile::<$W, 4, 4>(x, y)
                }
            };
        }

        small_kernels!(vec_dot_q4_0_q8_0, vec_dot4x2_q4_0_q8_0, vec_dot4x4_q4_0_q8_0, BlockQ4_0, BlockQ8_0);
        small_kernels!(vec_dot_q4_1_q8_1, vec_dot4x2_q4_1_q8_1, vec_dot4x4_q4_1_q8_1, BlockQ4_1, BlockQ8_1);
        small_kernels!(vec_dot_q5_0_q8_0, vec_dot4x2_q5_0_q8_0, vec_dot4x4_q5_0_q8_0, BlockQ5_0, BlockQ8_0);
        small_kernels!(vec_dot_q5_1_q8_1, vec_dot4x2_q5_1_q8_1, vec_dot4x4_q5_1_q8_1, BlockQ5_1, BlockQ8_1);
        small_kernels!(vec_dot_q8_0_q8_0, vec_dot4x2_q8_0_q8_0, vec_dot4x4_q8_0_q8_0, BlockQ8_0, BlockQ8_0);
        small_kernels!(vec_dot_iq4_nl_q8_0, vec_dot4x2_iq4_nl_q8_0, vec_dot4x4_iq4_nl_q8_0, BlockIQ4NL, BlockQ8_0);

        /// Decode over many rows of a super-block type: `super_tile`'s one-row kernel per row
        /// of `w` (`y.len()` blocks each), without a call per row.
        ///
        /// # Safety
        /// The CPU must have this level's target features; `w` holds `out.len()` rows of
        /// `y.len()` blocks.
        #[target_feature(enable = $feat)]
        pub(crate) unsafe fn super_rows<W: Super>(w: &[W], y: &[BlockQ8K], out: &mut [f32]) {
            for (row, o) in w.chunks_exact(y.len()).zip(out) {
                *o = super_tile::<W, 1, 1>([row], [y])[0][0];
            }
        }

        /// The one-row and 4x2 kernels of a super-block type.
        macro_rules! super_kernels {
            ($one:ident, $tile:ident, $W:ty) => {
                /// # Safety
                /// The CPU must have this level's target features (reached only through dispatch).
                #[target_feature(enable = $feat)]
                pub unsafe fn $one(x: &[$W], y: &[BlockQ8K]) -> f32 {
                    super_tile::<$W, 1, 1>([x], [y])[0][0]
                }

                /// # Safety
                /// The CPU must have this level's target features (reached only through dispatch).
                #[target_feature(enable = $feat)]
                pub unsafe fn $tile(x: [&[$W]; 4], y: [&[BlockQ8K]; 2]) -> [[f32; 4]; 2] {
                    super_tile::<$W, 4, 2>(x, y)
                }
            };
        }

        super_kernels!(vec_dot_q2_k_q8_k, vec_dot4x2_q2_k_q8_k, BlockQ2K);
        super_kernels!(vec_dot_q3_k_q8_k, vec_dot4x2_q3_k_q8_k, BlockQ3K);
        super_kernels!(vec_dot_q4_k_q8_k, vec_dot4x2_q4_k_q8_k, BlockQ4K);
        super_kernels!(vec_dot_q5_k_q8_k, vec_dot4x2_q5_k_q8_k, BlockQ5K);
        super_kernels!(vec_dot_q6_k_q8_k, vec_dot4x2_q6_k_q8_k, BlockQ6K);
        super_kernels!(vec_dot_iq4_xs_q8_k, vec_dot4x2_iq4_xs_q8_k, BlockIQ4XS);

        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_f32(x: &[u8], y: &[f32]) -> f32 {
            let n = y.len().min(x.len() / 4);
            let mut acc = [vdupq_n_f32(0.0); 4];
            let mut i = 0;
            while i + 16 <= n {
                for (k, a) in acc.iter_mut().enumerate() {
                    let w = vreinterpretq_f32_u8(vld1q_u8(x.as_ptr().add(4 * (i + 4 * k))));
                    *a = vfmaq_f32(*a, w, vld1q_f32(y.as_ptr().add(i + 4 * k)));
                }
                i += 16;
            }
            let s = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
            vaddvq_f32(s) + $crate::scalar::vec_dot_f32(&x[4 * i..], &y[i..])
        }

        /// Eight f16 values at `p` (16 bytes) as f32, through `fcvtl`/`fcvtl2` (base NEON; the
        /// f16 intrinsics are not stable Rust). The conversion is exact.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn f16x8(p: *const u8) -> (float32x4_t, float32x4_t) {
            let h = vld1q_u8(p);
            let (lo, hi): (float32x4_t, float32x4_t);
            // SAFETY: register-only conversions, no memory access; fcvtl is in every NEON CPU.
            std::arch::asm!("fcvtl {lo:v}.4s, {h:v}.4h", h = in(vreg) h, lo = lateout(vreg) lo,
                options(pure, nomem, nostack, preserves_flags));
            // SAFETY: as above.
            std::arch::asm!("fcvtl2 {hi:v}.4s, {h:v}.8h", h = in(vreg) h, hi = lateout(vreg) hi,
                options(pure, nomem, nostack, preserves_flags));
            (lo, hi)
        }

        /// Eight bf16 values at `p` (16 bytes) as f32: each is the top half of its f32.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn bf16x8(p: *const u8) -> (float32x4_t, float32x4_t) {
            let h = vreinterpretq_u16_u8(vld1q_u8(p));
            (
                vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h))),
                vreinterpretq_f32_u32(vshll_high_n_u16::<16>(h)),
            )
        }

        /// 16-bit float weights (f16, or bf16 if `BF16`) against f32 activations.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn dot_halves<const BF16: bool>(x: &[u8], y: &[f32]) -> f32 {
            let n = y.len().min(x.len() / 2);
            let mut acc = [vdupq_n_f32(0.0); 4];
            let mut i = 0;
            while i + 16 <= n {
                for k in 0..2 {
                    let p = x.as_ptr().add(2 * (i + 8 * k));
                    let (lo, hi) = if BF16 { bf16x8(p) } else { f16x8(p) };
                    let yp = y.as_ptr().add(i + 8 * k);
                    acc[2 * k] = vfmaq_f32(acc[2 * k], lo, vld1q_f32(yp));
                    acc[2 * k + 1] = vfmaq_f32(acc[2 * k + 1], hi, vld1q_f32(yp.add(4)));
                }
                i += 16;
            }
            let s = vaddvq_f32(vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3])));
            let (x, y) = (&x[2 * i..], &y[i..]);
            s + if BF16 { $crate::scalar::vec_dot_bf16_f32(x, y) } else { $crate::scalar::vec_dot_f16_f32(x, y) }
        }

        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_f16_f32(x: &[u8], y: &[f32]) -> f32 {
            dot_halves::<false>(x, y)
        }

        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_bf16_f32(x: &[u8], y: &[f32]) -> f32 {
            dot_halves::<true>(x, y)
        }
    };
}
