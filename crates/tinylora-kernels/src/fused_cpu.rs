//! The fused ops (`crate::fused`) on burn's Flex CPU backend: one pass each, rows
//! split over the cores, loops the compiler vectorizes (with AVX2 + FMA where the CPU has
//! them), and e^x by a polynomial instead of libm's scalar `expf`.

use burn::backend::flex::FlexTensor;
use burn::backend::{Flex, TensorMetadata};
use burn::tensor::Shape;
use rayon::prelude::*;

use crate::flex_f32::{VALUES_PER_TASK, best, contiguous, dot, task_rows, tensor};
use crate::fused::{FusedBackend, FusedGradBackend, norm_dims, rope_dims, softmax_dims};

/// x as a contiguous f32 tensor, and its shape.
fn values(x: &FlexTensor, op: &str) -> (FlexTensor, Shape) {
    (contiguous(x, op), x.shape())
}

/// e^x to a few units in the last place (Cephes' `expf`): x = n ln 2 + r with n an integer
/// and |r| ≤ ln 2 / 2, e^r by a degree-6 polynomial, 2ⁿ built in the exponent bits. Below
/// x = −87 the result is 0 (e^−87 = 1.6e-38: a masked attention score gets no weight at all),
/// above 88 it is e^88; NaN stays NaN.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2²³: x + ROUND − ROUND rounds x to an integer
    let underflow = x < -87.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4; // ln 2 in two parts
    let mut p = 1.987_569_2e-4_f32;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    let e = er * f32::from_bits(((n as i32 + 127) as u32) << 23);
    if underflow { 0.0 } else { e }
}

