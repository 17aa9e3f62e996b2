//! `ferrite bench`: prefill and decode speed, timed separately like llama-bench
//! (pp: a batch of p random tokens into an empty cache; tg: n tokens decoded one at a time
//! from an empty cache), mean and standard deviation over repetitions after a warm-up.

use std::time::Instant;

use serde_json::json;

use crate::error::Result;
use crate::model::{CopyCache, KvCache, Model, Profile, State};
use crate::sampler::Rng;

#[derive(Clone, Debug)]
pub struct BenchResult {
    pub test: String,
    pub tokens_per_s: f64,
    pub stddev: f64,
    pub samples: Vec<f64>,
}

fn random_tokens(model: &Model, n: usize, rng: &mut Rng) -> Vec<u32> {
    (0..n).map(|_| (rng.next_u64() % model.config.vocab_size as u64) as u32).collect()
}

fn mean_std(xs: &[f64]) -> (f64, f64) {
    let m = xs.iter().sum::<f64>() / xs.len() as f64;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64
    } else {
        0.0
    };
    (m, var.sqrt())
}

/// Time `reps` runs of a prefill of `p` tokens (if p > 0) and a decode of `n` tokens (if n > 0).
pub fn run(model: &Model, p: usize, n: usize, reps: usize) -> Result<Vec<BenchResult>> {
    run_with(model, &[p], &[n], reps, false).map(|(r, _)| r)
}

/// Prefill and decode profiles.
pub type Profiles = (Profile, Profile);

/// As `run`, for every prefill length in `ps` and then every decode length in `ns` (as
/// llama-bench orders its tests; zeros skipped); with `profile`, the forward passes also keep
/// per-op statistics (returned as prefill and decode profiles, over all the tests), so the
/// cost of the bookkeeping itself can be measured.
pub fn run_with(
    model: &Model,
    ps: &[usize],
    ns: &[usize],
    reps: usize,
    profile: bool,
) -> Result<(Vec<BenchResult>, Option<Profiles>)> {
    let n_ctx = ps.iter().chain(ns).copied().max().unwrap_or(0).max(1);
    let mut cache = KvCache::new(&model.config, n_ctx);
    let mut state = State::new(&model.config, n_ctx);
    if profile {
        state.prof_prefill = Some(Box::default());
        state.prof_decode = Some(Box::default());
    }
    let mut rng = Rng::new(1234);
    let mut results = Vec::new();
    // Warm-up: touch every weight once (page faults, caches), as llama-bench does. A
    // forward pass reads every matrix but only its tokens' rows of the embedding, so those
    // are mapped first: otherwise each timed run's random tokens read new pages of the file,
    // from disk where the page cache has dropped it (1B Q4_K_M pp64: 11% of the time).
    model.populate_embedding();
    cache.clear();
    model.forward(&random_tokens(model, 1, &mut rng), &mut cache, &mut state, None)?;
    for &p in ps.iter().filter(|&&p| p > 0) {
        let mut samples = Vec::new();
        for _ in 0..reps {
            let toks = random_tokens(model, p, &mut rng);
            cache.clear();
            let t = Instant::now();
            model.forward(&toks, &mut cache, &mut state, None)?;
            samples.push(p as f64 / t.elapsed().as_secs_f64());
        }
        let (m, s) = mean_std(&samples);
        results.push(BenchResult { test: format!("pp{p}"), tokens_per_s: m, stddev: s, samples });
    }
    for &n in ns.iter().filter(|&&n| n > 0) {
        let mut samples = Vec::new();
        for _ in 0..reps {
            let toks = random_tokens(model, n, &mut rng);
            cache.clear();
            let t = Instant::now();
            for tok in &toks {
                model.forward(std::slice::from_ref(tok), &mut cache, &mut state, None)?;
            }
            samples.push(n as f64 / t.elapsed().as_secs_f64());
        }
        let (m, s) = mean_std(&samples);
        results.push(BenchResult { test: format!("tg{n}"), tokens_per_s: m, stddev: s, samples });
    }
    let profiles = match (state.prof_prefill.take(), state.prof_decode.take()) {
        (Some(a), Some(b)) => Some((*a, *b)),
        _ => None,
    };
    Ok((results, profiles))
}

pub fn describe(model: &Model) -> (String, u64, u64) {
    let g = &model.file.gguf;
    let name = g.get("general.name").and_then(|v| v.as_str()).unwrap_or("llama").to_string();
    let bytes: u64 = g.tensors.iter().map(|t| t.size).sum();
    let params: u64 = g.tensors.iter().map(|t| t.n_elements).sum();
    (name, bytes, params)
}

pub fn to_markdown(model: &Model, threads: usize, results: &[BenchResult]) -> String {
    let (name, bytes, params) = describe(model);
    let mut s = String::from("| model | size | params | kernels | threads | test | t/s |\n");
    s.push_str("| --- | ---: | ---: | --- | ---: | ---: | ---: |\n");
    for r in results {
        s.push_str(&format!(
            "| {name} | {:.2} GiB | {:.2} B | {} | {threads} | {} | {:.2} ± {:.2} |\n",
            bytes as f64 / (1u64 << 30) as f64,
            params as f64 / 1e9,
            model.kernels.level.name(),
            r.test,
            r.tokens_per_s,
            r.stddev
        ));
    }
    s
}

