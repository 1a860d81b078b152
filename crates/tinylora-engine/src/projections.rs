//! The model's projections and their deltas: access by (layer, kind), the one [`DeltaMode`]
//! switch, and changes to the deltas that keep merged weights consistent.

use tinylora_formats::ModuleKind;

use crate::delta::{DeltaMode, LowRankDelta};
use crate::linear::Linear;
use crate::transformer::Transformer;

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
            self.for_each_delta(Linear::unmerge_delta);
        }
        if mode == DeltaMode::Merged && current != DeltaMode::Merged {
            let keep = self.keep_base;
            self.for_each_delta(|linear| linear.merge_delta(keep));
        }
        self.delta_mode = mode;
    }

    /// Keep a copy of the base weights of every projection with a delta while the deltas are
    /// merged (off by default). Unmerging then restores W itself rather than computing
    /// (W + ΔW) − ΔW, which may differ from W in the last bit; so the merged weights are
    /// always W + ΔW of the current deltas, whatever was merged before. Training needs this:
    /// its deltas change every step, and a resumed run (which starts from freshly loaded
    /// weights) must compute exactly what the uninterrupted run did. The cost is a second copy
    /// of the adapted projections while merged. Takes effect at the next merge.
    pub fn keep_base_weights(&mut self, keep: bool) {
        self.keep_base = keep;
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
