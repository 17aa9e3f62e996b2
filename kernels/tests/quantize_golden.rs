//! Our reference quantizers against llama.cpp's (`ggml_quantize_chunk` without an importance
//! matrix, the path `llama-quantize` takes), on 4096 rows x 256 deterministic inputs of 16
//! kinds (normal, uniform, outliers, zeros, tiny, constant, one big value, ...).
//!
//! The fixtures (tests/fixtures/quant/, see its README) hold llama.cpp's blocks for the first
//! 64 rows, a 32-bit hash of every row's bytes, and the per-kind squared round-trip error of
//! ggml's own dequantization. The inputs are not stored: `gen_row` is a bit-exact twin of
//! the generator in tools/quant-ref.c, checked against the input hash in the summary.
//!
//! Legacy types and Q8_0 must be byte-identical on every row; K types identical on >= 99.9%
//! of blocks (a row of 256 is one K block) with round-trip RMSE within 1% of llama.cpp's per
//! input kind.

use std::collections::HashMap;
use std::path::PathBuf;

use ferrite_kernels::scalar::quantize::quantize;
use ferrite_kernels::{dequantize, GgmlType};

const COLS: usize = 256;
const KINDS: usize = 16;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quant")
}

// ---- the input generator: twin of tools/quant-ref.c (integer ops and sequenced f32 + - *) ----

struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unif(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / 16_777_216.0)
    }
    fn sym(&mut self) -> f32 {
        2.0 * self.unif() - 1.0
    }
    fn gauss(&mut self) -> f32 {
        let mut s = self.unif();
        s += self.unif();
        s += self.unif();
        s += self.unif();
        (s - 2.0) * 1.732_050_8
    }
}

fn pow2(e: i32) -> f32 {
    f32::from_bits(((127 + e) as u32) << 23)
}

fn gen_row(rng: &mut Rng, row: usize, x: &mut [f32]) {
    match row % KINDS {
        0 => x.iter_mut().for_each(|v| *v = rng.gauss()),
        1 => x.iter_mut().for_each(|v| *v = rng.sym()),
        2 => x.iter_mut().for_each(|v| *v = rng.gauss() * 0.02),
        3 => {
            for v in x.iter_mut() {
                let mut g = rng.gauss() * 0.05;
                if rng.next_u64() & 63 == 0 {
                    g *= 20.0;
                }
                *v = g;
            }
        }
        4 => x.fill(0.0),
        5 => x.iter_mut().for_each(|v| *v = rng.gauss() * pow2(-20)),
        6 => x.iter_mut().for_each(|v| *v = rng.gauss() * pow2(-64)),
        7 => {
            let c = rng.sym() * 4.0;
            x.fill(c);
        }
        8 => {
            x.iter_mut().for_each(|v| *v = rng.gauss() * 0.01);
            let p = (rng.next_u64() % COLS as u64) as usize;
            x[p] = if rng.next_u64() & 1 != 0 { -64.0 } else { 64.0 };
        }
        9 => x.iter_mut().for_each(|v| *v = rng.unif() * 3.0 + 1.0),
        10 => x.iter_mut().for_each(|v| *v = -(rng.unif() * 2.0)),
        11 => x.iter_mut().for_each(|v| *v = rng.gauss() * 1000.0),
        12 => x.iter_mut().for_each(|v| *v = (rng.next_u64() % 16) as i32 as f32 - 8.0),
        13 => {
            for (i, v) in x.iter_mut().enumerate() {
                *v = ((rng.next_u64() % 128) as i32 as f32 - 64.0) * 0.015625;
                if i % 16 == 0 {
                    *v = -1.0;
                }
            }
        }
        14 => {
            for v in x.iter_mut() {
                *v = if rng.next_u64() % 10 < 9 { 0.0 } else { rng.gauss() };
            }
        }
        _ => {
            for v in x.iter_mut() {
                let (a, b, c) = (rng.gauss(), rng.gauss(), rng.gauss());
                *v = a * b * c * 0.1;
            }
        }
    }
}

const FNV_OFFSET: u64 = 0xCBF2_9CE4_8422_2325;

fn fnv1a64(bytes: &[u8], mut h: u64) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

fn row_hash(bytes: &[u8]) -> u32 {
    let h = fnv1a64(bytes, FNV_OFFSET);
    (h ^ (h >> 32)) as u32
}

/// summary.txt: `key value` lines, and `sse TYPE KIND value` lines.
struct Summary {
    keys: HashMap<String, String>,
    sse: HashMap<(String, usize), f64>,
}

