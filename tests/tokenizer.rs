//! Tokenizer parity with llama.cpp: the test vectors shipped with llama.cpp's vocabularies,
//! goldens produced by llama.cpp's `llama-tokenize` (scripts/goldens/tokenizer.sh), round
//! trips, streaming decode, special tokens and hostile input.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use ferrite::gguf::{Array, Gguf, GgufWriter, Value};
use ferrite::tokenizer::{PreTokenizer, StreamDecoder, TokenAttr, Tokenizer, VocabType};
use ferrite::Error;

fn vocab_path(name: &str) -> PathBuf {
    common::fixture(&format!("vocab/ggml-vocab-{name}.gguf"))
}

fn bpe() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::from_file(vocab_path("llama-bpe")).expect("llama-bpe vocab loads"))
}

fn spm() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::from_file(vocab_path("llama-spm")).expect("llama-spm vocab loads"))
}

fn smol() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::from_file(common::smollm2()).expect("SmolLM2 loads"))
}

/// The `.inp` strings and `.out` ids of a llama.cpp test vocabulary.
fn vectors(name: &str) -> Vec<(String, Vec<u32>)> {
    let base = vocab_path(name);
    let inp = std::fs::read_to_string(base.with_extension("gguf.inp")).unwrap();
    let out = std::fs::read_to_string(base.with_extension("gguf.out")).unwrap();
    let mut texts: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    assert_eq!(texts.pop(), Some(""), "the .inp file ends with a separator");
    let ids: Vec<Vec<u32>> =
        out.lines().map(|l| l.split_whitespace().map(|t| t.parse().expect("an id")).collect()).collect();
    assert_eq!(texts.len(), ids.len(), "{name}: one .out line per .inp string");
    assert!(texts.len() > 30, "{name}: the vectors are all there");
    texts.into_iter().map(String::from).zip(ids).collect()
}

