//! Low-rank deltas on the model's projections, and the one switch that says how they apply.
//!
//! A projection W `[d_out, d_in]` (y = x Wᵀ) may carry ΔW = U M Vᵀ with M = Σᵢ cᵢ Bᵢ:
//! `factors` = [U; V] `[d_out + d_in, r]`, `basis` B `[n, r, r]`, `coef` c `[n]`. The engine
//! does not know where these come from (an SVD and random projections, a PEFT file, trainable
//! LoRA factors with B = I and c = 1); it only applies them, in one of three ways for the whole
//! model ([`DeltaMode`]), and keeps the weights consistent with that mode.

use burn::tensor::{Device, Tensor, TensorData};
use tinylora_formats::ModuleKind;
use tinylora_kernels::lowrank_merge;

use crate::linear::{Linear, upload};
use crate::transformer::Transformer;

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
    pub fn upload(factors: Vec<f32>, basis: Vec<f32>, rows: usize, r: usize, coef: Tensor<1>, device: &Device) -> Self {
        assert_eq!(factors.len(), rows * r, "factors of {rows} rows at rank {r}");
        assert_eq!(basis.len() % (r * r), 0, "basis of whole r × r matrices");
        let n = basis.len() / (r * r);
        LowRankDelta {
            factors: upload(factors, [rows, r], device),
            basis: Tensor::from_data(TensorData::new(basis, [n, r, r]), device),
            coef,
        }
    }
}

impl Linear {
    /// W ← W + ΔW (or − ΔW with `subtract`) in every column chunk, in place when unshared.
    fn merge_delta(&mut self, subtract: bool) {
        let Some(d) = self.delta.as_ref() else { return };
        // merging is never differentiated
        let (coef, factors) = (d.coef.clone().inner(), d.factors.clone().inner());
        let chunks = std::mem::take(&mut self.weight_t);
        let mut col0 = 0;
        self.weight_t = chunks
            .into_iter()
            .map(|w| {
                let cols = w.dims()[1];
                let merged = lowrank_merge(w, factors.clone(), d.basis.clone(), coef.clone(), col0, subtract);
                col0 += cols;
                merged
            })
            .collect();
    }
}

impl Transformer {
    /// The projection `kind` of decoder layer `layer`.
    pub fn projection(&self, layer: usize, kind: ModuleKind) -> &Linear {
        let l = &self.layers[layer];
        match kind {
            ModuleKind::Q => &l.self_attn.q_proj,
            ModuleKind::K => &l.self_attn.k_proj,
            ModuleKind::V => &l.self_attn.v_proj,
            ModuleKind::O => &l.self_attn.o_proj,
            ModuleKind::Gate => &l.mlp.gate_proj,
            ModuleKind::Up => &l.mlp.up_proj,
            ModuleKind::Down => &l.mlp.down_proj,
        }
    }

    fn projection_mut(&mut self, layer: usize, kind: ModuleKind) -> &mut Linear {
        let l = &mut self.layers[layer];
        match kind {
            ModuleKind::Q => &mut l.self_attn.q_proj,
            ModuleKind::K => &mut l.self_attn.k_proj,
            ModuleKind::V => &mut l.self_attn.v_proj,
            ModuleKind::O => &mut l.self_attn.o_proj,
            ModuleKind::Gate => &mut l.mlp.gate_proj,
            ModuleKind::Up => &mut l.mlp.up_proj,
            ModuleKind::Down => &mut l.mlp.down_proj,
        }
    }

    /// Every projection as (layer, kind, linear), in layer order.
    pub fn projections(&self) -> impl Iterator<Item = (usize, ModuleKind, &Linear)> {
        (0..self.layers.len())
            .flat_map(|layer| ModuleKind::ALL.into_iter().map(move |kind| (layer, kind)))
            .map(|(layer, kind)| (layer, kind, self.projection(layer, kind)))
    }

    /// How the deltas apply now.
    pub fn delta_mode(&self) -> DeltaMode {
        self.delta_mode
    }

    /// Switch how the deltas apply, merging them into the weights or taking them out as needed.
    pub fn set_delta_mode(&mut self, mode: DeltaMode) {
        let current = self.delta_mode;
        if current == DeltaMode::Merged && mode != DeltaMode::Merged {
            self.for_each_delta(|linear| linear.merge_delta(true));
        }
        if mode == DeltaMode::Merged && current != DeltaMode::Merged {
            self.for_each_delta(|linear| linear.merge_delta(false));
        }
        self.delta_mode = mode;
    }

    /// Change the deltas: `f(layer, kind, delta)` is called for every projection and may set,
    /// replace or remove its delta. Merged weights are unmerged first and merged again after,
    /// so they always hold exactly the current deltas.
    pub fn update_deltas(&mut self, mut f: impl FnMut(usize, ModuleKind, &mut Option<LowRankDelta>)) {
        let mode = self.delta_mode;
        self.set_delta_mode(DeltaMode::Off);
        for layer in 0..self.layers.len() {
            for kind in ModuleKind::ALL {
                f(layer, kind, &mut self.projection_mut(layer, kind).delta);
            }
        }
        self.set_delta_mode(mode);
    }

    /// Remove every delta (unmerging first): the base model.
    pub fn clear_deltas(&mut self) {
        self.update_deltas(|_, _, d| *d = None);
        self.delta_mode = DeltaMode::Off;
    }

    fn for_each_delta(&mut self, mut f: impl FnMut(&mut Linear)) {
        for layer in 0..self.layers.len() {
            for kind in ModuleKind::ALL {
                let linear = self.projection_mut(layer, kind);
                if linear.delta.is_some() {
                    f(linear);
                }
            }
        }
    }
}