fn read_summary() -> Summary {
    let path = fixture_dir().join("summary.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (mut keys, mut sse) = (HashMap::new(), HashMap::new());
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["sse", ty, kind, v] => {
                sse.insert((ty.to_string(), kind.parse().unwrap()), v.parse().unwrap());
            }
            [k, v] => {
                keys.insert(k.to_string(), v.to_string());
            }
            _ => panic!("bad summary line: {line}"),
        }
    }
    Summary { keys, sse }
}

struct Inputs {
    rows: usize,
    full_rows: usize,
    x: Vec<f32>,
    summary: Summary,
}

fn inputs() -> Inputs {
    let summary = read_summary();
    let key = |k: &str| summary.keys.get(k).unwrap_or_else(|| panic!("summary lacks {k}")).clone();
    let rows: usize = key("rows").parse().unwrap();
    let full_rows: usize = key("full_rows").parse().unwrap();
    assert_eq!(key("cols"), COLS.to_string());
    assert_eq!(key("kinds"), KINDS.to_string());
    let mut rng = Rng(0x5EED_0F3E_221E_5EED);
    let mut x = vec![0f32; rows * COLS];
    for (r, row) in x.chunks_exact_mut(COLS).enumerate() {
        gen_row(&mut rng, r, row);
    }
    let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(
        format!("{:016x}", fnv1a64(&bytes, FNV_OFFSET)),
        key("input_fnv64"),
        "the generated input differs from the one tools/quant-ref.c quantized"
    );
    Inputs { rows, full_rows, x, summary }
}

struct Outcome {
    identical_rows: usize,
    /// (kind, our RMSE, llama.cpp's RMSE) for kinds where llama.cpp's error is not zero.
    rmse: Vec<(usize, f64, f64)>,
    /// Kinds where llama.cpp's round trip is exact: our squared error there.
    exact_kinds_sse: Vec<(usize, f64)>,
}

/// Quantize every row with our `quantize`, compare with the fixtures, and return what matched.
fn compare(inp: &Inputs, ty: GgmlType) -> Outcome {
    let name = ty.name();
    let rs = ty.row_bytes(COLS).unwrap();
    let mut ours = vec![0u8; rs * inp.rows];
    quantize(ty, &inp.x, &mut ours).unwrap();

    // Full blocks of the first rows: for a failure, show where the bytes part.
    let blocks = std::fs::read(fixture_dir().join(format!("{name}.blocks"))).unwrap();
    assert_eq!(blocks.len(), rs * inp.full_rows, "{name}.blocks size");
    let bs = ty.type_size();
    let mut first_diff = None;
    for (i, (a, b)) in ours[..blocks.len()].chunks_exact(bs).zip(blocks.chunks_exact(bs)).enumerate() {
        if a != b && first_diff.is_none() {
            first_diff = Some(format!("block {i} (row {}): ours {a:?}\n llama.cpp {b:?}", i * bs / rs));
        }
    }

    let hashes = std::fs::read(fixture_dir().join(format!("{name}.hashes"))).unwrap();
    assert_eq!(hashes.len(), 4 * inp.rows, "{name}.hashes size");
    let mut identical_rows = 0;
    for (row, want) in ours.chunks_exact(rs).zip(hashes.chunks_exact(4)) {
        if row_hash(row) == u32::from_le_bytes([want[0], want[1], want[2], want[3]]) {
            identical_rows += 1;
        }
    }
    if identical_rows != inp.rows {
        if let Some(d) = &first_diff {
            eprintln!("{name}: first differing block among the stored rows: {d}");
        }
    }

    // Round-trip error per input kind, against ggml's own round trip of its own blocks.
    let mut deq = vec![0f32; inp.rows * COLS];
    dequantize(ty, &ours, &mut deq).unwrap();
    let mut sse = [0f64; KINDS];
    for (r, (x, y)) in inp.x.chunks_exact(COLS).zip(deq.chunks_exact(COLS)).enumerate() {
        for (&a, &b) in x.iter().zip(y) {
            let e = a as f64 - b as f64;
            sse[r % KINDS] += e * e;
        }
    }
    let mut rmse = Vec::new();
    let mut exact_kinds_sse = Vec::new();
    let n_per_kind = (inp.rows / KINDS * COLS) as f64;
    for (k, &ours_sse) in sse.iter().enumerate() {
        let theirs =
            *inp.summary.sse.get(&(name.to_string(), k)).unwrap_or_else(|| panic!("no sse {name} {k}"));
        if theirs > 0.0 {
            rmse.push((k, (ours_sse / n_per_kind).sqrt(), (theirs / n_per_kind).sqrt()));
        } else {
            exact_kinds_sse.push((k, ours_sse));
        }
    }
    Outcome { identical_rows, rmse, exact_kinds_sse }
}

