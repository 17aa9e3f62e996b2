//! Logits against llama.cpp for every weight type, on tiny random-weight Llama models
//! (tests/fixtures/tiny/: one F16 model written by scripts/goldens/tiny_models.py and its
//! llama-quantize'd copies; see the README there). For every model, prompt and kernel level
//! (the dispatched one, `FERRITE_KERNELS=scalar`, and the dispatched one with `--no-repack`)
//! we run `ferrite logits --tokens` and check:
//!
//! * top-1 is llama.cpp's (the prompts were picked so that its lead is >= 2% of the range);
//! * max |ours - llama.cpp| <= 0.5% of llama.cpp's logit range (max - min) for F16;
//! * for quantized files, max |Δ| <= 1.5% of the range, *and* for each type and level at
//!   least one prompt agrees to 0.02% of the range.
//!
//! Why not 0.5% everywhere: with quantized weights both runtimes quantize activations to
//! Q8_0/Q8_1/Q8_K before each matmul. A float difference of one ulp anywhere (another summation
//! order: our scalar and AVX2 kernels already differ) occasionally moves one activation across
//! a rounding boundary; the change spreads and flips more roundings downstream, and the logits
//! jump by 0.3-1.1% of their range. Otherwise they agree to ~1e-6 of the range. An emulation
//! of llama.cpp's forward in numpy, which reproduces it to 1e-5 on the Q8_0 file, jumps the
//! same way when its input is perturbed by 1e-6, and does not when activations are not
//! quantized. llama.cpp does the same against itself: its AVX and scalar builds differ from
//! the AVX2 build that made these goldens by up to 1.14% and 0.82%, 10 and 15 prompts of 84
//! over 0.5% (details in tests/fixtures/tiny/README.md). A systematic error, even one too
//! small for the 1.5% bound (RMS eps 1e-6 instead of 1e-5 moves the logits by 1.2%), leaves
//! no prompt within 0.02%.
//! F16 has no activation quantization: llama.cpp rounds activations to f16 for F16 weights
//! where we keep f32, which costs 0.03-0.06% of the range.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Bound on max |Δ| for F16, in % of the reference range.
const BOUND_F16: f64 = 0.5;
/// Bound on max |Δ| for quantized types (one prompt's Q8 rounding-flip cascade), in %.
const BOUND_QUANT: f64 = 1.5;
/// What "agrees" means for the best prompt of a quantized type, in %.
const EXACT: f64 = 0.02;

struct Entry {
    file: String,
    ty: String,
    prompt: String,
    tokens: Vec<u32>,
    logits: String,
    sha256: String,
}

