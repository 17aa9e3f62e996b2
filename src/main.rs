//! The `ferrite` command line: parse arguments, call the library, print.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use ferrite::generate::{Session, Stop};
use ferrite::gguf::GgufFile;
use ferrite::inspect::{self, DumpFormat};
use ferrite::model::{KvCache, Model, State};
use ferrite::sampler::{Sampler, SamplerConfig};
use ferrite::tokenizer::{StreamDecoder, Tokenizer};
use std::time::Instant;

#[derive(Parser)]
#[command(name = "ferrite", version, about = "Run and inspect GGUF quantized Llama-family models on the CPU")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    F32le,
}

#[derive(Subcommand)]
enum Command {
    /// Describe a GGUF file: architecture, metadata, tensors, totals.
    Inspect {
        file: PathBuf,
        /// One JSON object on stdout instead of the text summary.
        #[arg(long)]
        json: bool,
    },
    /// Print a tensor's values as f32 (row-major, first dimension fastest).
    Dump {
        file: PathBuf,
        #[arg(long)]
        tensor: String,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Rows A:B (half-open; either end may be left out).
        #[arg(long)]
        rows: Option<String>,
    },
    /// Generate text from a prompt; the text streams to stdout, statistics go to stderr.
    Run {
        #[arg(short = 'm', long = "model")]
        model: PathBuf,
        #[arg(short = 'p', long = "prompt", conflicts_with = "file", required_unless_present = "file")]
        prompt: Option<String>,
        /// Read the prompt from a file.
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
        /// Tokens to generate (-1: until the end of generation or the context is full).
        #[arg(short = 'n', long = "n-predict", default_value_t = -1, allow_negative_numbers = true)]
        n_predict: i64,
        /// Context size in tokens (0: the model's training context).
        #[arg(short = 'c', long = "ctx-size", default_value_t = 4096)]
        ctx_size: usize,
        #[command(flatten)]
        runtime: Runtime,
        #[command(flatten)]
        sampling: Sampling,
        /// Keep generating past end-of-generation tokens.
        #[arg(long)]
        ignore_eos: bool,
        /// Treat special-token text in the prompt (like <|im_start|>) as plain text.
        #[arg(long)]
        no_parse_special: bool,
        /// Take the prompt as written: no escape processing (by default, as llama.cpp,
        /// \n \r \t \' \" \\ and \xHH in -p or -f become the characters they name).
        #[arg(long)]
        no_escape: bool,
        /// Process escapes: the default (llama.cpp's flag, so that its command lines work).
        #[arg(short = 'e', long = "escape", conflicts_with = "no_escape")]
        escape: bool,
        /// After generating, print a table of time, bytes and FLOPs per operation (stderr).
        #[arg(long)]
        profile: bool,
        /// Write the inputs and outputs of each step at the prompt's last position as .npy
        /// files (plus index.json) into this directory.
        #[arg(long, value_name = "DIR")]
        dump_activations: Option<PathBuf>,
        /// Layers to dump, e.g. 0,1,-1 (negative counts from the end).
        #[arg(long, default_value = "0,-1", allow_hyphen_values = true)]
        layers: String,
    },
    /// Measure prefill and decode speed (like llama-bench).
    Bench {
        #[arg(short = 'm', long = "model")]
        model: PathBuf,
        /// Prompt tokens for the prefill test (0: skip); a list such as 64,512 runs one
        /// test per length, as llama-bench does.
        #[arg(short = 'p', long = "n-prompt", default_value = "512", value_delimiter = ',')]
        n_prompt: Vec<usize>,
        /// Tokens for the decode test (0: skip); a list runs one test per length.
        #[arg(short = 'n', long = "n-gen", default_value = "128", value_delimiter = ',')]
        n_gen: Vec<usize>,
        #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
        reps: usize,
        #[command(flatten)]
        runtime: Runtime,
        #[arg(long)]
        json: bool,
        /// Keep per-op statistics while measuring (shows what the bookkeeping costs) and
        /// print them on stderr.
        #[arg(long)]
        profile: bool,
        /// After the runs, also measure the memory read bandwidth (1 GiB, best of 3): the
        /// decode roofline at that moment, in the output.
        #[arg(long)]
        roofline: bool,
    },
    /// List the cache of repacked copies (where it is, each file's size and model file, and
    /// whether that file is unchanged since), or remove it with --clear.
    Cache {
        /// Remove every cache file (whole or partial) from the cache directory.
        #[arg(long)]
        clear: bool,
    },
    /// Write a random-weight model of a real shape (for benchmarks).
    Synth {
        /// llama3-8b, llama3-1b, llama2-7b or tiny.
        #[arg(long)]
        shape: String,
        /// Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, Q4_K_M, Q5_K_M, F16 or F32.
        #[arg(long = "type")]
        ty: String,
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// Copy the tokenizer from this GGUF file (its vocabulary size must match the shape).
        #[arg(long)]
        vocab: Option<PathBuf>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Perplexity of a text file, as llama-perplexity computes it.
    Perplexity {
        #[arg(short = 'm', long = "model")]
        model: PathBuf,
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
        ctx_size: usize,
        /// Score only the first N chunks (-1: all), as llama-perplexity's --chunks.
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        chunks: i64,
        #[command(flatten)]
        runtime: Runtime,
        #[arg(long)]
        json: bool,
    },
    /// Requantize a model, choosing each tensor's type as llama-quantize does.
    Quantize {
        input: PathBuf,
        output: PathBuf,
        /// Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K, F16, BF16, F32.
        #[arg(value_name = "TYPE")]
        ty: String,
    },
    /// Walk through one decode token: shapes, bytes, FLOPs, and this machine's limits.
    Explain {
        #[arg(short = 'm', long = "model")]
        model: PathBuf,
        /// Position of the token (how many tokens are already in the KV cache).
        #[arg(long, default_value_t = 0)]
        pos: usize,
        /// Also run `bench` (pp64, tg32) and show the measured speeds beside the limits.
        #[arg(long)]
        measure: bool,
        #[command(flatten)]
        runtime: Runtime,
    },
    /// Print the token ids of a text.
    Tokenize {
        #[arg(short = 'm', long = "model")]
        model: PathBuf,
        #[arg(short = 'p', long = "prompt")]
        prompt: String,
        /// Do not add the BOS token.
        #[arg(long)]
        no_bos: bool,
        #[arg(long)]
        no_parse_special: bool,
        /// Take the text as written: no escape processing (by default, as llama-tokenize,
        /// \n \r \t \' \" \\ and \xHH become the characters they name).
        #[arg(long)]
        no_escape: bool,
        /// Process escapes: the default (llama-tokenize's flag).
        #[arg(short = 'e', long = "escape", conflicts_with = "no_escape")]
        escape: bool,
        /// One "id piece" line per token.
        #[arg(long)]
        pieces: bool,
    },
    /// Print the logits at the last prompt position as raw little-endian f32 (vocabulary order).
    Logits {
        #[arg(short = 'm', long = "model")]
        model: PathBuf,
        /// Prompt text (tokenized with the model's tokenizer, special tokens parsed).
        #[arg(short = 'p', long = "prompt", conflicts_with = "tokens")]
        prompt: Option<String>,
        /// Token ids instead of a prompt, separated by spaces or commas.
        #[arg(long)]
        tokens: Option<String>,
        /// Do not add the BOS token even if the model asks for it.
        #[arg(long)]
        no_bos: bool,
        #[command(flatten)]
        runtime: Runtime,
    },
    /// Talk with a model: a terminal chat, or one message per line of piped input.
    Chat {
        #[arg(short = 'm', long = "model")]
        model: PathBuf,
        /// The conversation's system prompt.
        #[arg(long)]
        system_prompt: Option<String>,
        /// Use this chat template instead of the model's: a Jinja file, or one of chatml,
        /// llama3, llama2, gemma, phi3.
        #[arg(long, value_name = "NAME|FILE")]
        chat_template: Option<String>,
        /// Most tokens per answer (-1: until the end of the turn or a full context).
        #[arg(short = 'n', long = "n-predict", default_value_t = -1, allow_negative_numbers = true)]
        n_predict: i64,
        /// Context size in tokens (0: the model's training context).
        #[arg(short = 'c', long = "ctx-size", default_value_t = 4096)]
        ctx_size: usize,
        #[command(flatten)]
        runtime: Runtime,
        #[command(flatten)]
        sampling: Sampling,
    },
    /// Serve the model over an OpenAI-compatible HTTP API (/v1/chat/completions, ...).
    Serve {
        #[arg(short = 'm', long = "model")]
        model: PathBuf,
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Port (0: any free port; the address is printed).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Context size in tokens (0: the model's training context).
        #[arg(short = 'c', long = "ctx-size", default_value_t = 4096)]
        ctx_size: usize,
        /// Use this chat template instead of the model's: a Jinja file, or one of chatml,
        /// llama3, llama2, gemma, phi3.
        #[arg(long, value_name = "NAME|FILE")]
        chat_template: Option<String>,
        /// Largest request body in bytes.
        #[arg(long, default_value_t = 2 << 20)]
        max_body: usize,
        #[command(flatten)]
        runtime: Runtime,
        /// Defaults for requests that leave a setting out; --seed seeds requests without one.
        #[command(flatten)]
        sampling: Sampling,
    },
}

/// The sampling options, with llama.cpp's meanings of its special values (`--temp` at or
/// below 0: greedy; `--top-k` at or below 0: all; `--repeat-last-n -1`: the whole context;
/// `--seed -1`: from the clock), so that its command lines work as they are.
#[derive(clap::Args, Clone)]
struct Sampling {
    /// Temperature (0 or below: greedy).
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
    temp: f32,
    /// Keep the k most likely tokens (0 or below: all).
    #[arg(long = "top-k", default_value_t = 40, allow_negative_numbers = true)]
    top_k: i64,
    #[arg(long = "top-p", default_value_t = 0.95)]
    top_p: f32,
    #[arg(long = "min-p", default_value_t = 0.05)]
    min_p: f32,
    /// Penalty for repeating one of the last --repeat-last-n tokens (1.0: off).
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    repeat_penalty: f32,
    /// How many of the last tokens the repetition penalty looks at (0: none, -1: all).
    #[arg(long = "repeat-last-n", default_value_t = 64, allow_negative_numbers = true)]
    repeat_last_n: i64,
    /// Random seed (default, or -1: from the clock).
    #[arg(short = 's', long, allow_negative_numbers = true)]
    seed: Option<i128>,
}

impl Sampling {
    /// `--seed`, or None for a seed from the clock (no `--seed`, or -1).
    fn fixed_seed(&self) -> anyhow::Result<Option<u64>> {
        match self.seed {
            None | Some(-1) => Ok(None),
            Some(s) => u64::try_from(s).map(Some).map_err(|_| {
                anyhow::anyhow!("--seed {s}: must be from 0 to {}, or -1 (from the clock)", u64::MAX)
            }),
        }
    }

    fn config(&self) -> anyhow::Result<SamplerConfig> {
        let ok = |v: f32, lo: f32, hi: f32| v.is_finite() && v >= lo && v <= hi;
        if !self.temp.is_finite() || self.temp > 100.0 {
            anyhow::bail!("--temp {}: must be at most 100 (0 or below: greedy)", self.temp);
        }
        if !ok(self.top_p, 0.0, 1.0) || !ok(self.min_p, 0.0, 1.0) {
            anyhow::bail!("--top-p and --min-p must be between 0 and 1");
        }
        if !ok(self.repeat_penalty, 0.0, 100.0) || self.repeat_penalty == 0.0 {
            anyhow::bail!("--repeat-penalty {}: must be above 0", self.repeat_penalty);
        }
        let repeat_last_n = match self.repeat_last_n {
            -1 => usize::MAX,
            n => usize::try_from(n).map_err(|_| {
                anyhow::anyhow!("--repeat-last-n {n}: must be 0 or more, or -1 (the whole context)")
            })?,
        };
        let seed = self.fixed_seed()?.unwrap_or_else(ferrite::sampler::clock_seed);
        Ok(SamplerConfig {
            temp: self.temp.max(0.0),
            top_k: usize::try_from(self.top_k).unwrap_or(0),
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n,
            seed,
        })
    }
}

#[derive(clap::Args, Clone, Copy)]
struct Runtime {
    /// Threads (default: all cores).
    #[arg(short = 't', long = "threads")]
    threads: Option<usize>,
    /// Keep every weight in the file's layout, read in place from the mapped file: no
    /// repacked copies, so the model loads in milliseconds and takes no memory beyond the
    /// file; decode runs slower (0.6-1.0x the copies' speed on 8B files with AVX-512, 0.7-0.9x
    /// on SmolLM2), and prefill for some types (BENCHMARKS.md, "Loading and memory").
    #[arg(long = "no-repack")]
    no_repack: bool,
    /// Neither read nor write the cache of repacked copies. By default a model's repacked
    /// copies, where they come to 256 MiB or more, are saved on its first load (in
    /// $FERRITE_CACHE_DIR, else $XDG_CACHE_HOME/ferrite, else ~/.cache/ferrite: about the
    /// file's size again on disk; `ferrite cache` lists them), and later loads of the
    /// unchanged file map them instead of making them.
    #[arg(long = "no-copy-cache")]
    no_copy_cache: bool,
}

impl Runtime {
    fn apply(self) -> anyhow::Result<()> {
        if self.no_repack {
            ferrite::model::set_repack(false);
        }
        if self.no_copy_cache {
            ferrite::model::set_copy_cache(false);
        }
        if let Some(t) = self.threads {
            if t == 0 || t > 1024 {
                anyhow::bail!("-t {t}: threads must be between 1 and 1024");
            }
            rayon::ThreadPoolBuilder::new().num_threads(t).build_global()?;
            ferrite::kernels::pool::set_threads(t);
        }
        Ok(())
    }
}

fn parse_ids(s: &str) -> anyhow::Result<Vec<u32>> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .map(|t| t.parse::<u32>().map_err(|_| anyhow::anyhow!("--tokens: {t:?} is not a token id")))
        .collect()
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match cli.command {
        Command::Inspect { file, json } => {
            let f = GgufFile::open(&file)?;
            if json {
                writeln!(out, "{}", inspect::to_json(&f.gguf))?;
            } else {
                write!(out, "{}", inspect::to_text(&f.gguf))?;
            }
        }
        Command::Dump { file, tensor, format, rows } => {
            let f = GgufFile::open(&file)?;
            let (t, _) = f.tensor(&tensor)?;
            let rows = inspect::parse_rows(rows.as_deref(), t.n_rows())?;
            let format = match format {
                Format::Text => DumpFormat::Text,
                Format::F32le => DumpFormat::F32le,
            };
            inspect::dump(&f, t, rows, format, &mut out)?;
        }
        Command::Run {
            model,
            prompt,
            file,
            n_predict,
            ctx_size,
            runtime,
            sampling,
            ignore_eos,
            no_parse_special,
            no_escape,
            escape: _,
            profile,
            dump_activations,
            layers,
        } => {
            runtime.apply()?;
            let sampler_config = sampling.config()?;
            let prompt = match (prompt, file) {
                (Some(p), _) => p,
                (None, Some(f)) => {
                    let mut p = std::fs::read_to_string(&f)
                        .map_err(|e| anyhow::anyhow!("cannot read prompt file {}: {e}", f.display()))?;
                    // As llama.cpp's -f: the file's one trailing newline is not part of it.
                    if p.ends_with('\n') {
                        p.pop();
                    }
                    p
                }
                (None, None) => unreachable!("clap requires one"),
            };
            let prompt = if no_escape { prompt } else { ferrite::escape::unescape(&prompt, "the prompt")? };
            drop(out);
            let opts = RunOptions {
                n_predict,
                ctx_size,
                sampler_config,
                ignore_eos,
                parse_special: !no_parse_special,
                profile,
                dump: dump_activations.map(|d| (d, layers)),
            };
            run_generation(&model, &prompt, opts)?;
            return Ok(());
        }
        Command::Bench { model, n_prompt, n_gen, reps, runtime, json, profile, roofline } => {
            runtime.apply()?;
            if reps == 0 || reps > 1000 || n_prompt.iter().chain(&n_gen).any(|&n| n > 1 << 20) {
                anyhow::bail!("-r must be 1..1000, -p and -n at most 1048576");
            }
            if n_prompt.len() + n_gen.len() > 64 {
                anyhow::bail!("-p and -n: at most 64 lengths in all");
            }
            let t0 = std::time::Instant::now();
            let m = Model::open(&model)?;
            let load = t0.elapsed();
            // A first load makes its copies in the background and saves them to the cache:
            // not while the runs are timed.
            m.wait_copy_cache();
            let (results, profiles) = ferrite::bench::run_with(&m, &n_prompt, &n_gen, reps, profile)?;
            if let Some((pp, tg)) = profiles {
                let level = m.kernels.level.name();
                eprintln!("{}\n{}", pp.table("prefill", level), tg.table("decode", level));
            }
            let t = ferrite::kernels::pool::global().threads();
            let mem = ferrite::bench::Memory::of(&m, load);
            let bw = roofline.then(|| ferrite::kernels::memory::measure_read_bandwidth(1 << 30, 3));
            if json {
                let mut v = ferrite::bench::to_json(&m, t, &results);
                v["memory"] = mem.to_json();
                if let Some(bw) = bw {
                    v["read_bandwidth_bytes_per_s"] = bw.into();
                }
                writeln!(out, "{v}")?;
            } else {
                write!(out, "{}", ferrite::bench::to_markdown(&m, t, &results))?;
                eprintln!("{mem}");
                if let Some(bw) = bw {
                    eprintln!("memory read bandwidth now: {:.1} GB/s", bw / 1e9);
                }
            }
        }
        Command::Cache { clear } => {
            let dir = ferrite::model::default_cache_dir()
                .ok_or_else(|| anyhow::anyhow!("no cache directory: set FERRITE_CACHE_DIR or HOME"))?;
            let files = ferrite::model::list_cache(&dir)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?;
            let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
            let total: u64 = files.iter().map(|f| f.bytes).sum();
            if clear {
                for f in &files {
                    std::fs::remove_file(&f.path)
                        .map_err(|e| anyhow::anyhow!("cannot remove {}: {e}", f.path.display()))?;
                }
                writeln!(
                    out,
                    "removed {} files, {:.2} GiB, from {}",
                    files.len(),
                    gib(total),
                    dir.display()
                )?;
                return Ok(());
            }
            writeln!(out, "{}: {} files, {:.2} GiB", dir.display(), files.len(), gib(total))?;
            for f in &files {
                let name = f.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let what = match (&f.source, f.current) {
                    (Some(p), true) => format!("copies of {}", p.display()),
                    (Some(p), false) => format!("copies of {} (changed or gone since: unused)", p.display()),
                    (None, _) => "partial or unreadable (removed by the next save after a minute)".into(),
                };
                writeln!(out, "{:>9.2} GiB  {name}  {what}", gib(f.bytes))?;
            }
        }
        Command::Synth { shape, ty, output, vocab, seed } => {
            let names: Vec<&str> = ferrite::synth::SHAPES.iter().map(|s| s.name).collect();
            let sh = ferrite::synth::SHAPES
                .iter()
                .find(|s| s.name == shape)
                .ok_or_else(|| anyhow::anyhow!("--shape {shape}: expected one of {}", names.join(", ")))?;
            let ft = ferrite::synth::FileType::parse(&ty).ok_or_else(|| {
                anyhow::anyhow!("--type {ty}: expected Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, Q4_K_M, Q5_K_M, F16 or F32")
            })?;
            ferrite::synth::synth(sh, ft, &output, vocab.as_deref(), seed)?;
            eprintln!("wrote {}", output.display());
        }
        Command::Perplexity { model, file, ctx_size, chunks, runtime, json } => {
            runtime.apply()?;
            let max_chunks = match chunks {
                -1 => None,
                n => Some(
                    usize::try_from(n)
                        .map_err(|_| anyhow::anyhow!("--chunks {n}: must be 1 or more, or -1 (all)"))?,
                ),
            };
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            let m = Model::open(&model)?;
            let tok = Tokenizer::from_gguf(&m.file.gguf)?;
            let t = Instant::now();
            let r =
                ferrite::perplexity::perplexity(&m, &tok, &text, ctx_size, max_chunks, &mut |c, n, ppl| {
                    let width = 30;
                    let done = c * width / n;
                    eprint!(
                        "\r[{}{}] chunk {c}/{n}  ppl {ppl:.4}  ",
                        "#".repeat(done),
                        " ".repeat(width - done)
                    );
                })?;
            eprintln!("\n{:.1} s", t.elapsed().as_secs_f64());
            if json {
                let v =
                    serde_json::json!({"perplexity": r.perplexity, "chunks": r.chunks, "tokens": r.tokens});
                writeln!(out, "{v}")?;
            } else {
                writeln!(
                    out,
                    "perplexity: {:.4} ({} chunks of {ctx_size}, {} tokens scored)",
                    r.perplexity, r.chunks, r.tokens
                )?;
            }
        }
        Command::Quantize { input, output, ty } => {
            let r = ferrite::quantize::quantize_file(&input, &output, &ty)?;
            eprintln!("{r}");
        }
        Command::Explain { model, pos, measure, runtime } => {
            runtime.apply()?;
            let m = Model::open(&model)?;
            let bw = ferrite::kernels::memory::measure_read_bandwidth(1 << 30, 3);
            let ops = ferrite::explain::measure_int8_ops();
            let measured = if measure {
                let r = ferrite::bench::run(&m, 64, 32, 3)?;
                Some((r[0].tokens_per_s, r[1].tokens_per_s))
            } else {
                None
            };
            write!(out, "{}", ferrite::explain::report(&m, pos, bw, ops, measured))?;
        }
        Command::Tokenize { model, prompt, no_bos, no_parse_special, no_escape, escape: _, pieces } => {
            let prompt = if no_escape { prompt } else { ferrite::escape::unescape(&prompt, "the text")? };
            let f = GgufFile::open(&model)?;
            let tok = Tokenizer::from_gguf(&f.gguf)?;
            let ids = tok.encode(&prompt, !no_bos, !no_parse_special);
            if pieces {
                for id in ids {
                    writeln!(out, "{id} {:?}", String::from_utf8_lossy(tok.token_bytes(id)))?;
                }
            } else {
                let line: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
                writeln!(out, "{}", line.join(" "))?;
            }
        }
        Command::Logits { model, prompt, tokens, no_bos, runtime } => {
            runtime.apply()?;
            let m = Model::open(&model)?;
            let ids = match (prompt, tokens) {
                (_, Some(t)) => parse_ids(&t)?,
                (Some(p), None) => {
                    let tok = Tokenizer::from_gguf(&m.file.gguf)?;
                    tok.encode(&p, !no_bos, true)
                }
                (None, None) => anyhow::bail!("give a prompt (-p) or --tokens"),
            };
            if ids.is_empty() {
                anyhow::bail!("the prompt is empty");
            }
            let mut cache = KvCache::new(&m.config, ids.len());
            let mut state = State::new(&m.config, ids.len());
            m.forward(&ids, &mut cache, &mut state, None)?;
            let bytes: Vec<u8> = state.logits.iter().flat_map(|x| x.to_le_bytes()).collect();
            out.write_all(&bytes)?;
        }
        Command::Chat { model, system_prompt, chat_template, n_predict, ctx_size, runtime, sampling } => {
            runtime.apply()?;
            let opts = ferrite::chat::ChatOptions {
                ctx_size,
                sampler: sampling.config()?,
                max_tokens: usize::try_from(n_predict).ok(),
                system_prompt,
                chat_template,
            };
            drop(out);
            return ferrite::chat::run_chat(&model, opts);
        }
        Command::Serve { model, host, port, ctx_size, chat_template, max_body, runtime, sampling } => {
            runtime.apply()?;
            let opts = ferrite::server::ServeOptions {
                host,
                port,
                ctx_size,
                sampler: sampling.config()?,
                seed: sampling.fixed_seed()?,
                chat_template,
                max_body,
            };
            drop(out);
            return ferrite::server::serve(&model, opts);
        }
    }
    out.flush()?;
    Ok(())
}

struct RunOptions {
    n_predict: i64,
    ctx_size: usize,
    sampler_config: SamplerConfig,
    ignore_eos: bool,
    parse_special: bool,
    profile: bool,
    dump: Option<(PathBuf, String)>,
}

/// "0,1,-1" -> layer indices (negative from the end).
fn parse_layers(spec: &str, n_layers: usize) -> anyhow::Result<Vec<usize>> {
    spec.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            let v: i64 =
                s.trim().parse().map_err(|_| anyhow::anyhow!("--layers: {s:?} is not a layer number"))?;
            let l = if v < 0 { n_layers as i64 + v } else { v };
            if l < 0 || l >= n_layers as i64 {
                anyhow::bail!("--layers: {v} is outside 0..{n_layers}");
            }
            Ok(l as usize)
        })
        .collect()
}

