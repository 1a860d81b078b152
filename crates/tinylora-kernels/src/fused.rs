//! The transformer's elementwise steps as single ops: RMSNorm, the SwiGLU gate, RoPE and the
//! attention's masked softmax, each with its backward written out.
//!
//! - RMSNorm of a row x `[H]`: r = (Σⱼ xⱼ² / H + ε)^(−1/2), y = x r ⊙ w.
//!   Backward (w frozen): with ĝ = g ⊙ w, ∂L/∂x = r ĝ − x r³ (Σⱼ ĝⱼ xⱼ) / H.
//! - SwiGLU gate of a, u `[F]`: s = σ(a), y = a s ⊙ u (silu(a) ⊙ u).
//!   Backward: ∂L/∂a = g ⊙ u ⊙ s (1 + a (1 − s)), ∂L/∂u = g ⊙ a s.
//! - RoPE of one head's x `[d_h]` at a position with tables c, s `[d_h]` ("rotate half", h = d_h/2),
//!   times a scale σ (the attention's 1/√d_h for queries, 1 for keys), for i < h:
//!   yᵢ = σ (xᵢ cᵢ − xᵢ₊ₕ sᵢ), yᵢ₊ₕ = σ (xᵢ₊ₕ cᵢ₊ₕ + xᵢ sᵢ₊ₕ); the heads axis moves before the
//!   tokens axis in the same pass (`[B, T, n, d_h]` → `[B, n, T, d_h]`).
//!   Backward: ∂L/∂xᵢ = σ (gᵢ cᵢ + gᵢ₊ₕ sᵢ₊ₕ), ∂L/∂xᵢ₊ₕ = σ (gᵢ₊ₕ cᵢ₊ₕ − gᵢ sᵢ).
//! - Attention weights of a row of scores z `[S]` with an additive mask m `[S]` (0 or −1e9):
//!   y = softmax(z + m). Backward: ∂L/∂z = y ⊙ (g − Σⱼ gⱼ yⱼ).
//!
//! As stock burn ops each of these is several elementwise passes with a fresh buffer each, and
//! burn's Flex CPU backend runs elementwise ops on one core (in a 16 × 128-token SmolLM2
//! forward + backward, 28 % of the samples, the other core waiting: benches/README.md), and on
//! the GPU each is several kernel launches (a SmolLM2 decoding step launched 1113 kernels, 578
//! with these ops as one kernel each: shaders/README.md).
//! On Flex each op is one pass with the rows split over the cores (`crate::fused_cpu`); on the
//! cube backend one WGSL kernel each way (`shaders/rms_norm.wgsl`, `swiglu.wgsl`, `rope.wgsl`,
//! `masked_softmax.wgsl` and their `_backward` twins); the backward on `Autodiff` is the
//! formulas above in either case.

use burn::backend::autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::tensor::Tensor;
use burn_cubecl::{CubeBackend, tensor::CubeTensor};

use crate::launch::{WG, Wgsl, dims, empty, input, launch};

/// Backend extension: the fused elementwise steps of a decoder layer.
#[backend_extension(Autodiff, Cube, Flex: cfg(not(target_family = "wasm")))]
pub trait FusedBackend: burn::backend::Backend {
    /// y = x r ⊙ w `[N, H]` for x `[N, H]`, w `[H]` (r per row, see the module);
    /// differentiable in x (w is frozen: it gets no gradient).
    fn rms_norm(x: FloatTensor<Self>, w: FloatTensor<Self>, eps: f32) -> FloatTensor<Self>;

    /// y = silu(a) ⊙ u `[N, F]` for a, u `[N, F]`; differentiable in both.
    fn swiglu(a: FloatTensor<Self>, u: FloatTensor<Self>) -> FloatTensor<Self>;

