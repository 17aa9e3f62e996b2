//! Every kernel level against the scalar reference, on random data and edge cases, at every
//! block count 1..64 and on unaligned slices; and matvec/matmul against a plain f32 matmul
//! of the dequantized weights.

use ferrite_kernels::blocks::{as_bytes, f16_bytes};
use ferrite_kernels::{
    dequantize, matmul, vec_dot, ActBuf, ActRef, ActType, GgmlType, Kernels, Level, Matrix,
};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

const TYPES: [GgmlType; 15] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::IQ4_NL,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_XS,
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
];

/// Offsets of the f16 scale fields in a block, which must hold finite values.
fn f16_fields(ty: GgmlType) -> &'static [usize] {
    use GgmlType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 | IQ4_NL | IQ4_XS => &[0],
        Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
        Q2_K => &[80, 82],
        Q3_K => &[108],
        Q6_K => &[208],
        _ => &[],
    }
}

#[derive(Clone, Copy, Debug)]
enum Case {
    Random,
    Zeros,
    AllOnes,
    AllZeroBits,
    HugeScale,
    TinyScale,
}

const CASES: [Case; 6] =
    [Case::Random, Case::Zeros, Case::AllOnes, Case::AllZeroBits, Case::HugeScale, Case::TinyScale];

/// Random weight bytes for `nb` blocks with sane (or deliberately extreme) scales.
/// AllOnes sets every quant bit (all nibbles 15), AllZeroBits clears them (all nibbles 0).
fn weights(ty: GgmlType, nb: usize, case: Case, rng: &mut Rng) -> Vec<u8> {
    let n = nb * ty.block_size();
    match ty {
        GgmlType::F32 => return (0..n).flat_map(|_| rng.f32().to_le_bytes()).collect(),
        GgmlType::F16 => return (0..n).flat_map(|_| half::f16::from_f32(rng.f32()).to_le_bytes()).collect(),
        GgmlType::BF16 => {
            return (0..n).flat_map(|_| half::bf16::from_f32(rng.f32()).to_le_bytes()).collect()
        }
        _ => {}
    }
    let bs = ty.type_size();
    let mut b: Vec<u8> = match case {
        Case::Zeros | Case::AllZeroBits => vec![0; nb * bs],
        Case::AllOnes => vec![0xff; nb * bs],
        _ => (0..nb * bs).map(|_| rng.next() as u8).collect(),
    };
    for blk in b.chunks_exact_mut(bs) {
        for &off in f16_fields(ty) {
            let v = match case {
                Case::Zeros => 0.0,
                Case::HugeScale => 1000.0 * (rng.f32() + 1.5),
                Case::TinyScale => 1e-6 * (rng.f32() + 1.5),
                _ => 0.01 * (rng.f32() + 1.2),
            };
            blk[off..off + 2].copy_from_slice(&f16_bytes(v));
        }
    }
    b
}

fn activation(n: usize, rng: &mut Rng) -> Vec<f32> {
    (0..n).map(|i| rng.f32() * if i % 37 == 0 { 8.0 } else { 1.0 }).collect()
}

/// Sum of |w_i * a_i| over the dequantized weights and the dequantized activation.
fn abs_terms(ty: GgmlType, w: &[u8], a: ActRef) -> f64 {
    let n = a.len();
    let mut wf = vec![0f32; n];
    dequantize(ty, w, &mut wf).unwrap();
    let mut af = vec![0f32; n];
    match a {
        ActRef::Q8_0(b) => dequantize(GgmlType::Q8_0, as_bytes(b), &mut af).unwrap(),
        ActRef::Q8_1(b) => dequantize(GgmlType::Q8_1, as_bytes(b), &mut af).unwrap(),
        ActRef::Q8_0S(b) => {
            for (o, blk) in af.chunks_exact_mut(32).zip(b) {
                o.iter_mut().zip(&blk.qs).for_each(|(o, &q)| *o = blk.d * q as f32);
            }
        }
        ActRef::Q8K(b) => ferrite_kernels::scalar::dequantize_q8_k(b, &mut af),
        ActRef::F32(b) => af.copy_from_slice(b),
    }
    wf.iter().zip(&af).map(|(&x, &y)| (x as f64 * y as f64).abs()).sum()
}

/// Every table this CPU runs: each level's, and the variants a level passed over (NEON
/// without `sdot` where the CPU has dotprod).
fn levels() -> Vec<&'static Kernels> {
    let ls: Vec<_> = Kernels::tables().iter().collect();
    eprintln!("levels: {:?}", ls.iter().map(|k| k.name).collect::<Vec<_>>());
    ls
}

#[test]
fn every_level_matches_scalar() {
    let scalar = Kernels::for_level(Level::Scalar).unwrap();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut buf = ActBuf::new();
    let mut checked = 0;
    for k in levels().into_iter().filter(|k| k.level != Level::Scalar) {
        for ty in TYPES {
            let act = ActType::for_weight(ty).unwrap();
            for case in CASES {
                for nb in 1..=64usize {
                    if !matches!(case, Case::Random) && nb % 7 != 1 {
                        continue;
                    }
                    let n = nb * ty.block_size().max(act.block());
                    let w = weights(ty, n / ty.block_size(), case, &mut rng);
                    // Unaligned: the row starts one byte into a larger buffer.
                    let mut shifted = vec![0u8; w.len() + 1];
                    shifted[1..].copy_from_slice(&w);
                    let x = activation(n, &mut rng);
                    let a = buf.quantize(act, &x);
                    let want = vec_dot(scalar, ty, &w, a).unwrap();
                    let got = vec_dot(k, ty, &shifted[1..], a).unwrap();
                    let tol = 1e-5 * abs_terms(ty, &w, a);
                    assert!(
                        ((got - want) as f64).abs() <= tol.max(1e-30),
                        "{} {ty} {case:?} {nb} blocks: {got} vs scalar {want} (tol {tol})",
                        k.name
                    );
                    neon_is_scalar(k, ty, got, want);
                    checked += 1;
                }
            }
        }
    }
    eprintln!("{checked} comparisons");
}

/// Every SIMD level (and NEON variant) this CPU runs has its own kernel for every type (none
/// falls back to the scalar reference).
#[test]
fn every_level_is_complete() {
    for k in levels().into_iter().filter(|k| k.level != Level::Scalar) {
        let missing: Vec<_> = TYPES.into_iter().filter(|&ty| !k.is_native(ty)).collect();
        assert!(missing.is_empty(), "{} falls back to scalar for {missing:?}", k.name);
    }
}