/// Σ x with sixteen independent partial sums (vectorized by the compiler).
#[inline(always)]
fn sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for l in 0..16 {
            acc[l] += c[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// σ(a) = 1 / (1 + e^(−a)).
#[inline(always)]
fn sigmoid(a: f32) -> f32 {
    1.0 / (1.0 + exp(-a))
}

/// r = (Σ x² / H + ε)^(−1/2) of one row.
#[inline(always)]
fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let mean_sq = dot(x, x) / x.len() as f32;
    1.0 / (mean_sq + eps).sqrt()
}

/// The loops of the ops, compiled once for the baseline CPU and once with AVX2 + FMA.
macro_rules! kernels {
    ($module:ident $(, $feature:literal)?) => {
        mod $module {
            use super::*;

            $(#[target_feature(enable = $feature)])?
            pub(super) fn rms_norm(x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) {
                let h = w.len();
                for (x, y) in x.chunks_exact(h).zip(y.chunks_exact_mut(h)) {
                    let r = inv_rms(x, eps);
                    for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
                        *y = x * r * w;
                    }
                }
            }

            $(#[target_feature(enable = $feature)])?
            pub(super) fn rms_norm_backward(x: &[f32], w: &[f32], eps: f32, g: &[f32], dx: &mut [f32]) {
                let h = w.len();
                for ((x, g), dx) in x.chunks_exact(h).zip(g.chunks_exact(h)).zip(dx.chunks_exact_mut(h)) {
                    let r = inv_rms(x, eps);
                    // dx holds ĝ = g ⊙ w first, then ∂L/∂x = r ĝ − x r³ (Σ ĝ x) / H
                    for ((d, &g), &w) in dx.iter_mut().zip(g).zip(w) {
                        *d = g * w;
                    }
                    let k = r * r * r * dot(dx, x) / h as f32;
                    for (d, &x) in dx.iter_mut().zip(x) {
                        *d = r * *d - x * k;
                    }
                }
            }

            $(#[target_feature(enable = $feature)])?
            pub(super) fn swiglu(a: &[f32], u: &[f32], y: &mut [f32]) {
                for ((y, &a), &u) in y.iter_mut().zip(a).zip(u) {
                    *y = a * sigmoid(a) * u;
                }
            }

            $(#[target_feature(enable = $feature)])?
            pub(super) fn swiglu_backward(a: &[f32], u: &[f32], g: &[f32], da: &mut [f32], du: &mut [f32]) {
                let outs = da.iter_mut().zip(du.iter_mut());
                for ((da, du), ((&a, &u), &g)) in outs.zip(a.iter().zip(u).zip(g)) {
                    let s = sigmoid(a);
                    *du = g * a * s;
                    *da = g * u * s * (1.0 + a * (1.0 - s));
                }
            }

            /// One head's row: y = σ RoPE(x) with the tables c, s (see `crate::fused`).
            $(#[target_feature(enable = $feature)])?
            pub(super) fn rope_row(x: &[f32], c: &[f32], s: &[f32], scale: f32, y: &mut [f32]) {
                let h = x.len() / 2;
                let ((x1, x2), (c1, c2), (s1, s2)) = (x.split_at(h), c.split_at(h), s.split_at(h));
                let (y1, y2) = y.split_at_mut(h);
                for i in 0..h {
                    y1[i] = scale * (x1[i] * c1[i] - x2[i] * s1[i]);
                    y2[i] = scale * (x2[i] * c2[i] + x1[i] * s2[i]);
                }
            }

            /// One head's row of the backward: ∂L/∂x from g.
            $(#[target_feature(enable = $feature)])?
            pub(super) fn rope_backward_row(g: &[f32], c: &[f32], s: &[f32], scale: f32, dx: &mut [f32]) {
                let h = g.len() / 2;
                let ((g1, g2), (c1, c2), (s1, s2)) = (g.split_at(h), c.split_at(h), s.split_at(h));
                let (d1, d2) = dx.split_at_mut(h);
                for i in 0..h {
                    d1[i] = scale * (g1[i] * c1[i] + g2[i] * s2[i]);
                    d2[i] = scale * (g2[i] * c2[i] - g1[i] * s1[i]);
                }
            }

            /// One row of attention weights: y = softmax(z + m).
            $(#[target_feature(enable = $feature)])?
            pub(super) fn masked_softmax_row(z: &[f32], m: &[f32], y: &mut [f32]) {
                let mut max = f32::NEG_INFINITY;
                for ((y, &z), &m) in y.iter_mut().zip(z).zip(m) {
                    *y = z + m;
                    max = max.max(*y);
                }
                for y in y.iter_mut() {
                    *y = exp(*y - max);
                }
                let inv = 1.0 / sum(y);
                for y in y.iter_mut() {
                    *y *= inv;
                }
            }

            /// Rows of the backward: ∂L/∂z = y ⊙ (g − Σ g y), rows of `width` values.
            $(#[target_feature(enable = $feature)])?
            pub(super) fn masked_softmax_backward_rows(y: &[f32], g: &[f32], width: usize, dz: &mut [f32]) {
                let rows = y.chunks_exact(width).zip(g.chunks_exact(width));
                for ((y, g), dz) in rows.zip(dz.chunks_exact_mut(width)) {
                    let gy = dot(g, y);
                    for ((d, &y), &g) in dz.iter_mut().zip(y).zip(g) {
                        *d = y * (g - gy);
                    }
                }
            }
        }
    };
}

kernels!(portable);
#[cfg(target_arch = "x86_64")]
kernels!(avx2, "avx2,fma");

fn rms_norm_rows(x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) {
    best!(rms_norm(x, w, eps, y))
}

fn rms_norm_backward_rows(x: &[f32], w: &[f32], eps: f32, g: &[f32], dx: &mut [f32]) {
    best!(rms_norm_backward(x, w, eps, g, dx))
}

fn swiglu_values(a: &[f32], u: &[f32], y: &mut [f32]) {
    best!(swiglu(a, u, y))
}

fn swiglu_backward_values(a: &[f32], u: &[f32], g: &[f32], da: &mut [f32], du: &mut [f32]) {
    best!(swiglu_backward(a, u, g, da, du))
}

fn rope_row(x: &[f32], c: &[f32], s: &[f32], scale: f32, y: &mut [f32]) {
    best!(rope_row(x, c, s, scale, y))
}

fn rope_backward_row(g: &[f32], c: &[f32], s: &[f32], scale: f32, dx: &mut [f32]) {
    best!(rope_backward_row(g, c, s, scale, dx))
}

fn masked_softmax_row(z: &[f32], m: &[f32], y: &mut [f32]) {
    best!(masked_softmax_row(z, m, y))
}

fn masked_softmax_backward_rows(y: &[f32], g: &[f32], width: usize, dz: &mut [f32]) {
    best!(masked_softmax_backward_rows(y, g, width, dz))
}

/// The RoPE operands checked: (x or g contiguous, cos, sin, [B, T, n, d_h]) where `heads_first`
/// says whether the first operand is `[B, n, T, d_h]` (the backward's g) or `[B, T, n, d_h]`.
fn rope_inputs(
    x: &FlexTensor,
    cos: &FlexTensor,
    sin: &FlexTensor,
    heads_first: bool,
    op: &str,
) -> (FlexTensor, FlexTensor, FlexTensor, [usize; 4]) {
    let ((x, shape), (cos, cos_shape), (sin, sin_shape)) = (values(x, op), values(cos, op), values(sin, op));
    let dims = rope_dims(
        shape.as_slice(),
        cos_shape.as_slice(),
        sin_shape.as_slice(),
        heads_first,
        op,
    );
    (x, cos, sin, dims)
}

/// Check that x's rows are as wide as w, and return (contiguous x, w, its shape, H).
fn norm_inputs(x: &FlexTensor, w: &FlexTensor, op: &str) -> (FlexTensor, FlexTensor, Shape, usize) {
    let ((x, shape), (w, w_shape)) = (values(x, op), values(w, op));
    let [_, h] = norm_dims(shape.as_slice(), w_shape.as_slice(), op);
    (x, w, shape, h)
}

/// Check that two tensors have one shape, and return them contiguous with it.
fn pair_inputs(a: &FlexTensor, b: &FlexTensor, op: &str) -> (FlexTensor, FlexTensor, Shape) {
    let ((a, shape), (b, b_shape)) = (values(a, op), values(b, op));
    assert_eq!(shape, b_shape, "{op}: operands of different shapes");
    (a, b, shape)
}

impl FusedBackend for Flex {
    fn rms_norm(x: FlexTensor, w: FlexTensor, eps: f32) -> FlexTensor {
        let (x, w, shape, h) = norm_inputs(&x, &w, "rms_norm");
        let (x, w) = (x.storage::<f32>(), w.storage::<f32>());
        let mut y = vec![0.0f32; x.len()];
        let chunk = task_rows(h) * h;
        y.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk))
            .for_each(|(y, x)| rms_norm_rows(x, w, eps, y));
        tensor(y, shape)
    }

    fn swiglu(a: FlexTensor, u: FlexTensor) -> FlexTensor {
        let (a, u, shape) = pair_inputs(&a, &u, "swiglu");
        let (a, u) = (a.storage::<f32>(), u.storage::<f32>());
        let mut y = vec![0.0f32; a.len()];
        y.par_chunks_mut(VALUES_PER_TASK)
            .zip(a.par_chunks(VALUES_PER_TASK).zip(u.par_chunks(VALUES_PER_TASK)))
            .for_each(|(y, (a, u))| swiglu_values(a, u, y));
        tensor(y, shape)
    }

    fn rope(x: FlexTensor, cos: FlexTensor, sin: FlexTensor, scale: f32) -> FlexTensor {
        let (x, cos, sin, [b, t, n, dh]) = rope_inputs(&x, &cos, &sin, false, "rope");
        let (x, cos, sin) = (x.storage::<f32>(), cos.storage::<f32>(), sin.storage::<f32>());
        // y [B, n, T, d_h] in tasks of whole (batch row, head) blocks of T rows
        let block = t * dh;
        let mut y = vec![0.0f32; x.len()];
        y.par_chunks_mut(task_rows(block) * block)
            .enumerate()
            .for_each(|(task, chunk)| {
                for (i, y) in chunk.chunks_exact_mut(dh).enumerate() {
                    let row = task * task_rows(block) * t + i; // (bi · n + head) · T + ti
                    let (bi, head, ti) = (row / (n * t), row / t % n, row % t);
                    let at = (bi * t + ti) * dh; // the tables' row
                    let x = &x[((bi * t + ti) * n + head) * dh..][..dh];
                    rope_row(x, &cos[at..at + dh], &sin[at..at + dh], scale, y);
                }
            });
        tensor(y, Shape::from([b, n, t, dh]))
    }

    fn masked_softmax(z: FlexTensor, mask: FlexTensor) -> FlexTensor {
        let ((z, shape), (mask, mask_shape)) =
            (values(&z, "masked_softmax"), values(&mask, "masked_softmax"));
        let [_, h, r, s] = softmax_dims(shape.as_slice(), mask_shape.as_slice());
        let (z, mask) = (z.storage::<f32>(), mask.storage::<f32>());
        let mut y = vec![0.0f32; z.len()];
        let chunk = row_chunk(s);
        y.par_chunks_mut(chunk)
            .zip(z.par_chunks(chunk))
            .enumerate()
            .for_each(|(task, (y, z))| {
                for (i, (y, z)) in y.chunks_exact_mut(s).zip(z.chunks_exact(s)).enumerate() {
                    let row = task * (chunk / s) + i; // (bi · h + head) · R + ri
                    let m = (row / (h * r) * r + row % r) * s; // the mask's row (bi, ri)
                    masked_softmax_row(z, &mask[m..m + s], y);
                }
            });
        tensor(y, shape)
    }
}

/// Rows of `s` values in the tasks of a parallel pass (whole rows, enough values a task).
fn row_chunk(s: usize) -> usize {
    task_rows(s) * s
}

impl FusedGradBackend for Flex {
    fn rms_norm_backward(x: FlexTensor, w: FlexTensor, eps: f32, g: FlexTensor) -> FlexTensor {
        let (x, w, shape, h) = norm_inputs(&x, &w, "rms_norm_backward");
        let (g, g_shape) = values(&g, "rms_norm_backward");
        assert_eq!(shape, g_shape, "rms_norm_backward: g and x of different shapes");
        let (x, w, g) = (x.storage::<f32>(), w.storage::<f32>(), g.storage::<f32>());
        let mut dx = vec![0.0f32; x.len()];
        let chunk = task_rows(h) * h;
        dx.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk).zip(g.par_chunks(chunk)))
            .for_each(|(dx, (x, g))| rms_norm_backward_rows(x, w, eps, g, dx));
        tensor(dx, shape)
    }

    fn swiglu_backward(a: FlexTensor, u: FlexTensor, g: FlexTensor) -> (FlexTensor, FlexTensor) {
        let (a, u, shape) = pair_inputs(&a, &u, "swiglu_backward");
        let (g, g_shape) = values(&g, "swiglu_backward");
        assert_eq!(shape, g_shape, "swiglu_backward: g and a of different shapes");
        let (a, u, g) = (a.storage::<f32>(), u.storage::<f32>(), g.storage::<f32>());
        let (mut da, mut du) = (vec![0.0f32; a.len()], vec![0.0f32; a.len()]);
        let n = VALUES_PER_TASK;
        da.par_chunks_mut(n)
            .zip(du.par_chunks_mut(n))
            .zip(a.par_chunks(n).zip(u.par_chunks(n)).zip(g.par_chunks(n)))
            .for_each(|((da, du), ((a, u), g))| swiglu_backward_values(a, u, g, da, du));
        (tensor(da, shape.clone()), tensor(du, shape))
    }

    fn rope_backward(g: FlexTensor, cos: FlexTensor, sin: FlexTensor, scale: f32) -> FlexTensor {
        let (g, cos, sin, [b, t, n, dh]) = rope_inputs(&g, &cos, &sin, true, "rope_backward");
        let (g, cos, sin) = (g.storage::<f32>(), cos.storage::<f32>(), sin.storage::<f32>());
        // ∂L/∂x [B, T, n, d_h] in tasks of whole (batch row, token) blocks of n heads
        let block = n * dh;
        let mut dx = vec![0.0f32; g.len()];
        dx.par_chunks_mut(task_rows(block) * block)
            .enumerate()
            .for_each(|(task, chunk)| {
                for (i, dx) in chunk.chunks_exact_mut(dh).enumerate() {
                    let row = task * task_rows(block) * n + i; // (bi · T + ti) · n + head
                    let (bt, head) = (row / n, row % n);
                    let (bi, ti) = (bt / t, bt % t);
                    let at = bt * dh;
                    let g = &g[((bi * n + head) * t + ti) * dh..][..dh];
                    rope_backward_row(g, &cos[at..at + dh], &sin[at..at + dh], scale, dx);
                }
            });
        tensor(dx, Shape::from([b, t, n, dh]))
    }

    fn masked_softmax_backward(y: FlexTensor, g: FlexTensor) -> FlexTensor {
        let (y, g, shape) = pair_inputs(&y, &g, "masked_softmax_backward");
        let s = shape[shape.num_dims() - 1];
        let (y, g) = (y.storage::<f32>(), g.storage::<f32>());
        let mut dz = vec![0.0f32; y.len()];
        let chunk = row_chunk(s);
        dz.par_chunks_mut(chunk)
            .zip(y.par_chunks(chunk).zip(g.par_chunks(chunk)))
            .for_each(|(dz, (y, g))| masked_softmax_backward_rows(y, g, s, dz));
        tensor(dz, shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// e^x against f64's over the range it does not clamp, every thousandth and in between.
    #[test]
    fn exp_is_within_a_few_ulps_of_f64() {
        let mut worst = 0.0f64;
        for i in -87_000..88_000 {
            for x in [i as f32 / 1000.0, i as f32 / 1000.0 + 0.000_37] {
                let (got, want) = (exp(x) as f64, (x as f64).exp());
                worst = worst.max(((got - want) / want).abs());
            }
        }
        assert!(worst < 4.0 * f32::EPSILON as f64, "relative error {worst:e}");
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(
            (exp(-87.5), exp(-1000.0), exp(f32::NEG_INFINITY)),
            (0.0, 0.0, 0.0)
        );
        assert_eq!(exp(1000.0), exp(88.0));
    }
}
