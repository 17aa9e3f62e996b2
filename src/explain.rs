//! `ferrite explain`: what one decode token costs for this model, step by step (shapes,
//! bytes read, FLOPs), and what this machine's memory bandwidth and compute allow.

use std::fmt::Write as _;

use crate::model::{Model, WeightRef};

/// Costs of one decode token at position `pos` (attending over pos + 1 positions).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenCost {
    pub pos: usize,
    /// Weight bytes read: every matrix, the norm vectors, one embedding row.
    pub weight_bytes: u64,
    /// KV cache bytes read by attention (f16 keys and values of pos + 1 positions).
    pub kv_bytes: u64,
    /// 2 per multiply-add of every matrix product, output head included.
    pub matmul_flops: u64,
    /// 4 x layers x heads x head_dim x (pos + 1): scores and weighted sums.
    pub attention_flops: u64,
    /// KV cache bytes per token stored, and at the full training context.
    pub kv_bytes_per_token: u64,
    pub kv_bytes_full_context: u64,
}

impl TokenCost {
    pub fn bytes(&self) -> u64 {
        self.weight_bytes + self.kv_bytes
    }
    pub fn flops(&self) -> u64 {
        self.matmul_flops + self.attention_flops
    }
}

fn wbytes(w: &WeightRef) -> u64 {
    w.ty.row_bytes(w.cols).unwrap_or(0) as u64 * w.rows as u64
}

fn macs(w: &WeightRef) -> u64 {
    (w.rows * w.cols) as u64
}

pub fn token_cost(m: &Model, pos: usize) -> TokenCost {
    let c = &m.config;
    let norm = 4 * c.dim as u64; // f32 norm weights
    let mut weight_bytes = 0;
    let mut mac = 0;
    for l in &m.layers {
        for w in [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down] {
            weight_bytes += wbytes(w);
            mac += macs(w);
        }
        weight_bytes += 2 * norm;
    }
    weight_bytes += wbytes(&m.output) + norm;
    mac += macs(&m.output);
    weight_bytes += m.token_embd.ty.row_bytes(m.token_embd.cols).unwrap_or(0) as u64;
    let n = (pos + 1) as u64;
    let kv_per_token = 2 * 2 * (c.n_layers * c.kv_dim()) as u64;
    TokenCost {
        pos,
        weight_bytes,
        kv_bytes: kv_per_token * n,
        matmul_flops: 2 * mac,
        attention_flops: 4 * (c.n_layers * c.n_heads * c.head_dim) as u64 * n,
        kv_bytes_per_token: kv_per_token,
        kv_bytes_full_context: kv_per_token * c.n_ctx_train as u64,
    }
}

fn mb(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.2} MiB", b as f64 / (1u64 << 20) as f64)
    }
}

