//! Assignment of adapted modules to tie groups (modules in a group share trainable numbers).

use tinylora_formats::ModuleKind;

use crate::config::Tying;

/// One adapted module: its layer and kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModuleSlot {
    /// Decoder layer.
    pub layer: usize,
    /// Which projection.
    pub kind: ModuleKind,
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
    /// Groups for `n_layers` layers adapting the projections `targets` (in layer order) of each.
    pub fn new(n_layers: usize, targets: &[ModuleKind], tying: Tying) -> Self {
        let m = targets.len();
        let modules: Vec<ModuleSlot> = (0..n_layers)
            .flat_map(|layer| targets.iter().map(move |&kind| ModuleSlot { layer, kind }))
            .collect();
        // position of a module's kind among the targets (structured tying groups by it)
        let type_index = |s: &ModuleSlot| targets.iter().position(|&t| t == s.kind).unwrap_or(0);
        let layer_blocks = |n_tie: usize| n_layers.div_ceil(n_tie);
        let group: Vec<usize> = match tying {
            Tying::None => (0..modules.len()).collect(),
            Tying::Tiled { n_tie } => (0..modules.len()).map(|i| i / n_tie).collect(),
            Tying::Structured { n_tie } => modules
                .iter()
                .map(|s| type_index(s) * layer_blocks(n_tie) + s.layer / n_tie)
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
