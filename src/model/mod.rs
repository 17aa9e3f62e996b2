//! The Llama forward pass over zero-copy weights, with an F16 KV cache.
//!
//! One step: x = embed(token); per layer: h = x + Wo·attn(rope(Wq·n(x)), rope(Wk·n(x)), Wv·n(x));
//! x = h + Wdown·(silu(Wgate·n(h)) * Wup·n(h)); logits = Wout·n(x). Prefill runs the prompt as
//! a batch through `matmul`; decode runs one token through `matvec`.

mod buf;
pub mod config;
mod copies;
pub mod profile;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use half::f16;

pub use config::LlamaConfig;
pub use copies::{
    default_dir as default_cache_dir, list as list_cache, CacheFile, CopyCache,
    DEFAULT_MIN_BYTES as CACHE_MIN_BYTES,
};
use copies::{PackedCopy, Store, Want};
use std::sync::Arc;

use ferrite_kernels::attention::KvRows;
use ferrite_kernels::pool::SharedMut;
use ferrite_kernels::repack::{self, Layout};
use ferrite_kernels::{matmul, matmul_multi_in, ActBuf, ActIn, GgmlType, Kernels, Matrix};
pub use profile::{Op, Profile, Tap};

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, TensorInfo};
use crate::ops;
use buf::Buf;

/// Most tokens run through one batched forward call.
pub const MAX_BATCH: usize = 512;

/// A weight matrix located in the file (a view is made on use).
#[derive(Clone, Debug)]
pub struct WeightRef {
    pub name: String,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    start: usize,
    len: usize,
    /// The rows rearranged for the kernel level (see `ferrite_kernels::repack`): set at load,
    /// or by the background thread making the copies (`pending` until then).
    packed: Arc<OnceLock<PackedCopy>>,
    /// A copy is on its way (made in the background): until it is there, the matrix is
    /// computed as its copy will be (`Matrix::as_copy`), so the results do not depend on when.
    pending: bool,
    /// The copy mapped from the cache file, used until `packed` holds the same bytes read
    /// into memory of our own (where the page cache holds the file in small pages).
    mapped: Option<PackedCopy>,
}

impl WeightRef {
    /// The copy to compute from: the one made or read into memory, else the one mapped from
    /// the cache file.
    fn copy(&self) -> Option<&PackedCopy> {
        self.packed.get().or(self.mapped.as_ref())
    }
}

pub struct Layer {
    pub attn_norm: Vec<f32>,
    pub wq: WeightRef,
    pub wk: WeightRef,
    pub wv: WeightRef,
    pub wo: WeightRef,
    pub ffn_norm: Vec<f32>,
    pub w_gate: WeightRef,
    pub w_up: WeightRef,
    pub w_down: WeightRef,
}

pub struct Model {
    pub file: GgufFile,
    pub config: LlamaConfig,
    pub token_embd: WeightRef,
    pub layers: Vec<Layer>,
    pub output_norm: Vec<f32>,
    /// `output.weight`, or `token_embd.weight` when the output is tied.
    pub output: WeightRef,
    /// base^(-2i/rope_dims) * freq_scale / freq_factor_i.
    pub inv_freq: Vec<f32>,
    pub kernels: &'static Kernels,
    /// Where the repacked copies came from, or the thread making them or saving them to the
    /// cache.
    copy_cache: std::sync::Mutex<(CopyCache, Option<std::thread::JoinHandle<CopyCache>>)>,
    /// Tells the thread making the copies in the background to stop.
    cancel: Arc<AtomicBool>,
    /// How long after the load began the copies made in the background were all there.
    copies_ready: Arc<OnceLock<Duration>>,
}

impl Drop for Model {
    /// A load that made the copies saves them to the cache in the background; the process
    /// waits for that to end (an abandoned temporary file would take gigabytes). Copies made
    /// in the background for nothing else are abandoned.
    fn drop(&mut self) {
        self.settle_copies();
    }
}

fn find<'a>(file: &'a GgufFile, name: &str) -> Result<&'a TensorInfo> {
    file.gguf.tensor(name).ok_or_else(|| Error::TensorNotFound { name: name.into() })
}

/// A 2-D weight, checked to be `cols` (input) x `rows` (output) as GGUF stores it.
fn weight(file: &GgufFile, name: &str, cols: usize, rows: usize) -> Result<WeightRef> {
    let t = find(file, name)?;
    if t.dims != [cols as u64, rows as u64] {
        return Err(Error::Invalid(format!(
            "tensor {name:?} has shape {:?}, expected [{cols}, {rows}]",
            t.dims
        )));
    }
    if ferrite_kernels::ActType::for_weight(t.ty).is_none() || !ferrite_kernels::can_dequantize(t.ty) {
        return Err(Error::Invalid(format!(
            "tensor {name:?} has type {}, which ferrite cannot compute with yet",
            t.ty
        )));
    }
    let start = (file.gguf.data_offset + t.offset) as usize;
    Ok(WeightRef {
        name: name.into(),
        ty: t.ty,
        rows,
        cols,
        start,
        len: t.size as usize,
        packed: Default::default(),
        pending: false,
        mapped: None,
    })
}

fn vector(file: &GgufFile, name: &str, n: usize) -> Result<Vec<f32>> {
    let t = find(file, name)?;
    if t.n_elements != n as u64 || !ferrite_kernels::can_dequantize(t.ty) {
        return Err(Error::Invalid(format!("tensor {name:?}: {} {:?}, expected {n} floats", t.ty, t.dims)));
    }
    let mut v = vec![0f32; n];
    ferrite_kernels::dequantize(t.ty, file.tensor_data(t), &mut v)?;
    Ok(v)
}

