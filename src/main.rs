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
        threads: Threads,
        #[command(flatten)]
        sampling: Sampling,
        /// Keep generating past end-of-generation tokens.
        #[arg(long)]
        ignore_eos: bool,
        /// Treat special-token text in the prompt (like <|im_start|>) as plain text.
        #[arg(long)]
        no_parse_special: bool,
    },
    /// Measure prefill and decode speed (like llama-bench).
    Bench {
        #[arg(short = 'm', long = "model")]
        model: PathBuf,
        /// Prompt tokens for the prefill test (0: skip).
        #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
        n_prompt: usize,
        /// Tokens for the decode test (0: skip).
        #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
        n_gen: usize,
        #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
        reps: usize,
        #[command(flatten)]
        threads: Threads,
        #[arg(long)]
        json: bool,
    },
    /// Write a random-weight model of a real shape (for benchmarks).
    Synth {
        /// llama3-8b, llama3-1b, llama2-7b or tiny.
        #[arg(long)]
        shape: String,
        /// Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, Q4_K_M, F16 or F32.
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
        #[command(flatten)]
        threads: Threads,
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
        threads: Threads,
    },
}

#[derive(clap::Args, Clone)]
struct Sampling {
    /// Temperature (0: greedy).
    #[arg(long, default_value_t = 0.8)]
    temp: f32,
    /// Keep the k most likely tokens (0: all).
    #[arg(long = "top-k", default_value_t = 40)]
    top_k: usize,
    #[arg(long = "top-p", default_value_t = 0.95)]
    top_p: f32,
    #[arg(long = "min-p", default_value_t = 0.05)]
    min_p: f32,
    /// Penalty for repeating one of the last --repeat-last-n tokens (1.0: off).
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    repeat_penalty: f32,
    #[arg(long = "repeat-last-n", default_value_t = 64)]
    repeat_last_n: usize,
    /// Random seed (default: from the clock).
    #[arg(short = 's', long)]
    seed: Option<u64>,
}

impl Sampling {
    fn config(&self) -> anyhow::Result<SamplerConfig> {
        let ok = |v: f32, lo: f32, hi: f32| v.is_finite() && v >= lo && v <= hi;
        if !ok(self.temp, 0.0, 100.0) {
            anyhow::bail!("--temp {}: must be between 0 and 100", self.temp);
        }
        if !ok(self.top_p, 0.0, 1.0) || !ok(self.min_p, 0.0, 1.0) {
            anyhow::bail!("--top-p and --min-p must be between 0 and 1");
        }
        if !ok(self.repeat_penalty, 0.0, 100.0) || self.repeat_penalty == 0.0 {
            anyhow::bail!("--repeat-penalty {}: must be above 0", self.repeat_penalty);
        }
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        });
        Ok(SamplerConfig {
            temp: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            seed,
        })
    }
}

#[derive(clap::Args, Clone, Copy)]
struct Threads {
    /// Threads (default: all cores).
    #[arg(short = 't', long = "threads")]
    threads: Option<usize>,
}

impl Threads {
    fn apply(self) -> anyhow::Result<()> {
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
            threads,
            sampling,
            ignore_eos,
            no_parse_special,
        } => {
            threads.apply()?;
            let sampler_config = sampling.config()?;
            let prompt = match (prompt, file) {
                (Some(p), _) => p,
                (None, Some(f)) => std::fs::read_to_string(&f)
                    .map_err(|e| anyhow::anyhow!("cannot read prompt file {}: {e}", f.display()))?,
                (None, None) => unreachable!("clap requires one"),
            };
            drop(out);
            run_generation(
                &model,
                &prompt,
                n_predict,
                ctx_size,
                sampler_config,
                ignore_eos,
                !no_parse_special,
            )?;
            return Ok(());
        }
        Command::Bench { model, n_prompt, n_gen, reps, threads, json } => {
            threads.apply()?;
            if reps == 0 || reps > 1000 || n_prompt > 1 << 20 || n_gen > 1 << 20 {
                anyhow::bail!("-r must be 1..1000, -p and -n at most 1048576");
            }
            let m = Model::open(&model)?;
            let results = ferrite::bench::run(&m, n_prompt, n_gen, reps)?;
            let t = ferrite::kernels::pool::global().threads();
            if json {
                writeln!(out, "{}", ferrite::bench::to_json(&m, t, &results))?;
            } else {
                write!(out, "{}", ferrite::bench::to_markdown(&m, t, &results))?;
            }
        }
        Command::Synth { shape, ty, output, vocab, seed } => {
            let names: Vec<&str> = ferrite::synth::SHAPES.iter().map(|s| s.name).collect();
            let sh = ferrite::synth::SHAPES
                .iter()
                .find(|s| s.name == shape)
                .ok_or_else(|| anyhow::anyhow!("--shape {shape}: expected one of {}", names.join(", ")))?;
            let ft = ferrite::synth::FileType::parse(&ty).ok_or_else(|| {
                anyhow::anyhow!("--type {ty}: expected Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, Q4_K_M, F16 or F32")
            })?;
            ferrite::synth::synth(sh, ft, &output, vocab.as_deref(), seed)?;
            eprintln!("wrote {}", output.display());
        }
        Command::Perplexity { model, file, ctx_size, threads, json } => {
            threads.apply()?;
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            let m = Model::open(&model)?;
            let tok = Tokenizer::from_gguf(&m.file.gguf)?;
            let t = Instant::now();
            let r = ferrite::perplexity::perplexity(&m, &tok, &text, ctx_size, &mut |c, n, ppl| {
                let width = 30;
                let done = c * width / n;
                eprint!("\r[{}{}] chunk {c}/{n}  ppl {ppl:.4}  ", "#".repeat(done), " ".repeat(width - done));
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
        Command::Tokenize { model, prompt, no_bos, no_parse_special, pieces } => {
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
        Command::Logits { model, prompt, tokens, no_bos, threads } => {
            threads.apply()?;
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
    }
    out.flush()?;
    Ok(())
}

fn run_generation(
    path: &std::path::Path,
    prompt: &str,
    n_predict: i64,
    ctx_size: usize,
    sampler_config: SamplerConfig,
    ignore_eos: bool,
    parse_special: bool,
) -> anyhow::Result<()> {
    if prompt.is_empty() {
        anyhow::bail!("the prompt is empty");
    }
    let t0 = Instant::now();
    let model = Model::open(path)?;
    let tok = Tokenizer::from_gguf(&model.file.gguf)?;
    let load = t0.elapsed();
    let n_ctx = if ctx_size == 0 { model.config.n_ctx_train } else { ctx_size };
    if n_ctx > model.config.n_ctx_train.max(1 << 20) {
        anyhow::bail!("-c {n_ctx}: larger than any context this model can use");
    }
    let ids = tok.encode(prompt, true, parse_special);
    if ids.is_empty() {
        anyhow::bail!("the prompt is empty");
    }
    if ids.len() >= n_ctx {
        anyhow::bail!("the prompt is {} tokens, the context only {} (raise -c)", ids.len(), n_ctx);
    }
    let mut session = Session::new(&model, n_ctx);
    let mut sampler = Sampler::new(sampler_config);
    let max = if n_predict < 0 { None } else { Some(n_predict as usize) };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut decoder = StreamDecoder::new(false);
    let mut write_err = None;
    let (stop, stats) =
        session.generate(&ids, max, &mut sampler, &|t| tok.is_eog(t), ignore_eos, &mut |t| {
            let text = decoder.push(&tok, t);
            match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
                Ok(()) => true,
                Err(e) => {
                    write_err = Some(e);
                    false
                }
            }
        })?;
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
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
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
