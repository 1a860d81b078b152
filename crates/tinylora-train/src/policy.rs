//! Log-probabilities of completion tokens under the model, teacher-forced: the quantity GRPO
//! and SFT differentiate.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use tinylora_engine::Transformer;
use tinylora_engine::batch::left_pad;

/// Prompts with their completions, left-padded into one batch.
#[derive(Debug, Clone)]
pub struct CompletionBatch {
    /// prompt ‖ completion, left-padded `[B][L]`.
    pub rows: Vec<Vec<u32>>,
    /// Padding slots at the start of each row.
    pub pads: Vec<usize>,
    /// Where each row's completion starts (index into the row).
    pub starts: Vec<usize>,
    /// Row length L.
    pub len: usize,
    /// First position whose prediction is a completion token (the window starts here).
    pub first: usize,
}

impl CompletionBatch {
    /// Batch `prompts[b] ‖ completions[b]`.
    pub fn new(prompts: &[Vec<u32>], completions: &[Vec<u32>]) -> Self {
        let seqs: Vec<Vec<u32>> = prompts
            .iter()
            .zip(completions)
            .map(|(p, c)| [p.as_slice(), c].concat())
            .collect();
        let (rows, pads) = left_pad(&seqs, 0);
        let starts: Vec<usize> = prompts.iter().zip(&pads).map(|(p, pad)| pad + p.len()).collect();
        let len = rows[0].len();
        let first = starts.iter().min().map_or(0, |&s| s - 1);
        CompletionBatch {
            rows,
            pads,
            starts,
            len,
            first,
        }
    }

    /// Positions in the window `first..len`: the only ones whose logits are computed.
    pub fn window(&self) -> usize {
        self.len - self.first
    }

    /// `[B, W]` (W = [`Self::window`]) with 1 where position t predicts a completion token.
    pub fn mask(&self) -> Vec<f32> {
        self.starts
            .iter()
            .flat_map(|&s| {
                (self.first..self.len).map(move |t| f32::from(u8::from(t + 1 >= s && t + 1 < self.len)))
            })
            .collect()
    }

    /// `per_token[b][i]` (one value per completion token) laid out as `[B, W]` at the positions
    /// that predict them, zeros elsewhere.
    pub fn scatter(&self, per_token: &[Vec<f32>]) -> Vec<f32> {
        let w = self.window();
        let mut out = vec![0.0; self.rows.len() * w];
        for (b, vals) in per_token.iter().enumerate() {
            for (i, &x) in vals.iter().enumerate() {
                out[b * w + self.starts[b] - 1 + i - self.first] = x;
            }
        }
        out
    }

    /// A host `[B, W]` array as a device tensor.
    pub fn tensor(&self, data: Vec<f32>, device: &Device) -> Tensor<2> {
        Tensor::from_data(TensorData::new(data, [self.rows.len(), self.window()]), device)
    }
}

/// log π(row[t + 1] | row[..=t]) at the window's positions t ∈ first..L, `[B, W]` (the last
/// column is filler), with the logits divided by `temperature` (the distribution the rollouts
/// sampled from). The LM head runs on the window only, not on the prompts.
pub fn token_logprobs(model: &Transformer, batch: &CompletionBatch, temperature: f32) -> Tensor<2> {
    let (b, l, w) = (batch.rows.len(), batch.len, batch.window());
    let hidden = model.hidden_states(&batch.rows, &batch.pads); // [B, L, H]
    let h = hidden.dims()[2];
    let hidden = hidden.slice([0..b, batch.first..l, 0..h]).reshape([b * w, h]);
    let mut logits = model.logits(hidden); // [B·W, V]
    if temperature != 1.0 {
        logits = logits / temperature;
    }
    let next: Vec<i64> = batch
        .rows
        .iter()
        .flat_map(|r| (batch.first..l).map(move |t| r.get(t + 1).copied().unwrap_or(0) as i64))
        .collect();
    let idx = Tensor::<2, Int>::from_data(TensorData::new(next, [b * w, 1]), &model.device);
    log_softmax(logits, 1).gather(1, idx).reshape([b, w])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_mask_and_scatter_positions() {
        let b = CompletionBatch::new(&[vec![1, 2, 3], vec![4]], &[vec![5, 6], vec![7, 8, 9]]);
        // rows are left-padded to 16: prompt ends at 14 and 13, so the window is 12..16
        assert_eq!(
            (b.len, b.starts.clone(), b.first, b.window()),
            (16, vec![14, 13], 12, 4)
        );
        assert_eq!(b.rows[0][11..], [1, 2, 3, 5, 6]);
        assert_eq!(b.mask(), [0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0]);
        let s = b.scatter(&[vec![0.5, 0.6], vec![0.7, 0.8, 0.9]]);
        assert_eq!(s, [0.0, 0.5, 0.6, 0.0, 0.7, 0.8, 0.9, 0.0]);
    }
}
