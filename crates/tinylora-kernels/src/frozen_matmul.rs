//! Products with a frozen dense weight: y = x Wᵀ for x `[N, d_in]` and Wᵀ `[d_in, d_out]` held
//! in f32, differentiable in x only (∂L/∂x = G W; W is frozen and gets no gradient).
//!
//! On the cube backend it is the stock matmul. On Flex (`crate::frozen_matmul_cpu`) a single
//! row of x (batch-1 decoding) is a matrix–vector product streamed over both cores; more rows
//! go to Flex's matmul (gemm), whose one-row path runs on one core.

use burn::backend::autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::ops::FloatTensorOps;
use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::tensor::Tensor;
use burn_cubecl::CubeBackend;

/// Backend extension: the product with a frozen dense weight.
#[backend_extension(Autodiff, Cube, Flex: cfg(not(target_family = "wasm")))]
pub trait FrozenMatmulBackend: burn::backend::Backend {
    /// y = x Wᵀ `[N, d_out]` for x `[N, d_in]` and Wᵀ `[d_in, d_out]`; differentiable in x.
    fn frozen_matmul(x: FloatTensor<Self>, weight_t: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// x `[N, d_in]`, Wᵀ `[d_in, d_out]` → x Wᵀ `[N, d_out]`; differentiable in x, never in W.
pub fn frozen_matmul(x: Tensor<2>, weight_t: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::frozen_matmul(
        x.into_dispatch(),
        weight_t.into_dispatch(),
    ))
}

impl FrozenMatmulBackend for CubeBackend {
    fn frozen_matmul(x: FloatTensor<Self>, weight_t: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_matmul(x, weight_t)
    }
}

#[derive(Debug)]
struct FrozenMatmulBackward;

// y = x Wᵀ: ∂L/∂x = G W = G (Wᵀ)ᵀ.
impl<B: Backend> Backward<B, 1> for FrozenMatmulBackward {
    /// Wᵀ (a handle).
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let g = grads.consume::<B>(&ops.node); // [N, d_out]
        if let Some(node) = node_x {
            grads.register::<B>(node.id, B::float_matmul(g, B::float_transpose(ops.state)));
        }
    }
}

impl<B: FrozenMatmulBackend, C: CheckpointStrategy> FrozenMatmulBackend for Autodiff<B, C> {
    fn frozen_matmul(x: FloatTensor<Self>, weight_t: FloatTensor<Self>) -> FloatTensor<Self> {
        let prep = FrozenMatmulBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful();
        let (x, weight_t) = (x.into_primitive(), weight_t.into_primitive());
        match prep {
            OpsKind::Tracked(prep) => {
                let y = B::frozen_matmul(x, weight_t.clone());
                prep.finish(weight_t, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::frozen_matmul(x, weight_t)),
        }
    }
}
