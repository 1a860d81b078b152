//! `lowrank_merge`: Wᵀ ← Wᵀ ± (U M Vᵀ)ᵀ on one column chunk of a frozen weight.

use burn::backend::autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops},
};
use burn::backend::tensor::FloatTensor;
use burn_cubecl::tensor::CubeTensor;

use crate::LowRankBackend;
use crate::halves::{Init, Rows, down, up};
use crate::launch::{dims, input};
use crate::shapes::factor_dims;

/// The merge launch on the cube backend: in place when `weight_t`'s buffer is not shared.
pub(crate) fn merge(
    weight_t: CubeTensor,
    factors: CubeTensor,
    basis: CubeTensor,
    coef: CubeTensor,
    col0: usize,
    subtract: bool,
) -> CubeTensor {
    let op = "lowrank_merge";
    let [w, factors, basis, coef] = [
        (weight_t, "weight_t"),
        (factors, "factors"),
        (basis, "basis"),
        (coef, "coef"),
    ]
    .map(|(t, name)| input(t, op, name));
    let wd = dims(&w);
    assert!(wd.len() == 2, "{op}: weight_t must be 2-D, not {wd:?}");
    let (d_in, cols) = (wd[0], wd[1]);
    let [d_out, _, _] = factor_dims(op, d_in, &factors, &basis, &coef);
    assert!(
        col0 + cols <= d_out,
        "{op}: columns {col0}..{} exceed d_out = {d_out}",
        col0 + cols
    );
    // q_i = M V_iᵀ for every row i of Wᵀ, then Wᵀ[i, o] ± U_(col0 + o) · q_i
    let (q, _) = down(Rows::Own(d_in), &factors, &basis, &coef, d_out, false);
    let init = if w.can_mut() && w.is_contiguous_buffer() {
        Init::InPlace(Box::new(w))
    } else {
        Init::Base(&w)
    };
    up(&q, &factors, col0, cols, init, subtract)
}

#[derive(Debug)]
struct MergeBackward;

// ∂(Wᵀ ± ΔWᵀ)/∂Wᵀ is the identity; the update itself is not differentiated through a merge
// (training on merged weights takes v's gradient from `lowrank_update_merged` instead).
impl<B: LowRankBackend> Backward<B, 1> for MergeBackward {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_w] = ops.parents;
        let g = grads.consume::<B>(&ops.node);
        if let Some(node) = node_w {
            grads.register::<B>(node.id, g);
        }
    }
}

/// The merge on an autodiff backend: the inner launch, with an identity backward for Wᵀ.
pub(crate) fn autodiff_merge<B: LowRankBackend, C: CheckpointStrategy>(
    weight_t: FloatTensor<Autodiff<B, C>>,
    factors: FloatTensor<Autodiff<B, C>>,
    basis: FloatTensor<Autodiff<B, C>>,
    coef: FloatTensor<Autodiff<B, C>>,
    col0: usize,
    subtract: bool,
) -> FloatTensor<Autodiff<B, C>> {
    let prep = MergeBackward.prepare::<C>([weight_t.node()]).compute_bound();
    let out = B::lowrank_merge(
        weight_t.into_primitive(),
        factors.into_primitive(),
        basis.into_primitive(),
        coef.into_primitive(),
        col0,
        subtract,
    );
    prep.stateless(out)
}
