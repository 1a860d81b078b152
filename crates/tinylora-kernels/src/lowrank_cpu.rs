//! The low-rank update's token-by-token work on burn's Flex CPU backend, in Rust: with r ≤ 16
//! the products x V, z Mᵀ, q Uᵀ and G U are r dot products or r scaled additions a token,
//! which as separate matmuls (and an addition to `base`) cost more in calls, buffers and
//! one-core passes than in arithmetic. Here each token is one pass, tokens split over the
//! cores; the math is `crate::lowrank`'s, line for line:
//!
//! - forward: zₜ = xₜ V `[r]`, qₜ = zₜ Mᵀ, yₜ = baseₜ + qₜ Uᵀ;
//! - backward: wₜ = gₜ U `[r]`, ∂L/∂xₜ = (wₜ M) Vᵀ.
//!
//! U and V are first copied as Uᵀ `[r, d_out]` and Vᵀ `[r, d_in]` (rows the loops read
//! contiguously), M = Σᵢ vᵢ P̃ᵢ `[r, r]` is summed on the host.

use burn::backend::TensorMetadata;
use burn::backend::flex::FlexTensor;
use rayon::prelude::*;

use crate::flex_f32::{add_scaled, contiguous, dot, task_rows, tensor};

/// The module's frozen and trained parts in the loops' layout.
struct Factors {
    /// Uᵀ `[r, d_out]`.
    u_t: Vec<f32>,
    /// Vᵀ `[r, d_in]`.
    v_t: Vec<f32>,
    /// M `[r, r]`.
    m: Vec<f32>,
    r: usize,
    d_in: usize,
}

impl Factors {
    /// From factors `[d_out + d_in, r]` = [U; V], basis `[n_v, r, r]` and coef `[n_v]`.
    fn new(factors: &FlexTensor, basis: &FlexTensor, coef: &FlexTensor, d_out: usize, op: &str) -> Self {
        let [rows, r] = factors.shape().dims();
        let [n_v, br, bc] = basis.shape().dims();
        assert!(
            rows > d_out && br == r && bc == r && coef.shape().dims::<1>() == [n_v],
            "{op}: factors [{rows}, {r}], basis [{n_v}, {br}, {bc}] and coef {:?} do not fit d_out = {d_out}",
            coef.shape().as_slice()
        );
        let d_in = rows - d_out;
        let f = contiguous(factors, op);
        let f = f.storage::<f32>();
        let transposed = |first: usize, n: usize| -> Vec<f32> {
            (0..r)
                .flat_map(|k| (first..first + n).map(move |i| f[i * r + k]))
                .collect()
        };
        let (basis, coef) = (contiguous(basis, op), contiguous(coef, op));
        let (basis, coef) = (basis.storage::<f32>(), coef.storage::<f32>());
        let mut m = vec![0.0f32; r * r];
        for (p, &c) in basis.chunks_exact(r * r).zip(coef) {
            for (m, &p) in m.iter_mut().zip(p) {
                *m += c * p;
            }
        }
        Factors {
            u_t: transposed(0, d_out),
            v_t: transposed(d_out, d_in),
            m,
            r,
            d_in,
        }
    }
}

/// `into[k]` = ⟨x, rowsₖ⟩ for the r rows of `rows_t` `[r, n]`.
#[inline(always)]
fn project(x: &[f32], rows_t: &[f32], into: &mut [f32]) {
    let n = x.len();
    for (k, z) in into.iter_mut().enumerate() {
        *z = dot(x, &rows_t[k * n..(k + 1) * n]);
    }
}

/// The shape the forward and the backward share, token by token, tokens over the cores: the r
/// projections keptₜ = ⟨inₜ, downₖ⟩ (`down_t` `[r, n_in]`), mixed by `core` (row a gives
/// pₐ = ⟨keptₜ, coreₐ⟩, `[r, r]`), then outₜ += Σₐ pₐ upₐ (`up_t` `[r, n_out]`).
fn down_core_up(
    input: &[f32],
    down_t: &[f32],
    core: &[f32],
    up_t: &[f32],
    r: usize,
    out: &mut [f32],
    kept: &mut [f32],
) {
    let (n_in, n_out) = (down_t.len() / r, up_t.len() / r);
    let n = task_rows(n_in + n_out);
    out.par_chunks_mut(n * n_out)
        .zip(kept.par_chunks_mut(n * r))
        .zip(input.par_chunks(n * n_in))
        .for_each(|((out, kept), input)| {
            let mut p = vec![0.0f32; r];
            let rows = out.chunks_exact_mut(n_out).zip(kept.chunks_exact_mut(r));
            for ((out, kept), input) in rows.zip(input.chunks_exact(n_in)) {
                project(input, down_t, kept);
                for (a, p) in p.iter_mut().enumerate() {
                    *p = dot(kept, &core[a * r..(a + 1) * r]);
                }
                for (a, &p) in p.iter().enumerate() {
                    add_scaled(out, p, &up_t[a * n_out..(a + 1) * n_out]);
                }
            }
        });
}

