//! The block products on burn's Flex CPU backend, in Rust: the same split as the WGSL kernels
//! (`crate::blocks`). A few rows of x: each row of W is decoded in vector registers and dotted
//! with the rows of x as it is decoded (`blocks_avx2.rs`; without AVX2, decoded into a buffer
//! that stays in the core's cache), rows of W spread over the cores. Up to
//! [`CPU_PANEL_MAX_ROWS`] rows: W decoded a panel of rows at a time into a buffer that stays in
//! the core's cache, and gemm multiplies x with it there (the decoded W never reaches memory).
//! More rows: W decoded to f32 once per call (in parallel) and Flex's own matmul.

use burn::backend::flex::FlexTensor;
use burn::backend::ops::FloatTensorOps;
use burn::backend::{Flex, TensorMetadata};
use burn::tensor::DType;
use rayon::prelude::*;
use tinylora_formats::quant::{GgmlType, dequantize_into};

use crate::BlockBackend;
use crate::blocks::{block_type, check_row_words};
#[cfg(target_arch = "x86_64")]
use crate::blocks_avx2;
use crate::flex_f32::{dot, tensor};

/// Most rows of x the row-by-row product takes on the CPU (more: the panel product). Measured
/// on Qwen2.5-Coder-0.5B, decoding 16 sequences (benches/README.md).
const CPU_MATVEC_MAX_ROWS: usize = 16;

/// Most rows of x the panel product takes (more: W decoded whole once per call, then Flex's
/// matmul, which uses each decoded value for that many rows). Measured 30–40% faster than the
/// whole-W decode up to 64 rows and about even (−4% to +10%, noisy) from 256 to 1024 rows on
/// SmolLM2's and Qwen's shapes (benches/README.md); it also never holds W whole in f32
/// (Qwen2.5-0.5B's LM head: 545 MB).
const CPU_PANEL_MAX_ROWS: usize = 1024;

/// Bytes of decoded W in a panel, about a core's L2 cache: it stays there while gemm reads it
/// (a panel has at least [`ROWS_PER_TASK`] rows, so rows wider than 4096 values make it larger).
const PANEL_BYTES: usize = 256 * 1024;

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
            .for_each(|(task, chunk)| decode_rows_best(self, task * ROWS_PER_TASK, chunk));
        w
    }
}

/// Rows `first..` of W decoded into `out` (whole rows).
#[inline(always)]
fn decode_rows(w: &Rows, first: usize, out: &mut [f32]) {
    for (i, row) in out.chunks_exact_mut(w.d_in).enumerate() {
        w.decode_row(first + i, row);
    }
}

/// [`decode_rows`] with the AVX2 decoders (`blocks_avx2.rs`) for the types they cover.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn decode_rows_avx2(w: &Rows, first: usize, out: &mut [f32]) {
    if !blocks_avx2::supports(w.ty, w.d_in) {
        return decode_rows(w, first, out);
    }
    for (i, row) in out.chunks_exact_mut(w.d_in).enumerate() {
        // SAFETY: the features are enabled here; a row holds whole blocks (checked by Rows::new)
        unsafe { blocks_avx2::decode_row(w.ty, w.row(first + i), row) };
    }
}

/// [`decode_rows`] on the best code the CPU runs.
fn decode_rows_best(w: &Rows, first: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the features were just detected
        return unsafe { decode_rows_avx2(w, first, out) };
    }
    decode_rows(w, first, out)
}

/// Whether the CPU has AVX2, FMA and F16C, what `blocks_avx2.rs` uses (detected once, then
/// cached by std).
#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    use std::is_x86_feature_detected as has;
    has!("avx2") && has!("fma") && has!("f16c")
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

