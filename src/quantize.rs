//! `ferrite quantize`: requantize a GGUF Llama model to another file type, as
//! `llama-quantize --allow-requantize IN OUT TYPE` does, so CI can make the Q8_0 / Q4_0 /
//! Q4_K_M variants of a model without building llama.cpp.
//!
//! What llama.cpp does (src/llama-quant.cpp), and so what this does:
//! - Tensors are written sorted by layer (`blk.N.`; tensors outside any layer first), then
//!   by name, byte-wise.
//! - Metadata: every input key in order, except `split.*`; then `general.quantization_version`
//!   (2) and `general.file_type` (the LLAMA_FTYPE id) moved to the end. No other key is added.
//! - A tensor is converted only if it has 2+ dimensions (trailing 1s do not count), its name
//!   ends in "weight" and is not a norm, a MoE gate or a few other small kinds; and only if
//!   the chosen type differs from its own: a tensor already of the chosen type is copied
//!   as is, not dequantized and requantized.
//! - The chosen type: the file type's base type, changed per tensor by `llama_tensor_get_type`
//!   (the output matrix, or a tied token embedding, gets Q6_K unless the base is Q8_0; in
//!   *_K_M files attn_v and ffn_down get Q6_K in the layers `use_more_bits` picks; ...), then
//!   changed again when the row length is not a multiple of the type's block
//!   (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, -> F16 when even 32 does not divide it).
//! - Conversion: dequantize to f32 (ggml's `to_float`), quantize with the reference
//!   quantizers (`quantize_row_*_ref`; no importance matrix). Both are ours
//!   (`ferrite_kernels`), written to give ggml's bytes.
//! - Data: each tensor padded with zeros to the alignment (32), the last one too.
//!
//! Streaming: the input is memory-mapped and each tensor converted a slab of rows at a time
//! (rayon over row groups within the slab), so memory stays at a few tens of MB whatever
//! the model's size. The file is written beside the output and renamed into place at the
//! end, so a failed run leaves no half-written model (and the input may be the output).

use std::fmt;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use ferrite_kernels::GgmlType;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::gguf::{Gguf, GgufFile, GgufWriter, Value};

/// A llama.cpp file type (`LLAMA_FTYPE_*`): a base weight type and a mixture rule.
/// Only the ones our quantizers can produce.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ftype {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
}

/// (file type, llama-quantize's name, LLAMA_FTYPE id, base tensor type).
const FTYPES: &[(Ftype, &str, u32, GgmlType)] = &[
    (Ftype::F32, "F32", 0, GgmlType::F32),
    (Ftype::F16, "F16", 1, GgmlType::F16),
    (Ftype::Q4_0, "Q4_0", 2, GgmlType::Q4_0),
    (Ftype::Q4_1, "Q4_1", 3, GgmlType::Q4_1),
    (Ftype::Q8_0, "Q8_0", 7, GgmlType::Q8_0),
    (Ftype::Q5_0, "Q5_0", 8, GgmlType::Q5_0),
    (Ftype::Q5_1, "Q5_1", 9, GgmlType::Q5_1),
    (Ftype::Q4_K_S, "Q4_K_S", 14, GgmlType::Q4_K),
    (Ftype::Q4_K_M, "Q4_K_M", 15, GgmlType::Q4_K),
    (Ftype::Q5_K_S, "Q5_K_S", 16, GgmlType::Q5_K),
    (Ftype::Q5_K_M, "Q5_K_M", 17, GgmlType::Q5_K),
    (Ftype::Q6_K, "Q6_K", 18, GgmlType::Q6_K),
    (Ftype::BF16, "BF16", 32, GgmlType::BF16),
];

impl Ftype {
    fn row(self) -> &'static (Ftype, &'static str, u32, GgmlType) {
        FTYPES.iter().find(|r| r.0 == self).expect("every file type has a row")
    }

    /// Every supported file type.
    pub fn all() -> impl Iterator<Item = Ftype> {
        FTYPES.iter().map(|r| r.0)
    }

    /// A name as llama-quantize takes it (case-insensitive; "Q4_K" and "Q5_K" are its
    /// aliases for the _M mixtures), or the numeric LLAMA_FTYPE id.
    pub fn parse(s: &str) -> Option<Ftype> {
        let s = s.trim();
        let alias = match s.to_ascii_uppercase().as_str() {
            "Q4_K" => Some(Ftype::Q4_K_M),
            "Q5_K" => Some(Ftype::Q5_K_M),
            _ => None,
        };
        alias
            .or_else(|| FTYPES.iter().find(|r| r.1.eq_ignore_ascii_case(s)).map(|r| r.0))
            .or_else(|| s.parse::<u32>().ok().and_then(|id| FTYPES.iter().find(|r| r.2 == id)).map(|r| r.0))
    }

    pub fn name(self) -> &'static str {
        self.row().1
    }

    /// `general.file_type` (LLAMA_FTYPE_*).
    pub fn id(self) -> u32 {
        self.row().2
    }

    /// The tensor type most weights get.
    pub fn base_type(self) -> GgmlType {
        self.row().3
    }

    fn supported_names() -> String {
        FTYPES.iter().map(|r| r.1).collect::<Vec<_>>().join(", ")
    }
}

