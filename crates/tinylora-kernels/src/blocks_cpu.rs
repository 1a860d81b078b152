//! The block products on burn's Flex CPU backend, in Rust: the same split as the WGSL kernels
//! (`crate::blocks`). A few rows of x: each row of W is decoded once into a buffer that stays
//! in the core's cache and dotted with every row of x, rows of W spread over the cores. More
//! rows: W decoded to f32 once per call (in parallel) and Flex's own matmul.

use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::ops::FloatTensorOps;
use burn::backend::{Flex, TensorMetadata};
use burn::tensor::{Bytes, DType, Shape};
use rayon::prelude::*;
use tinylora_formats::quant::{GgmlType, dequantize_into};

use crate::BlockBackend;
use crate::blocks::{block_type, check_row_words};
use crate::lane_sums::lane_sums;

/// Most rows of x the row-by-row product takes on the CPU (more: W decoded whole, then Flex's
/// matmul). Measured on Qwen2.5-Coder-0.5B, decoding 16 sequences (benches/README.md).
const CPU_MATVEC_MAX_ROWS: usize = 16;

/// Rows of W one task decodes (a task's share of the work is then large enough to pay for
/// its scheduling).
const ROWS_PER_TASK: usize = 16;

/// The blocks' bytes with their row layout.
struct Rows<'a> {
    bytes: &'a [u8],
    ty: GgmlType,
    rows: usize,
    d_in: usize,
    /// Bytes from one row to the next (whole u32 words).
    stride: usize,
    /// Bytes of a row's blocks.
    row_len: usize,
}

impl<'a> Rows<'a> {
    fn new(blocks: &'a FlexTensor, ty: u32, d_in: usize) -> Self {
        let ty = block_type(ty);
        let [rows, words] = blocks.shape().dims();
        assert!(
            blocks.is_contiguous() && blocks.dtype().size() == 4,
            "block_matmul: blocks must be contiguous 32-bit words, not {:?}",
            blocks.dtype()
        );
        check_row_words("block_matmul", ty, d_in, words);
        let bytes = &blocks.bytes()[..rows * words * 4];
        Rows {
            bytes,
            ty,
            rows,
            d_in,
            stride: words * 4,
            row_len: ty.bytes_for(d_in).expect("checked above"),
        }
    }

    /// Row `r`'s bytes.
    #[inline(always)]
    fn row(&self, r: usize) -> &[u8] {
        let start = r * self.stride;
        &self.bytes[start..start + self.row_len]
    }

    /// Row `r` decoded into `out` (`d_in` values).
    #[inline(always)]
    fn decode_row(&self, r: usize, out: &mut [f32]) {
        dequantize_into(self.ty, self.row(r), out);
    }

    /// W `[rows, d_in]` as f32.
    fn decode_all(&self) -> Vec<f32> {
        let mut w = vec![0.0f32; self.rows * self.d_in];
        w.par_chunks_mut(self.d_in * ROWS_PER_TASK)
            .enumerate()
            .for_each(|(task, chunk)| {
                for (i, row) in chunk.chunks_exact_mut(self.d_in).enumerate() {
                    self.decode_row(task * ROWS_PER_TASK + i, row);
                }
            });
        w
    }
}

/// Σ a_k b_k with sixteen independent partial sums (vectorized by the compiler).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (acc, tail) = lane_sums::<f32, 16>(a, b);
    acc.iter().sum::<f32>() + tail
}

fn f32_tensor(values: Vec<f32>, shape: [usize; 2]) -> FlexTensor {
    FlexTensor::new(
        Bytes::from_elems(values),
        Layout::contiguous(Shape::from(shape)),
        DType::F32,
    )
}

/// yᵀ rows `first..` (`out` holds N values a row): each row of W decoded into `buf` (it
/// stays in the core's cache), then dotted with the N rows of x.
#[inline(always)]
fn matvec_rows(x: &[f32], n: usize, w: &Rows, first: usize, out: &mut [f32], buf: &mut [f32]) {
    for (i, o) in out.chunks_exact_mut(n).enumerate() {
        w.decode_row(first + i, buf);
        for (t, o) in o.iter_mut().enumerate() {
            *o = dot(&x[t * w.d_in..(t + 1) * w.d_in], buf);
        }
    }
}

/// [`matvec_rows`] compiled for AVX2 (eight lanes a vector instead of SSE2's four).
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn matvec_rows_avx2(x: &[f32], n: usize, w: &Rows, first: usize, out: &mut [f32], buf: &mut [f32]) {
    matvec_rows(x, n, w, first, out, buf)
}

/// [`matvec_rows`] on the widest vector unit the CPU has.
fn matvec_rows_best(x: &[f32], n: usize, w: &Rows, first: usize, out: &mut [f32], buf: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was just detected
        return unsafe { matvec_rows_avx2(x, n, w, first, out, buf) };
    }
    matvec_rows(x, n, w, first, out, buf)
}

/// y = x Wᵀ `[N, rows]` for a few rows of x, W decoded row by row.
fn matvec(x: &[f32], n: usize, w: &Rows) -> FlexTensor {
    // yᵀ [rows, N], row by row of W, then transposed
    let mut yt = vec![0.0f32; w.rows * n];
    yt.par_chunks_mut(n * ROWS_PER_TASK).enumerate().for_each_init(
        || vec![0.0f32; w.d_in],
        |buf, (task, out)| matvec_rows_best(x, n, w, task * ROWS_PER_TASK, out, buf),
    );
    let mut y = vec![0.0f32; n * w.rows];
    for (r, row) in yt.chunks_exact(n).enumerate() {
        for (t, &v) in row.iter().enumerate() {
            y[t * w.rows + r] = v;
        }
    }
    f32_tensor(y, [n, w.rows])
}

impl BlockBackend for Flex {
    fn block_matmul(x: FlexTensor, blocks: FlexTensor, ty: u32, d_in: usize) -> FlexTensor {
        let w = Rows::new(&blocks, ty, d_in);
        let [n, xd] = x.shape().dims();
        assert!(
            xd == d_in && x.dtype() == DType::F32,
            "block_matmul: x must be f32 [N, {d_in}], not [{n}, {xd}] {:?}",
            x.dtype()
        );
        if n <= CPU_MATVEC_MAX_ROWS {
            let x = x.to_contiguous();
            return matvec(x.storage::<f32>(), n, &w);
        }
        let wt = f32_tensor(w.decode_all(), [w.rows, d_in]);
        Self::float_matmul(x, Self::float_transpose(wt))
    }

    fn block_decode(blocks: FlexTensor, ty: u32, d_in: usize) -> FlexTensor {
        let w = Rows::new(&blocks, ty, d_in);
        f32_tensor(w.decode_all(), [w.rows, d_in])
    }
}
