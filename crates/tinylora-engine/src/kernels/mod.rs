//! Custom WGSL kernels wired into burn as backend extension ops.
//!
//! Each op has a forward on `CubeBackend` that launches a raw `.wgsl` file from `shaders/`,
//! and an `Autodiff<B, C>` implementation with its backward, so the same op serves inference
//! and training. The high-level wrappers take and return burn `Tensor`s.

mod small_m_matmul;

use burn::backend::{Dispatch, backend_extension, tensor::FloatTensor};
use burn::tensor::Tensor;

/// Largest row count [`skinny_matmul`] handles.
pub const SKINNY_MAX_ROWS: usize = 16;

/// Backend extension: tinylora's custom kernels.
#[backend_extension(Autodiff, Cube)]
pub trait KernelBackend: burn::backend::Backend {
    /// x `[M, K]` · wt `[K, N]` → `[M, N]` for M ≤ [`SKINNY_MAX_ROWS`] (`shaders/matmul_small_m.wgsl`).
    fn skinny_matmul(x: FloatTensor<Self>, wt: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// x `[M, K]` · wt `[K, N]` for few rows M (decode steps), reading each weight once.
pub fn skinny_matmul(x: Tensor<2>, wt: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::skinny_matmul(x.into_dispatch(), wt.into_dispatch()))
}
