//! `lowrank_update`: the forward (down + up), the gradient kernels and the backward that uses
//! them.
//!
//! y = base + ((x V) Mᵀ) Uᵀ, M = Σᵢ vᵢ P̃ᵢ. With G = ∂L/∂y, z = x V, w = G U:
//! ∂L/∂base = G; ∂L/∂x = (w M) Vᵀ; ∂L/∂vᵢ = ⟨P̃ᵢ, Σ_t w_tᵀ z_t⟩; and for trainable factors
//! (LoRA) ∂L/∂U = Gᵀ (z Mᵀ), ∂L/∂V = xᵀ (w M). The forward keeps z `[T, r]` for the backward,
//! so the backward reads G once and x not at all (x is kept only for LoRA's ∂L/∂V).

use burn::backend::autodiff::{
    Autodiff, NodeId,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::{Backend, TensorMetadata, tensor::FloatTensor};
use burn::tensor::Shape;
use burn_cubecl::{CubeBackend, tensor::CubeTensor};

use crate::LowRankBackend;
use crate::halves::{Init, Rows, down, up};
use crate::launch::{Wgsl, dims, empty, input, launch, rank_values};
use crate::shapes::factor_dims;

/// The kernels behind the backward of [`LowRankBackend::lowrank_update`].
pub trait LowRankGradBackend: Backend {
    /// The forward when a gradient will follow: (y `[T, d_out]`, z = x V `[T, r]`); z is
    /// kept for the backward, so that it never reads x again.
    fn lowrank_update_keeping_z(
        x: FloatTensor<Self>,
        base: FloatTensor<Self>,
        factors: FloatTensor<Self>,
        basis: FloatTensor<Self>,
        coef: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// Per token, from G = ∂L/∂y `[T, d_out]`: (the low-rank share of ∂L/∂x `[T, d_in]`,
    /// w = G U `[T, r]`), from `shaders/lowrank_down.wgsl` and `shaders/lowrank_up.wgsl`.
    fn lowrank_backward(
        g: FloatTensor<Self>,
        factors: FloatTensor<Self>,
        basis: FloatTensor<Self>,
        coef: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// z = x V `[T, r]` alone (the forward's down half; training with merged weights).
    fn lowrank_project_input(
        x: FloatTensor<Self>,
        factors: FloatTensor<Self>,
        basis: FloatTensor<Self>,
        coef: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// w = G U `[T, r]` alone (the backward's down half, no ∂L/∂x; training with merged
    /// weights).
    fn lowrank_project_grad(
        g: FloatTensor<Self>,
        factors: FloatTensor<Self>,
        basis: FloatTensor<Self>,
        coef: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// ∂L/∂v `[n_v]` from z and w (`shaders/lowrank_grad_coef.wgsl`).
    fn lowrank_grad_coef(
        z: FloatTensor<Self>,
        w: FloatTensor<Self>,
        basis: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// Shapes of one call: (T, d_in, d_out, r, n_v), checked against each other.
fn shapes(
    op: &str,
    x: &CubeTensor,
    factors: &CubeTensor,
    basis: &CubeTensor,
    coef: &CubeTensor,
) -> [usize; 5] {
    let xd = dims(x);
    assert!(xd.len() == 2, "{op}: x must be 2-D, not {xd:?}");
    let [d_out, r, n_v] = factor_dims(op, xd[1], factors, basis, coef);
    [xd[0], xd[1], d_out, r, n_v]
}

/// (d_out, d_in) of a gradient G `[T, d_out]` for `factors` `[d_out + d_in, r]`, checked.
fn grad_dims(
    op: &str,
    g: &CubeTensor,
    factors: &CubeTensor,
    basis: &CubeTensor,
    coef: &CubeTensor,
) -> (usize, usize) {
    let gd = dims(g);
    assert!(gd.len() == 2, "{op}: g must be 2-D, not {gd:?}");
    let rows = dims(factors)[0];
    assert!(
        rows > gd[1],
        "{op}: factors [{rows}, r] cannot hold U [{}, r] above V",
        gd[1]
    );
    let (d_out, d_in) = (gd[1], rows - gd[1]);
    factor_dims(op, d_in, factors, basis, coef);
    (d_out, d_in)
}

impl LowRankGradBackend for CubeBackend {
    fn lowrank_update_keeping_z(
        x: CubeTensor,
        base: CubeTensor,
        factors: CubeTensor,
        basis: CubeTensor,
        coef: CubeTensor,
    ) -> (CubeTensor, CubeTensor) {
        forward(x, base, factors, basis, coef)
    }

    fn lowrank_backward(
        g: CubeTensor,
        factors: CubeTensor,
        basis: CubeTensor,
        coef: CubeTensor,
    ) -> (CubeTensor, CubeTensor) {
        let op = "lowrank_backward";
        let [g, factors, basis, coef] = [(g, "g"), (factors, "factors"), (basis, "basis"), (coef, "coef")]
            .map(|(t, name)| input(t, op, name));
        let (d_out, d_in) = grad_dims(op, &g, &factors, &basis, &coef);
        let (wm, w) = down(Rows::Of(&g), &factors, &basis, &coef, 0, true); // w = G U, Mᵀ w
        let dx = up(&wm, &factors, d_out, d_in, Init::Zero, false); // (w M) Vᵀ
        (dx, w)
    }

    fn lowrank_project_input(
        x: CubeTensor,
        factors: CubeTensor,
        basis: CubeTensor,
        coef: CubeTensor,
    ) -> CubeTensor {
        let op = "lowrank_project_input";
        let [x, factors, basis, coef] = [(x, "x"), (factors, "factors"), (basis, "basis"), (coef, "coef")]
            .map(|(t, name)| input(t, op, name));
        let [_, _, d_out, _, _] = shapes(op, &x, &factors, &basis, &coef);
        down(Rows::Of(&x), &factors, &basis, &coef, d_out, false).1
    }

    fn lowrank_project_grad(
        g: CubeTensor,
        factors: CubeTensor,
        basis: CubeTensor,
        coef: CubeTensor,
    ) -> CubeTensor {
        let op = "lowrank_project_grad";
        let [g, factors, basis, coef] = [(g, "g"), (factors, "factors"), (basis, "basis"), (coef, "coef")]
            .map(|(t, name)| input(t, op, name));
        grad_dims(op, &g, &factors, &basis, &coef);
        down(Rows::Of(&g), &factors, &basis, &coef, 0, true).1
    }

    fn lowrank_grad_coef(z: CubeTensor, w: CubeTensor, basis: CubeTensor) -> CubeTensor {
        let op = "lowrank_grad_coef";
        let [z, w, basis] = [(z, "z"), (w, "w"), (basis, "basis")].map(|(t, name)| input(t, op, name));
        let (zd, bd) = (dims(&z), dims(&basis));
        let (t, r, n_v) = (zd[0], bd[1], bd[0]);
        assert!(
            zd[1] == r && dims(&w) == zd,
            "{op}: z {zd:?} and w {:?} do not match basis {bd:?}",
            dims(&w)
        );
        let dcoef = empty(&z, vec![n_v]);
        let kernel = Wgsl {
            source: include_str!("../../../shaders/lowrank_grad_coef.wgsl"),
            values: rank_values(r),
        };
        launch(kernel, 1, &[&z, &w, &basis, &dcoef], &[t as u32, n_v as u32]);
        dcoef
    }
}

/// The forward on the cube backend: z = x V, q = M z, then y = base + q Uᵀ; returns (y, z).
pub(crate) fn forward(
    x: CubeTensor,
    base: CubeTensor,
    factors: CubeTensor,
    basis: CubeTensor,
    coef: CubeTensor,
) -> (CubeTensor, CubeTensor) {
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
    let [t, d_in, d_out, _, _] = shapes(op, &x, &factors, &basis, &coef);
    assert_eq!(
        dims(&base),
        [t, d_out],
        "{op}: base must be [{t}, {d_out}] for x [{t}, {d_in}]"
    );
    let (q, z) = down(Rows::Of(&x), &factors, &basis, &coef, d_out, false);
    (up(&q, &factors, 0, d_out, Init::Base(&base), false), z)
}

/// M = Σᵢ vᵢ P̃ᵢ `[r, r]` in stock ops (only the LoRA factor gradients need it on the host side).
pub(crate) fn core<B: Backend>(basis: FloatTensor<B>, coef: FloatTensor<B>) -> FloatTensor<B> {
    let [n_v, r, _] = basis.shape().dims();
    let weighted = B::float_mul(
        B::float_reshape(basis, Shape::new([n_v, r * r])),
        B::float_reshape(coef, Shape::new([n_v, 1])),
    );
    B::float_reshape(B::float_sum_dim(weighted, 0), Shape::new([r, r]))
}

/// The backward of [`LowRankBackend::lowrank_update`], and of
/// [`LowRankBackend::lowrank_update_merged`] when `merged` (no ∂L/∂x: the merged weights
/// carry it).
#[derive(Debug)]
struct LowRankBackward {
    merged: bool,
}

/// What the backward keeps from the forward.
#[derive(Debug, Clone)]
struct LowRankState<B: Backend> {
    /// x, only when the factors are trainable (LoRA: ∂L/∂V = xᵀ (w M)).
    x: Option<NodeId>,
    /// z = x V `[T, r]`, from the forward.
    z: FloatTensor<B>,
    factors: NodeId,
    basis: FloatTensor<B>,
    coef: NodeId,
}

impl<B: LowRankBackend + LowRankGradBackend> Backward<B, 4> for LowRankBackward {
    type State = LowRankState<B>;

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [node_x, node_base, node_factors, node_coef] = ops.parents;
        let g = grads.consume::<B>(&ops.node); // [T, d_out]
        let LowRankState {
            x,
            z,
            factors,
            basis,
            coef,
        } = ops.state;
        let factors: FloatTensor<B> = checkpointer.retrieve_node_output(factors);
        let coef: FloatTensor<B> = checkpointer.retrieve_node_output(coef);
        let (dx, w) = if self.merged {
            let w = B::lowrank_project_grad(g.clone(), factors.clone(), basis.clone(), coef.clone());
            (None, w)
        } else {
            let (dx, w) = B::lowrank_backward(g.clone(), factors.clone(), basis.clone(), coef.clone());
            (Some(dx), w)
        };
        if let (Some(node), Some(x)) = (node_factors, x) {
            // LoRA: ∂U = Gᵀ (z Mᵀ) [d_out, r], ∂V = xᵀ (w M) [d_in, r], stacked like the factors
            let x: FloatTensor<B> = checkpointer.retrieve_node_output(x);
            let m = core::<B>(basis.clone(), coef);
            let du = B::float_matmul(
                B::float_transpose(g.clone()),
                B::float_matmul(z.clone(), B::float_transpose(m.clone())),
            );
            let dv = B::float_matmul(B::float_transpose(x), B::float_matmul(w.clone(), m));
            grads.register::<B>(node.id, B::float_cat(vec![du, dv], 0));
        }
        if let Some(node) = node_coef {
            grads.register::<B>(node.id, B::lowrank_grad_coef(z, w, basis));
        }
        if let (Some(node), Some(dx)) = (node_x, dx) {
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = node_base {
            grads.register::<B>(node.id, g);
        }
    }
}

/// [`LowRankBackend::lowrank_update`] (or with `merged`, [`LowRankBackend::lowrank_update_merged`])
/// on an autodiff backend: the inner launches, recording the backward when a parent is tracked.
fn autodiff_update<B: LowRankBackend + LowRankGradBackend, C: CheckpointStrategy>(
    merged: bool,
    x: FloatTensor<Autodiff<B, C>>,
    base: FloatTensor<Autodiff<B, C>>,
    factors: FloatTensor<Autodiff<B, C>>,
    basis: FloatTensor<Autodiff<B, C>>,
    coef: FloatTensor<Autodiff<B, C>>,
) -> FloatTensor<Autodiff<B, C>> {
    let prep = LowRankBackward { merged }
        .prepare::<C>([x.node(), base.node(), factors.node(), coef.node()])
        .compute_bound()
        .stateful();
    match prep {
        OpsKind::Tracked(mut prep) => {
            let x_kept = factors.is_tracked().then(|| prep.checkpoint(&x));
            let (factors_id, coef_id) = (prep.checkpoint(&factors), prep.checkpoint(&coef));
            let basis = basis.into_primitive();
            let (x, base) = (x.into_primitive(), base.into_primitive());
            let (factors, coef) = (factors.into_primitive(), coef.into_primitive());
            let (y, z) = if merged {
                // y is the merged weights' output itself; only z = x V is needed later
                (base, B::lowrank_project_input(x, factors, basis.clone(), coef))
            } else {
                B::lowrank_update_keeping_z(x, base, factors, basis.clone(), coef)
            };
            let state = LowRankState {
                x: x_kept,
                z,
                factors: factors_id,
                basis,
                coef: coef_id,
            };
            prep.finish(state, y)
        }
        OpsKind::UnTracked(prep) if merged => prep.finish(base.into_primitive()),
        OpsKind::UnTracked(prep) => prep.finish(B::lowrank_update(
            x.into_primitive(),
            base.into_primitive(),
            factors.into_primitive(),
            basis.into_primitive(),
            coef.into_primitive(),
        )),
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
        autodiff_update::<B, C>(false, x, base, factors, basis, coef)
    }

    fn lowrank_update_merged(
        x: FloatTensor<Self>,
        base: FloatTensor<Self>,
        factors: FloatTensor<Self>,
        basis: FloatTensor<Self>,
        coef: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        autodiff_update::<B, C>(true, x, base, factors, basis, coef)
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
        forward(x, base, factors, basis, coef).0
    }

    /// Untracked: nothing to do (the update is in the weights).
    fn lowrank_update_merged(
        _x: CubeTensor,
        base: CubeTensor,
        _factors: CubeTensor,
        _basis: CubeTensor,
        _coef: CubeTensor,
    ) -> CubeTensor {
        base
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