fn manifest() -> Vec<Entry> {
    let path = common::fixture("tiny/manifest.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let m: serde_json::Value = serde_json::from_str(&text).expect("manifest.json is JSON");
    let s = |e: &serde_json::Value, k: &str| e[k].as_str().unwrap_or_else(|| panic!("no {k}")).to_string();
    m["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| Entry {
            file: s(e, "file"),
            ty: s(e, "type"),
            prompt: s(e, "prompt"),
            tokens: e["tokens"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect(),
            logits: s(e, "logits"),
            sha256: s(e, "sha256"),
        })
        .collect()
}

fn read_f32(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn argmax(x: &[f32]) -> usize {
    (0..x.len()).fold(0, |best, i| if x[i] > x[best] { i } else { best })
}

fn ids(tokens: &[u32]) -> String {
    tokens.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(" ")
}

/// `level`: "auto" (the best kernels), "scalar", or "no-repack" (the best kernels with
/// `--no-repack`: prompts under 16 tokens through the row-layout kernels, longer ones
/// through the interleaved kernels on rows repacked or unpacked as they go).
fn run_logits(e: &Entry, level: &str) -> Vec<f32> {
    let mut cmd: Command = common::ferrite();
    cmd.arg("logits").arg("-m").arg(common::fixture("tiny").join(&e.file));
    cmd.arg("--tokens").arg(ids(&e.tokens));
    match level {
        "scalar" => {
            cmd.env("FERRITE_KERNELS", "scalar");
        }
        "no-repack" => {
            cmd.arg("--no-repack");
        }
        _ => {}
    }
    let out = cmd.output().expect("run ferrite");
    assert!(
        out.status.success(),
        "{}: ferrite logits failed: {}",
        e.file,
        String::from_utf8_lossy(&out.stderr)
    );
    read_f32(&out.stdout)
}

/// The ways each file is run (see `run_logits`).
const LEVELS: [&str; 3] = ["auto", "scalar", "no-repack"];

#[test]
fn tiny_models_match_llama_cpp_logits() {
    let entries = manifest();
    assert!(entries.len() >= 26, "manifest has {} entries", entries.len());
    let dir = common::fixture("tiny");
    let mut checked_sha = BTreeSet::new();
    let mut failures = Vec::new();
    // (type, level) -> smallest max |Δ| % over the prompts
    let mut best: BTreeMap<(String, &str), f64> = BTreeMap::new();
    let mut order = Vec::new();
    eprintln!(
        "{:<7} {:<9} {:>6} {:>11} {:>9} {:>8} {:>5}",
        "type", "kernels", "tokens", "max|Δ| %rng", "rms|Δ|", "range", "top1"
    );
    for e in &entries {
        if checked_sha.insert(e.file.clone()) {
            let bytes = std::fs::read(dir.join(&e.file)).unwrap_or_else(|err| panic!("{}: {err}", e.file));
            assert_eq!(
                common::hex(&common::sha256(&bytes)),
                e.sha256,
                "{}: sha256 differs from manifest.json",
                e.file
            );
            order.push(e.ty.clone());
        }
        let reference = read_f32(&std::fs::read(dir.join(&e.logits)).expect("reference logits"));
        let (lo, hi) = reference.iter().fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        let range = (hi - lo) as f64;
        assert!(range > 1.0, "{}: degenerate reference logits (range {range})", e.logits);
        for level in LEVELS {
            let ours = run_logits(e, level);
            assert_eq!(ours.len(), reference.len(), "{} ({level}): vocabulary size", e.file);
            let mut max = 0f64;
            let mut sq = 0f64;
            for (a, b) in ours.iter().zip(&reference) {
                // NaN counts as infinitely far.
                let d = (*a as f64 - *b as f64).abs();
                max = if d.is_nan() { f64::INFINITY } else { max.max(d) };
                sq += d * d;
            }
            let rms = (sq / ours.len() as f64).sqrt();
            let pct = 100.0 * max / range;
            let top_ok = argmax(&ours) == argmax(&reference);
            eprintln!(
                "{:<7} {:<9} {:>6} {:>10.4}% {:>9.5} {:>8.3} {:>5}",
                e.ty,
                level,
                e.tokens.len(),
                pct,
                rms,
                range,
                if top_ok { "ok" } else { "DIFF" }
            );
            let what = format!("{} ({level}, {} tokens, prompt {:?})", e.ty, e.tokens.len(), e.prompt);
            if !top_ok {
                failures.push(format!("{what}: top-1 {} vs llama.cpp {}", argmax(&ours), argmax(&reference)));
            }
            let bound = if e.ty == "F16" { BOUND_F16 } else { BOUND_QUANT };
            if pct > bound {
                failures.push(format!("{what}: max |Δ| {pct:.4}% of the range > {bound}%"));
            }
            let b = best.entry((e.ty.clone(), level)).or_insert(f64::INFINITY);
            *b = b.min(pct);
        }
    }
    eprintln!("\nper type: best prompt's max |Δ| (% of range); quantized types need one <= {EXACT}%");
    for ty in &order {
        let v = LEVELS.map(|level| best[&(ty.clone(), level)]);
        eprintln!("{ty:<7} auto {:.4}%  scalar {:.4}%  no-repack {:.4}%", v[0], v[1], v[2]);
        if ty != "F16" {
            for (level, v) in LEVELS.into_iter().zip(v) {
                if v > EXACT {
                    failures.push(format!(
                        "{ty} ({level}): no prompt agrees with llama.cpp to {EXACT}% of the range (best {v:.4}%): \
                         a systematic difference, not a rounding flip"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// The prompts were tokenized by llama.cpp (BOS added); our SentencePiece tokenizer must give
/// the same ids on this vocabulary (single characters, merged pieces, byte fallback).
#[test]
fn tiny_vocab_tokenizes_like_llama_cpp() {
    let mut seen = BTreeSet::new();
    for e in manifest() {
        if !seen.insert(e.prompt.clone()) {
            continue;
        }
        let out = common::ferrite()
            .args(["tokenize", "-m"])
            .arg(common::fixture("tiny").join(&e.file))
            .args(["-p", &e.prompt])
            .output()
            .expect("run ferrite");
        assert!(out.status.success(), "tokenize failed: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), ids(&e.tokens), "prompt {:?}", e.prompt);
    }
}
