//! [`FrozenMatmulBackend`] on burn's Flex CPU backend. One row of x (batch-1 decoding, bound by
//! reading W) is y = Σₖ xₖ Wᵀₖ: each task adds the rows k of a range of Wᵀ, restricted to a
//! panel of columns, into a partial y of that panel (W read once, in long contiguous runs, on
//! every core); the partial sums are then added. gemm's one-row path reads W on one core, and
//! with its AVX-512 kernels on took a third longer than this on SmolLM2's decode.

use burn::backend::Flex;
use burn::backend::TensorMetadata;
use burn::backend::flex::FlexTensor;
use burn::backend::ops::FloatTensorOps;
use rayon::prelude::*;

use crate::flex_f32::{VALUES_PER_TASK, best, contiguous, tensor};
use crate::frozen_matmul::FrozenMatmulBackend;

/// Output columns of a panel: its partial y (16 KiB) stays in the L1 cache.
const PANEL: usize = 4096;

/// The loop of a task, compiled once for the baseline CPU and once with AVX2 + FMA.
macro_rules! kernels {
    ($module:ident $(, $feature:literal)?) => {
        mod $module {
            /// acc `[cols]` += Σₖ x[k] · wt[k, c0..c0 + cols] over the rows k of `wt` (each `n`
            /// wide) in `ks`.
            $(#[target_feature(enable = $feature)])?
            pub(super) fn axpy_rows(x: &[f32], wt: &[f32], n: usize, c0: usize, ks: std::ops::Range<usize>, acc: &mut [f32]) {
                let cols = acc.len();
                for k in ks {
                    crate::flex_f32::add_scaled(acc, x[k], &wt[k * n + c0..k * n + c0 + cols]);
                }
            }
        }
    };
}

kernels!(portable);
#[cfg(target_arch = "x86_64")]
kernels!(avx2, "avx2,fma");

fn axpy_rows(x: &[f32], wt: &[f32], n: usize, c0: usize, ks: std::ops::Range<usize>, acc: &mut [f32]) {
    best!(axpy_rows(x, wt, n, c0, ks, acc))
}

/// y = x Wᵀ `[n]` for one row x `[k]` and Wᵀ `[k, n]` row-major.
pub(crate) fn matvec(x: &[f32], wt: &[f32], k: usize, n: usize) -> Vec<f32> {
    let panels = n.div_ceil(PANEL);
    let cols_of = |p: usize| PANEL.min(n - p * PANEL);
    // rows of Wᵀ a task: enough values to be worth a task, and at least two tasks a core
    let tasks_wanted = 2 * rayon::current_num_threads();
    let by_size = (VALUES_PER_TASK / PANEL.min(n).max(1)).max(1);
    let by_count = (k * panels).div_ceil(tasks_wanted).max(1);
    let rows = by_size.max(by_count).min(k.max(1));
    let splits = k.div_ceil(rows).max(1);
    let partials: Vec<Vec<f32>> = (0..panels * splits)
        .into_par_iter()
        .map(|task| {
            let (p, s) = (task / splits, task % splits);
            let mut acc = vec![0.0f32; cols_of(p)];
            axpy_rows(x, wt, n, p * PANEL, s * rows..((s + 1) * rows).min(k), &mut acc);
            acc
        })
        .collect();
    let mut y = vec![0.0f32; n];
    for (task, acc) in partials.iter().enumerate() {
        let c0 = task / splits * PANEL;
        for (y, a) in y[c0..c0 + acc.len()].iter_mut().zip(acc) {
            *y += a;
        }
    }
    y
}

impl FrozenMatmulBackend for Flex {
    fn frozen_matmul(x: FlexTensor, weight_t: FlexTensor) -> FlexTensor {
        let (xs, ws) = (x.shape(), weight_t.shape());
        assert!(
            xs.num_dims() == 2 && ws.num_dims() == 2 && xs[1] == ws[0],
            "frozen_matmul: x [N, d_in] and Wᵀ [d_in, d_out] expected, not {:?} and {:?}",
            xs.as_slice(),
            ws.as_slice()
        );
        if xs[0] != 1 {
            return Self::float_matmul(x, weight_t);
        }
        let (x, wt) = (
            contiguous(&x, "frozen_matmul"),
            contiguous(&weight_t, "frozen_matmul"),
        );
        let (k, n) = (ws[0], ws[1]);
        tensor(matvec(x.storage::<f32>(), wt.storage::<f32>(), k, n), [1, n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a plain f64 product, for widths around the panel and task sizes.
    #[test]
    fn matvec_matches_f64() {
        for (k, n) in [
            (1, 1),
            (3, 5),
            (576, 192),
            (7, PANEL + 3),
            (100, 2 * PANEL),
            (33, 9000),
        ] {
            let x: Vec<f32> = (0..k).map(|i| ((i * 7919) % 13) as f32 / 13.0 - 0.5).collect();
            let wt: Vec<f32> = (0..k * n)
                .map(|i| ((i * 104_729) % 17) as f32 / 17.0 - 0.5)
                .collect();
            let y = matvec(&x, &wt, k, n);
            for (c, &got) in y.iter().enumerate() {
                let want: f64 = (0..k).map(|i| x[i] as f64 * wt[i * n + c] as f64).sum();
                let size: f64 = (0..k).map(|i| (x[i] as f64 * wt[i * n + c] as f64).abs()).sum();
                assert!(
                    (got as f64 - want).abs() <= 1e-6 * size.max(1.0),
                    "k {k} n {n} column {c}: {got} against {want}"
                );
            }
        }
    }
}
