//! Adapters on a model: configuration ([`AdapterConfig`]) and the three parametrizations
//! behind one trait ([`Parametrization`]: TinyLoRA, LoRA-XS, LoRA), weight tying
//! ([`TieGroups`]), parameter planning from a model configuration alone ([`plan`],
//! [`budget_options`]), the frozen rank-r SVD of a weight ([`truncated_svd`], [`FrozenModule`]),
//! adapter files and PEFT directories, and the model with an adapter attached
//! ([`AdaptedModel`]), which turns an adapter into the engine's low-rank deltas.

pub mod adapted;
pub mod adapter_file;
pub mod config;
pub mod frozen;
pub mod init;
pub mod parametrization;
pub mod peft;
pub mod plan;
pub mod projection;
pub mod svd;
pub mod tie_groups;

pub use adapted::{AdaptedModel, AdapterError, AdapterParts, AttachedAdapter, FrozenParts};
pub use adapter_file::{AdapterFile, AdapterFileError};
pub use config::{AdapterConfig, ConfigError, Method, Precision, SigmaConvention, Tying};
pub use frozen::{FrozenModule, frozen_modules, svd_seed};
pub use init::initial_values;
pub use parametrization::{Lora, LoraXs, Parametrization, TinyLora, lora_delta};
pub use peft::{
    PeftAdapter, PeftError, PeftExport, PeftExportError, PeftMethod, PeftModule, is_peft_dir, to_peft,
};
pub use plan::{ParameterPlan, budget_options, group_offsets, group_sizes, plan};
pub use projection::{core, delta_weight, mix, projections, sigma_split};
pub use svd::{TruncatedSvd, truncated_svd};
pub use tie_groups::{ModuleSlot, TieGroups};
