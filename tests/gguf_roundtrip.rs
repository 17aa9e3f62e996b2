//! The writer and reader agree with each other and with the reference `gguf` Python package.

mod common;

use ferrite::gguf::{Array, Gguf, GgufFile, GgufWriter, Value};
use ferrite::kernels::GgmlType;
use serde_json::Value as Json;

fn all_values() -> Vec<(&'static str, Value)> {
    vec![
        ("t.u8", Value::U8(200)),
        ("t.i8", Value::I8(-100)),
        ("t.u16", Value::U16(65000)),
        ("t.i16", Value::I16(-32000)),
        ("t.u32", Value::U32(4_000_000_000)),
        ("t.i32", Value::I32(-2_000_000_000)),
        ("t.f32", Value::F32(0.1)),
        ("t.bool", Value::Bool(true)),
        ("t.str", Value::String("héllo wörld ✓".into())),
        ("t.empty", Value::String(String::new())),
        ("t.u64", Value::U64((1 << 63) + 5)),
        ("t.i64", Value::I64(-(1 << 62))),
        ("t.f64", Value::F64(1e-300)),
        ("t.arr_u8", Value::Array(Array::U8(vec![1, 2, 255]))),
        ("t.arr_i8", Value::Array(Array::I8(vec![-1, 2]))),
        ("t.arr_u16", Value::Array(Array::U16(vec![7, 65535]))),
        ("t.arr_i16", Value::Array(Array::I16(vec![-7]))),
        ("t.arr_u32", Value::Array(Array::U32(vec![]))),
        ("t.arr_i32", Value::Array(Array::I32(vec![1, -2, 3]))),
        ("t.arr_f32", Value::Array(Array::F32(vec![0.5, -1.25]))),
        ("t.arr_bool", Value::Array(Array::Bool(vec![true, false]))),
        ("t.arr_str", Value::Array(Array::String(vec!["a".into(), "".into(), "ŝ".into()]))),
        ("t.arr_u64", Value::Array(Array::U64(vec![u64::MAX]))),
        ("t.arr_i64", Value::Array(Array::I64(vec![i64::MIN]))),
        ("t.arr_f64", Value::Array(Array::F64(vec![2.5e100]))),
        ("t.arr_long", Value::Array(Array::I32((0..40).collect()))),
    ]
}

fn sample_file(nested: bool) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut w = GgufWriter::new();
    w.add("general.architecture", Value::String("llama".into()));
    for (k, v) in all_values() {
        w.add(k, v);
    }
    if nested {
        let inner = Array::Array(vec![Array::U8(vec![1, 2]), Array::String(vec!["x".into()])]);
        w.add("t.nested", Value::Array(Array::Array(vec![inner, Array::F32(vec![1.0])])));
    }
    let f32_data: Vec<u8> = (0..3 * 64).flat_map(|i| (i as f32 * 0.25 - 3.0).to_le_bytes()).collect();
    let f16_data: Vec<u8> =
        (0..64).flat_map(|i| half::f16::from_f32(i as f32 - 30.0).to_le_bytes()).collect();
    let q8_data: Vec<u8> = (0..4 * 34).map(|i| (i * 7 % 251) as u8).collect();
    w.add_tensor("a.f32", &[64, 3], GgmlType::F32);
    w.add_tensor("b.f16", &[32, 2], GgmlType::F16);
    w.add_tensor("c.q8_0", &[64, 2], GgmlType::Q8_0);
    let data = vec![f32_data, f16_data, q8_data];
    let refs: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
    (w.to_bytes(&refs), data)
}

#[test]
fn writer_reader_round_trip() {
    let (bytes, data) = sample_file(true);
    let g = Gguf::parse(&bytes).unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.alignment, 32);
    for (k, v) in all_values() {
        assert_eq!(g.get(k), Some(&v), "key {k}");
    }
    assert!(matches!(g.get("t.nested"), Some(Value::Array(Array::Array(a))) if a.len() == 2));
    assert_eq!(g.get_u32("t.u32").unwrap(), 4_000_000_000);
    assert!(g.get_u32("t.u64").is_err(), "u64 beyond u32 is out of range");
    assert!(matches!(g.get_str("t.u8"), Err(ferrite::Error::WrongType { .. })));
    assert!(matches!(g.get_u32("nope"), Err(ferrite::Error::MissingKey { .. })));
    assert_eq!(g.tensors.len(), 3);
    for (t, d) in g.tensors.iter().zip(&data) {
        assert_eq!(t.offset % 32, 0);
        assert_eq!(g.tensor_bytes(&bytes, t), d.as_slice(), "{}", t.name);
    }
    assert_eq!(g.tensor("b.f16").unwrap().dims, vec![32, 2]);
    assert_eq!(g.data_offset % 32, 0);
}

