//! A frozen linear layer y = x Wᵀ + b on the device, optionally carrying a low-rank delta.

use burn::tensor::{Device, Tensor, TensorData};
use tinylora_formats::quant::GgmlType;
use tinylora_formats::{BlockMatrix, HostTensor};
use tinylora_kernels::{
    DeviceBlocks, block_matmul, frozen_matmul, lowrank_merge, lowrank_update, lowrank_update_merged,
};

use crate::delta::{DeltaMode, LowRankDelta};

/// Largest tensor a single storage binding may hold on every target we care about
/// (lavapipe and WebGPU both cap a binding at 128 MiB); bigger weights are split by columns.
pub const MAX_BINDING_BYTES: usize = 64 << 20;

/// Output columns of one chunk of a weight with rows `d_in` wide: [`MAX_BINDING_BYTES`] worth
/// on a GPU; the whole weight on the CPU backend, which has no binding limit and where a split
/// only costs a copy of every output (the chunks' products are concatenated: the LM head's
/// logits, 400 MB for a 16 × 128-token SmolLM2 forward).
fn chunk_cols(d_in: usize, device: &Device) -> usize {
    if crate::device::is_cpu(device) {
        usize::MAX
    } else {
        (MAX_BINDING_BYTES / 4 / d_in).max(1)
    }
}

/// How W is held on the device.
#[derive(Debug, Clone)]
pub enum FrozenWeight {
    /// Wᵀ in f32, split along d_out on a GPU: each `[d_in, d_out_chunk]`, at most
    /// [`MAX_BINDING_BYTES`].
    /// A delta can be merged into it.
    Dense(Vec<Tensor<2>>),
    /// W in its ggml blocks (half precision or quantized), split on a GPU into row chunks whose
    /// f32 decoding stays under [`MAX_BINDING_BYTES`]. A delta always runs on the activation path.
    Blocks(Vec<DeviceBlocks>),
}

/// y = x Wᵀ + b (+ a low-rank delta).
#[derive(Debug, Clone)]
pub struct Linear {
    /// W.
    pub weight: FrozenWeight,
    /// Bias `[d_out]`.
    pub bias: Option<Tensor<1>>,
    /// Input width.
    pub d_in: usize,
    /// Output width.
    pub d_out: usize,
    /// The low-rank delta ΔW this layer carries, if any (applied as the model's
    /// [`DeltaMode`] says).
    pub delta: Option<LowRankDelta>,
    /// Wᵀ without the delta, held while the delta is merged into the weight when the model keeps
    /// its base weights (`Transformer::keep_base_weights`): unmerging then restores it exactly.
    pub(crate) base_t: Option<Vec<Tensor<2>>>,
}

/// Upload a host matrix.
pub fn upload(data: Vec<f32>, shape: [usize; 2], device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(data, shape), device)
}

impl Linear {
    /// Build from a PyTorch-layout weight `[d_out, d_in]` and optional bias `[d_out]`.
    pub fn new(weight: &HostTensor, bias: Option<&HostTensor>, device: &Device) -> Self {
        let (d_out, d_in) = (weight.shape[0], weight.shape[1]);
        let chunk = chunk_cols(d_in, device).min(d_out.max(1));
        let mut weight_t = Vec::new();
        for start in (0..d_out).step_by(chunk) {
            let end = (start + chunk).min(d_out);
            let cols = end - start;
            // transpose rows start..end of W [d_out, d_in] into Wᵀ chunk [d_in, cols]
            let mut t = vec![0.0f32; d_in * cols];
            for (c, row) in weight.data[start * d_in..end * d_in]
                .chunks_exact(d_in)
                .enumerate()
            {
                for (i, &w) in row.iter().enumerate() {
                    t[i * cols + c] = w;
                }
            }
            weight_t.push(upload(t, [d_in, cols], device));
        }
        Self::with_weight(FrozenWeight::Dense(weight_t), bias, d_out, d_in, device)
    }

    /// Build from W `[d_out, d_in]` as the file stores it (or as `--weights` converted it):
    /// f32 becomes the dense Wᵀ of [`Self::new`], every other type stays in its blocks.
    pub fn from_blocks(weight: &BlockMatrix, bias: Option<&HostTensor>, device: &Device) -> Self {
        let (d_out, d_in) = (weight.rows, weight.cols);
        if weight.ty == GgmlType::F32 {
            let w = HostTensor {
                shape: vec![d_out, d_in],
                data: weight.dequantize(),
            };
            return Self::new(&w, bias, device);
        }
        let chunk = chunk_cols(d_in, device).min(d_out.max(1));
        let blocks = (0..d_out)
            .step_by(chunk)
            .map(|start| DeviceBlocks::upload(weight, start..(start + chunk).min(d_out), device))
            .collect();
        Self::with_weight(FrozenWeight::Blocks(blocks), bias, d_out, d_in, device)
    }

