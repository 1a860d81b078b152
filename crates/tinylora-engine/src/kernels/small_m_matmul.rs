//! `skinny_matmul`: forward kernel launch and backward.

use burn::backend::autodiff::{
    Autodiff, NodeId,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::tensor::FloatTensor;
use burn::tensor::{DType, Shape};
use burn_cubecl::{
    CubeBackend,
    kernel::into_contiguous,
    tensor::CubeTensor,
    template::{KernelSource, SourceKernel, SourceTemplate},
};
use cubecl::{CubeCount, CubeDim, prelude::KernelId, server::KernelArguments};

use super::{KernelBackend, SKINNY_MAX_ROWS};

const WORKGROUP: u32 = 64;

/// The WGSL template specialised for a row count.
#[derive(Debug)]
struct SkinnyMatmul {
    rows: u32,
}

impl KernelSource for SkinnyMatmul {
    fn source(&self) -> SourceTemplate {
        SourceTemplate::new(include_str!("../../../../shaders/matmul_small_m.wgsl"))
            .register("m", self.rows.to_string())
            .register("wg", WORKGROUP.to_string())
    }
    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((self.rows, WORKGROUP))
    }
    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

fn launch(x: CubeTensor, wt: CubeTensor) -> CubeTensor {
    x.assert_is_on_same_device(&wt);
    let (x, wt) = (into_contiguous(x), into_contiguous(wt));
    assert!(x.dtype == DType::F32 && wt.dtype == DType::F32, "skinny_matmul is f32 only");
    let (m, k) = (x.meta.shape()[0], x.meta.shape()[1]);
    let (k2, n) = (wt.meta.shape()[0], wt.meta.shape()[1]);
    assert_eq!(k, k2, "skinny_matmul: x is [{m}, {k}] but wt is [{k2}, {n}]");
    assert!((1..=SKINNY_MAX_ROWS).contains(&m), "skinny_matmul: {m} rows (1..={SKINNY_MAX_ROWS})");
    let shape = Shape::from(vec![m, n]);
    let buffer = x.client.empty(shape.num_elements() * 4);
    let out = CubeTensor::new_contiguous(x.client.clone(), x.device.clone(), shape, buffer, DType::F32);
    let info = x.client.create_from_slice(bytemuck::cast_slice(&[k as u32, n as u32]));
    let cube_dim = CubeDim::new_1d(WORKGROUP);
    x.client.launch(
        Box::new(SourceKernel::new(SkinnyMatmul { rows: m as u32 }, cube_dim)),
        CubeCount::Static((n as u32).div_ceil(WORKGROUP), 1, 1),
        KernelArguments::new().with_buffers(vec![
            x.handle.clone().binding(),
            wt.handle.clone().binding(),
            out.handle.clone().binding(),
            info.binding(),
        ]),
    );
    out
}

impl KernelBackend for CubeBackend {
    fn skinny_matmul(x: FloatTensor<Self>, wt: FloatTensor<Self>) -> FloatTensor<Self> {
        launch(x, wt)
    }
}

// y = x Wt  ⇒  ∂L/∂x = G Wtᵀ,  ∂L/∂Wt = xᵀ G.
impl<B: KernelBackend, C: CheckpointStrategy> KernelBackend for Autodiff<B, C> {
    fn skinny_matmul(x: FloatTensor<Self>, wt: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct SkinnyMatmulBackward;

        impl<B: KernelBackend> Backward<B, 2> for SkinnyMatmulBackward {
            type State = (NodeId, NodeId);

            fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
                let [node_x, node_wt] = ops.parents;
                let g = grads.consume::<B>(&ops.node);
                let (x_id, wt_id) = ops.state;
                let x: FloatTensor<B> = checkpointer.retrieve_node_output(x_id);
                let wt: FloatTensor<B> = checkpointer.retrieve_node_output(wt_id);
                if let Some(node) = node_wt {
                    grads.register::<B>(node.id, B::float_matmul(B::float_transpose(x), g.clone()));
                }
                if let Some(node) = node_x {
                    grads.register::<B>(node.id, B::float_matmul(g, B::float_transpose(wt)));
                }
            }
        }

        match SkinnyMatmulBackward
            .prepare::<C>([x.node(), wt.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let wt_state = prep.checkpoint(&wt);
                let out = B::skinny_matmul(x.into_primitive(), wt.into_primitive());
                prep.finish((x_state, wt_state), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::skinny_matmul(x.into_primitive(), wt.into_primitive())),
        }
    }
}
