//! Attention of one query over cached f16 keys and values, everything after the cache in
//! f32 (the model's prefill path): out = softmax(scale * K q) V over positions 0..len.
//!
//! Positions go in blocks of `BLOCK`: the block's scores first (one dot product per key),
//! then their exponentials against the running maximum, then the weighted values. The
//! softmax is online across blocks (acc and sum rescaled when a block raises the maximum),
//! so a stack buffer of one block's scores is all the scratch there is. Exponentials are
//! `math::exp_approx` (eight at a time in the SIMD path, the same bits).

use crate::dispatch::Kernels;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
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
    if k.level.has_avx2() {
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

/// Queries per `attend_many` call at most.
pub const MAX_MANY: usize = 128;
/// Positions per block of `attend_many` (its converted keys and values stay in L1/L2).
pub const MANY_BLOCK: usize = 64;
/// Largest head dimension `attend_many` takes (its scratch is on the stack).
pub const MANY_MAX_HD: usize = 256;

/// Many queries over the same cached keys and values (the heads of one KV head, for a run
/// of prompt tokens): query i attends positions 0..lens[i] and writes `outs[i]`. Each block
/// of `MANY_BLOCK` positions is converted from f16 once for all the queries (keys
/// transposed, so that a vector of scores covers 8 positions and no horizontal sums are
/// needed), which is most of what `attend` spends per query. Same exponentials and online
/// softmax as `attend`; scores summed in head-dimension order (`attend_many_ref`).
///
/// # Panics
/// If the slices disagree in length or exceed `MAX_MANY`, a query or output is not `hd`
/// long, hd exceeds `MANY_MAX_HD`, or the rows do not hold the longest query's positions.
pub fn attend_many(
    k: &Kernels,
    qs: &[&[f32]],
    lens: &[usize],
    keys: KvRows,
    values: KvRows,
    scale: f32,
    outs: &mut [&mut [f32]],
) {
    let hd = check_many(qs, lens, keys, values, outs);
    #[cfg(target_arch = "x86_64")]
    if k.level.has_avx512() && hd.is_multiple_of(64) {
        // SAFETY: these tables exist only if the CPU runs AVX-512F, AVX2, FMA and F16C; shapes
        // and rows were checked above, hd is a whole number of 64-wide chunks.
        unsafe { crate::x86_64::avx512::attend_many(qs, lens, keys, values, scale, outs) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if matches!(k.level, Level::Avx2 | Level::AvxVnni) && hd.is_multiple_of(64) {
        // SAFETY: these tables exist only if the CPU runs AVX2, FMA and F16C; shapes and
        // rows were checked above, hd is a whole number of 64-wide chunks.
        unsafe { crate::x86_64::avx2::attend_many(qs, lens, keys, values, scale, outs) };
        return;
    }
    #[cfg(target_arch = "aarch64")]
    if k.level == Level::Neon && hd.is_multiple_of(16) {
        // SAFETY: NEON is in every aarch64 CPU; shapes and rows were checked above, hd is a
        // whole number of 16-wide steps.
        unsafe { crate::aarch64::attention::attend_many(qs, lens, keys, values, scale, outs) };
        return;
    }
    let _ = (k, hd);
    attend_many_ref(qs, lens, keys, values, scale, outs)
}

/// The checks of `attend_many`; the head dimension.
fn check_many(qs: &[&[f32]], lens: &[usize], keys: KvRows, values: KvRows, outs: &[&mut [f32]]) -> usize {
    let hd = qs.first().map_or(0, |q| q.len());
    let max_len = lens.iter().copied().max().unwrap_or(0);
    assert!(
        qs.len() == lens.len() && qs.len() == outs.len() && qs.len() <= MAX_MANY,
        "attend_many: query lists disagree"
    );
    assert!(
        hd <= MANY_MAX_HD && qs.iter().all(|q| q.len() == hd) && outs.iter().all(|o| o.len() == hd),
        "attend_many: head widths disagree"
    );
    assert!(keys.holds(max_len, hd) && values.holds(max_len, hd), "attention rows out of range");
    hd
}

/// Scalar reference of `attend_many`: per block and query, scores by fused multiply-adds in
/// head-dimension order, the running maximum raised as in `attend`, then each position's
/// weight `exp_approx(s - m)` added to the sum and, by fused multiply-adds, its values to
/// the output, positions in order.
pub fn attend_many_ref(
    qs: &[&[f32]],
    lens: &[usize],
    keys: KvRows,
    values: KvRows,
    scale: f32,
    outs: &mut [&mut [f32]],
) {
    let hd = check_many(qs, lens, keys, values, outs);
    let max_len = lens.iter().copied().max().unwrap_or(0);
    let mut m = [f32::NEG_INFINITY; MAX_MANY];
    let mut sum = [0f32; MAX_MANY];
    outs.iter_mut().for_each(|o| o.fill(0.0));
    let mut s = [0f32; MANY_BLOCK];
    for b0 in (0..max_len).step_by(MANY_BLOCK) {
        let nb = MANY_BLOCK.min(max_len - b0);
        for (i, (q, out)) in qs.iter().zip(outs.iter_mut()).enumerate() {
            let valid = nb.min(lens[i].saturating_sub(b0));
            if valid == 0 {
                continue;
            }
            for (p, sp) in s[..valid].iter_mut().enumerate() {
                let kr = keys.row(b0 + p, hd);
                *sp = q.iter().zip(kr).fold(0f32, |a, (&x, y)| x.mul_add(y.to_f32(), a)) * scale;
            }
            let mb = s[..valid].iter().copied().fold(f32::NEG_INFINITY, f32::max);
            raise_max(out, &mut sum[i], &mut m[i], mb);
            let mut e = [0f32; MANY_BLOCK];
            for (e, &sp) in e.iter_mut().zip(&s[..valid]) {
                *e = exp_approx(sp - m[i]);
            }
            sum[i] += block_sum(&e[..valid]);
            for (p, &e) in e[..valid].iter().enumerate() {
                for (o, v) in out.iter_mut().zip(values.row(b0 + p, hd)) {
                    *o = e.mul_add(v.to_f32(), *o);
                }
            }
        }
    }
    for (o, &sm) in outs.iter_mut().zip(&sum) {
        normalize(o, sm);
    }
}

/// The sum of a block's softmax weights in the order the SIMD levels add them: 16 lanes,
/// lane l taking weights l, l + 16, l + 32, l + 48 in turn, then the halves added (16 -> 8
/// -> 4 -> 2 -> 1). A sum with one dependency chain cost a fifth of the prompt attention.
pub(crate) fn block_sum(e: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    for (p, &x) in e.iter().enumerate() {
        lanes[p % 16] += x;
    }
    let mut w = 16;
    while w > 1 {
        w /= 2;
        for l in 0..w {
            lanes[l] += lanes[l + w];
        }
    }
    lanes[0]
}

/// Largest head dimension (the model config rejects more).
pub const MAX_HEAD_DIM: usize = 1024;

/// How llama.cpp's build for an instruction set sums an f16 dot product (`ggml_vec_dot_f16`,
/// the attention scores of its short-batch path). The order of the float additions matters
/// there: the weighted values are accumulated in f16, and a score one ulp apart can round a
/// value the other way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DotOrder {
    /// No SIMD: the f32 products added one by one into an f64.
    Serial,
    /// Four accumulators of this many f32 lanes (4: NEON, 8: AVX2, 16: AVX-512) over steps of
    /// four vectors with fused multiply-adds, reduced as that build reduces them; a tail
    /// shorter than a step is added product by product in f64.
    Lanes(usize),
}

impl DotOrder {
    /// The order llama.cpp's build for a level's instruction set uses.
    pub fn of(k: &Kernels) -> DotOrder {
        use crate::dispatch::Level as L;
        match k.level {
            L::Scalar => DotOrder::Serial,
            L::Avx2 | L::AvxVnni => DotOrder::Lanes(8),
            L::Avx512 | L::Amx => DotOrder::Lanes(16),
            L::Neon => DotOrder::Lanes(4),
        }
    }
}

/// The f16 dot product of a query (values already f16) and a key row in `order`.
pub fn dot_f16_ref(order: DotOrder, q: &[f32], k: &[f16]) -> f32 {
    let mut sum = 0f64;
    let mut done = 0;
    if let DotOrder::Lanes(w) = order {
        let step = 4 * w;
        done = q.len() / step * step;
        let mut acc = [[0f32; 16]; 4];
        for i in (0..done).step_by(step) {
            for (j, a) in acc.iter_mut().enumerate() {
                for (l, a) in a[..w].iter_mut().enumerate() {
                    let e = i + j * w + l;
                    *a = q[e].mul_add(k[e].to_f32(), *a);
                }
            }
        }
        let x: [f32; 16] = std::array::from_fn(|l| (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]));
        // Each build's horizontal sum: AVX-512 (gcc's _mm512_reduce_add_ps) halves down to
        // four lanes and adds (0+2)+(1+3); AVX folds to four and adds pairs by hadd,
        // (0+1)+(2+3), as NEON's vaddvq does.
        let r = match w {
            16 => {
                let t: [f32; 8] = std::array::from_fn(|i| x[i] + x[i + 8]);
                let u: [f32; 4] = std::array::from_fn(|i| t[i] + t[i + 4]);
                (u[0] + u[2]) + (u[1] + u[3])
            }
            8 => {
                let t: [f32; 4] = std::array::from_fn(|i| x[i] + x[i + 4]);
                (t[0] + t[1]) + (t[2] + t[3])
            }
            _ => (x[0] + x[1]) + (x[2] + x[3]),
        };
        sum = r as f64;
    }
    for (a, b) in q[done..].iter().zip(&k[done..]) {
        sum += (a * b.to_f32()) as f64;
    }
    sum as f32
}

/// Attention as llama.cpp computes it for decode and batches under 64 tokens (its CPU flash
/// attention over an f16 cache): the query rounded to f16, scores summed in the order of
/// llama.cpp's build for the level's instruction set (`DotOrder::of`), online softmax with the
/// C library's `expf`, and the weighted values accumulated in f16, one rounding per fused
/// multiply-add. Matching its roundings keeps greedy runs on the same tokens as llama.cpp
/// longer; x86 and NEON levels run it in SIMD registers, the scalar level through
/// `attend_f16_ref`. (Not emulated: llama.cpp's split of a single query's positions across
/// threads once its cache view reaches 512 positions, whose partial sums round separately.)
///
/// # Panics
/// As `attend`, or if the head dimension exceeds `MAX_HEAD_DIM`.
pub fn attend_f16(
    k: &Kernels,
    q: &[f32],
    keys: KvRows,
    values: KvRows,
    len: usize,
    scale: f32,
    out: &mut [f32],
) {
    let hd = q.len();
    assert!(out.len() == hd && keys.holds(len, hd) && values.holds(len, hd), "attention rows out of range");
    assert!(hd <= MAX_HEAD_DIM, "head dimension {hd} over {MAX_HEAD_DIM}");
    #[cfg(target_arch = "x86_64")]
    match k.level {
        l if l.has_avx512() && hd.is_multiple_of(64) => {
            // SAFETY: these tables exist only if the CPU runs AVX-512 F/BW/VL, AVX2, FMA and
            // F16C; rows were checked above, hd is a whole number of steps.
            unsafe { crate::x86_64::avx512::attend_f16(q, keys, values, len, scale, out) };
            return;
        }
        Level::Avx2 | Level::AvxVnni if hd.is_multiple_of(32) => {
            // SAFETY: these tables exist only if the CPU runs AVX2, FMA and F16C; rows were
            // checked above, hd is a whole number of steps.
            unsafe { crate::x86_64::avx2::attend_f16(q, keys, values, len, scale, out) };
            return;
        }
        _ => {}
    }
    #[cfg(target_arch = "aarch64")]
    if k.level == Level::Neon && hd.is_multiple_of(16) {
        // SAFETY: NEON is in every aarch64 CPU; rows were checked above, hd is a whole number
        // of 16-wide steps and at most MAX_HEAD_DIM.
        unsafe { crate::aarch64::attention::attend_f16(q, keys, values, len, scale, out) };
        return;
    }
    attend_f16_ref(DotOrder::of(k), q, keys, values, len, scale, out)
}

/// Scalar reference of `attend_f16` for a given dot order.
pub fn attend_f16_ref(
    order: DotOrder,
    q: &[f32],
    keys: KvRows,
    values: KvRows,
    len: usize,
    scale: f32,
    out: &mut [f32],
) {
    let hd = q.len();
    assert!(out.len() == hd && keys.holds(len, hd) && values.holds(len, hd), "attention rows out of range");
    assert!(hd <= MAX_HEAD_DIM, "head dimension {hd} over {MAX_HEAD_DIM}");
    let round = |x: f32| f16::from_f32(x).to_f32();
    let mut qf = [0f32; MAX_HEAD_DIM];
    let qf = &mut qf[..hd];
    for (d, &v) in qf.iter_mut().zip(q) {
        *d = round(v);
    }
    let acc = out;
    acc.fill(0.0);
    let (mut m, mut sum) = (f32::NEG_INFINITY, 0f32);
    for t in 0..len {
        let sc = dot_f16_ref(order, qf, keys.row(t, hd)) * scale;
        let (ms, vs) = if sc > m {
            let ms = (m - sc).exp();
            m = sc;
            acc.iter_mut().for_each(|a| *a = round(*a * ms));
            (ms, 1.0)
        } else {
            (1.0, (sc - m).exp())
        };
        for (a, v) in acc.iter_mut().zip(values.row(t, hd)) {
            *a = round(v.to_f32().mul_add(vs, *a));
        }
        sum = sum.mul_add(ms, vs);
    }
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    acc.iter_mut().for_each(|a| *a *= inv);
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

    /// Random keys and values for `len` positions of width hd inside wider rows (as in the
    /// cache: other heads around), the query, and the scores' spread.
    fn case(hd: usize, len: usize, spread: f32, seed: &mut u64) -> (Vec<f16>, Vec<f16>, Vec<f32>) {
        let kvd = 3 * hd + 5;
        let keys = (0..len * kvd).map(|_| f16::from_f32(rng(seed) * spread)).collect();
        let values = (0..len * kvd).map(|_| f16::from_f32(rng(seed) * 3.0)).collect();
        let q = (0..hd).map(|_| rng(seed) * spread).collect();
        (keys, values, q)
    }

    /// The SIMD bodies of the f16 path are the reference in registers: same bits at every
    /// level, for widths with and without a SIMD body, scores that keep raising the maximum
    /// (rescaling the f16 accumulator) and scores far apart.
    #[test]
    fn f16_path_levels_equal_their_reference_bit_for_bit() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for &(hd, len, spread) in &[
            (64, 1, 1.0),
            (64, 5, 1.0),
            (64, 200, 4.0),
            (128, 77, 8.0),
            (32, 40, 2.0),
            (96, 33, 3.0),
            (80, 9, 1.0),
            (6, 3, 1.0),
            (64, 300, 60.0),
        ] {
            let (keys, values, mut q) = case(hd, len, spread, &mut seed);
            if spread > 50.0 {
                // Keys growing along the query: nearly every position is a new maximum.
                q.iter_mut().for_each(|x| *x = x.abs());
            }
            let kvd = 3 * hd + 5;
            let (kr, vr) = (
                KvRows { data: &keys, stride: kvd, offset: hd + 2 },
                KvRows { data: &values, stride: kvd, offset: hd + 2 },
            );
            let scale = 1.0 / (hd as f32).sqrt();
            for level in Kernels::available() {
                let k = Kernels::for_level(level).unwrap();
                let (mut got, mut want) = (vec![0f32; hd], vec![0f32; hd]);
                attend_f16(k, &q, kr, vr, len, scale, &mut got);
                attend_f16_ref(DotOrder::of(k), &q, kr, vr, len, scale, &mut want);
                for d in 0..hd {
                    assert_eq!(got[d].to_bits(), want[d].to_bits(), "{} hd={hd} len={len} d={d}", k.name);
                }
            }
        }
    }

    /// NEON's f16 dot product adds in llama.cpp's NEON order to the bit, on terms spread over
    /// many binades (so that the order of the additions shows; through the whole attention
    /// the f16 accumulator's rounding hides a score's last bits).
    #[cfg(target_arch = "aarch64")]
    #[test]
    fn neon_dot_order_is_lanes_4() {
        let mut seed = 0x5eed_0fd0_7000_0001_u64;
        for hd in [16, 64, 128, 256] {
            for _ in 0..200 {
                let mut wide = || rng(&mut seed) * 2f32.powi((rng(&mut seed) * 40.0) as i32);
                let q: Vec<f32> = (0..hd).map(|_| f16::from_f32(wide()).to_f32()).collect();
                let k: Vec<f16> = (0..hd).map(|_| f16::from_f32(wide())).collect();
                // SAFETY: NEON is in every aarch64 CPU; k holds hd values.
                let got = unsafe { crate::aarch64::attention::dot_f16(&q, k.as_ptr()) };
                let want = dot_f16_ref(DotOrder::Lanes(4), &q, &k);
                assert_eq!(got.to_bits(), want.to_bits(), "hd={hd}: {got} vs {want}");
            }
        }
    }

    /// Every dot order is a dot product (within f32 rounding of the sum of |terms|), and the
    /// f16 path is a softmax attention (within the f16 accumulator's worst-case rounding).
    #[test]
    fn f16_path_orders_match_f64() {
        let mut seed = 0x1234_5678_9abc_def1u64;
        for order in [DotOrder::Serial, DotOrder::Lanes(4), DotOrder::Lanes(8), DotOrder::Lanes(16)] {
            for &(hd, len) in &[(64, 30), (128, 50), (100, 20), (64, 1)] {
                let (keys, values, q) = case(hd, len, 2.0, &mut seed);
                let kvd = 3 * hd + 5;
                let (kr, vr) = (
                    KvRows { data: &keys, stride: kvd, offset: 0 },
                    KvRows { data: &values, stride: kvd, offset: 0 },
                );
                let qf: Vec<f32> = q.iter().map(|&x| f16::from_f32(x).to_f32()).collect();
                let sc: Vec<f64> = (0..len)
                    .map(|t| {
                        let kt = kr.row(t, hd);
                        let d = dot_f16_ref(order, &qf, kt);
                        let exact: f64 = qf.iter().zip(kt).map(|(&a, b)| a as f64 * b.to_f64()).sum();
                        let terms: f64 = qf.iter().zip(kt).map(|(&a, b)| (a as f64 * b.to_f64()).abs()).sum();
                        assert!(
                            (d as f64 - exact).abs() <= 1e-6 * terms + 1e-30,
                            "{order:?} hd={hd}: {d} vs {exact}"
                        );
                        exact * 0.125
                    })
                    .collect();
                let m = sc.iter().cloned().fold(f64::MIN, f64::max);
                let p: Vec<f64> = sc.iter().map(|s| (s - m).exp()).collect();
                let total: f64 = p.iter().sum();
                let mut got = vec![0f32; hd];
                attend_f16_ref(order, &q, kr, vr, len, 0.125, &mut got);
                for (d, &g) in got.iter().enumerate() {
                    let want = (0..len).map(|t| p[t] * vr.row(t, hd)[d].to_f64()).sum::<f64>() / total;
                    // Up to two f16 roundings (2^-11 relative) per position, each of at most
                    // the largest value (1.5) times the running sum's share of the total.
                    let tol = 2.0 * len as f64 * 2f64.powi(-11) * 1.5;
                    assert!(
                        (g as f64 - want).abs() <= tol,
                        "{order:?} hd={hd} len={len} d={d}: {g} vs {want}"
                    );
                }
            }
        }
    }

    /// `attend_many` at every level equals its reference to the bit, and the reference is a
    /// softmax attention (within f32 rounding, as `attend`), for query counts around the
    /// groups of four, lengths around the blocks of 64 and the steps of 16, and queries of
    /// different lengths in one call.
    #[test]
    fn attend_many_matches_reference_and_f64() {
        let mut seed = 0x0ddb_1a5e_5eed_0001u64;
        for &(hd, nq, max_len, spread) in &[
            (64, 1, 1, 1.0),
            (64, 4, 17, 2.0),
            (64, 7, 64, 4.0),
            (64, 13, 150, 8.0),
            (128, 5, 70, 3.0),
            (128, 9, 200, 30.0),
            (80, 3, 40, 1.0),
        ] {
            let (keys, values, _) = case(hd, max_len, spread, &mut seed);
            let kvd = 3 * hd + 5;
            let (kr, vr) = (
                KvRows { data: &keys, stride: kvd, offset: 1 },
                KvRows { data: &values, stride: kvd, offset: 1 },
            );
            let qv: Vec<Vec<f32>> =
                (0..nq).map(|_| (0..hd).map(|_| rng(&mut seed) * spread).collect()).collect();
            let qs: Vec<&[f32]> = qv.iter().map(|q| q.as_slice()).collect();
            // Causal-like lengths: the last query sees everything, earlier ones less.
            let lens: Vec<usize> =
                (0..nq).map(|i| max_len - (nq - 1 - i).min(max_len - 1) * 3 % max_len.max(1)).collect();
            let scale = 1.0 / (hd as f32).sqrt();
            let mut want = vec![vec![0f32; hd]; nq];
            {
                let mut outs: Vec<&mut [f32]> = want.iter_mut().map(|o| o.as_mut_slice()).collect();
                attend_many_ref(&qs, &lens, kr, vr, scale, &mut outs);
            }
            for level in Kernels::available() {
                let k = Kernels::for_level(level).unwrap();
                let mut got = vec![vec![1f32; hd]; nq];
                let mut outs: Vec<&mut [f32]> = got.iter_mut().map(|o| o.as_mut_slice()).collect();
                attend_many(k, &qs, &lens, kr, vr, scale, &mut outs);
                for i in 0..nq {
                    for d in 0..hd {
                        assert_eq!(
                            got[i][d].to_bits(),
                            want[i][d].to_bits(),
                            "{} hd={hd} nq={nq} query {i} d={d}",
                            k.name
                        );
                    }
                }
            }
            let vmax = values.iter().map(|v| v.to_f64().abs()).fold(0.0, f64::max);
            for i in 0..nq {
                let sc: Vec<f64> = (0..lens[i])
                    .map(|t| {
                        qs[i].iter().zip(kr.row(t, hd)).map(|(&a, b)| a as f64 * b.to_f64()).sum::<f64>()
                            * scale as f64
                    })
                    .collect();
                let m = sc.iter().cloned().fold(f64::MIN, f64::max);
                let p: Vec<f64> = sc.iter().map(|s| (s - m).exp()).collect();
                let total: f64 = p.iter().sum();
                for d in 0..hd {
                    let exact = (0..lens[i]).map(|t| p[t] * vr.row(t, hd)[d].to_f64()).sum::<f64>() / total;
                    assert!(
                        (want[i][d] as f64 - exact).abs() <= 2e-5 * vmax,
                        "hd={hd} query {i} d={d}: {} vs {exact}",
                        want[i][d]
                    );
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
