//! Tokenizers read from GGUF metadata, matching llama.cpp's token for token:
//! SentencePiece (`tokenizer.ggml.model = llama`, `spm.rs`) and byte-level BPE (`gpt2`,
//! `bpe.rs`, with the pre-tokenizers of `pretokenize.rs`).
//!
//! Encoding follows llama.cpp's `llama_vocab::tokenize`: special tokens are cut out of the
//! text first (control tokens only when `parse_special`, user-defined tokens always; longest
//! token text first), then each remaining fragment goes through the model's tokenizer.
//! Decoding follows `llama_token_to_piece` / `llama_detokenize`.
//!
//! Choices where llama.cpp is not deterministic or not total:
//! - Several tokens can look like the end-of-turn token (`<|im_end|>`, `<|endoftext|>`...);
//!   llama.cpp takes whichever its hash map yields first. We take the first in llama.cpp's
//!   own list order. Which ids end generation (`is_eog`) does not depend on this choice.
//! - Special tokens of equal text length are tried in id order (llama.cpp's sort is unstable).
//! - Where llama.cpp would abort (a byte with no byte token in an SPM vocabulary) we emit
//!   the unknown token if there is one and skip the byte otherwise.
//! - An unknown `tokenizer.ggml.pre` is an error, as in llama.cpp (no silent fallback).
//! - Per-model strip attributes (llama.cpp's Phi-3 / Jina special cases) are not applied.

mod bpe;
mod pretokenize;
mod spm;
mod unicode;
mod unicode_tables;

pub use pretokenize::PreTokenizer;

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::gguf::{Array, Gguf, GgufFile, Value};

/// Which tokenization algorithm a vocabulary uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VocabType {
    /// SentencePiece with scores and byte fallback (`tokenizer.ggml.model = llama`).
    Spm,
    /// Byte-level BPE with ranked merges (`tokenizer.ggml.model = gpt2`).
    Bpe,
}

/// Token attributes, the bits of llama.cpp's `llama_token_attr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TokenAttr(pub u16);

impl TokenAttr {
    pub const UNDEFINED: TokenAttr = TokenAttr(0);
    pub const UNKNOWN: TokenAttr = TokenAttr(1 << 0);
    pub const UNUSED: TokenAttr = TokenAttr(1 << 1);
    pub const NORMAL: TokenAttr = TokenAttr(1 << 2);
    pub const CONTROL: TokenAttr = TokenAttr(1 << 3);
    pub const USER_DEFINED: TokenAttr = TokenAttr(1 << 4);
    pub const BYTE: TokenAttr = TokenAttr(1 << 5);

    /// Whether any bit of `other` is set.
    pub fn has(self, other: TokenAttr) -> bool {
        self.0 & other.0 != 0
    }
    fn set(&mut self, other: TokenAttr) {
        self.0 |= other.0;
    }

    /// From `tokenizer.ggml.token_type` (1 normal, 2 unknown, 3 control, 4 user-defined,
    /// 5 unused, 6 byte; anything else undefined).
    fn from_type(t: i32) -> TokenAttr {
        match t {
            1 => TokenAttr::NORMAL,
            2 => TokenAttr::UNKNOWN,
            3 => TokenAttr::CONTROL,
            4 => TokenAttr::USER_DEFINED,
            5 => TokenAttr::UNUSED,
            6 => TokenAttr::BYTE,
            _ => TokenAttr::UNDEFINED,
        }
    }
}

/// A vocabulary and its tokenizer, built from a GGUF file's `tokenizer.*` metadata.
pub struct Tokenizer {
    vocab_type: VocabType,
    pre: Option<PreTokenizer>,
    texts: Vec<String>,
    scores: Vec<f32>,
    attrs: Vec<TokenAttr>,
    token_to_id: HashMap<String, u32>,
    bpe: Option<bpe::Bpe>,
    /// SPM: the token of each raw byte (`<0xNN>`, else the byte itself as a token).
    byte_token: [Option<u32>; 256],

    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    eom: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    eog: Vec<u32>,

    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    clean_spaces: bool,

