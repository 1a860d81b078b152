//! Low-rank deltas on the model's projections, and the one switch that says how they apply.
//!
//! A projection W `[d_out, d_in]` (y = x Wᵀ) may carry ΔW = U M Vᵀ with M = Σᵢ cᵢ Bᵢ:
//! `factors` = [U; V] `[d_out + d_in, r]`, `basis` B `[n, r, r]`, `coef` c `[n]`. The engine
//! does not know where these come from (an SVD and random projections, a PEFT file, trainable
//! LoRA factors with B = I and c = 1); it only applies them, in one of three ways for the whole
//! model ([`DeltaMode`]; `Transformer::set_delta_mode`), and keeps the weights consistent with
//! that mode (see `projections.rs`).

use burn::tensor::{Device, Tensor, TensorData};

/// How the model's deltas apply (one mode for the whole model).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeltaMode {
    /// Not at all: the base model (weights untouched).
    #[default]
    Off,
    /// y = x Wᵀ + ((x V) Mᵀ) Uᵀ on the activation path: differentiable in the delta's
    /// coefficients and factors, and in x.
    Activation,
    /// W ← W + ΔW in place: plain-speed inference, and training at the same speed (the
    /// coefficients and factors still get their gradients through `lowrank_update_merged`,
    /// ∂L/∂x comes from the merged weights themselves).
    Merged,
}

/// ΔW = U (Σᵢ cᵢ Bᵢ) Vᵀ of one projection, on the device.
#[derive(Debug, Clone)]
pub struct LowRankDelta {
    /// [U; V] `[d_out + d_in, r]`.
    pub factors: Tensor<2>,
    /// B `[n, r, r]`.
    pub basis: Tensor<3>,
    /// c `[n]` (projections that share coefficients hold clones of one tensor).
    pub coef: Tensor<1>,
}

impl LowRankDelta {
    /// Upload host factors [U; V] `[rows, r]` and basis `[n, r, r]` (row-major), mixed by `coef`.
    pub fn upload(
        factors: Vec<f32>,
        basis: Vec<f32>,
        rows: usize,
        r: usize,
        coef: Tensor<1>,
        device: &Device,
    ) -> Self {
        assert_eq!(factors.len(), rows * r, "factors of {rows} rows at rank {r}");
        assert_eq!(basis.len() % (r * r), 0, "basis of whole r × r matrices");
        let n = basis.len() / (r * r);
        LowRankDelta {
            factors: Tensor::from_data(TensorData::new(factors, [rows, r]), device),
            basis: Tensor::from_data(TensorData::new(basis, [n, r, r]), device),
            coef,
        }
    }
}