/// Whether `Model::load` makes the repacked copies (`set_repack`).
static REPACK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
/// Whether `Model::load` uses the cache of repacked copies (`set_copy_cache`).
static COPY_CACHE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Whether models loaded from now on get repacked copies of the matrices whose kernels gain
/// from an interleaved layout (the default), or run every matrix from the mapped file
/// (`--no-repack`, as the environment variable `FERRITE_NO_REPACK`): then prefill repacks 16
/// rows at a time as it goes (`matmul::FLY_MIN_ROWS`) and decode runs the row-layout kernels.
pub fn set_repack(on: bool) {
    REPACK.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether models loaded from now on keep their repacked copies in the cache on disk and map
/// them from there on later loads (the default; off with `--no-copy-cache`, as the
/// environment variable `FERRITE_NO_COPY_CACHE`).
pub fn set_copy_cache(on: bool) {
    COPY_CACHE.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// How `Model::load_opts` treats the matrices whose kernels gain from an interleaved layout.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Make (or map) repacked copies; `false`: every matrix from the mapped file.
    pub repack: bool,
    /// The directory of the copy cache (`None`: no cache), and the least bytes of copies
    /// worth caching.
    pub cache: Option<(std::path::PathBuf, usize)>,
    /// Copies found in the cache: read into memory of our own (`Some(true)`), mapped
    /// (`Some(false)`), or mapped unless the page cache holds them in small pages (`None`).
    pub copies_in_memory: Option<bool>,
    /// Whether copies not found in the cache are made in the background.
    pub background: Background,
}

/// When `Model::load_opts` makes the repacked copies it did not find in the cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Background {
    /// In the background where they come to `BACKGROUND_MIN_BYTES` or more (an 8B model's
    /// copies took 1.5-13 s to make, most of it the kernel zeroing fresh memory), before the
    /// load returns where they are smaller.
    #[default]
    Auto,
    /// Before the load returns.
    Off,
    /// Always in the background.
    On,
    /// Never: every matrix that would have a copy is computed as the copy would be, from
    /// the file's rows, as while the copies are on their way (for tests and measurements).
    Hold,
}

/// Least bytes of copies made in the background (`Background::Auto`): SmolLM2's 100 MB take
/// about 50 ms.
pub const BACKGROUND_MIN_BYTES: usize = 256 << 20;

impl LoadOptions {
    /// What `Model::load` does: `set_repack`, `set_copy_cache` and the environment
    /// (`FERRITE_NO_REPACK`, `FERRITE_NO_COPY_CACHE`, `FERRITE_CACHE_DIR`,
    /// `FERRITE_COPIES_IN_MEMORY=1|0`, `FERRITE_BACKGROUND_COPIES=1|0|hold`).
    pub fn from_env() -> LoadOptions {
        use std::sync::atomic::Ordering::Relaxed;
        let repack = REPACK.load(Relaxed) && std::env::var_os("FERRITE_NO_REPACK").is_none();
        let cache = (COPY_CACHE.load(Relaxed) && std::env::var_os("FERRITE_NO_COPY_CACHE").is_none())
            .then(copies::default_dir)
            .flatten()
            .map(|d| (d, copies::DEFAULT_MIN_BYTES));
        let copies_in_memory = match std::env::var("FERRITE_COPIES_IN_MEMORY").as_deref() {
            Ok("1") => Some(true),
            Ok("0") => Some(false),
            _ => None,
        };
        let background = match std::env::var("FERRITE_BACKGROUND_COPIES").as_deref() {
            Ok("1") => Background::On,
            Ok("0") => Background::Off,
            Ok("hold") => Background::Hold,
            _ => Background::Auto,
        };
        LoadOptions { repack, cache, copies_in_memory, background }
    }
}

impl Model {
    /// The model of a file, with repacked copies unless `set_repack(false)` or the
    /// environment variable `FERRITE_NO_REPACK` says otherwise, mapped from the copy cache
    /// where an earlier load left them (`LoadOptions::from_env`).
    pub fn load(file: GgufFile) -> Result<Model> {
        Model::load_opts(file, &LoadOptions::from_env())
    }

    /// The model of a file; `repack`: make the repacked copies (see `set_repack`), without
    /// the cache.
    pub fn load_with(file: GgufFile, repack: bool) -> Result<Model> {
        let opts = LoadOptions { repack, cache: None, copies_in_memory: None, background: Background::Off };
        Model::load_opts(file, &opts)
    }

    pub fn load_opts(file: GgufFile, opts: &LoadOptions) -> Result<Model> {
        let t_load = Instant::now();
        let c = LlamaConfig::from_metadata(&file.gguf)?;
        let (dim, q, kv, ffn) = (c.dim, c.q_dim(), c.kv_dim(), c.ffn_dim);
        let token_embd = weight(&file, "token_embd.weight", dim, c.vocab_size)?;
        let output = match file.gguf.tensor("output.weight") {
            Some(_) => weight(&file, "output.weight", dim, c.vocab_size)?,
            // (A slot of its own for the output's copy.)
            None => WeightRef { packed: Default::default(), ..token_embd.clone() },
        };
        let mut layers = Vec::with_capacity(c.n_layers);
        for l in 0..c.n_layers {
            let n = |s: &str| format!("blk.{l}.{s}.weight");
            layers.push(Layer {
                attn_norm: vector(&file, &n("attn_norm"), dim)?,
                wq: weight(&file, &n("attn_q"), dim, q)?,
                wk: weight(&file, &n("attn_k"), dim, kv)?,
                wv: weight(&file, &n("attn_v"), dim, kv)?,
                wo: weight(&file, &n("attn_output"), q, dim)?,
                ffn_norm: vector(&file, &n("ffn_norm"), dim)?,
                w_gate: weight(&file, &n("ffn_gate"), dim, ffn)?,
                w_up: weight(&file, &n("ffn_up"), dim, ffn)?,
                w_down: weight(&file, &n("ffn_down"), ffn, dim)?,
            });
        }
        let output_norm = vector(&file, "output_norm.weight", dim)?;
        let half = c.rope_dims / 2;
        let factors = match file.gguf.tensor("rope_freqs.weight") {
            Some(_) => vector(&file, "rope_freqs.weight", half)?,
            None => vec![1.0; half],
        };
        let inv_freq = (0..half)
            .map(|i| {
                let f = (c.rope_base as f64).powf(-2.0 * i as f64 / c.rope_dims as f64);
                (f * c.rope_freq_scale as f64 / factors[i] as f64) as f32
            })
            .collect();
        let mut m = Model {
            file,
            config: c,
            token_embd,
            layers,
            output_norm,
            output,
            inv_freq,
            kernels: Kernels::best(),
            copy_cache: Default::default(),
            cancel: Default::default(),
            copies_ready: Default::default(),
        };
        if opts.repack {
            let cache = opts.cache.as_ref().map(|(d, min)| (d.as_path(), *min));
            m.repack(cache, opts.copies_in_memory, opts.background, t_load);
        }
        Ok(m)
    }