/// With every scale 1 (weights and activations) a dot product is its integer sums, and on
/// this data their f32 scaling and summing is exact (or done as the scalar reference does),
/// so each level must give the scalar result exactly: any difference is in an integer sum.
/// Activations take every value a Q8 block holds (|q| <= 127) where the sums allow it.
#[test]
fn integer_sums_are_exact() {
    use ferrite_kernels::blocks::{BlockQ8K, BlockQ8_0, BlockQ8_1};
    let scalar = Kernels::for_level(Level::Scalar).unwrap();
    let mut rng = Rng(0x0dd_ba11);
    let one = f16_bytes(1.0);
    let mut checked = 0;
    for k in levels().into_iter().filter(|k| k.level != Level::Scalar) {
        for ty in TYPES.into_iter().filter(|t| !matches!(t, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)) {
            let act = ActType::for_weight(ty).unwrap();
            for case in [Case::Random, Case::AllOnes, Case::AllZeroBits] {
                for nb in 1..=8usize {
                    let n = nb * ty.block_size().max(act.block());
                    let mut w = weights(ty, n / ty.block_size(), case, &mut rng);
                    for blk in w.chunks_exact_mut(ty.type_size()) {
                        for &off in f16_fields(ty) {
                            blk[off..off + 2].copy_from_slice(&one);
                        }
                    }
                    // Exact only while every partial sum, in any order, stays below 2^24 (f32
                    // holds integers exactly up to there): cap |activation| so that
                    // sum_i (|w_i| + 2 min_i) * cap stays below it (the min terms are summed
                    // apart from the scaled quants, so each can be as large as |w_i| + min_i).
                    // Weights with small integers keep the full range +-127; IQ4_XS with every
                    // bit set (113 x scale 31) or large K scales get a smaller one.
                    let mut wf = vec![0f32; n];
                    dequantize(ty, &w, &mut wf).unwrap();
                    let mins = min_bound(ty);
                    let sw: f64 = wf.iter().map(|&v| v.abs() as f64 + 2.0 * mins).sum();
                    let room = (1u64 << 24) as f64 - 64.0 * (n / 32 + 1) as f64;
                    let cap = (room / sw.max(1.0)).floor().clamp(1.0, 127.0) as u64;
                    let mut q = || -> [i8; 32] {
                        std::array::from_fn(|_| ((rng.next() % (2 * cap + 1)) as i64 - cap as i64) as i8)
                    };
                    let (q8_0, q8_1, q8k): (Vec<BlockQ8_0>, Vec<BlockQ8_1>, Vec<BlockQ8K>) = match act {
                        ActType::Q8_0 => {
                            ((0..n / 32).map(|_| BlockQ8_0 { d: one, qs: q() }).collect(), vec![], vec![])
                        }
                        ActType::Q8_1 => {
                            let b = (0..n / 32).map(|_| {
                                let qs = q();
                                BlockQ8_1 { d: one, s: f16_bytes((qs[0] / 2) as f32), qs }
                            });
                            (vec![], b.collect(), vec![])
                        }
                        _ => {
                            let b = (0..n / 256).map(|_| {
                                let mut qs = [0i8; 256];
                                for c in qs.chunks_exact_mut(32) {
                                    c.copy_from_slice(&q());
                                }
                                let bsums = std::array::from_fn(|g| {
                                    qs[16 * g..16 * g + 16].iter().map(|&v| v as i16).sum()
                                });
                                BlockQ8K { d: 1.0, qs, bsums }
                            });
                            (vec![], vec![], b.collect())
                        }
                    };
                    let a = match act {
                        ActType::Q8_0 => ActRef::Q8_0(&q8_0),
                        ActType::Q8_1 => ActRef::Q8_1(&q8_1),
                        _ => ActRef::Q8K(&q8k),
                    };
                    let want = vec_dot(scalar, ty, &w, a).unwrap();
                    let got = vec_dot(k, ty, &w, a).unwrap();
                    assert_eq!(got, want, "{} {ty} {case:?} {nb} blocks", k.name);
                    checked += 1;
                }
            }
        }
    }
    eprintln!("{checked} exact comparisons");
}

/// The largest min (offset) term per weight when every f16 scale is 1: Q4_1/Q5_1 add m = 1,
/// Q2_K subtracts a 4-bit min, Q4_K/Q5_K a 6-bit one.
fn min_bound(ty: GgmlType) -> f64 {
    match ty {
        GgmlType::Q4_1 | GgmlType::Q5_1 => 1.0,
        GgmlType::Q2_K => 15.0,
        GgmlType::Q4_K | GgmlType::Q5_K => 63.0,
        _ => 0.0,
    }
}

/// matmul (several rows, and matvec as n = 1) at every level against f64 arithmetic on
/// the dequantized weights.
///
/// Tolerance: quantizing an activation block to 8 bits moves each element by at most half a
/// step, amax/254 (Q8_0/Q8_1/Q8_K all use d = amax/127), plus f16 rounding of d (2^-11
/// relative). So |err| <= sum_i |w_i| * amax(block of i) / 254 * (1 + 2^-10), plus f32
/// rounding of the sums (1e-4 of the sum of |w_i x_i|). Float weights see no activation
/// quantization: only the rounding term applies.
#[test]
fn matmul_matches_f32_reference() {
    let mut rng = Rng(99);
    let mut buf = ActBuf::new();
    for k in levels() {
        for ty in TYPES {
            let act = ActType::for_weight(ty).unwrap();
            let (rows, cols) = (37, 2 * ty.block_size().max(act.block()).max(64));
            let w = weights(ty, rows * cols / ty.block_size(), Case::Random, &mut rng);
            let m = Matrix::new(ty, rows, cols, &w).unwrap();
            let mut wf = vec![0f32; rows * cols];
            dequantize(ty, &w, &mut wf).unwrap();
            for n in [1usize, 3, 8] {
                let x = activation(n * cols, &mut rng);
                let mut y = vec![0f32; n * rows];
                matmul(k, &m, &x, n, &mut y, &mut buf).unwrap();
                for i in 0..n {
                    let xi = &x[i * cols..(i + 1) * cols];
                    for r in 0..rows {
                        let wr = &wf[r * cols..(r + 1) * cols];
                        let exact: f64 = wr.iter().zip(xi).map(|(&a, &b)| a as f64 * b as f64).sum();
                        let abs: f64 = wr.iter().zip(xi).map(|(&a, &b)| (a as f64 * b as f64).abs()).sum();
                        let mut qerr = 0f64;
                        if act != ActType::F32 {
                            for (wb, xb) in wr.chunks(act.block()).zip(xi.chunks(act.block())) {
                                let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
                                qerr += wb.iter().map(|v| v.abs() as f64).sum::<f64>() * amax / 254.0;
                            }
                        }
                        let tol = qerr * (1.0 + 1.0 / 1024.0) + 1e-4 * abs + 1e-6;
                        let got = y[i * rows + r] as f64;
                        assert!(
                            (got - exact).abs() <= tol,
                            "{} {ty} n={n} row {r}: {got} vs {exact} (tol {tol})",
                            k.name
                        );
                    }
                }
            }
        }
    }
}

