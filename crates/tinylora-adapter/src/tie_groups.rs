//! Assignment of adapted modules to tie groups (modules in a group share trainable numbers).

use crate::config::Tying;

/// One adapted module: its layer and type index (into the adapter's targets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModuleSlot {
    /// Decoder layer.
    pub layer: usize,
    /// Position of the module type in the adapter's target list.
    pub kind: usize,
}

/// Modules in layer order (layer 0: q, k, v, …; layer 1: …) and the group of each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TieGroups {
    /// Every adapted module, in layer order.
    pub modules: Vec<ModuleSlot>,
    /// `group[i]`: tie group of `modules[i]`; groups are numbered 0.. in order of first use.
    pub group: Vec<usize>,
    /// Number of groups.
    pub num_groups: usize,
}

impl TieGroups {
    /// Groups for `n_layers` layers with `m` adapted module types each.
    pub fn new(n_layers: usize, m: usize, tying: Tying) -> Self {
        let modules: Vec<ModuleSlot> = (0..n_layers)
            .flat_map(|layer| (0..m).map(move |kind| ModuleSlot { layer, kind }))
            .collect();
        let layer_blocks = |n_tie: usize| n_layers.div_ceil(n_tie);
        let group: Vec<usize> = match tying {
            Tying::None => (0..modules.len()).collect(),
            Tying::Tiled { n_tie } => (0..modules.len()).map(|i| i / n_tie).collect(),
            Tying::Structured { n_tie } => modules
                .iter()
                .map(|s| s.kind * layer_blocks(n_tie) + s.layer / n_tie)
                .collect(),
            Tying::Full => vec![0; modules.len()],
        };
        let num_groups = match tying {
            Tying::None => modules.len(),
            Tying::Tiled { n_tie } => modules.len().div_ceil(n_tie),
            Tying::Structured { n_tie } => m * layer_blocks(n_tie),
            Tying::Full => usize::from(!modules.is_empty()),
        };
        TieGroups {
            modules,
            group,
            num_groups,
        }
    }

    /// Indices into `modules` of the members of group `g`.
    pub fn members(&self, g: usize) -> Vec<usize> {
        (0..self.group.len()).filter(|&i| self.group[i] == g).collect()
    }
}