    /// Rearrange the matrices whose kernels gain from an interleaved layout (Q4_0 at the x86
    /// levels), in parallel; or map the copies from the cache (`cache`: its directory and the
    /// least bytes worth caching), and save them there when made. The copies replace the
    /// file's bytes for compute, and the file's pages of those matrices are released, so
    /// resident memory stays about the file size. Copies not found in the cache are made by a
    /// thread of their own as `background` says (`make_copies`); copies found there that are
    /// to be read into memory, likewise (`read_copies`).
    fn repack(
        &mut self,
        cache: Option<(&std::path::Path, usize)>,
        in_memory: Option<bool>,
        background: Background,
        t_load: Instant,
    ) {
        use rayon::prelude::*;
        let k = self.kernels;
        let ws: Vec<&mut WeightRef> = self
            .layers
            .iter_mut()
            .flat_map(|l| {
                [&mut l.wq, &mut l.wk, &mut l.wv, &mut l.wo, &mut l.w_gate, &mut l.w_up, &mut l.w_down]
            })
            .chain(std::iter::once(&mut self.output))
            .filter(|w| k.preferred_layout(w.ty, w.rows, w.cols).is_some())
            .filter(|w| repack::repacked_len(w.ty, w.rows, w.cols).is_some())
            .collect();
        // The token embedding is read by row: when the output shares it, keep its pages.
        let embd = (self.token_embd.start, self.token_embd.len);
        let wants: Vec<Want> = ws
            .iter()
            .map(|w| Want {
                name: w.name.clone(),
                ty: w.ty,
                rows: w.rows,
                cols: w.cols,
                layout: Layout::for_type(w.ty).expect("repackable type"),
                src: w.start..w.start + w.len,
                len: repack::repacked_len(w.ty, w.rows, w.cols).unwrap_or(0),
                keep_pages: (w.start, w.len) == embd,
            })
            .collect();
        let file = &self.file;
        let total: usize = wants.iter().map(|w| w.len).sum();
        let key = cache
            .filter(|&(_, min)| total >= min && total > 0)
            .and_then(|(dir, _)| copies::Key::new(dir, file, &wants));
        if let Some((key, copies)) = key.as_ref().and_then(|key| Some((key, key.read(file, &wants)?))) {
            let mut jobs = Vec::with_capacity(copies.len());
            for ((w, c), want) in ws.into_iter().zip(copies).zip(&wants) {
                // The check read the first rows of each matrix from the file.
                want.release(
                    &file.map(),
                    want.src.start..want.src.start + want.src.len() / want.rows * repack::GROUP,
                );
                jobs.push((w.packed.clone(), c.clone()));
                w.mapped = Some(c);
            }
            // Where the page cache holds the cache file in small pages, the copies are read
            // into memory of our own by a thread of their own, while the model runs from the
            // map (the same bytes, so the same results). Finding out means faulting the whole
            // map in (`in_small_pages`), which reads it from disk if the page cache does not
            // hold it: on that thread too.
            let path = key.path.clone();
            if in_memory == Some(false) {
                self.set_copy_cache(CopyCache::Read(path), None);
                return;
            }
            let (cancel, ready) = (self.cancel.clone(), self.copies_ready.clone());
            let (p, t) = (path.clone(), t_load);
            let read = move || read_copies(jobs, in_memory, p, &cancel, &ready, t);
            match std::thread::Builder::new().name("ferrite-copies".into()).spawn(read) {
                Ok(h) => self.set_copy_cache(CopyCache::Reading(path), Some(h)),
                Err(_) => self.set_copy_cache(CopyCache::Read(path), None),
            }
            return;
        }
        let in_background = !wants.is_empty()
            && match background {
                Background::Auto => total >= BACKGROUND_MIN_BYTES,
                Background::Off => false,
                Background::On | Background::Hold => true,
            };
        if in_background {
            let jobs: Vec<_> = ws
                .into_iter()
                .zip(wants)
                .map(|(w, want)| {
                    w.pending = true;
                    (w.packed.clone(), want)
                })
                .collect();
            if background == Background::Hold {
                return;
            }
            let (map, cancel, ready) = (file.map(), self.cancel.clone(), self.copies_ready.clone());
            let saving = key.as_ref().map(|k| k.path.clone());
            let make = move || make_copies(map, jobs, key, &cancel, &ready, t_load);
            match std::thread::Builder::new().name("ferrite-copies".into()).spawn(make) {
                Ok(h) => self.set_copy_cache(CopyCache::Making(saving), Some(h)),
                // Without the thread the copies stay on their way: every matrix is computed
                // as its copy would be, the same results, slower.
                Err(e) => self.set_copy_cache(CopyCache::Failed(e.to_string()), None),
            }
            return;
        }
        let mut outs: Vec<Option<Store>> = wants.iter().map(|w| Store::zeroed(w.len)).collect();
        // Every matrix in pieces (`Want::piece_rows`), all across the pool.
        let map = file.map();
        let mut pieces = Vec::new();
        for (m, (want, out)) in wants.iter().zip(outs.iter_mut()).enumerate() {
            let Some(Store::Anon(out)) = out.as_mut() else { continue };
            let (step, packed_row) = (want.piece_rows(), want.len / want.rows);
            let mut dst: &mut [u8] = &mut out[..want.len];
            for r0 in (0..want.rows).step_by(step) {
                let r1 = (r0 + step).min(want.rows);
                let (d, rest) = std::mem::take(&mut dst).split_at_mut((r1 - r0) * packed_row);
                dst = rest;
                pieces.push((m, r0..r1, d));
            }
        }
        let failed: Vec<usize> = pieces
            .into_par_iter()
            .filter_map(|(m, rows, dst)| (!wants[m].repack_piece(&map, rows, dst)).then_some(m))
            .collect();
        let mut made = Vec::with_capacity(ws.len());
        let mut complete = true;
        for (m, ((w, out), want)) in ws.into_iter().zip(outs).zip(&wants).enumerate() {
            match (out, failed.contains(&m)) {
                (Some(out), false) => {
                    let c = PackedCopy { layout: want.layout, store: Arc::new(out), range: 0..want.len };
                    let _ = w.packed.set(c.clone());
                    made.push(c);
                }
                _ => complete = false,
            }
        }
        // Saved by a thread of its own while the model runs: writing gigabytes is mostly
        // waiting for the disk, and it does not change what the model computes (the copies
        // in memory are used either way).
        if let (Some(key), true) = (key, complete) {
            let path = key.path.clone();
            let save = move || key.save(&made);
            match std::thread::Builder::new().name("ferrite-copy-cache".into()).spawn(save) {
                Ok(h) => self.set_copy_cache(CopyCache::Writing(path), Some(h)),
                Err(e) => self.set_copy_cache(CopyCache::Failed(e.to_string()), None),
            }
        }
    }

    fn set_copy_cache(&self, c: CopyCache, writer: Option<std::thread::JoinHandle<CopyCache>>) {
        *self.copy_cache.lock().unwrap_or_else(|e| e.into_inner()) = (c, writer);
    }

    /// Where the repacked copies came from (or are being saved to).
    pub fn copy_cache(&self) -> CopyCache {
        self.copy_cache.lock().unwrap_or_else(|e| e.into_inner()).0.clone()
    }