    /// y `[B, n, T, d_h]` = σ · RoPE(x) for x `[B, T, n, d_h]` and tables cos, sin `[B, T, d_h]`
    /// (see the module); differentiable in x (the tables are constants).
    fn rope(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self>;

    /// y = softmax(z + m) over the last axis `[B, h, R, S]` for scores z `[B, h, R, S]` and an
    /// additive mask m `[B, 1, R, S]` shared by the h heads; differentiable in z.
    fn masked_softmax(z: FloatTensor<Self>, mask: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// The backwards of [`FusedBackend`]'s ops.
pub trait FusedGradBackend: Backend {
    /// ∂L/∂x `[N, H]` of [`FusedBackend::rms_norm`] from g = ∂L/∂y `[N, H]`.
    fn rms_norm_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        eps: f32,
        g: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// (∂L/∂a, ∂L/∂u), each `[N, F]`, of [`FusedBackend::swiglu`] from g = ∂L/∂y `[N, F]`.
    fn swiglu_backward(
        a: FloatTensor<Self>,
        u: FloatTensor<Self>,
        g: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// ∂L/∂x `[B, T, n, d_h]` of [`FusedBackend::rope`] from g = ∂L/∂y `[B, n, T, d_h]`.
    fn rope_backward(
        g: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self>;

    /// ∂L/∂z `[B, h, R, S]` of [`FusedBackend::masked_softmax`] from its output y and
    /// g = ∂L/∂y.
    fn masked_softmax_backward(y: FloatTensor<Self>, g: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// x `[N, H]`, w `[H]` → RMSNorm(x) ⊙ w `[N, H]`; differentiable in x.
pub fn rms_norm(x: Tensor<2>, w: Tensor<1>, eps: f32) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::rms_norm(x.into_dispatch(), w.into_dispatch(), eps))
}

/// a, u `[N, F]` → silu(a) ⊙ u `[N, F]`; differentiable in both.
pub fn swiglu(a: Tensor<2>, u: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::swiglu(a.into_dispatch(), u.into_dispatch()))
}

/// x `[B, T, n, d_h]` → σ · RoPE(x) `[B, n, T, d_h]` with tables cos, sin `[B, T, d_h]`;
/// differentiable in x.
pub fn rope(x: Tensor<4>, cos: Tensor<3>, sin: Tensor<3>, scale: f32) -> Tensor<4> {
    Tensor::from_dispatch(Dispatch::rope(
        x.into_dispatch(),
        cos.into_dispatch(),
        sin.into_dispatch(),
        scale,
    ))
}

/// Scores z `[B, h, R, S]`, mask `[B, 1, R, S]` → softmax(z + mask) over S; differentiable in z.
pub fn masked_softmax(z: Tensor<4>, mask: Tensor<4>) -> Tensor<4> {
    Tensor::from_dispatch(Dispatch::masked_softmax(z.into_dispatch(), mask.into_dispatch()))
}

// ---- the cube backend: one WGSL kernel per op (`shaders/`) ----

/// The template values of the fused kernels.
fn wg_values() -> Vec<(&'static str, String)> {
    vec![("wg", WG.to_string())]
}

/// Check that `n` elements are within the kernels' u32 indices.
fn u32_indices(n: usize, op: &str) {
    assert!(
        u32::try_from(n).is_ok(),
        "{op}: {n} elements are past u32 indices"
    );
}

/// Launch `source` with one workgroup per row (row kernels) or one invocation per element.
fn run(source: &'static str, groups: usize, tensors: &[&CubeTensor], info: &[u32]) {
    launch(
        Wgsl {
            source,
            values: wg_values(),
        },
        groups,
        tensors,
        info,
    );
}

/// Workgroups for one invocation per element of `n`.
fn element_groups(n: usize) -> usize {
    n.div_ceil(WG as usize)
}

/// [rows, H] of rows x `[.., H]` with the norm's weight w `[H]`, checked.
pub(crate) fn norm_dims(x: &[usize], w: &[usize], op: &str) -> [usize; 2] {
    let h = x.last().copied().unwrap_or(0);
    assert!(w == [h], "{op}: w must be [{h}], not {w:?}");
    [x.iter().product::<usize>() / h.max(1), h]
}

/// [B, T, n, d_h] of RoPE's x `[B, T, n, d_h]` (or, `heads_first`, of the backward's g
/// `[B, n, T, d_h]`) with tables cos, sin `[B, T, d_h]`, d_h even; checked.
pub(crate) fn rope_dims(
    x: &[usize],
    cos: &[usize],
    sin: &[usize],
    heads_first: bool,
    op: &str,
) -> [usize; 4] {
    let [b, a1, a2, dh] = x[..] else {
        panic!("{op}: x must be 4-D, not {x:?}")
    };
    let (t, n) = if heads_first { (a2, a1) } else { (a1, a2) };
    assert!(
        cos == [b, t, dh] && sin == cos && dh % 2 == 0,
        "{op}: tables must be [{b}, {t}, {dh}] (d_h even), not {cos:?} and {sin:?}"
    );
    [b, t, n, dh]
}

/// [B, h, R, S] of scores z `[B, h, R, S]` with a mask `[B, 1, R, S]`, checked.
pub(crate) fn softmax_dims(z: &[usize], mask: &[usize]) -> [usize; 4] {
    let [b, h, r, s] = z[..] else {
        panic!("masked_softmax: scores must be 4-D, not {z:?}")
    };
    assert!(
        mask == [b, 1, r, s],
        "masked_softmax: the mask must be [{b}, 1, {r}, {s}], not {mask:?}"
    );
    [b, h, r, s]
}

impl FusedBackend for CubeBackend {
    fn rms_norm(x: FloatTensor<Self>, w: FloatTensor<Self>, eps: f32) -> FloatTensor<Self> {
        let [n, h] = norm_dims(&dims(&x), &dims(&w), "rms_norm");
        let (x, w) = (input(x, "rms_norm", "x"), input(w, "rms_norm", "w"));
        let y = empty(&x, dims(&x));
        u32_indices(n * h, "rms_norm");
        let info = [n as u32, h as u32, eps.to_bits()];
        run(
            include_str!("../../../shaders/rms_norm.wgsl"),
            n,
            &[&x, &w, &y],
            &info,
        );
        y
    }

    fn swiglu(a: FloatTensor<Self>, u: FloatTensor<Self>) -> FloatTensor<Self> {
        let shape = dims(&a);
        assert!(
            dims(&u) == shape,
            "swiglu: a {shape:?} and u {:?} differ",
            dims(&u)
        );
        let (a, u) = (input(a, "swiglu", "a"), input(u, "swiglu", "u"));
        let n: usize = shape.iter().product();
        u32_indices(n, "swiglu");
        let y = empty(&a, shape);
        let info = [n as u32];
        run(
            include_str!("../../../shaders/swiglu.wgsl"),
            element_groups(n),
            &[&a, &u, &y],
            &info,
        );
        y
    }

    fn rope(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        let [b, t, n, dh] = rope_dims(&dims(&x), &dims(&cos), &dims(&sin), false, "rope");
        let (x, cos, sin) = (
            input(x, "rope", "x"),
            input(cos, "rope", "cos"),
            input(sin, "rope", "sin"),
        );
        let y = empty(&x, vec![b, n, t, dh]);
        let all = b * t * n * dh;
        u32_indices(all, "rope");
        let info = [b as u32, t as u32, n as u32, dh as u32, scale.to_bits()];
        let source = include_str!("../../../shaders/rope.wgsl");
        run(source, element_groups(all), &[&x, &cos, &sin, &y], &info);
        y
    }

    fn masked_softmax(z: FloatTensor<Self>, mask: FloatTensor<Self>) -> FloatTensor<Self> {
        let [b, h, r, s] = softmax_dims(&dims(&z), &dims(&mask));
        let (z, mask) = (
            input(z, "masked_softmax", "z"),
            input(mask, "masked_softmax", "mask"),
        );
        let y = empty(&z, vec![b, h, r, s]);
        u32_indices(b * h * r * s, "masked_softmax");
        let rows = b * h * r;
        let info = [rows as u32, (h * r) as u32, r as u32, s as u32];
        let source = include_str!("../../../shaders/masked_softmax.wgsl");
        run(source, rows, &[&z, &mask, &y], &info);
        y
    }
}

impl FusedGradBackend for CubeBackend {
    fn rms_norm_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        eps: f32,
        g: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let [n, h] = norm_dims(&dims(&x), &dims(&w), "rms_norm_backward");
        assert_eq!(
            dims(&g),
            dims(&x),
            "rms_norm_backward: g and x of different shapes"
        );
        let (x, w, g) = (
            input(x, "rms_norm_backward", "x"),
            input(w, "rms_norm_backward", "w"),
            input(g, "rms_norm_backward", "g"),
        );
        let dx = empty(&x, dims(&x));
        u32_indices(n * h, "rms_norm_backward");
        let info = [n as u32, h as u32, eps.to_bits()];
        let source = include_str!("../../../shaders/rms_norm_backward.wgsl");
        run(source, n, &[&x, &w, &g, &dx], &info);
        dx
    }

    fn swiglu_backward(
        a: FloatTensor<Self>,
        u: FloatTensor<Self>,
        g: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let shape = dims(&a);
        for (name, t) in [("u", &u), ("g", &g)] {
            assert!(
                dims(t) == shape,
                "swiglu_backward: a {shape:?} and {name} {:?} differ",
                dims(t)
            );
        }
        let (a, u, g) = (
            input(a, "swiglu_backward", "a"),
            input(u, "swiglu_backward", "u"),
            input(g, "swiglu_backward", "g"),
        );
        let n: usize = shape.iter().product();
        let (da, du) = (empty(&a, shape.clone()), empty(&a, shape));
        u32_indices(n, "swiglu_backward");
        let info = [n as u32];
        let source = include_str!("../../../shaders/swiglu_backward.wgsl");
        run(source, element_groups(n), &[&a, &u, &g, &da, &du], &info);
        (da, du)
    }

    fn rope_backward(
        g: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        let [b, t, n, dh] = rope_dims(&dims(&g), &dims(&cos), &dims(&sin), true, "rope_backward");
        let (g, cos, sin) = (
            input(g, "rope_backward", "g"),
            input(cos, "rope_backward", "cos"),
            input(sin, "rope_backward", "sin"),
        );
        let dx = empty(&g, vec![b, t, n, dh]);
        let all = b * t * n * dh;
        u32_indices(all, "rope_backward");
        let info = [b as u32, t as u32, n as u32, dh as u32, scale.to_bits()];
        let source = include_str!("../../../shaders/rope_backward.wgsl");
        run(source, element_groups(all), &[&g, &cos, &sin, &dx], &info);
        dx
    }

    fn masked_softmax_backward(y: FloatTensor<Self>, g: FloatTensor<Self>) -> FloatTensor<Self> {
        let shape = dims(&y);
        assert!(
            shape.len() == 4 && dims(&g) == shape,
            "masked_softmax_backward: y {shape:?} and g {:?} must be the same 4-D shape",
            dims(&g)
        );
        let (y, g) = (
            input(y, "masked_softmax_backward", "y"),
            input(g, "masked_softmax_backward", "g"),
        );
        let s = shape[3];
        let rows = shape[..3].iter().product::<usize>();
        u32_indices(rows * s, "masked_softmax_backward");
        let dz = empty(&y, shape);
        let source = include_str!("../../../shaders/masked_softmax_backward.wgsl");
        run(source, rows, &[&y, &g, &dz], &[rows as u32, s as u32]);
        dz
    }
}

// ---- autodiff ----

#[derive(Debug)]
struct RmsNormBackward;

/// What the RMSNorm backward keeps: the input and the weight (handles, no copies).
#[derive(Debug, Clone)]
struct RmsNormState<B: Backend> {
    x: FloatTensor<B>,
    w: FloatTensor<B>,
    eps: f32,
}

impl<B: FusedGradBackend> Backward<B, 1> for RmsNormBackward {
    type State = RmsNormState<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let g = grads.consume::<B>(&ops.node); // [N, H]
        if let Some(node) = node_x {
            let RmsNormState { x, w, eps } = ops.state;
            grads.register::<B>(node.id, B::rms_norm_backward(x, w, eps, g));
        }
    }
}

#[derive(Debug)]
struct SwigluBackward;

impl<B: FusedGradBackend> Backward<B, 2> for SwigluBackward {
    /// (a, u) as handles.
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_a, node_u] = ops.parents;
        let g = grads.consume::<B>(&ops.node); // [N, F]
        let (a, u) = ops.state;
        let (da, du) = B::swiglu_backward(a, u, g);
        if let Some(node) = node_a {
            grads.register::<B>(node.id, da);
        }
        if let Some(node) = node_u {
            grads.register::<B>(node.id, du);
        }
    }
}

