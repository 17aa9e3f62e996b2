//! f32 vector operations of the forward pass: RMSNorm, RoPE, softmax, SiLU/SwiGLU.

/// out = x / sqrt(mean(x^2) + eps) * w. The squares are summed in f64 and the mean rounded
/// to f32 once, as llama.cpp does: an f32 sum differs in the last bits, enough to flip an
/// occasional rounding when the next matmul quantizes its input to 8 bits.
///
/// The f64 sum runs in 8 independent chains (a single chain is a 4-cycle add per element):
/// llama.cpp adds in order, and the two f64 sums differ by ~1e-16 relative, far below the
/// f32 rounding of the mean, so the f32 results agree except on a tie ~1e-9 of the time.
pub fn rmsnorm(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    let mut acc = [0f64; 8];
    let chunks = x.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|&v| (v * v) as f64).sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += (v * v) as f64;
        }
    }
    let sum = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail;
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = v * scale * g;
    }
}

/// Rotary position embedding, GGUF `llama` convention (ggml rope mode 0): adjacent pairs
/// (x[2i], x[2i+1]) of each head rotate by pos * theta_i. `inv_freq[i]` holds
/// base^(-2i/rope_dims) with any scaling already applied; dimensions beyond rope_dims
/// (2 * inv_freq.len()) are left alone. One vector at one position; the forward pass uses
/// `rope_table` once per batch and `rope_apply` per row.
pub fn rope(x: &mut [f32], head_dim: usize, pos: usize, inv_freq: &[f32]) {
    let mut cs = vec![(0f32, 0f32); inv_freq.len().min(head_dim / 2)];
    rope_table(pos, inv_freq, &mut cs);
    rope_apply(x, head_dim, &cs);
}

/// The (sin, cos) of pos * inv_freq[i] for one position: computed once per forward pass and
/// shared by every layer (the rotation angles depend on the position alone).
pub fn rope_table(pos: usize, inv_freq: &[f32], cs: &mut [(f32, f32)]) {
    for (c, &f) in cs.iter_mut().zip(inv_freq) {
        *c = (pos as f32 * f).sin_cos();
    }
}

/// Rotates the first 2 * cs.len() dimensions of each head of `x` by the angles of `cs`
/// (`rope_table` of the vector's position).
pub fn rope_apply(x: &mut [f32], head_dim: usize, cs: &[(f32, f32)]) {
    for head in x.chunks_exact_mut(head_dim) {
        for (pair, &(s, c)) in head.chunks_exact_mut(2).zip(cs) {
            let (a, b) = (pair[0], pair[1]);
            pair[0] = a * c - b * s;
            pair[1] = a * s + b * c;
        }
    }
}

/// In-place softmax.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// gate = silu(gate) * up, the SwiGLU of the feed-forward block (vectorized in the kernels,
/// with the same exp approximation as llama.cpp; see `ferrite_kernels::math`).
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    ferrite_kernels::math::swiglu(gate, up);
}

/// Inputs at least this long run in parallel (prefill): below it, waking the pool's workers
/// costs more than the loop.
const PAR_MIN: usize = 1 << 14;

/// `f(i, chunk)` for the `chunk`-long pieces of `x`, one pool task per piece when `x` is long.
/// Besides using both cores, this keeps a prefill batch's rows where the matmul that wrote
/// them left them: read from one thread, lines the other core wrote cost ~50 ns each here.
pub fn par_chunks(x: &mut [f32], chunk: usize, f: &(dyn Fn(usize, &mut [f32]) + Sync)) {
    let n = x.len().div_ceil(chunk.max(1));
    if n < 2 || x.len() < PAR_MIN {
        x.chunks_mut(chunk.max(1)).enumerate().for_each(|(i, c)| f(i, c));
        return;
    }
    // Each task takes its own disjoint pieces.
    let (out, len) = (ferrite_kernels::pool::SharedMut(x.as_mut_ptr()), x.len());
    // Runs of pieces per task, a few tasks per thread: claiming a task is an atomic on a
    // line both cores use (~0.2 us), more than a piece of a 576-wide model costs.
    let pool = ferrite_kernels::pool::global();
    let per = n.div_ceil(pool.threads() * 4);
    pool.run(n.div_ceil(per), &|t| {
        for i in t * per..n.min((t + 1) * per) {
            let (a, b) = (i * chunk, ((i + 1) * chunk).min(len));
            // SAFETY: piece i (a..b, inside x) belongs to task t alone, and `x` outlives the
            // parallel section.
            f(i, unsafe { std::slice::from_raw_parts_mut(out.ptr().add(a), b - a) });
        }
    });
}

pub fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Four partial sums: independent chains vectorise and round less.
    let mut s = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            s[k] += x[k] * y[k];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    s.iter().sum::<f32>() + tail
}

/// out += w * v.
pub fn axpy(out: &mut [f32], w: f32, v: &[f32]) {
    for (o, &x) in out.iter_mut().zip(v) {
        *o += w * x;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rmsnorm_unit_rms() {
        let x = [3.0f32, -4.0, 0.0, 5.0];
        let mut out = [0f32; 4];
        rmsnorm(&mut out, &x, &[1.0, 2.0, 1.0, 1.0], 0.0);
        let rms = (50.0f32 / 4.0).sqrt();
        assert!((out[0] - 3.0 / rms).abs() < 1e-6);
        assert!((out[1] + 8.0 / rms).abs() < 1e-6);
    }

    #[test]
    fn rope_rotates_pairs_and_keeps_norm() {
        let mut x = [1.0f32, 0.0, 0.0, 1.0];
        rope(&mut x, 4, 1, &[std::f32::consts::FRAC_PI_2, 0.0]);
        assert!((x[0]).abs() < 1e-6 && (x[1] - 1.0).abs() < 1e-6, "{x:?}");
        assert_eq!(&x[2..], &[0.0, 1.0]);
        let mut y = [0.3f32, -0.7, 0.2, 0.9];
        let n0: f32 = y.iter().map(|v| v * v).sum();
        rope(&mut y, 4, 17, &[0.5, 0.01]);
        let n1: f32 = y.iter().map(|v| v * v).sum();
        assert!((n0 - n1).abs() < 1e-5);
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut x = [1.0f32, 2.0, 3.0, -1000.0];
        softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[2] > x[1] && x[1] > x[0] && x[3] == 0.0);
    }

    #[test]
    fn swiglu_matches_definition() {
        let mut g = [0.0f32, 1.0, -2.0];
        swiglu(&mut g, &[5.0, 2.0, 1.0]);
        assert_eq!(g[0], 0.0);
        assert!((g[1] - 2.0 / (1.0 + (-1.0f32).exp())).abs() < 1e-6);
        assert!((g[2] - (-2.0 / (1.0 + 2.0f32.exp()))).abs() < 1e-6);
    }
}
