//! AVX2 + FMA + F16C level: u8 x i8 products through `vpmaddubsw` + `vpmaddwd`.

mod k_quants;
mod k_quants_more;
mod legacy;
mod repacked;
mod rows_decode;

use std::arch::x86_64::*;

/// Pairs of u8 x i8 products summed to i16 (cannot saturate for our ranges: |q| <= 127,
/// u <= 127 after the sign trick or <= 63 for 6-bit values), then to i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn mul_sum(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)))
}

/// acc + the i16 pairs of `a` times those of `b`, summed per i32 lane (`vpmaddwd`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn mul_sum16(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
    _mm256_add_epi32(acc, _mm256_madd_epi16(a, b))
}

/// `mul_sum` widens through i16 here: the interleaved K kernels keep their i16 sums.
const VNNI: bool = false;

crate::x86_legacy_kernels!("avx2,fma,f16c");
crate::x86_k_kernels!("avx2,fma,f16c");
crate::x86_k_more_kernels!("avx2,fma,f16c");
crate::x86_repacked_kernels!("avx2,fma,f16c");
crate::x86_rows_kernels!("avx2,fma,f16c");

/// A constant given by its bits, in 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn k(bits: u32) -> __m256 {
    _mm256_set1_ps(f32::from_bits(bits))
}

/// `math::exp_approx` on 8 lanes (same operations, so the same bits).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn exp8(x: __m256) -> __m256 {
    use crate::math::{C, LN2_HI, LN2_LO, LOG2E, SHIFT};
    let z = _mm256_fmadd_ps(x, k(LOG2E), k(SHIFT));
    let n = _mm256_sub_ps(z, k(SHIFT));
    let b = _mm256_fnmadd_ps(n, k(LN2_LO), _mm256_fnmadd_ps(n, k(LN2_HI), x));
    let e = _mm256_slli_epi32(_mm256_castps_si256(z), 23);
    let scale = _mm256_castsi256_ps(_mm256_add_epi32(e, _mm256_set1_epi32(1f32.to_bits() as i32)));
    let abs_n = _mm256_andnot_ps(_mm256_set1_ps(-0.0), n);
    let big = _mm256_cmp_ps(abs_n, _mm256_set1_ps(126.0), _CMP_GT_OQ);
    let u = _mm256_mul_ps(b, b);
    let j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(_mm256_fmadd_ps(k(C[4]), b, k(C[3])), u, _mm256_fmadd_ps(k(C[2]), b, k(C[1]))),
        u,
        _mm256_mul_ps(k(C[0]), b),
    );
    let normal = _mm256_fmadd_ps(j, scale, scale);
    if _mm256_movemask_ps(big) == 0 {
        return normal;
    }
    // Rare lanes with |n| > 126: as the scalar code (2^n in two factors, or 0/inf).
    let g = _mm256_and_si256(
        _mm256_castps_si256(_mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ)),
        _mm256_set1_epi32(0x8200_0000u32 as i32),
    );
    let s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f00_0000)));
    let s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
    let huge = _mm256_cmp_ps(abs_n, _mm256_set1_ps(192.0), _CMP_GT_OQ);
    let split = _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1);
    let r = _mm256_blendv_ps(normal, split, big);
    _mm256_blendv_ps(r, _mm256_mul_ps(s1, s1), huge)
}

/// gate = silu(gate) * up (see `math::swiglu_scalar`; same bits).
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn swiglu(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let full = n / 8 * 8;
    for i in (0..full).step_by(8) {
        let g = _mm256_loadu_ps(gate.as_ptr().add(i));
        let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
        let s = _mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0), e));
        _mm256_storeu_ps(gate.as_mut_ptr().add(i), _mm256_mul_ps(s, _mm256_loadu_ps(up.as_ptr().add(i))));
    }
    crate::math::swiglu_scalar(&mut gate[full..n], &up[full..n]);
}

