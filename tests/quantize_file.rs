//! `ferrite::quantize::quantize_file` against llama.cpp's `llama-quantize --allow-requantize`
//! on SmolLM2-135M Q4_1: tests/fixtures/goldens/requantized.json holds llama.cpp's files'
//! sha256, header sha256 and every tensor's type and data sha256
//! (scripts/goldens/requantize.sh). Set FERRITE_REQUANT_OUT to a folder to keep our files.

mod common;

use std::path::Path;

use ferrite::gguf::GgufFile;
use ferrite::quantize::quantize_file;
use serde_json::Value as Json;

fn golden() -> Json {
    let p = common::fixture("goldens/requantized.json");
    serde_json::from_slice(&std::fs::read(&p).expect("golden file")).expect("golden JSON")
}

/// One tensor of a file: name, type name, data sha256.
#[derive(Debug, PartialEq)]
struct Tensor {
    name: String,
    ty: String,
    sha256: String,
}

struct Summary {
    sha256: String,
    size: u64,
    header_sha256: String,
    tensors: Vec<Tensor>,
}

fn summarize(path: &Path) -> Summary {
    let f = GgufFile::open(path).expect("our output parses");
    let bytes = f.bytes();
    let data_start = f.gguf.data_offset as usize;
    let mut tensors: Vec<(u64, Tensor)> = f
        .gguf
        .tensors
        .iter()
        .map(|t| {
            (
                t.offset,
                Tensor {
                    name: t.name.clone(),
                    ty: t.ty.name().into(),
                    sha256: common::hex(&common::sha256(f.tensor_data(t))),
                },
            )
        })
        .collect();
    tensors.sort_by_key(|t| t.0);
    Summary {
        sha256: common::hex(&common::sha256(bytes)),
        size: bytes.len() as u64,
        header_sha256: common::hex(&common::sha256(&bytes[..data_start])),
        tensors: tensors.into_iter().map(|t| t.1).collect(),
    }
}

fn golden_tensors(g: &Json) -> Vec<Tensor> {
    g["tensors"]
        .as_array()
        .expect("tensors")
        .iter()
        .map(|t| Tensor {
            name: t["name"].as_str().unwrap().into(),
            ty: t["type"].as_str().unwrap().into(),
            sha256: t["sha256"].as_str().unwrap().into(),
        })
        .collect()
}

/// Requantize SmolLM2 to `ftype`; returns our summary and llama.cpp's golden entry.
fn run(ftype: &str) -> (Summary, Json) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(format!("{ftype}.gguf"));
    let report = quantize_file(&common::smollm2(), &out, ftype).expect("quantize_file");
    eprintln!("{report}");
    if let Some(keep) = std::env::var_os("FERRITE_REQUANT_OUT") {
        std::fs::create_dir_all(&keep).unwrap();
        std::fs::copy(&out, Path::new(&keep).join(format!("ferrite-{ftype}.gguf"))).unwrap();
    }
    let s = summarize(&out);
    assert_eq!(report.file_size, s.size);
    (s, golden()[ftype].clone())
}

/// Names of tensors whose data differ (types and order must already match).
fn differing(ours: &[Tensor], theirs: &[Tensor]) -> Vec<String> {
    let names = |v: &[Tensor]| v.iter().map(|t| (t.name.clone(), t.ty.clone())).collect::<Vec<_>>();
    assert_eq!(names(ours), names(theirs), "tensor order and types differ from llama.cpp's");
    ours.iter().zip(theirs).filter(|(a, b)| a.sha256 != b.sha256).map(|(a, _)| a.name.clone()).collect()
}

/// Our file is llama.cpp's: header, every tensor, the whole file.
fn assert_identical(ftype: &str, s: &Summary, g: &Json) {
    assert_eq!(s.header_sha256, g["header_sha256"].as_str().unwrap(), "{ftype}: header differs");
    let diff = differing(&s.tensors, &golden_tensors(g));
    assert!(diff.is_empty(), "{ftype}: {} of {} tensors differ: {diff:?}", diff.len(), s.tensors.len());
    assert_eq!(s.size, g["size"].as_u64().unwrap(), "{ftype}: size");
    assert_eq!(s.sha256, g["sha256"].as_str().unwrap(), "{ftype}: file sha256");
}

#[test]
fn q8_0_is_llama_cpps_file() {
    let (s, g) = run("Q8_0");
    assert_identical("Q8_0", &s, &g);
}

#[test]
fn q4_0_is_llama_cpps_file() {
    let (s, g) = run("Q4_0");
    assert_identical("Q4_0", &s, &g);
}

/// Q4_K_M of SmolLM2: rows of 576 send Q4_K to Q5_0 and Q6_K to Q8_0 (fallbacks), so only
/// ffn_down (rows of 1536) is a K type: Q6_K in the layers `use_more_bits` picks, Q4_K in the
/// others. The token embedding (tied output) stays Q8_0, copied. Our K quantizers give
/// llama.cpp's bytes here, so the whole file is identical too.
#[test]
fn q4_k_m_is_llama_cpps_file() {
    let (s, g) = run("Q4_K_M");
    let ty = |n: &str| s.tensors.iter().find(|t| t.name == n).unwrap().ty.clone();
    // use_more_bits(l, 30): l < 3, l >= 26, or (l - 3) % 3 == 2.
    let more_bits = [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29];
    for l in 0..30 {
        let more = more_bits.contains(&l);
        let (down, v) = if more { ("Q6_K", "Q8_0") } else { ("Q4_K", "Q5_0") };
        assert_eq!(ty(&format!("blk.{l}.ffn_down.weight")), down, "layer {l}");
        assert_eq!(ty(&format!("blk.{l}.attn_v.weight")), v, "layer {l}");
        for n in ["attn_q", "attn_k", "attn_output", "ffn_gate", "ffn_up"] {
            assert_eq!(ty(&format!("blk.{l}.{n}.weight")), "Q5_0", "layer {l} {n}");
        }
    }
    assert_eq!(ty("token_embd.weight"), "Q8_0");
    assert_identical("Q4_K_M", &s, &g);
}

#[test]
fn unknown_file_types_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.gguf");
    let err = quantize_file(&common::smollm2(), &out, "Q3_K_XL").unwrap_err();
    assert!(err.to_string().contains("Q4_K_M"), "{err}");
    assert!(!out.exists());
}

#[test]
fn sha256_known_answers() {
    assert_eq!(
        common::hex(&common::sha256(b"")),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        common::hex(&common::sha256(b"abc")),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let long = vec![b'a'; 1000];
    assert_eq!(
        common::hex(&common::sha256(&long)),
        "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3"
    );
}
