//! Decode matvec against the memory roofline, measured in pairs: `cargo bench --bench roofline`
//! (FERRITE_KERNELS picks the level; `-- q4_0 q8_0` limits the types).
//!
//! A shared VM's read bandwidth drifts by a quarter from minute to minute, so a matvec rate
//! and a roofline measured minutes apart (criterion's `matvec` and `memory` groups) can be
//! compared only loosely. Here each round reads a set of distinct 14336x4096 matrices (>= 1 GiB
//! in all, in the layout the model uses) twice, back to back: once with the roofline reader
//! (`memory::read_all`: wide loads, 4 accumulators, all threads) and once through `matmul`
//! with one activation row, as a decode step does. Same bytes, same pages, tens of
//! milliseconds apart: the ratio of the two rates is the kernel's share of the bandwidth the
//! machine gave at that moment. Prints per type the median ratio over the rounds, its range,
//! and both rates.

mod common;

use common::{prepared, random_weights};
use ferrite::kernels::{matmul, memory, ActBuf, GgmlType, Kernels, Matrix};
use std::time::Instant;

const ROUNDS: usize = 15;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let k = Kernels::best();
    let (rows, cols) = (14336, 4096);
    let types =
        [GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q4_1, GgmlType::Q5_K];
    println!(
        "kernels {}, {} threads, {ROUNDS} rounds per type, matrices {rows}x{cols}",
        k.level.name(),
        rayon::current_num_threads()
    );
    println!(
        "| type | matvec GiB/s (median) | roofline GiB/s (median) | matvec / roofline: median | min | max |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for ty in types {
        let name = ty.name().to_lowercase();
        if !args.is_empty() && !args.contains(&name) {
            continue;
        }
        let (layout, one) = prepared(k, ty, rows, cols, random_weights(ty, rows, cols, 11));
        let count = ((1usize << 30) / one.len()).max(2) + 1;
        let total = (count * one.len()) as f64;
        let mats: Vec<Vec<u8>> = (0..count).map(|_| one.clone()).collect();
        let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut y = vec![0f32; rows];
        let mut buf = ActBuf::new();
        let mut sink = 0u64;
        let (mut mv, mut rd, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..=ROUNDS {
            let t = Instant::now();
            for m in &mats {
                sink ^= memory::read_all(m);
            }
            let read = total / t.elapsed().as_secs_f64();
            let t = Instant::now();
            for w in &mats {
                let m = Matrix::with_layout(ty, rows, cols, layout, w).expect("matrix");
                matmul(k, &m, &x, 1, &mut y, &mut buf).expect("matvec");
            }
            let kern = total / t.elapsed().as_secs_f64();
            // Round 0 warms the pages and the pool.
            if round > 0 {
                mv.push(kern / (1u64 << 30) as f64);
                rd.push(read / (1u64 << 30) as f64);
                ratio.push(kern / read);
            }
        }
        std::hint::black_box((sink, &y));
        let (lo, hi) = ratio.iter().fold((f64::MAX, 0f64), |(l, h), &r| (l.min(r), h.max(r)));
        println!(
            "| {name} | {:.1} | {:.1} | {:.0}% | {:.0}% | {:.0}% |",
            median(&mut mv),
            median(&mut rd),
            100.0 * median(&mut ratio),
            100.0 * lo,
            100.0 * hi
        );
    }
}