/// Sum of the 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum8(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// `attention::attend_scalar` with 8-lane dot products, exponentials and value updates.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; `out.len() == q.len()` and the rows of `keys`
/// and `values` hold positions 0..len (`attention::attend` checks both).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn attend(
    q: &[f32],
    keys: crate::attention::KvRows,
    values: crate::attention::KvRows,
    len: usize,
    scale: f32,
    out: &mut [f32],
) {
    use crate::attention::BLOCK;
    use crate::math::exp_approx;
    let hd = q.len();
    let full = hd / 8 * 8;
    let (qp, op) = (q.as_ptr(), out.as_mut_ptr());
    // Position t's row starts `stride * t + offset` elements into its data.
    let krow = |t: usize| keys.data.as_ptr().add(t * keys.stride + keys.offset) as *const __m128i;
    let vrow = |t: usize| values.data.as_ptr().add(t * values.stride + values.offset) as *const __m128i;
    out.fill(0.0);
    let (mut m, mut sum) = (f32::NEG_INFINITY, 0f32);
    let mut s = [0f32; BLOCK];
    let mut t0 = 0;
    while t0 < len {
        let nb = (len - t0).min(BLOCK);
        let mut mb = f32::NEG_INFINITY;
        for i in 0..nb {
            let kp = krow(t0 + i);
            let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let mut c = 0;
            while c + 16 <= full {
                a0 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(qp.add(c)),
                    _mm256_cvtph_ps(_mm_loadu_si128(kp.add(c / 8))),
                    a0,
                );
                a1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(qp.add(c + 8)),
                    _mm256_cvtph_ps(_mm_loadu_si128(kp.add(c / 8 + 1))),
                    a1,
                );
                c += 16;
            }
            if c < full {
                a0 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(qp.add(c)),
                    _mm256_cvtph_ps(_mm_loadu_si128(kp.add(c / 8))),
                    a0,
                );
            }
            let mut d = hsum8(_mm256_add_ps(a0, a1));
            let kt = kp as *const half::f16;
            for e in full..hd {
                d += q[e] * (*kt.add(e)).to_f32();
            }
            s[i] = d * scale;
            mb = mb.max(s[i]);
        }
        crate::attention::raise_max(out, &mut sum, &mut m, mb);
        // Exponentials eight at a time (exp8 gives exp_approx's bits), the tail one by one.
        let (mv, mut sv) = (_mm256_set1_ps(m), _mm256_setzero_ps());
        let nb8 = nb / 8 * 8;
        for i in (0..nb8).step_by(8) {
            let p = exp8(_mm256_sub_ps(_mm256_loadu_ps(s.as_ptr().add(i)), mv));
            _mm256_storeu_ps(s.as_mut_ptr().add(i), p);
            sv = _mm256_add_ps(sv, p);
        }
        sum += hsum8(sv);
        for si in &mut s[nb8..nb] {
            *si = exp_approx(*si - m);
            sum += *si;
        }
        for (i, &p) in s[..nb].iter().enumerate() {
            let vp = vrow(t0 + i);
            let pv = _mm256_set1_ps(p);
            for c in (0..full).step_by(8) {
                let o = _mm256_loadu_ps(op.add(c));
                _mm256_storeu_ps(
                    op.add(c),
                    _mm256_fmadd_ps(pv, _mm256_cvtph_ps(_mm_loadu_si128(vp.add(c / 8))), o),
                );
            }
            let vt = vp as *const half::f16;
            for e in full..hd {
                out[e] += p * (*vt.add(e)).to_f32();
            }
        }
        t0 += nb;
    }
    crate::attention::normalize(out, sum);
}

