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
//! forward + backward, 28 % of the samples, the other core waiting: benches/README.md). On
//! Flex each op is one pass with the rows split over the cores (`crate::fused_cpu`); on the
//! cube backend it is the stock burn ops' composition; the backward on `Autodiff` is the
//! formulas above in either case.

use burn::backend::autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::ops::{ActivationOps, FloatTensorOps};
use burn::backend::{Backend, Dispatch, Scalar, TensorMetadata, backend_extension, tensor::FloatTensor};
use burn::tensor::{Shape, Slice, Tensor};
use burn_cubecl::CubeBackend;

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

// ---- stock burn ops (the cube backend) ----

fn scalar(v: f32) -> Scalar {
    Scalar::Float(v as f64)
}

/// (r `[N, 1]`, w as a row `[1, H]`) of x `[N, H]`.
fn stock_rms<B: Backend>(x: FloatTensor<B>, w: FloatTensor<B>, eps: f32) -> (FloatTensor<B>, FloatTensor<B>) {
    let [_, h] = x.shape().dims();
    let mean_sq = B::float_mean_dim(B::float_mul(x.clone(), x), 1); // [N, 1]
    let r = B::float_recip(B::float_sqrt(B::float_add_scalar(mean_sq, scalar(eps))));
    (r, B::float_reshape(w, Shape::from([1, h])))
}

/// [−x₂, x₁] of x = [x₁, x₂] split in halves along the last axis (of 4).
fn stock_rotate_half<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let d = x.shape().dims::<4>();
    let half = |range: std::ops::Range<usize>| {
        let mut ranges = d.map(|n| Slice::from(0..n));
        ranges[3] = Slice::from(range);
        B::float_slice(x.clone(), &ranges)
    };
    let (x1, x2) = (half(0..d[3] / 2), half(d[3] / 2..d[3]));
    B::float_cat(vec![B::float_neg(x2), x1], 3)
}

/// A `[B, T, d_h]` table as `[B, 1, T, d_h]`, broadcasting over the heads.
fn stock_table<B: Backend>(t: FloatTensor<B>) -> FloatTensor<B> {
    let [b, tt, dh] = t.shape().dims();
    B::float_reshape(t, Shape::from([b, 1, tt, dh]))
}

impl FusedBackend for CubeBackend {
    fn rms_norm(x: FloatTensor<Self>, w: FloatTensor<Self>, eps: f32) -> FloatTensor<Self> {
        let (r, w) = stock_rms::<Self>(x.clone(), w, eps);
        Self::float_mul(Self::float_mul(x, r), w)
    }

    fn swiglu(a: FloatTensor<Self>, u: FloatTensor<Self>) -> FloatTensor<Self> {
        let silu = Self::float_mul(a.clone(), Self::sigmoid(a));
        Self::float_mul(silu, u)
    }

    fn rope(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        let x = Self::float_swap_dims(x, 1, 2); // [B, n, T, d_h]
        let y = Self::float_add(
            Self::float_mul(x.clone(), stock_table::<Self>(cos)),
            Self::float_mul(stock_rotate_half::<Self>(x), stock_table::<Self>(sin)),
        );
        if scale == 1.0 {
            y
        } else {
            Self::float_mul_scalar(y, scalar(scale))
        }
    }

    fn masked_softmax(z: FloatTensor<Self>, mask: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::softmax(Self::float_add(z, mask), 3)
    }
}

impl FusedGradBackend for CubeBackend {
    fn rms_norm_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        eps: f32,
        g: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let [_, h] = x.shape().dims();
        let (r, w) = stock_rms::<Self>(x.clone(), w, eps);
        let gw = Self::float_mul(g, w); // ĝ [N, H]
        let dot = Self::float_sum_dim(Self::float_mul(gw.clone(), x.clone()), 1); // Σ ĝ x [N, 1]
        let r3 = Self::float_mul(Self::float_mul(r.clone(), r.clone()), r.clone());
        let k = Self::float_mul_scalar(Self::float_mul(r3, dot), scalar(1.0 / h as f32)); // [N, 1]
        Self::float_sub(Self::float_mul(gw, r), Self::float_mul(x, k))
    }

    fn swiglu_backward(
        a: FloatTensor<Self>,
        u: FloatTensor<Self>,
        g: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let s = Self::sigmoid(a.clone());
        let du = Self::float_mul(g.clone(), Self::float_mul(a.clone(), s.clone()));
        // s (1 + a (1 − s))
        let one_minus_s = Self::float_add_scalar(Self::float_neg(s.clone()), scalar(1.0));
        let slope = Self::float_mul(
            s,
            Self::float_add_scalar(Self::float_mul(a, one_minus_s), scalar(1.0)),
        );
        (Self::float_mul(Self::float_mul(g, u), slope), du)
    }

    fn rope_backward(
        g: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        // σ (g c + rotᵀ(g s)), rotᵀ([z₁, z₂]) = [z₂, −z₁] = −rotate_half(z)
        let gs = Self::float_mul(g.clone(), stock_table::<Self>(sin));
        let dx = Self::float_sub(
            Self::float_mul(g, stock_table::<Self>(cos)),
            stock_rotate_half::<Self>(gs),
        );
        let dx = if scale == 1.0 {
            dx
        } else {
            Self::float_mul_scalar(dx, scalar(scale))
        };
        Self::float_swap_dims(dx, 1, 2) // [B, T, n, d_h]
    }

    fn masked_softmax_backward(y: FloatTensor<Self>, g: FloatTensor<Self>) -> FloatTensor<Self> {
        let dot = Self::float_sum_dim(Self::float_mul(g.clone(), y.clone()), 3); // Σ g y [B, h, R, 1]
        Self::float_mul(y, Self::float_sub(g, dot))
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
