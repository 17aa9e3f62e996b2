//! Seeing inside the forward pass: per-operation timings (`--profile`) and activation taps
//! (`--dump-activations`). Both live in `State` as `Option`s; when they are `None` the
//! forward pass does no bookkeeping at all.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The operation kinds of one forward step, in execution order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Embed,
    AttnNorm,
    AttnQ,
    AttnK,
    AttnV,
    Rope,
    KvStore,
    Attention,
    AttnOutput,
    Residual,
    FfnNorm,
    FfnGate,
    FfnUp,
    SwiGlu,
    FfnDown,
    OutputNorm,
    Output,
    Sampling,
}

pub const OPS: [Op; 18] = [
    Op::Embed,
    Op::AttnNorm,
    Op::AttnQ,
    Op::AttnK,
    Op::AttnV,
    Op::Rope,
    Op::KvStore,
    Op::Attention,
    Op::AttnOutput,
    Op::Residual,
    Op::FfnNorm,
    Op::FfnGate,
    Op::FfnUp,
    Op::SwiGlu,
    Op::FfnDown,
    Op::OutputNorm,
    Op::Output,
    Op::Sampling,
];

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Embed => "embedding",
            Op::AttnNorm => "attn_norm (RMSNorm)",
            Op::AttnQ => "attn_q",
            Op::AttnK => "attn_k",
            Op::AttnV => "attn_v",
            Op::Rope => "RoPE",
            Op::KvStore => "KV cache store",
            Op::Attention => "attention",
            Op::AttnOutput => "attn_output",
            Op::Residual => "residual adds",
            Op::FfnNorm => "ffn_norm (RMSNorm)",
            Op::FfnGate => "ffn_gate",
            Op::FfnUp => "ffn_up",
            Op::SwiGlu => "SwiGLU",
            Op::FfnDown => "ffn_down",
            Op::OutputNorm => "output_norm (RMSNorm)",
            Op::Output => "output",
            Op::Sampling => "sampling",
        }
    }

    fn index(self) -> usize {
        OPS.iter().position(|&o| o == self).expect("every op is listed")
    }

    /// Whether this op is a weight matrix product (runs on the quantized kernels).
    pub fn is_matmul(self) -> bool {
        matches!(
            self,
            Op::AttnQ
                | Op::AttnK
                | Op::AttnV
                | Op::AttnOutput
                | Op::FfnGate
                | Op::FfnUp
                | Op::FfnDown
                | Op::Output
        )
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct OpStats {
    pub time: Duration,
    pub calls: u64,
    /// Weight bytes read.
    pub bytes: u64,
    /// Floating-point (or integer multiply-add) operations, 2 per multiply-add.
    pub flops: u64,
}

/// Accumulated statistics of every op over some tokens.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    pub ops: [OpStats; OPS.len()],
    /// Tokens processed and forward calls made.
    pub tokens: u64,
    pub steps: u64,
    /// Wall time of whole forward calls (to check the ops add up).
    pub wall: Duration,
}

impl Profile {
    pub fn add(&mut self, op: Op, time: Duration, bytes: u64, flops: u64) {
        let s = &mut self.ops[op.index()];
        s.time += time;
        s.calls += 1;
        s.bytes += bytes;
        s.flops += flops;
    }

    /// Split one timed call over several ops in proportion to their bytes (fused matrices
    /// that share an input run as one parallel section).
    pub fn add_split(&mut self, parts: &[(Op, u64, u64)], time: Duration) {
        let total: u64 = parts.iter().map(|p| p.1).sum::<u64>().max(1);
        for &(op, bytes, flops) in parts {
            self.add(op, time.mul_f64(bytes as f64 / total as f64), bytes, flops);
        }
    }

    pub fn total(&self) -> Duration {
        self.ops.iter().map(|o| o.time).sum()
    }

