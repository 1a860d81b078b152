//! Parameter planning from the model configuration alone (no weights):
//! N_params = Σ over tie groups of the trainable numbers per group (n·m·u / n_tie for TinyLoRA).

use tinylora_formats::ModelConfig;

use crate::config::{AdapterConfig, Method, Tying};

/// What an adapter configuration costs on a model.
#[derive(Debug, Clone, PartialEq)]
pub struct ParameterPlan {
    /// Layers n.
    pub n_layers: usize,
    /// Adapted modules per layer m.
    pub modules_per_layer: usize,
    /// Adapted modules n·m.
    pub modules: usize,
    /// Tie groups.
    pub groups: usize,
    /// Trainable numbers N_params.
    pub params: usize,
    /// Bytes of the trainable numbers at the configured precision.
    pub bytes: usize,
}

/// The number of trainable values of each tie group, in group order (the layout of an
/// adapter's values: group 0's, then group 1's, …).
pub fn group_sizes(model: &ModelConfig, adapter: &AdapterConfig) -> Vec<usize> {
    let groups = adapter.tie_groups(model.num_hidden_layers);
    // every group holds modules of one shape (tiled groups may mix types: LoRA-XS and
    // TinyLoRA sizes do not depend on the shape, and LoRA is never tied)
    (0..groups.num_groups)
        .map(|g| {
            let first = groups.modules[groups.members(g)[0]];
            let (d_out, d_in) = first.kind.shape(model);
            adapter.params_per_group(d_out, d_in)
        })
        .collect()
}

/// Where each group's values start in the adapter's flat value list (group order).
pub fn group_offsets(sizes: &[usize]) -> Vec<usize> {
    sizes
        .iter()
        .scan(0, |acc, &n| Some(std::mem::replace(acc, *acc + n)))
        .collect()
}

/// Count the trainable numbers of `adapter` on `model`.
pub fn plan(model: &ModelConfig, adapter: &AdapterConfig) -> ParameterPlan {
    let m = adapter.targets.len();
    let groups = adapter.tie_groups(model.num_hidden_layers);
    let params: usize = group_sizes(model, adapter).iter().sum();
    ParameterPlan {
        n_layers: model.num_hidden_layers,
        modules_per_layer: m,
        modules: groups.modules.len(),
        groups: groups.num_groups,
        params,
        bytes: params * adapter.precision.bytes(),
    }
}

/// TinyLoRA configurations (u, tiled n_tie, or full tying) of `base` whose parameter count is
/// exactly `budget`, the least sharing first (the paper prefers spending a budget on u and
/// on fewer modules per group over heavier tying).
pub fn budget_options(
    model: &ModelConfig,
    base: &AdapterConfig,
    budget: usize,
) -> Vec<(AdapterConfig, ParameterPlan)> {
    let modules = model.num_hidden_layers * base.targets.len();
    let mut out = Vec::new();
    for u in 1..=budget {
        if !budget.is_multiple_of(u) {
            continue;
        }
        let groups = budget / u;
        // smallest n_tie that gives exactly `groups` tiled groups
        let tying = if groups == 1 {
            Some(Tying::Full)
        } else {
            (1..=modules)
                .find(|&n| modules.div_ceil(n) == groups)
                .map(|n_tie| match n_tie {
                    1 => Tying::None,
                    n_tie => Tying::Tiled { n_tie },
                })
        };
        if let Some(tying) = tying {
            let cfg = AdapterConfig {
                method: Method::Tinylora,
                u,
                tying,
                ..base.clone()
            };
            let p = plan(model, &cfg);
            debug_assert_eq!(p.params, budget);
            out.push((cfg, p));
        }
    }
    out.sort_by_key(|(_, p)| std::cmp::Reverse(p.groups));
    out
}