/// `attention::attend_f16` for llama.cpp's AVX2 order (`DotOrder::Lanes(8)`): per position,
/// four 8-lane fused multiply-add chains over the head, the AVX horizontal sum, then the f16
/// accumulator updated in registers and rounded through `vcvtps2ph` (nearest even).
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; `out.len() == q.len()`, `q.len()` a multiple of 32
/// and at most `MAX_HEAD_DIM`, and the rows hold positions 0..len (`attend_f16` checks).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn attend_f16(
    q: &[f32],
    keys: crate::attention::KvRows,
    values: crate::attention::KvRows,
    len: usize,
    scale: f32,
    out: &mut [f32],
) {
    let hd = q.len();
    let round = |v: __m256| _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v));
    let mut qf = [0f32; crate::attention::MAX_HEAD_DIM];
    let (qp, qfp, ap) = (q.as_ptr(), qf.as_mut_ptr(), out.as_mut_ptr());
    for c in (0..hd).step_by(8) {
        _mm256_storeu_ps(qfp.add(c), round(_mm256_loadu_ps(qp.add(c))));
        _mm256_storeu_ps(ap.add(c), _mm256_setzero_ps());
    }
    let krow = |t: usize| keys.data.as_ptr().add(t * keys.stride + keys.offset) as *const __m128i;
    let vrow = |t: usize| values.data.as_ptr().add(t * values.stride + values.offset) as *const __m128i;
    let (mut m, mut sum) = (f32::NEG_INFINITY, 0f32);
    for t in 0..len {
        let kp = krow(t);
        let mut s = [_mm256_setzero_ps(); 4];
        for i in (0..hd).step_by(32) {
            for (j, s) in s.iter_mut().enumerate() {
                let kx = _mm256_cvtph_ps(_mm_loadu_si128(kp.add(i / 8 + j)));
                *s = _mm256_fmadd_ps(_mm256_loadu_ps(qfp.add(i + 8 * j)), kx, *s);
            }
        }
        let x = _mm256_add_ps(_mm256_add_ps(s[0], s[2]), _mm256_add_ps(s[1], s[3]));
        let x4 = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps::<1>(x));
        let x2 = _mm_hadd_ps(x4, x4);
        let sc = _mm_cvtss_f32(_mm_hadd_ps(x2, x2)) * scale;
        let (ms, vs) = if sc > m {
            let ms = (m - sc).exp();
            m = sc;
            let msv = _mm256_set1_ps(ms);
            for c in (0..hd).step_by(8) {
                _mm256_storeu_ps(ap.add(c), round(_mm256_mul_ps(_mm256_loadu_ps(ap.add(c)), msv)));
            }
            (ms, 1.0)
        } else {
            (1.0, (sc - m).exp())
        };
        let (vp, vsv) = (vrow(t), _mm256_set1_ps(vs));
        for c in (0..hd).step_by(8) {
            let v = _mm256_cvtph_ps(_mm_loadu_si128(vp.add(c / 8)));
            _mm256_storeu_ps(ap.add(c), round(_mm256_fmadd_ps(v, vsv, _mm256_loadu_ps(ap.add(c)))));
        }
        sum = sum.mul_add(ms, vs);
    }
    let inv = _mm256_set1_ps(if sum == 0.0 { 0.0 } else { 1.0 / sum });
    for c in (0..hd).step_by(8) {
        _mm256_storeu_ps(ap.add(c), _mm256_mul_ps(_mm256_loadu_ps(ap.add(c)), inv));
    }
}

