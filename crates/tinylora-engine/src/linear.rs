//! A frozen linear layer y = x Wᵀ + b on the device.

use burn::tensor::{Device, Tensor, TensorData};
use tinylora_formats::HostTensor;
use tinylora_kernels::{lowrank_update, lowrank_update_merged};

use crate::adapter::AdapterMode;

/// Largest tensor a single storage binding may hold on every target we care about
/// (lavapipe and WebGPU both cap a binding at 128 MiB); bigger weights are split by columns.
pub const MAX_BINDING_BYTES: usize = 64 << 20;

/// An adapter's low-rank update of one linear layer: ΔW = U M Vᵀ with M = Σᵢ vᵢ P̃ᵢ
/// (see [`crate::adapter`]).
#[derive(Debug, Clone)]
pub struct LowRankUpdate {
    /// [U; V] `[d_out + d_in, r]`, frozen.
    pub factors: Tensor<2>,
    /// P̃ᵢ `[n_v, r, r]`, frozen.
    pub basis: Tensor<3>,
    /// v of the module's tie group `[n_v]` (tied modules hold clones of one tensor).
    pub coef: Tensor<1>,
    /// How the forward applies it: not at all, adding ((x V) Mᵀ) Uᵀ, or already merged into
    /// the weight (where it still carries v's gradient).
    pub mode: AdapterMode,
}

impl LowRankUpdate {
    /// An update on the activation path with host-side frozen factors [U; V] `[rows, r]` and
    /// basis `[n_v, r, r]` uploaded to `device`, mixed by `coef`.
    pub fn frozen(
        factors: Vec<f32>,
        basis: Vec<f32>,
        rows: usize,
        r: usize,
        coef: Tensor<1>,
        device: &Device,
    ) -> Self {
        let n_v = basis.len() / (r * r);
        LowRankUpdate {
            factors: upload(factors, [rows, r], device),
            basis: Tensor::from_data(TensorData::new(basis, [n_v, r, r]), device),
            coef,
            mode: AdapterMode::Activation,
        }
    }
}

/// y = x Wᵀ + b (+ an adapter's update) with W stored transposed, as `[d_in, d_out]` column
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
    /// The adapter's update of this layer, if it is a target.
    pub update: Option<LowRankUpdate>,
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
            update: None,
        }
    }

    /// x `[N, d_in]` → `[N, d_out]`.
    pub fn forward2(&self, x: Tensor<2>) -> Tensor<2> {
        let y = self.forward_frozen(x.clone());
        let Some(u) = &self.update else { return y };
        let (factors, basis, coef) = (u.factors.clone(), u.basis.clone(), u.coef.clone());
        match u.mode {
            AdapterMode::Off => y,
            AdapterMode::Activation => lowrank_update(x, y, factors, basis, coef),
            // y as it is; ∂L/∂v (or LoRA's ∂L/∂factors) when they require gradients
            AdapterMode::Merged => lowrank_update_merged(x, y, factors, basis, coef),
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
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, t, _] = x.dims();
        self.forward2(x.reshape([b * t, self.d_in]))
            .reshape([b, t, self.d_out])
    }
}