impl fmt::Display for Ftype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the type choice needs to know about the model (llama.cpp reads it from hparams).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelFacts {
    pub arch: String,
    /// `{arch}.block_count`: llama.cpp's layer count for the ffn_* counters.
    pub n_layer: usize,
    /// `{arch}.expert_count` (0 when absent).
    pub n_expert: usize,
    /// Layer 0's `{arch}.attention.head_count` and `head_count_kv`.
    pub n_head: usize,
    pub n_head_kv: usize,
}

impl ModelFacts {
    pub fn from_gguf(g: &Gguf) -> Result<ModelFacts> {
        let arch = g.get_str("general.architecture")?.to_string();
        let n_layer = g.get_u32(&format!("{arch}.block_count"))? as usize;
        let opt_u32 = |k: &str| -> Result<Option<usize>> {
            let key = format!("{arch}.{k}");
            match g.get(&key) {
                None => Ok(None),
                // Per-layer counts are arrays; llama.cpp's n_head() is layer 0's.
                Some(Value::Array(a)) => match a.get(0).and_then(|v| v.as_u64()) {
                    Some(n) => Ok(Some(n as usize)),
                    None => Err(Error::WrongType {
                        key,
                        found: Value::Array(a.clone()).type_name(),
                        expected: "unsigned integer",
                    }),
                },
                Some(_) => Ok(Some(g.get_u32(&key)? as usize)),
            }
        };
        let n_expert = opt_u32("expert_count")?.unwrap_or(0);
        let n_head = opt_u32("attention.head_count")?.unwrap_or(0);
        let n_head_kv = opt_u32("attention.head_count_kv")?.unwrap_or(n_head);
        Ok(ModelFacts { arch, n_layer, n_expert, n_head, n_head_kv })
    }

    /// llama.cpp's LLM_TYPE_70B for the llama architecture: 80 layers with grouped KV heads.
    fn is_70b(&self) -> bool {
        self.arch == "llama" && self.n_expert != 8 && self.n_layer == 80 && self.n_head != self.n_head_kv
    }
}

/// One input tensor, as the type choice sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorDesc {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
}

/// The decision for one tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorPlan {
    /// Index of the tensor in the input.
    pub index: usize,
    pub name: String,
    /// Dimensions as written (trailing 1s dropped, as ggml does).
    pub dims: Vec<u64>,
    pub from: GgmlType,
    pub to: GgmlType,
    /// The type the mixture asked for when the row length forced another (`to`).
    pub fallback_from: Option<GgmlType>,
}

impl TensorPlan {
    /// Whether the data is converted (otherwise copied byte for byte).
    pub fn converts(&self) -> bool {
        self.from != self.to
    }
}

/// ggml_n_dims: trailing dimensions of 1 do not count; at least 1.
fn ggml_dims(dims: &[u64]) -> Vec<u64> {
    let n = dims.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1);
    dims[..n.min(dims.len()).max(1)].to_vec()
}

/// The layer of `blk.N.*` as C's `sscanf(name, "blk.%d.", &l)` reads it.
fn layer_of(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("blk.")?.trim_start();
    let (neg, digits) = match rest.as_bytes().first()? {
        b'-' => (true, &rest[1..]),
        b'+' => (false, &rest[1..]),
        _ => (false, rest),
    };
    let end = digits.bytes().position(|b| !b.is_ascii_digit()).unwrap_or(digits.len());
    let n: i64 = digits[..end].parse().ok()?;
    Some(if neg { -n } else { n })
}

