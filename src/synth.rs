//! `ferrite synth`: random-weight Llama models of real shapes, written streaming (one tensor
//! at a time), readable by llama.cpp. Random weights cost exactly the work of real ones, so
//! an 8B shape can be benchmarked without downloading one.
//!
//! Rows are drawn from a small pool of quantized random rows per (type, length), so writing
//! 8B parameters costs a copy per row, not a quantization.

use std::io::{BufWriter, Write};
use std::path::Path;

use ferrite_kernels::GgmlType;

use crate::error::{Error, Result};
use crate::gguf::{Array, GgufFile, GgufWriter, Value};
use crate::sampler::Rng;

#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub name: &'static str,
    pub dim: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub rope_base: f32,
    pub tied: bool,
    pub ctx: usize,
}

pub const SHAPES: &[Shape] = &[
    Shape {
        name: "llama3-8b",
        dim: 4096,
        layers: 32,
        heads: 32,
        kv_heads: 8,
        ffn: 14336,
        vocab: 128256,
        rope_base: 500000.0,
        tied: false,
        ctx: 8192,
    },
    Shape {
        name: "llama3-1b",
        dim: 2048,
        layers: 16,
        heads: 32,
        kv_heads: 8,
        ffn: 8192,
        vocab: 128256,
        rope_base: 500000.0,
        tied: true,
        ctx: 131072,
    },
    Shape {
        name: "llama2-7b",
        dim: 4096,
        layers: 32,
        heads: 32,
        kv_heads: 32,
        ffn: 11008,
        vocab: 32000,
        rope_base: 10000.0,
        tied: false,
        ctx: 4096,
    },
    Shape {
        name: "tiny",
        dim: 256,
        layers: 4,
        heads: 8,
        kv_heads: 2,
        ffn: 768,
        vocab: 128256,
        rope_base: 10000.0,
        tied: false,
        ctx: 2048,
    },
];

/// A file type: one weight type, or a llama.cpp mixture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileType {
    Plain(GgmlType),
    Q4KM,
    Q5KM,
}

impl FileType {
    pub fn parse(s: &str) -> Option<FileType> {
        if s.eq_ignore_ascii_case("Q4_K_M") {
            return Some(FileType::Q4KM);
        }
        if s.eq_ignore_ascii_case("Q5_K_M") {
            return Some(FileType::Q5KM);
        }
        let ty = GgmlType::from_name(s)?;
        ferrite_kernels::scalar::quantize::can_quantize(ty).then_some(FileType::Plain(ty)).or(matches!(
            ty,
            GgmlType::F32 | GgmlType::F16
        )
        .then_some(FileType::Plain(ty)))
    }

    /// llama.cpp's `general.file_type` (LLAMA_FTYPE_*).
    fn ftype(self) -> u32 {
        match self {
            FileType::Q4KM => 15,
            FileType::Q5KM => 17,
            FileType::Plain(t) => match t {
                GgmlType::F32 => 0,
                GgmlType::F16 => 1,
                GgmlType::Q4_0 => 2,
                GgmlType::Q4_1 => 3,
                GgmlType::Q8_0 => 7,
                GgmlType::Q5_0 => 8,
                GgmlType::Q5_1 => 9,
                GgmlType::Q4_K => 14,
                GgmlType::Q5_K => 16,
                GgmlType::Q6_K => 18,
                _ => 0,
            },
        }
    }

    /// The type of each tensor, as llama.cpp's quantizer picks it for this file type:
    /// the output matrix (and a tied embedding) gets Q6_K unless the file is Q8_0 or float;
    /// Q4_K_M and Q5_K_M give attn_v and ffn_down Q6_K in the layers `use_more_bits` picks.
    fn tensor_type(self, name: &str, layer: usize, n_layers: usize, tied: bool) -> GgmlType {
        let base = match self {
            FileType::Plain(t) => t,
            FileType::Q4KM => GgmlType::Q4_K,
            FileType::Q5KM => GgmlType::Q5_K,
        };
        let is_output = name == "output.weight" || (tied && name == "token_embd.weight");
        if is_output {
            return match base {
                GgmlType::Q8_0 | GgmlType::F16 | GgmlType::F32 => base,
                _ => GgmlType::Q6_K,
            };
        }
        if matches!(self, FileType::Q4KM | FileType::Q5KM)
            && (name.ends_with("attn_v.weight") || name.ends_with("ffn_down.weight"))
        {
            let more = layer < n_layers / 8
                || layer >= 7 * n_layers / 8
                || (layer as i64 - (n_layers / 8) as i64).rem_euclid(3) == 2;
            if more {
                return GgmlType::Q6_K;
            }
        }
        base
    }
}