#[derive(Debug)]
struct RopeBackward;

/// What the RoPE backward keeps: the tables (handles) and the scale.
#[derive(Debug, Clone)]
struct RopeState<B: Backend> {
    cos: FloatTensor<B>,
    sin: FloatTensor<B>,
    scale: f32,
}

impl<B: FusedGradBackend> Backward<B, 1> for RopeBackward {
    type State = RopeState<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let g = grads.consume::<B>(&ops.node); // [B, n, T, d_h]
        if let Some(node) = node_x {
            let RopeState { cos, sin, scale } = ops.state;
            grads.register::<B>(node.id, B::rope_backward(g, cos, sin, scale));
        }
    }
}

#[derive(Debug)]
struct MaskedSoftmaxBackward;

impl<B: FusedGradBackend> Backward<B, 1> for MaskedSoftmaxBackward {
    /// The output y (a handle).
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_z] = ops.parents;
        let g = grads.consume::<B>(&ops.node); // [B, h, R, S]
        if let Some(node) = node_z {
            grads.register::<B>(node.id, B::masked_softmax_backward(ops.state, g));
        }
    }
}

impl<B: FusedBackend + FusedGradBackend, C: CheckpointStrategy> FusedBackend for Autodiff<B, C> {
    fn rms_norm(x: FloatTensor<Self>, w: FloatTensor<Self>, eps: f32) -> FloatTensor<Self> {
        let prep = RmsNormBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful();
        let (x, w) = (x.into_primitive(), w.into_primitive());
        match prep {
            OpsKind::Tracked(prep) => {
                let y = B::rms_norm(x.clone(), w.clone(), eps);
                prep.finish(RmsNormState { x, w, eps }, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::rms_norm(x, w, eps)),
        }
    }

    fn swiglu(a: FloatTensor<Self>, u: FloatTensor<Self>) -> FloatTensor<Self> {
        let prep = SwigluBackward
            .prepare::<C>([a.node(), u.node()])
            .compute_bound()
            .stateful();
        let (a, u) = (a.into_primitive(), u.into_primitive());
        match prep {
            OpsKind::Tracked(prep) => {
                let y = B::swiglu(a.clone(), u.clone());
                prep.finish((a, u), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::swiglu(a, u)),
        }
    }

    fn rope(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        let prep = RopeBackward.prepare::<C>([x.node()]).compute_bound().stateful();
        let (x, cos, sin) = (x.into_primitive(), cos.into_primitive(), sin.into_primitive());
        match prep {
            OpsKind::Tracked(prep) => {
                let y = B::rope(x, cos.clone(), sin.clone(), scale);
                prep.finish(RopeState { cos, sin, scale }, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::rope(x, cos, sin, scale)),
        }
    }

    fn masked_softmax(z: FloatTensor<Self>, mask: FloatTensor<Self>) -> FloatTensor<Self> {
        let prep = MaskedSoftmaxBackward
            .prepare::<C>([z.node()])
            .compute_bound()
            .stateful();
        let (z, mask) = (z.into_primitive(), mask.into_primitive());
        match prep {
            OpsKind::Tracked(prep) => {
                let y = B::masked_softmax(z, mask);
                prep.finish(y.clone(), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::masked_softmax(z, mask)),
        }
    }
}
