//! The reference side of adapter tests: a model's weights with the adapter's update added on
//! the host from the SVD and the projections (independent of the GPU kernels), for the
//! plain-Rust forward.

use tinylora::adapter::{
    AdapterConfig, FrozenModule, Method, core, delta_weight, group_sizes, lora_delta, mix, projections,
};
use tinylora::formats::ModelConfig;

use super::tiny_model::Weights;

/// The base weights with W + ΔW in every target, ΔW = U core(Σ, Σᵢ vᵢ Pᵢ) Vᵀ built on the host
/// from the SVD and the projections (LoRA-XS: R = v as an r×r matrix).
pub fn adapted_weights(c: &ModelConfig, w: &Weights, cfg: &AdapterConfig, v: &[f32]) -> Weights {
    let groups = cfg.tie_groups(c.num_hidden_layers);
    let sizes = group_sizes(c, cfg);
    let r = cfg.rank;
    let mut out = w.clone();
    for (k, (slot, &g)) in groups.modules.iter().zip(&groups.group).enumerate() {
        let name = slot.kind.weight_name(slot.layer);
        let (shape, data) = out.get_mut(&name).unwrap();
        let start: usize = sizes[..g].iter().sum();
        let vg = &v[start..start + sizes[g]];
        let delta = if cfg.method == Method::Lora {
            lora_delta(vg, shape[0], shape[1], r)
        } else {
            // the SVD only (the mixing matrices are applied below, independently)
            let frozen = FrozenModule::new(cfg, k, &[], data, shape[0], shape[1]);
            let rmat = match cfg.method {
                Method::Tinylora => mix(vg, &projections(cfg.projection_seed, k, cfg.u, r), r),
                _ => vg.to_vec(),
            };
            delta_weight(&frozen.svd, &core(&frozen.svd.s, &rmat, cfg.sigma))
        };
        data.iter_mut().zip(delta).for_each(|(x, d)| *x += d);
    }
    out
}
