//! A Llama file of fuzzer-chosen shape, metadata and weight types, consistent or not (a
//! tensor missing, a dimension off, a key of the wrong type or value, rows that do not fill
//! their blocks, any bytes as weights): loading it, with or without repacked copies, returns
//! Ok or a typed error, and a model that loads runs a few tokens (ids in range or not)
//! without a panic.
#![no_main]

use ferrite::gguf::{Array, GgufFile, GgufWriter, Value};
use ferrite::kernels::GgmlType;
use ferrite::model::{KvCache, Model, State};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

const TYPES: [GgmlType; 10] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::IQ4_NL,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
    GgmlType::Q2_K,
];

/// A metadata value: usually `v`, sometimes another number or another type.
fn number(u: &mut Unstructured, v: u64) -> Result<Value> {
    Ok(match u.int_in_range(0..=9)? {
        0 => Value::U64(u.arbitrary()?),
        1 => Value::U32(u.int_in_range(0..=8)?),
        2 => Value::String("64".into()),
        3 => Value::F32(v as f32),
        _ => Value::U32(v as u32),
    })
}

struct Shape {
    dim: u64,
    heads: u64,
    kv: u64,
    ffn: u64,
    vocab: u64,
    layers: u64,
}

fn file(u: &mut Unstructured) -> Result<Vec<u8>> {
    let dim = *u.choose(&[32u64, 64, 256])?;
    let heads = *u.choose(&[1u64, 2, 4])?;
    let s = Shape {
        dim,
        heads,
        kv: if u.arbitrary()? { heads } else { 1 },
        ffn: *u.choose(&[32u64, 64, 256])?,
        vocab: u.int_in_range(1..=40)?,
        layers: u.int_in_range(1..=2)?,
    };
    let hd = s.dim / s.heads;
    let mut w = GgufWriter::new();
    w.add(
        "general.architecture",
        Value::String(if u.int_in_range(0..=30)? == 0 { "mamba" } else { "llama" }.into()),
    );
    for (key, v) in [
        ("llama.embedding_length", s.dim),
        ("llama.block_count", s.layers),
        ("llama.attention.head_count", s.heads),
        ("llama.attention.head_count_kv", s.kv),
        ("llama.feed_forward_length", s.ffn),
        ("llama.context_length", 64),
        ("llama.rope.dimension_count", hd),
    ] {
        if u.int_in_range(0..=20)? != 0 {
            w.add(key, number(u, v)?);
        }
    }
    if u.arbitrary()? {
        w.add("llama.rope.freq_base", Value::F32(u.arbitrary()?));
    }
    if u.arbitrary()? {
        w.add("llama.attention.layer_norm_rms_epsilon", Value::F32(u.arbitrary()?));
    }
    if u.int_in_range(0..=10)? == 0 {
        w.add("llama.rope.scaling.type", Value::String(u.choose(&["linear", "yarn", "none"])?.to_string()));
        w.add("llama.rope.scaling.factor", Value::F32(u.arbitrary()?));
    }
    let tokens: Vec<String> = (0..s.vocab).map(|i| format!("t{i}")).collect();
    w.add("tokenizer.ggml.model", Value::String("llama".into()));
    w.add("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)));

    let (q, kv) = (s.dim, hd * s.kv);
    let mut tensors: Vec<(String, Vec<u64>)> =
        vec![("token_embd.weight".into(), vec![s.dim, s.vocab]), ("output_norm.weight".into(), vec![s.dim])];
    if u.arbitrary()? {
        tensors.push(("output.weight".into(), vec![s.dim, s.vocab]));
    }
    if u.int_in_range(0..=5)? == 0 {
        tensors.push(("rope_freqs.weight".into(), vec![hd / 2]));
    }
    for l in 0..s.layers {
        for (name, dims) in [
            ("attn_norm", vec![s.dim]),
            ("attn_q", vec![s.dim, q]),
            ("attn_k", vec![s.dim, kv]),
            ("attn_v", vec![s.dim, kv]),
            ("attn_output", vec![q, s.dim]),
            ("ffn_norm", vec![s.dim]),
            ("ffn_gate", vec![s.dim, s.ffn]),
            ("ffn_up", vec![s.dim, s.ffn]),
            ("ffn_down", vec![s.ffn, s.dim]),
        ] {
            tensors.push((format!("blk.{l}.{name}.weight"), dims));
        }
    }
    let mut data = Vec::new();
    for (name, mut dims) in tensors {
        match u.int_in_range(0..=40)? {
            0 => continue,
            1 => dims[0] += 1,
            2 => dims.reverse(),
            3 => dims.push(2),
            _ => {}
        }
        let ty = if dims.len() == 1 || u.arbitrary()? { GgmlType::F32 } else { *u.choose(&TYPES)? };
        w.add_tensor(&name, &dims, ty);
        let size = w.tensor_size(w.tensor_count() - 1) as usize;
        // Mostly small random values; sometimes any bytes (NaN and infinite scales too).
        let bytes: Vec<u8> = if u.arbitrary()? {
            (0..size).map(|i| if i % 2 == 1 { 0x20 } else { (i * 37 % 251) as u8 }).collect()
        } else {
            (0..size).map(|_| u.arbitrary()).collect::<Result<_>>()?
        };
        data.push(bytes);
    }
    let refs: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
    Ok(w.to_bytes(&refs))
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(bytes) = file(&mut u) else { return };
    let repack = u.arbitrary::<bool>().unwrap_or(false);
    let ids: Vec<u32> = (0..3).map(|_| u.int_in_range(0..=45).unwrap_or(0)).collect();
    let path = std::env::temp_dir().join(format!("ferrite-fuzz-{}.gguf", std::process::id()));
    std::fs::write(&path, &bytes).unwrap();
    let Ok(f) = GgufFile::open(&path) else { return };
    let Ok(model) = Model::load_with(f, repack) else { return };
    let mut cache = KvCache::new(&model.config, 4);
    let mut state = State::new(&model.config, 4);
    if model.forward(&ids[..2], &mut cache, &mut state, None).is_ok() {
        let _ = model.forward(&ids[2..], &mut cache, &mut state, None);
    }
});