/// Pools of random quantized rows, one per (type, row length).
struct RowPool {
    pools: Vec<(GgmlType, usize, Vec<u8>)>,
    rng: Rng,
}

const POOL_ROWS: usize = 64;

impl RowPool {
    fn rows(&mut self, ty: GgmlType, cols: usize) -> Result<&[u8]> {
        if let Some(i) = self.pools.iter().position(|p| p.0 == ty && p.1 == cols) {
            return Ok(&self.pools[i].2);
        }
        let rb = ty
            .row_bytes(cols)
            .ok_or_else(|| Error::Invalid(format!("{cols} is not a multiple of {ty}'s block")))?;
        let mut data = vec![0u8; rb * POOL_ROWS];
        let mut x = vec![0f32; cols];
        for r in 0..POOL_ROWS {
            for v in x.iter_mut() {
                // Roughly normal with the spread of trained weights (sum of 4 uniforms).
                let u: f32 = (0..4).map(|_| self.rng.f32() - 0.5).sum();
                *v = u * 0.035;
            }
            let out = &mut data[r * rb..(r + 1) * rb];
            match ty {
                GgmlType::F32 => {
                    out.copy_from_slice(&x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>())
                }
                GgmlType::F16 => out.copy_from_slice(
                    &x.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect::<Vec<_>>(),
                ),
                _ => ferrite_kernels::scalar::quantize::quantize(ty, &x, out)?,
            }
        }
        self.pools.push((ty, cols, data));
        Ok(&self.pools.last().expect("just pushed").2)
    }
}