/// [`matvec_rows`] on AVX2: each row of W decoded in registers (`blocks_avx2.rs`) and
/// dotted with the rows of x, six at a time, as it is decoded. Every group size sums in the
/// same order (two vector sums a row of x), so a sequence's numbers do not depend on how many
/// others share its batch. Types without an AVX2 decoder take [`matvec_rows`] compiled for
/// AVX2.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn matvec_rows_avx2(x: &[f32], n: usize, w: &Rows, first: usize, out: &mut [f32], buf: &mut [f32]) {
    if !blocks_avx2::supports(w.ty, w.d_in) {
        return matvec_rows(x, n, w, first, out, buf);
    }
    let d = w.d_in;
    for (i, o) in out.chunks_exact_mut(n).enumerate() {
        let row = w.row(first + i);
        for (g, o) in o.chunks_mut(6).enumerate() {
            let x = &x[6 * g * d..];
            // SAFETY: the features are enabled here; the row holds whole blocks of d_in values
            // (checked by Rows::new) and x the group's rows
            unsafe {
                use blocks_avx2::row_dots;
                match o.len() {
                    1 => o.copy_from_slice(&row_dots::<1, 2>(w.ty, row, x, d)),
                    2 => o.copy_from_slice(&row_dots::<2, 2>(w.ty, row, x, d)),
                    3 => o.copy_from_slice(&row_dots::<3, 2>(w.ty, row, x, d)),
                    4 => o.copy_from_slice(&row_dots::<4, 2>(w.ty, row, x, d)),
                    5 => o.copy_from_slice(&row_dots::<5, 2>(w.ty, row, x, d)),
                    _ => o.copy_from_slice(&row_dots::<6, 2>(w.ty, row, x, d)),
                }
            }
        }
    }
}

/// [`matvec_rows`] on the best code the CPU runs.
fn matvec_rows_best(x: &[f32], n: usize, w: &Rows, first: usize, out: &mut [f32], buf: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the features were just detected
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
    tensor(y, [n, w.rows])
}

/// A pointer into y shared by the tasks of [`panel_matmul`], which write disjoint columns.
#[derive(Clone, Copy)]
struct Columns(*mut f32);
// SAFETY: each task writes only its own panel's columns of y (see `panel_matmul`)
unsafe impl Send for Columns {}
unsafe impl Sync for Columns {}

impl Columns {
    /// The address of y's column `first` in its first row.
    fn at(self, first: usize) -> *mut f32 {
        self.0.wrapping_add(first)
    }
}