    /// A table: op, time, % of the total, calls, weight bytes, GB/s, GFLOP/s.
    pub fn table(&self, title: &str, level: &str) -> String {
        let total = self.total().as_secs_f64().max(1e-12);
        let per_tok = |d: Duration| d.as_secs_f64() * 1e3 / self.tokens.max(1) as f64;
        let mut s = format!(
            "{title}: {} tokens in {} steps, {:.3} ms per token (ops sum), {:.3} ms per token (wall), kernels {level}\n",
            self.tokens,
            self.steps,
            per_tok(self.total()),
            per_tok(self.wall)
        );
        s += &format!(
            "{:<22} {:>10} {:>7} {:>8} {:>12} {:>8} {:>9}\n",
            "op", "ms/token", "%", "calls", "MB/token", "GB/s", "GFLOP/s"
        );
        for (op, st) in OPS.iter().zip(&self.ops) {
            if st.calls == 0 {
                continue;
            }
            let secs = st.time.as_secs_f64().max(1e-12);
            let gbs = if st.bytes > 0 { format!("{:.1}", st.bytes as f64 / secs / 1e9) } else { "-".into() };
            s += &format!(
                "{:<22} {:>10.3} {:>6.1}% {:>8} {:>12.2} {:>8} {:>9.1}\n",
                op.name(),
                per_tok(st.time),
                100.0 * secs / total,
                st.calls,
                st.bytes as f64 / 1e6 / self.tokens.max(1) as f64,
                gbs,
                st.flops as f64 / secs / 1e9
            );
        }
        s
    }
}

/// Starts a timer only when profiling.
pub fn start(p: &Option<Box<Profile>>) -> Option<Instant> {
    p.as_ref().map(|_| Instant::now())
}

/// Which layers' activations to dump, and where.
#[derive(Clone, Debug)]
pub struct Tap {
    pub dir: PathBuf,
    pub layers: Vec<usize>,
    /// (file name, layer or -1, step) for index.json.
    pub written: Vec<(String, i64, String)>,
}

impl Tap {
    pub fn new(dir: PathBuf, layers: Vec<usize>) -> Result<Tap> {
        std::fs::create_dir_all(&dir).map_err(|e| Error::Io { path: dir.clone(), source: e })?;
        Ok(Tap { dir, layers, written: Vec::new() })
    }

    pub fn wants(&self, layer: usize) -> bool {
        self.layers.contains(&layer)
    }

    /// Write one vector as a float32 .npy file.
    pub fn save(&mut self, layer: Option<usize>, step: &str, v: &[f32]) -> Result<()> {
        let name = match layer {
            Some(l) => format!("blk.{l}.{step}.npy"),
            None => format!("{step}.npy"),
        };
        let header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}", v.len());
        // Magic, version 1.0, header padded with spaces to a multiple of 64 bytes, newline.
        let mut h = header.into_bytes();
        let unpadded = 10 + h.len() + 1;
        h.resize(h.len() + unpadded.next_multiple_of(64) - unpadded, b' ');
        h.push(b'\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(h.len() as u16).to_le_bytes());
        out.extend_from_slice(&h);
        for x in v {
            out.extend_from_slice(&x.to_le_bytes());
        }
        let path = self.dir.join(&name);
        std::fs::write(&path, out).map_err(|e| Error::Io { path, source: e })?;
        self.written.push((name, layer.map(|l| l as i64).unwrap_or(-1), step.to_string()));
        Ok(())
    }

    pub fn write_index(&self, tokens: &[u32]) -> Result<()> {
        let entries: Vec<serde_json::Value> = self
            .written
            .iter()
            .map(|(f, l, s)| serde_json::json!({"file": f, "layer": l, "step": s}))
            .collect();
        let v = serde_json::json!({"position": tokens.len().saturating_sub(1), "tokens": tokens, "arrays": entries});
        let path = self.dir.join("index.json");
        std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap_or_default())
            .map_err(|e| Error::Io { path, source: e })
    }
}