#[test]
fn custom_alignment_round_trip() {
    let mut w = GgufWriter::new();
    w.add("general.alignment", Value::U32(64));
    w.add_tensor("x", &[3], GgmlType::F32);
    w.add_tensor("y", &[5], GgmlType::F32);
    let bytes = w.to_bytes(&[&[1u8; 12], &[2u8; 20]]);
    let g = Gguf::parse(&bytes).unwrap();
    assert_eq!(g.alignment, 64);
    assert_eq!(g.tensor("y").unwrap().offset, 64);
    assert_eq!(g.data_offset % 64, 0);
    assert_eq!(g.tensor_bytes(&bytes, g.tensor("y").unwrap()), &[2u8; 20]);
}

fn expect_json_value(ours: &Value, theirs: &Json, key: &str) {
    match (ours, theirs) {
        (Value::F32(x), Json::Number(n)) => assert_eq!(*x, n.as_f64().unwrap() as f32, "{key}"),
        (Value::F64(x), Json::Number(n)) => assert_eq!(*x, n.as_f64().unwrap(), "{key}"),
        (Value::Array(a), Json::Array(items)) => {
            assert_eq!(a.len(), items.len(), "{key}");
            for (i, item) in items.iter().enumerate() {
                expect_json_value(&a.get(i).unwrap(), item, key);
            }
        }
        (v, j) => {
            let ours = match v {
                Value::String(s) => Json::String(s.clone()),
                Value::Bool(b) => Json::Bool(*b),
                v => match v.as_i64() {
                    Some(i) => Json::from(i),
                    None => Json::from(v.as_u64().unwrap()),
                },
            };
            assert_eq!(&ours, j, "{key}");
        }
    }
}

/// A file we write reads identically in the `gguf` package.
#[test]
fn python_reads_our_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ours.gguf");
    let (bytes, _) = sample_file(false); // the package cannot read nested arrays
    std::fs::write(&path, &bytes).unwrap();
    let py = common::python_json("gguf_read.py", &[&path, std::path::Path::new("--full")]);
    let g = Gguf::parse(&bytes).unwrap();
    let md = py["metadata"].as_object().unwrap();
    assert_eq!(md.len(), g.metadata.len());
    for (k, v) in &g.metadata {
        expect_json_value(v, &md[k], k);
        let ty = py["types"][k].as_str().unwrap();
        if ty != "array[?]" {
            assert_eq!(ty, v.type_name(), "{k}");
        }
    }
    let pt = py["tensors"].as_array().unwrap();
    assert_eq!(pt.len(), g.tensors.len());
    for (t, p) in g.tensors.iter().zip(pt) {
        assert_eq!(p["name"], t.name.as_str());
        assert_eq!(p["type"], t.ty.name());
        assert_eq!(p["shape"], serde_json::json!(t.dims));
        assert_eq!(p["offset"], t.offset);
        assert_eq!(p["size"], t.size);
    }
    assert_eq!(py["data_offset"], g.data_offset);
}

