//! Attention of one query over cached f16 keys and values, everything after the cache in
//! f32 (the model's prefill path): out = softmax(scale * K q) V over positions 0..len.
//!
//! Positions go in blocks of `BLOCK`: the block's scores first (one dot product per key),
//! then their exponentials against the running maximum, then the weighted values. The
//! softmax is online across blocks (acc and sum rescaled when a block raises the maximum),
//! so a stack buffer of one block's scores is all the scratch there is. Exponentials are
//! `math::exp_approx` (eight at a time in the SIMD path, the same bits).

use crate::dispatch::Kernels;
#[cfg(target_arch = "x86_64")]
use crate::dispatch::Level;
use crate::math::exp_approx;
use half::f16;

/// Positions per block of scores.
pub const BLOCK: usize = 128;

/// Rows of a cache: position t's vector is `data[t * stride + offset..][..len of q]`.
#[derive(Clone, Copy, Debug)]
pub struct KvRows<'a> {
    pub data: &'a [f16],
    pub stride: usize,
    pub offset: usize,
}

impl KvRows<'_> {
    fn row(&self, t: usize, hd: usize) -> &[f16] {
        let s = t * self.stride + self.offset;
        &self.data[s..s + hd]
    }

    /// Whether rows 0..len of width hd lie inside the data.
    fn holds(&self, len: usize, hd: usize) -> bool {
        len == 0
            || (len - 1)
                .checked_mul(self.stride)
                .and_then(|s| s.checked_add(self.offset + hd))
                .is_some_and(|end| end <= self.data.len())
    }
}

/// The attention of query `q` over positions 0..len at the level of `k` (x86 levels share
/// one AVX2 + FMA + F16C body; the others run the scalar code).
///
/// # Panics
/// If `out` is not as long as `q`, or the rows do not hold `len` positions: callers size
/// these from the model's shape.
pub fn attend(k: &Kernels, q: &[f32], keys: KvRows, values: KvRows, len: usize, scale: f32, out: &mut [f32]) {
    let hd = q.len();
    assert!(out.len() == hd && keys.holds(len, hd) && values.holds(len, hd), "attention rows out of range");
    #[cfg(target_arch = "x86_64")]
    if matches!(k.level, Level::Avx2 | Level::AvxVnni | Level::Avx512) {
        // SAFETY: a table of these levels exists only if the CPU runs AVX2, FMA and F16C;
        // the row bounds were checked above.
        unsafe { crate::x86_64::avx2::attend(q, keys, values, len, scale, out) };
        return;
    }
    let _ = k;
    attend_scalar(q, keys, values, len, scale, out)
}

/// Scalar reference of `attend` (same blocks, same exponentials).
pub fn attend_scalar(q: &[f32], keys: KvRows, values: KvRows, len: usize, scale: f32, out: &mut [f32]) {
    let hd = q.len();
    assert!(out.len() == hd && keys.holds(len, hd) && values.holds(len, hd), "attention rows out of range");
    out.fill(0.0);
    let (mut m, mut sum) = (f32::NEG_INFINITY, 0f32);
    let mut s = [0f32; BLOCK];
    let mut t0 = 0;
    while t0 < len {
        let nb = (len - t0).min(BLOCK);
        let mut mb = f32::NEG_INFINITY;
        for (i, si) in s[..nb].iter_mut().enumerate() {
            let kt = keys.row(t0 + i, hd);
            *si = q.iter().zip(kt).map(|(a, b)| a * b.to_f32()).sum::<f32>() * scale;
            mb = mb.max(*si);
        }
        raise_max(out, &mut sum, &mut m, mb);
        for (i, &si) in s[..nb].iter().enumerate() {
            let p = exp_approx(si - m);
            sum += p;
            for (o, v) in out.iter_mut().zip(values.row(t0 + i, hd)) {
                *o += p * v.to_f32();
            }
        }
        t0 += nb;
    }
    normalize(out, sum);
}

/// A block raised the running maximum from `m` to `mb`: rescale what was summed so far.
pub(crate) fn raise_max(out: &mut [f32], sum: &mut f32, m: &mut f32, mb: f32) {
    if mb > *m {
        let r = if *m == f32::NEG_INFINITY { 0.0 } else { exp_approx(*m - mb) };
        out.iter_mut().for_each(|o| *o *= r);
        *sum *= r;
        *m = mb;
    }
}

/// Divide the weighted values by the sum of the weights.
pub(crate) fn normalize(out: &mut [f32], sum: f32) {
    if sum > 0.0 {
        let inv = 1.0 / sum;
        out.iter_mut().for_each(|o| *o *= inv);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: &mut u64) -> f32 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }

    /// Every level against a plain f64 softmax (two passes, no blocks): the output is a
    /// convex combination of value rows, so |Δ| is bounded relative to the largest value.
    #[test]
    fn every_level_matches_f64_softmax() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for &(hd, len, spread) in &[
            (64, 1, 1.0),
            (64, 5, 1.0),
            (64, 127, 4.0),
            (64, 128, 4.0),
            (64, 129, 4.0),
            (128, 300, 8.0),
            (80, 257, 2.0),
            (7, 40, 1.0),
            (64, 600, 40.0),
        ] {
            let (kvd, off) = (3 * hd + 5, hd + 2);
            let keys: Vec<f16> = (0..len * kvd).map(|_| f16::from_f32(rng(&mut seed) * spread)).collect();
            let values: Vec<f16> = (0..len * kvd).map(|_| f16::from_f32(rng(&mut seed) * 3.0)).collect();
            let q: Vec<f32> = (0..hd).map(|_| rng(&mut seed) * spread).collect();
            let scale = 1.0 / (hd as f32).sqrt();
            let (kr, vr) = (
                KvRows { data: &keys, stride: kvd, offset: off },
                KvRows { data: &values, stride: kvd, offset: off },
            );
            let sc: Vec<f64> = (0..len)
                .map(|t| {
                    let kt = kr.row(t, hd);
                    q.iter().zip(kt).map(|(&a, b)| a as f64 * b.to_f64()).sum::<f64>() * scale as f64
                })
                .collect();
            let m = sc.iter().cloned().fold(f64::MIN, f64::max);
            let p: Vec<f64> = sc.iter().map(|s| (s - m).exp()).collect();
            let total: f64 = p.iter().sum();
            let want: Vec<f64> = (0..hd)
                .map(|d| (0..len).map(|t| p[t] * vr.row(t, hd)[d].to_f64()).sum::<f64>() / total)
                .collect();
            let vmax = values.iter().map(|v| v.to_f64().abs()).fold(0.0, f64::max);
            let mut outs = vec![];
            let mut got = vec![0f32; hd];
            attend_scalar(&q, kr, vr, len, scale, &mut got);
            outs.push(("scalar reference", got.clone()));
            for level in Kernels::available() {
                let k = Kernels::for_level(level).unwrap();
                attend(k, &q, kr, vr, len, scale, &mut got);
                outs.push((k.name, got.clone()));
            }
            for (name, got) in outs {
                for d in 0..hd {
                    let err = (got[d] as f64 - want[d]).abs();
                    assert!(err <= 2e-5 * vmax, "{name} hd={hd} len={len} d={d}: {} vs {}", got[d], want[d]);
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn rows_past_the_cache_are_refused() {
        let data = vec![f16::ZERO; 64 * 3];
        let r = KvRows { data: &data, stride: 64, offset: 0 };
        let mut out = vec![0f32; 64];
        attend(Kernels::best(), &[0.0; 64], r, r, 4, 1.0, &mut out);
    }
}