/// NEON's quantized kernels run each block's float step as the scalar reference does, after
/// exact integer sums: one-row kernels and tiles give its results to the bit (so prefill and
/// decode agree too).
fn neon_is_scalar(k: &Kernels, ty: GgmlType, got: f32, want: f32) {
    if k.level == Level::Neon && ty.block_size() > 1 {
        assert_eq!(got.to_bits(), want.to_bits(), "{} {ty}: {got} vs scalar {want}", k.name);
    }
}

/// The four-row kernels against the scalar one-row reference, row by row.
#[test]
fn four_row_kernels_match_scalar() {
    let scalar = Kernels::for_level(Level::Scalar).unwrap();
    let mut rng = Rng(7);
    let mut buf = ActBuf::new();
    let mut checked = 0;
    for k in levels() {
        for ty in TYPES {
            let Some(dot4) = k.dot4(ty) else { continue };
            let act = ActType::for_weight(ty).unwrap();
            for nb in [1usize, 2, 3, 7, 18, 64] {
                let n = nb * ty.block_size();
                let rows: Vec<Vec<u8>> = (0..4).map(|_| weights(ty, nb, Case::Random, &mut rng)).collect();
                let x = activation(n, &mut rng);
                let a = buf.quantize(act, &x);
                let got = dot4([&rows[0], &rows[1], &rows[2], &rows[3]], a);
                for (r, row) in rows.iter().enumerate() {
                    let want = vec_dot(scalar, ty, row, a).unwrap();
                    let tol = 1e-5 * abs_terms(ty, row, a);
                    assert!(
                        ((got[r] - want) as f64).abs() <= tol,
                        "{} {ty} {nb} blocks row {r}: {} vs {want}",
                        k.name,
                        got[r]
                    );
                    checked += 1;
                }
            }
        }
    }
    eprintln!("{checked} four-row comparisons");
    let mut tiles = 0;
    for k in levels() {
        for ty in TYPES {
            if let Some(tile) = k.dot4x2(ty) {
                tiles += check_tile(k, ty, tile, &mut rng, &mut buf);
            }
            if let Some(tile) = k.dot4x4(ty) {
                tiles += check_tile(k, ty, tile, &mut rng, &mut buf);
            }
        }
    }
    eprintln!("{tiles} tile comparisons");
}

/// A register tile: four weight rows by C activation rows (`Dot4x2Fn`, `Dot4x4Fn`).
type Tile<const C: usize> = fn([&[u8]; 4], [ActRef; C]) -> [[f32; 4]; C];

/// A tile of four weight rows by C activation rows against the scalar one-row reference, at
/// 1, 5 and 18 blocks; the number of products compared.
fn check_tile<const C: usize>(
    k: &Kernels,
    ty: GgmlType,
    tile: Tile<C>,
    rng: &mut Rng,
    buf: &mut ActBuf,
) -> usize {
    let scalar = Kernels::for_level(Level::Scalar).unwrap();
    let act = ActType::for_weight(ty).unwrap();
    let mut checked = 0;
    for nb in [1usize, 5, 18] {
        let n = nb * ty.block_size();
        let rows: Vec<Vec<u8>> = (0..4).map(|_| weights(ty, nb, Case::Random, rng)).collect();
        let x = activation(C * n, rng);
        let a = buf.quantize(act, &x);
        let cols: [ActRef; C] = std::array::from_fn(|c| a.row(c, n));
        let got = tile([&rows[0], &rows[1], &rows[2], &rows[3]], cols);
        for (c, col) in cols.iter().enumerate() {
            for (r, row) in rows.iter().enumerate() {
                let want = vec_dot(scalar, ty, row, *col).unwrap();
                let tol = 1e-5 * abs_terms(ty, row, *col);
                assert!(((got[c][r] - want) as f64).abs() <= tol, "{} {ty} 4x{C} tile {c},{r}", k.name);
                neon_is_scalar(k, ty, got[c][r], want);
                checked += 1;
            }
        }
    }
    checked
}

/// What the row kernels' offset trick adds to the bound: they take the weights as unsigned
/// bytes (Q4_0's nibbles as 0..15, Q5_0's values as 0..31, Q8_0's, IQ4_NL's and IQ4_XS's
/// values + 128) and take `offset * d_w * d_a * sum(a)` back off per block (or group) in
/// f32, so their rounding is relative to these terms too.
fn offset_terms(ty: GgmlType, w: &[u8], a: ActRef) -> f64 {
    let f16 = |b: &[u8]| half::f16::from_le_bytes([b[0], b[1]]).to_f64();
    // IQ4_XS: its codebook + 128, times each group's scale (6 bits - 32).
    if let (GgmlType::IQ4_XS, ActRef::Q8K(blocks)) = (ty, a) {
        return w
            .chunks_exact(ty.type_size())
            .zip(blocks)
            .map(|(x, y)| {
                let (h, l) = (u16::from_le_bytes([x[2], x[3]]), &x[4..8]);
                (0..8)
                    .map(|g| {
                        let ls =
                            ((l[g / 2] >> (4 * (g % 2))) & 15) as i32 | ((((h >> (2 * g)) & 3) as i32) << 4);
                        let sum: f64 = y.qs[32 * g..32 * g + 32].iter().map(|&q| (q as f64).abs()).sum();
                        128.0 * (f16(x) * y.d as f64 * (ls - 32) as f64).abs() * sum
                    })
                    .sum::<f64>()
            })
            .sum();
    }
    let offset = match ty {
        GgmlType::Q4_0 => 8.0,
        GgmlType::Q5_0 => 16.0,
        GgmlType::Q8_0 | GgmlType::IQ4_NL => 128.0,
        _ => return 0.0,
    };
    let ActRef::Q8_0(blocks) = a else { return 0.0 };
    w.chunks_exact(ty.type_size())
        .zip(blocks)
        .map(|(x, y)| {
            let sum: f64 = y.qs.iter().map(|&q| (q as f64).abs()).sum();
            offset * (f16(x) * f16(&y.d)).abs() * sum
        })
        .sum()
}