    /// Wait until the copies are made and saved to the cache, if they are being made in the
    /// background or saved; then as `copy_cache`.
    pub fn wait_copy_cache(&self) -> CopyCache {
        let mut g = self.copy_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = g.1.take() {
            g.0 = h.join().unwrap_or_else(|_| CopyCache::Failed("the copying thread panicked".into()));
        }
        g.0.clone()
    }

    /// As `wait_copy_cache`, but copies made in the background that are not to be saved to
    /// the cache are abandoned rather than finished (what the model computes is the same
    /// without them). For the end of a run.
    pub fn settle_copies(&self) -> CopyCache {
        if matches!(self.copy_cache(), CopyCache::Making(None) | CopyCache::Reading(_)) {
            self.cancel.store(true, Relaxed);
        }
        self.wait_copy_cache()
    }

    /// How long after the load began the copies made in the background were all there
    /// (`None`: not made in the background, or not all there yet).
    pub fn copies_ready_after(&self) -> Option<Duration> {
        self.copies_ready.get().copied()
    }

    /// Bytes of weights held in repacked copies.
    pub fn repacked_bytes(&self) -> usize {
        let mut n = 0;
        for l in &self.layers {
            for w in [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down] {
                n += w.copy().map_or(0, |p| p.range.len());
            }
        }
        n + self.output.copy().map_or(0, |p| p.range.len())
    }

    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Model> {
        Model::load(GgufFile::open(path)?)
    }

    /// Map the token embedding's pages now (`MADV_POPULATE_READ`), reading them from disk
    /// where the page cache does not hold them. A prompt looks up its tokens' rows in the
    /// mapped file as it goes, a page or two each; `bench`'s warm-up calls this so that its
    /// timed runs of random tokens do not each read new pages of the file (llama.cpp maps
    /// the whole file with `MAP_POPULATE` at load).
    pub fn populate_embedding(&self) {
        self.file.populate(self.token_embd.start, self.token_embd.len);
    }

    /// The matrix for compute: the repacked copy where there is one; the file's rows
    /// computed as the copy would be where it is on its way.
    pub fn matrix<'a>(&'a self, w: &'a WeightRef) -> Matrix<'a> {
        match w.copy() {
            Some(c) => Matrix {
                ty: w.ty,
                rows: w.rows,
                cols: w.cols,
                layout: c.layout,
                data: c.bytes(),
                as_copy: false,
            },
            None if w.pending => self.file_matrix(w).as_copy(self.kernels),
            None => self.file_matrix(w),
        }
    }

    /// The matrix as stored in the file, row after row (for row lookups and inspection).
    pub fn file_matrix(&self, w: &WeightRef) -> Matrix<'_> {
        let data = &self.file.bytes()[w.start..w.start + w.len];
        Matrix { ty: w.ty, rows: w.rows, cols: w.cols, layout: Layout::Rows, data, as_copy: false }
    }

    /// Bytes of weights one decode step reads (every matrix, one embedding row, the norms).
    pub fn weight_bytes_per_token(&self) -> u64 {
        let mut n = 0u64;
        for l in &self.layers {
            for w in [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down] {
                n += w.len as u64;
            }
        }
        n + self.output.len as u64 + (self.token_embd.len / self.token_embd.rows) as u64
    }
}

/// The background thread of a load that mapped the copies from the cache file: where they
/// are to be read into memory (`Store::wants_memory`), each copy read and handed to the model
/// in turn, and its pages of the map released.
fn read_copies(
    jobs: Vec<(Arc<OnceLock<PackedCopy>>, PackedCopy)>,
    in_memory: Option<bool>,
    path: std::path::PathBuf,
    cancel: &AtomicBool,
    ready: &OnceLock<Duration>,
    t_load: Instant,
) -> CopyCache {
    let Some(store) = jobs.first().map(|(_, c)| c.store.clone()) else { return CopyCache::Read(path) };
    if !store.wants_memory(in_memory) {
        return CopyCache::Read(path);
    }
    // (Finding out faulted the whole map in.)
    store.release(0..store.len());
    for (slot, c) in &jobs {
        if cancel.load(Relaxed) {
            return CopyCache::Read(path);
        }
        let Some(m) = c.in_memory() else { return CopyCache::Read(path) };
        let _ = slot.set(m);
        store.release(c.range.clone());
    }
    // Again: a forward pass that took a mapped copy just before its replacement was handed
    // over read some of it back.
    store.release(0..store.len());
    let _ = ready.set(t_load.elapsed());
    CopyCache::ReadIntoMemory(path)
}

/// The background thread of `Model::repack`: each matrix's copy made piece by piece
/// (`Want::repack_piece`, the file's pages released as it grows), then handed to the model,
/// whose matrix is computed from it from then on (the same results: `Matrix::as_copy`); when
/// all are made, saved to the cache (`key`). Stops early, saving
/// nothing, when `cancel` is set.
fn make_copies(
    map: crate::gguf::FileMap,
    jobs: Vec<(Arc<OnceLock<PackedCopy>>, Want)>,
    key: Option<copies::Key>,
    cancel: &AtomicBool,
    ready: &OnceLock<Duration>,
    t_load: Instant,
) -> CopyCache {
    let mut made = Vec::with_capacity(jobs.len());
    for (slot, want) in &jobs {
        let Some(Store::Anon(mut out)) = Store::zeroed(want.len) else {
            return CopyCache::Failed(format!("no memory for the copy of {}", want.name));
        };
        let (step, packed_row) = (want.piece_rows(), want.len / want.rows.max(1));
        for r0 in (0..want.rows).step_by(step) {
            if cancel.load(Relaxed) {
                return CopyCache::Unused;
            }
            let r1 = (r0 + step).min(want.rows);
            // (The pages go as the copy grows, so that resident memory does not hold a big
            // matrix, an 8B output's 0.3 GB, twice.)
            if !want.repack_piece(&map, r0..r1, &mut out[r0 * packed_row..r1 * packed_row]) {
                // (Cannot happen: the type and shape were found repackable.) The matrix stays
                // computed from the file's rows, as its copy would be.
                return CopyCache::Failed(format!("could not repack {}", want.name));
            }
        }
        let c = PackedCopy { layout: want.layout, store: Arc::new(Store::Anon(out)), range: 0..want.len };
        let _ = slot.set(c.clone());
        made.push(c);
    }
    // Again, every matrix: a forward pass that took a matrix's rows just before its copy was
    // handed over read some back (and they stay mapped, resident, until released).
    for (_, want) in &jobs {
        want.release(&map, want.src.clone());
    }
    let _ = ready.set(t_load.elapsed());
    key.map_or(CopyCache::Unused, |key| key.save(&made))
}

/// A fused residual + norm's time, shared between the two ops by their flops (1 and 4 per
/// value).
fn add_fused(p: &mut Profile, t: std::time::Duration, norm: Op, values: usize) {
    p.add(Op::Residual, t / 5, 0, values as u64);
    p.add(norm, t - t / 5, 0, 4 * values as u64);
}