/// The walk-through text. `bandwidth` (bytes/s) and `int8_ops` (multiply-adds x 2 per second
/// on all threads) are the machine's measured limits; `measured` adds bench results
/// (prefill, decode tokens/s).
pub fn report(m: &Model, pos: usize, bandwidth: f64, int8_ops: f64, measured: Option<(f64, f64)>) -> String {
    let c = &m.config;
    let cost = token_cost(m, pos);
    let l0 = &m.layers[0];
    let group = c.n_heads / c.n_kv_heads;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "model: {} layers, dim {}, {} heads of {} ({} KV heads: {} query heads share each), FFN {}, vocab {}, context {}",
        c.n_layers, c.dim, c.n_heads, c.head_dim, c.n_kv_heads, group, c.ffn_dim, c.vocab_size, c.n_ctx_train
    );
    let _ = writeln!(s, "\none decode token at position {pos} (attending over {} positions):\n", pos + 1);
    let _ = writeln!(s, "{:<14} {:<34} {:<7} {:>12} {:>14}", "step", "shape", "type", "bytes read", "FLOPs");
    let row = |s: &mut String, step: &str, shape: String, ty: &str, bytes: u64, flops: u64| {
        let _ = writeln!(s, "{step:<14} {shape:<34} {ty:<7} {bytes:>12} {flops:>14}");
    };
    let e = &m.token_embd;
    row(
        &mut s,
        "embedding",
        format!("row of [{} x {}] -> [{}]", e.rows, e.cols, c.dim),
        e.ty.name(),
        e.ty.row_bytes(e.cols).unwrap_or(0) as u64,
        0,
    );
    let _ = writeln!(s, "per layer (x{}):", c.n_layers);
    let mat = |s: &mut String, step: &str, w: &WeightRef, note: &str| {
        row(s, step, format!("[{}] -> [{}]{note}", w.cols, w.rows), w.ty.name(), wbytes(w), 2 * macs(w));
    };
    row(&mut s, "  attn_norm", format!("[{}]", c.dim), "F32", 4 * c.dim as u64, 4 * c.dim as u64);
    mat(&mut s, "  attn_q", &l0.wq, &format!(" = {} heads x {}", c.n_heads, c.head_dim));
    mat(&mut s, "  attn_k", &l0.wk, &format!(" = {} KV heads x {}", c.n_kv_heads, c.head_dim));
    mat(&mut s, "  attn_v", &l0.wv, &format!(" = {} KV heads x {}", c.n_kv_heads, c.head_dim));
    row(
        &mut s,
        "  rope",
        format!("q {}x{}, k {}x{} (pairs)", c.n_heads, c.head_dim, c.n_kv_heads, c.head_dim),
        "-",
        0,
        0,
    );
    let n = (pos + 1) as u64;
    row(
        &mut s,
        "  attention",
        format!("{} heads x {} positions (GQA {group}:1)", c.n_heads, pos + 1),
        "F16 KV",
        cost.kv_bytes / c.n_layers as u64,
        4 * (c.n_heads * c.head_dim) as u64 * n,
    );
    mat(&mut s, "  attn_output", &l0.wo, "");
    row(&mut s, "  ffn_norm", format!("[{}]", c.dim), "F32", 4 * c.dim as u64, 4 * c.dim as u64);
    mat(&mut s, "  ffn_gate", &l0.w_gate, "");
    mat(&mut s, "  ffn_up", &l0.w_up, "");
    row(&mut s, "  swiglu", format!("[{}]", c.ffn_dim), "-", 0, 0);
    mat(&mut s, "  ffn_down", &l0.w_down, "");
    row(&mut s, "output_norm", format!("[{}]", c.dim), "F32", 4 * c.dim as u64, 0);
    let tied = if m.output.name == m.token_embd.name { " (tied to token_embd)" } else { "" };
    mat(&mut s, "output", &m.output, tied);
    let _ = writeln!(
        s,
        "\nper token: weights {} + KV cache {} = {} read; {:.3} GFLOP ({:.3} in matmuls, {:.4} in attention)",
        mb(cost.weight_bytes),
        mb(cost.kv_bytes),
        mb(cost.bytes()),
        cost.flops() as f64 / 1e9,
        cost.matmul_flops as f64 / 1e9,
        cost.attention_flops as f64 / 1e9
    );
    let _ = writeln!(
        s,
        "KV cache: {} per token ({} layers x 2 x {} x f16); {} at position {pos}; {} at the full context of {}",
        cost.kv_bytes_per_token,
        c.n_layers,
        c.kv_dim(),
        mb(cost.kv_bytes),
        mb(cost.kv_bytes_full_context),
        c.n_ctx_train
    );
    let mem_bound = bandwidth / cost.bytes() as f64;
    let decode_compute = int8_ops / cost.flops() as f64;
    let prefill_compute = int8_ops / cost.flops() as f64;
    let _ = writeln!(s, "\nthis machine ({} threads):", crate::kernels::pool::global().threads());
    let _ = writeln!(
        s,
        "  memory read bandwidth  {:8.1} GB/s  -> decode at most {:8.1} tokens/s",
        bandwidth / 1e9,
        mem_bound
    );
    let _ = writeln!(
        s,
        "  int8 matmul throughput {:8.1} GOP/s -> decode at most {:8.1} tokens/s (compute), prefill at most {:8.1} tokens/s",
        int8_ops / 1e9,
        decode_compute,
        prefill_compute
    );
    let _ = writeln!(
        s,
        "  so decode is limited to {:.1} tokens/s by {}",
        mem_bound.min(decode_compute),
        if mem_bound < decode_compute { "memory" } else { "compute" }
    );
    if let Some((pp, tg)) = measured {
        let _ = writeln!(
            s,
            "  measured (bench): prefill {pp:.1} tokens/s ({:.0}% of the compute bound), decode {tg:.1} tokens/s ({:.0}% of the bound)",
            100.0 * pp / prefill_compute,
            100.0 * tg / mem_bound.min(decode_compute)
        );
    }
    s
}

/// Multiply-add throughput (x2, as FLOPs) of the best kernels on a Q8_0 matrix that stays in
/// cache, 64 activation rows at a time, in the layout the model would run it in (interleaved
/// where the level has kernels for it): the compute ceiling of prefill.
pub fn measure_int8_ops() -> f64 {
    use ferrite_kernels::{matmul, ActBuf, GgmlType, Kernels, Matrix};
    let (rows, cols, n) = (2048usize, 2048usize, 64usize);
    let x: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-3).collect();
    let mut w = vec![0u8; GgmlType::Q8_0.row_bytes(cols).unwrap_or(0) * rows];
    if ferrite_kernels::quantize(GgmlType::Q8_0, &x, &mut w).is_err() {
        return 0.0;
    }
    let k = Kernels::best();
    let (layout, w) = match k.preferred_layout(GgmlType::Q8_0, rows, cols) {
        Some(_) => match ferrite_kernels::repack::repack(GgmlType::Q8_0, rows, cols, &w) {
            Some(packed) => packed,
            None => return 0.0,
        },
        None => (ferrite_kernels::repack::Layout::Rows, w),
    };
    let Ok(m) = Matrix::with_layout(GgmlType::Q8_0, rows, cols, layout, &w) else { return 0.0 };
    let a: Vec<f32> = (0..n * cols).map(|i| ((i * 31 % 200) as f32 - 100.0) * 1e-2).collect();
    let mut y = vec![0f32; n * rows];
    let mut buf = ActBuf::new();
    let _ = matmul(k, &m, &a, n, &mut y, &mut buf);
    let mut best = 0f64;
    for _ in 0..5 {
        let t = std::time::Instant::now();
        for _ in 0..4 {
            let _ = matmul(k, &m, &a, n, &mut y, &mut buf);
        }
        best = best.max(4.0 * 2.0 * (rows * cols * n) as f64 / t.elapsed().as_secs_f64());
    }
    best
}
