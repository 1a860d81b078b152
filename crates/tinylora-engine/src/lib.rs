//! Batched language-model inference on burn's wgpu backend (Vulkan, Metal, DX12, WebGPU), or
//! natively on its Flex CPU backend ([`cpu_device`]).
//!
//! - [`transformer`]: the llama / qwen2 decoder ([`Transformer::load`] from a
//!   [`tinylora_formats::ModelFile`]).
//! - [`generate`]: KV-cached, batched generation of prompts of different lengths.
//! - [`adapter`]: TinyLoRA / LoRA-XS adapters attached to a model (activation path, merged).
//! - [`sampling`]: greedy / temperature / top-k / top-p with seeded per-sequence streams.

pub mod adapter;
pub mod batch;
pub mod device;
pub mod generate;
pub mod kv_cache;
pub mod linear;
pub mod rope;
pub mod sampling;
pub mod transformer;

pub use adapter::{AdapterError, AdapterMode, AttachedAdapter};
#[cfg(not(target_family = "wasm"))]
pub use device::cpu_device;
pub use device::default_device;
#[cfg(not(target_family = "wasm"))]
pub use device::hardware_gpu_available;
pub use generate::{FinishReason, GenerateOptions, Generation};
pub use sampling::SamplingParams;
pub use transformer::Transformer;
