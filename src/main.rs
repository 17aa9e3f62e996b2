//! The `ferrite` command line: parse arguments, call the library, print.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use ferrite::gguf::GgufFile;
use ferrite::inspect::{self, DumpFormat};

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
    }
    out.flush()?;
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
