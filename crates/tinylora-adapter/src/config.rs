//! What an adapter is: method, frozen rank, trainable size, tying, targets, precision.
//!
//! For a frozen linear weight W `[d_out, d_in]` (y = x Wᵀ), SPEC.md §1:
//!
//! | method   | update ΔW                   | trainable per tie group |
//! |----------|-----------------------------|-------------------------|
//! | LoRA     | B A                         | r (d_in + d_out)        |
//! | LoRA-XS  | U Σ R Vᵀ                    | r²                      |
//! | TinyLoRA | U Σ (Σᵢ vᵢ Pᵢ) Vᵀ, i ≤ u     | u                       |

use serde::{Deserialize, Serialize};
use tinylora_formats::{ModuleKind, UnknownName, parse_name};

pub use crate::parametrization::{Method, Parametrization};
pub use crate::projection::SigmaConvention;
pub use crate::tie_groups::{TieGroups, Tying};

/// Storage and application precision of the trainable numbers (the optimizer keeps f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 4 bytes.
    F32,
    /// 2 bytes, 8-bit exponent.
    Bf16,
    /// 2 bytes, 5-bit exponent.
    F16,
}

impl Precision {
    /// Bytes per stored value.
    pub fn bytes(self) -> usize {
        match self {
            Precision::F32 => 4,
            Precision::Bf16 | Precision::F16 => 2,
        }
    }
}

/// A complete adapter description; with the base weights it determines the update exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterConfig {
    /// Parametrization.
    pub method: Method,
    /// Frozen rank r of the truncated SVD (LoRA: the rank of B A).
    pub rank: usize,
    /// Trainable numbers per tie group for TinyLoRA.
    pub u: usize,
    /// Parameter sharing.
    pub tying: Tying,
    /// Adapted module kinds, in layer order ([`ModuleKind::ALL`]'s), each once.
    pub targets: Vec<ModuleKind>,
    /// Precision of the trainable numbers.
    pub precision: Precision,
    /// Seed of the random projections Pᵢ (N(0, 1/r) entries).
    pub projection_seed: u64,
    /// Σ placement.
    pub sigma: SigmaConvention,
}

impl Default for AdapterConfig {
    /// The paper's recommendation: TinyLoRA, r = 2, u = 1, untied, all seven modules, f32.
    fn default() -> Self {
        AdapterConfig {
            method: Method::Tinylora,
            rank: 2,
            u: 1,
            tying: Tying::None,
            targets: ModuleKind::ALL.to_vec(),
            precision: Precision::F32,
            projection_seed: 0,
            sigma: SigmaConvention::Paper,
        }
    }
}

/// An adapter configuration that cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// No targets.
    #[error("at least one target module is needed")]
    NoTargets,
    /// A zero where a positive number is needed.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// LoRA trains full-size factors per module; tying them is not defined here.
    #[error("LoRA adapters cannot be tied; use --tying none")]
    TiedLora,
    /// A size beyond what the kernels (rank) or any sane adapter (u) take.
    #[error("{what} = {value} is more than {max}")]
    TooLarge {
        /// `rank` or `u`.
        what: &'static str,
        /// The value given.
        value: usize,
        /// The largest allowed.
        max: usize,
    },
}

/// The largest u (trainable numbers per tie group) an adapter may ask for.
pub const MAX_U: usize = 1 << 16;

impl AdapterConfig {
    /// Check the configuration and put the targets in layer order.
    pub fn validated(mut self) -> Result<Self, ConfigError> {
        if self.targets.is_empty() {
            return Err(ConfigError::NoTargets);
        }
        self.targets.sort();
        self.targets.dedup();
        if self.rank == 0 {
            return Err(ConfigError::Zero("rank"));
        }
        if self.method == Method::Tinylora && self.u == 0 {
            return Err(ConfigError::Zero("u"));
        }
        let too_large = |what, value, max| ConfigError::TooLarge { what, value, max };
        if self.rank > tinylora_kernels::MAX_RANK {
            return Err(too_large("rank", self.rank, tinylora_kernels::MAX_RANK));
        }
        if self.u > MAX_U {
            return Err(too_large("u", self.u, MAX_U));
        }
        match self.tying {
            Tying::Tiled { n_tie: 0 } | Tying::Structured { n_tie: 0 } => {
                return Err(ConfigError::Zero("n_tie"));
            }
            Tying::None => {}
            _ if !self.parametrization().tieable() => return Err(ConfigError::TiedLora),
            _ => {}
        }
        Ok(self)
    }

    /// The parametrization of [`Self::method`].
    pub fn parametrization(&self) -> &'static dyn Parametrization {
        self.method.parametrization()
    }

    /// The tie groups of this adapter on a model of `n_layers` layers.
    pub fn tie_groups(&self, n_layers: usize) -> TieGroups {
        TieGroups::new(n_layers, &self.targets, self.tying)
    }

    /// Trainable numbers per tie group for modules of shape (d_out, d_in).
    pub fn params_per_group(&self, d_out: usize, d_in: usize) -> usize {
        self.parametrization()
            .params_per_group(self.rank, self.u, d_out, d_in)
    }

    /// The r × r matrices the values of module `module` (layer order) mix, before the Σ
    /// convention; `None` when the factors themselves are trained.
    pub fn mixing_matrices(&self, module: usize) -> Option<Vec<Vec<f32>>> {
        self.parametrization()
            .mixing_matrices(self.rank, self.u, self.projection_seed, module)
    }
}

impl std::str::FromStr for Precision {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        let table = [
            ("f32", Precision::F32),
            ("bf16", Precision::Bf16),
            ("f16", Precision::F16),
        ];
        parse_name("precision", "f32, bf16, f16", &table, s)
    }
}