/// The decode kernels over many rows in the file's layout (`Kernels::rows_decode`) against
/// the scalar one-row reference, row by row: widths around the kernels' groups of blocks,
/// up to the widest their tables hold, every weight case; wider, they decline.
#[test]
fn rows_decode_matches_scalar() {
    let scalar = Kernels::for_level(Level::Scalar).unwrap();
    let mut rng = Rng(0x5eed_0fda_7a11);
    let mut buf = ActBuf::new();
    let mut checked = 0;
    for k in levels() {
        for ty in TYPES {
            let Some(many) = k.rows_decode(ty) else { continue };
            let act = ActType::for_weight(ty).unwrap();
            // Widths around the kernels' groups of blocks, up to the widest their tables hold.
            let widths = [32usize, 64, 224, 256, 288, 512, 576, 2304, 2560, 4160, 16384];
            for (i, cols) in widths.into_iter().filter(|c| c % ty.block_size() == 0).enumerate() {
                let rows = [3usize, 1, 5, 2, 17, 4][i % 6];
                let nb = cols / ty.block_size();
                for case in CASES {
                    let w: Vec<u8> = weights(ty, nb * rows, case, &mut rng);
                    let x = activation(cols, &mut rng);
                    let a = buf.quantize(act, &x);
                    let mut got = vec![f32::NAN; rows];
                    assert!(many(&w, a, &mut got), "{} {ty}: {cols} wide declined", k.name);
                    let rb = w.len() / rows;
                    for (r, g) in got.iter().enumerate() {
                        let row = &w[r * rb..(r + 1) * rb];
                        let want = vec_dot(scalar, ty, row, a).unwrap();
                        let tol = 1e-5 * (abs_terms(ty, row, a) + offset_terms(ty, row, a)) + 1e-30;
                        assert!(
                            ((g - want) as f64).abs() <= tol,
                            "{} {ty} {case:?} {cols} wide row {r}: {g} vs {want}",
                            k.name
                        );
                        neon_is_scalar(k, ty, *g, want);
                        checked += 1;
                    }
                }
            }
            // Wider than the tables hold, or rows that do not fill the output: declined.
            let cols = 16384 + ty.block_size();
            let x = activation(cols, &mut rng);
            let a = buf.quantize(act, &x);
            let w = weights(ty, cols / ty.block_size(), Case::Random, &mut rng);
            assert!(!many(&w, a, &mut [0f32; 1]), "{} {ty}: {cols} wide", k.name);
            let a = buf.quantize(act, &x[..2 * ty.block_size()]);
            assert!(!many(&w[..ty.type_size()], a, &mut [0f32; 1]), "{} {ty}: short row", k.name);
        }
    }
    eprintln!("{checked} rows_decode comparisons");
}

/// The NEON level (each of its variants) has its own kernel for every type.
#[cfg(target_arch = "aarch64")]
#[test]
fn neon_level_is_complete() {
    let neon: Vec<_> = Kernels::tables().iter().filter(|k| k.level == Level::Neon).collect();
    assert!(!neon.is_empty(), "no NEON table");
    if std::arch::is_aarch64_feature_detected!("dotprod") {
        let names: Vec<_> = neon.iter().map(|k| k.name).collect();
        assert_eq!(names, ["neon+dotprod", "neon"], "both variants are built");
        assert_eq!(Kernels::for_level(Level::Neon).unwrap().name, "neon+dotprod", "sdot is used");
    }
    for k in neon {
        for ty in TYPES {
            assert!(k.is_native(ty), "{} falls back to scalar for {ty}", k.name);
        }
    }
}

#[test]
fn bad_inputs_are_errors() {
    let k = Kernels::best();
    let mut buf = ActBuf::new();
    let a = buf.quantize(ActType::Q8_0, &[0.5; 64]);
    assert!(vec_dot(k, GgmlType::Q4_0, &[0; 18], a).is_err(), "length mismatch");
    assert!(vec_dot(k, GgmlType::Q4_1, &[0; 40], a).is_err(), "wrong activation type");
    assert!(vec_dot(k, GgmlType::IQ2_XXS, &[0; 66], a).is_err(), "unsupported type");
    assert!(Matrix::new(GgmlType::Q4_0, 2, 32, &[0; 35]).is_err());
    let m = Matrix::new(GgmlType::Q4_0, 2, 32, &[0; 36]).unwrap();
    let mut y = [0f32; 3];
    assert!(matmul(k, &m, &[0.0; 32], 1, &mut y, &mut buf).is_err());
}

/// `n` activation rows (all +-1 for `Case::AllOnes`, else random) through the repacked matrix
/// `m` at level `k` and through `plain` at the scalar level: every product within 1e-5 of the
/// sum of |terms|. Returns the number of products compared.
fn check_repacked(k: &Kernels, plain: &Matrix, m: &Matrix, n: usize, case: Case, rng: &mut Rng) -> usize {
    let (ty, rows, cols) = (plain.ty, plain.rows, plain.cols);
    let scalar = Kernels::for_level(Level::Scalar).unwrap();
    let mut buf = ActBuf::new();
    // All quant bits set against equal activations (every q8 at +-127): the largest partial
    // sums a kernel can meet (i16 sums must not wrap).
    let x = match case {
        Case::AllOnes => vec![if n.is_multiple_of(2) { 1.0 } else { -1.0 }; n * cols],
        _ => activation(n * cols, rng),
    };
    let (mut want, mut got) = (vec![0f32; n * rows], vec![0f32; n * rows]);
    matmul(scalar, plain, &x, n, &mut want, &mut buf).unwrap();
    matmul(k, m, &x, n, &mut got, &mut buf).unwrap();
    let a = buf.quantize(ActType::for_weight(ty).unwrap(), &x);
    for i in 0..n {
        for r in 0..rows {
            let tol = 1e-5 * abs_terms(ty, plain.row(r), a.row(i, cols));
            let (g, w) = (got[i * rows + r], want[i * rows + r]);
            assert!(
                ((g - w) as f64).abs() <= tol.max(1e-30),
                "{} {ty} {case:?} {} blocks n={n} act row {i} weight row {r}: {g} vs scalar {w} (tol {tol})",
                k.name,
                cols / ty.block_size()
            );
        }
    }
    n * rows
}