/// llama.cpp's tensor order (`weight_name_comparer`): by layer (none = -1 first), then name.
pub fn output_order(names: &[&str]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_by(|&a, &b| {
        let la = layer_of(names[a]).unwrap_or(-1);
        let lb = layer_of(names[b]).unwrap_or(-1);
        la.cmp(&lb).then_with(|| names[a].as_bytes().cmp(names[b].as_bytes()))
    });
    order
}

/// Whether llama.cpp may change this tensor's type (`tensor_allows_quantization`, the
/// architecture-independent part: weights of 2+ dimensions, not norms, gates or the small
/// kinds it keeps).
pub fn allows_quantization(name: &str, dims: &[u64]) -> bool {
    if ggml_dims(dims).len() < 2 || !name.ends_with("weight") {
        return false;
    }
    const KEEP: &[&str] = &[
        "_norm.weight",
        "ffn_gate_inp.weight",
        "ffn_gate_tid2eid.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d",
        "shortconv.conv.weight",
        "indexer.k_proj.weight",
        "indexer.q_proj.weight",
        "time_mix_first.weight",
        "time_mix_w0.weight",
        "time_mix_w1.weight",
        "time_mix_w2.weight",
        "time_mix_v0.weight",
        "time_mix_v1.weight",
        "time_mix_v2.weight",
        "time_mix_a0.weight",
        "time_mix_a1.weight",
        "time_mix_a2.weight",
        "time_mix_g1.weight",
        "time_mix_g2.weight",
        "time_mix_decay_w1.weight",
        "time_mix_decay_w2.weight",
        "time_mix_lerp_fused.weight",
        "attn_rel_b.weight",
        ".position_embd",
        "sam.pos_embd",
        "sam.neck.",
        "sam.net_",
        ".rel_pos",
        ".patch_embd",
        ".patch_merger",
        "a.rvq.codebook",
        "mm.a.code_embd",
    ];
    if KEEP.iter().any(|k| name.contains(k)) {
        return false;
    }
    name != "position_embd.weight" && name != "token_types.weight"
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Category {
    TokenEmbd,
    AttnQ,
    AttnV,
    AttnK,
    AttnQkv,
    AttnKvB,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Output,
    Other,
}

fn category(name: &str) -> Category {
    use Category::*;
    if name == "output.weight" {
        return Output;
    }
    if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        return TokenEmbd;
    }
    const BY_PART: &[(&str, Category)] = &[
        ("attn_qkv.weight", AttnQkv),
        ("attn_kv_b.weight", AttnKvB),
        ("attn_v.weight", AttnV),
        ("attn_k.weight", AttnK),
        ("attn_q.weight", AttnQ),
        ("attn_output.weight", AttnOutput),
        ("ffn_up", FfnUp),
        ("ffn_gate", FfnGate),
        ("ffn_down", FfnDown),
    ];
    BY_PART.iter().find(|(p, _)| name.contains(p)).map_or(Other, |&(_, c)| c)
}

/// attn_v-like tensors, which the mixtures give more bits.
fn is_attn_v(c: Category) -> bool {
    matches!(c, Category::AttnV | Category::AttnQkv | Category::AttnKvB)
}

