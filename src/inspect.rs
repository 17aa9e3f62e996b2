//! `ferrite inspect` and `ferrite dump`: describe a GGUF file and print tensor values.

use std::fmt::Write as _;
use std::io::Write;

use serde_json::{json, Map, Value as Json};

use crate::error::{Error, Result};
use crate::gguf::{Array, Gguf, GgufFile, TensorInfo, Value};

/// Arrays longer than this are summarised in JSON and text output.
const ARRAY_INLINE_MAX: usize = 16;
const ARRAY_HEAD: usize = 8;

fn scalar_json(v: &Value) -> Json {
    match v {
        Value::U8(x) => json!(x),
        Value::I8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::F32(x) => float_json(*x as f64),
        Value::F64(x) => float_json(*x),
        Value::Bool(x) => json!(x),
        Value::String(s) => json!(s),
        Value::Array(a) => array_json(a),
    }
}

/// JSON has no NaN or infinity: those become strings.
fn float_json(x: f64) -> Json {
    serde_json::Number::from_f64(x).map(Json::Number).unwrap_or_else(|| json!(x.to_string()))
}

fn array_json(a: &Array) -> Json {
    let n = a.len();
    let shown = if n > ARRAY_INLINE_MAX { ARRAY_HEAD } else { n };
    let items: Vec<Json> = (0..shown).filter_map(|i| a.get(i)).map(|v| scalar_json(&v)).collect();
    if n > ARRAY_INLINE_MAX {
        json!({"type": "array", "element_type": a.element_type().name(), "len": n, "head": items})
    } else {
        Json::Array(items)
    }
}

/// The `inspect --json` object: version, metadata, tensors.
pub fn to_json(g: &Gguf) -> Json {
    let mut md = Map::new();
    for (k, v) in &g.metadata {
        md.insert(k.clone(), scalar_json(v));
    }
    let tensors: Vec<Json> = g
        .tensors
        .iter()
        .map(|t| json!({"name": t.name, "type": t.ty.name(), "shape": t.dims, "offset": t.offset, "size": t.size}))
        .collect();
    json!({"version": g.version, "metadata": md, "tensors": tensors})
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => {
            let one_line: String = s.chars().take(80).collect::<String>().replace('\n', "\\n");
            if s.chars().count() > 80 {
                format!("{one_line:?}... ({} chars)", s.chars().count())
            } else {
                format!("{one_line:?}")
            }
        }
        Value::Array(a) => {
            let n = a.len();
            let shown = n.min(ARRAY_HEAD);
            let items: Vec<String> = (0..shown).filter_map(|i| a.get(i)).map(|v| value_text(&v)).collect();
            let more = if n > shown { ", ..." } else { "" };
            format!("[{}{more}] ({} x {})", items.join(", "), n, a.element_type().name())
        }
        v => scalar_json(v).to_string(),
    }
}