/// A file the `gguf` package writes reads identically here.
#[test]
fn we_read_python_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("theirs.gguf");
    let wrote = common::python_json("gguf_write.py", &[&path]);
    let f = GgufFile::open(&path).unwrap();
    let g = &f.gguf;
    assert_eq!(g.get("t.u8"), Some(&Value::U8(200)));
    assert_eq!(g.get("t.i8"), Some(&Value::I8(-100)));
    assert_eq!(g.get("t.u16"), Some(&Value::U16(65000)));
    assert_eq!(g.get("t.i16"), Some(&Value::I16(-32000)));
    assert_eq!(g.get("t.u32"), Some(&Value::U32(4_000_000_000)));
    assert_eq!(g.get("t.i32"), Some(&Value::I32(-2_000_000_000)));
    assert_eq!(g.get("t.f32"), Some(&Value::F32(0.1)));
    assert_eq!(g.get("t.u64"), Some(&Value::U64((1 << 63) + 5)));
    assert_eq!(g.get("t.i64"), Some(&Value::I64(-(1 << 62))));
    assert_eq!(g.get("t.f64"), Some(&Value::F64(1e-300)));
    assert_eq!(g.get("t.bool"), Some(&Value::Bool(true)));
    assert_eq!(g.get_str("t.str").unwrap(), "héllo wörld ✓");
    assert_eq!(g.get("t.arr_i32"), Some(&Value::Array(Array::I32(vec![1, -2, 3]))));
    let strs = vec!["a".to_string(), "".into(), "ŝtring".into(), "x".repeat(100)];
    assert_eq!(g.get("t.arr_str"), Some(&Value::Array(Array::String(strs))));
    assert_eq!(g.get("t.arr_f32"), Some(&Value::Array(Array::F32(vec![0.5, -1.25, 3.0]))));
    assert_eq!(g.get("t.arr_bool"), Some(&Value::Array(Array::Bool(vec![true, false, true]))));
    assert_eq!(g.get_array("t.arr_long").unwrap().len(), 40);
    assert_eq!(g.architecture(), Some("llama"));
    for (name, exp) in wrote["tensors"].as_object().unwrap() {
        let (t, data) = f.tensor(name).unwrap();
        assert_eq!(serde_json::json!(t.dims), exp["shape"], "{name}");
        assert_eq!(t.ty.name(), exp["type"].as_str().unwrap());
        if let Some(values) = exp["values"].as_array() {
            let mut out = vec![0f32; t.n_elements as usize];
            ferrite::kernels::dequantize(t.ty, data, &mut out).unwrap();
            let exp: Vec<f32> = values.iter().map(|v| v.as_f64().unwrap() as f32).collect();
            assert_eq!(out, exp, "{name}");
        } else {
            let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(hex, exp["bytes"].as_str().unwrap(), "{name}");
        }
    }
}

/// `inspect --json` on SmolLM2 matches what the `gguf` package reads.
#[test]
fn inspect_json_matches_python_on_smollm2() {
    let model = common::smollm2();
    let out = common::ferrite().arg("inspect").arg(&model).arg("--json").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ours: Json = serde_json::from_slice(&out.stdout).unwrap();
    let py = common::python_json("gguf_read.py", &[&model]);
    assert_eq!(ours["version"], py["version"]);
    assert_eq!(ours["tensors"], py["tensors"]);
    assert_eq!(ours["tensors"].as_array().unwrap().len(), 272);
    let (o, p) = (ours["metadata"].as_object().unwrap(), py["metadata"].as_object().unwrap());
    assert_eq!(o.keys().collect::<Vec<_>>(), p.keys().collect::<Vec<_>>());
    for (k, v) in o {
        match (v, &p[k]) {
            // f32 values: Python prints the float32 widened to double, as we do.
            (Json::Number(a), Json::Number(b)) => assert_eq!(a.as_f64(), b.as_f64(), "{k}"),
            (a, b) => assert_eq!(a, b, "{k}"),
        }
    }
    let md = &ours["metadata"];
    assert_eq!(md["general.architecture"], "llama");
    assert_eq!(md["llama.block_count"], 30);
    assert_eq!(md["llama.attention.head_count"], 9);
    assert_eq!(md["llama.attention.head_count_kv"], 3);
    assert_eq!(md["tokenizer.ggml.tokens"]["len"], 49152);
}

#[test]
fn inspect_text_on_smollm2() {
    let out = common::ferrite().arg("inspect").arg(common::smollm2()).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("architecture: llama"));
    assert!(text.contains("272 tensors"));
    for line in ["layers         30", "heads          9", "KV heads       3", "head dim       64"] {
        assert!(text.contains(line), "missing {line:?}");
    }
}

#[test]
fn dump_f32_tensor_matches_python() {
    let model = common::smollm2();
    let out = common::ferrite()
        .args(["dump"])
        .arg(&model)
        .args(["--tensor", "output_norm.weight", "--format", "f32le"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let f = GgufFile::open(&model).unwrap();
    let (_, raw) = f.tensor("output_norm.weight").unwrap();
    assert_eq!(out.stdout, raw, "an F32 tensor dumps as its own bytes");
    let rows = common::ferrite()
        .args(["dump"])
        .arg(&model)
        .args(["--tensor", "token_embd.weight", "--rows", "5:7"])
        .output()
        .unwrap();
    let text = String::from_utf8(rows.stdout).unwrap();
    assert_eq!(text.lines().count(), 2);
    assert_eq!(text.lines().next().unwrap().split(' ').count(), 576);
    let bad = common::ferrite()
        .args(["dump"])
        .arg(&model)
        .args(["--tensor", "token_embd.weight", "--rows", "7:5"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
}
