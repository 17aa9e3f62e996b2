//! Runs one kernel many times, for counting the instructions it executes per block (under
//! qemu with an instruction-counting plugin: `scripts/neon-insns.sh`).
//!   insns TYPE one|rows|tile|tile44 REPS   (REPS = 0 measures the set-up alone; tile44 makes
//!   16 products per rep, the others 8)
//!   insns attend|attend-ref|many|many-ref REPS   (attention of one head, hd 64, over 512
//!   positions: `attend_f16` or its reference; `attend_many` of 32 queries or its reference)
use ferrite_kernels::{ActBuf, ActType, GgmlType, Kernels};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let (Some(mode), Some(reps)) = (args.get(1), args.get(2).and_then(|r| r.parse::<usize>().ok())) {
        if mode.starts_with("attend") || mode.starts_with("many") {
            return attention(mode, reps);
        }
    }
    let (Some(ty), Some(mode), Some(reps)) = (
        args.get(1).and_then(|t| GgmlType::from_name(t)),
        args.get(2),
        args.get(3).and_then(|r| r.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: insns TYPE one|rows|tile|tile44 REPS");
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
        "rows" => {
            let many = k.rows_decode(ty).expect("a rows kernel at this level");
            let bytes: Vec<u8> = rows.concat();
            let mut out = [0f32; 4];
            for _ in 0..reps {
                for act in acts {
                    assert!(many(&bytes, act, &mut out));
                    sink += out.iter().sum::<f32>();
                }
            }
        }
        "tile44" => {
            let tile = k.dot4x4(ty).expect("a 4x4 kernel at this level");
            let x4: Vec<f32> = (0..4 * cols).map(|i| (i as f32 * 0.29).cos()).collect();
            let a4 = buf.quantize(ActType::for_weight(ty).expect("a weight type"), &x4);
            let acts4 = [a4.row(0, cols), a4.row(1, cols), a4.row(2, cols), a4.row(3, cols)];
            for _ in 0..reps {
                sink += tile(w, acts4).iter().flatten().sum::<f32>();
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

/// One head's attention (hd 64) over 512 cached positions, `reps` times.
fn attention(mode: &str, reps: usize) {
    use ferrite_kernels::attention::{
        attend_f16, attend_f16_ref, attend_many, attend_many_ref, DotOrder, KvRows,
    };
    use half::f16;
    let (hd, len) = (64, 512);
    let cache: Vec<f16> =
        (0..hd * len).map(|i| f16::from_f32(((i * 7919) % 1000) as f32 / 1000.0 - 0.5)).collect();
    let rows = KvRows { data: &cache, stride: hd, offset: 0 };
    let q: Vec<Vec<f32>> =
        (0..32).map(|j| (0..hd).map(|i| ((i + j) as f32 * 0.37).sin()).collect()).collect();
    let k = Kernels::best();
    let mut out = vec![vec![0f32; hd]; 32];
    for _ in 0..reps {
        match mode {
            "attend" => attend_f16(k, &q[0], rows, rows, len, 0.125, &mut out[0]),
            "attend-ref" => attend_f16_ref(DotOrder::of(k), &q[0], rows, rows, len, 0.125, &mut out[0]),
            _ => {
                let qs: Vec<&[f32]> = q.iter().map(|v| v.as_slice()).collect();
                let lens: Vec<usize> = (0..32).map(|i| len - 31 + i).collect();
                let mut outs: Vec<&mut [f32]> = out.iter_mut().map(|o| o.as_mut_slice()).collect();
                match mode {
                    "many" => attend_many(k, &qs, &lens, rows, rows, 0.125, &mut outs),
                    _ => attend_many_ref(&qs, &lens, rows, rows, 0.125, &mut outs),
                }
            }
        }
    }
    println!("{} {mode} x{reps} ({})", k.name, out[0][0]);
}