fn check_vectors(tok: &Tokenizer, name: &str) {
    let mut failures = Vec::new();
    let cases = vectors(name);
    for (text, want) in &cases {
        let got = tok.encode(text, false, false);
        if &got != want {
            failures.push(format!("{text:?}\n   want {want:?}\n    got {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} of {} differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn llama_bpe_matches_llama_cpp_vectors() {
    assert_eq!(bpe().vocab_type(), VocabType::Bpe);
    assert_eq!(bpe().pre_tokenizer(), Some(PreTokenizer::Llama3));
    check_vectors(bpe(), "llama-bpe");
}

#[test]
fn llama_spm_matches_llama_cpp_vectors() {
    assert_eq!(spm().vocab_type(), VocabType::Spm);
    check_vectors(spm(), "llama-spm");
}

struct Golden {
    text: String,
    add_special: bool,
    parse_special: bool,
    ids: Vec<u32>,
}

fn goldens(file: &str) -> Vec<Golden> {
    let path = common::fixture(&format!("tokenizer/{file}"));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let rows = v.as_array().expect("a list");
    rows.iter()
        .map(|r| Golden {
            text: r["text"].as_str().unwrap().to_string(),
            add_special: r["add_special"].as_bool().unwrap(),
            parse_special: r["parse_special"].as_bool().unwrap(),
            ids: r["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect(),
        })
        .collect()
}

fn check_goldens(tok: &Tokenizer, file: &str, min_cases: usize) {
    let cases = goldens(file);
    assert!(cases.len() >= min_cases, "{file}: {} cases", cases.len());
    let mut failures = Vec::new();
    for g in &cases {
        let got = tok.encode(&g.text, g.add_special, g.parse_special);
        if got != g.ids {
            failures.push(format!(
                "{:?} (add_special {}, parse_special {})\n   want {:?}\n    got {got:?}",
                g.text, g.add_special, g.parse_special, g.ids
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{file}: {} of {} differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn smollm2_matches_llama_tokenize() {
    assert_eq!(smol().pre_tokenizer(), Some(PreTokenizer::Smollm));
    check_goldens(smol(), "smollm2.json", 60);
    // The goldens include the same chat text with and without special parsing, and they differ.
    let cases = goldens("smollm2.json");
    let chat: Vec<&Golden> = cases.iter().filter(|g| g.text.starts_with("<|im_start|>user")).collect();
    assert_eq!(chat.len(), 2);
    assert_ne!(chat[0].ids, chat[1].ids);
}

/// SmolLM2's tokenizer metadata with `tokenizer.ggml.pre` replaced.
fn smol_with_pre(pre: &str) -> Tokenizer {
    let file = ferrite::gguf::GgufFile::open(common::smollm2()).unwrap();
    let mut w = GgufWriter::new();
    for key in [
        "general.architecture",
        "tokenizer.ggml.model",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.add_bos_token",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id",
    ] {
        w.add(key, file.gguf.get(key).expect(key).clone());
    }
    w.add("tokenizer.ggml.pre", Value::String(pre.into()));
    Tokenizer::from_gguf(&Gguf::parse(&w.to_bytes(&[])).unwrap()).unwrap()
}

#[test]
fn default_and_gpt2_pre_tokenizers_match_llama_tokenize() {
    let default = smol_with_pre("default");
    assert_eq!(default.pre_tokenizer(), Some(PreTokenizer::Default));
    check_goldens(&default, "smollm2-pre-default.json", 60);
    let gpt2 = smol_with_pre("gpt-2");
    assert_eq!(gpt2.pre_tokenizer(), Some(PreTokenizer::Gpt2));
    check_goldens(&gpt2, "smollm2-pre-gpt-2.json", 60);
    // The two really split differently ("default" isolates punctuation runs).
    let t = "x = 1234567; y's";
    assert_ne!(default.encode(t, false, false), gpt2.encode(t, false, false));
}

#[test]
fn llama_bpe_goldens_with_bos_and_specials() {
    check_goldens(bpe(), "llama-bpe.json", 40);
}

#[test]
fn llama_spm_goldens_with_bos_and_specials() {
    check_goldens(spm(), "llama-spm.json", 40);
}

#[test]
fn special_tokens_and_flags() {
    // Values llama.cpp prints when it loads these files (print_info / "EOG token").
    let b = bpe();
    assert_eq!(b.n_vocab(), 128256);
    assert_eq!((b.bos(), b.eos(), b.eot()), (Some(128000), Some(128001), Some(128009)));
    assert_eq!(b.eog_ids(), &[128001, 128009]);
    assert!(b.add_bos() && !b.add_eos());
    assert_eq!(b.encode("Hi", true, false), vec![128000, 13347]);

    let s = spm();
    assert_eq!(s.n_vocab(), 32000);
    assert_eq!((s.bos(), s.eos(), s.eot(), s.unk()), (Some(1), Some(2), None, Some(0)));
    assert_eq!(s.eog_ids(), &[2]);
    assert!(s.add_bos() && s.add_space_prefix());
    assert_eq!(s.encode("", true, false), vec![1]);
    assert_eq!(s.encode("", false, false), Vec::<u32>::new());

    let m = smol();
    assert_eq!(m.n_vocab(), 49152);
    assert_eq!((m.bos(), m.eos()), (Some(1), Some(2)));
    // llama.cpp's EOG set: <|endoftext|>, <|im_end|>, <reponame> (FIM repo name).
    assert_eq!(m.eog_ids(), &[0, 2, 4]);
    assert!(m.is_eog(2) && m.is_eog(0) && !m.is_eog(1) && !m.is_eog(5) && !m.is_eog(u32::MAX));
    // Several tokens look like end-of-turn; we take the first in llama.cpp's list order.
    assert_eq!(m.eot(), Some(2));
    assert!(!m.add_bos());
    assert_eq!(m.encode("Hi", true, false), m.encode("Hi", false, false));

    assert_eq!(m.token_id("<|im_start|>"), Some(1));
    assert_eq!(m.token_text(1), Some("<|im_start|>"));
    assert_eq!(m.token_text(49152), None);
    assert_eq!(m.token_id("no such token at all"), None);
    assert!(m.is_control(1) && !m.is_control(100));
    assert!(m.token_attr(100).has(TokenAttr::NORMAL));
}

#[test]
fn parse_special_cuts_control_tokens_longest_first() {
    let m = smol();
    let im_start = m.token_id("<|im_start|>").unwrap();
    let im_end = m.token_id("<|im_end|>").unwrap();
    let with = m.encode("<|im_start|>user\nHi<|im_end|>", false, true);
    assert_eq!(with.first(), Some(&im_start));
    assert_eq!(with.last(), Some(&im_end));
    let inner = m.encode("user\nHi", false, false);
    assert_eq!(&with[1..with.len() - 1], &inner[..]);
    // Without parsing, the marker is ordinary text.
    let without = m.encode("<|im_start|>", false, false);
    assert!(!without.contains(&im_start) && without.len() > 1);

    // Llama 3: `<|end_header_id|>` must not be cut as a shorter token first.
    let b = bpe();
    let ids = b.encode("<|start_header_id|>user<|end_header_id|>", false, true);
    assert_eq!(ids, vec![128006, 882, 128007]);
}

#[test]
fn decode_round_trips_bpe() {
    for (tok, name) in [(bpe(), "llama-bpe"), (smol(), "llama-bpe")] {
        for (text, _) in vectors(name) {
            let ids = tok.encode(&text, false, false);
            assert_eq!(tok.decode(&ids), text);
            // With BOS and special parsing: BOS is a control token and decodes to nothing.
            let ids = tok.encode(&text, true, true);
            assert_eq!(tok.decode(&ids), text);
        }
    }
    let chat = "<|im_start|>user\nHi<|im_end|>\n";
    let ids = smol().encode(chat, false, true);
    assert_eq!(smol().decode(&ids), "user\nHi\n", "control tokens are not printed");
    let rendered: Vec<u8> = ids.iter().flat_map(|&i| smol().token_to_piece(i, true).to_vec()).collect();
    assert_eq!(rendered, chat.as_bytes(), "unless asked for");
}

#[test]
fn decode_round_trips_spm() {
    let s = spm();
    for (text, _) in vectors("llama-spm") {
        if text.is_empty() {
            assert_eq!(s.encode(&text, false, false), Vec::<u32>::new());
            continue;
        }
        let ids = s.encode(&text, false, false);
        // The encoder puts a space first; `decode` keeps it, `detokenize` drops it.
        assert_eq!(s.decode(&ids), format!(" {text}"));
        assert_eq!(s.detokenize(&ids, false, false), text);
        // llama.cpp keeps that space when a BOS comes first (removed or not).
        let ids = s.encode(&text, true, false);
        assert_eq!(s.detokenize(&ids, true, false), format!(" {text}"));
    }
    // Byte fallback: a character not in the vocabulary becomes <0xNN> tokens.
    let ids = s.encode("🦙", false, false);
    assert!(ids.iter().any(|&i| s.token_text(i).unwrap().starts_with("<0x")));
    assert_eq!(s.detokenize(&ids, false, false), "🦙");
}

#[test]
fn detokenize_cleans_spaces_like_llama_cpp() {
    // Llama 3 vocabularies clean up spaces before punctuation; SmolLM's do not.
    let b = bpe();
    let ids = b.encode("Hello , world ! he 's", false, false);
    assert_eq!(b.detokenize(&ids, false, false), "Hello, world! he's");
    assert_eq!(b.decode(&ids), "Hello , world ! he 's");
    let m = smol();
    let ids = m.encode("Hello , world !", false, false);
    assert_eq!(m.detokenize(&ids, false, false), "Hello , world !");
    // remove_special drops the BOS the vocabulary adds.
    let ids = b.encode("Hi", true, false);
    assert_eq!(b.detokenize(&ids, true, true), "Hi");
    assert_eq!(b.detokenize(&ids, false, true), "<|begin_of_text|>Hi");
}

#[test]
fn token_bytes_undo_the_vocabulary_encodings() {
    let b = bpe();
    assert_eq!(b.token_text(220), Some("Ġ"));
    assert_eq!(b.token_bytes(220), b" ");
    assert_eq!(b.token_bytes(198), b"\n");
    // A lone byte of a multi-byte character: not UTF-8 by itself.
    let id = b.token_id("ð").unwrap();
    assert_eq!(b.token_bytes(id), &[0xF0]);
    assert_eq!(b.token_bytes(128009), b"<|eot_id|>");
    assert_eq!(b.token_to_piece(128009, false), b"");

    let s = spm();
    let id = s.token_id("▁Hello").unwrap();
    assert_eq!(s.token_bytes(id), b" Hello");
    assert_eq!(s.token_bytes(s.token_id("<0x0A>").unwrap()), b"\n");
    assert_eq!(s.token_bytes(s.token_id("<0xE2>").unwrap()), &[0xE2]);
    assert_eq!(s.token_to_piece(1, true), b"<s>");
    assert_eq!(s.token_to_piece(1, false), b"");

    for t in [b, s, smol()] {
        assert_eq!(t.token_bytes(t.n_vocab() as u32), b"");
        assert_eq!(t.token_bytes(u32::MAX), b"");
        assert_eq!(t.decode(&[u32::MAX, 1 << 31]), "");
    }
}

#[test]
fn stream_decoder_holds_split_characters() {
    for tok in [bpe(), spm(), smol()] {
        let text = "naïve 🦙 中文 emoji 😶‍🌫️ and ½ → ok";
        let ids = tok.encode(text, false, false);
        // Some token must end inside a character, or the test proves nothing.
        let split = ids.iter().any(|&i| std::str::from_utf8(tok.token_bytes(i)).is_err());
        assert!(split, "expected a token holding part of a character");
        let mut dec = StreamDecoder::new(false);
        let mut out = String::new();
        for &id in &ids {
            let piece = dec.push(tok, id);
            assert!(!piece.contains('\u{FFFD}'), "emitted a partial character");
            out.push_str(&piece);
        }
        out.push_str(&dec.finish());
        let want = if tok.add_space_prefix() { format!(" {text}") } else { text.to_string() };
        assert_eq!(out, want);
    }
    // A dangling partial character is flushed as U+FFFD by finish().
    let b = bpe();
    let mut dec = StreamDecoder::new(false);
    assert_eq!(dec.push(b, b.token_id("ð").unwrap()), "");
    assert_eq!(dec.finish(), "\u{FFFD}");
    // Control tokens stream as text only when asked.
    let mut dec = StreamDecoder::new(true);
    assert_eq!(dec.push(b, 128009), "<|eot_id|>");
    let mut dec = StreamDecoder::new(false);
    assert_eq!(dec.push(b, 128009), "");
}

#[test]
fn hostile_input_never_panics() {
    let mut rng = common::Rng::new(7);
    let alphabet: Vec<char> =
        "a Z0 \n\t\r'’.,!?<|>_é中🦙\u{0}\u{85}\u{a0}\u{3000}\u{200d}\u{fe0f}\u{10ffff}\u{378}ſK"
            .chars()
            .collect();
    for tok in [bpe(), spm(), smol()] {
        for round in 0..300 {
            let len = rng.below(60) as usize;
            let s: String = if round % 3 == 0 {
                let bytes: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            } else {
                (0..len).map(|_| alphabet[rng.below(alphabet.len() as u64) as usize]).collect()
            };
            for (a, p) in [(false, false), (true, true)] {
                let ids = tok.encode(&s, a, p);
                assert!(ids.iter().all(|&i| (i as usize) < tok.n_vocab()));
                let back = tok.decode(&ids);
                // Only a vocabulary with all 256 byte tokens can spell anything (SmolLM2
                // lacks a few, and llama.cpp drops those bytes too).
                if !a && std::ptr::eq(tok, bpe()) {
                    assert_eq!(back, s);
                }
            }
            let ids: Vec<u32> =
                (0..len).map(|_| rng.next_u64() as u32 % (tok.n_vocab() as u32 + 100)).collect();
            let _ = tok.decode(&ids);
            let _ = tok.detokenize(&ids, true, true);
            let mut dec = StreamDecoder::new(true);
            for &i in &ids {
                dec.push(tok, i);
            }
            dec.finish();
        }
    }
}

#[test]
fn long_text_encodes_and_round_trips() {
    // 100 KB of mixed text; speed is measured in BENCHMARKS.md, not asserted here.
    let unit = "The quick brown fox, 12345678 times: naïve café 中文 🦙\n\tfn main() { x += 1; }   \n";
    let mut text = String::new();
    while text.len() < 100_000 {
        text.push_str(unit);
    }
    let one_word = "a".repeat(50_000) + &"é".repeat(10_000);
    let t0 = std::time::Instant::now();
    let file = ferrite::gguf::GgufFile::open(vocab_path("llama-bpe")).unwrap();
    let t1 = std::time::Instant::now();
    let tok = Tokenizer::from_gguf(&file.gguf).unwrap();
    eprintln!("128k vocab: GGUF parsed in {:?}, tokenizer built in {:?}", t1 - t0, t1.elapsed());
    assert_eq!(tok.n_vocab(), 128256);
    for tok in [bpe(), smol()] {
        let t0 = std::time::Instant::now();
        let ids = tok.encode(&text, false, false);
        eprintln!("{} tokens for {} bytes in {:?}", ids.len(), text.len(), t0.elapsed());
        assert!(ids.len() > 10_000 && ids.len() < text.len());
        assert_eq!(tok.decode(&ids), text);
        let ids = tok.encode(&one_word, false, false);
        assert_eq!(tok.decode(&ids), one_word);
    }
    let ids = spm().encode(&text, false, false);
    assert_eq!(spm().detokenize(&ids, false, false), text);
}

/// A tiny GGUF holding only tokenizer metadata.
fn tiny(model: &str, pre: Option<&str>, tokens: &[&str], merges: &[&str]) -> Gguf {
    let mut w = GgufWriter::new();
    w.add("general.architecture", Value::String("llama".into()));
    w.add("tokenizer.ggml.model", Value::String(model.into()));
    if let Some(p) = pre {
        w.add("tokenizer.ggml.pre", Value::String(p.into()));
    }
    w.add(
        "tokenizer.ggml.tokens",
        Value::Array(Array::String(tokens.iter().map(|s| s.to_string()).collect())),
    );
    if model == "gpt2" {
        w.add(
            "tokenizer.ggml.merges",
            Value::Array(Array::String(merges.iter().map(|s| s.to_string()).collect())),
        );
    }
    Gguf::parse(&w.to_bytes(&[])).unwrap()
}

#[test]
fn unsupported_tokenizers_are_clear_errors() {
    let err = |r: ferrite::Result<Tokenizer>| match r {
        Err(e) => e,
        Ok(_) => panic!("expected an error"),
    };
    let e = err(Tokenizer::from_gguf(&tiny("gpt2", Some("qwen2"), &["a"], &[])));
    assert!(
        matches!(&e, Error::Invalid(m) if m.contains("\"qwen2\"") && m.contains("tokenizer.ggml.pre")),
        "{e}"
    );
    let e = err(Tokenizer::from_gguf(&tiny("bert", None, &["a"], &[])));
    assert!(matches!(&e, Error::Invalid(m) if m.contains("\"bert\"")), "{e}");
    let e = err(Tokenizer::from_gguf(
        &tiny("gpt2", Some("gpt2"), &["a"], &[]).clone_without("tokenizer.ggml.merges"),
    ));
    assert!(matches!(&e, Error::MissingKey { key } if key == "tokenizer.ggml.merges"), "{e}");
}

trait Without {
    fn clone_without(&self, key: &str) -> Gguf;
}
impl Without for Gguf {
    fn clone_without(&self, key: &str) -> Gguf {
        let mut w = GgufWriter::new();
        for k in
            ["general.architecture", "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens"]
        {
            if k != key {
                if let Some(v) = self.get(k) {
                    w.add(k, v.clone());
                }
            }
        }
        Gguf::parse(&w.to_bytes(&[])).unwrap()
    }
}

#[test]
fn tiny_bpe_vocab_merges_by_rank() {
    // Byte-level alphabet: 'Ġ' is the space. Merge ranks decide between overlapping pairs.
    let tokens = ["a", "b", "c", "Ġ", "ab", "bc", "abc", "Ġa"];
    let g = tiny("gpt2", Some("gpt-2"), &tokens, &["b c", "a b", "a bc", "Ġ a"]);
    let t = Tokenizer::from_gguf(&g).unwrap();
    assert_eq!(t.pre_tokenizer(), Some(PreTokenizer::Gpt2));
    // "abc": "b c" (rank 0) wins over "a b" (rank 1), then "a bc".
    assert_eq!(t.encode("abc", false, false), vec![6]);
    assert_eq!(t.encode("ab", false, false), vec![4]);
    // " abc": "b c", then "a bc" (rank 2) before "Ġ a" (rank 3) can apply.
    assert_eq!(t.encode(" abc", false, false), vec![3, 6]);
    // Characters outside the vocabulary are dropped, as llama.cpp does.
    assert_eq!(t.encode("ax", false, false), vec![0]);
    assert_eq!(t.decode(&[7, 5]), " abc");
    // No pre-tokenizer name: llama.cpp's default.
    let t = Tokenizer::from_gguf(&tiny("gpt2", None, &tokens, &[])).unwrap();
    assert_eq!(t.pre_tokenizer(), Some(PreTokenizer::Default));
    assert_eq!(t.encode("ab", false, false), vec![0, 1]);
}

/// `ferrite tokenize -p` processes escapes as llama-tokenize does by default (`\n`, `\t`,
/// quotes, `\\`, `\xHH`; others kept), and takes the text as written with `--no-escape`
/// (goldens from scripts/goldens/escapes.sh).
#[test]
fn prompt_escapes_match_llama_tokenize() {
    let path = common::fixture("goldens/escapes.json");
    let g: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let model = common::root().join(g["model"].as_str().unwrap());
    let entries = g["entries"].as_array().unwrap();
    assert!(entries.len() >= 9);
    for e in entries {
        let text = e["text"].as_str().unwrap();
        let mut cmd = common::ferrite();
        cmd.arg("tokenize").arg("-m").arg(&model).args(["-p", text]);
        if e["no_escape"].as_bool().unwrap() {
            cmd.arg("--no-escape");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{text:?}: {}", String::from_utf8_lossy(&out.stderr));
        let ids: Vec<u64> =
            String::from_utf8(out.stdout).unwrap().split_whitespace().map(|t| t.parse().unwrap()).collect();
        let want: Vec<u64> = e["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        assert_eq!(ids, want, "{text:?}");
    }
    // A \xHH that makes invalid UTF-8 is a one-line error.
    let out =
        common::ferrite().arg("tokenize").arg("-m").arg(&model).args(["-p", r"a \xff b"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("error: ") && err.trim_end().lines().count() == 1, "{err}");
}
