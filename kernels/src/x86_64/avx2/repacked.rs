//! Kernels for the interleaved layouts of `repack` (one body for the avx2, avxvnni and
//! avx512 levels; each level defines `mul_sum` and `VNNI`).

#[macro_export]
#[doc(hidden)]
macro_rules! x86_repacked_kernels {
    ($feat:literal) => {
        /// The one-row (decode) and four-row kernels of an interleaved type, from its tile
        /// macro: `$tile!(C, x, y)`.
        macro_rules! x8_kernels {
            ($one:ident, $four:ident, $W:ty, $A:ty, $tile:ident) => {
                /// # Safety
                /// The CPU must have this level's target features (reached only through dispatch).
                #[target_feature(enable = $feat)]
                pub unsafe fn $one(x: &[$W], y: &[$A]) -> [f32; 8] {
                    $tile!(1, x, [y])[0]
                }

                /// # Safety
                /// The CPU must have this level's target features (reached only through dispatch).
                #[target_feature(enable = $feat)]
                pub unsafe fn $four(x: &[$W], y: [&[$A]; 4]) -> [[f32; 8]; 4] {
                    $tile!(4, x, y)
                }
            };
        }

        /// The mins' term of K-type sums: acc -= dmin * dy * summ, per column (dy its activation
        /// scale).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn sub_mins<const C: usize>(acc: &mut [__m256; C], dmin: __m256, dy: [f32; C], summ: &[__m256i; C]) {
            for col in 0..C {
                let v = _mm256_mul_ps(dmin, _mm256_set1_ps(dy[col]));
                acc[col] = _mm256_fnmadd_ps(v, _mm256_cvtepi32_ps(summ[col]), acc[col]);
            }
        }

        /// A tile's C accumulators as rows of 8 outputs.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn store8<const C: usize>(acc: &[__m256; C]) -> [[f32; 8]; C] {
            let mut out = [[0f32; 8]; C];
            for (o, a) in out.iter_mut().zip(acc) {
                _mm256_storeu_ps(o.as_mut_ptr(), *a);
            }
            out
        }
        /// Tile of the 4-bit interleaved types (Q4_0x8, Q4_1x8): one group of 8 weight rows
        /// against `$C` activation rows; lane r of every register is row r. The nibbles go in
        /// unsigned: `$update` gets the block `$b`, the activation block `$a`, the 8 row sums
        /// of q * y `$s` and the 8 scales `$d`, and returns the new accumulator (from `$acc`).
        macro_rules! nibble_x8_tile {
            ($C:literal, $x:expr, $y:expr, $W:ty, $A:ty, |$b:ident, $a:ident, $s:ident, $d:ident, $acc:ident| $update:expr) => {
                'tile: {
                    let (x, y): (&[$W], [&[$A]; $C]) = ($x, $y);
                    let n = x.len();
                    if y.iter().any(|c| c.len() != n) {
                        break 'tile [[f32::NAN; 8]; $C];
                    }
                    let m4 = _mm256_set1_epi8(15);
                    let mut acc = [_mm256_setzero_ps(); $C];
                    for j in 0..n {
                        // Ask for the weights `pf_blocks` ahead: the loads the out-of-order core
                        // keeps in flight alone fall short of the memory's bandwidth (a
                        // prefetch never faults; the address is only computed).
                        let ahead = x.as_ptr().wrapping_add(j + pf_blocks::<$W>()) as *const i8;
                        _mm_prefetch::<_MM_HINT_T1>(ahead);
                        _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(64));
                        _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(128));
                        // SAFETY: j < n, the length of x and (checked above) of every y row.
                        let $b = unsafe { x.get_unchecked(j) };
                        let $d = _mm256_cvtph_ps(_mm_loadu_si128($b.d.as_ptr() as *const __m128i));
                        // One weight register at a time, met by every activation row: 4
                        // weights of each row (k < 4 low nibbles of run k; k >= 4 the high
                        // nibbles of run k - 4, elements 16 + 4(k-4) = 4k as well) against
                        // activations 4k..4k+4 in every lane. Few live registers: holding
                        // all 8 weight registers spilled half of them at 16 ymm.
                        let mut s = [_mm256_setzero_si256(); $C];
                        for c in 0..4 {
                            let v = _mm256_loadu_si256($b.qs.as_ptr().add(32 * c) as *const __m256i);
                            let lo = _mm256_and_si256(v, m4);
                            let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                            for (k, q) in [(c, lo), (4 + c, hi)] {
                                for col in 0..$C {
                                    // SAFETY: as above.
                                    let p = unsafe { y[col].get_unchecked(j).qs.as_ptr().add(4 * k) };
                                    let ya = _mm256_set1_epi32((p as *const i32).read_unaligned());
                                    // Without VNNI the pair sums add up in i16 (8 x 2 x 15 x 128
                                    // < 2^15) and widen once below.
                                    s[col] = if VNNI {
                                        mul_sum(s[col], q, ya)
                                    } else {
                                        _mm256_add_epi16(s[col], _mm256_maddubs_epi16(q, ya))
                                    };
                                }
                            }
                        }
                        for col in 0..$C {
                            // SAFETY: as above.
                            let $a = unsafe { y[col].get_unchecked(j) };
                            let $s = if VNNI { s[col] } else { _mm256_madd_epi16(s[col], _mm256_set1_epi16(1)) };
                            let $acc = acc[col];
                            acc[col] = $update;
                        }
                    }
                    store8(&acc)
                }
            };
        }

        /// Q4_Kx8 and Q5_Kx8 tile: one group of 8 weight rows against `$C` activation rows;
        /// lane r of every register is row r. Per group of 32: the `vpmaddubsw` results (4
        /// weights of each row against 4 broadcast activations) add up in i16, `$steps` at a
        /// time (8 for 4-bit q, 4 for 5-bit), then `vpmaddwd` applies the 8 rows' scales. The
        /// mins meet the activation's group sums (bsums). `$hi` returns the weights `$q` of
        /// block `$b`, group `$g`, step `$c` with their fifth bits (Q5_K) or as they are.
        ///   sum = d * dy * sum_g sc_g * sum(q*qy) - dmin * dy * sum_g m_g * bsum_g
        macro_rules! k_x8_tile {
            ($C:literal, $x:expr, $y:expr, $W:ty, $steps:literal, |$b:ident, $g:ident, $c:ident, $q:ident| $hi:expr) => {
                'tile: {
                    let (x, y): (&[$W], [&[BlockQ8K]; $C]) = ($x, $y);
                    let n = x.len();
                    if y.iter().any(|c| c.len() != n) {
                        break 'tile [[f32::NAN; 8]; $C];
                    }
                    let m4 = _mm256_set1_epi8(15);
                    let mut acc = [_mm256_setzero_ps(); $C];
                    for j in 0..n {
                        // A block `pf_blocks` on (Q4_K 1184 bytes, 19 lines; Q5_K 23 lines) is
                        // prefetched 3 lines per group below: asked all at once, the requests
                        // fill the core's miss buffers and the loads of this block queue
                        // behind them.
                        const LINES: usize = std::mem::size_of::<$W>().div_ceil(64);
                        let ahead = x.as_ptr().wrapping_add(j + pf_blocks::<$W>()) as *const i8;
                        // SAFETY: j < n, the length of x and (checked above) of every y row.
                        let b = unsafe { x.get_unchecked(j) };
                        // SAFETY: as above.
                        let mut a: [&BlockQ8K; $C] = [unsafe { y[0].get_unchecked(j) }; $C];
                        for col in 0..$C {
                            // SAFETY: as above.
                            a[col] = unsafe { y[col].get_unchecked(j) };
                        }
                        let mut sumi = [_mm256_setzero_si256(); $C];
                        for g in 0..8 {
                            let (p, shift) = (g / 2, 4 * (g % 2) as i32);
                            for l in 0..3 {
                                if 3 * g + l < LINES {
                                    _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(64 * (3 * g + l)));
                                }
                            }
                            let sc = _mm256_cvtepu8_epi32(_mm_loadl_epi64(
                                b.scales.as_ptr().add(8 * g) as *const __m128i
                            ));
                            // VNNI levels: one `vpdpbusd` per step into i32 (`s`), the scale
                            // applied by `vpmulld` once per group (the u8 x i8 sums stay exact).
                            // Elsewhere: `vpmaddubsw` sums in i16 (u8 <= 15 times i8, 8 pairs:
                            // |s| <= 8 * 2 * 15 * 128 < 2^15; u8 <= 31: 4 pairs), widened by the
                            // scale's `vpmaddwd` (row r's scale in i16 lanes 2r and 2r + 1).
                            let sc16 = _mm256_or_si256(sc, _mm256_slli_epi32(sc, 16));
                            let mut s = [_mm256_setzero_si256(); $C];
                            for c in 0..8 {
                                let v = _mm256_loadu_si256(b.qs.as_ptr().add(256 * p + 32 * c) as *const __m256i);
                                let q = _mm256_and_si256(_mm256_srl_epi16(v, _mm_cvtsi32_si128(shift)), m4);
                                let q = {
                                    let ($b, $g, $c, $q) = (b, g, c, q);
                                    $hi
                                };
                                for col in 0..$C {
                                    let ya = (a[col].qs.as_ptr().add(32 * g + 4 * c) as *const i32).read_unaligned();
                                    let y = _mm256_set1_epi32(ya);
                                    s[col] = if VNNI {
                                        mul_sum(s[col], q, y)
                                    } else {
                                        _mm256_add_epi16(s[col], _mm256_maddubs_epi16(q, y))
                                    };
                                }
                                if !VNNI && (c + 1) % $steps == 0 {
                                    for col in 0..$C {
                                        sumi[col] = _mm256_add_epi32(sumi[col], _mm256_madd_epi16(s[col], sc16));
                                        s[col] = _mm256_setzero_si256();
                                    }
                                }
                            }
                            if VNNI {
                                for col in 0..$C {
                                    sumi[col] = _mm256_add_epi32(sumi[col], _mm256_mullo_epi32(s[col], sc));
                                }
                            }
                        }
                        // Mins, two groups per `vpmaddwd`: row r's (m_g, m_g+1) in lanes 2r, 2r + 1
                        // against (bsum_g, bsum_g+1), the activations' sums over each group of 32.
                        let mut mins = [_mm256_setzero_si256(); 4];
                        for k in 0..4 {
                            let lo = _mm256_cvtepu8_epi32(_mm_loadl_epi64(
                                b.mins.as_ptr().add(16 * k) as *const __m128i
                            ));
                            let hi = _mm256_cvtepu8_epi32(_mm_loadl_epi64(
                                b.mins.as_ptr().add(16 * k + 8) as *const __m128i
                            ));
                            mins[k] = _mm256_or_si256(lo, _mm256_slli_epi32(hi, 16));
                        }
                        let d = _mm256_cvtph_ps(_mm_loadu_si128(b.d.as_ptr() as *const __m128i));
                        let dmin = _mm256_cvtph_ps(_mm_loadu_si128(b.dmin.as_ptr() as *const __m128i));
                        for col in 0..$C {
                            // The 8 sums over groups of 32 (pairs of the 16 bsums; |sum| <= 32 * 127
                            // fits i16), packed to i16: (bsum_2k, bsum_2k+1) is dword k of
                            // 128-bit lane k / 2, broadcast by one permute.
                            let bs = _mm256_loadu_si256(a[col].bsums.as_ptr() as *const __m256i);
                            let b32 = _mm256_madd_epi16(bs, _mm256_set1_epi16(1));
                            let b16 = _mm256_packs_epi32(b32, b32);
                            let mut summ = _mm256_setzero_si256();
                            for k in 0..4 {
                                let idx = _mm256_set1_epi32((4 * (k / 2) + k % 2) as i32);
                                let pair = _mm256_permutevar8x32_epi32(b16, idx);
                                summ = _mm256_add_epi32(summ, _mm256_madd_epi16(mins[k], pair));
                            }
                            let dy = _mm256_set1_ps(a[col].d);
                            let v = _mm256_fmadd_ps(
                                _mm256_mul_ps(d, dy),
                                _mm256_cvtepi32_ps(sumi[col]),
                                acc[col],
                            );
                            acc[col] = _mm256_fnmadd_ps(_mm256_mul_ps(dmin, dy), _mm256_cvtepi32_ps(summ), v);
                        }
                    }
                    store8(&acc)
                }
            };
        }

        macro_rules! q4_kx8_tile {
            ($C:literal, $x:expr, $y:expr) => {
                k_x8_tile!($C, $x, $y, BlockQ4Kx8, 8, |_b, _g, _c, q| q)
            };
        }

        /// Q5_K: the fifth bit of weight l of group g is bit g of qh byte l; the step's qh
        /// register holds it for all 8 rows, moved to bit 4 by 16-bit shifts (right by g:
        /// bit g of each byte to bit 0 or 8, then left by 4; bits from the other byte stay
        /// outside the mask).
        macro_rules! q5_kx8_tile {
            ($C:literal, $x:expr, $y:expr) => {
                k_x8_tile!($C, $x, $y, BlockQ5Kx8, 4, |b, g, c, q| {
                    let h = _mm256_loadu_si256(b.qh.as_ptr().add(32 * c) as *const __m256i);
                    let h = _mm256_slli_epi16(_mm256_srl_epi16(h, _mm_cvtsi32_si128(g as i32)), 4);
                    _mm256_or_si256(q, _mm256_and_si256(h, _mm256_set1_epi8(0x10)))
                })
            };
        }





        /// Q8_0x8 tile: one group of 8 weight rows against `$C` activation rows; lane r of
        /// every register is row r. Signed x signed: on the VNNI levels the weights go in
        /// as unsigned w + 128 (`vpdpbusd` does not saturate) and 128 * sum(y) comes off
        /// once per block; elsewhere through the sign trick (|w| as unsigned times y with
        /// w's sign), since `vpmaddubsw` would saturate on (w + 128) * y.
        macro_rules! q8_0x8_tile {
            ($C:literal, $x:expr, $y:expr) => {
                signed_x8_tile!($C, $x, $y, BlockQ8_0x8, 5, (), |b, k, _u| _mm256_loadu_si256(
                    b.qs.as_ptr().add(32 * k) as *const __m256i
                ))
            };
        }

        /// IQ4_NLx8 (Q4_0x8's layout): weight register k is the codebook value of the low
        /// (k < 4) or high nibbles of run k % 4, as `nibble_x8_tile!` pairs them with the
        /// activations.
        macro_rules! iq4_nlx8_tile {
            ($C:literal, $x:expr, $y:expr) => {
                signed_x8_tile!(
                    $C,
                    $x,
                    $y,
                    BlockQ4_0x8,
                    3,
                    _mm256_broadcastsi128_si256(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i)),
                    |b, k, book| {
                        let v = _mm256_loadu_si256(b.qs.as_ptr().add(32 * (k % 4)) as *const __m256i);
                        let v = if k < 4 { v } else { _mm256_srli_epi16(v, 4) };
                        _mm256_shuffle_epi8(book, _mm256_and_si256(v, _mm256_set1_epi8(15)))
                    }
                )
            };
        }

        /// Tile of the interleaved types of signed 8-bit weights per block of 32 (Q8_0x8, and
        /// IQ4_NLx8 through its codebook): `$w` gives weight register k (4 weights of each of
        /// the 8 rows) of block `$b`, with `$c` the value of `$init` (evaluated once per
        /// call: IQ4_NL's codebook register); `$lines` cache lines per block are prefetched 4
        /// blocks ahead. The rest as `q8_0x8_tile!` says.
        macro_rules! signed_x8_tile {
            ($C:literal, $x:expr, $y:expr, $W:ty, $lines:literal, $init:expr, |$b:ident, $k:ident, $c:ident| $w:expr) => {
                'tile: {
                    let (x, y): (&[$W], [&[BlockQ8_0S]; $C]) = ($x, $y);
                    let $c = $init;
                    let n = x.len();
                    if y.iter().any(|c| c.len() != n) {
                        break 'tile [[f32::NAN; 8]; $C];
                    }
                    let mut acc = [_mm256_setzero_ps(); $C];
                    for j in 0..n {
                        // Ahead of use (see `pf_blocks`): Q8_0 272-byte blocks, 5 lines each.
                        let ahead = x.as_ptr().wrapping_add(j + pf_blocks::<$W>()) as *const i8;
                        for line in 0..$lines {
                            _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(64 * line));
                        }
                        // SAFETY: j < n, the length of x and (checked above) of every y row.
                        let b = unsafe { x.get_unchecked(j) };
                        let mut s = [_mm256_setzero_si256(); $C];
                        for k in 0..8 {
                            let w = {
                                let ($b, $k) = (b, k);
                                $w
                            };
                            if VNNI {
                                let u = _mm256_xor_si256(w, _mm256_set1_epi8(-128));
                                for col in 0..$C {
                                    // SAFETY: as above.
                                    let a = unsafe { y[col].get_unchecked(j) };
                                    let ya = (a.qs.as_ptr().add(4 * k) as *const i32).read_unaligned();
                                    s[col] = mul_sum(s[col], u, _mm256_set1_epi32(ya));
                                }
                            } else {
                                let aw = _mm256_sign_epi8(w, w);
                                for col in 0..$C {
                                    // SAFETY: as above.
                                    let a = unsafe { y[col].get_unchecked(j) };
                                    let ya = (a.qs.as_ptr().add(4 * k) as *const i32).read_unaligned();
                                    s[col] = mul_sum(s[col], aw, _mm256_sign_epi8(_mm256_set1_epi32(ya), w));
                                }
                            }
                        }
                        let d = _mm256_cvtph_ps(_mm_loadu_si128(b.d.as_ptr() as *const __m128i));
                        for col in 0..$C {
                            // SAFETY: as above.
                            let a = unsafe { y[col].get_unchecked(j) };
                            let sc = if VNNI { _mm256_sub_epi32(s[col], _mm256_set1_epi32(128 * a.sum)) } else { s[col] };
                            acc[col] = _mm256_fmadd_ps(
                                _mm256_mul_ps(d, _mm256_set1_ps(a.d)),
                                _mm256_cvtepi32_ps(sc),
                                acc[col],
                            );
                        }
                    }
                    store8(&acc)
                }
            };
        }



        /// Tile of the interleaved K types of groups of 16 with small values (`Group16`:
        /// Q3_Kx8, Q2_Kx8): one group of 8 weight rows against `C` activation rows; lane r
        /// of every register is row r. Each step (h, c) gives weights 128h + 32k + 4c..+4 of
        /// the 8 rows for k = 0..4 (`Group16::values`: Q3_K 0..7, Q2_K 0..3), each summed
        /// into its group of 16 (g = 8h + 2k + c / 4): in i32 with `vpdpbusd` on the VNNI
        /// levels (the scale by `vpmulld`), elsewhere in the low i16 of each lane (|sum| <=
        /// 4 x 2032 + 4 x 2 x 7 x 127 < 2^15) widened by the scale's `vpmaddwd`. Q3_K's sums
        /// start at -4 x the group's activation sum; Q2_K's mins meet the activation sums
        /// after, two groups per `vpmaddwd`, scaled by dmin.
        ///   sum = d * dy * sum_g sc_g * sum((q + OFF) * qy) [- dmin * dy * sum_g m_g * bsum_g]
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn g16_x8<B: Group16, const C: usize>(x: &[B], y: [&[BlockQ8K]; C]) -> [[f32; 8]; C] {
            let n = x.len();
            if y.iter().any(|c| c.len() != n) {
                return [[f32::NAN; 8]; C];
            }
            let lo16 = _mm256_set1_epi32(0xffff);
            let mut acc = [_mm256_setzero_ps(); C];
            for j in 0..n {
                // A block `pf_blocks` on (Q3_K 912 bytes, 15 lines; Q2_K 11), one line per step.
                let lines = std::mem::size_of::<B>().div_ceil(64);
                let ahead = x.as_ptr().wrapping_add(j + pf_blocks::<B>()) as *const i8;
                // SAFETY: j < n, the length of x and (checked above) of every y row.
                let b = unsafe { x.get_unchecked(j) };
                // SAFETY: as above.
                let a: [&BlockQ8K; C] = std::array::from_fn(|col| unsafe { y[col].get_unchecked(j) });
                let mut sumi = [_mm256_setzero_si256(); C];
                for h in 0..2 {
                    for half in 0..2 {
                        let mut s: [[__m256i; 4]; C] = std::array::from_fn(|col| {
                            std::array::from_fn(|k| {
                                let o = if B::MINS { 0 } else { B::OFF * a[col].bsums[8 * h + 2 * k + half] as i32 };
                                _mm256_set1_epi32(if VNNI { o } else { o & 0xffff })
                            })
                        });
                        for t in 0..4 {
                            let c = 4 * half + t;
                            if 8 * h + 4 * half + t < lines {
                                _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(64 * (8 * h + 4 * half + t)));
                            }
                            let q = b.values(h, c);
                            for col in 0..C {
                                let p = a[col].qs.as_ptr().add(128 * h + 4 * c);
                                for k in 0..4 {
                                    let ya = _mm256_set1_epi32((p.add(32 * k) as *const i32).read_unaligned());
                                    s[col][k] = if VNNI {
                                        mul_sum(s[col][k], q[k], ya)
                                    } else {
                                        _mm256_add_epi16(s[col][k], _mm256_maddubs_epi16(q[k], ya))
                                    };
                                }
                            }
                        }
                        for k in 0..4 {
                            let (sc, _) = g16_scales(b, 8 * h + 2 * k + half);
                            let sc16 = _mm256_or_si256(_mm256_and_si256(sc, lo16), _mm256_slli_epi32(sc, 16));
                            for col in 0..C {
                                let v = if VNNI {
                                    _mm256_mullo_epi32(s[col][k], sc)
                                } else {
                                    _mm256_madd_epi16(s[col][k], sc16)
                                };
                                sumi[col] = _mm256_add_epi32(sumi[col], v);
                            }
                        }
                    }
                }
                let d = _mm256_cvtph_ps(_mm_loadu_si128(b.d().as_ptr() as *const __m128i));
                for col in 0..C {
                    let dy = _mm256_set1_ps(a[col].d);
                    acc[col] = _mm256_fmadd_ps(_mm256_mul_ps(d, dy), _mm256_cvtepi32_ps(sumi[col]), acc[col]);
                }
                if B::MINS {
                    // Row r's (m_2p, m_2p+1) in i16 lanes 2r, 2r + 1 against (bsum_2p, bsum_2p+1).
                    let mut summ = [_mm256_setzero_si256(); C];
                    for pg in 0..8 {
                        let (_, m0) = g16_scales(b, 2 * pg);
                        let (_, m1) = g16_scales(b, 2 * pg + 1);
                        let pair = _mm256_or_si256(m0, _mm256_slli_epi32(m1, 16));
                        for col in 0..C {
                            let bs = (a[col].bsums.as_ptr().add(2 * pg) as *const i32).read_unaligned();
                            summ[col] = _mm256_add_epi32(summ[col], _mm256_madd_epi16(pair, _mm256_set1_epi32(bs)));
                        }
                    }
                    sub_mins(&mut acc, _mm256_cvtph_ps(_mm_loadu_si128(b.dmin().as_ptr() as *const __m128i)), std::array::from_fn(|col| a[col].d), &summ);
                }
            }
            store8(&acc)
        }

        /// `g16_x8` as the tile macros are called (`x8_kernels!`).
        macro_rules! g16_x8_tile {
            ($C:literal, $x:expr, $y:expr) => {
                g16_x8::<_, $C>($x, $y)
            };
        }

        /// Step (h, c) of a Q3_Kx8 block: weights 128h + 32k + 4c..+4 of each row for k = 0..4,
        /// bits 2k, 2k+1 of the qs bytes plus bit 4h + k of the hmask bytes at bit 2 (16-bit
        /// shifts: bits crossing bytes fall outside the masks).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn q3_kx8_values(b: &BlockQ3Kx8, h: usize, c: usize) -> [__m256i; 4] {
            let v = _mm256_loadu_si256(b.qs.as_ptr().add(256 * h + 32 * c) as *const __m256i);
            let hm = _mm256_loadu_si256(b.hmask.as_ptr().add(32 * c) as *const __m256i);
            std::array::from_fn(|k| {
                let lo = _mm256_and_si256(_mm256_srl_epi16(v, _mm_cvtsi32_si128(2 * k as i32)), _mm256_set1_epi8(3));
                let bit = (4 * h + k) as i32;
                let hb = if bit >= 2 {
                    _mm256_srl_epi16(hm, _mm_cvtsi32_si128(bit - 2))
                } else {
                    _mm256_sll_epi16(hm, _mm_cvtsi32_si128(2 - bit))
                };
                _mm256_or_si256(lo, _mm256_and_si256(hb, _mm256_set1_epi8(4)))
            })
        }



        /// Step (h, c) of a Q2_Kx8 block: weights 128h + 32k + 4c..+4 of each row for k = 0..4,
        /// bits 2k, 2k+1 of the qs bytes (as `q3_kx8_values` without the third bit).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn q2_kx8_values(b: &BlockQ2Kx8, h: usize, c: usize) -> [__m256i; 4] {
            let v = _mm256_loadu_si256(b.qs.as_ptr().add(256 * h + 32 * c) as *const __m256i);
            std::array::from_fn(|k| {
                _mm256_and_si256(_mm256_srl_epi16(v, _mm_cvtsi32_si128(2 * k as i32)), _mm256_set1_epi8(3))
            })
        }



        /// IQ4_XSx8 tile: one group of 8 weight rows against `$C` activation rows; lane r of
        /// every register is row r. Each group of 32 is laid out as a Q4_0x8 block, its
        /// codebook indices looked up by `vpshufb`. VNNI levels look up the codebook values
        /// plus 128 (unsigned, as `vpdpbusd` takes them) and start each group's sums at
        /// -128 x the activations' sum over the group; elsewhere the signed values meet the
        /// activations by the sign trick (|v| x y with v's sign: 2 x 127 x 127 fits i16) and
        /// `vpmaddwd` applies the 8 rows' scales at once.
        ///   sum = d * dy * sum_g (ls_g - 32) * sum(kvalues[q] * qy)
        macro_rules! iq4_xsx8_tile {
            ($C:literal, $x:expr, $y:expr) => {
                'tile: {
                    let (x, y): (&[BlockIQ4XSx8], [&[BlockQ8K]; $C]) = ($x, $y);
                    let n = x.len();
                    if y.iter().any(|c| c.len() != n) {
                        break 'tile [[f32::NAN; 8]; $C];
                    }
                    let m4 = _mm256_set1_epi8(15);
                    let signed = _mm256_broadcastsi128_si256(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i));
                    // v + 128 as u8 is v with its top bit flipped.
                    let book = if VNNI { _mm256_xor_si256(signed, _mm256_set1_epi8(-128)) } else { signed };
                    let mut acc = [_mm256_setzero_ps(); $C];
                    for j in 0..n {
                        // A block `pf_blocks` on (1104 bytes, 18 lines), 3 lines per group (see
                        // `k_x8_tile!`).
                        const LINES: usize = std::mem::size_of::<BlockIQ4XSx8>().div_ceil(64);
                        let ahead = x.as_ptr().wrapping_add(j + pf_blocks::<BlockIQ4XSx8>()) as *const i8;
                        // SAFETY: j < n, the length of x and (checked above) of every y row.
                        let b = unsafe { x.get_unchecked(j) };
                        // SAFETY: as above.
                        let a: [&BlockQ8K; $C] = std::array::from_fn(|col| unsafe { y[col].get_unchecked(j) });
                        let mut sumi = [_mm256_setzero_si256(); $C];
                        for g in 0..8 {
                            for l in 0..3 {
                                if 3 * g + l < LINES {
                                    _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(64 * (3 * g + l)));
                                }
                            }
                            let sc = _mm256_cvtepi8_epi32(_mm_loadl_epi64(b.scales.as_ptr().add(8 * g) as *const __m128i));
                            // Row r's scale in both i16 halves of lane r (for `vpmaddwd`).
                            let sc16 = _mm256_blend_epi16(sc, _mm256_slli_epi32(sc, 16), 0xAA);
                            let mut s: [__m256i; $C] = std::array::from_fn(|col| {
                                let bs = a[col].bsums[2 * g] as i32 + a[col].bsums[2 * g + 1] as i32;
                                _mm256_set1_epi32(if VNNI { -128 * bs } else { 0 })
                            });
                            for c in 0..4 {
                                let v = _mm256_loadu_si256(b.qs.as_ptr().add(128 * g + 32 * c) as *const __m256i);
                                let lo = _mm256_shuffle_epi8(book, _mm256_and_si256(v, m4));
                                let hi = _mm256_shuffle_epi8(book, _mm256_and_si256(_mm256_srli_epi16(v, 4), m4));
                                for (k, q) in [(c, lo), (4 + c, hi)] {
                                    let aq = _mm256_sign_epi8(q, q);
                                    for col in 0..$C {
                                        let ya = (a[col].qs.as_ptr().add(32 * g + 4 * k) as *const i32).read_unaligned();
                                        let ya = _mm256_set1_epi32(ya);
                                        if VNNI {
                                            s[col] = mul_sum(s[col], q, ya);
                                        } else {
                                            let p = _mm256_maddubs_epi16(aq, _mm256_sign_epi8(ya, q));
                                            sumi[col] = _mm256_add_epi32(sumi[col], _mm256_madd_epi16(p, sc16));
                                        }
                                    }
                                }
                            }
                            if VNNI {
                                for col in 0..$C {
                                    sumi[col] = _mm256_add_epi32(sumi[col], _mm256_mullo_epi32(s[col], sc));
                                }
                            }
                        }
                        let d = _mm256_cvtph_ps(_mm_loadu_si128(b.d.as_ptr() as *const __m128i));
                        for col in 0..$C {
                            let dy = _mm256_set1_ps(a[col].d);
                            acc[col] = _mm256_fmadd_ps(_mm256_mul_ps(d, dy), _mm256_cvtepi32_ps(sumi[col]), acc[col]);
                        }
                    }
                    store8(&acc)
                }
            };
        }



        /// How many blocks ahead the interleaved kernels prefetch their weights: about 16 KiB
        /// (a Q4_0x8 block is 144 bytes, a Q4_Kx8 one 1184), into L2 (`_MM_HINT_T1`). 1 KiB
        /// left 4-10% of the decode bandwidth unused on a Zen 5 machine, where 4 to 8 KiB gave
        /// the same. On the Sapphire Rapids development machine, into L1, 4 KiB streamed Q4_0
        /// and Q4_K at 80-85% of the read roofline, 16 KiB at 96-100% (8 KiB 87-94%, 32 KiB
        /// 90-93%; `cargo bench --bench roofline`, builds alternated); into L2 at 16 KiB
        /// 101-110% (Q8_0 109-111% against 100-101%, Q6_K 91-92% against 85%), 8 and 32 KiB
        /// the same: there an L1 prefetch holds one of the core's few L1 miss buffers until
        /// its line arrives, which caps the misses in flight. 8B Q4_K_M decode +11-16%.
        const fn pf_blocks<T>() -> usize {
            let size = std::mem::size_of::<T>();
            if size >= 16384 {
                1
            } else {
                16384 / size
            }
        }

        /// The float step of the legacy types with an offset (Q4_0: 8, Q5_0: 16), for their
        /// tiles and panels alike: sum((q - OFFSET) * y) = sum(q * y) - OFFSET * sum(y), the
        /// activation block's sum (shared by the 8 rows, carried by the block) taken off once;
        /// then acc + d * dy * that, for the 8 rows' scales `d` and their sums `s`.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn offset_update<const OFFSET: i32>(d: __m256, a: &BlockQ8_0S, s: __m256i, acc: __m256) -> __m256 {
            let s = _mm256_sub_epi32(s, _mm256_set1_epi32(OFFSET * a.sum));
            _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(a.d)), _mm256_cvtepi32_ps(s), acc)
        }

        /// The float step of the legacy types with mins (Q4_1, Q5_1), for their tiles and
        /// panels alike: x = d * q + m, so the block adds d * dy * sum(q * y) + m * s, where the
        /// activation block carries s = dy * sum(y).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn mins_update(d: __m256, m: __m256, a: &BlockQ8_1, s: __m256i, acc: __m256) -> __m256 {
            let v = _mm256_fmadd_ps(_mm256_mul_ps(d, h2f8(a.d)), _mm256_cvtepi32_ps(s), acc);
            _mm256_fmadd_ps(m, h2f8(a.s), v)
        }

        macro_rules! q4_0x8_tile {
            ($C:literal, $x:expr, $y:expr) => {
                nibble_x8_tile!($C, $x, $y, BlockQ4_0x8, BlockQ8_0S, |_b, a, s, d, acc| offset_update::<8>(d, a, s, acc))
            };
        }

        macro_rules! q4_1x8_tile {
            ($C:literal, $x:expr, $y:expr) => {
                nibble_x8_tile!($C, $x, $y, BlockQ4_1x8, BlockQ8_1, |b, a, s, d, acc| {
                    let m = _mm256_cvtph_ps(_mm_loadu_si128(b.m.as_ptr() as *const __m128i));
                    mins_update(d, m, a, s, acc)
                })
            };
        }

        /// Byte 4i of each dword, for `q5_register`'s byte copies.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn q5_dword_base() -> __m256i {
            _mm256_add_epi8(
                _mm256_set1_epi64x(0x0404_0404_0000_0000),
                _mm256_setr_epi64x(0, 0x0808_0808_0808_0808, 0, 0x0808_0808_0808_0808),
            )
        }

        /// Weight register k of a 5-bit block of 8 rows: its nibbles `nib` with the fifth bits
        /// at bit 4. qh holds row r's 32 high bits in lane r; for weights 4k..4k+4, byte k/2 of
        /// the lane is copied to its 4 bytes (`dword_base`: `q5_dword_base()`) and each byte
        /// tests its own bit.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn q5_register(nib: __m256i, qh: __m256i, dword_base: __m256i, k: usize) -> __m256i {
            let rep = _mm256_shuffle_epi8(qh, _mm256_add_epi8(dword_base, _mm256_set1_epi8((k / 2) as i8)));
            let bit = _mm256_set1_epi32((0x0804_0201u32 << (4 * (k % 2))) as i32);
            let set = _mm256_cmpeq_epi8(_mm256_and_si256(rep, bit), bit);
            _mm256_or_si256(nib, _mm256_and_si256(set, _mm256_set1_epi8(16)))
        }

        /// Tile of the 5-bit interleaved types (Q5_0x8, Q5_1x8): as `nibble_x8_tile!` with the
        /// fifth bits: qh holds row r's 32 high bits in lane r; for weights 4k..4k+4, byte k/2
        /// of the lane is copied to its 4 bytes and each byte tests its own bit. q in 0..32
        /// goes in unsigned; `$update` turns the block's i32 sums `$s` into the accumulator
        /// (Q5_0: 16 * sum(y) off; Q5_1: the mins).
        macro_rules! q5_x8_tile {
            ($C:literal, $x:expr, $y:expr, $W:ty, $A:ty, |$b:ident, $a:ident, $s:ident, $d:ident, $acc:ident| $update:expr) => {'tile: {
                let (x, y): (&[$W], [&[$A]; $C]) = ($x, $y);
                let n = x.len();
                if y.iter().any(|c| c.len() != n) {
                    break 'tile [[f32::NAN; 8]; $C];
                }
                let m4 = _mm256_set1_epi8(15);
                let dword_base = q5_dword_base();
                let mut acc = [_mm256_setzero_ps(); $C];
                for j in 0..n {
                    let ahead = x.as_ptr().wrapping_add(j + pf_blocks::<$W>()) as *const i8;
                    for line in 0..3 {
                        _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(64 * line));
                    }
                    // SAFETY: j < n, the length of x and (checked above) of every y row.
                    let $b = unsafe { x.get_unchecked(j) };
                    let qh = _mm256_loadu_si256($b.qh.as_ptr() as *const __m256i);
                    let $d = _mm256_cvtph_ps(_mm_loadu_si128($b.d.as_ptr() as *const __m128i));
                    // One weight register at a time against every activation row (as in
                    // `nibble_x8_tile!`); without VNNI the pair sums add up in i16 four steps
                    // at a time (4 x 2 x 31 x 128 < 2^15), then widen into `s`.
                    let mut s = [_mm256_setzero_si256(); $C];
                    let mut s16 = [_mm256_setzero_si256(); $C];
                    for c in 0..4 {
                        let v = _mm256_loadu_si256($b.qs.as_ptr().add(32 * c) as *const __m256i);
                        let lo = _mm256_and_si256(v, m4);
                        let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                        for (k, nib) in [(c, lo), (4 + c, hi)] {
                            let q = q5_register(nib, qh, dword_base, k);
                            for col in 0..$C {
                                // SAFETY: as above.
                                let p = unsafe { y[col].get_unchecked(j).qs.as_ptr().add(4 * k) };
                                let ya = _mm256_set1_epi32((p as *const i32).read_unaligned());
                                if VNNI {
                                    s[col] = mul_sum(s[col], q, ya);
                                } else {
                                    s16[col] = _mm256_add_epi16(s16[col], _mm256_maddubs_epi16(q, ya));
                                }
                            }
                        }
                        if !VNNI && c % 2 == 1 {
                            for col in 0..$C {
                                s[col] = _mm256_add_epi32(s[col], _mm256_madd_epi16(s16[col], _mm256_set1_epi16(1)));
                                s16[col] = _mm256_setzero_si256();
                            }
                        }
                    }
                    for col in 0..$C {
                        // SAFETY: as above.
                        let $a = unsafe { y[col].get_unchecked(j) };
                        let $s = s[col];
                        let $acc = acc[col];
                        acc[col] = $update;
                    }
                }
                store8(&acc)
            }};
        }

        macro_rules! q5_0x8_tile {
            ($C:literal, $x:expr, $y:expr) => {
                q5_x8_tile!($C, $x, $y, BlockQ5_0x8, BlockQ8_0S, |_b, a, s, d, acc| offset_update::<16>(d, a, s, acc))
            };
        }

        /// Q5_1x8 tile: `q5_x8_tile!` plus the mins, as `q4_1x8_tile!` adds them.
        macro_rules! q5_1x8_tile {
            ($C:literal, $x:expr, $y:expr) => {
                q5_x8_tile!($C, $x, $y, BlockQ5_1x8, BlockQ8_1, |b, a, s, d, acc| {
                    let m = _mm256_cvtph_ps(_mm_loadu_si128(b.m.as_ptr() as *const __m128i));
                    mins_update(d, m, a, s, acc)
                })
            };
        }



        /// Q6_Kx8 tile (as `q4_kx8_tile!`). Step (h, k, c): weights 128h + 32k + 4c..+4 of
        /// each row, the low (k < 2) or high nibble of ql plus bits 2k, 2k+1 of qh at bit 4;
        /// q in 0..64 pairs fit i16 twice, so each group of 16 (4 steps) takes 2 `vpmaddwd`s
        /// with its scale. The -32 offset goes through bsums:
        ///   sum = d * dy * sum_g sc_g * (sum(q*qy) - 32 * bsum_g)
        macro_rules! q6_kx8_tile {
            ($C:literal, $x:expr, $y:expr) => {'tile: {
                let (x, y): (&[BlockQ6Kx8], [&[BlockQ8K]; $C]) = ($x, $y);
                let n = x.len();
                if y.iter().any(|c| c.len() != n) {
                    break 'tile [[f32::NAN; 8]; $C];
                }
                let lo16 = _mm256_set1_epi32(0xffff);
                let mut acc = [_mm256_setzero_ps(); $C];
                for j in 0..n {
                    // A block `pf_blocks` on (2 blocks: 1680 bytes, 27 lines), 2 lines per
                    // group below (as in `q4_kx8_tile!`: 27 requests at once stall the
                    // loads of this block; spread out, 14336x4096 streams at 25-29 GB/s
                    // instead of 16-21).
                    let ahead = x.as_ptr().wrapping_add(j + pf_blocks::<BlockQ6Kx8>()) as *const i8;
                    // SAFETY: j < n, the length of x and (checked above) of every y row.
                    let b = unsafe { x.get_unchecked(j) };
                    // SAFETY: as above.
                    let mut a: [&BlockQ8K; $C] = [unsafe { y[0].get_unchecked(j) }; $C];
                    for col in 0..$C {
                        // SAFETY: as above.
                        a[col] = unsafe { y[col].get_unchecked(j) };
                    }
                    let mut sumi = [_mm256_setzero_si256(); $C];
                    if VNNI {
                        // Straight-line order: per (h, c) the 3 loads give weights 4c..4c+4 of
                        // all four k (low/high nibbles of two ql runs, four 2-bit fields of qh),
                        // each summed by `vpdpbusd` into its group's i32 lanes; a group's sums
                        // take its scales by `vpmulld` after its 4 steps. Each group's sum
                        // starts at -32 x its activation sum, so the -32 offset of the 6-bit
                        // values needs no pass of its own (|sum| < 2^18 before the scale).
                        for h in 0..2 {
                            for half in 0..2 {
                                let mut s32: [[__m256i; 4]; $C] = std::array::from_fn(|col| {
                                    std::array::from_fn(|k| {
                                        _mm256_set1_epi32(-32 * a[col].bsums[8 * h + 2 * k + half] as i32)
                                    })
                                });
                                for t in 0..4 {
                                    let c = 4 * half + t;
                                    let pf = 8 * h + 4 * half + t;
                                    if pf < 14 {
                                        _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(128 * pf));
                                        _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(128 * pf + 64));
                                    }
                                    let q = q6_kx8_values(b, h, c);
                                    for col in 0..$C {
                                        let p = a[col].qs.as_ptr().add(128 * h + 4 * c);
                                        for k in 0..4 {
                                            let ya = (p.add(32 * k) as *const i32).read_unaligned();
                                            s32[col][k] = mul_sum(s32[col][k], q[k], _mm256_set1_epi32(ya));
                                        }
                                    }
                                }
                                for k in 0..4 {
                                    let sc = i8x8_to_i32(b.scales.as_ptr().add(8 * (8 * h + 2 * k + half)));
                                    for col in 0..$C {
                                        sumi[col] = _mm256_add_epi32(sumi[col], _mm256_mullo_epi32(s32[col][k], sc));
                                    }
                                }
                            }
                        }
                    } else {
                        for h in 0..2 {
                            for gi in 0..2 {
                                q6_kx8_group::<0, $C>(b, &a, h, gi, ahead, &mut sumi);
                                q6_kx8_group::<1, $C>(b, &a, h, gi, ahead, &mut sumi);
                                q6_kx8_group::<2, $C>(b, &a, h, gi, ahead, &mut sumi);
                                q6_kx8_group::<3, $C>(b, &a, h, gi, ahead, &mut sumi);
                            }
                        }
                    }
                    // Without VNNI, the offsets, two groups per `vpmaddwd`: row r's (sc_g,
                    // sc_g+1) in i16 lanes 2r, 2r + 1 against (bsum_g, bsum_g+1). After the
                    // sums, so that they are not live through them.
                    let mut offs = [_mm256_setzero_si256(); $C];
                    for g in (0..if VNNI { 0 } else { 16 }).step_by(2) {
                        let lo = _mm256_and_si256(i8x8_to_i32(b.scales.as_ptr().add(8 * g)), lo16);
                        let pair = _mm256_or_si256(lo, _mm256_slli_epi32(i8x8_to_i32(b.scales.as_ptr().add(8 * g + 8)), 16));
                        for col in 0..$C {
                            // (bsum_g, bsum_g+1): the dword at bsums[g] (little-endian i16 pair).
                            let bsum = _mm256_set1_epi32((a[col].bsums.as_ptr().add(g) as *const i32).read_unaligned());
                            offs[col] = _mm256_add_epi32(offs[col], _mm256_madd_epi16(pair, bsum));
                        }
                    }
                    let d = _mm256_cvtph_ps(_mm_loadu_si128(b.d.as_ptr() as *const __m128i));
                    for col in 0..$C {
                        let total = _mm256_sub_epi32(sumi[col], _mm256_slli_epi32(offs[col], 5));
                        let dy = _mm256_set1_ps(a[col].d);
                        acc[col] = _mm256_fmadd_ps(_mm256_mul_ps(d, dy), _mm256_cvtepi32_ps(total), acc[col]);
                    }
                }
                store8(&acc)
            }};
        }

        /// One group of 8 Q4_K or Q5_K rows of a 256-column block, unpacked once for a
        /// prefill batch (as `PanelQ6K8`).
        #[repr(C, align(64))]
        #[derive(Clone, Copy)]
        pub struct PanelQ4K8 {
            /// `q[8g + c]`: bytes 4c..4c+4 of 32-value group g, row r in lane r (Q4_K 0..15,
            /// Q5_K 0..31).
            q: [[u8; 32]; 64],
            /// Group g's scale as an i32 lane (VNNI levels) and as an (sc, sc) i16 pair.
            sc: [[i32; 8]; 8],
            sc16: [[i16; 16]; 8],
            /// Group g's min as an (m, m) i16 pair, against (bsum_2g, bsum_2g+1).
            mins: [[i16; 16]; 8],
            d: [f32; 8],
            dmin: [f32; 8],
        }

        /// Two groups (16 rows) of a block: the unit of `matmul`'s panels.
        #[repr(C, align(64))]
        #[derive(Clone, Copy)]
        pub struct Pair8<P> {
            a: P,
            b: P,
        }

        impl<P> Pair8<P> {
            /// The first group's panel, or the second's (`hi`).
            fn half(&self, hi: bool) -> &P {
                if hi {
                    &self.b
                } else {
                    &self.a
                }
            }
        }

        pub type PanelQ4K2x8 = Pair8<PanelQ4K8>;
        pub type PanelQ6K2x8 = Pair8<PanelQ6K8>;

        /// A 32-value block of 8 interleaved rows of a 4- or 5-bit legacy type (Q4_0x8, Q4_1x8,
        /// Q5_0x8, Q5_1x8) with its values unpacked: register k as `nibble_x8_tile!` and
        /// `q5_x8_tile!` pair it with the activations (k < 4 the low nibbles of run k, k >= 4
        /// the high nibbles of run k - 4, plus the fifth bits), the 8 rows' scales, and the
        /// mins of Q4_1 and Q5_1 (zero for the others), as f32.
        #[repr(C, align(32))]
        #[derive(Clone, Copy)]
        pub struct PanelNib8 {
            q: [[u8; 32]; 8],
            d: [f32; 8],
            m: [f32; 8],
        }

        pub type PanelNib2x8 = Pair8<PanelNib8>;

        /// A block type of 8 interleaved rows with a panel form.
        pub trait Unpack8 {
            type Panel;
            /// # Safety
            /// The CPU must have this level's target features (reached only through dispatch).
            unsafe fn unpack_into(&self, p: &mut Self::Panel);
        }

        /// `Unpack8` of a block type: its panel and the function that fills one.
        macro_rules! unpack8 {
            ($t:ty, $panel:ty, $f:ident) => {
                impl Unpack8 for $t {
                    type Panel = $panel;
                    #[inline]
                    #[target_feature(enable = $feat)]
                    unsafe fn unpack_into(&self, p: &mut $panel) {
                        $f(self, p)
                    }
                }
            };
        }

        unpack8!(BlockQ4Kx8, PanelQ4K8, unpack_k8_one);
        unpack8!(BlockQ5Kx8, PanelQ4K8, unpack_k8_one);
        unpack8!(BlockIQ4XSx8, PanelQ4K8, unpack_iq4_xs8_one);
        unpack8!(BlockQ6Kx8, PanelQ6K8, unpack_g16_one);
        unpack8!(BlockQ2Kx8, PanelQ6K8, unpack_g16_one);
        unpack8!(BlockQ3Kx8, PanelQ6K8, unpack_g16_one);
        unpack8!(BlockQ4_0x8, PanelNib8, unpack_q4_0x8_one);
        unpack8!(BlockQ4_1x8, PanelNib8, unpack_q4_1x8_one);
        unpack8!(BlockQ5_0x8, PanelNib8, unpack_q5_0x8_one);
        unpack8!(BlockQ5_1x8, PanelNib8, unpack_q5_1x8_one);

        /// The nibbles of a 4-bit block of 8 rows into a panel's 8 registers.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn unpack_nibbles8(qs: &[u8; 128], p: &mut PanelNib8) {
            let m4 = _mm256_set1_epi8(15);
            for c in 0..4 {
                let v = _mm256_loadu_si256(qs.as_ptr().add(32 * c) as *const __m256i);
                _mm256_storeu_si256(p.q[c].as_mut_ptr() as *mut __m256i, _mm256_and_si256(v, m4));
                let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                _mm256_storeu_si256(p.q[4 + c].as_mut_ptr() as *mut __m256i, hi);
            }
        }

        /// A panel's 8 scales and 8 mins (zero where the type has none) from f16.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn nib_scales8(d: &[u8; 16], m: Option<&[u8; 16]>, p: &mut PanelNib8) {
            _mm256_storeu_ps(p.d.as_mut_ptr(), _mm256_cvtph_ps(_mm_loadu_si128(d.as_ptr() as *const __m128i)));
            let m = match m {
                Some(m) => _mm256_cvtph_ps(_mm_loadu_si128(m.as_ptr() as *const __m128i)),
                None => _mm256_setzero_ps(),
            };
            _mm256_storeu_ps(p.m.as_mut_ptr(), m);
        }

        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn unpack_q4_0x8_one(b: &BlockQ4_0x8, p: &mut PanelNib8) {
            unpack_nibbles8(&b.qs, p);
            nib_scales8(&b.d, None, p);
        }

        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn unpack_q4_1x8_one(b: &BlockQ4_1x8, p: &mut PanelNib8) {
            unpack_nibbles8(&b.qs, p);
            nib_scales8(&b.d, Some(&b.m), p);
        }

        /// The values of a 5-bit block of 8 rows (its nibbles and fifth bits, as `q5_x8_tile!`
        /// puts them together) into a panel's 8 registers.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn unpack_q5_values8(qs: &[u8; 128], qh: &[u8; 32], p: &mut PanelNib8) {
            let (m4, dword_base) = (_mm256_set1_epi8(15), q5_dword_base());
            let qh = _mm256_loadu_si256(qh.as_ptr() as *const __m256i);
            for c in 0..4 {
                let v = _mm256_loadu_si256(qs.as_ptr().add(32 * c) as *const __m256i);
                let lo = _mm256_and_si256(v, m4);
                let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                for (k, nib) in [(c, lo), (4 + c, hi)] {
                    _mm256_storeu_si256(p.q[k].as_mut_ptr() as *mut __m256i, q5_register(nib, qh, dword_base, k));
                }
            }
        }

        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn unpack_q5_0x8_one(b: &BlockQ5_0x8, p: &mut PanelNib8) {
            unpack_q5_values8(&b.qs, &b.qh, p);
            nib_scales8(&b.d, None, p);
        }

        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn unpack_q5_1x8_one(b: &BlockQ5_1x8, p: &mut PanelNib8) {
            unpack_q5_values8(&b.qs, &b.qh, p);
            nib_scales8(&b.d, Some(&b.m), p);
        }

        /// One group's 4- or 5-bit panels (`hi`: the second of each pair) against 4 activation
        /// rows `$y` of type `$A`: the integer sums of `nibble_x8_tile!` / `q5_x8_tile!`
        /// (exact, in any order) and then their update, `$update` of the panel `$b`, the
        /// activation block `$a`, the 8 row sums `$s` and the accumulator `$acc`, as the
        /// tile's: the same results to the bit, without unpacking the values again for every
        /// four activation rows. Without VNNI the pair sums add up in i16 `$steps` steps at a
        /// time (8 for values 0..15: 8 x 2 x 15 x 128 < 2^15; 4 for 0..31) and then widen.
        macro_rules! nib_panel8x4 {
            ($p:expr, $hi:expr, $y:expr, $A:ty, $steps:expr, |$b:ident, $a:ident, $s:ident, $acc:ident| $update:expr) => {{
                let (p, hi, y): (&[PanelNib2x8], bool, [&[$A]; 4]) = ($p, $hi, $y);
                let mut acc = [_mm256_setzero_ps(); 4];
                for (j, pair) in p.iter().enumerate() {
                    let $b = pair.half(hi);
                    let (mut s, mut s16) = ([_mm256_setzero_si256(); 4], [_mm256_setzero_si256(); 4]);
                    for k in 0..8 {
                        let q = _mm256_loadu_si256($b.q[k].as_ptr() as *const __m256i);
                        for col in 0..4 {
                            // SAFETY: the caller checked that every y row has p.len() blocks.
                            let at = unsafe { y[col].get_unchecked(j).qs.as_ptr().add(4 * k) };
                            let ya = _mm256_set1_epi32((at as *const i32).read_unaligned());
                            if VNNI {
                                s[col] = mul_sum(s[col], q, ya);
                            } else {
                                s16[col] = _mm256_add_epi16(s16[col], _mm256_maddubs_epi16(q, ya));
                            }
                        }
                        if !VNNI && (k + 1) % $steps == 0 {
                            for col in 0..4 {
                                s[col] = _mm256_add_epi32(s[col], _mm256_madd_epi16(s16[col], _mm256_set1_epi16(1)));
                                s16[col] = _mm256_setzero_si256();
                            }
                        }
                    }
                    for col in 0..4 {
                        // SAFETY: as above.
                        let $a = unsafe { y[col].get_unchecked(j) };
                        let $s = s[col];
                        let $acc = acc[col];
                        acc[col] = $update;
                    }
                }
                store8(&acc)
            }};
        }

        /// Q4_0 (`OFFSET` 8, `STEPS` 8) or Q5_0 (16, 4) panels against 4 activation rows (their
        /// tiles' `offset_update`).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn q4_0_panel8x4<const OFFSET: i32, const STEPS: usize>(
            p: &[PanelNib2x8],
            hi: bool,
            y: [&[BlockQ8_0S]; 4],
        ) -> [[f32; 8]; 4] {
            nib_panel8x4!(p, hi, y, BlockQ8_0S, STEPS, |b, a, s, acc| {
                offset_update::<OFFSET>(_mm256_loadu_ps(b.d.as_ptr()), a, s, acc)
            })
        }

        /// Q4_1 (`STEPS` 8) or Q5_1 (4) panels against 4 activation rows (their tiles'
        /// `mins_update`).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn q4_1_panel8x4<const STEPS: usize>(
            p: &[PanelNib2x8],
            hi: bool,
            y: [&[BlockQ8_1]; 4],
        ) -> [[f32; 8]; 4] {
            nib_panel8x4!(p, hi, y, BlockQ8_1, STEPS, |b, a, s, acc| {
                mins_update(_mm256_loadu_ps(b.d.as_ptr()), _mm256_loadu_ps(b.m.as_ptr()), a, s, acc)
            })
        }

        /// The 16x8 entry (`Panel16Fns::1`) of a 4- or 5-bit panel: panel pairs
        /// (`unpack_pairs`) against 8 activation rows of `$A`, through the 4-row pass `$four`.
        macro_rules! nib_panel16x8 {
            ($name:ident, $A:ty, $four:expr) => {
                /// # Safety
                /// The CPU must have this level's target features (reached only through dispatch).
                #[target_feature(enable = $feat)]
                pub unsafe fn $name(p: &[PanelNib2x8], y: [&[$A]; 8], next: &[u8]) -> [[f32; 16]; 8] {
                    // SAFETY: this function's target features are the 4-row pass's.
                    panel16x8(p, y, next, |p, hi, c| unsafe { $four(p, hi, c) })
                }
            };
        }
        nib_panel16x8!(vec_dot_q4_0panel8x2x8_q8_0, BlockQ8_0S, q4_0_panel8x4::<8, 8>);
        nib_panel16x8!(vec_dot_q5_0panel8x2x8_q8_0, BlockQ8_0S, q4_0_panel8x4::<16, 4>);
        nib_panel16x8!(vec_dot_q4_1panel8x2x8_q8_1, BlockQ8_1, q4_1_panel8x4::<8>);
        nib_panel16x8!(vec_dot_q5_1panel8x2x8_q8_1, BlockQ8_1, q4_1_panel8x4::<4>);

        /// Both groups' blocks into panel pairs, the next blocks prefetched (`matmul`'s panel
        /// unpacker for every 256-bit panel type, through `Panel16Fns`).
        ///
        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[inline]
        #[target_feature(enable = $feat)]
        pub unsafe fn unpack_pairs<B: Unpack8>(xa: &[B], xb: &[B], out: &mut [Pair8<B::Panel>]) {
            for (j, ((a, b), p)) in xa.iter().zip(xb).zip(out.iter_mut()).enumerate() {
                for x in [xa, xb] {
                    let ahead = x.as_ptr().wrapping_add(j + 1) as *const i8;
                    for line in 0..std::mem::size_of::<B>().div_ceil(64) {
                        _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(64 * line));
                    }
                }
                a.unpack_into(&mut p.a);
                b.unpack_into(&mut p.b);
            }
        }

        /// Panel pairs against 8 activation rows (16 rows x 8) through a kernel `four` of
        /// one group against 4 rows: each group's 8 lanes, each half of the columns.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn panel16x8<P, A>(
            p: &[Pair8<P>],
            y: [&[A]; 8],
            next: &[u8],
            four: impl Fn(&[Pair8<P>], bool, [&[A]; 4]) -> [[f32; 8]; 4],
        ) -> [[f32; 16]; 8] {
            if y.iter().any(|c| c.len() != p.len()) {
                return [[f32::NAN; 16]; 8];
            }
            let mut out = [[0f32; 16]; 8];
            // The next pair's share a quarter before each of the four passes: in one burst
            // the prefetches outnumbered the line fill buffers and stalled the core.
            let next = $crate::matmul::L2Shares::new(next, 4);
            let mut t = 0;
            for c0 in [0, 4] {
                let cols = [y[c0], y[c0 + 1], y[c0 + 2], y[c0 + 3]];
                for (hi, lanes) in [(false, 0), (true, 8)] {
                    next.fetch(t);
                    t += 1;
                    for (c, v) in four(p, hi, cols).into_iter().enumerate() {
                        out[c0 + c][lanes..lanes + 8].copy_from_slice(&v);
                    }
                }
            }
            out
        }

        /// Q4_K or Q5_K values of group g, step c: the nibble, plus for Q5_K the fifth bit
        /// (bit g of qh byte l, moved to bit 4 as in `q5_kx8_tile!`).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn k8_values<B: KBlockX8>(b: &B, g: usize, c: usize) -> __m256i {
            let v = _mm256_loadu_si256(b.qs().as_ptr().add(256 * (g / 2) + 32 * c) as *const __m256i);
            let q = _mm256_and_si256(_mm256_srl_epi16(v, _mm_cvtsi32_si128(4 * (g % 2) as i32)), _mm256_set1_epi8(15));
            match b.qh() {
                None => q,
                Some(qh) => {
                    let h = _mm256_loadu_si256(qh.as_ptr().add(32 * c) as *const __m256i);
                    let h = _mm256_slli_epi16(_mm256_srl_epi16(h, _mm_cvtsi32_si128(g as i32)), 4);
                    _mm256_or_si256(q, _mm256_and_si256(h, _mm256_set1_epi8(0x10)))
                }
            }
        }

        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn unpack_k8_one<B: KBlockX8>(b: &B, p: &mut PanelQ4K8) {
            let lo16 = _mm256_set1_epi32(0xffff);
            for g in 0..8 {
                for c in 0..8 {
                    _mm256_storeu_si256(p.q[8 * g + c].as_mut_ptr() as *mut __m256i, k8_values(b, g, c));
                }
                let sc = _mm256_cvtepu8_epi32(_mm_loadl_epi64(b.scales().as_ptr().add(8 * g) as *const __m128i));
                _mm256_storeu_si256(p.sc[g].as_mut_ptr() as *mut __m256i, sc);
                let pair = _mm256_or_si256(_mm256_and_si256(sc, lo16), _mm256_slli_epi32(sc, 16));
                _mm256_storeu_si256(p.sc16[g].as_mut_ptr() as *mut __m256i, pair);
                let m = _mm256_cvtepu8_epi32(_mm_loadl_epi64(b.mins().as_ptr().add(8 * g) as *const __m128i));
                _mm256_storeu_si256(p.mins[g].as_mut_ptr() as *mut __m256i, _mm256_or_si256(m, _mm256_slli_epi32(m, 16)));
            }
            _mm256_storeu_ps(p.d.as_mut_ptr(), _mm256_cvtph_ps(_mm_loadu_si128(b.d().as_ptr() as *const __m128i)));
            _mm256_storeu_ps(p.dmin.as_mut_ptr(), _mm256_cvtph_ps(_mm_loadu_si128(b.dmin().as_ptr() as *const __m128i)));
        }

        /// One IQ4_XSx8 group into a Q4_K panel, as avx512's `unpack_iq4_xsx16`: the codebook
        /// values + 128, the signed scales, 128 x scale as the min, dmin = d. For the VNNI
        /// levels only: values up to 241 would saturate `vpmaddubsw`'s pair sums.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn unpack_iq4_xs8_one(b: &BlockIQ4XSx8, p: &mut PanelQ4K8) {
            let (m4, lo16) = (_mm256_set1_epi8(15), _mm256_set1_epi32(0xffff));
            let signed = _mm256_broadcastsi128_si256(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i));
            let book = _mm256_xor_si256(signed, _mm256_set1_epi8(-128));
            for g in 0..8 {
                for c in 0..4 {
                    let v = _mm256_loadu_si256(b.qs.as_ptr().add(128 * g + 32 * c) as *const __m256i);
                    let lo = _mm256_shuffle_epi8(book, _mm256_and_si256(v, m4));
                    let hi = _mm256_shuffle_epi8(book, _mm256_and_si256(_mm256_srli_epi16(v, 4), m4));
                    _mm256_storeu_si256(p.q[8 * g + c].as_mut_ptr() as *mut __m256i, lo);
                    _mm256_storeu_si256(p.q[8 * g + 4 + c].as_mut_ptr() as *mut __m256i, hi);
                }
                let sc = _mm256_cvtepi8_epi32(_mm_loadl_epi64(b.scales.as_ptr().add(8 * g) as *const __m128i));
                _mm256_storeu_si256(p.sc[g].as_mut_ptr() as *mut __m256i, sc);
                let pair = _mm256_or_si256(_mm256_and_si256(sc, lo16), _mm256_slli_epi32(sc, 16));
                _mm256_storeu_si256(p.sc16[g].as_mut_ptr() as *mut __m256i, pair);
                let m = _mm256_slli_epi32(sc, 7);
                let pair = _mm256_or_si256(_mm256_and_si256(m, lo16), _mm256_slli_epi32(m, 16));
                _mm256_storeu_si256(p.mins[g].as_mut_ptr() as *mut __m256i, pair);
            }
            let d = _mm256_cvtph_ps(_mm_loadu_si128(b.d.as_ptr() as *const __m128i));
            _mm256_storeu_ps(p.d.as_mut_ptr(), d);
            _mm256_storeu_ps(p.dmin.as_mut_ptr(), d);
        }




        /// One group's panels (`hi`: the second of each pair) against 4 activation rows: the
        /// sums of `k_x8_tile!`, lane for lane; without VNNI, `STEPS` steps per i16 sum (8
        /// for 4-bit values, 4 for 5-bit: see `k_x8_tile!`). `SAME_D` (IQ4_XS, dmin = d): the
        /// mins' term comes off the integer sum, as `iq4_xsx8_tile!` does.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn k_panel8x4<const STEPS: usize, const SAME_D: bool>(
            p: &[PanelQ4K2x8],
            hi: bool,
            y: [&[BlockQ8K]; 4],
        ) -> [[f32; 8]; 4] {
            let mut acc = [_mm256_setzero_ps(); 4];
            for (j, pair) in p.iter().enumerate() {
                let b = pair.half(hi);
                // SAFETY: the caller checked that every y row has p.len() blocks.
                let act: [&BlockQ8K; 4] = std::array::from_fn(|c| unsafe { y[c].get_unchecked(j) });
                let mut sumi = [_mm256_setzero_si256(); 4];
                for g in 0..8 {
                    if VNNI && STEPS == 8 && !SAME_D {
                        // Q4_K (values 0..15): each 16-value half's sum fits i16, so one
                        // `vpdpwssd` against the scale lanes (the i16 pair (sc, 0)) scales and
                        // adds it, where `vpmulld` + `vpaddd` were three uops (as avx512's
                        // `vec_dot_q4_kpanel16x8_q8_k`).
                        let sc = _mm256_loadu_si256(b.sc[g].as_ptr() as *const __m256i);
                        let (mut lo, mut hi) = ([_mm256_setzero_si256(); 4], [_mm256_setzero_si256(); 4]);
                        for c in 0..4 {
                            let qa = _mm256_loadu_si256(b.q[8 * g + c].as_ptr() as *const __m256i);
                            let qb = _mm256_loadu_si256(b.q[8 * g + c + 4].as_ptr() as *const __m256i);
                            for col in 0..4 {
                                let y4 = |c: usize| {
                                    let p = act[col].qs.as_ptr().add(32 * g + 4 * c) as *const i32;
                                    _mm256_set1_epi32(p.read_unaligned())
                                };
                                lo[col] = mul_sum(lo[col], qa, y4(c));
                                hi[col] = mul_sum(hi[col], qb, y4(c + 4));
                            }
                        }
                        for col in 0..4 {
                            sumi[col] = mul_sum16(mul_sum16(sumi[col], lo[col], sc), hi[col], sc);
                        }
                        continue;
                    }
                    let mut s = [_mm256_setzero_si256(); 4];
                    let sc16 = _mm256_loadu_si256(b.sc16[g].as_ptr() as *const __m256i);
                    for c in 0..8 {
                        let q = _mm256_loadu_si256(b.q[8 * g + c].as_ptr() as *const __m256i);
                        for col in 0..4 {
                            let ya = (act[col].qs.as_ptr().add(32 * g + 4 * c) as *const i32).read_unaligned();
                            let y = _mm256_set1_epi32(ya);
                            s[col] = if VNNI {
                                mul_sum(s[col], q, y)
                            } else {
                                _mm256_add_epi16(s[col], _mm256_maddubs_epi16(q, y))
                            };
                        }
                        if !VNNI && (c + 1) % STEPS == 0 {
                            for col in 0..4 {
                                sumi[col] = _mm256_add_epi32(sumi[col], _mm256_madd_epi16(s[col], sc16));
                                s[col] = _mm256_setzero_si256();
                            }
                        }
                    }
                    if VNNI {
                        let sc = _mm256_loadu_si256(b.sc[g].as_ptr() as *const __m256i);
                        for col in 0..4 {
                            sumi[col] = _mm256_add_epi32(sumi[col], _mm256_mullo_epi32(s[col], sc));
                        }
                    }
                }
                let mut summ = [_mm256_setzero_si256(); 4];
                for g in 0..8 {
                    let m = _mm256_loadu_si256(b.mins[g].as_ptr() as *const __m256i);
                    for col in 0..4 {
                        let bs = (act[col].bsums.as_ptr().add(2 * g) as *const i32).read_unaligned();
                        summ[col] = _mm256_add_epi32(summ[col], _mm256_madd_epi16(m, _mm256_set1_epi32(bs)));
                    }
                }
                let d = _mm256_loadu_ps(b.d.as_ptr());
                for col in 0..4 {
                    let dy = _mm256_set1_ps(act[col].d);
                    let si = if SAME_D { _mm256_sub_epi32(sumi[col], summ[col]) } else { sumi[col] };
                    acc[col] = _mm256_fmadd_ps(_mm256_mul_ps(d, dy), _mm256_cvtepi32_ps(si), acc[col]);
                }
                if !SAME_D {
                    // The mins' term after the scales' (the order of `k_x8_tile!`).
                    sub_mins(&mut acc, _mm256_loadu_ps(b.dmin.as_ptr()), std::array::from_fn(|col| act[col].d), &summ);
                }
            }
            store8(&acc)
        }

        /// Q4_K panel pairs (`unpack_pairs`) against 8 activation rows: 16 rows x 8.
        ///
        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_q4_kpanel8x2x8_q8_k(
            p: &[PanelQ4K2x8],
            y: [&[BlockQ8K]; 8],
            next: &[u8],
        ) -> [[f32; 16]; 8] {
            // SAFETY: this function's target features are k_panel8x4's.
            panel16x8(p, y, next, |p, hi, c| unsafe { k_panel8x4::<8, false>(p, hi, c) })
        }

        /// IQ4_XS panel pairs (`unpack_pairs`) against 8 activation rows: 16 rows x 8.
        /// VNNI levels only (NaN elsewhere: see `unpack_iq4_xs8_one`).
        ///
        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_iq4_xspanel8x2x8_q8_k(
            p: &[PanelQ4K2x8],
            y: [&[BlockQ8K]; 8],
            next: &[u8],
        ) -> [[f32; 16]; 8] {
            if !VNNI {
                return [[f32::NAN; 16]; 8];
            }
            // SAFETY: this function's target features are k_panel8x4's.
            panel16x8(p, y, next, |p, hi, c| unsafe { k_panel8x4::<8, true>(p, hi, c) })
        }

        /// Q5_K panel pairs (`unpack_pairs`) against 8 activation rows: 16 rows x 8.
        ///
        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_q5_kpanel8x2x8_q8_k(
            p: &[PanelQ4K2x8],
            y: [&[BlockQ8K]; 8],
            next: &[u8],
        ) -> [[f32; 16]; 8] {
            // SAFETY: this function's target features are k_panel8x4's.
            panel16x8(p, y, next, |p, hi, c| unsafe { k_panel8x4::<4, false>(p, hi, c) })
        }

        /// One group of 8 Q6_K rows of a 256-column block, unpacked once for a prefill batch
        /// (the 256-bit twin of avx512's `PanelQ6K`): rebuilding the 6-bit values per 4
        /// activation rows is a quarter of `q6_kx8_tile!`'s work.
        #[repr(C, align(64))]
        #[derive(Clone, Copy)]
        pub struct PanelQ6K8 {
            /// `q[4g + t]`: bytes 4t..4t+4 of 16-value group g, row r in lane r, 0..63.
            q: [[u8; 32]; 64],
            /// Group g's scale of each row as an i32 lane (VNNI levels) and as the i16 pair
            /// (sc, sc) that `vpmaddwd` applies to two i16 sums (elsewhere).
            sc: [[i32; 8]; 16],
            sc16: [[i16; 16]; 16],
            /// -32 x the scales of groups 2m, 2m + 1 as i16 pairs, against (bsum_2m, bsum_2m+1)
            /// (Q3_K: -4 x; Q2_K: the mins, scaled apart by dmin).
            offs: [[i16; 16]; 8],
            d: [f32; 8],
            dmin: [f32; 8],
        }

        /// Step (h, c) of a Q6_Kx8 block: weights 128h + 32k + 4c..+4 of each row for k = 0..4,
        /// the low (k < 2) or high nibble of ql plus bits 2k, 2k+1 of qh at bits 4, 5 (16-bit
        /// shifts: bits crossing bytes fall outside the mask).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn q6_kx8_values(b: &BlockQ6Kx8, h: usize, c: usize) -> [__m256i; 4] {
            let (m4, m30) = (_mm256_set1_epi8(15), _mm256_set1_epi8(0x30));
            let ql0 = _mm256_loadu_si256(b.ql.as_ptr().add(512 * h + 32 * c) as *const __m256i);
            let ql1 = _mm256_loadu_si256(b.ql.as_ptr().add(512 * h + 256 + 32 * c) as *const __m256i);
            let qh = _mm256_loadu_si256(b.qh.as_ptr().add(256 * h + 32 * c) as *const __m256i);
            [
                _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30)),
                _mm256_or_si256(_mm256_and_si256(ql1, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), _mm256_and_si256(qh, m30)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4), _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30)),
            ]
        }

        /// The interleaved K types of groups of 16 whose panel is `PanelQ6K8`: unsigned values
        /// at step (h, c) (weights 128h + 32k + 4c..+4 for k = 0..4) with an offset, signed
        /// scales.
        pub trait Group16 {
            /// How the values' offset comes off. false: OFF x the group's scale against the
            /// group's activation sum, inside the integer sum (Q6_K: OFF -32, values 0..63;
            /// Q3_K: -4, 0..7). true: the group's own min m (Q2_K: x = d * sc * q - dmin * m,
            /// q 0..3), summed apart and scaled by dmin.
            const MINS: bool;
            const OFF: i32;
            /// # Safety
            /// The CPU must have this level's target features (reached only through dispatch).
            unsafe fn values(&self, h: usize, c: usize) -> [__m256i; 4];
            /// Index 8 * group + row: the signed scale, or (Q2_K) sc | m << 4.
            fn scales(&self) -> &[u8; 128];
            fn d(&self) -> &[u8; 16];
            fn dmin(&self) -> &[u8; 16] {
                self.d()
            }
        }

        /// Group g's scales of the 8 rows as i32 lanes, and what multiplies the group's
        /// activation sum: OFF x the scale, or (MINS) the min.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn g16_scales<B: Group16>(b: &B, g: usize) -> (__m256i, __m256i) {
            let p = b.scales().as_ptr().add(8 * g);
            if B::MINS {
                let raw = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i));
                (_mm256_and_si256(raw, _mm256_set1_epi32(15)), _mm256_srli_epi32(raw, 4))
            } else {
                let sc = i8x8_to_i32(p);
                (sc, _mm256_mullo_epi32(sc, _mm256_set1_epi32(B::OFF)))
            }
        }

        impl Group16 for BlockQ6Kx8 {
            const MINS: bool = false;
            const OFF: i32 = -32;
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn values(&self, h: usize, c: usize) -> [__m256i; 4] {
                // The values of `q6_kx8_tile!`'s step (h, c).
                q6_kx8_values(self, h, c)
            }
            fn scales(&self) -> &[u8; 128] {
                &self.scales
            }
            fn d(&self) -> &[u8; 16] {
                &self.d
            }
        }

        impl Group16 for BlockQ2Kx8 {
            const MINS: bool = true;
            const OFF: i32 = 0;
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn values(&self, h: usize, c: usize) -> [__m256i; 4] {
                q2_kx8_values(self, h, c)
            }
            fn scales(&self) -> &[u8; 128] {
                &self.scales
            }
            fn d(&self) -> &[u8; 16] {
                &self.d
            }
            fn dmin(&self) -> &[u8; 16] {
                &self.dmin
            }
        }

        impl Group16 for BlockQ3Kx8 {
            const MINS: bool = false;
            const OFF: i32 = -4;
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn values(&self, h: usize, c: usize) -> [__m256i; 4] {
                q3_kx8_values(self, h, c)
            }
            fn scales(&self) -> &[u8; 128] {
                &self.scales
            }
            fn d(&self) -> &[u8; 16] {
                &self.d
            }
        }

        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn unpack_g16_one<B: Group16>(b: &B, p: &mut PanelQ6K8) {
            let lo16 = _mm256_set1_epi32(0xffff);
            for h in 0..2 {
                for half in 0..2 {
                    for t in 0..4 {
                        let c = 4 * half + t;
                        for (k, q) in b.values(h, c).into_iter().enumerate() {
                            let g = 8 * h + 2 * k + half;
                            _mm256_storeu_si256(p.q[4 * g + t].as_mut_ptr() as *mut __m256i, q);
                        }
                    }
                }
            }
            let mut off = [_mm256_setzero_si256(); 16];
            for (g, o) in off.iter_mut().enumerate() {
                let (sc, of) = g16_scales(b, g);
                *o = of;
                _mm256_storeu_si256(p.sc[g].as_mut_ptr() as *mut __m256i, sc);
                let pair = _mm256_or_si256(_mm256_and_si256(sc, lo16), _mm256_slli_epi32(sc, 16));
                _mm256_storeu_si256(p.sc16[g].as_mut_ptr() as *mut __m256i, pair);
            }
            for m in 0..8 {
                let pair = _mm256_or_si256(_mm256_and_si256(off[2 * m], lo16), _mm256_slli_epi32(off[2 * m + 1], 16));
                _mm256_storeu_si256(p.offs[m].as_mut_ptr() as *mut __m256i, pair);
            }
            _mm256_storeu_ps(p.d.as_mut_ptr(), _mm256_cvtph_ps(_mm_loadu_si128(b.d().as_ptr() as *const __m128i)));
            _mm256_storeu_ps(p.dmin.as_mut_ptr(), _mm256_cvtph_ps(_mm_loadu_si128(b.dmin().as_ptr() as *const __m128i)));
        }




        /// One group's panels (`hi`: the second of each pair) against 4 activation rows: the
        /// sums of `q6_kx8_tile!`, lane for lane, each weight register a single load.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn q6_kpanel8x4<const MINS: bool>(p: &[PanelQ6K2x8], hi: bool, y: [&[BlockQ8K]; 4]) -> [[f32; 8]; 4] {
            let mut acc = [_mm256_setzero_ps(); 4];
            for (j, pair) in p.iter().enumerate() {
                let b = pair.half(hi);
                // SAFETY: the caller checked that every y row has p.len() blocks.
                let act: [&BlockQ8K; 4] = std::array::from_fn(|c| unsafe { y[c].get_unchecked(j) });
                let mut sumi = [_mm256_setzero_si256(); 4];
                for g in 0..16 {
                    // Group g's 16 activation bytes (see `q6_kx8_tile!`).
                    let base = 128 * (g / 8) + 32 * ((g % 8) / 2) + 16 * (g % 2);
                    let ya = |col: usize, t: usize| {
                        _mm256_set1_epi32((act[col].qs.as_ptr().add(base + 4 * t) as *const i32).read_unaligned())
                    };
                    if VNNI {
                        let mut s = [_mm256_setzero_si256(); 4];
                        for t in 0..4 {
                            let q = _mm256_loadu_si256(b.q[4 * g + t].as_ptr() as *const __m256i);
                            for col in 0..4 {
                                s[col] = mul_sum(s[col], q, ya(col, t));
                            }
                        }
                        let sc = _mm256_loadu_si256(b.sc[g].as_ptr() as *const __m256i);
                        for col in 0..4 {
                            sumi[col] = _mm256_add_epi32(sumi[col], _mm256_mullo_epi32(s[col], sc));
                        }
                    } else {
                        // Two steps per i16 sum (2 x 2 x 63 x 128 < 2^15), widened by the scale.
                        let sc16 = _mm256_loadu_si256(b.sc16[g].as_ptr() as *const __m256i);
                        for t in [0, 2] {
                            let q0 = _mm256_loadu_si256(b.q[4 * g + t].as_ptr() as *const __m256i);
                            let q1 = _mm256_loadu_si256(b.q[4 * g + t + 1].as_ptr() as *const __m256i);
                            for col in 0..4 {
                                let s16 = _mm256_add_epi16(
                                    _mm256_maddubs_epi16(q0, ya(col, t)),
                                    _mm256_maddubs_epi16(q1, ya(col, t + 1)),
                                );
                                sumi[col] = _mm256_add_epi32(sumi[col], _mm256_madd_epi16(s16, sc16));
                            }
                        }
                    }
                }
                // The offsets into the integer sum, or (MINS, Q2_K) the mins apart.
                let mut summ = [_mm256_setzero_si256(); 4];
                for m in 0..8 {
                    let o = _mm256_loadu_si256(b.offs[m].as_ptr() as *const __m256i);
                    for col in 0..4 {
                        let bs = (act[col].bsums.as_ptr().add(2 * m) as *const i32).read_unaligned();
                        let t = if MINS { &mut summ[col] } else { &mut sumi[col] };
                        *t = _mm256_add_epi32(*t, _mm256_madd_epi16(o, _mm256_set1_epi32(bs)));
                    }
                }
                let d = _mm256_loadu_ps(b.d.as_ptr());
                for col in 0..4 {
                    let dy = _mm256_set1_ps(act[col].d);
                    acc[col] = _mm256_fmadd_ps(_mm256_mul_ps(d, dy), _mm256_cvtepi32_ps(sumi[col]), acc[col]);
                }
                if MINS {
                    sub_mins(&mut acc, _mm256_loadu_ps(b.dmin.as_ptr()), std::array::from_fn(|col| act[col].d), &summ);
                }
            }
            store8(&acc)
        }

        /// Q6_K panel pairs (`unpack_pairs`) against 8 activation rows: 16 rows x 8.
        ///
        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_q6_kpanel8x2x8_q8_k(
            p: &[PanelQ6K2x8],
            y: [&[BlockQ8K]; 8],
            next: &[u8],
        ) -> [[f32; 16]; 8] {
            // SAFETY: this function's target features are q6_kpanel8x4's.
            panel16x8(p, y, next, |p, hi, c| unsafe { q6_kpanel8x4::<false>(p, hi, c) })
        }

        /// Q2_K panel pairs (`unpack_pairs`) against 8 activation rows: 16 rows x 8.
        ///
        /// # Safety
        /// The CPU must have this level's target features (reached only through dispatch).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_q2_kpanel8x2x8_q8_k(
            p: &[PanelQ6K2x8],
            y: [&[BlockQ8K]; 8],
            next: &[u8],
        ) -> [[f32; 16]; 8] {
            // SAFETY: this function's target features are q6_kpanel8x4's.
            panel16x8(p, y, next, |p, hi, c| unsafe { q6_kpanel8x4::<true>(p, hi, c) })
        }

        /// One group of 16 weights of a Q6_Kx8 block (g = 8h + 2K + gi) against C activation
        /// rows without VNNI: the sums of q * y in i16, widened by the scales' `vpmaddwd`
        /// into `sumi`. K is a constant so that its shifts are chosen at compile time.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn q6_kx8_group<const K: usize, const C: usize>(
            b: &BlockQ6Kx8,
            a: &[&BlockQ8K; C],
            h: usize,
            gi: usize,
            ahead: *const i8,
            sumi: &mut [__m256i; C],
        ) {
            let (m4, m30, lo16) = (_mm256_set1_epi8(15), _mm256_set1_epi8(0x30), _mm256_set1_epi32(0xffff));
            let g = 8 * h + 2 * K + gi;
            if g < 14 {
                _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(128 * g));
                _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(128 * g + 64));
            }
            // Row r's scale of group g as i16 in lanes 2r and 2r + 1.
            let sc = i8x8_to_i32(b.scales.as_ptr().add(8 * g));
            let sc = _mm256_or_si256(_mm256_and_si256(sc, lo16), _mm256_slli_epi32(sc, 16));
            // Two steps at a time: u8 < 64 times i8, 2 pairs per `vpmaddubsw`, two of them
            // summed: < 2^15. One i16 sum per column is live (more spilled at 16 ymm).
            for tp in 0..2 {
                let mut s16 = [_mm256_setzero_si256(); C];
                for t in 2 * tp..2 * tp + 2 {
                    let c = 4 * gi + t;
                    let ql = _mm256_loadu_si256(b.ql.as_ptr().add(512 * h + 256 * (K % 2) + 32 * c) as *const __m256i);
                    let qh = _mm256_loadu_si256(b.qh.as_ptr().add(256 * h + 32 * c) as *const __m256i);
                    let nib = if K < 2 {
                        _mm256_and_si256(ql, m4)
                    } else {
                        _mm256_and_si256(_mm256_srli_epi16(ql, 4), m4)
                    };
                    // Bits 2K, 2K+1 of each qh byte moved to bits 4, 5 (16-bit shifts: bits
                    // crossing bytes fall outside the mask).
                    let hb = match K {
                        0 => _mm256_slli_epi16(qh, 4),
                        1 => _mm256_slli_epi16(qh, 2),
                        2 => qh,
                        _ => _mm256_srli_epi16(qh, 2),
                    };
                    let q = _mm256_or_si256(nib, _mm256_and_si256(hb, m30));
                    for col in 0..C {
                        let e = 128 * h + 32 * K + 4 * c;
                        let ya = (a[col].qs.as_ptr().add(e) as *const i32).read_unaligned();
                        s16[col] = _mm256_add_epi16(s16[col], _mm256_maddubs_epi16(q, _mm256_set1_epi32(ya)));
                    }
                }
                for col in 0..C {
                    sumi[col] = _mm256_add_epi32(sumi[col], _mm256_madd_epi16(s16[col], sc));
                }
            }
        }

        /// Eight signed bytes widened to i32 lanes (row r's scale of one group in lane r).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn i8x8_to_i32(p: *const u8) -> __m256i {
            _mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i))
        }

        x8_kernels!(vec_dot_q5_kx8_q8_k, vec_dot_q5_kx8x4_q8_k, BlockQ5Kx8, BlockQ8K, q5_kx8_tile);
        x8_kernels!(vec_dot_q4_kx8_q8_k, vec_dot_q4_kx8x4_q8_k, BlockQ4Kx8, BlockQ8K, q4_kx8_tile);
        x8_kernels!(vec_dot_q8_0x8_q8_0, vec_dot_q8_0x8x4_q8_0, BlockQ8_0x8, BlockQ8_0S, q8_0x8_tile);
        x8_kernels!(vec_dot_iq4_nlx8_q8_0, vec_dot_iq4_nlx8x4_q8_0, BlockQ4_0x8, BlockQ8_0S, iq4_nlx8_tile);
        x8_kernels!(vec_dot_q3_kx8_q8_k, vec_dot_q3_kx8x4_q8_k, BlockQ3Kx8, BlockQ8K, g16_x8_tile);
        x8_kernels!(vec_dot_q2_kx8_q8_k, vec_dot_q2_kx8x4_q8_k, BlockQ2Kx8, BlockQ8K, g16_x8_tile);
        x8_kernels!(vec_dot_iq4_xsx8_q8_k, vec_dot_iq4_xsx8x4_q8_k, BlockIQ4XSx8, BlockQ8K, iq4_xsx8_tile);
        x8_kernels!(vec_dot_q5_0x8_q8_0, vec_dot_q5_0x8x4_q8_0, BlockQ5_0x8, BlockQ8_0S, q5_0x8_tile);
        x8_kernels!(vec_dot_q5_1x8_q8_1, vec_dot_q5_1x8x4_q8_1, BlockQ5_1x8, BlockQ8_1, q5_1x8_tile);
        x8_kernels!(vec_dot_q6_kx8_q8_k, vec_dot_q6_kx8x4_q8_k, BlockQ6Kx8, BlockQ8K, q6_kx8_tile);
        x8_kernels!(vec_dot_q4_0x8_q8_0, vec_dot_q4_0x8x4_q8_0, BlockQ4_0x8, BlockQ8_0S, q4_0x8_tile);
        x8_kernels!(vec_dot_q4_1x8_q8_1, vec_dot_q4_1x8x4_q8_1, BlockQ4_1x8, BlockQ8_1, q4_1x8_tile);
    };
}