    fn with_weight(
        weight: FrozenWeight,
        bias: Option<&HostTensor>,
        d_out: usize,
        d_in: usize,
        device: &Device,
    ) -> Self {
        let bias = bias.map(|b| Tensor::from_data(TensorData::new(b.data.clone(), [d_out]), device));
        Linear {
            weight,
            bias,
            d_in,
            d_out,
            delta: None,
            base_t: None,
        }
    }

    /// Bytes W takes on the device.
    pub fn weight_bytes(&self) -> usize {
        match &self.weight {
            FrozenWeight::Dense(chunks) => chunks
                .iter()
                .map(|w| w.dims().iter().product::<usize>() * 4)
                .sum(),
            FrozenWeight::Blocks(chunks) => chunks.iter().map(DeviceBlocks::bytes).sum(),
        }
    }

    /// Whether W is held in blocks (so that a delta cannot be merged into it).
    pub fn is_compressed(&self) -> bool {
        matches!(self.weight, FrozenWeight::Blocks(_))
    }

    /// x `[N, d_in]` → `[N, d_out]`, the delta applied as `mode` says.
    pub fn forward2(&self, x: Tensor<2>, mode: DeltaMode) -> Tensor<2> {
        let y = self.forward_frozen(x.clone());
        let Some(d) = &self.delta else { return y };
        let (factors, basis, coef) = (d.factors.clone(), d.basis.clone(), d.coef.clone());
        match mode {
            DeltaMode::Off => y,
            // blocks hold no merged delta: the update runs on the activation path instead
            DeltaMode::Activation => lowrank_update(x, y, factors, basis, coef),
            DeltaMode::Merged if self.is_compressed() => lowrank_update(x, y, factors, basis, coef),
            // y as it is; ∂L/∂coef (or ∂L/∂factors) when they require gradients
            DeltaMode::Merged => lowrank_update_merged(x, y, factors, basis, coef),
        }
    }

    /// x Wᵀ + b with the weights as they are (merged or not).
    fn forward_frozen(&self, x: Tensor<2>) -> Tensor<2> {
        let mut parts: Vec<Tensor<2>> = match &self.weight {
            FrozenWeight::Dense(chunks) => chunks
                .iter()
                .map(|w| frozen_matmul(x.clone(), w.clone()))
                .collect(),
            FrozenWeight::Blocks(chunks) => chunks.iter().map(|w| block_matmul(x.clone(), w)).collect(),
        };
        let y = if parts.len() == 1 {
            parts.remove(0)
        } else {
            Tensor::cat(parts, 1)
        };
        match &self.bias {
            Some(b) => y + b.clone().unsqueeze::<2>(),
            None => y,
        }
    }

    /// x `[B, T, d_in]` → `[B, T, d_out]`.
    pub fn forward(&self, x: Tensor<3>, mode: DeltaMode) -> Tensor<3> {
        let [b, t, _] = x.dims();
        self.forward2(x.reshape([b * t, self.d_in]), mode)
            .reshape([b, t, self.d_out])
    }
}

impl Linear {
    /// W ← W + ΔW in every column chunk: in place when unshared, or with `keep_base` into new
    /// tensors, the base Wᵀ held aside for [`Self::unmerge_delta`].
    /// Nothing to do for weights in blocks: their delta stays on the activation path.
    pub(crate) fn merge_delta(&mut self, keep_base: bool) {
        let FrozenWeight::Dense(chunks) = &self.weight else {
            return;
        };
        if self.delta.is_none() || self.base_t.is_some() {
            return;
        }
        if keep_base {
            self.base_t = Some(chunks.clone());
        }
        self.apply_delta(false);
    }

    /// W ← W − ΔW: the held base weights when there are some (bit-exact), else ΔW subtracted
    /// in place (exact up to rounding: W + ΔW − ΔW may differ from W in the last bit).
    pub(crate) fn unmerge_delta(&mut self) {
        match self.base_t.take() {
            Some(base) => self.weight = FrozenWeight::Dense(base),
            None => self.apply_delta(true),
        }
    }

    /// W ← W ± ΔW in every column chunk of a dense W, in place when a chunk's buffer is
    /// unshared.
    fn apply_delta(&mut self, subtract: bool) {
        let Some(d) = self.delta.as_ref() else { return };
        let FrozenWeight::Dense(chunks) = &mut self.weight else {
            return;
        };
        // merging is never differentiated
        let (coef, factors) = (d.coef.clone().inner(), d.factors.clone().inner());
        let chunks = std::mem::take(chunks);
        let mut col0 = 0;
        self.weight = FrozenWeight::Dense(
            chunks
                .into_iter()
                .map(|w| {
                    let cols = w.dims()[1];
                    let merged =
                        lowrank_merge(w, factors.clone(), d.basis.clone(), coef.clone(), col0, subtract);
                    col0 += cols;
                    merged
                })
                .collect(),
        );
    }
}