/// Write a random-weight model of `shape` and `ftype` to `out`, with the tokenizer of
/// `vocab` (a GGUF file) or a synthetic SentencePiece vocabulary.
pub fn synth(shape: &Shape, ftype: FileType, out: &Path, vocab: Option<&Path>, seed: u64) -> Result<()> {
    let mut w = GgufWriter::new();
    let s = shape;
    let type_name = match ftype {
        FileType::Q4KM => "Q4_K_M".to_string(),
        FileType::Q5KM => "Q5_K_M".to_string(),
        FileType::Plain(t) => t.name().to_string(),
    };
    w.add("general.architecture", Value::String("llama".into()));
    w.add("general.name", Value::String(format!("synthetic {} {type_name}", s.name)));
    w.add("llama.block_count", Value::U32(s.layers as u32));
    w.add("llama.context_length", Value::U32(s.ctx as u32));
    w.add("llama.embedding_length", Value::U32(s.dim as u32));
    w.add("llama.feed_forward_length", Value::U32(s.ffn as u32));
    w.add("llama.attention.head_count", Value::U32(s.heads as u32));
    w.add("llama.attention.head_count_kv", Value::U32(s.kv_heads as u32));
    w.add("llama.rope.freq_base", Value::F32(s.rope_base));
    w.add("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5));
    w.add("llama.rope.dimension_count", Value::U32((s.dim / s.heads) as u32));
    w.add("llama.vocab_size", Value::U32(s.vocab as u32));
    w.add("general.file_type", Value::U32(ftype.ftype()));
    w.add("general.quantization_version", Value::U32(2));
    match vocab {
        Some(p) => {
            let v = GgufFile::open(p)?;
            let n = v.gguf.get_array("tokenizer.ggml.tokens")?.len();
            if n != s.vocab {
                return Err(Error::Invalid(format!(
                    "{} has {n} tokens; the {} shape needs {}",
                    p.display(),
                    s.name,
                    s.vocab
                )));
            }
            for (k, val) in &v.gguf.metadata {
                if k.starts_with("tokenizer.") {
                    w.add(k, val.clone());
                }
            }
        }
        None => {
            // A SentencePiece vocabulary: <unk>, <s>, </s>, the 256 byte tokens, then filler.
            let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
            let mut types = vec![2i32, 3, 3];
            for b in 0..256 {
                tokens.push(format!("<0x{b:02X}>"));
                types.push(6);
            }
            while tokens.len() < s.vocab {
                tokens.push(format!("\u{2581}t{}", tokens.len()));
                types.push(1);
            }
            let scores = (0..s.vocab).map(|i| -(i as f32)).collect();
            w.add("tokenizer.ggml.model", Value::String("llama".into()));
            w.add("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)));
            w.add("tokenizer.ggml.scores", Value::Array(Array::F32(scores)));
            w.add("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
            w.add("tokenizer.ggml.bos_token_id", Value::U32(1));
            w.add("tokenizer.ggml.eos_token_id", Value::U32(2));
            w.add("tokenizer.ggml.unknown_token_id", Value::U32(0));
        }
    }

    // (name, layer, cols, rows); rows == 0 marks a vector.
    let (hd, kv) = (s.dim / s.heads, s.kv_heads * (s.dim / s.heads));
    let mut tensors: Vec<(String, usize, usize, usize)> =
        vec![("token_embd.weight".into(), 0, s.dim, s.vocab)];
    for l in 0..s.layers {
        let n = |x: &str| format!("blk.{l}.{x}.weight");
        tensors.push((n("attn_norm"), l, s.dim, 0));
        tensors.push((n("attn_q"), l, s.dim, s.heads * hd));
        tensors.push((n("attn_k"), l, s.dim, kv));
        tensors.push((n("attn_v"), l, s.dim, kv));
        tensors.push((n("attn_output"), l, s.heads * hd, s.dim));
        tensors.push((n("ffn_norm"), l, s.dim, 0));
        tensors.push((n("ffn_gate"), l, s.dim, s.ffn));
        tensors.push((n("ffn_up"), l, s.dim, s.ffn));
        tensors.push((n("ffn_down"), l, s.ffn, s.dim));
    }
    tensors.push(("output_norm.weight".into(), 0, s.dim, 0));
    if !s.tied {
        tensors.push(("output.weight".into(), 0, s.dim, s.vocab));
    }
    let mut types = Vec::new();
    for (name, layer, cols, rows) in &tensors {
        let ty = if *rows == 0 { GgmlType::F32 } else { ftype.tensor_type(name, *layer, s.layers, s.tied) };
        if *rows == 0 {
            w.add_tensor(name, &[*cols as u64], ty);
        } else {
            w.add_tensor(name, &[*cols as u64, *rows as u64], ty);
        }
        types.push(ty);
    }

    let io = |e: std::io::Error| Error::Io { path: out.to_path_buf(), source: e };
    let file = std::fs::File::create(out).map_err(io)?;
    let mut f = BufWriter::with_capacity(1 << 22, file);
    w.write_header(&mut f).map_err(io)?;
    let mut pool = RowPool { pools: Vec::new(), rng: Rng::new(seed) };
    let mut pick = Rng::new(seed ^ 0x5eed);
    let mut pos = 0u64;
    let mut buf = Vec::new();
    for (i, ((_, _, cols, rows), ty)) in tensors.iter().zip(&types).enumerate() {
        buf.clear();
        if *rows == 0 {
            for _ in 0..*cols {
                buf.extend_from_slice(&(1.0 + 0.1 * (pick.f32() - 0.5)).to_le_bytes());
            }
        } else {
            let src = pool.rows(*ty, *cols)?;
            let rb = src.len() / POOL_ROWS;
            for _ in 0..*rows {
                let r = (pick.next_u64() % POOL_ROWS as u64) as usize;
                buf.extend_from_slice(&src[r * rb..(r + 1) * rb]);
            }
        }
        pos = w.write_tensor_data(&mut f, i, pos, &buf).map_err(io)?;
    }
    f.flush().map_err(io)?;
    Ok(())
}