pub fn to_json(model: &Model, threads: usize, results: &[BenchResult]) -> serde_json::Value {
    let (name, bytes, params) = describe(model);
    json!({
        "model": name,
        "size_bytes": bytes,
        "params": params,
        "kernels": model.kernels.level.name(),
        "threads": threads,
        "results": results.iter().map(|r| json!({
            "test": r.test, "tokens_per_s": r.tokens_per_s, "stddev": r.stddev, "samples": r.samples,
        })).collect::<Vec<_>>(),
    })
}

/// What loading cost: time, repacked copies, and the peak resident memory of the process;
/// and how much of the memory the weights are read from is mapped by 2 MiB pages.
#[derive(Clone, Debug)]
pub struct Memory {
    pub load_ms: f64,
    pub file_bytes: u64,
    pub repacked_bytes: u64,
    pub peak_rss_bytes: Option<u64>,
    /// The file map's and the copies' bytes mapped by 2 MiB pages, after the runs (Linux:
    /// FilePmdMapped + AnonHugePages). Decoding from the map runs faster from a file the
    /// page cache holds in large folios (read fresh from disk) than in 4 KiB ones
    /// (BENCHMARKS.md, "Decode kernels over many rows").
    pub huge_page_bytes: Option<u64>,
    /// Whether the copies were mapped from the copy cache, or saved to it.
    pub copy_cache: crate::model::CopyCache,
    /// Where the copies were made in the background: how long after the load began they
    /// were all there (the load itself returned after `load_ms`).
    pub copies_ready_ms: Option<f64>,
}

impl Memory {
    pub fn of(model: &Model, load: std::time::Duration) -> Memory {
        Memory {
            load_ms: load.as_secs_f64() * 1e3,
            file_bytes: model.file.bytes().len() as u64,
            repacked_bytes: model.repacked_bytes() as u64,
            peak_rss_bytes: peak_rss(),
            huge_page_bytes: huge_pages(),
            copy_cache: model.copy_cache(),
            copies_ready_ms: model.copies_ready_after().map(|t| t.as_secs_f64() * 1e3),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "load_ms": self.load_ms,
            "copies_ready_ms": self.copies_ready_ms,
            "file_bytes": self.file_bytes,
            "repacked_bytes": self.repacked_bytes,
            "peak_rss_bytes": self.peak_rss_bytes,
            "huge_page_bytes": self.huge_page_bytes,
            "copy_cache": match &self.copy_cache {
                CopyCache::Unused => serde_json::Value::Null,
                CopyCache::Read(p) => json!({ "read": p }),
                CopyCache::ReadIntoMemory(p) => json!({ "read": p, "into_memory": true }),
                CopyCache::Making(p) => json!({ "making": p }),
                CopyCache::Reading(p) => json!({ "reading": p }),
                CopyCache::Writing(p) => json!({ "writing": p }),
                CopyCache::Wrote(p, t) => json!({ "wrote": p, "write_s": t.as_secs_f64() }),
                CopyCache::Failed(e) => json!({ "failed": e }),
            },
        })
    }
}

impl std::fmt::Display for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        write!(f, "load {:.0} ms; file {:.2} GiB; ", self.load_ms, gib(self.file_bytes))?;
        let source = self.copy_cache.source();
        match (self.repacked_bytes, &source) {
            (0, _) => write!(f, "no repacked copies (weights read from the mapped file)")?,
            (b, Some(s)) => write!(f, "repacked copies {:.2} GiB ({s})", gib(b))?,
            (b, None) => write!(f, "repacked copies {:.2} GiB (their file pages released)", gib(b))?,
        }
        if let Some(t) = self.copies_ready_ms {
            let how = if matches!(self.copy_cache, CopyCache::ReadIntoMemory(_)) { "read" } else { "made" };
            write!(f, ", {how} in the background, all there {:.1} s after the load began", t / 1e3)?;
        }
        if let Some(p) = self.peak_rss_bytes {
            write!(f, "; peak resident {:.2} GiB", gib(p))?;
        }
        if let Some(h) = self.huge_page_bytes {
            write!(f, "; mapped by 2 MiB pages {:.2} GiB", gib(h))?;
        }
        if source.is_none() && self.copy_cache != CopyCache::Unused {
            write!(f, "; {}", self.copy_cache)?;
        }
        Ok(())
    }
}

/// Bytes of the process mapped by 2 MiB pages (Linux: FilePmdMapped + AnonHugePages in
/// /proc/self/smaps_rollup).
fn huge_pages() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/smaps_rollup").ok()?;
    Some(kb_field(&s, "FilePmdMapped:").unwrap_or(0) + kb_field(&s, "AnonHugePages:").unwrap_or(0))
}

/// The process's peak resident set (Linux: VmHWM in /proc/self/status).
fn peak_rss() -> Option<u64> {
    kb_field(&std::fs::read_to_string("/proc/self/status").ok()?, "VmHWM:")
}

/// The bytes of a `/proc` line `KEY   N kB`.
fn kb_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