/// llama.cpp's choice of the layers that get more bits in the _M mixtures: the first and
/// last eighth, and every third layer between.
pub fn use_more_bits(i_layer: usize, n_layers: usize) -> bool {
    let (i, n) = (i_layer as i64, n_layers as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The per-tensor type choice of `llama_tensor_get_type`, with its counters. Tensors must
/// be fed in output order.
struct Chooser<'a> {
    ftype: Ftype,
    facts: &'a ModelFacts,
    tied: bool,
    n_attention_wv: usize,
    i_attention_wv: usize,
    i_ffn_down: usize,
    i_ffn_gate: usize,
    i_ffn_up: usize,
}

impl Chooser<'_> {
    /// (layer, layer count) for an ffn counter: for MoE models llama.cpp reads the layer
    /// from the name, as experts need not be consecutive.
    fn layer_info(&self, counter: usize, name: &str) -> Result<(usize, usize)> {
        let n = self.facts.n_layer;
        if self.facts.n_expert.max(1) > 1 {
            let l = layer_of(name)
                .ok_or_else(|| Error::Invalid(format!("failed to determine the layer of tensor {name:?}")))?;
            if l < 0 || l >= n as i64 {
                return Err(Error::Invalid(format!(
                    "bad layer {l} for tensor {name:?}: must be in [0, {n})"
                )));
            }
            return Ok((l as usize, n));
        }
        Ok((counter, n))
    }

    /// The mixture's type for a quantizable tensor (`llama_tensor_get_type_impl`, for the
    /// file types we support and the llama architecture).
    fn mixture_type(&mut self, name: &str, ncols: u64, cat: Category) -> Result<GgmlType> {
        use GgmlType::*;
        let f = self.ftype;
        let mut t = f.base_type();
        let n_expert = self.facts.n_expert;
        if cat == Category::Output || (self.tied && cat == Category::TokenEmbd) {
            if !ncols.is_multiple_of(t.block_size() as u64) {
                t = Q8_0;
            } else if t != Q8_0 {
                t = Q6_K;
            }
        } else if cat == Category::TokenEmbd {
            // No change for these file types.
        } else if is_attn_v(cat) {
            if matches!(f, Ftype::Q4_K_M | Ftype::Q5_K_M)
                && use_more_bits(self.i_attention_wv, self.n_attention_wv)
            {
                t = Q6_K;
            } else if f == Ftype::Q4_K_S && self.i_attention_wv < 4 {
                t = Q5_K;
            }
            if self.facts.is_70b() && matches!(t, Q3_K | Q4_K) {
                // 8 heads share each attn_v: more bits cost little there.
                t = Q5_K;
            }
            if n_expert == 8 {
                t = Q8_0;
            }
            self.i_attention_wv += 1;
        } else if cat == Category::AttnK {
            if n_expert == 8 {
                t = Q8_0;
            }
        } else if cat == Category::FfnDown {
            let (i, n) = self.layer_info(self.i_ffn_down, name)?;
            match f {
                Ftype::Q4_K_M | Ftype::Q5_K_M if use_more_bits(i, n) => t = Q6_K,
                Ftype::Q4_K_S if i < n / 8 => t = Q5_K,
                _ => {}
            }
            self.i_ffn_down += 1;
        } else if cat == Category::AttnOutput {
            if n_expert == 8 && matches!(f, Ftype::Q4_K_S | Ftype::Q4_K_M) {
                t = Q5_K;
            }
        } else if cat == Category::FfnGate {
            self.layer_info(self.i_ffn_gate, name)?;
            self.i_ffn_gate += 1;
        } else if cat == Category::FfnUp {
            self.layer_info(self.i_ffn_up, name)?;
            self.i_ffn_up += 1;
        }
        // (AttnQkv never reaches its own branch in llama.cpp: it is attn_v-like.)
        Ok(t)
    }

    /// (type, the type asked for when a fallback replaced it).
    fn choose(&mut self, d: &TensorDesc) -> Result<(GgmlType, Option<GgmlType>)> {
        if !allows_quantization(&d.name, &d.dims) {
            return Ok((d.ty, None));
        }
        let base = self.ftype.base_type();
        if matches!(base, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
            return Ok((base, None));
        }
        let want = self.mixture_type(&d.name, d.dims[0], category(&d.name))?;
        Ok(fallback(want, d.dims[0]))
    }
}

/// A type whose block does not divide the row length is replaced (`tensor_type_fallback`).
fn fallback(want: GgmlType, ncols: u64) -> (GgmlType, Option<GgmlType>) {
    use GgmlType::*;
    let fits = |t: GgmlType| ncols.is_multiple_of(t.block_size() as u64);
    if fits(want) {
        return (want, None);
    }
    let mut t = match want {
        IQ1_S | IQ1_M | IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S | IQ4_XS => IQ4_NL,
        Q2_0 | Q2_K | Q3_K | TQ1_0 | TQ2_0 => Q4_0,
        Q4_K => Q5_0,
        Q5_K => Q5_1,
        Q6_K => Q8_0,
        other => other,
    };
    if !fits(t) {
        t = F16;
    }
    (t, Some(want))
}

/// Decide every tensor's type, in output order: what llama-quantize would do to these
/// tensors for this file type.
pub fn plan(ftype: Ftype, facts: &ModelFacts, tensors: &[TensorDesc]) -> Result<Vec<TensorPlan>> {
    if facts.arch != "llama" {
        return Err(Error::Invalid(format!(
            "requantizing supports the llama architecture only; this file is {:?}",
            facts.arch
        )));
    }
    let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    let order = output_order(&names);
    let mut ch = Chooser {
        ftype,
        facts,
        tied: !names.contains(&"output.weight"),
        n_attention_wv: names.iter().filter(|n| is_attn_v(category(n))).count(),
        i_attention_wv: 0,
        i_ffn_down: 0,
        i_ffn_gate: 0,
        i_ffn_up: 0,
    };
    order
        .into_iter()
        .map(|i| {
            let d = &tensors[i];
            let (to, fallback_from) = ch.choose(d)?;
            Ok(TensorPlan {
                index: i,
                name: d.name.clone(),
                dims: ggml_dims(&d.dims),
                from: d.ty,
                to,
                fallback_from,
            })
        })
        .collect()
}