/// Repacked (interleaved) matrices at every level that has kernels for them: the same
/// products as the scalar reference on the row layout, for decode (n = 1) and prefill
/// (n = 3..21, covering the four- and eight-row tiles, the unpack-once panels from 16 rows, and
/// their remainders), on random and edge-case
/// weights; and the layout's inverse gives back every original block.
#[test]
fn repacked_matmul_matches_rows() {
    use ferrite_kernels::blocks::{as_blocks, BlockQ4_0, BlockQ4_0x8};
    use ferrite_kernels::repack::{repack, repack_into, unpack_q4_0x8, Layout, Stores};
    let scalar = Kernels::for_level(Level::Scalar).unwrap();
    let mut rng = Rng(0x5eed_0f8a);
    let mut buf = ActBuf::new();
    let mut checked = 0;
    for (ty, case) in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_0,
        GgmlType::IQ4_XS,
        GgmlType::Q3_K,
        GgmlType::Q2_K,
        GgmlType::IQ4_NL,
        GgmlType::Q5_1,
    ]
    .into_iter()
    .flat_map(|t| CASES.map(|c| (t, c)))
    {
        let (rows, cols) = (24, ty.block_size() * if ty.block_size() == 32 { 11 } else { 3 });
        let w = weights(ty, rows * cols / ty.block_size(), case, &mut rng);
        let (layout, packed) = repack(ty, rows, cols, &w).expect("repackable");
        assert_eq!(Some(layout), Layout::for_type(ty));
        // Whole row groups are contiguous in both layouts: the model repacks big matrices in
        // pieces, which must give the same bytes as one call.
        let mut pieces = vec![0u8; packed.len()];
        let (src_half, dst_half) = (w.len() / rows * 16, packed.len() / rows * 16);
        let (d0, d1) = pieces.split_at_mut(dst_half);
        assert_eq!(repack_into(ty, 16, cols, &w[..src_half], d0, Stores::Streaming), Some(layout));
        assert_eq!(repack_into(ty, rows - 16, cols, &w[src_half..], d1, Stores::Cached), Some(layout));
        assert!(pieces == packed, "{ty} {case:?}: repack in two pieces differs");
        assert_eq!(repack_into(ty, rows, cols, &w, &mut pieces[1..], Stores::Cached), None, "short output");
        if ty == GgmlType::Q4_0 {
            assert_eq!(packed.len(), w.len());
            let orig: &[BlockQ4_0] = as_blocks(&w).unwrap();
            let groups: &[BlockQ4_0x8] = as_blocks(&packed).unwrap();
            let nb = cols / 32;
            for (i, g) in groups.iter().enumerate() {
                let (grp, j) = (i / nb, i % nb);
                for r in 0..8 {
                    assert_eq!(
                        unpack_q4_0x8(g, r),
                        orig[(grp * 8 + r) * nb + j],
                        "{case:?} block {i} row {r}"
                    );
                }
            }
        }
        let plain = Matrix::new(ty, rows, cols, &w).unwrap();
        let m = Matrix::with_layout(ty, rows, cols, layout, &packed).unwrap();
        for k in levels().into_iter().filter(|k| k.repacked(layout).is_some()) {
            // From 16 rows the 16x8 kernels run eight rows at a time over all pairs (16, 21: the
            // smallest such batch, and one with a tail); 133: a long one.
            for n in [1usize, 3, 4, 5, 8, 9, 13, 16, 21, 133] {
                checked += check_repacked(k, &plain, &m, n, case, &mut rng);
            }
            // The row layout from `FLY_MIN_ROWS` activation rows on: the same kernels, each
            // task repacking its rows 16 at a time (here a pair, then a lone group).
            for n in [ferrite_kernels::matmul::FLY_MIN_ROWS, 21, 133] {
                checked += check_repacked(k, &plain, &plain, n, case, &mut rng);
            }
        }
    }
    // A layout the level has no kernels for is an error, not a wrong answer.
    let ty = GgmlType::Q4_0;
    let w = weights(ty, 8, Case::Random, &mut rng);
    let (layout, packed) = repack(ty, 8, 32, &w).unwrap();
    let m = Matrix::with_layout(ty, 8, 32, layout, &packed).unwrap();
    let x = activation(32, &mut rng);
    let mut y = vec![0f32; 8];
    assert!(matmul(scalar, &m, &x, 1, &mut y, &mut buf).is_err());
    assert!(Matrix::with_layout(ty, 4, 32, layout, &w[..4 * 18]).is_err(), "rows not a multiple of 8");
    eprintln!("{checked} repacked comparisons");
}

