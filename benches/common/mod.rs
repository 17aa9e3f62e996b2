//! What the bench targets share: random weight matrices that cost what real ones do, in the
//! layout the model runs them in.

use ferrite::kernels::repack::Layout;
use ferrite::kernels::{GgmlType, Kernels};

/// Random weights of a type, `rows` x `cols` (a few rows quantized properly, then tiled).
pub fn random_weights(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let n = rows * cols;
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    // Quantize a few random rows properly, then tile them: same cost as real weights.
    let pool_rows = 8;
    let rb = ty.row_bytes(cols).unwrap();
    let mut pool = vec![0u8; rb * pool_rows];
    for r in 0..pool_rows {
        let x: Vec<f32> =
            (0..cols).map(|_| ((next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1).collect();
        let row = &mut pool[r * rb..(r + 1) * rb];
        match ty {
            GgmlType::F32 => row.copy_from_slice(&x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>()),
            // No quantizer (yet): random quant bits with small finite f16 scales; the dot
            // product costs the same whatever the bits.
            GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::IQ4_NL | GgmlType::IQ4_XS => {
                row.iter_mut().for_each(|b| *b = next() as u8);
                let scales: &[usize] = match ty {
                    GgmlType::Q2_K => &[80, 82],
                    GgmlType::Q3_K => &[108],
                    // IQ4_NL and IQ4_XS: d first.
                    _ => &[0],
                };
                for blk in row.chunks_exact_mut(ty.type_size()) {
                    for &off in scales {
                        blk[off..off + 2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
                    }
                }
            }
            _ => ferrite::kernels::scalar::quantize::quantize(ty, &x, row).unwrap(),
        }
    }
    let mut out = Vec::with_capacity(rb * rows);
    for _ in 0..rows {
        let r = (next() % pool_rows as u64) as usize;
        out.extend_from_slice(&pool[r * rb..(r + 1) * rb]);
    }
    assert_eq!(out.len(), ty.row_bytes(n / rows).unwrap() * rows);
    out
}

/// A matrix's bytes in the layout the level prefers (what `Model::load` does); the file's
/// row layout under `FERRITE_NO_REPACK`, as the model.
pub fn prepared(k: &Kernels, ty: GgmlType, rows: usize, cols: usize, w: Vec<u8>) -> (Layout, Vec<u8>) {
    let layout =
        k.preferred_layout(ty, rows, cols).filter(|_| std::env::var_os("FERRITE_NO_REPACK").is_none());
    match layout {
        Some(_) => ferrite::kernels::repack::repack(ty, rows, cols, &w).expect("repackable"),
        None => (Layout::Rows, w),
    }
}