/// Keys and values of every layer at every position so far, as f16 (llama.cpp's default).
/// Layout: [layer][position][kv_dim].
pub struct KvCache {
    pub n_ctx: usize,
    kv_dim: usize,
    k: Vec<f16>,
    v: Vec<f16>,
    /// Positions filled.
    pub len: usize,
}

impl KvCache {
    pub fn new(c: &LlamaConfig, n_ctx: usize) -> KvCache {
        let n = c.n_layers * n_ctx * c.kv_dim();
        // Small pages: a short prompt touches the start of every layer's rows, and a huge
        // page there would be 2 MiB to zero per layer before the first token (in this VM,
        // where fresh memory is slow, 1B's first 2-token prompt took 245 ms instead of 40).
        KvCache { n_ctx, kv_dim: c.kv_dim(), k: vec![f16::ZERO; n], v: vec![f16::ZERO; n], len: 0 }
    }

    /// Bytes the cache holds.
    pub fn bytes(&self) -> usize {
        (self.k.len() + self.v.len()) * 2
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    fn at(&self, layer: usize, pos: usize) -> usize {
        (layer * self.n_ctx + pos) * self.kv_dim
    }
}

/// Scratch buffers for a batch of up to `MAX_BATCH` tokens, allocated once.
pub struct State {
    batch: usize,
    x: Buf,
    xb: Buf,
    q: Buf,
    k: Buf,
    v: Buf,
    att: Buf,
    hb: Buf,
    hb2: Buf,
    row: Vec<f32>,
    /// RoPE's (sin, cos) per position of the batch and rotated pair, filled once per batch.
    rope_cs: Vec<(f32, f32)>,
    pub logits: Vec<f32>,
    act: ActBuf,
    /// Per-op statistics of batched (prefill) and single-token (decode) steps, when set.
    pub prof_prefill: Option<Box<Profile>>,
    pub prof_decode: Option<Box<Profile>>,
    /// Activation dumps, when set (taken for the last row of each batch).
    pub tap: Option<Tap>,
}

impl State {
    pub fn new(c: &LlamaConfig, n_ctx: usize) -> State {
        let b = MAX_BATCH.min(n_ctx).max(1);
        State {
            batch: b,
            x: Buf::zeroed(b * c.dim),
            xb: Buf::zeroed(b * c.dim),
            q: Buf::zeroed(b * c.q_dim()),
            k: Buf::zeroed(b * c.kv_dim()),
            v: Buf::zeroed(b * c.kv_dim()),
            att: Buf::zeroed(b * c.q_dim()),
            hb: Buf::zeroed(b * c.ffn_dim),
            hb2: Buf::zeroed(b * c.ffn_dim),
            row: vec![0.0; c.dim],
            rope_cs: vec![(0.0, 0.0); b * (c.rope_dims / 2).min(c.head_dim / 2)],
            logits: vec![0.0; c.vocab_size],
            act: ActBuf::new(),
            prof_prefill: None,
            prof_decode: None,
            tap: None,
        }
    }
}

/// `Model::prefill_batch` for a kernel level and the widest input (`width` values a token).
fn prefill_batch(level: ferrite_kernels::Level, width: usize) -> usize {
    if level != ferrite_kernels::Level::Amx {
        return MAX_BATCH;
    }
    let fit = (2 << 20) / width.max(1);
    // A power of two from 64 to MAX_BATCH.
    let mut b = MAX_BATCH;
    while b > 64 && b > fit {
        b /= 2;
    }
    b
}

/// Matrices sharing one input: one parallel section when their activation formats agree
/// (the usual case), one call each otherwise (e.g. a Q4_0 file with a Q6_K attn_v), where
/// rows still to be made (`ActIn::Prep`) are made first.
fn matmul_shared(
    k: &Kernels,
    ws: &[Matrix],
    x: ActIn,
    n: usize,
    ys: &mut [&mut [f32]],
    act: &mut ActBuf,
) -> Result<()> {
    let same = ws.iter().all(|w| w.act_type_for(k, n) == ws[0].act_type_for(k, n));
    if same {
        matmul_multi_in(k, ws, x, n, ys, act)?;
    } else {
        let x = x.ready(ws[0].cols);
        for (w, y) in ws.iter().zip(ys.iter_mut()) {
            matmul(k, w, x, n, y, act)?;
        }
    }
    Ok(())
}

impl Model {
    /// Run `tokens` at positions `cache.len..`; afterwards `state.logits` holds the logits
    /// of the last token (and, if `all_logits` is given, every token's logits are appended
    /// to it, `vocab` floats per token).
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        state: &mut State,
        mut all_logits: Option<&mut Vec<f32>>,
    ) -> Result<()> {
        if cache.len + tokens.len() > cache.n_ctx {
            return Err(Error::Invalid(format!(
                "context full: {} + {} tokens exceed the context of {}",
                cache.len,
                tokens.len(),
                cache.n_ctx
            )));
        }
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= self.config.vocab_size) {
            return Err(Error::Invalid(format!(
                "token id {t} is outside the vocabulary ({})",
                self.config.vocab_size
            )));
        }
        for chunk in tokens.chunks(state.batch.min(self.prefill_batch())) {
            self.forward_batch(chunk, cache, state, all_logits.as_deref_mut())?;
        }
        Ok(())
    }

    /// Most tokens per prefill batch. At the amx level every 16-row weight pair reads the
    /// whole batch's activation tiles, so the batch is cut to keep the widest input's tiles
    /// (ffn_dim bytes a token) within about 2 MiB, a core's L2 here: beyond it each pair
    /// streams them from L3 again (pp512, 512 against 256 or 128 tokens a batch: 1B Q4_K_M
    /// 477-494 against 563-594 t/s, 8B Q4_K_M 70 against 85-89; SmolLM2, whose tiles fit,
    /// stays at 512: 9% slower at 256). Other levels read the activations a few rows at a
    /// time and keep `MAX_BATCH` (8B Q4_0 at avx512 was no faster at 128).
    fn prefill_batch(&self) -> usize {
        prefill_batch(self.kernels.level, self.config.ffn_dim.max(self.config.dim))
    }

    fn forward_batch(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        s: &mut State,
        all_logits: Option<&mut Vec<f32>>,
    ) -> Result<()> {
        let c = &self.config;
        let k = self.kernels;
        let n = tokens.len();
        let (dim, qd, kvd, ffn, hd) = (c.dim, c.q_dim(), c.kv_dim(), c.ffn_dim, c.head_dim);
        let pos0 = cache.len;
        let wall = Instant::now();
        // Bookkeeping only when asked: both are None in normal runs.
        let mut prof = if n > 1 { s.prof_prefill.take() } else { s.prof_decode.take() };
        let mut tap = s.tap.take();
        let nn = n as u64;
        macro_rules! timed {
            ($op:expr, $bytes:expr, $flops:expr, $body:expr) => {{
                let t0 = profile::start(&prof);
                let r = $body;
                if let (Some(p), Some(t0)) = (prof.as_mut(), t0) {
                    p.add($op, t0.elapsed(), $bytes, $flops);
                }
                r
            }};
        }
        // The last row of a batch buffer, for the activation taps.
        let last = |v: &[f32], w: usize| v[(n - 1) * w..n * w].to_vec();
        let mm = |w: &WeightRef| (w.len as u64, 2 * (w.rows * w.cols) as u64 * nn);

        // RoPE's angles for the batch's positions, shared by every layer.
        let half = self.inv_freq.len().min(hd / 2);
        for (i, cs) in s.rope_cs.chunks_exact_mut(half.max(1)).take(n).enumerate() {
            ops::rope_table(pos0 + i, &self.inv_freq[..half], cs);
        }

        // A layer's FFN residual add is left to the next layer's norm pass (`attn_in`),
        // unless activations are being tapped (they are saved between the two).
        let defer_residual = tap.is_none();
        // Norms and SwiGLU made inside the next matmul's quantization (`ActIn::Prep`),
        // unless activations are tapped (saved between the two) or ops timed (each its own).
        let fuse = tap.is_none() && prof.is_none();
        // A norm's rows made in a section of their own (not fused), timed as the norm (and,
        // with the residual add before it, shared between the two ops).
        macro_rules! made_norm {
            ($x:expr, $prep:expr, $op:expr, $residual:expr) => {{
                let t0 = profile::start(&prof);
                let x = ActIn::Prep($x, $prep, 0).ready(dim);
                if let (Some(p), Some(t0)) = (prof.as_mut(), t0) {
                    match $residual {
                        true => add_fused(p, t0.elapsed(), $op, n * dim),
                        false => p.add($op, t0.elapsed(), 0, 4 * (n * dim) as u64),
                    }
                }
                x
            }};
        }
        let embd = self.file_matrix(&self.token_embd);
        timed!(Op::Embed, (embd.row_bytes() * n) as u64, 0, {
            // A row per token, in parallel: each reads a row of the file that is seldom in
            // cache (1B pp64: 1.7% of the prompt when one thread did them all).
            let failed = std::sync::Mutex::new(None);
            ops::par_chunks(&mut s.x[..n * dim], dim, &|i, x| {
                if let Err(e) = ferrite_kernels::dequantize(embd.ty, embd.row(tokens[i] as usize), x) {
                    *failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                }
            });
            if let Some(e) = failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
                return Err(e.into());
            }
        });

        for (l, layer) in self.layers.iter().enumerate() {
            let tapping = tap.as_ref().is_some_and(|t| t.wants(l));
            if tapping {
                let t = tap.as_mut().expect("tapping");
                t.save(Some(l), "attn_norm.in", &last(&s.x, dim))?;
            }
            // The norm's rows (with the previous layer's FFN residual added first, where it
            // was left to this pass), made where the Q/K/V input is quantized when fusing.
            let (xp, residual) = (SharedMut(s.x.as_mut_ptr()), l > 0 && defer_residual);
            let attn_in = |i: usize, xb: &mut [f32]| {
                // SAFETY: row i of `s.x` (inside it: n x dim) is touched only by the task
                // making row i, and `s.x` outlives the matmul.
                let x = unsafe { std::slice::from_raw_parts_mut(xp.ptr().add(i * dim), dim) };
                if residual {
                    ops::add_in_place(x, xb);
                }
                ops::rmsnorm(xb, x, &layer.attn_norm, c.rms_eps);
            };
            let qkv = [self.matrix(&layer.wq), self.matrix(&layer.wk), self.matrix(&layer.wv)];
            let outs: &mut [&mut [f32]] = &mut [&mut s.q[..n * qd], &mut s.k[..n * kvd], &mut s.v[..n * kvd]];
            if fuse {
                matmul_shared(k, &qkv, ActIn::Prep(&mut s.xb[..n * dim], &attn_in, 0), n, outs, &mut s.act)?;
            } else {
                let xb = made_norm!(&mut s.xb[..n * dim], &attn_in, Op::AttnNorm, residual);
                let t0 = profile::start(&prof);
                matmul_shared(k, &qkv, ActIn::Ready(xb), n, outs, &mut s.act)?;
                if let (Some(p), Some(t0)) = (prof.as_mut(), t0) {
                    let (q, kk, v) = (mm(&layer.wq), mm(&layer.wk), mm(&layer.wv));
                    p.add_split(
                        &[(Op::AttnQ, q.0, q.1), (Op::AttnK, kk.0, kk.1), (Op::AttnV, v.0, v.1)],
                        t0.elapsed(),
                    );
                }
            }
            if tapping {
                let t = tap.as_mut().expect("tapping");
                t.save(Some(l), "attn_norm.out", &last(&s.xb, dim))?;
                t.save(Some(l), "attn_q.out", &last(&s.q, qd))?;
                t.save(Some(l), "attn_k.out", &last(&s.k, kvd))?;
                t.save(Some(l), "attn_v.out", &last(&s.v, kvd))?;
            }
            // RoPE on the token's query and key, and its key and value into the f16 cache,
            // token by token in one parallel section (they were three: 2.3% of a small
            // model's prompt, the cache store on one thread while the other waited).
            let t0 = profile::start(&prof);
            {
                assert!(pos0 + n <= cache.n_ctx, "positions past the cache");
                let at0 = cache.at(l, pos0);
                let (kc, vc) =
                    (SharedMut(cache.k[at0..].as_mut_ptr()), SharedMut(cache.v[at0..].as_mut_ptr()));
                let kp = SharedMut(s.k.as_mut_ptr());
                assert!(s.k.len() >= n * kvd && s.v.len() >= n * kvd);
                let (cs, v) = (&s.rope_cs, &s.v);
                ops::par_chunks(&mut s.q[..n * qd], qd, &|i, q| {
                    let cs = &cs[i * half..(i + 1) * half];
                    ops::rope_apply(q, hd, cs);
                    // SAFETY: row i of the batch's keys (inside s.k, asserted) and rows at0 +
                    // i x kvd .. + kvd of the caches (inside them: positions pos0..pos0 + n of
                    // layer l, asserted) belong to token i alone, and all outlive this
                    // parallel section.
                    let (k, kd, vd) = unsafe {
                        (
                            std::slice::from_raw_parts_mut(kp.ptr().add(i * kvd), kvd),
                            std::slice::from_raw_parts_mut(kc.ptr().add(i * kvd), kvd),
                            std::slice::from_raw_parts_mut(vc.ptr().add(i * kvd), kvd),
                        )
                    };
                    ops::rope_apply(k, hd, cs);
                    half::slice::HalfFloatSliceExt::convert_from_f32_slice(kd, k);
                    half::slice::HalfFloatSliceExt::convert_from_f32_slice(vd, &v[i * kvd..(i + 1) * kvd]);
                });
            }
            if let (Some(p), Some(t0)) = (prof.as_mut(), t0) {
                // Shared by values touched: RoPE's q and k, the store's k and v.
                let (t, r) = (t0.elapsed(), (qd + kvd) as f64 / (qd + 3 * kvd) as f64);
                p.add(Op::Rope, t.mul_f64(r), 0, 6 * (n * (qd + kvd) / 2) as u64);
                p.add(Op::KvStore, t.mul_f64(1.0 - r), 0, 0);
            }
            // Attention reads every cached position: 4 flops per head dimension (score and
            // weighted sum) per position.
            let ctx_sum: u64 = (0..n).map(|i| (pos0 + i + 1) as u64).sum();
            let kv_bytes = 2 * 2 * kvd as u64 * ctx_sum;
            timed!(
                Op::Attention,
                kv_bytes,
                4 * (c.n_heads * hd) as u64 * ctx_sum,
                self.attention(l, n, pos0, cache, s)
            );
            if tapping {
                let t = tap.as_mut().expect("tapping");
                t.save(Some(l), "rope_q.out", &last(&s.q, qd))?;
                t.save(Some(l), "rope_k.out", &last(&s.k, kvd))?;
                t.save(Some(l), "attention.out", &last(&s.att, qd))?;
            }
            let (b, f) = mm(&layer.wo);
            timed!(
                Op::AttnOutput,
                b,
                f,
                matmul(k, &self.matrix(&layer.wo), &s.att[..n * qd], n, &mut s.xb[..n * dim], &mut s.act)?
            );
            if tapping {
                tap.as_mut().expect("tapping").save(Some(l), "attn_output.out", &last(&s.xb, dim))?;
            }
            // The attention's residual and the FFN's norm, in one pass over each row, made
            // where the gate/up input is quantized when fusing.
            let xp = SharedMut(s.x.as_mut_ptr());
            let ffn_in = |i: usize, xb: &mut [f32]| {
                // SAFETY: as for the attention's norm above.
                let x = unsafe { std::slice::from_raw_parts_mut(xp.ptr().add(i * dim), dim) };
                ops::add_in_place(x, xb);
                ops::rmsnorm(xb, x, &layer.ffn_norm, c.rms_eps);
            };
            let gate_up = [self.matrix(&layer.w_gate), self.matrix(&layer.w_up)];
            let outs: &mut [&mut [f32]] = &mut [&mut s.hb[..n * ffn], &mut s.hb2[..n * ffn]];
            if fuse {
                matmul_shared(
                    k,
                    &gate_up,
                    ActIn::Prep(&mut s.xb[..n * dim], &ffn_in, 0),
                    n,
                    outs,
                    &mut s.act,
                )?;
            } else {
                let xb = made_norm!(&mut s.xb[..n * dim], &ffn_in, Op::FfnNorm, true);
                let t0 = profile::start(&prof);
                matmul_shared(k, &gate_up, ActIn::Ready(xb), n, outs, &mut s.act)?;
                if let (Some(p), Some(t0)) = (prof.as_mut(), t0) {
                    let (g, u) = (mm(&layer.w_gate), mm(&layer.w_up));
                    p.add_split(&[(Op::FfnGate, g.0, g.1), (Op::FfnUp, u.0, u.1)], t0.elapsed());
                }
            }
            if tapping {
                let t = tap.as_mut().expect("tapping");
                t.save(Some(l), "ffn_inp", &last(&s.x, dim))?;
                t.save(Some(l), "ffn_norm.out", &last(&s.xb, dim))?;
                t.save(Some(l), "ffn_gate.out", &last(&s.hb, ffn))?;
                t.save(Some(l), "ffn_up.out", &last(&s.hb2, ffn))?;
            }
            // SwiGLU, made where the down projection's input is quantized when fusing.
            let down = self.matrix(&layer.w_down);
            let up = &s.hb2;
            let swiglu = |i: usize, g: &mut [f32]| ops::swiglu(g, &up[i * ffn..(i + 1) * ffn]);
            if fuse {
                let outs: &mut [&mut [f32]] = &mut [&mut s.xb[..n * dim]];
                matmul_shared(
                    k,
                    &[down],
                    ActIn::Prep(&mut s.hb[..n * ffn], &swiglu, 0),
                    n,
                    outs,
                    &mut s.act,
                )?;
            } else {
                let g = timed!(Op::SwiGlu, 0, 6 * (n * ffn) as u64, {
                    ActIn::Prep(&mut s.hb[..n * ffn], &swiglu, 0).ready(ffn)
                });
                if tapping {
                    tap.as_mut().expect("tapping").save(Some(l), "swiglu.out", &last(g, ffn))?;
                }
                let (b, f) = mm(&layer.w_down);
                timed!(Op::FfnDown, b, f, matmul(k, &down, g, n, &mut s.xb[..n * dim], &mut s.act)?);
            }
            // (Otherwise the next layer's norm pass adds it.)
            if !defer_residual || l + 1 == self.layers.len() {
                timed!(Op::Residual, 0, (n * dim) as u64, {
                    let xb = &s.xb;
                    ops::par_chunks(&mut s.x[..n * dim], dim, &|i, x| {
                        ops::add_in_place(x, &xb[i * dim..(i + 1) * dim])
                    })
                });
            }
            if tapping {
                let t = tap.as_mut().expect("tapping");
                t.save(Some(l), "ffn_down.out", &last(&s.xb, dim))?;
                t.save(Some(l), "layer.out", &last(&s.x, dim))?;
            }
        }
        cache.len = pos0 + n;

        let out = self.matrix(&self.output);
        let out_bytes = self.output.len as u64;
        let vocab = c.vocab_size as u64;
        match all_logits {
            Some(all) => {
                timed!(Op::OutputNorm, 0, 4 * (n * dim) as u64, {
                    for i in 0..n {
                        ops::rmsnorm(
                            &mut s.xb[i * dim..(i + 1) * dim],
                            &s.x[i * dim..(i + 1) * dim],
                            &self.output_norm,
                            c.rms_eps,
                        );
                    }
                });
                let start = all.len();
                all.resize(start + n * c.vocab_size, 0.0);
                timed!(
                    Op::Output,
                    out_bytes,
                    2 * vocab * dim as u64 * nn,
                    matmul(k, &out, &s.xb[..n * dim], n, &mut all[start..], &mut s.act)?
                );
                s.logits.copy_from_slice(&all[all.len() - c.vocab_size..]);
            }
            None => {
                let last_x = &s.x[(n - 1) * dim..n * dim];
                timed!(
                    Op::OutputNorm,
                    0,
                    4 * dim as u64,
                    ops::rmsnorm(&mut s.row, last_x, &self.output_norm, c.rms_eps)
                );
                timed!(
                    Op::Output,
                    out_bytes,
                    2 * vocab * dim as u64,
                    matmul(k, &out, &s.row, 1, &mut s.logits, &mut s.act)?
                );
            }
        }
        if let Some(t) = tap.as_mut() {
            t.save(None, "output_norm.out", &s.row)?;
            t.save(None, "logits", &s.logits)?;
        }
        if let Some(p) = prof.as_mut() {
            p.tokens += nn;
            p.steps += 1;
            p.wall += wall.elapsed();
        }
        if n > 1 {
            s.prof_prefill = prof;
        } else {
            s.prof_decode = prof;
        }
        s.tap = tap;
        Ok(())
    }

    /// Causal grouped-query attention for `n` new tokens at positions pos0.., reading keys
    /// and values of all positions up to each token from the cache. Heads run in parallel;
    /// head h reads KV head h / (n_heads / n_kv_heads).
    ///
    /// Numerics follow llama.cpp's CPU flash attention with an F16 cache (its default), so
    /// that greedy generations agree token for token. The softmax runs online (one pass,
    /// rescaling when a new maximum appears). For batches under 64 tokens (decode, short
    /// prompts) llama.cpp rounds the query to f16 and accumulates the weighted values in
    /// f16: `ferrite_kernels::attention::attend_f16` does the same roundings, with the scores
    /// summed in the order of llama.cpp's build for the same instruction set, so that on
    /// layers where the inputs agree the outputs agree to the bit. From 64 tokens on (its
    /// tiled path) everything after the cache stays f32, and ferrite runs
    /// `ferrite_kernels::attention::attend` (SIMD, scores in blocks).
    fn attention(&self, layer: usize, n: usize, pos0: usize, cache: &KvCache, s: &mut State) {
        let c = &self.config;
        let (hd, qd, kvd) = (c.head_dim, c.q_dim(), c.kv_dim());
        let group = c.n_heads / c.n_kv_heads;
        let scale = 1.0 / (hd as f32).sqrt();
        let n_ctx = cache.n_ctx;
        let base = cache.at(layer, 0);
        let (kc, vc) = (&cache.k[base..base + n_ctx * kvd], &cache.v[base..base + n_ctx * kvd]);
        let q = &s.q;
        let out = SharedMut(s.att.as_mut_ptr());
        let f16_path = n < 64;
        let kern = self.kernels;
        use ferrite_kernels::attention::{attend, attend_f16, attend_many, MANY_MAX_HD, MAX_MANY};
        if !f16_path && hd <= MANY_MAX_HD && group <= MAX_MANY {
            // Prompt batches: the heads of one KV head and a run of tokens per task, so each
            // block of cached keys and values is converted once for all of them (runs of 32
            // tokens: SmolLM2's pp512 attention took 22% less time than with 16).
            let qchunk = (MAX_MANY / group).min(32);
            let chunks = n.div_ceil(qchunk);
            ferrite_kernels::pool::global().run(c.n_kv_heads * chunks, &|task| {
                let (kvh, chunk) = (task / chunks, task % chunks);
                let keys = KvRows { data: kc, stride: kvd, offset: kvh * hd };
                let values = KvRows { data: vc, stride: kvd, offset: kvh * hd };
                let rows = chunk * qchunk..n.min((chunk + 1) * qchunk);
                let mut qs: [&[f32]; MAX_MANY] = [&[]; MAX_MANY];
                let mut lens = [0usize; MAX_MANY];
                let mut outs: [&mut [f32]; MAX_MANY] = std::array::from_fn(|_| &mut [][..]);
                let mut m = 0;
                for i in rows {
                    for h in kvh * group..(kvh + 1) * group {
                        qs[m] = &q[i * qd + h * hd..i * qd + (h + 1) * hd];
                        lens[m] = pos0 + i + 1;
                        // SAFETY: head h of token i owns att[i*qd + h*hd .. +hd]; each (i, h)
                        // is in one task only, and `s.att` outlives this parallel loop.
                        outs[m] =
                            unsafe { std::slice::from_raw_parts_mut(out.ptr().add(i * qd + h * hd), hd) };
                        m += 1;
                    }
                }
                attend_many(kern, &qs[..m], &lens[..m], keys, values, scale, &mut outs[..m]);
            });
            return;
        }
        // Tasks: a head and a run of up to QCHUNK queries (later ones cost more: causal).
        const QCHUNK: usize = 16;
        let chunks = n.div_ceil(QCHUNK);
        ferrite_kernels::pool::global().run(c.n_heads * chunks, &|task| {
            let (h, chunk) = (task / chunks, task % chunks);
            let kvh = h / group;
            let rows = chunk * QCHUNK..n.min((chunk + 1) * QCHUNK);
            let keys = KvRows { data: kc, stride: kvd, offset: kvh * hd };
            let values = KvRows { data: vc, stride: kvd, offset: kvh * hd };
            for i in rows {
                let qh = &q[i * qd + h * hd..i * qd + (h + 1) * hd];
                // SAFETY: head h of token i owns att[i*qd + h*hd .. +hd]; no other task
                // touches it, and `s.att` outlives this parallel loop.
                let o = unsafe { std::slice::from_raw_parts_mut(out.ptr().add(i * qd + h * hd), hd) };
                let len = pos0 + i + 1;
                if f16_path {
                    attend_f16(kern, qh, keys, values, len, scale, o);
                } else {
                    attend(kern, qh, keys, values, len, scale, o);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrite_kernels::Level;

    #[test]
    fn amx_prefill_batches_keep_the_widest_input_within_l2() {
        // SmolLM2 (FFN 1536), the 1B shape (8192), the 8B shape (14336), and a wider one.
        assert_eq!(prefill_batch(Level::Amx, 1536), 512);
        assert_eq!(prefill_batch(Level::Amx, 8192), 256);
        assert_eq!(prefill_batch(Level::Amx, 14336), 128);
        assert_eq!(prefill_batch(Level::Amx, 1 << 20), 64);
        for level in [Level::Scalar, Level::Avx2, Level::Avx512] {
            assert_eq!(prefill_batch(level, 14336), MAX_BATCH);
        }
    }
}
