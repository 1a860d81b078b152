//! The TinyLoRA kernels: the projected low-rank update on the activation path, its gradient,
//! and merge / unmerge into the frozen weights, as burn extension ops (SPEC.md §1).
//!
//! Per adapted module, with W `[d_out, d_in]` frozen (y = x Wᵀ):
//!
//! - `factors` `[d_out + d_in, r]`: U (rows `0..d_out`) stacked on V (rows `d_out..`), the
//!   frozen truncated-SVD factors (LoRA: the trainable B and Aᵀ);
//! - `basis` `[n_v, r, r]`: P̃ᵢ, the fixed projections with the Σ convention folded in
//!   (paper: P̃ᵢ = Σ Pᵢ; LoRA-XS: the unit matrices scaled by Σ; LoRA: a single s·I);
//! - `coef` `[n_v]`: the trainable v, shared by the modules of a tie group;
//!
//! so that M = Σᵢ vᵢ P̃ᵢ and ΔW = U M Vᵀ. Each op launches a `.wgsl` file from `shaders/` on
//! burn's cube backend; its backward on `Autodiff<B, C>` launches the gradient kernels again.
//! Natively, burn's Flex CPU backend runs the same math in Rust and stock burn ops
//! (`lowrank_flex.rs`).

mod blocks;
#[cfg(target_arch = "x86_64")]
mod blocks_avx2;
#[cfg(not(target_family = "wasm"))]
mod blocks_cpu;
#[cfg(not(target_family = "wasm"))]
mod flex_f32;
mod frozen_matmul;
#[cfg(not(target_family = "wasm"))]
mod frozen_matmul_cpu;
mod fused;
#[cfg(not(target_family = "wasm"))]
mod fused_cpu;
mod halves;
mod lane_sums;
mod launch;
mod lowrank;
#[cfg(not(target_family = "wasm"))]
mod lowrank_cpu;
#[cfg(not(target_family = "wasm"))]
mod lowrank_flex;
mod merge;
mod shapes;
mod token_choice;
#[cfg(not(target_family = "wasm"))]
mod token_choice_cpu;

use burn::backend::{
    Dispatch, backend_extension,
    tensor::{FloatTensor, IntTensor},
};
use burn::tensor::{Device, Int, Tensor, TensorData};
use tinylora_formats::BlockMatrix;
use tinylora_formats::quant::GgmlType;

pub use blocks::{MATVEC_MAX_ROWS, SOFTWARE_TILED_MAX_ROWS, ShaderF16, set_shader_f16};
#[cfg(not(target_family = "wasm"))]
pub use blocks::{shader_f16_offered, stages_f16};
pub use frozen_matmul::{FrozenMatmulBackend, frozen_matmul};
pub use fused::{FusedBackend, masked_softmax, rms_norm, rope, swiglu};
pub use lane_sums::lane_sums;
pub use launch::MAX_RANK;
pub use token_choice::{MAX_VOCAB, TokenChoiceBackend, choose_tokens};

/// Backend extension: products with a frozen weight kept in ggml blocks.
#[backend_extension(Autodiff, Cube, Flex: cfg(not(target_family = "wasm")))]
pub trait BlockBackend: burn::backend::Backend {
    /// y = x Wᵀ `[N, rows]` for x `[N, d_in]` and W `[rows, d_in]` of ggml type `ty` (its id),
    /// `blocks` `[rows, words]` holding each row's blocks in whole 32-bit words;
    /// differentiable in x (`shaders/block_matvec.wgsl` or `block_tiled.wgsl`; on a software
    /// rasterizer, beyond [`SOFTWARE_TILED_MAX_ROWS`] rows of x, `block_decode.wgsl` and the
    /// stock matmul).
    fn block_matmul(x: FloatTensor<Self>, blocks: IntTensor<Self>, ty: u32, d_in: usize)
    -> FloatTensor<Self>;