/// y = x Wᵀ `[N, rows]`: W decoded a panel of P rows at a time (P·d_in values, about
/// [`PANEL_BYTES`], and small enough that every core gets two panels where W has the rows),
/// and y's P columns of the panel = x `[N, d_in]` · panelᵀ `[d_in, P]` by gemm on the core
/// that decoded it, panels spread over the cores.
fn panel_matmul(x: &[f32], n: usize, w: &Rows) -> FlexTensor {
    let d = w.d_in;
    let per_core = w.rows.div_ceil(2 * rayon::current_num_threads());
    let p = (PANEL_BYTES / (4 * d).max(1))
        .min(per_core)
        .clamp(ROWS_PER_TASK, 1024);
    let mut y = vec![0.0f32; n * w.rows];
    let columns = Columns(y.as_mut_ptr());
    (0..w.rows.div_ceil(p)).into_par_iter().for_each_init(
        || vec![0.0f32; p * d],
        |buf, panel| {
            let (first, rows) = (panel * p, p.min(w.rows - panel * p));
            let panel_w = &mut buf[..rows * d];
            decode_rows_best(w, first, panel_w); // [rows, d_in]
            // SAFETY: dst is y's columns first..first + rows of its n rows (row stride w.rows),
            // inside y and written by this task only; lhs is x [n, d] (row-major), rhs the
            // panel read as its transpose [d, rows] (element (k, j) at j·d + k)
            unsafe {
                gemm::gemm(
                    n,
                    rows,
                    d,
                    columns.at(first),
                    1,
                    w.rows as isize,
                    false,
                    x.as_ptr(),
                    1,
                    d as isize,
                    panel_w.as_ptr(),
                    d as isize,
                    1,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                )
            };
        },
    );
    tensor(y, [n, w.rows])
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
        if n <= CPU_PANEL_MAX_ROWS {
            let x = x.to_contiguous();
            let x = x.storage::<f32>();
            return if n <= CPU_MATVEC_MAX_ROWS {
                matvec(x, n, &w)
            } else {
                panel_matmul(x, n, &w)
            };
        }
        let wt = tensor(w.decode_all(), [w.rows, d_in]);
        Self::float_matmul(x, Self::float_transpose(wt))
    }

    fn block_matmul_w(g: FlexTensor, blocks: FlexTensor, ty: u32, d_in: usize) -> FlexTensor {
        let w = Self::block_decode(blocks, ty, d_in); // [rows, d_in]
        Self::float_matmul(g, w)
    }

    fn block_matmul_fused(
        a: FlexTensor,
        blocks: FlexTensor,
        ty: u32,
        d_in: usize,
        transpose: bool,
    ) -> FlexTensor {
        if transpose {
            Self::block_matmul_w(a, blocks, ty, d_in)
        } else {
            Self::block_matmul(a, blocks, ty, d_in)
        }
    }

    fn block_decode(blocks: FlexTensor, ty: u32, d_in: usize) -> FlexTensor {
        let w = Rows::new(&blocks, ty, d_in);
        tensor(w.decode_all(), [w.rows, d_in])
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    //! The AVX2 kernels against the portable ones on every block type they cover: decoded
    //! values bit for bit, products (every group size of x's rows) against an f64 sum.
    use super::*;

    /// `rows` rows of random blocks of `ty`, every f16 scale field small and finite.
    fn random_blocks(ty: GgmlType, rows: usize, d_in: usize, mut seed: u64) -> Vec<u8> {
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as u32
        };
        let n = rows * ty.bytes_for(d_in).unwrap();
        let mut bytes: Vec<u8> = (0..n).map(|_| next() as u8).collect();
        let fields: &[usize] = match ty {
            // halves: every value is a field
            GgmlType::F16 | GgmlType::BF16 => &[0],
            GgmlType::Q6_K => &[208],
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
            _ => &[0, 2],
        };
        for block in bytes.chunks_exact_mut(ty.type_size()) {
            for &f in fields {
                let v = (next() % 1000) as f32 * 1e-4 - 0.05;
                let bits = if ty == GgmlType::BF16 {
                    half::bf16::from_f32(v).to_le_bytes()
                } else {
                    half::f16::from_f32(v).to_le_bytes()
                };
                block[f..f + 2].copy_from_slice(&bits);
            }
        }
        bytes
    }

    #[test]
    fn avx2_kernels_equal_the_portable_ones() {
        if !has_avx2() {
            // the AVX2 kernels cannot run here (the portable ones are what runs: tests/blocks.rs)
            eprintln!("this CPU lacks AVX2, FMA or F16C: no AVX2 kernels to compare");
            return;
        }
        use GgmlType::*;
        for ty in [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, F16, BF16] {
            // three blocks, or three quads of halves
            let (rows, d_in) = (7, 3 * ty.block_size().max(32));
            assert!(blocks_avx2::supports(ty, d_in));
            let bytes = random_blocks(ty, rows, d_in, ty.id() as u64);
            let row_len = ty.bytes_for(d_in).unwrap();
            let w = Rows {
                bytes: &bytes,
                ty,
                rows,
                d_in,
                stride: row_len,
                row_len,
            };
            let (mut portable, mut avx2) = (vec![0.0; rows * d_in], vec![0.0; rows * d_in]);
            decode_rows(&w, 0, &mut portable);
            // SAFETY: the features were detected above
            unsafe { decode_rows_avx2(&w, 0, &mut avx2) };
            if let Some(i) = (0..avx2.len()).find(|&i| avx2[i].to_bits() != portable[i].to_bits()) {
                panic!(
                    "{ty:?}: value {i} decoded as {} on AVX2, {} portably",
                    avx2[i], portable[i]
                );
            }
            let mut alone = vec![0.0; rows];
            for n in 1..=CPU_MATVEC_MAX_ROWS {
                let x: Vec<f32> = (0..n * d_in)
                    .map(|i| ((i * 7919 % 1009) as f32 / 504.5) - 1.0)
                    .collect();
                let mut buf = vec![0.0; d_in];
                let (mut got, mut plain) = (vec![0.0; rows * n], vec![0.0; rows * n]);
                // SAFETY: the features were detected above
                unsafe { matvec_rows_avx2(&x, n, &w, 0, &mut got, &mut buf) };
                matvec_rows(&x, n, &w, 0, &mut plain, &mut buf);
                // x's first row is the same at every N: its products must not change
                if n == 1 {
                    alone.copy_from_slice(&got);
                }
                for r in 0..rows {
                    assert_eq!(
                        got[r * n].to_bits(),
                        alone[r].to_bits(),
                        "{ty:?} N={n} row {r}: batch-mates changed it"
                    );
                }
                for r in 0..rows {
                    for t in 0..n {
                        let terms = (0..d_in).map(|k| portable[r * d_in + k] as f64 * x[t * d_in + k] as f64);
                        let (sum, size) = terms.fold((0.0, 0.0), |(s, a), v| (s + v, a + v.abs()));
                        for (what, y) in [("AVX2", got[r * n + t]), ("portable", plain[r * n + t])] {
                            assert!(
                                (y as f64 - sum).abs() <= 1e-6 * size,
                                "{ty:?} N={n} row {r}, x row {t}: {what} {y} against {sum}"
                            );
                        }
                    }
                }
            }
        }
    }
}