/// One tensor of a finished run.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorReport {
    pub plan: TensorPlan,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// What `quantize_file` did.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizeReport {
    pub input: PathBuf,
    pub output: PathBuf,
    pub ftype: Ftype,
    /// In output order.
    pub tensors: Vec<TensorReport>,
    /// Size of the output file.
    pub file_size: u64,
}

impl QuantizeReport {
    pub fn n_converted(&self) -> usize {
        self.tensors.iter().filter(|t| t.plan.converts()).count()
    }

    pub fn n_fallback(&self) -> usize {
        self.tensors.iter().filter(|t| t.plan.fallback_from.is_some()).count()
    }

    pub fn bytes_in(&self) -> u64 {
        self.tensors.iter().map(|t| t.bytes_in).sum()
    }

    pub fn bytes_out(&self) -> u64 {
        self.tensors.iter().map(|t| t.bytes_out).sum()
    }
}

/// One line per tensor, as llama-quantize logs them, then the totals.
impl fmt::Display for QuantizeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let n = self.tensors.len();
        for (i, t) in self.tensors.iter().enumerate() {
            let p = &t.plan;
            let dims = p.dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ");
            write!(f, "[{:4}/{:4}] {:<36} - [{dims}], type = {:>6}, ", i + 1, n, p.name, p.from.name())?;
            if p.converts() {
                write!(f, "converting to {} ", p.to.name())?;
                if let Some(w) = p.fallback_from {
                    write!(f, "(fallback from {}, row length {}) ", w.name(), p.dims[0])?;
                }
                writeln!(f, ".. size = {:8.2} MiB -> {:8.2} MiB", mib(t.bytes_in), mib(t.bytes_out))?;
            } else {
                writeln!(f, "size = {:8.3} MiB", mib(t.bytes_in))?;
            }
        }
        write!(
            f,
            "{} -> {} ({}): {} of {} tensors converted ({} by fallback), tensor data {:.2} MiB -> {:.2} MiB, file {} bytes",
            self.input.display(),
            self.output.display(),
            self.ftype,
            self.n_converted(),
            n,
            self.n_fallback(),
            mib(self.bytes_in()),
            mib(self.bytes_out()),
            self.file_size
        )
    }
}

/// Elements dequantized per slab (bounds memory: the f32 copy plus the output slab).
const SLAB_ELEMS: usize = 1 << 22;
/// Elements per rayon task within a slab.
const TASK_ELEMS: usize = 1 << 16;

/// The file type given by name (llama-quantize's names, or its numeric id).
pub fn parse_ftype(ftype: &str) -> Result<Ftype> {
    Ftype::parse(ftype).ok_or_else(|| {
        Error::Invalid(format!(
            "unknown or unsupported file type {ftype:?}; supported: {}",
            Ftype::supported_names()
        ))
    })
}

/// Requantize the GGUF model `input` to `output` as the llama.cpp file type `ftype`
/// ("Q8_0", "Q4_0", "Q4_K_M", ...), as `llama-quantize --allow-requantize` does.
pub fn quantize_file(input: &Path, output: &Path, ftype: &str) -> Result<QuantizeReport> {
    let ftype = parse_ftype(ftype)?;
    quantize_file_as(input, output, ftype)
}