/// The 256-bit levels' 4- and 5-bit panels (Q4_0, Q4_1, Q5_0, Q5_1: values unpacked once per
/// pair of groups) give what their 8-row tiles give, to the bit: the same integer sums, then
/// the same float steps. So a batch's results do not depend on which of the two its size
/// picks, and a matrix computed as its copy (`Matrix::as_copy`) matches the copy at every size.
#[test]
fn legacy_panels_match_the_tiles_to_the_bit() {
    use ferrite_kernels::dispatch::Line64;
    use ferrite_kernels::repack::repack;
    let mut rng = Rng(0x9a4e_1b17);
    let mut buf = ActBuf::new();
    let mut checked = 0;
    for (ty, act) in [
        (GgmlType::Q4_0, ActType::Q8_0S),
        (GgmlType::Q4_1, ActType::Q8_1),
        (GgmlType::Q5_0, ActType::Q8_0S),
        (GgmlType::Q5_1, ActType::Q8_1),
    ] {
        for case in CASES {
            let (rows, cols) = (16, 32 * 9);
            let w = weights(ty, rows * cols / 32, case, &mut rng);
            let (layout, packed) = repack(ty, rows, cols, &w).expect("repackable");
            let x = match case {
                Case::AllOnes => vec![1.0; 8 * cols],
                _ => activation(8 * cols, &mut rng),
            };
            let a = buf.quantize(act, &x);
            let (ga, gb) = packed.split_at(packed.len() / 2);
            for k in levels() {
                let (Some((unpack, eight)), Some((_, four))) = (k.panel16(layout), k.repacked(layout)) else {
                    continue;
                };
                let mut panels: Vec<Line64> = Vec::new();
                assert!(unpack(ga, gb, &mut panels), "{} {ty}: unpack", k.name);
                let got = eight(&panels, std::array::from_fn(|c| a.row(c, cols)), &[]);
                for c0 in [0, 4] {
                    let cols4 = std::array::from_fn(|c| a.row(c0 + c, cols));
                    for (half, g) in [ga, gb].into_iter().enumerate() {
                        let want = four(g, cols4);
                        for c in 0..4 {
                            for r in 0..8 {
                                let (p, t) = (got[c0 + c][8 * half + r], want[c][r]);
                                assert!(
                                    p.to_bits() == t.to_bits(),
                                    "{} {ty} {case:?}: act row {} weight row {}: panel {p} vs tile {t}",
                                    k.name,
                                    c0 + c,
                                    8 * half + r
                                );
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    eprintln!("{checked} panel products compared with the tiles'");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        assert!(checked >= 4 * 6 * 128, "a level without the 4- and 5-bit panels");
    }
}

/// Every repack writes every byte of its output (the blocks are filled in place, in memory
/// that may hold anything: a per-thread buffer reused across matrices): into a buffer full
/// of 0xA5 it gives what it gives into zeros, for every type, with both kinds of stores.
#[test]
fn repack_writes_every_byte() {
    use ferrite_kernels::repack::{repack_into, repacked_len, Layout, Stores};
    let mut rng = Rng(0xb17e_5a11);
    for ty in TYPES.into_iter().filter(|t| Layout::for_type(*t).is_some()) {
        let (rows, cols) = (16, ty.block_size() * if ty.block_size() == 32 { 7 } else { 2 });
        let w = weights(ty, rows * cols / ty.block_size(), Case::Random, &mut rng);
        let len = repacked_len(ty, rows, cols).unwrap();
        for stores in [Stores::Cached, Stores::Streaming] {
            let (mut zeros, mut filled) = (vec![0u8; len], vec![0xA5u8; len]);
            assert!(repack_into(ty, rows, cols, &w, &mut zeros, stores).is_some());
            assert!(repack_into(ty, rows, cols, &w, &mut filled, stores).is_some());
            assert!(zeros == filled, "{ty} {stores:?}: some output bytes are not written");
        }
    }
}

/// A matrix in the row layout computed as its copy (`Matrix::as_copy`, while a model's copies
/// are made in the background) gives the copy's results to the bit, at every batch size and
/// every level with interleaved kernels: the model's output then does not depend on when
/// each copy arrives.
#[test]
fn rows_as_copy_match_the_copy_to_the_bit() {
    use ferrite_kernels::repack::repack;
    let mut rng = Rng(0xa5c0_b1e5);
    let mut buf = ActBuf::new();
    let mut checked = 0;
    // Every quantized type (each has an interleaved layout).
    for ty in TYPES.into_iter().filter(|t| ferrite_kernels::repack::Layout::for_type(*t).is_some()) {
        // Three groups: a pair and a lone group in one task.
        let (rows, cols) = (24, ty.block_size() * if ty.block_size() == 32 { 11 } else { 3 });
        let w = weights(ty, rows * cols / ty.block_size(), Case::Random, &mut rng);
        let (layout, packed) = repack(ty, rows, cols, &w).expect("repackable");
        let copy = Matrix::with_layout(ty, rows, cols, layout, &packed).unwrap();
        for k in levels().into_iter().filter(|k| k.repacked(layout).is_some()) {
            let pending = Matrix::new(ty, rows, cols, &w).unwrap().as_copy(k);
            assert!(pending.as_copy, "{} {ty}", k.name);
            for n in [1usize, 2, 3, 4, 5, 7, 8, 9, 13, 15, 16, 17, 21, 24, 33, 64, 133] {
                let x = activation(n * cols, &mut rng);
                let (mut want, mut got) = (vec![0f32; n * rows], vec![0f32; n * rows]);
                matmul(k, &copy, &x, n, &mut want, &mut buf).unwrap();
                matmul(k, &pending, &x, n, &mut got, &mut buf).unwrap();
                for (i, (g, c)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        g.to_bits() == c.to_bits(),
                        "{} {ty} n={n}: output {i} (act row {}, weight row {}): {g} from rows, {c} from the copy",
                        k.name,
                        i / rows,
                        i % rows
                    );
                }
                checked += n * rows;
            }
        }
    }
    // A level without interleaved kernels leaves the matrix as it is.
    let scalar = Kernels::for_level(Level::Scalar).unwrap();
    let w = weights(GgmlType::Q4_0, 8, Case::Random, &mut rng);
    assert!(!Matrix::new(GgmlType::Q4_0, 8, 32, &w).unwrap().as_copy(scalar).as_copy);
    eprintln!("{checked} outputs compared");
}

/// A long prompt through the 16x8 kernels that unpack as they go: eight activation rows at a
/// time, each against every pair of groups of the task before the next eight. Tasks here hold two pairs
/// (the row count follows the pool's threads) and the last task a lone group, so a pair
/// written to the wrong place or a block skipped shows against the scalar reference.
#[test]
fn blocked_prefill_matches_rows() {
    use ferrite_kernels::repack::repack;
    let threads = ferrite_kernels::pool::global().threads();
    let (rows, n) = (128 * threads + 8, 133);
    let mut rng = Rng(0xb10c_4ed1);
    let mut checked = 0;
    for ty in [GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q8_0, GgmlType::Q4_K] {
        let cols = if ty.block_size() == 32 { 32 * 11 } else { 256 * 2 };
        let w = weights(ty, rows * cols / ty.block_size(), Case::Random, &mut rng);
        let (layout, packed) = repack(ty, rows, cols, &w).expect("repackable");
        let plain = Matrix::new(ty, rows, cols, &w).unwrap();
        let m = Matrix::with_layout(ty, rows, cols, layout, &packed).unwrap();
        for k in
            levels().into_iter().filter(|k| k.repacked16x8(layout).is_some() && k.panel16(layout).is_none())
        {
            checked += check_repacked(k, &plain, &m, n, Case::Random, &mut rng);
            // The row layout: the same kernels on rows repacked as each task goes.
            checked += check_repacked(k, &plain, &plain, n, Case::Random, &mut rng);
        }
    }
    eprintln!("{checked} blocked comparisons");
    // The avx512 level has these kernels: on a CPU that runs it, something was compared.
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512bw") && std::arch::is_x86_feature_detected!("avx512vnni") {
        assert!(checked > 0, "no blocked prefill compared");
    }
}

/// A long input is quantized in parallel: the blocks equal the serial quantizers' output.
#[test]
fn parallel_activation_quantization_equals_serial() {
    use ferrite_kernels::blocks::{BlockQ8K, BlockQ8_0, BlockQ8_0S, BlockQ8_1};
    use ferrite_kernels::scalar::{quantize_q8_0_act, quantize_q8_0s_act, quantize_q8_1_act, quantize_q8_k};
    let mut rng = Rng(0x0a11_5ca1);
    let x = activation(3 * 16384 + 7 * 256, &mut rng);
    let mut buf = ActBuf::new();
    let nb = x.len() / 32;
    let mut a = vec![BlockQ8_0::default(); nb];
    quantize_q8_0_act(&x, &mut a);
    assert!(matches!(buf.quantize(ActType::Q8_0, &x), ActRef::Q8_0(b) if b == &a[..]));
    let mut b = vec![BlockQ8_1::default(); nb];
    quantize_q8_1_act(&x, &mut b);
    assert!(matches!(buf.quantize(ActType::Q8_1, &x), ActRef::Q8_1(v) if v == &b[..]));
    let mut c = vec![BlockQ8_0S::default(); nb];
    quantize_q8_0s_act(&x, &mut c);
    let ActRef::Q8_0S(v) = buf.quantize(ActType::Q8_0S, &x) else { panic!("not Q8_0S") };
    assert!(v.iter().zip(&c).all(|(p, q)| p.d.to_bits() == q.d.to_bits() && p.sum == q.sum && p.qs == q.qs));
    let mut d = vec![BlockQ8K::default(); x.len() / 256];
    quantize_q8_k(&x, &mut d);
    let ActRef::Q8K(v) = buf.quantize(ActType::Q8K, &x) else { panic!("not Q8K") };
    assert!(v
        .iter()
        .zip(&d)
        .all(|(p, q)| p.d.to_bits() == q.d.to_bits() && p.qs == q.qs && p.bsums == q.bsums));
    assert_eq!(v.len(), d.len());
}

/// Whether the CPU reports AMX-TILE and AMX-INT8 (CPUID leaf 7, EDX bits 24 and 25).
#[cfg(target_arch = "x86_64")]
fn cpu_has_amx() -> bool {
    let l7 = std::arch::x86_64::__cpuid_count(7, 0);
    l7.edx >> 24 & 3 == 3
}

/// A batch whose activation tiles outgrow `AMX_TILES_L2` runs in parts: every row's results
/// are those of the rows run in a batch of their own (to the bit), and the scalar
/// reference's (to rounding), for a 32-value type and a K type.
#[test]
fn amx_batch_parts_match_whole_batches() {
    use ferrite_kernels::matmul::{AMX_MIN_ROWS, AMX_TILES_L2};
    use ferrite_kernels::repack::repack;
    let Some(k) = Kernels::for_level(Level::Amx) else {
        eprintln!("no amx level here (no AMX, or no tile permission): nothing to check");
        return;
    };
    let mut rng = Rng(0xa3c5_0002);
    for ty in [GgmlType::Q4_0, GgmlType::Q4_K] {
        let (rows, cols) = (32, 8192);
        // Rows per part, as `matmul_multi` works it out (1.125 bytes per value).
        let part = (AMX_TILES_L2 / (cols + cols / 8) / AMX_MIN_ROWS * AMX_MIN_ROWS).max(AMX_MIN_ROWS);
        let n = 2 * part + 24;
        let w = weights(ty, rows * cols / ty.block_size(), Case::Random, &mut rng);
        let (layout, packed) = repack(ty, rows, cols, &w).expect("repackable");
        let m = Matrix::with_layout(ty, rows, cols, layout, &packed).unwrap();
        let plain = Matrix::new(ty, rows, cols, &w).unwrap();
        let x = activation(n * cols, &mut rng);
        let mut buf = ActBuf::new();
        let mut whole = vec![0f32; n * rows];
        matmul(k, &m, &x, n, &mut whole, &mut buf).unwrap();
        // The first part's rows alone (a batch of one part), and the last 40 rows alone.
        for (r0, len) in [(0, part), (n - 40, 40)] {
            let mut alone = vec![0f32; len * rows];
            matmul(k, &m, &x[r0 * cols..(r0 + len) * cols], len, &mut alone, &mut buf).unwrap();
            let same = whole[r0 * rows..(r0 + len) * rows]
                .iter()
                .zip(&alone)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "{ty}: rows {r0}..{} of a {n}-row batch differ from a batch of their own",
                r0 + len
            );
        }
        // And a batch of n rows (so in parts) against the scalar reference.
        check_repacked(k, &plain, &m, n, Case::Random, &mut rng);
    }
}

/// The AMX level (where the CPU has AMX: a machine without it has no amx table, and this
/// test says so and checks nothing else): its tiles for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL,
/// Q4_K, Q5_K, IQ4_XS, Q6_K and Q3_K against
/// the scalar reference on the row layout, for 16..=40 activation rows (whole tiles and
/// every tail of 1..15 rows) and 1, 2, 3, 11 and 64 blocks (the two tile sets alternate block
/// by block: odd and even counts end differently), on random and edge-case weights; then
/// kernels of both kinds in turn and a call after the thread's tiles were released.
#[cfg(target_arch = "x86_64")]
#[test]
fn amx_tiles_match_scalar() {
    use ferrite_kernels::repack::{repack, Layout};
    // (`--cfg ferrite_amx_emulate` builds the level on any CPU, the tile instructions in Rust.)
    if !cpu_has_amx() && !cfg!(ferrite_amx_emulate) {
        eprintln!("no AMX on this CPU: the amx level is not built here, nothing to check");
        assert!(Kernels::for_level(Level::Amx).is_none());
        return;
    }
    // Linux grants the tile permission from 5.16: without it the level must be absent, not
    // broken. Where it is present, it has tiles for these types.
    let Some(k) = Kernels::for_level(Level::Amx) else {
        eprintln!("AMX on this CPU, but the OS refused the tile permission: no amx level");
        return;
    };
    let types = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::IQ4_NL,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::IQ4_XS,
        GgmlType::Q6_K,
        GgmlType::Q3_K,
    ];
    for layout in types.map(|t| Layout::for_type(t).unwrap()) {
        assert!(k.amx16(layout).is_some(), "{layout:?} has no AMX path");
    }
    let mut rng = Rng(0xa3c5_0001);
    let mut checked = 0;
    for ty in types {
        for (nb, case) in [1usize, 2, 3, 11, 64].into_iter().flat_map(|nb| CASES.map(|c| (nb, c))) {
            let (rows, cols) = (32, ty.block_size() * nb);
            let w = weights(ty, rows * nb, case, &mut rng);
            let (layout, packed) = repack(ty, rows, cols, &w).expect("repackable");
            let plain = Matrix::new(ty, rows, cols, &w).unwrap();
            let m = Matrix::with_layout(ty, rows, cols, layout, &packed).unwrap();
            for n in (16..=40).filter(|&n| nb < 11 || n % 8 == 1) {
                checked += check_repacked(k, &plain, &m, n, case, &mut rng);
            }
        }
    }
    // The tiles stay configured between calls (reloaded where the kind of kernel changes,
    // released when a thread parks): the 32-value and the K types' configurations in turn,
    // and a call after this thread's tiles were released.
    for (step, ty) in [GgmlType::Q4_K, GgmlType::Q4_0, GgmlType::Q6_K, GgmlType::Q8_0, GgmlType::Q4_1]
        .into_iter()
        .enumerate()
    {
        if step == 3 {
            ferrite_kernels::x86_64::amx::release_tiles();
        }
        let (rows, cols, nb) = (32, ty.block_size() * 3, 3);
        let w = weights(ty, rows * nb, Case::Random, &mut rng);
        let (layout, packed) = repack(ty, rows, cols, &w).expect("repackable");
        let plain = Matrix::new(ty, rows, cols, &w).unwrap();
        let m = Matrix::with_layout(ty, rows, cols, layout, &packed).unwrap();
        checked += check_repacked(k, &plain, &m, 17, Case::Random, &mut rng);
    }
    assert!(checked > 0, "no AMX product compared");
    eprintln!("{checked} AMX comparisons");
}

/// `matmul_multi_in` with `ActIn::Prep` (rows made where they are quantized) gives the bits of
/// making the rows first and then `matmul_multi`, makes every row exactly once and leaves
/// the made rows in `x`: at every level, for a 32-value type, a K type, Q4_1 (Q8_1
/// activations) and F16 (f32 activations), repacked and in rows, for batches of 1 row
/// (decode), a partial tile, whole tiles, and one long enough to run in parts on the AMX
/// tiles (whose row numbers the `Prep` must still see as the batch's).
#[test]
fn prep_matmul_equals_prep_then_matmul() {
    use ferrite_kernels::matmul::{AMX_MIN_ROWS, AMX_TILES_L2};
    use ferrite_kernels::repack::repack;
    use ferrite_kernels::{matmul_multi, matmul_multi_in, ActIn};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut rng = Rng(0x9e3d_0005);
    // Row i scaled by a factor of its own and squashed: a row made with another row's
    // number, or twice, gives other values.
    let make = |i: usize, row: &mut [f32]| {
        for v in row.iter_mut() {
            *v = (*v * (1.0 + 0.25 * (i % 7) as f32)).tanh() + 0.01 * i as f32;
        }
    };
    for k in levels() {
        for ty in [GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q4_1, GgmlType::F16] {
            let (rows, cols) = (32, 8192);
            let part = (AMX_TILES_L2 / (cols + cols / 8) / AMX_MIN_ROWS * AMX_MIN_ROWS).max(AMX_MIN_ROWS);
            let ws: Vec<Vec<u8>> =
                (0..2).map(|_| weights(ty, rows * cols / ty.block_size(), Case::Random, &mut rng)).collect();
            let packed: Vec<_> = ws.iter().map(|w| repack(ty, rows, cols, w)).collect();
            for repacked in [false, true] {
                let ms: Vec<Matrix> = match repacked {
                    false => ws.iter().map(|w| Matrix::new(ty, rows, cols, w).unwrap()).collect(),
                    true => match packed.iter().map(|p| p.as_ref()).collect::<Option<Vec<_>>>() {
                        Some(ps) => ps
                            .iter()
                            .map(|(layout, p)| Matrix::with_layout(ty, rows, cols, *layout, p).unwrap())
                            .collect(),
                        None => continue,
                    },
                };
                for n in [1, 5, 16, 37, 2 * part + 24] {
                    let x = activation(n * cols, &mut rng);
                    let mut made = x.clone();
                    for (i, row) in made.chunks_exact_mut(cols).enumerate() {
                        make(i, row);
                    }
                    let mut buf = ActBuf::new();
                    let (mut a0, mut a1) = (vec![0f32; n * rows], vec![0f32; n * rows]);
                    if matmul_multi(k, &ms, &made, n, &mut [&mut a0[..], &mut a1[..]], &mut buf).is_err() {
                        // (No kernel for this layout at this level: both refuse.)
                        let mut xp = x.clone();
                        let outs = &mut [&mut a0[..], &mut a1[..]];
                        assert!(matmul_multi_in(k, &ms, ActIn::Prep(&mut xp, &make, 0), n, outs, &mut buf)
                            .is_err());
                        continue;
                    }
                    let counts: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                    let prep = |i: usize, row: &mut [f32]| {
                        counts[i].fetch_add(1, Ordering::Relaxed);
                        make(i, row);
                    };
                    let (mut b0, mut b1) = (vec![0f32; n * rows], vec![0f32; n * rows]);
                    let mut xp = x.clone();
                    let outs = &mut [&mut b0[..], &mut b1[..]];
                    matmul_multi_in(k, &ms, ActIn::Prep(&mut xp, &prep, 0), n, outs, &mut buf).unwrap();
                    let what = format!("{} {ty} repacked {repacked} n {n}", k.name);
                    assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1), "{what}: rows made once");
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert!(bits(&xp) == bits(&made), "{what}: the made rows left in x");
                    assert!(bits(&a0) == bits(&b0) && bits(&a1) == bits(&b1), "{what}: the same products");
                }
            }
        }
    }
}
