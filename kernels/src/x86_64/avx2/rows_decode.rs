//! Decode from the file's row layout at the avx2 and avxvnni levels (`Kernels::rows_decode`):
//! a task's weight rows against one activation row in one call. The activation side of every
//! block (its bytes 32-byte aligned, its scale as f32, its sum times the weights' offset) is
//! worked out once per call instead of once per row, the weight scales of eight blocks are
//! converted by one `vcvtph2ps`, and four accumulators keep consecutive blocks off one FMA
//! chain. (The avx512 level's kernels are `x86_64::rows_decode`.)
//!
//! Tested against the scalar reference in `kernels/tests/levels.rs`
//! (`rows_decode_matches_scalar`).

/// Expands, inside a level's module (after `x86_legacy_kernels!`, whose `unpack_nibbles`,
/// `unpack_q5`, `mul_sum_i8` and `hsum` it uses, and the level's `mul_sum`), to a module
/// `rows` with that level's decode kernels over many rows.
#[macro_export]
#[doc(hidden)]
macro_rules! x86_rows_kernels {
    ($feat:literal) => {
        pub mod rows {
            use super::{hsum, mul_sum, mul_sum_i8, unpack_nibbles, unpack_q5};
            use std::arch::x86_64::*;
            use std::mem::MaybeUninit;
            use $crate::x86_64::rows_decode::RowAct;
            use $crate::blocks::*;

            /// The widest rows the per-call activation tables hold, in 32-value blocks
            /// (`dispatch::ROWS_MAX_COLS`).
            const MAX_BLOCKS: usize = $crate::dispatch::ROWS_MAX_COLS / 32;

            /// How far ahead of its reads a kernel asks for the weights (as the avx512
            /// level's row kernels; a prefetch never faults, the address is only computed).
            const PREFETCH: usize = 3072;

            /// A 32-value weight block type as `legacy_rows` reads it.
            pub trait Legacy: Sized {
                type Act: RowAct;
                /// What the values `dot` multiplies stand for is `value - OFFSET`.
                const OFFSET: i32;
                /// Whether the extra term is multiplied by a min (`m`) rather than by `d`.
                const MINS: bool;
                /// The block's scale and the factor of the activations' extra term (its min,
                /// or its scale again), as f16 bytes.
                fn scales(&self) -> ([u8; 2], [u8; 2]);
                /// The block's values (plus OFFSET) times the activation bytes at `a`, summed
                /// into i32 lanes.
                ///
                /// # Safety
                /// The level's target features; `a` points at 32 bytes, 32-byte aligned.
                unsafe fn dot(&self, a: *const __m256i) -> __m256i;
            }

            /// Implements `Legacy`: activations, offset, mins, and the block's products.
            macro_rules! legacy {
                        ($b:ty, $act:ty, $offset:literal, $mins:tt, $sum:ident, |$x:ident| $values:expr) => {
                            impl Legacy for $b {
                                type Act = $act;
                                const OFFSET: i32 = $offset;
                                const MINS: bool = $mins;
                                fn scales(&self) -> ([u8; 2], [u8; 2]) {
                                    legacy!(@scales self, $mins)
                                }
                                #[inline]
                                #[target_feature(enable = $feat)]
                                unsafe fn dot(&self, a: *const __m256i) -> __m256i {
                                    let $x = self;
                                    $sum(_mm256_setzero_si256(), $values, _mm256_load_si256(a))
                                }
                            }
                        };
                        (@scales $s:ident, true) => { ($s.d, $s.m) };
                        (@scales $s:ident, false) => { ($s.d, $s.d) };
                    }

            // Unsigned values (nibbles 0..15, five bits 0..31) go into `vpmaddubsw` as they
            // are (no pair of products reaches i16's limit); signed ones (Q8_0, IQ4_NL's
            // codebook) through the sign trick (`mul_sum_i8`), with no offset.
            legacy!(BlockQ4_0, BlockQ8_0, 8, false, mul_sum, |x| nibbles(&x.qs));
            legacy!(BlockQ4_1, BlockQ8_1, 0, true, mul_sum, |x| nibbles(&x.qs));
            legacy!(BlockQ5_0, BlockQ8_0, 16, false, mul_sum, |x| unpack_q5(&x.qs, x.qh));
            legacy!(BlockQ5_1, BlockQ8_1, 0, true, mul_sum, |x| unpack_q5(&x.qs, x.qh));
            legacy!(BlockQ8_0, BlockQ8_0, 0, false, mul_sum_i8, |x| {
                _mm256_loadu_si256(x.qs.as_ptr() as *const __m256i)
            });
            legacy!(BlockIQ4NL, BlockQ8_0, 0, false, mul_sum_i8, |x| {
                let book = _mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i);
                _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(book), unpack_nibbles(&x.qs))
            });

            use $crate::x86_64::f16_to_f32 as h2f;

            /// The 32 nibbles of a Q4 block as bytes 0..16 (low nibbles in lanes 0-15, high
            /// ones in 16-31): the 16 bytes loaded into both halves, the upper half shifted by
            /// 4 (one load, one shift, one `and`).
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn nibbles(qs: &[u8; 16]) -> __m256i {
                let b = _mm256_broadcastsi128_si256(_mm_loadu_si128(qs.as_ptr() as *const __m128i));
                let b = _mm256_srlv_epi32(b, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
                _mm256_and_si256(b, _mm256_set1_epi8(15))
            }

            /// Eight blocks' f16 scales as f32 lanes, and the factors of their extra terms
            /// (their mins, or the scales again), in one conversion each. With mins (d and m
            /// adjacent, the block's first four bytes) the eight pairs are loaded as dwords
            /// and split by one `vpshufb` and one `vpermq`.
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn scales8<B: Legacy>(x: &[B]) -> (__m256, __m256) {
                // The first four bytes of each block: d, then m (or the first values).
                let h = |j: usize| {
                    let (d, m) = x[j].scales();
                    i32::from_le_bytes([d[0], d[1], m[0], m[1]])
                };
                let v = _mm256_setr_epi32(h(0), h(1), h(2), h(3), h(4), h(5), h(6), h(7));
                // Per 128-bit lane: the four d words, then the four m words.
                let split = _mm256_broadcastsi128_si256(_mm_setr_epi8(
                    0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15,
                ));
                let v = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_shuffle_epi8(v, split));
                let d = _mm256_cvtph_ps(_mm256_castsi256_si128(v));
                (d, if B::MINS { _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(v)) } else { d })
            }

            /// Rows of a 32-value block type (`w`: `out.len()` rows of `a.len()` blocks)
            /// against one activation row: `out[r]` = row r . a, the sums of the type's
            /// `vec_dot` accumulated in another order: `d_w * d_a * sum(u * a)` per block (u
            /// the values plus OFFSET), plus the extra terms (`d_w * (-OFFSET * d_a *
            /// sum(a))`, or Q4_1's and Q5_1's `m * s`) eight blocks at a time.
            ///
            /// # Safety
            /// The CPU must have this level's target features (reached only through
            /// dispatch); `w.len() == out.len() * a.len()`, `a.len() <= MAX_BLOCKS`.
            #[target_feature(enable = $feat)]
            pub unsafe fn legacy_rows<B: Legacy>(w: &[B], a: &[B::Act], out: &mut [f32]) {
                let nb = a.len();
                debug_assert!(nb <= MAX_BLOCKS && w.len() == out.len() * nb);
                let mut qs = [MaybeUninit::<__m256i>::uninit(); MAX_BLOCKS];
                let mut da = [MaybeUninit::<f32>::uninit(); MAX_BLOCKS];
                let mut extra = [MaybeUninit::<f32>::uninit(); MAX_BLOCKS];
                for (b, blk) in a.iter().enumerate() {
                    qs[b].write(_mm256_loadu_si256(blk.qs().as_ptr() as *const __m256i));
                    let d = h2f(blk.d());
                    da[b].write(d);
                    extra[b].write(blk.extra(B::OFFSET, d));
                }
                // Only the first nb entries are written, and only they are read below.
                let qs = qs.as_ptr() as *const __m256i;
                let (da, extra) = (da.as_ptr() as *const f32, extra.as_ptr() as *const f32);
                let extras_used = B::MINS || B::OFFSET != 0;
                let lane: [__m256i; 8] = std::array::from_fn(|j| _mm256_set1_epi32(j as i32));
                let groups = nb / 8;
                let lines = (8 * std::mem::size_of::<B>()).div_ceil(64);
                for (r, o) in out.iter_mut().enumerate() {
                    let x = &w[r * nb..(r + 1) * nb];
                    // Four accumulators: each FMA waits on the one before in its chain.
                    let mut acc = [_mm256_setzero_ps(); 4];
                    let mut extras = _mm256_setzero_ps();
                    for g in 0..groups {
                        let xg = &x[8 * g..8 * g + 8];
                        // A line per 64 bytes of the group, PREFETCH bytes ahead.
                        let p = xg.as_ptr() as *const i8;
                        for line in 0..lines {
                            _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(PREFETCH + 64 * line));
                        }
                        let (dw, fw) = scales8(xg);
                        // SAFETY (these reads): 8g + 8 <= nb, written above.
                        if extras_used {
                            extras = _mm256_fmadd_ps(fw, _mm256_loadu_ps(extra.add(8 * g)), extras);
                        }
                        let sv = _mm256_mul_ps(dw, _mm256_loadu_ps(da.add(8 * g)));
                        for (j, lj) in lane.iter().enumerate() {
                            let s = _mm256_cvtepi32_ps(xg[j].dot(qs.add(8 * g + j)));
                            let scale = _mm256_permutevar8x32_ps(sv, *lj);
                            acc[j % 4] = _mm256_fmadd_ps(s, scale, acc[j % 4]);
                        }
                    }
                    let mut tail = 0f32;
                    for b in 8 * groups..nb {
                        let (dw, fw) = x[b].scales();
                        let s = _mm256_cvtepi32_ps(x[b].dot(qs.add(b)));
                        let scale = _mm256_set1_ps(h2f(dw) * *da.add(b));
                        acc[b % 4] = _mm256_fmadd_ps(s, scale, acc[b % 4]);
                        if extras_used {
                            tail += h2f(fw) * *extra.add(b);
                        }
                    }
                    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
                    *o = hsum(_mm256_add_ps(v, extras)) + tail;
                }
            }
        }
    };
}