/// `quantize_file` with a parsed file type.
pub fn quantize_file_as(input: &Path, output: &Path, ftype: Ftype) -> Result<QuantizeReport> {
    let src = GgufFile::open(input)?;
    let g = &src.gguf;
    let facts = ModelFacts::from_gguf(g)?;
    let descs: Vec<TensorDesc> = g
        .tensors
        .iter()
        .map(|t| TensorDesc { name: t.name.clone(), dims: t.dims.clone(), ty: t.ty })
        .collect();
    let plans = plan(ftype, &facts, &descs)?;
    for p in plans.iter().filter(|p| p.converts()) {
        if !ferrite_kernels::can_dequantize(p.from) {
            return Err(Error::Invalid(format!(
                "tensor {:?}: cannot convert from {}",
                p.name,
                p.from.name()
            )));
        }
        if !ferrite_kernels::scalar::quantize::can_quantize(p.to) {
            return Err(Error::Invalid(format!(
                "tensor {:?}: {} needs type {}, which ferrite cannot quantize to",
                p.name,
                ftype,
                p.to.name()
            )));
        }
    }

    let mut w = GgufWriter::new();
    w.version = 3;
    const MOVED: &[&str] = &[
        "split.no",
        "split.count",
        "split.tensors.count",
        "general.quantization_version",
        "general.file_type",
    ];
    for (k, v) in &g.metadata {
        if !MOVED.contains(&k.as_str()) {
            // A non-u32 general.alignment was rejected by the reader; a u32 one sets the
            // writer's alignment (llama.cpp would write the key but align to 32).
            w.add(k, v.clone());
        }
    }
    w.add("general.quantization_version", Value::U32(2));
    w.add("general.file_type", Value::U32(ftype.id()));
    for p in &plans {
        w.add_tensor(&p.name, &p.dims, p.to);
    }

    let part = part_path(output);
    let result = write_file(&src, &w, &plans, &part);
    let reports = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
    };
    std::fs::rename(&part, output).map_err(|e| Error::Io { path: output.to_path_buf(), source: e })?;
    let file_size =
        std::fs::metadata(output).map_err(|e| Error::Io { path: output.to_path_buf(), source: e })?.len();
    Ok(QuantizeReport {
        input: input.to_path_buf(),
        output: output.to_path_buf(),
        ftype,
        tensors: reports,
        file_size,
    })
}

fn part_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".part");
    output.with_file_name(name)
}

fn write_file(
    src: &GgufFile,
    w: &GgufWriter,
    plans: &[TensorPlan],
    path: &Path,
) -> Result<Vec<TensorReport>> {
    let io = |e: std::io::Error| Error::Io { path: path.to_path_buf(), source: e };
    let file = std::fs::File::create(path).map_err(io)?;
    let mut f = BufWriter::with_capacity(1 << 22, file);
    w.write_header(&mut f).map_err(io)?;
    let align = w.alignment;
    let zeros = vec![0u8; align as usize];
    let mut pos = 0u64;
    let mut reports = Vec::with_capacity(plans.len());
    for (i, p) in plans.iter().enumerate() {
        let t = &src.gguf.tensors[p.index];
        let data = src.tensor_data(t);
        let written = if p.converts() {
            convert(p, t.n_elements, data, &mut f, path).map_err(|e| match e {
                Error::Kernel(k) => Error::Invalid(format!("tensor {:?}: {k}", p.name)),
                e => e,
            })?
        } else {
            f.write_all(data).map_err(io)?;
            data.len() as u64
        };
        let expected = w.tensor_size(i);
        if written != expected {
            return Err(Error::Invalid(format!(
                "tensor {:?}: wrote {written} bytes, expected {expected}",
                p.name
            )));
        }
        pos += written;
        // Every tensor, the last one included, is padded to the alignment.
        let pad = pos.next_multiple_of(align) - pos;
        f.write_all(&zeros[..pad as usize]).map_err(io)?;
        pos += pad;
        reports.push(TensorReport { plan: p.clone(), bytes_in: data.len() as u64, bytes_out: written });
    }
    let file = f.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    Ok(reports)
}