/// `attention::attend_many_ref` in registers: each block's keys converted and transposed
/// once (`kt[d][p]`), scores for four queries x 16 positions per step (one broadcast query
/// element against two vectors of keys per fused multiply-add pair), values converted once
/// and added with 64 output lanes in registers.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; the shapes and rows are as `attend_many` checks,
/// and the head dimension is a multiple of 64.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn attend_many(
    qs: &[&[f32]],
    lens: &[usize],
    keys: crate::attention::KvRows,
    values: crate::attention::KvRows,
    scale: f32,
    outs: &mut [&mut [f32]],
) {
    use crate::attention::{MANY_BLOCK as B, MANY_MAX_HD, MAX_MANY};
    let nq = qs.len();
    let Some(hd) = qs.first().map(|q| q.len()) else { return };
    let max_len = lens.iter().copied().max().unwrap_or(0);
    // As in `avx512::attend_many`: only this head dimension's rows of keys zeroed (the
    // scores may read up to 8 positions past the last written group), the values not at all.
    let mut kt_buf = std::mem::MaybeUninit::<[f32; MANY_MAX_HD * B]>::uninit();
    std::ptr::write_bytes(kt_buf.as_mut_ptr() as *mut f32, 0, hd * B);
    // SAFETY: hd <= MANY_MAX_HD (the caller checks it), and these hd x B floats were just
    // zeroed.
    let kt = std::slice::from_raw_parts_mut(kt_buf.as_mut_ptr() as *mut f32, hd * B);
    let mut vf_buf = std::mem::MaybeUninit::<[f32; B * MANY_MAX_HD]>::uninit();
    let vf = vf_buf.as_mut_ptr() as *mut f32;
    let mut m = [f32::NEG_INFINITY; MAX_MANY];
    let mut sum = [0f32; MAX_MANY];
    let mut s = [[0f32; B]; 4];
    let mut e = [0f32; B];
    // A zero the compiler cannot see, so that these stores stay stores (not a `memset`
    // call per query).
    let zero = std::hint::black_box(_mm256_setzero_ps());
    for o in outs.iter_mut() {
        for c in (0..hd).step_by(8) {
            _mm256_storeu_ps(o.as_mut_ptr().add(c), zero);
        }
    }
    for b0 in (0..max_len).step_by(B) {
        let nb = B.min(max_len - b0);
        for p in 0..nb {
            let vp = values.data.as_ptr().add((b0 + p) * values.stride + values.offset);
            for c in (0..hd).step_by(8) {
                _mm256_storeu_ps(
                    vf.add(p * hd + c),
                    _mm256_cvtph_ps(_mm_loadu_si128(vp.add(c) as *const __m128i)),
                );
            }
        }
        // Keys in 8 x 8 tiles, transposed in registers (positions past nb are zeros, never
        // read).
        for p0 in (0..nb).step_by(8) {
            let cnt = (nb - p0).min(8);
            for d0 in (0..hd).step_by(8) {
                let rows: [__m256; 8] = std::array::from_fn(|j| {
                    if j < cnt {
                        let kp = keys.data.as_ptr().add((b0 + p0 + j) * keys.stride + keys.offset + d0);
                        _mm256_cvtph_ps(_mm_loadu_si128(kp as *const __m128i))
                    } else {
                        _mm256_setzero_ps()
                    }
                });
                for (i, col) in transpose8(rows).into_iter().enumerate() {
                    _mm256_storeu_ps(kt.as_mut_ptr().add((d0 + i) * B + p0), col);
                }
            }
        }
        let valid = |i: usize| nb.min(lens[i].saturating_sub(b0));
        let mut i0 = 0;
        while i0 < nq {
            let g = (nq - i0).min(4);
            let most = (i0..i0 + g).map(valid).max().unwrap_or(0);
            // Missing queries of a last short group repeat the first (results unused).
            let qp: [*const f32; 4] = std::array::from_fn(|j| qs[i0 + if j < g { j } else { 0 }].as_ptr());
            for p0 in (0..most).step_by(16) {
                let mut acc = [[_mm256_setzero_ps(); 2]; 4];
                for d in 0..hd {
                    let k0 = _mm256_loadu_ps(kt.as_ptr().add(d * B + p0));
                    let k1 = _mm256_loadu_ps(kt.as_ptr().add(d * B + p0 + 8));
                    for (a, q) in acc.iter_mut().zip(qp) {
                        let b = _mm256_set1_ps(*q.add(d));
                        a[0] = _mm256_fmadd_ps(b, k0, a[0]);
                        a[1] = _mm256_fmadd_ps(b, k1, a[1]);
                    }
                }
                let sc = _mm256_set1_ps(scale);
                for (si, a) in s.iter_mut().zip(acc) {
                    _mm256_storeu_ps(si.as_mut_ptr().add(p0), _mm256_mul_ps(a[0], sc));
                    _mm256_storeu_ps(si.as_mut_ptr().add(p0 + 8), _mm256_mul_ps(a[1], sc));
                }
            }
            // Lane numbers, for the masks of valid positions below.
            let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            for (j, sj) in s.iter().enumerate().take(g) {
                let i = i0 + j;
                let n = valid(i);
                if n == 0 {
                    continue;
                }
                let out = &mut *outs[i];
                // Lanes p.. of the block that are valid positions, as a mask.
                let valid8 = |p: usize| {
                    _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32((n - p) as i32), idx))
                };
                let mut mx = _mm256_set1_ps(f32::NEG_INFINITY);
                for p in (0..n).step_by(8) {
                    let x = _mm256_blendv_ps(mx, _mm256_loadu_ps(sj.as_ptr().add(p)), valid8(p));
                    mx = _mm256_max_ps(mx, x);
                }
                let mb = max8(mx);
                crate::attention::raise_max(out, &mut sum[i], &mut m[i], mb);
                let mv = _mm256_set1_ps(m[i]);
                // The sum in `attention::block_sum`'s order: lanes 0-7 and 8-15 of its 16.
                let mut lanes = [_mm256_setzero_ps(); 2];
                for p in (0..n).step_by(8) {
                    let x = exp8(_mm256_sub_ps(_mm256_loadu_ps(sj.as_ptr().add(p)), mv));
                    _mm256_storeu_ps(e.as_mut_ptr().add(p), x);
                    let l = &mut lanes[p / 8 % 2];
                    *l = _mm256_add_ps(*l, _mm256_and_ps(x, valid8(p)));
                }
                sum[i] += sum8_halves(_mm256_add_ps(lanes[0], lanes[1]));
                for dc in (0..hd).step_by(64) {
                    let op = out.as_mut_ptr().add(dc);
                    let mut a: [__m256; 8] = std::array::from_fn(|c| _mm256_loadu_ps(op.add(8 * c)));
                    for (p, &w) in e[..n].iter().enumerate() {
                        let (w, vr) = (_mm256_set1_ps(w), vf.add(p * hd + dc));
                        for (c, a) in a.iter_mut().enumerate() {
                            *a = _mm256_fmadd_ps(w, _mm256_loadu_ps(vr.add(8 * c)), *a);
                        }
                    }
                    for (c, a) in a.iter().enumerate() {
                        _mm256_storeu_ps(op.add(8 * c), *a);
                    }
                }
            }
            i0 += g;
        }
    }
    for (o, &sm) in outs.iter_mut().zip(&sum) {
        crate::attention::normalize(o, sm);
    }
}