/// (y = base + (x V Mᵀ) Uᵀ `[T, d_out]`, z = x V `[T, r]`) for x `[T, d_in]`.
pub(crate) fn update(
    x: &FlexTensor,
    base: &FlexTensor,
    factors: &FlexTensor,
    basis: &FlexTensor,
    coef: &FlexTensor,
) -> (FlexTensor, FlexTensor) {
    let [t, d_out] = base.shape().dims();
    let f = Factors::new(factors, basis, coef, d_out, "lowrank_update");
    let (x, base) = (
        contiguous(x, "lowrank_update"),
        contiguous(base, "lowrank_update"),
    );
    assert_eq!(
        x.shape().dims::<2>(),
        [t, f.d_in],
        "lowrank_update: x and base disagree"
    );
    let (x, base) = (x.storage::<f32>(), base.storage::<f32>());
    let mut y = base.to_vec();
    let mut z = vec![0.0f32; t * f.r];
    // zₜ = xₜ V; (zₜ Mᵀ)_a = Σ_b z_b M_ab; yₜ += (zₜ Mᵀ) Uᵀ
    down_core_up(x, &f.v_t, &f.m, &f.u_t, f.r, &mut y, &mut z);
    (tensor(y, [t, d_out]), tensor(z, [t, f.r]))
}

/// rows_t `[r, n]`-projections of the tokens of a `[T, n]` tensor: `[T, r]`.
fn project_all(a: &FlexTensor, rows_t: &[f32], r: usize, op: &str) -> FlexTensor {
    let a = contiguous(a, op);
    let [t, n] = a.shape().dims();
    let a = a.storage::<f32>();
    let mut out = vec![0.0f32; t * r];
    let per = task_rows(n);
    out.par_chunks_mut(per * r)
        .zip(a.par_chunks(per * n))
        .for_each(|(out, a)| {
            for (o, a) in out.chunks_exact_mut(r).zip(a.chunks_exact(n)) {
                project(a, rows_t, o);
            }
        });
    tensor(out, [t, r])
}

/// z = x V `[T, r]`.
pub(crate) fn project_input(
    x: &FlexTensor,
    factors: &FlexTensor,
    basis: &FlexTensor,
    coef: &FlexTensor,
) -> FlexTensor {
    let [_, d_in] = x.shape().dims();
    let [rows, _] = factors.shape().dims();
    let f = Factors::new(factors, basis, coef, rows - d_in, "lowrank_project_input");
    project_all(x, &f.v_t, f.r, "lowrank_project_input")
}

/// w = G U `[T, r]`.
pub(crate) fn project_grad(
    g: &FlexTensor,
    factors: &FlexTensor,
    basis: &FlexTensor,
    coef: &FlexTensor,
) -> FlexTensor {
    let [_, d_out] = g.shape().dims();
    let f = Factors::new(factors, basis, coef, d_out, "lowrank_project_grad");
    project_all(g, &f.u_t, f.r, "lowrank_project_grad")
}

/// (∂L/∂x = (w M) Vᵀ `[T, d_in]`, w = G U `[T, r]`) for G `[T, d_out]`.
pub(crate) fn backward(
    g: &FlexTensor,
    factors: &FlexTensor,
    basis: &FlexTensor,
    coef: &FlexTensor,
) -> (FlexTensor, FlexTensor) {
    let [t, d_out] = g.shape().dims();
    let f = Factors::new(factors, basis, coef, d_out, "lowrank_backward");
    let g = contiguous(g, "lowrank_backward");
    let g = g.storage::<f32>();
    let (r, d_in) = (f.r, f.d_in);
    let mut dx = vec![0.0f32; t * d_in];
    let mut w = vec![0.0f32; t * r];
    // wₜ = gₜ U; (wₜ M)_b = Σ_a w_a M_ab, row b of Mᵀ; ∂L/∂xₜ = (wₜ M) Vᵀ
    let m_t: Vec<f32> = (0..r * r).map(|i| f.m[i % r * r + i / r]).collect();
    down_core_up(g, &f.u_t, &m_t, &f.v_t, r, &mut dx, &mut w);
    (tensor(dx, [t, d_in]), tensor(w, [t, r]))
}
