//! Assignment of adapted modules to tie groups (modules in a group share trainable numbers).

use serde::{Deserialize, Serialize};
use tinylora_formats::{ModuleKind, UnknownName, parse_name};

/// How modules share trainable parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Tying {
    /// Every module has its own parameters.
    None,
    /// Runs of `n_tie` neighbouring modules in layer order share (whatever their type).
    Tiled {
        /// Modules per group.
        n_tie: usize,
    },
    /// Modules of the same type in runs of `n_tie` neighbouring layers share.
    Structured {
        /// Layers per group.
        n_tie: usize,
    },
    /// One set of parameters for the whole model.
    Full,
}

impl Tying {
    /// Build from the CLI's `--tying KIND [--n-tie N]`.
    pub fn parse(kind: &str, n_tie: usize) -> Result<Self, UnknownName> {
        let table = [
            ("none", Tying::None),
            ("tiled", Tying::Tiled { n_tie }),
            ("structured", Tying::Structured { n_tie }),
            ("full", Tying::Full),
        ];
        parse_name("tying", "none, tiled, structured, full", &table, kind)
    }

    /// Short description, e.g. `tiled (n_tie = 17)`.
    pub fn describe(self) -> String {
        match self {
            Tying::None => "none".into(),
            Tying::Tiled { n_tie } => format!("tiled (n_tie = {n_tie})"),
            Tying::Structured { n_tie } => format!("structured (n_tie = {n_tie} layers)"),
            Tying::Full => "full".into(),
        }
    }
}

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