/// Human-readable summary: architecture, metadata, tensor table, totals.
pub fn to_text(g: &Gguf) -> String {
    let mut s = String::new();
    let arch = g.architecture().unwrap_or("(none)");
    let _ = writeln!(
        s,
        "GGUF version {}, {} metadata entries, {} tensors, alignment {}",
        g.version,
        g.metadata.len(),
        g.tensors.len(),
        g.alignment
    );
    let _ = writeln!(s, "\narchitecture: {arch}");
    let num = |suffix: &str| g.get(&g.arch_key(suffix)).map(value_text);
    let heads = g.get_u64(&g.arch_key("attention.head_count")).ok();
    let dim = g.get_u64(&g.arch_key("embedding_length")).ok();
    let head_dim = g
        .get_u64(&g.arch_key("attention.key_length"))
        .ok()
        .or_else(|| Some(dim? / heads.filter(|&h| h > 0)?));
    let vocab = g
        .get_array("tokenizer.ggml.tokens")
        .map(|a| a.len() as u64)
        .ok()
        .or_else(|| g.get_u64(&g.arch_key("vocab_size")).ok());
    let rows: [(&str, Option<String>); 9] = [
        ("layers", num("block_count")),
        ("embedding dim", num("embedding_length")),
        ("heads", num("attention.head_count")),
        ("KV heads", num("attention.head_count_kv")),
        ("head dim", head_dim.map(|h| h.to_string())),
        ("FFN dim", num("feed_forward_length")),
        ("context", num("context_length")),
        ("rope base", num("rope.freq_base")),
        ("vocab size", vocab.map(|v| v.to_string())),
    ];
    for (label, v) in rows {
        if let Some(v) = v {
            let _ = writeln!(s, "  {label:<14} {v}");
        }
    }
    if let Ok(m) = g.get_str("tokenizer.ggml.model") {
        let pre =
            g.get_str("tokenizer.ggml.pre").map(|p| format!(" (pre-tokenizer {p})")).unwrap_or_default();
        let _ = writeln!(s, "  {:<14} {m}{pre}", "tokenizer");
    }
    let _ = writeln!(s, "\nmetadata:");
    for (k, v) in &g.metadata {
        let _ = writeln!(s, "  {k:<40} {:<14} {}", v.type_name(), value_text(v));
    }
    let _ = writeln!(s, "\ntensors:");
    let _ = writeln!(s, "  {:<32} {:<8} {:<22} {:>12} {:>12}", "name", "type", "shape", "offset", "bytes");
    for t in &g.tensors {
        let shape = t.dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(" x ");
        let _ =
            writeln!(s, "  {:<32} {:<8} {:<22} {:>12} {:>12}", t.name, t.ty.name(), shape, t.offset, t.size);
    }
    let params: u64 = g.tensors.iter().map(|t| t.n_elements).sum();
    let bytes: u64 = g.tensors.iter().map(|t| t.size).sum();
    let bpw = if params > 0 { bytes as f64 * 8.0 / params as f64 } else { 0.0 };
    let mut by_type: Vec<(&str, usize)> = Vec::new();
    for t in &g.tensors {
        match by_type.iter_mut().find(|(n, _)| *n == t.ty.name()) {
            Some(e) => e.1 += 1,
            None => by_type.push((t.ty.name(), 1)),
        }
    }
    let types = by_type.iter().map(|(n, c)| format!("{n}: {c}")).collect::<Vec<_>>().join(", ");
    let _ = writeln!(
        s,
        "\ntotals: {} tensors ({types}), {} parameters ({:.1} M), {} bytes ({:.1} MiB), {:.2} bits per weight",
        g.tensors.len(),
        params,
        params as f64 / 1e6,
        bytes,
        bytes as f64 / (1024.0 * 1024.0),
        bpw
    );
    s
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DumpFormat {
    Text,
    F32le,
}

/// Parse a `--rows A:B` range (half-open; either end may be omitted) against `n_rows`.
pub fn parse_rows(spec: Option<&str>, n_rows: u64) -> Result<(u64, u64)> {
    let Some(spec) = spec else {
        return Ok((0, n_rows));
    };
    let bad = || Error::Invalid(format!("--rows {spec:?}: expected A:B with 0 <= A < B <= {n_rows}"));
    let (a, b) = spec.split_once(':').ok_or_else(bad)?;
    let a = if a.is_empty() { 0 } else { a.trim().parse::<u64>().map_err(|_| bad())? };
    let b = if b.is_empty() { n_rows } else { b.trim().parse::<u64>().map_err(|_| bad())? };
    if a >= b || b > n_rows {
        return Err(bad());
    }
    Ok((a, b))
}

/// Write rows [a, b) of a tensor as f32, one row at a time (never the whole tensor in memory).
pub fn dump(
    file: &GgufFile,
    t: &TensorInfo,
    rows: (u64, u64),
    format: DumpFormat,
    out: &mut dyn Write,
) -> Result<()> {
    if !ferrite_kernels::can_dequantize(t.ty) {
        return Err(Error::Invalid(format!("tensor {:?}: dumping type {} is not supported", t.name, t.ty)));
    }
    let data = file.tensor_data(t);
    let row_len = t.row_len() as usize;
    let row_bytes = t.ty.row_bytes(row_len).expect("validated by the reader");
    let mut buf = vec![0f32; row_len];
    let mut line = String::new();
    let io = |e: std::io::Error| Error::Io { path: "<stdout>".into(), source: e };
    for r in rows.0..rows.1 {
        let start = r as usize * row_bytes;
        ferrite_kernels::dequantize(t.ty, &data[start..start + row_bytes], &mut buf)?;
        match format {
            DumpFormat::F32le => {
                let bytes: Vec<u8> = buf.iter().flat_map(|x| x.to_le_bytes()).collect();
                out.write_all(&bytes).map_err(io)?;
            }
            DumpFormat::Text => {
                line.clear();
                for (i, x) in buf.iter().enumerate() {
                    if i > 0 {
                        line.push(' ');
                    }
                    let _ = write!(line, "{x}");
                }
                line.push('\n');
                out.write_all(line.as_bytes()).map_err(io)?;
            }
        }
    }
    out.flush().map_err(io)?;
    Ok(())
}
