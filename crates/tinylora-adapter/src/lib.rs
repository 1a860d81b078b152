//! TinyLoRA adapters: configuration ([`AdapterConfig`]), weight tying ([`TieGroups`]) and
//! parameter planning from a model configuration alone ([`plan`], [`budget_options`]).

pub mod config;
pub mod plan;
pub mod tie_groups;

pub use config::{AdapterConfig, ConfigError, MODULE_TYPES, Method, Precision, SigmaConvention, Tying};
pub use plan::{ParameterPlan, budget_options, plan};
pub use tie_groups::{ModuleSlot, TieGroups};