fn check_rmse(name: &str, o: &Outcome) {
    for &(k, ours, theirs) in &o.rmse {
        let ratio = ours / theirs;
        eprintln!("{name} kind {k:2}: rmse ours {ours:.6e} llama.cpp {theirs:.6e} ratio {ratio:.6}");
        assert!(
            (ratio - 1.0).abs() <= 0.01,
            "{name} kind {k}: round-trip RMSE ratio {ratio} (ours {ours}, llama.cpp {theirs})"
        );
    }
    for &(k, sse) in &o.exact_kinds_sse {
        assert_eq!(
            sse, 0.0,
            "{name} kind {k}: llama.cpp's round trip is exact, ours has squared error {sse}"
        );
    }
}

fn legacy(ty: GgmlType) {
    let inp = inputs();
    let o = compare(&inp, ty);
    eprintln!("{}: {}/{} rows byte-identical", ty.name(), o.identical_rows, inp.rows);
    assert_eq!(o.identical_rows, inp.rows, "{}: every row must be byte-identical to llama.cpp's", ty.name());
    check_rmse(ty.name(), &o);
}

fn k_type(ty: GgmlType) {
    let inp = inputs();
    assert!(inp.rows >= 2000, "too few blocks for a 99.9% bound to mean anything");
    let o = compare(&inp, ty);
    let pct = 100.0 * o.identical_rows as f64 / inp.rows as f64;
    eprintln!("{}: {}/{} blocks identical ({pct:.3}%)", ty.name(), o.identical_rows, inp.rows);
    assert!(pct >= 99.9, "{}: only {pct:.3}% of blocks identical to llama.cpp's", ty.name());
    check_rmse(ty.name(), &o);
}

#[test]
fn q4_0_is_byte_identical() {
    legacy(GgmlType::Q4_0);
}

#[test]
fn q4_1_is_byte_identical() {
    legacy(GgmlType::Q4_1);
}

#[test]
fn q5_0_is_byte_identical() {
    legacy(GgmlType::Q5_0);
}

#[test]
fn q5_1_is_byte_identical() {
    legacy(GgmlType::Q5_1);
}

#[test]
fn q8_0_is_byte_identical() {
    legacy(GgmlType::Q8_0);
}

#[test]
fn q4_k_matches() {
    k_type(GgmlType::Q4_K);
}

#[test]
fn q5_k_matches() {
    k_type(GgmlType::Q5_K);
}

#[test]
fn q6_k_matches() {
    k_type(GgmlType::Q6_K);
}

/// The per-type entry points and the `quantize` dispatcher give the same bytes (the
/// dispatcher chunks and parallelises; a chunking bug would show at a chunk edge).
#[test]
fn typed_functions_agree_with_dispatcher() {
    use ferrite_kernels::blocks::*;
    use ferrite_kernels::scalar::quantize::*;
    let mut rng = Rng(7);
    // 65 K blocks: one more than a dispatcher chunk.
    let mut x = vec![0f32; 65 * COLS];
    for (r, row) in x.chunks_exact_mut(COLS).enumerate() {
        gen_row(&mut rng, r, row);
    }
    macro_rules! check {
        ($ty:expr, $f:path, $b:ty) => {{
            let mut typed = vec![<$b>::default(); x.len() / <$b as Block>::ELEMS];
            $f(&x, &mut typed);
            let mut bytes = vec![0u8; $ty.row_bytes(x.len()).unwrap()];
            quantize($ty, &x, &mut bytes).unwrap();
            assert_eq!(as_bytes(&typed), &bytes[..], "{}", $ty);
        }};
    }
    check!(GgmlType::Q4_0, quantize_q4_0, BlockQ4_0);
    check!(GgmlType::Q4_1, quantize_q4_1, BlockQ4_1);
    check!(GgmlType::Q5_0, quantize_q5_0, BlockQ5_0);
    check!(GgmlType::Q5_1, quantize_q5_1, BlockQ5_1);
    check!(GgmlType::Q4_K, quantize_q4_k, BlockQ4K);
    check!(GgmlType::Q5_K, quantize_q5_k, BlockQ5K);
    check!(GgmlType::Q6_K, quantize_q6_k, BlockQ6K);
}
