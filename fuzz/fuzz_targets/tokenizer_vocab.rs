//! A vocabulary made of fuzzer-chosen parts (tokens, scores, types, merges, special ids,
//! flags, for both tokenizer models) and a text: building the tokenizer returns Ok or a
//! typed error, and encoding, decoding and streaming the pieces never panic or hang.
#![no_main]

use ferrite::gguf::{Array, Gguf, GgufWriter, Value};
use ferrite::tokenizer::Tokenizer;
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

const PRES: [&str; 6] = ["llama-bpe", "smollm", "default", "gpt2", "qwen2", "no-such-pre"];
const SPECIAL: [&str; 5] = ["<|im_start|>", "<|im_end|>", "<s>", "</s>", "<|begin_of_text|>"];

/// One token's text: a byte token, a special-looking one, a piece of the text alphabet, or
/// any string.
fn token(u: &mut Unstructured) -> Result<String> {
    Ok(match u.int_in_range(0..=4)? {
        0 => format!("<0x{:02X}>", u.arbitrary::<u8>()?),
        1 => u.choose(&SPECIAL)?.to_string(),
        2 => {
            let alphabet = ['a', 'b', ' ', '▁', 'Ġ', 'é', '1', '\n', '🙂'];
            (0..u.int_in_range(1..=4)?).map(|_| u.choose(&alphabet).copied()).collect::<Result<_>>()?
        }
        _ => u.arbitrary()?,
    })
}

fn vocab(u: &mut Unstructured) -> Result<(Vec<u8>, String)> {
    let spm = u.arbitrary::<bool>()?;
    let n = u.int_in_range(0..=300)?;
    let tokens: Vec<String> = (0..n).map(|_| token(u)).collect::<Result<_>>()?;
    let mut w = GgufWriter::new();
    w.add("tokenizer.ggml.model", Value::String(if spm { "llama" } else { "gpt2" }.into()));
    if u.arbitrary()? {
        w.add("tokenizer.ggml.pre", Value::String(u.choose(&PRES)?.to_string()));
    }
    if u.arbitrary()? {
        let scores = (0..n).map(|_| u.arbitrary()).collect::<Result<_>>()?;
        w.add("tokenizer.ggml.scores", Value::Array(Array::F32(scores)));
    }
    if u.arbitrary()? {
        let types = (0..n).map(|_| u.int_in_range(-1..=7)).collect::<Result<_>>()?;
        w.add("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
    }
    if !spm || u.arbitrary()? {
        let m = u.int_in_range(0..=200)?;
        let merges = (0..m)
            .map(|_| {
                if u.arbitrary()? && !tokens.is_empty() {
                    Ok(format!("{} {}", u.choose(&tokens)?, u.choose(&tokens)?))
                } else {
                    u.arbitrary()
                }
            })
            .collect::<Result<_>>()?;
        w.add("tokenizer.ggml.merges", Value::Array(Array::String(merges)));
    }
    for key in ["bos", "eos", "eot", "unknown", "padding"] {
        if u.arbitrary()? {
            // Mostly inside the vocabulary, sometimes far outside it.
            let id = if u.arbitrary()? { u.int_in_range(0..=n as u32)? } else { u.arbitrary()? };
            w.add(&format!("tokenizer.ggml.{key}_token_id"), Value::U32(id));
        }
    }
    for key in ["add_bos_token", "add_eos_token", "add_space_prefix"] {
        if u.arbitrary()? {
            w.add(&format!("tokenizer.ggml.{key}"), Value::Bool(u.arbitrary()?));
        }
    }
    w.add("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)));
    Ok((w.to_bytes(&[]), u.arbitrary()?))
}

fuzz_target!(|data: &[u8]| {
    let Ok((bytes, text)) = vocab(&mut Unstructured::new(data)) else { return };
    let g = Gguf::parse(&bytes).expect("the writer's own output parses");
    let Ok(tok) = Tokenizer::from_gguf(&g) else { return };
    for (special, parse_special) in [(true, true), (false, false)] {
        let ids = tok.encode(&text, special, parse_special);
        let _ = tok.decode(&ids);
        for &id in &ids {
            let _ = tok.token_to_piece(id, true);
        }
    }
});
