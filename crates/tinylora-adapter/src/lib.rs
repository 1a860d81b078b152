//! TinyLoRA adapters: configuration ([`AdapterConfig`]), weight tying ([`TieGroups`]) and
//! parameter planning from a model configuration alone ([`plan`], [`budget_options`]), and
//! the frozen rank-r SVD of a weight ([`truncated_svd`]) and the frozen part of an adapted
//! module ([`FrozenModule`]).

pub mod adapter_file;
pub mod config;
pub mod frozen;
pub mod init;
pub mod peft;
pub mod plan;
pub mod projection;
pub mod svd;
pub mod tie_groups;

pub use adapter_file::{AdapterFile, AdapterFileError};
pub use config::{AdapterConfig, ConfigError, MODULE_TYPES, Method, Precision, SigmaConvention, Tying};
pub use frozen::{FrozenModule, frozen_modules, module_path, svd_seed, weight_name};
pub use init::{initial_values, lora_delta};
pub use peft::{PeftAdapter, PeftError, PeftExport, PeftMethod, PeftModule, is_peft_dir, to_peft};
pub use plan::{ParameterPlan, budget_options, group_offsets, group_sizes, plan};
pub use projection::{core, delta_weight, mix, projections, sigma_split};
pub use svd::{TruncatedSvd, truncated_svd};
pub use tie_groups::{ModuleSlot, TieGroups};
