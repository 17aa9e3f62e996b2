//! `ferrite_kernels::dequantize` against the `gguf` Python package (gguf==0.19.0,
//! `gguf.quants.dequantize`) on blocks written by llama.cpp's `llama-quantize`, for every
//! type stored in files that the crate dequantizes.
//!
//! Fixtures (tests/fixtures/quant/dequant/, provenance in tests/fixtures/quant/README.md):
//! per type, `TYPE.bin` holds 7 slices of 1024 elements (the first 1024 of 7 tensors of a
//! small llama GGUF: random data of several kinds, special rows, real SmolLM2 weights) and
//! `TYPE.f32` the package's dequantization of each. Within a slice, every value must agree
//! within 1e-6 x the slice's largest magnitude.

use std::path::PathBuf;

use ferrite_kernels::{can_dequantize, dequantize, GgmlType};

const TYPES: [GgmlType; 14] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
    GgmlType::F16,
    GgmlType::BF16,
];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quant/dequant")
}

/// (elements per slice, tensor name and description of each slice).
fn slices() -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(dir().join("slices.txt")).unwrap();
    let mut elems = 0;
    let mut names = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        if let Some(v) = line.strip_prefix("elems ") {
            elems = v.trim().parse().unwrap();
        } else if let Some(v) = line.strip_prefix("slice ") {
            names.push(v.to_string());
        } else {
            panic!("bad line in slices.txt: {line}");
        }
    }
    assert!(elems > 0 && !names.is_empty());
    (elems, names)
}

fn check(ty: GgmlType) {
    let (elems, names) = slices();
    let name = ty.name();
    let bin = std::fs::read(dir().join(format!("{name}.bin"))).unwrap();
    let want: Vec<f32> = std::fs::read(dir().join(format!("{name}.f32")))
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let nb = ty.row_bytes(elems).unwrap();
    assert_eq!(bin.len(), nb * names.len(), "{name}.bin size");
    assert_eq!(want.len(), elems * names.len(), "{name}.f32 size");

    let mut got = vec![0f32; elems];
    for (i, slice) in names.iter().enumerate() {
        dequantize(ty, &bin[i * nb..(i + 1) * nb], &mut got).unwrap();
        let want = &want[i * elems..(i + 1) * elems];
        let amax = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(want.iter().all(|v| v.is_finite()), "{name} {slice}: non-finite reference");
        let tol = 1e-6 * amax;
        let (mut worst, mut at) = (0f32, 0);
        for (j, (g, w)) in got.iter().zip(want).enumerate() {
            let e = (g - w).abs();
            if e.is_nan() || e > worst {
                (worst, at) = (e, j);
            }
        }
        eprintln!("{name} {slice}: max |err| {worst:e} (tolerance {tol:e})");
        assert!(
            worst <= tol,
            "{name} slice {i} ({slice}): element {at} is {} but gguf says {} (|err| {worst:e} > {tol:e})",
            got[at],
            want[at]
        );
    }
}

/// The fixtures must cover every type a file can hold that `dequantize` accepts (F32 is a
/// copy and Q8_1 is an activation format, never stored in files).
#[test]
fn every_dequantizable_file_type_has_a_golden() {
    let want: Vec<GgmlType> =
        GgmlType::all().filter(|&t| can_dequantize(t) && t != GgmlType::F32 && t != GgmlType::Q8_1).collect();
    for t in &want {
        assert!(TYPES.contains(t), "{t} is dequantized but has no golden");
    }
    for t in TYPES {
        assert!(dir().join(format!("{}.bin", t.name())).exists(), "missing fixture for {t}");
    }
}

#[test]
fn q4_0() {
    check(GgmlType::Q4_0);
}

#[test]
fn q4_1() {
    check(GgmlType::Q4_1);
}

#[test]
fn q5_0() {
    check(GgmlType::Q5_0);
}

#[test]
fn q5_1() {
    check(GgmlType::Q5_1);
}

#[test]
fn q8_0() {
    check(GgmlType::Q8_0);
}

#[test]
fn q2_k() {
    check(GgmlType::Q2_K);
}

#[test]
fn q3_k() {
    check(GgmlType::Q3_K);
}

#[test]
fn q4_k() {
    check(GgmlType::Q4_K);
}

#[test]
fn q5_k() {
    check(GgmlType::Q5_K);
}

#[test]
fn q6_k() {
    check(GgmlType::Q6_K);
}

#[test]
fn iq4_nl() {
    check(GgmlType::IQ4_NL);
}

#[test]
fn iq4_xs() {
    check(GgmlType::IQ4_XS);
}

#[test]
fn f16() {
    check(GgmlType::F16);
}

#[test]
fn bf16() {
    check(GgmlType::BF16);
}