    /// Control, user-defined and unknown tokens, longest text first.
    special_cache: Vec<u32>,
    /// Every token's piece (as `token_to_piece` with `special = true`), concatenated.
    pieces: Vec<u8>,
    piece_ends: Vec<usize>,
}

/// Part of the input after special tokens are cut out.
enum Fragment {
    Text(std::ops::Range<usize>),
    Token(u32),
}

// Texts llama.cpp recognises (src/llama-vocab.cpp, `llama_vocab::impl::load`).
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const EOM_TEXTS: &[&str] = &["<|eom_id|>"];
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];
/// Tokens llama.cpp always renders (gpt-oss).
const ALWAYS_RENDERED: &[&str] = &["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

fn opt_bool(g: &Gguf, key: &str) -> Result<Option<bool>> {
    match g.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(Error::WrongType { key: key.into(), found: v.type_name(), expected: "bool" }),
    }
}

impl Tokenizer {
    /// Open a GGUF file and build its tokenizer.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Tokenizer> {
        Tokenizer::from_gguf(&GgufFile::open(path)?.gguf)
    }

    /// Build the tokenizer from `tokenizer.ggml.*` metadata, with llama.cpp's defaults for
    /// absent keys.
    pub fn from_gguf(g: &Gguf) -> Result<Tokenizer> {
        let model = g.get_str("tokenizer.ggml.model")?;
        let vocab_type = match model {
            "llama" => VocabType::Spm,
            "gpt2" => VocabType::Bpe,
            other => {
                return Err(Error::Invalid(format!(
                    "tokenizer.ggml.model = {other:?} is not supported (supported: \"llama\", \"gpt2\")"
                )))
            }
        };

        let pre_name = match g.get("tokenizer.ggml.pre") {
            None => "",
            Some(v) => v.as_str().ok_or_else(|| Error::WrongType {
                key: "tokenizer.ggml.pre".into(),
                found: v.type_name(),
                expected: "string",
            })?,
        };
        let pre = match vocab_type {
            VocabType::Spm => None,
            VocabType::Bpe => Some(PreTokenizer::from_name(pre_name).ok_or_else(|| {
                Error::Invalid(format!(
                    "tokenizer.ggml.pre = {pre_name:?} is not a supported pre-tokenizer (supported: {})",
                    PreTokenizer::NAMES
                ))
            })?),
        };

        // llama.cpp's defaults per model and pre-tokenizer, then the file's flags.
        let (mut add_bos, mut add_eos, mut add_space_prefix, clean_spaces, ignore_merges) = match pre {
            None => (true, false, true, false, false),
            Some(p) => {
                let llama3 = p == PreTokenizer::Llama3;
                let clean = !matches!(pre_name, "smollm" | "command-r");
                (llama3, false, false, clean, llama3)
            }
        };
        if let Some(b) = opt_bool(g, "tokenizer.ggml.add_space_prefix")? {
            add_space_prefix = b;
        }
        if let Some(b) = opt_bool(g, "tokenizer.ggml.add_bos_token")? {
            add_bos = b;
        }
        if let Some(b) = opt_bool(g, "tokenizer.ggml.add_eos_token")? {
            add_eos = b;
        }

        let key = "tokenizer.ggml.tokens";
        let mut texts = match g.get_array(key)? {
            Array::String(v) => v.clone(),
            a => {
                return Err(Error::WrongType {
                    key: key.into(),
                    found: format!("array[{}]", a.element_type().name()),
                    expected: "array[string]",
                })
            }
        };
        let n = texts.len();
        let n_u32 = u32::try_from(n)
            .ok()
            .filter(|&n| n < u32::MAX / 2)
            .ok_or_else(|| Error::OutOfRange { key: key.into(), value: n.to_string() })?;

        let scores: Vec<f32> = match g.get("tokenizer.ggml.scores") {
            None => vec![0.0; n],
            Some(v) => {
                let key = "tokenizer.ggml.scores";
                let s: Vec<f32> = match v.as_array() {
                    Some(Array::F32(s)) => s.clone(),
                    Some(Array::I32(s)) => s.iter().map(|&x| x as f32).collect(),
                    _ => {
                        return Err(Error::WrongType {
                            key: key.into(),
                            found: v.type_name(),
                            expected: "array[f32] or array[i32]",
                        })
                    }
                };
                if s.len() < n {
                    return Err(Error::Invalid(format!("{key} has {} entries for {n} tokens", s.len())));
                }
                s
            }
        };

        let mut attrs: Vec<TokenAttr> = match g.get("tokenizer.ggml.token_type") {
            None => vec![TokenAttr::NORMAL; n],
            Some(v) => {
                let key = "tokenizer.ggml.token_type";
                let Some(Array::I32(t)) = v.as_array() else {
                    return Err(Error::WrongType {
                        key: key.into(),
                        found: v.type_name(),
                        expected: "array[i32]",
                    });
                };
                if t.len() < n {
                    return Err(Error::Invalid(format!("{key} has {} entries for {n} tokens", t.len())));
                }
                t[..n].iter().map(|&t| TokenAttr::from_type(t)).collect()
            }
        };

        let mut token_to_id = HashMap::with_capacity(n);
        for (i, t) in texts.iter_mut().enumerate() {
            if t.is_empty() {
                *t = format!("[EMPTY_{i}]");
            }
            // A repeated text maps to its last id, as in llama.cpp.
            token_to_id.insert(t.clone(), i as u32);
        }

        let bpe = match vocab_type {
            VocabType::Spm => None,
            VocabType::Bpe => {
                let key = "tokenizer.ggml.merges";
                let merges = match g.get_array(key)? {
                    Array::String(m) => m,
                    a => {
                        return Err(Error::WrongType {
                            key: key.into(),
                            found: format!("array[{}]", a.element_type().name()),
                            expected: "array[string]",
                        })
                    }
                };
                Some(bpe::Bpe::new(merges, &token_to_id, n_u32, ignore_merges))
            }
        };

        // Special ids: llama.cpp's defaults when in range, replaced by in-range file values.
        let in_range = |id: u32| (id < n_u32).then_some(id);
        let (bos_default, eos_default, unk_default) = match vocab_type {
            VocabType::Spm => (Some(1), Some(2), Some(0)),
            VocabType::Bpe => (Some(11), Some(11), None),
        };
        let special_id = |key: &str, default: Option<u32>| -> Result<Option<u32>> {
            let default = default.and_then(in_range);
            match g.get(key) {
                None => Ok(default),
                Some(_) => match g.get_u32(key) {
                    Ok(id) => Ok(in_range(id).or(default)),
                    Err(Error::OutOfRange { .. }) => Ok(default),
                    Err(e) => Err(e),
                },
            }
        };
        let bos = special_id("tokenizer.ggml.bos_token_id", bos_default)?;
        let eos = special_id("tokenizer.ggml.eos_token_id", eos_default)?;
        let mut eot = special_id("tokenizer.ggml.eot_token_id", None)?;
        let mut eom = special_id("tokenizer.ggml.eom_token_id", None)?;
        let unk = special_id("tokenizer.ggml.unknown_token_id", unk_default)?;
        let pad = special_id("tokenizer.ggml.padding_token_id", None)?;
        let mut fim_pad = special_id("tokenizer.ggml.fim_pad_token_id", None)?;
        let mut fim_rep = special_id("tokenizer.ggml.fim_rep_token_id", None)?;
        let mut fim_sep = special_id("tokenizer.ggml.fim_sep_token_id", None)?;
        let mut fim_pre = special_id("tokenizer.ggml.fim_pre_token_id", None)?;
        fim_pre = special_id("tokenizer.ggml.prefix_token_id", fim_pre)?;
        let mut fim_suf = special_id("tokenizer.ggml.fim_suf_token_id", None)?;
        fim_suf = special_id("tokenizer.ggml.suffix_token_id", fim_suf)?;
        let mut fim_mid = special_id("tokenizer.ggml.fim_mid_token_id", None)?;
        fim_mid = special_id("tokenizer.ggml.middle_token_id", fim_mid)?;

        // Detect unset special tokens by their text; a detected token becomes a control token.
        let detect = |slot: &mut Option<u32>, candidates: &[&str], attrs: &mut Vec<TokenAttr>| {
            if slot.is_some() {
                return;
            }
            if let Some(&id) = candidates.iter().find_map(|t| token_to_id.get(*t)) {
                *slot = Some(id);
                attrs[id as usize].set(TokenAttr::CONTROL);
            }
        };
        detect(&mut eot, EOT_TEXTS, &mut attrs);
        detect(&mut eom, EOM_TEXTS, &mut attrs);
        detect(&mut fim_pre, FIM_PRE_TEXTS, &mut attrs);
        detect(&mut fim_suf, FIM_SUF_TEXTS, &mut attrs);
        detect(&mut fim_mid, FIM_MID_TEXTS, &mut attrs);
        detect(&mut fim_pad, FIM_PAD_TEXTS, &mut attrs);
        detect(&mut fim_rep, FIM_REP_TEXTS, &mut attrs);
        detect(&mut fim_sep, FIM_SEP_TEXTS, &mut attrs);

        for (i, a) in attrs.iter_mut().enumerate() {
            if a.has(TokenAttr::CONTROL) && texts[i].contains("unused") {
                a.set(TokenAttr::UNUSED);
            }
        }

        let mut eog: Vec<u32> = [fim_pad, fim_rep, fim_sep].into_iter().flatten().collect();
        for t in EOG_TEXTS {
            if let Some(&id) = token_to_id.get(*t) {
                eog.push(id);
                attrs[id as usize].set(TokenAttr::CONTROL);
            }
        }
        for t in ALWAYS_RENDERED {
            if let Some(&id) = token_to_id.get(*t) {
                attrs[id as usize] = TokenAttr::USER_DEFINED;
            }
        }
        eog.extend([eos, eot, eom].into_iter().flatten());
        eog.sort_unstable();
        eog.dedup();

        let eog_has = |eog: &[u32], t: &str| eog.iter().find(|&&id| texts[id as usize] == t).copied();
        // gpt-oss / solar-open: `<|end|>` ends a message, not the generation.
        let (ret, call, calls, flush) = (
            eog_has(&eog, "<|return|>"),
            eog_has(&eog, "<|call|>"),
            eog_has(&eog, "<|calls|>"),
            eog_has(&eog, "<|flush|>"),
        );
        if let Some(end) = eog_has(&eog, "<|end|>") {
            let has_call = call.is_some() || calls.is_some();
            if (ret.is_some() && has_call) || (has_call && flush.is_some()) {
                eog.retain(|&id| id != end);
                attrs[end as usize] = TokenAttr::USER_DEFINED;
            }
        }
        // Gemma 4 / PLaMo: `</s>` is an ordinary token there.
        if eog_has(&eog, "<|tool_response>").or(eog_has(&eog, "<|plamo:eos|>")).is_some() {
            if let Some(s) = eog_has(&eog, "</s>") {
                eog.retain(|&id| id != s);
                attrs[s as usize] = TokenAttr::NORMAL;
            }
        }

        let mut special_cache: Vec<u32> = (0..n_u32)
            .filter(|&i| {
                attrs[i as usize]
                    .has(TokenAttr(TokenAttr::CONTROL.0 | TokenAttr::USER_DEFINED.0 | TokenAttr::UNKNOWN.0))
            })
            .collect();
        special_cache.sort_by_key(|&i| std::cmp::Reverse(texts[i as usize].len()));

        let mut byte_token = [None; 256];
        if vocab_type == VocabType::Spm {
            for (b, slot) in byte_token.iter_mut().enumerate() {
                let hex = format!("<0x{b:02X}>");
                let single = (b < 0x80).then(|| (b as u8 as char).to_string());
                *slot = token_to_id
                    .get(&hex)
                    .or_else(|| single.and_then(|s| token_to_id.get(&s)))
                    .copied()
                    .or(unk);
            }
        }

        let mut tok = Tokenizer {
            vocab_type,
            pre,
            texts,
            scores,
            attrs,
            token_to_id,
            bpe,
            byte_token,
            bos,
            eos,
            eot,
            eom,
            unk,
            pad,
            eog,
            add_bos,
            add_eos,
            add_space_prefix,
            clean_spaces,
            special_cache,
            pieces: Vec::new(),
            piece_ends: Vec::with_capacity(n),
        };
        let mut pieces = Vec::new();
        for id in 0..n {
            tok.render_piece(id, &mut pieces);
            tok.piece_ends.push(pieces.len());
        }
        tok.pieces = pieces;
        Ok(tok)
    }

    /// The text a token stands for, as llama.cpp's `token_to_piece` with `special = true`.
    fn render_piece(&self, id: usize, out: &mut Vec<u8>) {
        let text = &self.texts[id];
        let attr = self.attrs[id];
        if attr.has(TokenAttr(TokenAttr::UNKNOWN.0 | TokenAttr::CONTROL.0 | TokenAttr::USER_DEFINED.0)) {
            out.extend_from_slice(text.as_bytes());
        } else if attr.has(TokenAttr::NORMAL) {
            match self.vocab_type {
                VocabType::Spm => {
                    for c in text.chars() {
                        match c {
                            '▁' => out.push(b' '),
                            c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                        }
                    }
                }
                VocabType::Bpe => {
                    for c in text.chars() {
                        match unicode::char_to_byte(c) {
                            Some(b) => out.push(b),
                            None => {
                                // llama.cpp's marker for a character outside the byte alphabet.
                                out.extend_from_slice(b"[UNK_BYTE_0x");
                                for b in c.encode_utf8(&mut [0; 4]).bytes() {
                                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                                }
                                out.extend_from_slice(text.as_bytes());
                                out.push(b']');
                            }
                        }
                    }
                }
            }
        } else if attr.has(TokenAttr::BYTE) {
            // `<0xNN>`: llama.cpp reads the two characters after "<0x" as hex.
            let hex = text.get(3..5).unwrap_or("");
            let digits: String = hex.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
            out.push(u8::from_str_radix(&digits, 16).unwrap_or(0));
        }
    }

    /// Tokenize `text`. `add_special` adds BOS/EOS where the vocabulary asks for them
    /// (`add_bos()`, `add_eos()`); `parse_special` turns the text of control tokens (like
    /// `<|im_start|>`) into those tokens. User-defined tokens are always recognised.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let fragments = self.partition(text, parse_special);
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        match self.vocab_type {
            VocabType::Spm => {
                // A space goes before the first text and before text that follows a special token.
                let mut prev_special = true;
                let mut buf = String::new();
                for f in &fragments {
                    match *f {
                        Fragment::Text(ref r) => {
                            buf.clear();
                            if self.add_space_prefix && prev_special {
                                buf.push('▁');
                            }
                            for c in text[r.clone()].chars() {
                                buf.push(if c == ' ' { '▁' } else { c });
                            }
                            spm::encode(&buf, &self.token_to_id, &self.scores, &self.byte_token, &mut out);
                            prev_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                    }
                }
            }
            VocabType::Bpe => {
                let (Some(bpe), Some(pre)) = (&self.bpe, self.pre) else { return out };
                for f in &fragments {
                    match *f {
                        Fragment::Text(ref r) => {
                            let frag = &text[r.clone()];
                            for w in pre.split(frag) {
                                bpe.encode_word(&frag.as_bytes()[w], &self.token_to_id, &mut out);
                            }
                        }
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        out
    }

    /// Cut special tokens out of `text`, longest token text first, every occurrence.
    fn partition(&self, text: &str, parse_special: bool) -> Vec<Fragment> {
        if text.is_empty() {
            return Vec::new();
        }
        let mut frags = vec![Fragment::Text(0..text.len())];
        let hidden = TokenAttr(TokenAttr::CONTROL.0 | TokenAttr::UNKNOWN.0);
        for &id in &self.special_cache {
            if !parse_special && self.attrs[id as usize].has(hidden) {
                continue;
            }
            let pat = self.texts[id as usize].as_str();
            let found = frags.iter().any(|f| matches!(f, Fragment::Text(r) if text[r.clone()].contains(pat)));
            if !found {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                match f {
                    Fragment::Text(r) => {
                        let mut at = r.start;
                        for (i, _) in text[r.clone()].match_indices(pat) {
                            let m = r.start + i;
                            if m > at {
                                next.push(Fragment::Text(at..m));
                            }
                            next.push(Fragment::Token(id));
                            at = m + pat.len();
                        }
                        if at < r.end {
                            next.push(Fragment::Text(at..r.end));
                        }
                    }
                    token => next.push(token),
                }
            }
            frags = next;
        }
        frags
    }

    /// A token's bytes as llama.cpp's `llama_token_to_piece` (no space stripping): with
    /// `special = false`, control and unknown tokens give nothing. Out-of-range ids give
    /// nothing.
    pub fn token_to_piece(&self, id: u32, special: bool) -> &[u8] {
        let i = id as usize;
        if i >= self.texts.len() {
            return &[];
        }
        if !special && self.attrs[i].has(TokenAttr(TokenAttr::CONTROL.0 | TokenAttr::UNKNOWN.0)) {
            return &[];
        }
        let start = if i == 0 { 0 } else { self.piece_ends[i - 1] };
        &self.pieces[start..self.piece_ends[i]]
    }

    /// A token's raw bytes (BPE: byte alphabet undone; SPM: `▁` as space, `<0xNN>` as the
    /// byte), control tokens included as their text. Out-of-range ids give nothing.
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.token_to_piece(id, true)
    }

    /// The pieces of `ids` concatenated (control tokens left out), as text: invalid UTF-8
    /// becomes U+FFFD. No space is stripped and no clean-up is done, so for BPE
    /// vocabularies `decode(encode(s)) == s`; SPM output keeps the leading space the
    /// encoder added (see `detokenize` for llama.cpp's exact rules).
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend_from_slice(self.token_to_piece(id, false));
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// llama.cpp's `llama_detokenize`: drops a leading BOS / trailing EOS when
    /// `remove_special` (and the vocabulary adds them), renders control tokens only when
    /// `unparse_special`, strips the space the SPM encoder put first, and applies the
    /// vocabulary's clean-up of spaces before punctuation (`clean_spaces`).
    pub fn detokenize(&self, ids: &[u32], remove_special: bool, unparse_special: bool) -> String {
        let mut ids = ids;
        let mut remove_space = self.add_space_prefix;
        if remove_special && self.add_bos && !ids.is_empty() && Some(ids[0]) == self.bos {
            remove_space = false;
            ids = &ids[1..];
        }
        if remove_special && self.add_eos && !ids.is_empty() && Some(ids[ids.len() - 1]) == self.eos {
            ids = &ids[..ids.len() - 1];
        }
        let mut t: Vec<u8> = Vec::new();
        for &id in ids {
            let mut p = self.token_to_piece(id, unparse_special);
            if remove_space && p.first() == Some(&b' ') {
                p = &p[1..];
            }
            remove_space = false;
            t.extend_from_slice(p);
        }
        if self.clean_spaces && !t.is_empty() {
            clean_spaces(&mut t);
        }
        String::from_utf8_lossy(&t).into_owned()
    }

    pub fn vocab_type(&self) -> VocabType {
        self.vocab_type
    }
    /// The BPE pre-tokenizer (None for SPM).
    pub fn pre_tokenizer(&self) -> Option<PreTokenizer> {
        self.pre
    }
    pub fn n_vocab(&self) -> usize {
        self.texts.len()
    }
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }
    /// End of turn: `tokenizer.ggml.eot_token_id`, else detected by text (see module doc).
    pub fn eot(&self) -> Option<u32> {
        self.eot
    }
    /// End of message (`<|eom_id|>`), if any.
    pub fn eom(&self) -> Option<u32> {
        self.eom
    }
    pub fn unk(&self) -> Option<u32> {
        self.unk
    }
    pub fn pad(&self) -> Option<u32> {
        self.pad
    }
    /// Whether generation should stop at this token (EOS, EOT, EOM and the other
    /// end-of-generation tokens llama.cpp detects).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }
    /// All end-of-generation tokens, ascending.
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }
    /// Whether `encode(.., add_special = true, ..)` puts BOS first.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }
    /// Whether `encode(.., add_special = true, ..)` puts EOS last.
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }
    pub fn add_space_prefix(&self) -> bool {
        self.add_space_prefix
    }
    /// A token's text as stored in the vocabulary (byte alphabet / `▁` not undone).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.texts.get(id as usize).map(|s| s.as_str())
    }
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.token_to_id.get(text).copied()
    }
    pub fn token_attr(&self, id: u32) -> TokenAttr {
        self.attrs.get(id as usize).copied().unwrap_or_default()
    }
    pub fn token_score(&self, id: u32) -> f32 {
        self.scores.get(id as usize).copied().unwrap_or(0.0)
    }
    /// Control tokens are not printed by `decode` (e.g. `<|im_end|>`).
    pub fn is_control(&self, id: u32) -> bool {
        self.token_attr(id).has(TokenAttr::CONTROL)
    }
}

