//! Batched language-model inference on burn's wgpu backend (Vulkan, Metal, DX12, WebGPU), or
//! natively on its Flex CPU backend ([`cpu_device`]).
//!
//! - [`transformer`]: the llama / qwen2 decoder ([`Transformer::load`] from a
//!   [`tinylora_formats::ModelFile`]).
//! - [`generate`]: KV-cached, batched generation of prompts of different lengths.
//! - [`delta`]: low-rank deltas ΔW = U (Σᵢ cᵢ Bᵢ) Vᵀ on the projections, applied on the
//!   activation path or merged into the weights ([`DeltaMode`]); adapters build them.
//! - [`sampling`]: greedy / temperature / top-k / top-p with seeded per-sequence streams.
//! - [`target_logprobs`]: log-probabilities of given tokens, the logits made in row chunks.

pub mod batch;
pub mod delta;
pub mod device;
pub mod error;
pub mod generate;
pub mod kv_cache;
pub mod linear;
pub mod projections;
pub mod rope;
pub mod sampling;
pub mod target_logprobs;
pub mod transformer;

pub use delta::{DeltaMode, LowRankDelta};
#[cfg(not(target_family = "wasm"))]
pub use device::cpu_device;
pub use device::default_device;
pub use device::gpu_device;
#[cfg(not(target_family = "wasm"))]
pub use device::hardware_gpu_available;
#[cfg(not(target_family = "wasm"))]
pub use device::{shader_f16_offered, stages_f16};
pub use error::{EngineError, read_f32, read_f32_async, read_scalar};
pub use generate::{FinishReason, GenerateOptions, Generation};
pub use linear::{FrozenWeight, Linear};
pub use sampling::SamplingParams;
pub use transformer::Transformer;
