//! Kernel benchmarks: `cargo bench --bench kernels` (FERRITE_KERNELS picks the level).
//! - vec_dot: one 4096-wide row pair per type (from cache).
//! - matvec TYPE/14336x4096: decode-shaped, rotating over >= 1 GiB of distinct matrices so the
//!   weights stream from memory; throughput is weight bytes (GB/s). Matrices are in the
//!   layout the model runs them in (repacked where the level prefers, as at model load).
//! - matvec_cached TYPE/2048x2048: the same product on one matrix that stays in the last-level
//!   cache: the kernel's compute ceiling (decode is memory-bound only where this is well above
//!   the memory's bandwidth).
//! - matmul TYPE/512x4096x4096: prefill-shaped; throughput in multiply-adds
//!   (`FERRITE_MATMUL_SHAPE=NxROWSxCOLS` for another shape).
//! - memory read/4GiB: the roofline, wide loads into 4 accumulators on all threads.

mod common;

use common::{prepared, random_weights};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferrite::kernels::{matmul, vec_dot, ActBuf, ActType, GgmlType, Kernels, Matrix};

const TYPES: [GgmlType; 8] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q8_0,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_XS,
];

fn vec_dot_bench(c: &mut Criterion) {
    let k = Kernels::best();
    let mut g = c.benchmark_group("vec_dot");
    let n = 4096;
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::IQ4_NL,
        GgmlType::IQ4_XS,
        GgmlType::F16,
        GgmlType::BF16,
    ] {
        let w = random_weights(ty, 1, n, 7);
        let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut buf = ActBuf::new();
        let a = buf.quantize(ActType::for_weight(ty).unwrap(), &x);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::from_parameter(ty.name().to_lowercase()), |b| {
            b.iter(|| vec_dot(k, ty, std::hint::black_box(&w), a).unwrap())
        });
    }
    g.finish();
}

fn matvec_bench(c: &mut Criterion) {
    let k = Kernels::best();
    let mut g = c.benchmark_group("matvec");
    g.sample_size(20);
    let (rows, cols) = (14336, 4096);
    for ty in TYPES {
        let (layout, one) = prepared(k, ty, rows, cols, random_weights(ty, rows, cols, 11));
        let count = ((1usize << 30) / one.len()).max(2) + 1;
        // Distinct copies (different addresses), so each call reads from memory, not cache.
        let mats: Vec<Vec<u8>> = (0..count).map(|_| one.clone()).collect();
        let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut y = vec![0f32; rows];
        let mut buf = ActBuf::new();
        let mut i = 0;
        g.throughput(Throughput::Bytes(one.len() as u64));
        g.bench_function(BenchmarkId::new(ty.name().to_lowercase(), format!("{rows}x{cols}")), |b| {
            b.iter(|| {
                let m = Matrix::with_layout(ty, rows, cols, layout, &mats[i % count]).unwrap();
                i += 1;
                matmul(k, &m, &x, 1, &mut y, &mut buf).unwrap();
            })
        });
    }
    g.finish();
}

fn matvec_cached_bench(c: &mut Criterion) {
    let k = Kernels::best();
    let mut g = c.benchmark_group("matvec_cached");
    g.sample_size(50);
    let (rows, cols) = (2048, 2048);
    for ty in TYPES {
        let (layout, w) = prepared(k, ty, rows, cols, random_weights(ty, rows, cols, 17));
        let m = Matrix::with_layout(ty, rows, cols, layout, &w).unwrap();
        let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut y = vec![0f32; rows];
        let mut buf = ActBuf::new();
        g.throughput(Throughput::Bytes(w.len() as u64));
        g.bench_function(BenchmarkId::new(ty.name().to_lowercase(), format!("{rows}x{cols}")), |b| {
            b.iter(|| matmul(k, &m, &x, 1, &mut y, &mut buf).unwrap())
        });
    }
    g.finish();
}

fn matmul_bench(c: &mut Criterion) {
    let k = Kernels::best();
    let mut g = c.benchmark_group("matmul");
    g.sample_size(10);
    // FERRITE_MATMUL_SHAPE=NxROWSxCOLS measures another shape (e.g. a short K that stays in cache).
    let shape = std::env::var("FERRITE_MATMUL_SHAPE").ok().and_then(|s| {
        let v: Vec<usize> = s.split('x').filter_map(|d| d.parse().ok()).collect();
        (v.len() == 3 && v.iter().all(|&d| d > 0)).then(|| (v[0], v[1], v[2]))
    });
    let (n, rows, cols) = shape.unwrap_or((512, 4096, 4096));
    for ty in TYPES {
        let (layout, w) = prepared(k, ty, rows, cols, random_weights(ty, rows, cols, 13));
        let m = Matrix::with_layout(ty, rows, cols, layout, &w).unwrap();
        let x: Vec<f32> = (0..n * cols).map(|i| (i as f32 * 0.013).sin()).collect();
        let mut y = vec![0f32; n * rows];
        let mut buf = ActBuf::new();
        g.throughput(Throughput::Elements((n * rows * cols) as u64));
        g.bench_function(BenchmarkId::new(ty.name().to_lowercase(), format!("{n}x{rows}x{cols}")), |b| {
            b.iter(|| matmul(k, &m, &x, n, &mut y, &mut buf).unwrap())
        });
    }
    g.finish();
}

fn memory_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("memory");
    g.sample_size(10);
    let bytes = 4usize << 30;
    let buf = vec![1u8; bytes];
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("read/4GiB", |b| b.iter(|| ferrite::kernels::memory::read_all(&buf)));
    g.finish();
}

criterion_group!(benches, vec_dot_bench, matvec_bench, matvec_cached_bench, matmul_bench, memory_bench);
criterion_main!(benches);