    /// y = g W `[N, d_in]` for g `[N, rows]`: the backward of [`Self::block_matmul`]
    /// (`shaders/block_tiled.wgsl` with W untransposed, or W decoded and the stock matmul as
    /// [`Self::block_matmul`] chooses); not differentiable.
    fn block_matmul_w(
        g: FloatTensor<Self>,
        blocks: IntTensor<Self>,
        ty: u32,
        d_in: usize,
    ) -> FloatTensor<Self>;

    /// The product of [`Self::block_matmul`] (`transpose` false: `a` = x) or of
    /// [`Self::block_matmul_w`] (`transpose` true: `a` = g) with W decoded inside the product
    /// whatever the rows of `a` (`shaders/block_matvec.wgsl`, `block_tiled.wgsl`), where those
    /// two choose by the device and the rows; on Flex, those two. Not differentiable: it lets
    /// tests and benchmarks reach every kernel on any device.
    fn block_matmul_fused(
        a: FloatTensor<Self>,
        blocks: IntTensor<Self>,
        ty: u32,
        d_in: usize,
        transpose: bool,
    ) -> FloatTensor<Self>;

    /// W `[rows, d_in]` as f32 (`shaders/block_decode.wgsl`).
    fn block_decode(blocks: IntTensor<Self>, ty: u32, d_in: usize) -> FloatTensor<Self>;
}

/// A frozen weight W `[rows, d_in]` on the device in its ggml blocks.
#[derive(Debug, Clone)]
pub struct DeviceBlocks {
    /// `[rows, words]`: each row's bytes, padded to whole 32-bit words.
    pub words: Tensor<2, Int>,
    /// The blocks' type.
    pub ty: GgmlType,
    /// Rows of W.
    pub rows: usize,
    /// Values a row.
    pub d_in: usize,
}

impl DeviceBlocks {
    /// Upload rows `rows` of `m`.
    pub fn upload(m: &BlockMatrix, rows: std::ops::Range<usize>, device: &Device) -> Self {
        let rb = m.row_bytes();
        let words = blocks::row_words(m.ty, m.cols);
        let mut data = vec![0u32; rows.len() * words];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut data);
        for (i, r) in rows.clone().enumerate() {
            bytes[i * words * 4..i * words * 4 + rb].copy_from_slice(&m.bytes[r * rb..(r + 1) * rb]);
        }
        // i32 words: the integer type every device keeps as is (the bits are what matter)
        let data: Vec<i32> = bytemuck::cast_vec(data);
        DeviceBlocks {
            words: Tensor::from_data(TensorData::new(data, [rows.len(), words]), device),
            ty: m.ty,
            rows: rows.len(),
            d_in: m.cols,
        }
    }

    /// Bytes on the device.
    pub fn bytes(&self) -> usize {
        self.words.dims().iter().product::<usize>() * 4
    }
}

/// x `[N, d_in]` → x Wᵀ `[N, rows]` with W in its blocks; differentiable in x.
pub fn block_matmul(x: Tensor<2>, w: &DeviceBlocks) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::block_matmul(
        x.into_dispatch(),
        w.words.clone().into_dispatch(),
        w.ty.id(),
        w.d_in,
    ))
}

/// [`block_matmul`] (`transpose` false: `a` = x `[N, d_in]` → `[N, rows]`) or its backward's
/// product g W (`transpose` true: `a` = g `[N, rows]` → `[N, d_in]`), with W decoded inside the
/// product whatever N and the device (see [`BlockBackend::block_matmul_fused`]); not
/// differentiable.
pub fn block_matmul_fused(a: Tensor<2>, w: &DeviceBlocks, transpose: bool) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::block_matmul_fused(
        a.into_dispatch(),
        w.words.clone().into_dispatch(),
        w.ty.id(),
        w.d_in,
        transpose,
    ))
}

/// W `[rows, d_in]` as f32.
pub fn block_decode(w: &DeviceBlocks) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::block_decode(
        w.words.clone().into_dispatch(),
        w.ty.id(),
        w.d_in,
    ))
}

