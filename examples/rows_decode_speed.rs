//! One thread's decode speed on a matrix in the file's row layout, from cache: the kernel's
//! compute ceiling without the memory's (BENCHMARKS.md, "Decode kernels over many rows").
//!
//! `cargo run --release --example rows_decode_speed -- TYPE [ROWS] [COLS]` (default 512 x
//! 2048, about 0.3-0.6 MiB: in L2), `FERRITE_KERNELS` picks the level. Best of 3000 calls.
//! Types without a quantizer (IQ4_NL, IQ4_XS, Q2_K, Q3_K) get patterned bytes with a finite
//! first f16 field: their sums are meaningless, their cost is not.

use ferrite::kernels::{matmul, quantize, ActBuf, GgmlType, Kernels, Matrix};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: rows_decode_speed TYPE [ROWS] [COLS]";
    let ty = args.get(1).and_then(|t| GgmlType::from_name(t)).ok_or_else(|| anyhow::anyhow!(usage))?;
    let rows: usize = args.get(2).map_or(Ok(512), |v| v.parse())?;
    let cols: usize = args.get(3).map_or(Ok(2048), |v| v.parse())?;
    ferrite::kernels::pool::set_threads(1);
    let k = Kernels::best();
    let rb = ty.row_bytes(cols).ok_or_else(|| anyhow::anyhow!("{cols} columns do not fit {ty}"))?;
    let mut row = vec![0u8; rb];
    let values: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.37).sin() * 0.05).collect();
    if quantize(ty, &values, &mut row).is_err() {
        for (i, b) in row.iter_mut().enumerate() {
            *b = (i * 37 % 251) as u8;
        }
        for blk in row.chunks_exact_mut(ty.type_size()) {
            blk[..2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
        }
    }
    let w = row.repeat(rows);
    let m = Matrix::new(ty, rows, cols, &w)?;
    let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.11).cos()).collect();
    let (mut y, mut buf) = (vec![0f32; rows], ActBuf::new());
    let mut best = f64::MAX;
    for _ in 0..3000 {
        let t = Instant::now();
        matmul(k, &m, &x, 1, &mut y, &mut buf)?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    let gib = w.len() as f64 / best / (1u64 << 30) as f64;
    println!("{} {ty} {rows}x{cols}: best {:.1} us, {gib:.1} GiB/s", k.name, best * 1e6);
    Ok(())
}