/// The 8 lanes summed by halves (4 + 4, 2 + 2, 1 + 1), as `attention::block_sum`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn sum8_halves(x: __m256) -> f32 {
    let t4 = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps::<1>(x));
    let t2 = _mm_add_ps(t4, _mm_movehl_ps(t4, t4));
    _mm_cvtss_f32(_mm_add_ss(t2, _mm_movehdup_ps(t2)))
}

/// The largest of 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn max8(x: __m256) -> f32 {
    let t4 = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps::<1>(x));
    let t2 = _mm_max_ps(t4, _mm_movehl_ps(t4, t4));
    _mm_cvtss_f32(_mm_max_ss(t2, _mm_movehdup_ps(t2)))
}

/// 8 vectors of 8 floats transposed: element j of result i is element i of input j.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    // Pairs of rows interleaved within each 128-bit half: [a0 b0 a1 b1 | a4 b4 a5 b5] and
    // [a2 b2 a3 b3 | a6 b6 a7 b7].
    let t: [__m256; 8] = std::array::from_fn(|i| {
        let (a, b) = (r[i & !1], r[i | 1]);
        if i % 2 == 0 {
            _mm256_unpacklo_ps(a, b)
        } else {
            _mm256_unpackhi_ps(a, b)
        }
    });
    // Then four rows: u[4g + k] holds element k (low half) and 4 + k (high half) of rows
    // 4g..4g+4.
    let mut u = [_mm256_setzero_ps(); 8];
    for g in 0..2 {
        let (t0, t1, t2, t3) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
        u[4 * g] = _mm256_shuffle_ps::<0x44>(t0, t2);
        u[4 * g + 1] = _mm256_shuffle_ps::<0xee>(t0, t2);
        u[4 * g + 2] = _mm256_shuffle_ps::<0x44>(t1, t3);
        u[4 * g + 3] = _mm256_shuffle_ps::<0xee>(t1, t3);
    }
    // Finally the halves: element k from the low halves of u[k] and u[4 + k], element 4 + k
    // from their high halves.
    let mut out = [_mm256_setzero_ps(); 8];
    for k in 0..4 {
        out[k] = _mm256_permute2f128_ps::<0x20>(u[k], u[4 + k]);
        out[4 + k] = _mm256_permute2f128_ps::<0x31>(u[k], u[4 + k]);
    }
    out
}
