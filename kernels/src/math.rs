//! Vector math of the forward pass that has to round like llama.cpp: SiLU for SwiGLU.
//!
//! llama.cpp computes SiLU with a polynomial exp (Arm's optimized-routines expf: 2^n * p(b)
//! with a degree-5 polynomial, max error ~1.5 ulp) rather than libm's `expf`. The
//! feed-forward output is quantized to 8 bits before `ffn_down`, so a last-bit difference
//! here occasionally flips a rounding there; computing the same function keeps ferrite's
//! logits on llama.cpp's. The scalar version uses `mul_add` (fused, one rounding) exactly
//! where the vector version uses FMA, so both give the same bits.

#[cfg(target_arch = "x86_64")]
use crate::dispatch::Kernels;

/// Bit patterns of the constants (hex floats, which Rust lacks).
pub(crate) const SHIFT: u32 = 0x4b40_0000; // 0x1.8p23: adding it rounds to an integer
pub(crate) const LOG2E: u32 = 0x3fb8_aa3b; // 0x1.715476p+0
pub(crate) const LN2_HI: u32 = 0x3f31_7200; // 0x1.62e4p-1
pub(crate) const LN2_LO: u32 = 0x35bf_be8e; // 0x1.7f7d1cp-20
pub(crate) const C: [u32; 5] = [0x3f7f_fff6, 0x3eff_fedb, 0x3e2a_af33, 0x3d2b_9f17, 0x3c07_2010];

fn c(bits: u32) -> f32 {
    f32::from_bits(bits)
}

/// e^x: x = n ln2 + b with |b| <= ln2/2, e^x = 2^n (1 + p(b)).
pub fn exp_approx(x: f32) -> f32 {
    let z = x.mul_add(c(LOG2E), c(SHIFT));
    let n = z - c(SHIFT);
    let b = (-n).mul_add(c(LN2_LO), (-n).mul_add(c(LN2_HI), x));
    // z's low mantissa bits hold n: shifted into the exponent field, they scale by 2^n.
    let e = z.to_bits() << 23;
    let k = f32::from_bits(e.wrapping_add(1f32.to_bits()));
    let u = b * b;
    let j = c(C[4]).mul_add(b, c(C[3])).mul_add(u, c(C[2]).mul_add(b, c(C[1]))).mul_add(u, c(C[0]) * b);
    if n.abs() <= 126.0 {
        return j.mul_add(k, k);
    }
    // |n| > 126: 2^n is split in two factors so neither overflows; beyond 192 the result
    // is 0 or infinity.
    let g = if n <= 0.0 { 0x8200_0000u32 } else { 0 };
    let s1 = f32::from_bits(g.wrapping_add(0x7f00_0000));
    if n.abs() > 192.0 {
        return s1 * s1;
    }
    let s2 = f32::from_bits(e.wrapping_sub(g));
    s2.mul_add(j, s2) * s1
}

/// gate = silu(gate) * up, eight at a time with `exp_approx`, the tail with libm's exp
/// (llama.cpp's split, so its results are reproduced bit for bit).
pub fn swiglu_scalar(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let full = n / 8 * 8;
    for (g, &u) in gate[..full].iter_mut().zip(&up[..full]) {
        *g = *g / (1.0 + exp_approx(0.0 - *g)) * u;
    }
    for (g, &u) in gate[full..n].iter_mut().zip(&up[full..n]) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// SwiGLU at the best level `Kernels::best()` allows.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if Kernels::best().level.has_avx512() {
        // SAFETY: the best level is one the CPU was checked to run.
        unsafe { crate::x86_64::avx512::swiglu(gate, up) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if Kernels::best().level.has_avx2() {
        // SAFETY: the best level is one the CPU was checked to run, and each has AVX2 + FMA.
        unsafe { crate::x86_64::avx2::swiglu(gate, up) };
        return;
    }
    swiglu_scalar(gate, up)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_approx_is_within_two_ulp() {
        let mut x = -103.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = exp_approx(x) as f64;
            let ulp = (want as f32).to_bits().abs_diff((got as f32).to_bits());
            assert!(ulp <= 2, "exp({x}) = {got}, want {want}");
            x += 0.001;
        }
        assert_eq!(exp_approx(-200.0), 0.0);
        assert_eq!(exp_approx(100.0), f32::INFINITY);
    }

    #[test]
    fn swiglu_levels_agree_bit_for_bit() {
        let n = 1000;
        let mut g: Vec<f32> = (0..n).map(|i| ((i * 7919) % 2000) as f32 / 50.0 - 20.0).collect();
        // Lanes where |n| > 126 and > 192 (exp overflows to the split or to 0/inf).
        g[8..16].copy_from_slice(&[-75.0, 100.0, 130.0, -150.0, 200.0, -300.0, 88.5, -87.0]);
        let u: Vec<f32> = (0..n).map(|i| ((i * 104729) % 1000) as f32 / 300.0 - 1.5).collect();
        let mut a = g.clone();
        swiglu_scalar(&mut a, &u);
        for (i, (&x, &y)) in g.iter().zip(&u).enumerate() {
            let want = x as f64 / (1.0 + (-x as f64).exp()) * y as f64;
            if x.abs() > 80.0 {
                // silu(x) is x or 0 to f32 precision out here.
                assert!((a[i] as f64 - want).abs() <= 1e-6 * want.abs() + 1e-30, "{x}: {} vs {want}", a[i]);
                continue;
            }
            assert!((a[i] as f64 - want).abs() <= 1e-5 * want.abs().max(1e-3), "{x} {y}: {} vs {want}", a[i]);
        }
        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        // The best level, and each x86 level this CPU runs; lengths with 8- and 1-lane tails.
        for len in [n, n - 8, n - 3, 16, 5] {
            let mut want = g[..len].to_vec();
            swiglu_scalar(&mut want, &u[..len]);
            let mut b = g[..len].to_vec();
            swiglu(&mut b, &u[..len]);
            assert_eq!(bits(&want), bits(&b), "best level, {len} values");
            #[cfg(target_arch = "x86_64")]
            {
                use crate::dispatch::Level;
                if Level::Avx2.supported() {
                    let mut b = g[..len].to_vec();
                    // SAFETY: the CPU runs the avx2 level (checked).
                    unsafe { crate::x86_64::avx2::swiglu(&mut b, &u[..len]) };
                    assert_eq!(bits(&want), bits(&b), "avx2, {len} values");
                }
                if Level::Avx512.supported() {
                    let mut b = g[..len].to_vec();
                    // SAFETY: the CPU runs the avx512 level (checked).
                    unsafe { crate::x86_64::avx512::swiglu(&mut b, &u[..len]) };
                    assert_eq!(bits(&want), bits(&b), "avx512, {len} values");
                }
            }
        }
        assert_eq!(
            bits(&a),
            bits(&{
                let mut b = g.clone();
                swiglu(&mut b, &u);
                b
            })
        );
    }
}