/// Dequantize and requantize one tensor a slab of rows at a time; returns bytes written.
fn convert(p: &TensorPlan, n_elements: u64, data: &[u8], out: &mut impl Write, path: &Path) -> Result<u64> {
    let bad_len =
        || Error::Invalid(format!("tensor {:?}: rows of {} do not fit the types", p.name, p.dims[0]));
    let ncols = usize::try_from(p.dims[0]).map_err(|_| bad_len())?;
    let nrows = usize::try_from(n_elements / p.dims[0]).map_err(|_| bad_len())?;
    let src_rb = p.from.row_bytes(ncols).ok_or_else(bad_len)?;
    let dst_rb = p.to.row_bytes(ncols).ok_or_else(bad_len)?;
    if src_rb.checked_mul(nrows) != Some(data.len()) {
        return Err(bad_len());
    }
    let slab_rows = (SLAB_ELEMS / ncols).clamp(1, nrows.max(1));
    let task_rows = (TASK_ELEMS / ncols).max(1);
    let mut buf = vec![0u8; slab_rows * dst_rb];
    let mut written = 0u64;
    for r0 in (0..nrows).step_by(slab_rows) {
        let n = slab_rows.min(nrows - r0);
        let src = &data[r0 * src_rb..(r0 + n) * src_rb];
        let dst = &mut buf[..n * dst_rb];
        dst.par_chunks_mut(task_rows * dst_rb).zip(src.par_chunks(task_rows * src_rb)).try_for_each_init(
            Vec::new,
            |x: &mut Vec<f32>, (d, s)| {
                x.resize(d.len() / dst_rb * ncols, 0.0);
                ferrite_kernels::dequantize(p.from, s, x)?;
                ferrite_kernels::scalar::quantize::quantize(p.to, x, d)
            },
        )?;
        out.write_all(dst).map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?;
        written += dst.len() as u64;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama3_8b() -> (ModelFacts, Vec<TensorDesc>) {
        let facts = ModelFacts { arch: "llama".into(), n_layer: 32, n_expert: 0, n_head: 32, n_head_kv: 8 };
        let (dim, kv, ffn, vocab) = (4096u64, 1024u64, 14336u64, 128256u64);
        let mut t =
            vec![TensorDesc { name: "token_embd.weight".into(), dims: vec![dim, vocab], ty: GgmlType::F16 }];
        for l in 0..32 {
            let mut add = |n: &str, dims: Vec<u64>| {
                let ty = if dims.len() == 1 { GgmlType::F32 } else { GgmlType::F16 };
                t.push(TensorDesc { name: format!("blk.{l}.{n}.weight"), dims, ty });
            };
            add("attn_norm", vec![dim]);
            add("attn_q", vec![dim, dim]);
            add("attn_k", vec![dim, kv]);
            add("attn_v", vec![dim, kv]);
            add("attn_output", vec![dim, dim]);
            add("ffn_norm", vec![dim]);
            add("ffn_gate", vec![dim, ffn]);
            add("ffn_up", vec![dim, ffn]);
            add("ffn_down", vec![ffn, dim]);
        }
        t.push(TensorDesc { name: "output_norm.weight".into(), dims: vec![dim], ty: GgmlType::F32 });
        t.push(TensorDesc { name: "output.weight".into(), dims: vec![dim, vocab], ty: GgmlType::F16 });
        (facts, t)
    }

    #[test]
    fn llama3_8b_q4_k_m_types() {
        let (facts, tensors) = llama3_8b();
        let plans = plan(Ftype::Q4_K_M, &facts, &tensors).unwrap();
        let ty = |n: &str| plans.iter().find(|p| p.name == n).unwrap().to;
        // use_more_bits(i, 32): i < 4, i >= 28, or (i - 4) % 3 == 2.
        let more: Vec<usize> = (0..32).filter(|&i| use_more_bits(i, 32)).collect();
        assert_eq!(more, [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]);
        for l in 0..32 {
            let want = if more.contains(&l) { GgmlType::Q6_K } else { GgmlType::Q4_K };
            assert_eq!(ty(&format!("blk.{l}.attn_v.weight")), want, "layer {l} attn_v");
            assert_eq!(ty(&format!("blk.{l}.ffn_down.weight")), want, "layer {l} ffn_down");
            for n in ["attn_q", "attn_k", "attn_output", "ffn_gate", "ffn_up"] {
                assert_eq!(ty(&format!("blk.{l}.{n}.weight")), GgmlType::Q4_K, "layer {l} {n}");
            }
            assert_eq!(ty(&format!("blk.{l}.attn_norm.weight")), GgmlType::F32);
        }
        assert_eq!(ty("output.weight"), GgmlType::Q6_K);
        assert_eq!(ty("token_embd.weight"), GgmlType::Q4_K, "untied embeddings keep the base type");
        assert!(plans.iter().all(|p| p.fallback_from.is_none()));
        // Output order: unlayered tensors first, by name; then by layer (numerically).
        assert_eq!(plans[0].name, "output.weight");
        assert_eq!(plans[1].name, "output_norm.weight");
        assert_eq!(plans[2].name, "token_embd.weight");
        assert_eq!(plans[3].name, "blk.0.attn_k.weight");
        assert_eq!(plans[3 + 9].name, "blk.1.attn_k.weight");
        assert_eq!(plans.last().unwrap().name, "blk.31.ffn_up.weight");
    }

    #[test]
    fn llama3_8b_other_mixtures() {
        let (facts, tensors) = llama3_8b();
        let types = |f: Ftype| {
            plan(f, &facts, &tensors).unwrap().into_iter().map(|p| (p.name, p.to)).collect::<Vec<_>>()
        };
        let get = |v: &[(String, GgmlType)], n: &str| v.iter().find(|p| p.0 == n).unwrap().1;
        let q8 = types(Ftype::Q8_0);
        assert_eq!(get(&q8, "output.weight"), GgmlType::Q8_0);
        assert_eq!(get(&q8, "blk.0.attn_v.weight"), GgmlType::Q8_0);
        let q40 = types(Ftype::Q4_0);
        assert_eq!(get(&q40, "output.weight"), GgmlType::Q6_K);
        assert_eq!(get(&q40, "blk.0.ffn_down.weight"), GgmlType::Q4_0);
        let ks = types(Ftype::Q4_K_S);
        assert_eq!(get(&ks, "blk.3.attn_v.weight"), GgmlType::Q5_K);
        assert_eq!(get(&ks, "blk.4.attn_v.weight"), GgmlType::Q4_K);
        assert_eq!(get(&ks, "blk.3.ffn_down.weight"), GgmlType::Q5_K);
        assert_eq!(get(&ks, "blk.4.ffn_down.weight"), GgmlType::Q4_K);
        let f16 = types(Ftype::F16);
        assert_eq!(get(&f16, "output.weight"), GgmlType::F16);
        assert_eq!(get(&f16, "blk.0.attn_norm.weight"), GgmlType::F32);
    }

    #[test]
    fn fallbacks_follow_the_row_length() {
        assert_eq!(fallback(GgmlType::Q4_K, 576), (GgmlType::Q5_0, Some(GgmlType::Q4_K)));
        assert_eq!(fallback(GgmlType::Q5_K, 576), (GgmlType::Q5_1, Some(GgmlType::Q5_K)));
        assert_eq!(fallback(GgmlType::Q6_K, 576), (GgmlType::Q8_0, Some(GgmlType::Q6_K)));
        assert_eq!(fallback(GgmlType::Q6_K, 100), (GgmlType::F16, Some(GgmlType::Q6_K)));
        assert_eq!(fallback(GgmlType::Q4_0, 100), (GgmlType::F16, Some(GgmlType::Q4_0)));
        assert_eq!(fallback(GgmlType::Q4_K, 1536), (GgmlType::Q4_K, None));
    }

    #[test]
    fn names_and_ids_parse_like_llama_quantize() {
        assert_eq!(Ftype::parse("q4_k_m"), Some(Ftype::Q4_K_M));
        assert_eq!(Ftype::parse("Q4_K"), Some(Ftype::Q4_K_M));
        assert_eq!(Ftype::parse("Q5_K"), Some(Ftype::Q5_K_M));
        assert_eq!(Ftype::parse("7"), Some(Ftype::Q8_0));
        assert_eq!(Ftype::parse("15"), Some(Ftype::Q4_K_M));
        assert_eq!(Ftype::parse("Q2_K"), None);
        for f in Ftype::all() {
            assert_eq!(Ftype::parse(f.name()), Some(f));
            assert_eq!(Ftype::parse(&f.id().to_string()), Some(f));
        }
    }

    #[test]
    fn which_tensors_may_change() {
        assert!(allows_quantization("blk.0.attn_q.weight", &[576, 576]));
        assert!(!allows_quantization("blk.0.attn_norm.weight", &[576]));
        assert!(!allows_quantization("blk.0.attn_q.weight", &[576, 1, 1]));
        assert!(!allows_quantization("blk.0.ffn_gate_inp.weight", &[576, 8]));
        assert!(!allows_quantization("blk.0.attn_q.bias", &[576, 2]));
        assert!(!allows_quantization("rope_freqs.weight", &[32]));
        assert_eq!(ggml_dims(&[576, 1, 1]), vec![576]);
        assert_eq!(ggml_dims(&[576, 1, 3]), vec![576, 1, 3]);
    }

    #[test]
    fn layers_parse_like_sscanf() {
        assert_eq!(layer_of("blk.12.attn_q.weight"), Some(12));
        assert_eq!(layer_of("blk.7"), Some(7));
        assert_eq!(layer_of("output.weight"), None);
        assert_eq!(layer_of("blk.x.y"), None);
        let names = ["blk.10.a", "token_embd.weight", "blk.2.b", "blk.2.a", "output_norm.weight"];
        let order: Vec<&str> = output_order(&names).into_iter().map(|i| names[i]).collect();
        assert_eq!(order, ["output_norm.weight", "token_embd.weight", "blk.2.a", "blk.2.b", "blk.10.a"]);
    }
}