/// llama.cpp's `clean_up_tokenization_spaces`, three in-place passes over the bytes:
/// drop a space before `?!.,`; turn " ' " into "'"; drop the space before 's 'm 're 've.
fn clean_spaces(t: &mut Vec<u8>) {
    let n1 = t.len();
    let mut n = 1;
    for i in 1..n1 {
        let x = t[i];
        if t[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            n -= 1;
        }
        t[n] = x;
        n += 1;
    }

    let n2 = n;
    n = if n2 > 0 { 1 } else { 0 };
    let mut i = 1;
    while i < n2 {
        let x = t[i];
        if x == b'\'' && i + 1 < n2 && t[i - 1] == b' ' && t[i + 1] == b' ' {
            n -= 1;
            i += 1;
            t[i] = 0;
        }
        t[n] = x;
        n += 1;
        i += 1;
    }

    let n3 = n;
    n = if n3 > 0 { 1 } else { 0 };
    for i in 1..n3 {
        let x = t[i];
        if t[i - 1] == b' ' && x == b'\'' && i + 1 < n3 {
            let x1 = t[i + 1];
            if matches!(x1, b's' | b'm') {
                n -= 1;
            } else if !matches!(x1, b't' | b'd') && i + 2 < n3 {
                let x2 = t[i + 2];
                if (x1 == b'r' || x1 == b'v') && x2 == b'e' {
                    n -= 1;
                }
            }
        }
        t[n] = x;
        n += 1;
    }
    t.truncate(n);
}