fn run_generation(path: &std::path::Path, prompt: &str, o: RunOptions) -> anyhow::Result<()> {
    if prompt.is_empty() {
        anyhow::bail!("the prompt is empty");
    }
    let t0 = Instant::now();
    let model = Model::open(path)?;
    let tok = Tokenizer::from_gguf(&model.file.gguf)?;
    let load = t0.elapsed();
    let n_ctx = if o.ctx_size == 0 { model.config.n_ctx_train } else { o.ctx_size };
    if n_ctx > model.config.n_ctx_train.max(1 << 20) {
        anyhow::bail!("-c {n_ctx}: larger than any context this model can use");
    }
    let ids = tok.encode(prompt, true, o.parse_special);
    if ids.is_empty() {
        anyhow::bail!("the prompt is empty");
    }
    if ids.len() >= n_ctx {
        anyhow::bail!("the prompt is {} tokens, the context only {} (raise -c)", ids.len(), n_ctx);
    }
    let mut session = Session::new(&model, n_ctx);
    if o.profile {
        session.state.prof_prefill = Some(Box::default());
        session.state.prof_decode = Some(Box::default());
    }
    if let Some((dir, layers)) = &o.dump {
        let layers = parse_layers(layers, model.config.n_layers)?;
        session.state.tap = Some(ferrite::model::Tap::new(dir.clone(), layers)?);
    }
    let t = Instant::now();
    session.feed(&ids)?;
    let prompt_time = t.elapsed();
    if let Some(tap) = session.state.tap.take() {
        tap.write_index(&ids)?;
        eprintln!("wrote {} activation arrays to {}", tap.written.len(), tap.dir.display());
    }
    let mut sampler = Sampler::new(o.sampler_config);
    let max = if o.n_predict < 0 { None } else { Some(o.n_predict as usize) };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut decoder = StreamDecoder::new(false);
    let mut write_err = None;
    let (stop, mut stats) =
        session.generate(&[], max, &mut sampler, &|t| tok.is_eog(t), o.ignore_eos, &mut |t| {
            let text = decoder.push(&tok, t);
            match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
                Ok(()) => true,
                Err(e) => {
                    write_err = Some(e);
                    false
                }
            }
        })?;
    stats.prompt_tokens = ids.len();
    stats.prompt_time = prompt_time;
    if let Some(e) = write_err {
        return Err(e.into());
    }
    let rest = decoder.finish();
    out.write_all(rest.as_bytes())?;
    writeln!(out)?;
    out.flush()?;
    if stop == Stop::ContextFull {
        eprintln!("\n[context full: {n_ctx} tokens; raise -c for longer output]");
    }
    eprintln!();
    eprintln!(
        "load time:        {:8.1} ms  (kernels: {})",
        load.as_secs_f64() * 1e3,
        model.kernels.level.name()
    );
    // (Made and written while the tokens ran; a first load waits here for the rest of a save;
    // copies not to be saved are abandoned.)
    let making = model.copy_cache();
    if let ferrite::model::CopyCache::Making(Some(_)) = making {
        eprintln!("                   {making}: waiting for them (once; --no-copy-cache: not)");
    }
    let cache = model.settle_copies();
    if cache != ferrite::model::CopyCache::Unused {
        eprintln!("                   {cache}");
    }
    eprintln!(
        "prompt:           {:8} tokens, {:8.1} ms, {:8.2} tokens/s",
        stats.prompt_tokens,
        stats.prompt_time.as_secs_f64() * 1e3,
        stats.prompt_tps()
    );
    eprintln!(
        "generated:        {:8} tokens, {:8.1} ms, {:8.2} tokens/s",
        stats.generated_tokens,
        stats.decode_time.as_secs_f64() * 1e3,
        stats.decode_tps()
    );
    let level = model.kernels.level.name();
    if let Some(p) = &session.state.prof_prefill {
        eprintln!("\n{}", p.table("prefill", level));
    }
    if let Some(p) = &session.state.prof_decode {
        eprintln!("{}", p.table("decode", level));
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A closed pipe (`ferrite dump ... | head`) is not an error worth reporting.
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(1)
        }
    }
}

/// The error and its causes on one line, each cause once: a message that already quotes
/// its cause (`cannot open FILE: No such file...`) is not followed by it again.
fn one_line(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        let io = c.downcast_ref::<std::io::Error>().or_else(|| match c.downcast_ref::<ferrite::Error>() {
            Some(ferrite::Error::Io { source, .. }) => Some(source),
            _ => None,
        });
        io.is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
