//! Model hyper-parameters from GGUF metadata (architecture `llama`), validated.

use crate::error::{Error, Result};
use crate::gguf::Gguf;

#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub n_layers: usize,
    pub dim: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub ffn_dim: usize,
    pub n_ctx_train: usize,
    pub vocab_size: usize,
    pub rms_eps: f32,
    pub rope_base: f32,
    pub rope_dims: usize,
    /// Positions are multiplied by this (linear rope scaling: 1 / factor).
    pub rope_freq_scale: f32,
}

/// Caps far above any real Llama, so absurd metadata is rejected before allocation.
const MAX_DIM: usize = 1 << 16;
const MAX_LAYERS: usize = 1024;
const MAX_HEADS: usize = 1024;
const MAX_CTX: usize = 1 << 24;
const MAX_VOCAB: usize = 1 << 22;

impl LlamaConfig {
    pub fn from_metadata(g: &Gguf) -> Result<LlamaConfig> {
        let arch =
            g.architecture().ok_or_else(|| Error::MissingKey { key: "general.architecture".into() })?;
        if arch != "llama" {
            return Err(Error::Invalid(format!(
                "architecture {arch:?} is not supported (only \"llama\": Llama 2/3, TinyLlama, SmolLM, Mistral 7B)"
            )));
        }
        let get = |k: &str| -> Result<usize> { Ok(g.get_u64(&format!("llama.{k}"))? as usize) };
        let opt = |k: &str| -> Result<Option<usize>> {
            match g.get(&format!("llama.{k}")) {
                None => Ok(None),
                Some(_) => get(k).map(Some),
            }
        };
        let optf = |k: &str| -> Result<Option<f32>> {
            match g.get(&format!("llama.{k}")) {
                None => Ok(None),
                Some(_) => Ok(Some(g.get_f32(&format!("llama.{k}"))?)),
            }
        };
        let n_layers = get("block_count")?;
        let dim = get("embedding_length")?;
        let n_heads = get("attention.head_count")?;
        let n_kv_heads = opt("attention.head_count_kv")?.unwrap_or(n_heads);
        let ffn_dim = get("feed_forward_length")?;
        let n_ctx_train = opt("context_length")?.unwrap_or(2048);
        let bad = |what: String| Error::Invalid(format!("impossible model shape: {what}"));
        if n_heads == 0 || n_heads > MAX_HEADS {
            return Err(bad(format!("llama.attention.head_count = {n_heads}")));
        }
        let head_dim = opt("attention.key_length")?.unwrap_or(dim / n_heads);
        let value_dim = opt("attention.value_length")?.unwrap_or(head_dim);
        let vocab_size = match g.get_array("tokenizer.ggml.tokens") {
            Ok(a) => a.len(),
            Err(_) => opt("vocab_size")?.unwrap_or(0),
        };
        let vocab_size = match g.tensor("token_embd.weight") {
            Some(t) if t.dims.len() == 2 => t.dims[1] as usize,
            _ => vocab_size,
        };
        let rope_dims = opt("rope.dimension_count")?.unwrap_or(head_dim);
        let rope_base = optf("rope.freq_base")?.unwrap_or(10000.0);
        let rms_eps = optf("attention.layer_norm_rms_epsilon")?.unwrap_or(1e-5);
        let scaling = g.get("llama.rope.scaling.type").and_then(|v| v.as_str()).unwrap_or("none");
        let rope_freq_scale = match scaling {
            "none" => 1.0,
            "linear" => {
                let f = optf("rope.scaling.factor")?.unwrap_or(1.0);
                if !(f.is_finite() && f > 0.0) {
                    return Err(bad(format!("llama.rope.scaling.factor = {f}")));
                }
                1.0 / f
            }
            other => {
                return Err(Error::Invalid(format!("rope scaling {other:?} is not supported (none, linear)")))
            }
        };
        if dim == 0 || dim > MAX_DIM {
            return Err(bad(format!("llama.embedding_length = {dim}")));
        }
        if n_layers == 0 || n_layers > MAX_LAYERS {
            return Err(bad(format!("llama.block_count = {n_layers}")));
        }
        if n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
            return Err(bad(format!("{n_heads} heads are not a multiple of {n_kv_heads} KV heads")));
        }
        if head_dim == 0 || head_dim % 2 != 0 || head_dim > 1024 || value_dim != head_dim {
            return Err(bad(format!("head dim {head_dim} (value dim {value_dim})")));
        }
        if rope_dims == 0 || rope_dims > head_dim || rope_dims % 2 != 0 {
            return Err(bad(format!("rope dimension count {rope_dims} for head dim {head_dim}")));
        }
        if ffn_dim == 0 || ffn_dim > 16 * MAX_DIM {
            return Err(bad(format!("llama.feed_forward_length = {ffn_dim}")));
        }
        if n_ctx_train == 0 || n_ctx_train > MAX_CTX {
            return Err(bad(format!("llama.context_length = {n_ctx_train}")));
        }
        if vocab_size == 0 || vocab_size > MAX_VOCAB {
            return Err(bad(format!("vocabulary size {vocab_size}")));
        }
        let sane = rope_base.is_finite() && rope_base > 1.0 && rms_eps.is_finite() && rms_eps > 0.0;
        if !sane {
            return Err(bad(format!("rope base {rope_base}, RMS epsilon {rms_eps}")));
        }
        Ok(LlamaConfig {
            n_layers,
            dim,
            n_heads,
            n_kv_heads,
            head_dim,
            ffn_dim,
            n_ctx_train,
            vocab_size,
            rms_eps,
            rope_base,
            rope_dims,
            rope_freq_scale,
        })
    }

    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}
