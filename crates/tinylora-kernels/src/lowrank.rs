//! `lowrank_update`: the forward kernel, the gradient kernels and the backward that uses them.
//!
//! y = base + ((x V) Mᵀ) Uᵀ, M = Σᵢ vᵢ P̃ᵢ. With G = ∂L/∂y, z = x V, w = G U:
//! ∂L/∂base = G; ∂L/∂x = (w M) Vᵀ; ∂L/∂vᵢ = ⟨P̃ᵢ, Σ_t w_tᵀ z_t⟩; and for trainable factors
//! (LoRA) ∂L/∂U = Gᵀ (z Mᵀ), ∂L/∂V = xᵀ (w M).

use burn::backend::autodiff::{
    Autodiff, NodeId,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::{Backend, TensorMetadata, tensor::FloatTensor};
use burn::tensor::{Shape, Slice};
use burn_cubecl::{CubeBackend, tensor::CubeTensor};

use crate::LowRankBackend;
use crate::launch::{MAX_RANK, Wgsl, dims, empty, input, launch, rank_values};

/// The gradient kernels behind the backward of [`LowRankBackend::lowrank_update`].
pub trait LowRankGradBackend: Backend {
    /// Per token: (the low-rank share of ∂L/∂x `[T, d_in]`, z and w `[T, 2r]`)
    /// (`shaders/lowrank_backward.wgsl`).
    fn lowrank_backward(
        x: FloatTensor<Self>,
        g: FloatTensor<Self>,
        factors: FloatTensor<Self>,
        basis: FloatTensor<Self>,
        coef: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// ∂L/∂v `[n_v]` from z and w (`shaders/lowrank_grad_coef.wgsl`).
    fn lowrank_grad_coef(zw: FloatTensor<Self>, basis: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// Shapes of one call: (T, d_in, d_out, r, n_v), checked against each other.
fn shapes(
    op: &str,
    x: &CubeTensor,
    factors: &CubeTensor,
    basis: &CubeTensor,
    coef: &CubeTensor,
) -> [usize; 5] {
    let (xd, fd, bd, cd) = (dims(x), dims(factors), dims(basis), dims(coef));
    assert!(
        xd.len() == 2 && fd.len() == 2 && bd.len() == 3 && cd.len() == 1,
        "{op}: x, factors, basis, coef must be 2-, 2-, 3- and 1-D, not {xd:?} {fd:?} {bd:?} {cd:?}"
    );
    let (t, d_in, r, n_v) = (xd[0], xd[1], fd[1], cd[0]);
    assert!(
        (1..=MAX_RANK).contains(&r),
        "{op}: rank {r} is outside 1..={MAX_RANK}"
    );
    assert!(
        fd[0] > d_in,
        "{op}: factors {fd:?} cannot hold V [{d_in}, {r}] below U"
    );
    assert_eq!(
        &bd[..],
        &[n_v, r, r],
        "{op}: basis {bd:?} does not match coef [{n_v}] and r = {r}"
    );
    [t, d_in, fd[0] - d_in, r, n_v]
}

impl LowRankGradBackend for CubeBackend {
    fn lowrank_backward(
        x: CubeTensor,
        g: CubeTensor,
        factors: CubeTensor,
        basis: CubeTensor,
        coef: CubeTensor,
    ) -> (CubeTensor, CubeTensor) {
        let op = "lowrank_backward";
        let [x, g, factors, basis, coef] = [
            (x, "x"),
            (g, "g"),
            (factors, "factors"),
            (basis, "basis"),
            (coef, "coef"),
        ]
        .map(|(t, name)| input(t, op, name));
        let [t, d_in, d_out, r, n_v] = shapes(op, &x, &factors, &basis, &coef);
        assert_eq!(dims(&g), [t, d_out], "{op}: g must be [{t}, {d_out}]");
        let dx = empty(&x, vec![t, d_in]);
        let zw = empty(&x, vec![t, 2 * r]);
        let kernel = Wgsl {
            source: include_str!("../../../shaders/lowrank_backward.wgsl"),
            values: rank_values(r),
        };
        let info = [t, d_in, d_out, n_v].map(|n| n as u32);
        launch(kernel, t, &[&x, &g, &factors, &basis, &coef, &dx, &zw], &info);
        (dx, zw)
    }

    fn lowrank_grad_coef(zw: CubeTensor, basis: CubeTensor) -> CubeTensor {
        let op = "lowrank_grad_coef";
        let (zw, basis) = (input(zw, op, "zw"), input(basis, op, "basis"));
        let (zd, bd) = (dims(&zw), dims(&basis));
        let (t, r, n_v) = (zd[0], bd[1], bd[0]);
        assert_eq!(zd[1], 2 * r, "{op}: zw {zd:?} does not match basis {bd:?}");
        let dcoef = empty(&zw, vec![n_v]);
        let kernel = Wgsl {
            source: include_str!("../../../shaders/lowrank_grad_coef.wgsl"),
            values: rank_values(r),
        };
        launch(kernel, 1, &[&zw, &basis, &dcoef], &[t as u32, n_v as u32]);
        dcoef
    }
}

/// The forward launch on the cube backend.
pub(crate) fn forward(
    x: CubeTensor,
    base: CubeTensor,
    factors: CubeTensor,
    basis: CubeTensor,
    coef: CubeTensor,
) -> CubeTensor {
    let op = "lowrank_update";
    let [x, base, factors, basis, coef] = [
        (x, "x"),
        (base, "base"),
        (factors, "factors"),
        (basis, "basis"),
        (coef, "coef"),
    ]
    .map(|(t, name)| input(t, op, name));
    x.assert_is_on_same_device(&factors);
    let [t, d_in, d_out, r, n_v] = shapes(op, &x, &factors, &basis, &coef);
    assert_eq!(
        dims(&base),
        [t, d_out],
        "{op}: base must be [{t}, {d_out}] for x [{t}, {d_in}]"
    );
    let y = empty(&x, vec![t, d_out]);
    let kernel = Wgsl {
        source: include_str!("../../../shaders/lowrank_forward.wgsl"),
        values: rank_values(r),
    };
    let info = [t, d_in, d_out, n_v].map(|n| n as u32);
    launch(kernel, t, &[&x, &base, &factors, &basis, &coef, &y], &info);
    y
}

/// M = Σᵢ vᵢ P̃ᵢ `[r, r]` in stock ops (only the LoRA factor gradients need it on the host side).
fn core<B: Backend>(basis: FloatTensor<B>, coef: FloatTensor<B>) -> FloatTensor<B> {
    let [n_v, r, _] = basis.shape().dims();
    let weighted = B::float_mul(
        B::float_reshape(basis, Shape::new([n_v, r * r])),
        B::float_reshape(coef, Shape::new([n_v, 1])),
    );
    B::float_reshape(B::float_sum_dim(weighted, 0), Shape::new([r, r]))
}

#[derive(Debug)]
struct LowRankBackward;

impl<B: LowRankBackend + LowRankGradBackend> Backward<B, 4> for LowRankBackward {
    // x, factors, basis, coef
    type State = (NodeId, NodeId, FloatTensor<B>, NodeId);

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [node_x, node_base, node_factors, node_coef] = ops.parents;
        let g = grads.consume::<B>(&ops.node); // [T, d_out]
        let (x_id, factors_id, basis, coef_id) = ops.state;
        let x: FloatTensor<B> = checkpointer.retrieve_node_output(x_id);
        let factors: FloatTensor<B> = checkpointer.retrieve_node_output(factors_id);
        let coef: FloatTensor<B> = checkpointer.retrieve_node_output(coef_id);
        let d_in = x.shape().dims::<2>()[1];
        let [rows, r] = factors.shape().dims::<2>();
        let (dx, zw) = B::lowrank_backward(x.clone(), g.clone(), factors, basis.clone(), coef.clone());
        if let Some(node) = node_factors {
            // LoRA: ∂U = Gᵀ (z Mᵀ) [d_out, r], ∂V = xᵀ (w M) [d_in, r], stacked like the factors
            let m = core::<B>(basis.clone(), coef);
            let col = |a: usize| B::float_slice(zw.clone(), &[Slice::from(..), Slice::from(a..a + r)]);
            let (z, w) = (col(0), col(r));
            let du = B::float_matmul(
                B::float_transpose(g.clone()),
                B::float_matmul(z, B::float_transpose(m.clone())),
            );
            let dv = B::float_matmul(B::float_transpose(x), B::float_matmul(w, m));
            debug_assert_eq!(rows, du.shape().dims::<2>()[0] + d_in);
            grads.register::<B>(node.id, B::float_cat(vec![du, dv], 0));
        }
        if let Some(node) = node_coef {
            grads.register::<B>(node.id, B::lowrank_grad_coef(zw, basis));
        }
        if let Some(node) = node_x {
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = node_base {
            grads.register::<B>(node.id, g);
        }
    }
}

impl<B: LowRankBackend + LowRankGradBackend, C: CheckpointStrategy> LowRankBackend for Autodiff<B, C> {
    fn lowrank_update(
        x: FloatTensor<Self>,
        base: FloatTensor<Self>,
        factors: FloatTensor<Self>,
        basis: FloatTensor<Self>,
        coef: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let inner = |x: FloatTensor<Self>,
                     base: FloatTensor<Self>,
                     factors: FloatTensor<Self>,
                     basis: FloatTensor<Self>,
                     coef: FloatTensor<Self>| {
            B::lowrank_update(
                x.into_primitive(),
                base.into_primitive(),
                factors.into_primitive(),
                basis.into_primitive(),
                coef.into_primitive(),
            )
        };
        match LowRankBackward
            .prepare::<C>([x.node(), base.node(), factors.node(), coef.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = (
                    prep.checkpoint(&x),
                    prep.checkpoint(&factors),
                    basis.primitive().clone(),
                    prep.checkpoint(&coef),
                );
                prep.finish(state, inner(x, base, factors, basis, coef))
            }
            OpsKind::UnTracked(prep) => prep.finish(inner(x, base, factors, basis, coef)),
        }
    }

    fn lowrank_merge(
        weight_t: FloatTensor<Self>,
        factors: FloatTensor<Self>,
        basis: FloatTensor<Self>,
        coef: FloatTensor<Self>,
        col0: usize,
        subtract: bool,
    ) -> FloatTensor<Self> {
        crate::merge::autodiff_merge::<B, C>(weight_t, factors, basis, coef, col0, subtract)
    }
}

impl LowRankBackend for CubeBackend {
    fn lowrank_update(
        x: CubeTensor,
        base: CubeTensor,
        factors: CubeTensor,
        basis: CubeTensor,
        coef: CubeTensor,
    ) -> CubeTensor {
        forward(x, base, factors, basis, coef)
    }

    fn lowrank_merge(
        weight_t: CubeTensor,
        factors: CubeTensor,
        basis: CubeTensor,
        coef: CubeTensor,
        col0: usize,
        subtract: bool,
    ) -> CubeTensor {
        crate::merge::merge(weight_t, factors, basis, coef, col0, subtract)
    }
}
