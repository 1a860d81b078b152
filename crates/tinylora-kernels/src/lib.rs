//! The TinyLoRA kernels: the projected low-rank update on the activation path, its gradient,
//! and merge / unmerge into the frozen weights, as burn extension ops (SPEC.md §1).
//!
//! Per adapted module, with W `[d_out, d_in]` frozen (y = x Wᵀ):
//!
//! - `factors` `[d_out + d_in, r]`: U (rows `0..d_out`) stacked on V (rows `d_out..`), the
//!   frozen truncated-SVD factors (LoRA: the trainable B and Aᵀ);
//! - `basis` `[n_v, r, r]`: P̃ᵢ, the fixed projections with the Σ convention folded in
//!   (paper: P̃ᵢ = Σ Pᵢ; LoRA-XS: the unit matrices scaled by Σ; LoRA: a single s·I);
//! - `coef` `[n_v]`: the trainable v, shared by the modules of a tie group;
//!
//! so that M = Σᵢ vᵢ P̃ᵢ and ΔW = U M Vᵀ. Each op launches a `.wgsl` file from `shaders/` on
//! burn's cube backend; its backward on `Autodiff<B, C>` launches the gradient kernels again.
//! Natively, burn's Flex CPU backend runs the same math as stock burn ops (`stock.rs`).

mod halves;
mod launch;
mod lowrank;
mod merge;
mod shapes;
#[cfg(not(target_family = "wasm"))]
mod stock;

use burn::backend::{Dispatch, backend_extension, tensor::FloatTensor};
use burn::tensor::Tensor;

pub use launch::MAX_RANK;

/// Backend extension: the low-rank update and its merge.
#[backend_extension(Autodiff, Cube, Flex: cfg(not(target_family = "wasm")))]
pub trait LowRankBackend: burn::backend::Backend {
    /// y = base + ((x V) Mᵀ) Uᵀ (`shaders/lowrank_down.wgsl`, then `lowrank_up.wgsl`);
    /// differentiable in x, base,
    /// factors and coef.
    fn lowrank_update(
        x: FloatTensor<Self>,
        base: FloatTensor<Self>,
        factors: FloatTensor<Self>,
        basis: FloatTensor<Self>,
        coef: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// The update already merged into the weights that produced `base` = x (W + ΔW)ᵀ:
    /// returns `base` unchanged, and its backward yields ∂L/∂coef (and LoRA's ∂L/∂factors)
    /// exactly as [`Self::lowrank_update`]'s would, but no ∂L/∂x (the merged weights' own
    /// backward carries ΔW's share). Training at merged speed.
    fn lowrank_update_merged(
        x: FloatTensor<Self>,
        base: FloatTensor<Self>,
        factors: FloatTensor<Self>,
        basis: FloatTensor<Self>,
        coef: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// Wᵀ chunk ± (U M Vᵀ)ᵀ for output columns `col0..` (`lowrank_down.wgsl` on V's rows,
    /// then `lowrank_up.wgsl`);
    /// in place when the chunk's buffer is not shared.
    fn lowrank_merge(
        weight_t: FloatTensor<Self>,
        factors: FloatTensor<Self>,
        basis: FloatTensor<Self>,
        coef: FloatTensor<Self>,
        col0: usize,
        subtract: bool,
    ) -> FloatTensor<Self>;
}

/// x `[N, d_in]`, base = x Wᵀ `[N, d_out]` → base + ((x V) Mᵀ) Uᵀ `[N, d_out]`.
///
/// `factors` `[d_out + d_in, r]` = [U; V], `basis` `[n_v, r, r]`, `coef` `[n_v]`; r ≤ [`MAX_RANK`].
pub fn lowrank_update(
    x: Tensor<2>,
    base: Tensor<2>,
    factors: Tensor<2>,
    basis: Tensor<3>,
    coef: Tensor<1>,
) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::lowrank_update(
        x.into_dispatch(),
        base.into_dispatch(),
        factors.into_dispatch(),
        basis.into_dispatch(),
        coef.into_dispatch(),
    ))
}

/// x `[N, d_in]`, merged = x (W + ΔW)ᵀ `[N, d_out]` from weights with the update merged in →
/// `merged` itself, differentiable in `coef` (and `factors`) as [`lowrank_update`] is; x gets
/// no gradient from it (the merged weights' matmul gives ∂L/∂x = G (W + ΔW)).
pub fn lowrank_update_merged(
    x: Tensor<2>,
    merged: Tensor<2>,
    factors: Tensor<2>,
    basis: Tensor<3>,
    coef: Tensor<1>,
) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::lowrank_update_merged(
        x.into_dispatch(),
        merged.into_dispatch(),
        factors.into_dispatch(),
        basis.into_dispatch(),
        coef.into_dispatch(),
    ))
}

/// Add (or with `subtract`, remove) ΔWᵀ = (U M Vᵀ)ᵀ to a chunk Wᵀ `[d_in, cols]` holding the
/// output columns `col0..col0 + cols` of a module with `factors` `[d_out + d_in, r]`.
pub fn lowrank_merge(
    weight_t: Tensor<2>,
    factors: Tensor<2>,
    basis: Tensor<3>,
    coef: Tensor<1>,
    col0: usize,
    subtract: bool,
) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::lowrank_merge(
        weight_t.into_dispatch(),
        factors.into_dispatch(),
        basis.into_dispatch(),
        coef.into_dispatch(),
        col0,
        subtract,
    ))
}