/// Turns token ids into text as they arrive, holding back the bytes of a character split
/// across tokens until it is complete. Bytes that can never form valid UTF-8 come out as
/// U+FFFD.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
    special: bool,
}

impl StreamDecoder {
    /// `special`: render control tokens as their text (llama.cpp's `special` flag).
    pub fn new(special: bool) -> StreamDecoder {
        StreamDecoder { pending: Vec::new(), special }
    }

    /// Add one token; returns the text that is now complete (possibly empty).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> String {
        self.pending.extend_from_slice(tok.token_to_piece(id, self.special));
        self.drain(false)
    }

    /// Whatever is held back (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        self.drain(true)
    }

    fn drain(&mut self, all: bool) -> String {
        let mut out = String::new();
        let mut at = 0;
        loop {
            match std::str::from_utf8(&self.pending[at..]) {
                Ok(s) => {
                    out.push_str(s);
                    at = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = at + e.valid_up_to();
                    // from_utf8 just validated this prefix, so this cannot fail.
                    out.push_str(std::str::from_utf8(&self.pending[at..valid]).unwrap_or_default());
                    match e.error_len() {
                        Some(len) => {
                            out.push('\u{FFFD}');
                            at = valid + len;
                        }
                        None => {
                            // An incomplete character at the end: wait for more bytes.
                            if all {
                                out.push('\u{FFFD}');
                                at = self.pending.len();
                            } else {
                                at = valid;
                            }
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..at);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_spaces_rules() {
        let run = |s: &str| {
            let mut v = s.as_bytes().to_vec();
            clean_spaces(&mut v);
            String::from_utf8(v).unwrap()
        };
        assert_eq!(run("Hello , world !"), "Hello, world!");
        assert_eq!(run("a ' b"), "a'b");
        assert_eq!(run("he 's I 'm we 're you 've it 'd I 'll"), "he's I'm we're you've it 'd I 'll");
        assert_eq!(run(" ?"), "?");
    }
}
