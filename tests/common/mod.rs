//! Shared test support: model fixtures written from scratch and an independent CPU reference.
#![allow(dead_code)]

pub mod adapted;
#[cfg(not(target_family = "wasm"))]
pub mod digit_task;
pub mod gguf_writer;
pub mod reference;
#[cfg(not(target_family = "wasm"))]
mod test_dir;
pub mod tiny_model;

use std::path::PathBuf;

#[cfg(not(target_family = "wasm"))]
#[allow(unused_imports)] // each test binary includes this module; some make no directory
pub use test_dir::{TestDir, temp_dir};

/// Every device the engine runs on natively, named: the GPU through wgpu (lavapipe on machines
/// without one) and the CPU (burn's Flex backend).
#[cfg(not(target_family = "wasm"))]
pub fn devices() -> [(&'static str, burn::tensor::Device); 2] {
    use tinylora::engine::{cpu_device, default_device};
    [("gpu", default_device()), ("cpu", cpu_device())]
}

/// Root of the repository.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A real model fetched by `scripts/fetch_models.sh`; panics with the command to run if absent.
pub fn real_model(file: &str, fetch_name: &str) -> PathBuf {
    let dir = std::env::var_os("TINYLORA_MODELS").map_or_else(|| repo().join("models"), PathBuf::from);
    let path = dir.join(file);
    assert!(
        path.exists(),
        "{} is missing: run `scripts/fetch_models.sh {fetch_name}` first",
        path.display()
    );
    path
}

/// SmolLM2-135M-Instruct (Q4_1 GGUF).
pub fn smollm2() -> PathBuf {
    real_model("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2")
}

/// Qwen2.5-Coder-0.5B-Instruct (Q5_0 / Q8_0 / Q4_K GGUF).
pub fn qwen05() -> PathBuf {
    real_model("Qwen2.5-Coder-0.5B-Instruct.gguf", "qwen0.5b")
}

/// GSM8K test split from the shared data beside the checkout (`../shared/data/gsm8k`).
pub fn gsm8k_test() -> PathBuf {
    let path = repo().join("../shared/data/gsm8k/test.jsonl");
    assert!(
        path.exists(),
        "{} is missing: the tests read GSM8K from ../shared/data",
        path.display()
    );
    path
}
