//! tinylora: TinyLoRA adapters trained with GRPO on any GPU through WebGPU.
//!
//! This facade re-exports the workspace crates; the integration tests in `tests/` and the
//! benchmarks in `benches/` build against it.

pub use tinylora_adapter as adapter;
pub use tinylora_engine as engine;
pub use tinylora_formats as formats;
pub use tinylora_kernels as kernels;
pub use tinylora_train as train;
