//! The low-rank ops on burn's Flex CPU backend (`--device cpu`), which runs no WGSL: the
//! update and its gradient's token-by-token work in Rust (`crate::lowrank_cpu`), the merge
//! and ∂L/∂v as stock burn ops. The math is that of the kernels, line for line (see
//! [`crate::lowrank`]); the backward on `Autodiff<Flex>` is the shared one, calling these.

use burn::backend::ops::FloatTensorOps;
use burn::backend::{Backend, Flex, TensorMetadata, tensor::FloatTensor};
use burn::tensor::{Shape, Slice};

use crate::LowRankBackend;
use crate::lowrank::{LowRankGradBackend, core};
use crate::lowrank_cpu;

/// (U `[d_out, r]`, V `[d_in, r]`) from factors `[d_out + d_in, r]` = [U; V].
fn split<B: Backend>(factors: FloatTensor<B>, d_out: usize) -> (FloatTensor<B>, FloatTensor<B>) {
    let [rows, r] = factors.shape().dims();
    let part = |range: std::ops::Range<usize>| {
        B::float_slice(factors.clone(), &[Slice::from(range), Slice::from(0..r)])
    };
    (part(0..d_out), part(d_out..rows))
}

impl LowRankBackend for Flex {
    fn lowrank_update(
        x: FloatTensor<Self>,
        base: FloatTensor<Self>,
        factors: FloatTensor<Self>,
        basis: FloatTensor<Self>,
        coef: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        lowrank_cpu::update(&x, &base, &factors, &basis, &coef).0
    }

    /// Untracked: nothing to do (the update is in the weights).
    fn lowrank_update_merged(
        _x: FloatTensor<Self>,
        base: FloatTensor<Self>,
        _factors: FloatTensor<Self>,
        _basis: FloatTensor<Self>,
        _coef: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        base
    }

    /// Wᵀ `[d_in, cols]` ± (V Mᵀ) U[col0..col0 + cols]ᵀ.
    fn lowrank_merge(
        weight_t: FloatTensor<Self>,
        factors: FloatTensor<Self>,
        basis: FloatTensor<Self>,
        coef: FloatTensor<Self>,
        col0: usize,
        subtract: bool,
    ) -> FloatTensor<Self> {
        let [d_in, cols] = weight_t.shape().dims();
        let [rows, r] = factors.shape().dims();
        let (u, v) = split::<Self>(factors, rows - d_in);
        let u = Self::float_slice(u, &[Slice::from(col0..col0 + cols), Slice::from(0..r)]);
        let m = core::<Self>(basis, coef);
        let delta_t = Self::float_matmul(
            Self::float_matmul(v, Self::float_transpose(m)),
            Self::float_transpose(u),
        ); // [d_in, cols]
        if subtract {
            Self::float_sub(weight_t, delta_t)
        } else {
            Self::float_add(weight_t, delta_t)
        }
    }
}

impl LowRankGradBackend for Flex {
    fn lowrank_update_keeping_z(
        x: FloatTensor<Self>,
        base: FloatTensor<Self>,
        factors: FloatTensor<Self>,
        basis: FloatTensor<Self>,
        coef: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        lowrank_cpu::update(&x, &base, &factors, &basis, &coef)
    }

    /// (∂L/∂x = (w M) Vᵀ `[T, d_in]`, w = G U `[T, r]`).
    fn lowrank_backward(
        g: FloatTensor<Self>,
        factors: FloatTensor<Self>,
        basis: FloatTensor<Self>,
        coef: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        lowrank_cpu::backward(&g, &factors, &basis, &coef)
    }

    /// z = x V `[T, r]`.
    fn lowrank_project_input(
        x: FloatTensor<Self>,
        factors: FloatTensor<Self>,
        basis: FloatTensor<Self>,
        coef: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        lowrank_cpu::project_input(&x, &factors, &basis, &coef)
    }

    /// w = G U `[T, r]`.
    fn lowrank_project_grad(
        g: FloatTensor<Self>,
        factors: FloatTensor<Self>,
        basis: FloatTensor<Self>,
        coef: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        lowrank_cpu::project_grad(&g, &factors, &basis, &coef)
    }

    /// ∂L/∂vᵢ = ⟨P̃ᵢ, wᵀ z⟩: basis `[n_v, r·r]` times (wᵀ z) `[r·r, 1]`.
    fn lowrank_grad_coef(
        z: FloatTensor<Self>,
        w: FloatTensor<Self>,
        basis: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let [n_v, r, _] = basis.shape().dims();
        let s = Self::float_matmul(Self::float_transpose(w), z); // [r, r]
        let grad = Self::float_matmul(
            Self::float_reshape(basis, Shape::new([n_v, r * r])),
            Self::float_reshape(s, Shape::new([r * r, 1])),
        );
        Self::float_reshape(grad, Shape::new([n_v]))
    }
}
