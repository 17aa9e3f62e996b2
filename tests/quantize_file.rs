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
                    sha256: hex(&sha256(f.tensor_data(t))),
                },
            )
        })
        .collect();
    tensors.sort_by_key(|t| t.0);
    Summary {
        sha256: hex(&sha256(bytes)),
        size: bytes.len() as u64,
        header_sha256: hex(&sha256(&bytes[..data_start])),
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

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// SHA-256 (FIPS 180-4), so the test needs no extra crate.
fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ];
    let mut h: [u32; 8] =
        [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
    let mut tail = data[data.len() / 64 * 64..].to_vec();
    tail.push(0x80);
    while tail.len() % 64 != 56 {
        tail.push(0);
    }
    tail.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    let full = &data[..data.len() / 64 * 64];
    for block in full.chunks_exact(64).chain(tail.chunks_exact(64)) {
        let mut w = [0u32; 64];
        for (i, c) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh.wrapping_add(s1).wrapping_add(ch).wrapping_add(K[i]).wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 32];
    for (o, x) in out.chunks_exact_mut(4).zip(h) {
        o.copy_from_slice(&x.to_be_bytes());
    }
    out
}

#[test]
fn sha256_known_answers() {
    assert_eq!(hex(&sha256(b"")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_eq!(hex(&sha256(b"abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    let long = vec![b'a'; 1000];
    assert_eq!(hex(&sha256(&long)), "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3");
}
