//! Runs one kernel many times, for counting the instructions it executes per block (under
//! qemu with an instruction-counting plugin: `scripts/neon-insns.sh`).
//!   insns TYPE one|tile REPS   (REPS = 0 measures the set-up alone)
use ferrite_kernels::{ActBuf, ActType, GgmlType, Kernels};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(ty), Some(mode), Some(reps)) = (
        args.get(1).and_then(|t| GgmlType::from_name(t)),
        args.get(2),
        args.get(3).and_then(|r| r.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: insns TYPE one|tile REPS");
        std::process::exit(2);
    };
    let k = Kernels::best();
    let cols = 4096;
    let row_bytes = ty.row_bytes(cols).expect("a block type");
    // Bytes of a fixed pattern with every f16 scale set to 1.0 would need per-type offsets;
    // the kernels have no data-dependent branches, so any bytes do for counting.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let rows: Vec<Vec<u8>> = (0..4)
        .map(|_| {
            (0..row_bytes)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 24) as u8
                })
                .collect()
        })
        .collect();
    let x: Vec<f32> = (0..2 * cols).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut buf = ActBuf::new();
    let a = buf.quantize(ActType::for_weight(ty).expect("a weight type"), &x);
    let acts = [a.row(0, cols), a.row(1, cols)];
    let w = [&rows[0][..], &rows[1][..], &rows[2][..], &rows[3][..]];
    let mut sink = 0f32;
    match mode.as_str() {
        "one" => {
            let dot = k.dot(ty).expect("a dot kernel");
            for _ in 0..reps {
                for act in acts {
                    for row in w {
                        sink += dot(row, act);
                    }
                }
            }
        }
        _ => {
            let tile = k.dot4x2(ty).expect("a 4x2 kernel at this level");
            for _ in 0..reps {
                sink += tile(w, acts).iter().flatten().sum::<f32>();
            }
        }
    }
    println!(
        "{} {ty} {mode} x{reps}: 8 products of {} blocks each per rep ({sink})",
        k.name,
        cols / ty.block_size()
    );
}
