//! Log-probabilities of completion tokens under the model, teacher-forced: the quantity GRPO
//! and SFT differentiate.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};
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
        let starts = prompts.iter().zip(&pads).map(|(p, pad)| pad + p.len()).collect();
        let len = rows[0].len();
        CompletionBatch {
            rows,
            pads,
            starts,
            len,
        }
    }

    /// `[B, L]` with 1 where position t predicts a completion token (t + 1 ≥ start), else 0.
    pub fn mask(&self) -> Vec<f32> {
        self.starts
            .iter()
            .flat_map(|&s| (0..self.len).map(move |t| f32::from(u8::from(t + 1 >= s && t + 1 < self.len))))
            .collect()
    }

    /// `per_token[b][i]` (one value per completion token) laid out as `[B, L]` at the positions
    /// that predict them, zeros elsewhere.
    pub fn scatter(&self, per_token: &[Vec<f32>]) -> Vec<f32> {
        let mut out = vec![0.0; self.rows.len() * self.len];
        for (b, vals) in per_token.iter().enumerate() {
            for (i, &x) in vals.iter().enumerate() {
                out[b * self.len + self.starts[b] - 1 + i] = x;
            }
        }
        out
    }

    /// A host `[B, L]` array as a device tensor.
    pub fn tensor(&self, data: Vec<f32>, model: &Transformer) -> Tensor<2> {
        Tensor::from_data(TensorData::new(data, [self.rows.len(), self.len]), &model.device)
    }
}

/// log π(row[t + 1] | row[..=t]) at every position t, `[B, L]` (the last column is filler),
/// with the logits divided by `temperature` (the distribution the rollouts sampled from).
pub fn token_logprobs(model: &Transformer, batch: &CompletionBatch, temperature: f32) -> Tensor<2> {
    let (b, l) = (batch.rows.len(), batch.len);
    let mut logits = model.teacher_forced(&batch.rows, &batch.pads); // [B·L, V]
    if temperature != 1.0 {
        logits = logits / temperature;
    }
    let next: Vec<i64> = batch
        .rows
        .iter()
        .flat_map(|r| (0..l).map(move |t| r.get(t + 1).copied().unwrap_or(0) as i64))
        .collect();
    let idx = Tensor::<2, Int>::from_data(TensorData::new(next, [b * l, 1]), &model.device);
    log_softmax(logits, 1).gather(1, idx).reshape([b, l])
}
