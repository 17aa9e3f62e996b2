//! One thread's repack speed, as at model load: a matrix's rows from memory (1 GiB of
//! distinct source, so nothing comes from cache) into its interleaved copy, with the
//! model's ordinary stores, whose pages are touched beforehand (the kernel's zeroing of
//! fresh pages is not counted here). (Numbers in BENCHMARKS.md before the fourth session of
//! 2026-12-05 were taken with non-temporal stores.)
//!
//! `cargo run --release --example repack_speed -- TYPE [ROWS] [COLS]` (default 14336 x 4096,
//! an 8B FFN matrix). Prints GB/s of source bytes, best of 3 passes.

use ferrite::kernels::repack::{repack_into, repacked_len, Stores};
use ferrite::kernels::GgmlType;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: repack_speed TYPE [ROWS] [COLS]";
    let ty = args.get(1).and_then(|t| GgmlType::from_name(t)).ok_or_else(|| anyhow::anyhow!(usage))?;
    let rows: usize = args.get(2).map_or(Ok(14336), |v| v.parse())?;
    let cols: usize = args.get(3).map_or(Ok(4096), |v| v.parse())?;
    let rb = ty.row_bytes(cols).ok_or_else(|| anyhow::anyhow!("{cols} columns do not fit {ty}"))?;
    let len =
        repacked_len(ty, rows, cols).ok_or_else(|| anyhow::anyhow!("{ty} {rows}x{cols} does not repack"))?;
    let copies = (1usize << 30).div_ceil(rb * rows);
    // Patterned bytes with small finite f16 fields: the repack moves bytes, whatever they are.
    let src: Vec<Vec<u8>> = (0..copies)
        .map(|c| {
            let mut v: Vec<u8> = (0..rb * rows).map(|i| ((i * 37 + c) % 251) as u8).collect();
            for blk in v.chunks_exact_mut(ty.type_size()) {
                blk[..2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
            }
            v
        })
        .collect();
    let mut dst = vec![1u8; len];
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        for s in &src {
            repack_into(ty, rows, cols, s, &mut dst, Stores::Cached).expect("repack");
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    let bytes = (copies * rb * rows) as f64;
    println!("{ty} {rows}x{cols}: {:.2} GB/s ({copies} matrices, {:.0} ms)", bytes / best / 1e9, best * 1e3);
    Ok(())
}
