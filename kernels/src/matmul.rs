//! Matrix-vector (decode) and matrix-matrix (prefill) products of a quantized weight matrix
//! with f32 activations. The activations are quantized once per call into a reusable
//! `ActBuf`; weight rows are split across rayon workers in chunks.
//!
//! Weights: `rows` rows of `cols` elements, row-major as stored in GGUF (each row a run of
//! whole blocks). Output: `y[i * rows + r]` = row r of the weights . activation row i.

use rayon::prelude::*;

use crate::dispatch::{ActBuf, ActRef, ActType, DotFn, Kernels};
use crate::types::GgmlType;
use crate::KernelError;

/// Rows per rayon task: big enough to amortise scheduling, small enough to balance 2-64
/// threads on the smallest matrices we see (576 rows).
const ROWS_PER_TASK: usize = 16;

/// A weight matrix: type, shape and bytes (zero-copy from the file).
#[derive(Clone, Copy, Debug)]
pub struct Matrix<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
}

impl<'a> Matrix<'a> {
    pub fn new(ty: GgmlType, rows: usize, cols: usize, data: &'a [u8]) -> Result<Matrix<'a>, KernelError> {
        let bad = KernelError::BadLength { ty, bytes: data.len(), elems: rows.saturating_mul(cols) };
        let row_bytes = ty.row_bytes(cols).ok_or(bad.clone())?;
        if row_bytes.checked_mul(rows) != Some(data.len()) {
            return Err(bad);
        }
        Ok(Matrix { ty, rows, cols, data })
    }

    pub fn row_bytes(&self) -> usize {
        self.data.len() / self.rows.max(1)
    }

    pub fn row(&self, r: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }
}

fn prepare(k: &Kernels, w: &Matrix) -> Result<(DotFn, ActType), KernelError> {
    let unsupported = KernelError::Unsupported { ty: w.ty, what: "matrix multiplication" };
    let act = ActType::for_weight(w.ty).ok_or(unsupported.clone())?;
    let dot = k.dot(w.ty).ok_or(unsupported)?;
    if !w.cols.is_multiple_of(act.block()) {
        return Err(KernelError::BadLength { ty: w.ty, bytes: w.data.len(), elems: w.cols });
    }
    Ok((dot, act))
}

/// y = W x for one activation row (decode).
pub fn matvec(
    k: &Kernels,
    w: &Matrix,
    x: &[f32],
    y: &mut [f32],
    scratch: &mut ActBuf,
) -> Result<(), KernelError> {
    matmul(k, w, x, 1, y, scratch)
}

/// Raw output pointer shared by the workers; each writes a disjoint set of elements.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: workers write disjoint elements (distinct weight rows), and the pointer outlives
// the parallel section (it borrows the output for the whole call).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// Y = X W^T for `n` activation rows (prefill). Each task takes a chunk of weight rows and
/// runs every activation row against them while they are in cache.
pub fn matmul(
    k: &Kernels,
    w: &Matrix,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    scratch: &mut ActBuf,
) -> Result<(), KernelError> {
    matmul_multi(k, &[*w], x, n, &mut [y], scratch)
}

/// Several matrices that share an input (Q, K and V; gate and up): the input is quantized
/// once and all their rows are spread over the workers in one parallel section.
/// `ys[j]` receives `n x ws[j].rows` values.
pub fn matmul_multi(
    k: &Kernels,
    ws: &[Matrix],
    x: &[f32],
    n: usize,
    ys: &mut [&mut [f32]],
    scratch: &mut ActBuf,
) -> Result<(), KernelError> {
    let Some(first) = ws.first() else { return Ok(()) };
    let mut dots = Vec::with_capacity(ws.len());
    let (_, act) = prepare(k, first)?;
    for (w, y) in ws.iter().zip(ys.iter()) {
        let (dot, a) = prepare(k, w)?;
        if a != act || w.cols != first.cols {
            return Err(KernelError::Unsupported {
                ty: w.ty,
                what: "a shared input with a different layout",
            });
        }
        if x.len() != n * w.cols || y.len() != n * w.rows {
            return Err(KernelError::BadLength { ty: w.ty, bytes: x.len() * 4, elems: n * w.cols });
        }
        dots.push(dot);
    }
    if ws.len() != ys.len() {
        return Err(KernelError::BadLength { ty: first.ty, bytes: ys.len(), elems: ws.len() });
    }
    let a = scratch.quantize(act, x);
    let cols = first.cols;
    let outs: Vec<OutPtr> = ys.iter_mut().map(|y| OutPtr(y.as_mut_ptr())).collect();
    // Tasks: (matrix, first row) in chunks of ROWS_PER_TASK rows.
    let mut tasks = Vec::new();
    for (j, w) in ws.iter().enumerate() {
        for r0 in (0..w.rows).step_by(ROWS_PER_TASK) {
            tasks.push((j, r0));
        }
    }
    tasks.par_iter().for_each(|&(j, r0)| {
        let (w, dot, out) = (&ws[j], dots[j], outs[j]);
        let r1 = (r0 + ROWS_PER_TASK).min(w.rows);
        for i in 0..n {
            let ai: ActRef = if n == 1 { a } else { a.row(i, cols) };
            for r in r0..r1 {
                let v = dot(w.row(r), ai);
                // SAFETY: i < n and r < w.rows, so the index is inside ys[j] (length checked
                // to be n * w.rows); only this task writes rows r0..r1 of matrix j.
                unsafe { *out.0.add(i * w.rows + r) = v };
            }
        }
    });
    Ok(())
}
