//! A frozen linear layer y = x Wᵀ + b on the device, optionally carrying a low-rank delta.

use burn::tensor::{Device, Tensor, TensorData};
use tinylora_formats::HostTensor;
use tinylora_kernels::{lowrank_merge, lowrank_update, lowrank_update_merged};

use crate::delta::{DeltaMode, LowRankDelta};

/// Largest tensor a single storage binding may hold on every target we care about
/// (lavapipe and WebGPU both cap a binding at 128 MiB); bigger weights are split by columns.
pub const MAX_BINDING_BYTES: usize = 64 << 20;

/// y = x Wᵀ + b (+ a low-rank delta) with W stored transposed, as `[d_in, d_out]` column
/// chunks.
#[derive(Debug, Clone)]
pub struct Linear {
    /// Wᵀ split along d_out: each `[d_in, d_out_chunk]`, at most [`MAX_BINDING_BYTES`].
    pub weight_t: Vec<Tensor<2>>,
    /// Bias `[d_out]`.
    pub bias: Option<Tensor<1>>,
    /// Input width.
    pub d_in: usize,
    /// Output width.
    pub d_out: usize,
    /// The low-rank delta ΔW this layer carries, if any (applied as the model's
    /// [`DeltaMode`] says).
    pub delta: Option<LowRankDelta>,
    /// Wᵀ without the delta, held while the delta is merged into `weight_t` when the model keeps
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
        let chunk = (MAX_BINDING_BYTES / 4 / d_in).max(1);
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
        let bias = bias.map(|b| Tensor::from_data(TensorData::new(b.data.clone(), [d_out]), device));
        Linear {
            weight_t,
            bias,
            d_in,
            d_out,
            delta: None,
            base_t: None,
        }
    }

    /// x `[N, d_in]` → `[N, d_out]`, the delta applied as `mode` says.
    pub fn forward2(&self, x: Tensor<2>, mode: DeltaMode) -> Tensor<2> {
        let y = self.forward_frozen(x.clone());
        let Some(d) = &self.delta else { return y };
        let (factors, basis, coef) = (d.factors.clone(), d.basis.clone(), d.coef.clone());
        match mode {
            DeltaMode::Off => y,
            DeltaMode::Activation => lowrank_update(x, y, factors, basis, coef),
            // y as it is; ∂L/∂coef (or ∂L/∂factors) when they require gradients
            DeltaMode::Merged => lowrank_update_merged(x, y, factors, basis, coef),
        }
    }

    /// x Wᵀ + b with the weights as they are (merged or not).
    fn forward_frozen(&self, x: Tensor<2>) -> Tensor<2> {
        let y = if self.weight_t.len() == 1 {
            x.matmul(self.weight_t[0].clone())
        } else {
            Tensor::cat(
                self.weight_t
                    .iter()
                    .map(|w| x.clone().matmul(w.clone()))
                    .collect(),
                1,
            )
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
    pub(crate) fn merge_delta(&mut self, keep_base: bool) {
        if self.delta.is_none() || self.base_t.is_some() {
            return;
        }
        if keep_base {
            self.base_t = Some(self.weight_t.clone());
        }
        self.apply_delta(false);
    }

    /// W ← W − ΔW: the held base weights when there are some (bit-exact), else ΔW subtracted
    /// in place (exact up to rounding: W + ΔW − ΔW may differ from W in the last bit).
    pub(crate) fn unmerge_delta(&mut self) {
        match self.base_t.take() {
            Some(base) => self.weight_t = base,
            None => self.apply_delta(true),
        }
    }

    /// W ← W ± ΔW in every column chunk, in place when a chunk's buffer is unshared.
    fn apply_delta(&mut self, subtract: bool) {
        let Some(d) = self.delta.as_ref() else { return };
        // merging is never differentiated
        let (coef, factors) = (d.coef.clone().inner(), d.factors.clone().inner());
        let chunks = std::mem::take(&mut self.weight_t);
        let mut col0 = 0;
        self.weight_t = chunks
            .into_iter()
            .map(|w| {
                let cols = w.dims()[1];
                let merged = lowrank_merge(w, factors.clone(), d.basis.clone(), coef.clone(), col0, subtract);
                col0 += cols;
                merged
            })
            .collect();
    }
}