/// Backend extension: the low-rank update and its merge.
#[backend_extension(Autodiff, Cube, Flex: cfg(not(target_family = "wasm")))]
pub trait LowRankBackend: burn::backend::Backend {
    /// y = base + ((x V) Mᵀ) Uᵀ (`shaders/lowrank_down.wgsl`, then `lowrank_up.wgsl`);
    /// differentiable in x, base,
    /// factors and coef.
    fn lowrank_update(
        x: FloatTensor<Self>,
        base: FloatTensor<Self>,
        factors: FloatTensor<Self>,
        basis: FloatTensor<Self>,
        coef: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// The update already merged into the weights that produced `base` = x (W + ΔW)ᵀ:
    /// returns `base` unchanged, and its backward yields ∂L/∂coef (and LoRA's ∂L/∂factors)
    /// exactly as [`Self::lowrank_update`]'s would, but no ∂L/∂x (the merged weights' own
    /// backward carries ΔW's share). Training at merged speed.
    fn lowrank_update_merged(
        x: FloatTensor<Self>,
        base: FloatTensor<Self>,
        factors: FloatTensor<Self>,
        basis: FloatTensor<Self>,
        coef: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// Wᵀ chunk ± (U M Vᵀ)ᵀ for output columns `col0..` (`lowrank_down.wgsl` on V's rows,
    /// then `lowrank_up.wgsl`);
    /// in place when the chunk's buffer is not shared.
    fn lowrank_merge(
        weight_t: FloatTensor<Self>,
        factors: FloatTensor<Self>,
        basis: FloatTensor<Self>,
        coef: FloatTensor<Self>,
        col0: usize,
        subtract: bool,
    ) -> FloatTensor<Self>;
}

/// x `[N, d_in]`, base = x Wᵀ `[N, d_out]` → base + ((x V) Mᵀ) Uᵀ `[N, d_out]`.
///
/// `factors` `[d_out + d_in, r]` = [U; V], `basis` `[n_v, r, r]`, `coef` `[n_v]`; r ≤ [`MAX_RANK`].
pub fn lowrank_update(
    x: Tensor<2>,
    base: Tensor<2>,
    factors: Tensor<2>,
    basis: Tensor<3>,
    coef: Tensor<1>,
) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::lowrank_update(
        x.into_dispatch(),
        base.into_dispatch(),
        factors.into_dispatch(),
        basis.into_dispatch(),
        coef.into_dispatch(),
    ))
}

/// x `[N, d_in]`, merged = x (W + ΔW)ᵀ `[N, d_out]` from weights with the update merged in →
/// `merged` itself, differentiable in `coef` (and `factors`) as [`lowrank_update`] is; x gets
/// no gradient from it (the merged weights' matmul gives ∂L/∂x = G (W + ΔW)).
pub fn lowrank_update_merged(
    x: Tensor<2>,
    merged: Tensor<2>,
    factors: Tensor<2>,
    basis: Tensor<3>,
    coef: Tensor<1>,
) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::lowrank_update_merged(
        x.into_dispatch(),
        merged.into_dispatch(),
        factors.into_dispatch(),
        basis.into_dispatch(),
        coef.into_dispatch(),
    ))
}

/// Add (or with `subtract`, remove) ΔWᵀ = (U M Vᵀ)ᵀ to a chunk Wᵀ `[d_in, cols]` holding the
/// output columns `col0..col0 + cols` of a module with `factors` `[d_out + d_in, r]`.
pub fn lowrank_merge(
    weight_t: Tensor<2>,
    factors: Tensor<2>,
    basis: Tensor<3>,
    coef: Tensor<1>,
    col0: usize,
    subtract: bool,
) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::lowrank_merge(
        weight_t.into_dispatch(),
        factors.into_dispatch(),
        basis.into_dispatch(),
        coef.into_dispatch(),
        col0,
        subtract,
    ))
}
