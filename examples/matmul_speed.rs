//! Prefill-shaped matmul speed from memory: N activation rows against a ROWS x COLS matrix,
//! rotating over enough distinct matrices (repacked as at model load) that the weights come
//! from memory, as in a model's prompt. For A/B comparisons of kernel changes with less noise
//! than a whole model's `bench` (`scripts/ab-pair.sh` runs two builds of it side by side).
//!
//! `cargo run --release --example matmul_speed -- TYPE [N] [ROWS] [COLS] [THREADS] [hot]`
//! (default 64 x 14336 x 4096, 1 thread; `hot`: one matrix, from cache, for the kernel's own
//! speed); `FERRITE_KERNELS` picks the level. Prints the best of many short runs in GMAC/s
//! (multiply-adds).

use ferrite::kernels::repack::{repack, Layout};
use ferrite::kernels::{matmul, quantize, ActBuf, GgmlType, Kernels, Matrix};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: matmul_speed TYPE [N] [ROWS] [COLS] [THREADS] [hot]";
    let ty = args.get(1).and_then(|t| GgmlType::from_name(t)).ok_or_else(|| anyhow::anyhow!(usage))?;
    let arg = |i: usize, d: usize| args.get(i).map_or(Ok(d), |v| v.parse::<usize>());
    let (n, rows, cols, threads) = (arg(2, 64)?, arg(3, 14336)?, arg(4, 4096)?, arg(5, 1)?);
    ferrite::kernels::pool::set_threads(threads);
    let k = Kernels::best();
    let rb = ty.row_bytes(cols).ok_or_else(|| anyhow::anyhow!("{cols} columns do not fit {ty}"))?;
    // Eight distinct quantized rows, tiled: the cost of real weights.
    let mut pool = vec![0u8; 8 * rb];
    for (r, row) in pool.chunks_exact_mut(rb).enumerate() {
        let values: Vec<f32> = (0..cols).map(|i| ((i * 7 + r * 13) as f32 * 0.37).sin() * 0.05).collect();
        if quantize(ty, &values, row).is_err() {
            anyhow::bail!("no quantizer for {ty}");
        }
    }
    let hot = args.get(6).is_some_and(|a| a == "hot");
    let copies = if hot { 1 } else { (1usize << 30).div_ceil(rb * rows).max(2) };
    let mats: Vec<(Layout, Vec<u8>)> = (0..copies)
        .map(|c| {
            let w: Vec<u8> = (0..rows).flat_map(|r| pool[(r + c) % 8 * rb..][..rb].iter().copied()).collect();
            match k.preferred_layout(ty, rows, cols) {
                Some(_) => repack(ty, rows, cols, &w).expect("repackable"),
                None => (Layout::Rows, w),
            }
        })
        .collect();
    let x: Vec<f32> = (0..n * cols).map(|i| (i as f32 * 0.013).sin()).collect();
    let (mut y, mut buf) = (vec![0f32; n * rows], ActBuf::new());
    // The best of many short runs of 8 matrices (rotating through all of them, so the
    // weights still come from memory): this machine's neighbours slow whole seconds at a
    // time, and the fastest short run is the one least disturbed.
    let mut best = f64::MAX;
    for _ in 0..if hot { 200 } else { 5 } {
        for run in mats.chunks(8) {
            let t = Instant::now();
            for (layout, w) in run {
                matmul(k, &Matrix::with_layout(ty, rows, cols, *layout, w)?, &x, n, &mut y, &mut buf)?;
            }
            best = best.min(t.elapsed().as_secs_f64() / run.len() as f64);
        }
    }
    let gmac = (n * rows * cols) as f64 / best / 1e9;
    println!("{} {ty} {n}x{rows}x{cols} {threads}t: {:.0} us, {gmac:.0} GMAC/s", k.name, best * 1e6);
    Ok(())
}
