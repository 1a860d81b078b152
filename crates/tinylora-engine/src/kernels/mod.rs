//! Custom WGSL kernels wired into burn as backend extension ops.
//!
//! Each op has a forward on `CubeBackend` that launches a raw `.wgsl` file from `shaders/`.
//! The high-level wrappers take and return burn `Tensor`s.

mod attention_decode;
mod launch;

use burn::backend::{Dispatch, backend_extension, tensor::FloatTensor};
use burn::tensor::Tensor;

/// Backend extension: tinylora's custom kernels.
#[backend_extension(Autodiff, Cube)]
pub trait KernelBackend: burn::backend::Backend {
    /// Decode-step attention (`shaders/attention_decode.wgsl`): q `[B, n_h, d_h]`, k and v
    /// `[B, n_kv, S, d_h]`, row b attending to slots `first[b]..len` → `[B, n_h, d_h]`.
    /// Inference only: it has no backward pass.
    fn attention_decode(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        first: Vec<u32>,
        len: u32,
    ) -> FloatTensor<Self>;
}

/// Attention of one new query per sequence over its cached keys/values, in one launch:
/// `o[b, h] = Σ_{j ∈ first[b]..len} softmax_j(q[b,h]·k[b,g,j] / √d_h) v[b,g,j]`, g = h / (n_h / n_kv).
///
/// q `[B, n_h, d_h]`, k, v `[B, n_kv, S, d_h]` → `[B, n_h, d_h]`. Not differentiable: call it
/// on inference (non-autodiff) tensors only.
pub fn attention_decode(q: Tensor<3>, k: Tensor<4>, v: Tensor<4>, first: &[usize], len: usize) -> Tensor<3> {
    assert!(!q.device().is_autodiff(), "attention_decode has no backward pass; use it for inference only");
    let first = first.iter().map(|&f| f as u32).collect();
    Tensor::from_dispatch(Dispatch::attention_decode(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        first,
        len as u32,
    ))
}
