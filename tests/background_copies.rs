//! Repacked copies made in the background (`Background`): until a matrix's copy is there, it
//! is computed from the file's rows as the copy would be (`Matrix::as_copy`), so the logits
//! are the same to the bit whenever each copy arrives: with every copy held back
//! (`Background::Hold`), with the copies racing the forward pass (`Background::On`), and with
//! the copies made before the load returns (`Background::Off`). Every weight type (the tiny
//! files of tests/fixtures/tiny) and SmolLM2's four files; prompts of 3, 13, 20 and 70 tokens
//! (the per-row kernels, the 4-row tiles, the panels and AMX tiles from 16 rows) and decode.

mod common;

use std::path::{Path, PathBuf};

use ferrite::gguf::GgufFile;
use ferrite::model::{Background, CopyCache, KvCache, LoadOptions, Model, State};

fn load(path: &Path, background: Background) -> Model {
    let opts = LoadOptions { repack: true, cache: None, copies_in_memory: None, background };
    Model::load_opts(GgufFile::open(path).unwrap(), &opts).unwrap()
}

/// Logits (as bits) after prompts of several lengths, each followed by two decode steps.
fn logits(m: &Model) -> Vec<Vec<u32>> {
    let vocab = m.config.vocab_size as u32;
    let mut out = Vec::new();
    for len in [3u32, 13, 20, 70] {
        let prompt: Vec<u32> = (0..len).map(|i| 1 + (i * 37 + len) % (vocab - 1)).collect();
        let mut cache = KvCache::new(&m.config, 80);
        let mut state = State::new(&m.config, 80);
        m.forward(&prompt, &mut cache, &mut state, None).unwrap();
        out.push(state.logits.iter().map(|v| v.to_bits()).collect());
        for t in [5u32, 77] {
            m.forward(&[t % vocab], &mut cache, &mut state, None).unwrap();
            out.push(state.logits.iter().map(|v| v.to_bits()).collect());
        }
    }
    out
}

fn files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(common::fixture("tiny"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    v.sort();
    assert!(v.len() >= 13, "the tiny models are missing");
    for t in ["Q4_1", "Q8_0", "Q4_0", "Q4_K_M"] {
        let p = common::root().join(format!("models/SmolLM2-135M-Instruct.{t}.gguf"));
        assert!(p.exists(), "{} is missing: run scripts/make-variants.sh", p.display());
        v.push(p);
    }
    v
}

#[test]
fn held_back_copies_compute_what_the_copies_do() {
    let mut with_copies = 0;
    for path in files() {
        let made = load(&path, Background::Off);
        let held = load(&path, Background::Hold);
        assert_eq!(held.repacked_bytes(), 0, "{}: held copies are never made", path.display());
        assert_eq!(held.copy_cache(), CopyCache::Unused);
        with_copies += (made.repacked_bytes() > 0) as usize;
        assert!(logits(&made) == logits(&held), "{}: logits differ from the copies'", path.display());
    }
    // On a level without interleaved kernels (scalar, NEON) there are no copies to hold, and
    // the comparison is of a model with itself.
    if Model::open(common::smollm2())
        .unwrap()
        .kernels
        .preferred_layout(ferrite::kernels::GgmlType::Q4_1, 64, 576)
        .is_some()
    {
        assert!(with_copies >= 10, "only {with_copies} files had copies");
    }
}

#[test]
fn copies_racing_the_forward_pass_change_nothing() {
    for path in files().into_iter().rev().take(5) {
        let want = logits(&load(&path, Background::Off));
        let m = load(&path, Background::On);
        // Computed while the copies are made (some matrices from their copies, some not).
        let racing = logits(&m);
        assert_eq!(m.wait_copy_cache(), CopyCache::Unused, "no cache asked for");
        assert!(racing == want, "{}: logits changed while the copies were made", path.display());
        let off = load(&path, Background::Off);
        assert_eq!(m.repacked_bytes(), off.repacked_bytes(), "{}: every copy made", path.display());
        assert_eq!(m.copies_ready_after().is_some(), m.repacked_bytes() > 0);
        assert!(logits(&m) == want, "{}: logits differ after the copies", path.display());
    }
}

#[test]
fn a_model_dropped_while_its_copies_are_made_stops_them() {
    let path = common::root().join("models/SmolLM2-135M-Instruct.Q8_0.gguf");
    for _ in 0..5 {
        let m = load(&path, Background::On);
        let c = m.settle_copies();
        assert!(c == CopyCache::Unused, "{c:?}");
        drop(m);
        drop(load(&path, Background::On));
    }
}
