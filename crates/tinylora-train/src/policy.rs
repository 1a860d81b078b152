//! Log-probabilities of completion tokens under the model, teacher-forced: the quantity GRPO
//! and SFT differentiate.

use std::ops::Range;

use burn::tensor::{Device, Tensor, TensorData};
use tinylora_engine::Transformer;
use tinylora_engine::batch::{PROMPT_BLOCK, left_pad};
use tinylora_engine::generate::widest_floats_per_token;
use tinylora_engine::kv_cache::KV_BLOCK;
use tinylora_engine::target_logprobs::LOGIT_CHUNK_BYTES;
use tinylora_formats::ModelConfig;

/// Most bytes one buffer of a teacher-forced pass may take: a step's sequences are cut into
/// passes ([`passes`]) whose attention scores and MLP activations each stay within it.
pub const PASS_BUFFER_BYTES: usize = LOGIT_CHUNK_BYTES;

/// Most bytes the activations of a teacher-forced pass may take, all layers together
/// ([`activation_bytes_per_token`]). With Qwen2.5-0.5B at GSM8K lengths a training step then
/// peaks near 6 GB on the CPU, weights included.
pub const PASS_ACTIVATION_BYTES: usize = 2 << 30;

/// An estimate of a pass's memory per token, all layers together, when attention spans `s`
/// slots: per layer, one f32 for each per-token activation: the two norms' inputs and outputs
/// (4H), q and the attention's output (2·n_h·d_h), k and v (2·n_kv·d_h), attention's scores
/// and probabilities (2·n_h·S), the MLP's gate, up and product (3F). The backward keeps only
/// some of them (the probabilities, not the scores; a projection's input only when its factors
/// train), but holds gradients of the same widths while it runs; the CPU's peak RSS grows
/// with a pass's tokens by about this much (benches/README.md, "Training memory").
pub fn activation_bytes_per_token(c: &ModelConfig, s: usize) -> usize {
    let per_layer = [
        c.hidden_size.saturating_mul(4),
        c.num_attention_heads.saturating_mul(c.head_dim).saturating_mul(2),
        c.num_key_value_heads.saturating_mul(c.head_dim).saturating_mul(2),
        c.num_attention_heads.saturating_mul(s).saturating_mul(2),
        c.intermediate_size.saturating_mul(3),
    ]
    .into_iter()
    .fold(0usize, usize::saturating_add);
    per_layer.saturating_mul(4).saturating_mul(c.num_hidden_layers)
}

/// Sequences per teacher-forced pass when the longest is `len` tokens: `limit` when it is not
/// 0, else the most whose attention scores `[m, n_h, L, S]` and MLP activations `[m·L, F]`, in
/// f32, each stay within [`PASS_BUFFER_BYTES`] and whose `m·L` tokens' activations stay
/// within [`PASS_ACTIVATION_BYTES`] (L: `len` padded as `left_pad` pads it, S: L rounded
/// up to the KV cache's block); at least 1.
pub fn pass_rows(config: &ModelConfig, len: usize, limit: usize) -> usize {
    if limit > 0 {
        return limit;
    }
    let l = len.div_ceil(PROMPT_BLOCK) * PROMPT_BLOCK;
    let s = l.div_ceil(KV_BLOCK) * KV_BLOCK;
    let per_row = l
        .saturating_mul(widest_floats_per_token(config, s))
        .saturating_mul(4);
    let activations_per_row = l.saturating_mul(activation_bytes_per_token(config, s));
    (PASS_BUFFER_BYTES / per_row.max(1))
        .min(PASS_ACTIVATION_BYTES / activations_per_row.max(1))
        .max(1)
}

/// `n` sequences, the longest `len` tokens, as consecutive ranges of [`pass_rows`] each.
pub fn passes(config: &ModelConfig, n: usize, len: usize, limit: usize) -> Vec<Range<usize>> {
    let m = pass_rows(config, len, limit);
    (0..n).step_by(m).map(|a| a..(a + m).min(n)).collect()
}

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
/// sampled from). The LM head runs on the window only, not on the prompts, and a chunk of rows
/// at a time ([`Transformer::target_logprobs`]).
pub fn token_logprobs(model: &Transformer, batch: &CompletionBatch, temperature: f32) -> Tensor<2> {
    token_logprobs_in_chunks(model, batch, temperature, model.logit_chunk_rows())
}

/// [`token_logprobs`] with the LM head run on `rows` rows at a time.
pub fn token_logprobs_in_chunks(
    model: &Transformer,
    batch: &CompletionBatch,
    temperature: f32,
    rows: usize,
) -> Tensor<2> {
    let (b, l, w) = (batch.rows.len(), batch.len, batch.window());
    let hidden = model.hidden_states(&batch.rows, &batch.pads); // [B, L, H]
    let h = hidden.dims()[2];
    let hidden = hidden.slice([0..b, batch.first..l, 0..h]).reshape([b * w, h]);
    let next: Vec<u32> = batch
        .rows
        .iter()
        .flat_map(|r| (batch.first..l).map(move |t| r.get(t + 1).copied().unwrap_or(0)))
        .collect();
    model
        .target_logprobs_in_chunks(hidden, &next, temperature, rows)
        .reshape([b, w])
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

    /// Qwen2.5-0.5B's widths.
    fn qwen05() -> ModelConfig {
        ModelConfig {
            architecture: tinylora_formats::Architecture::Qwen2,
            hidden_size: 896,
            intermediate_size: 4864,
            num_hidden_layers: 24,
            num_attention_heads: 14,
            num_key_value_heads: 2,
            head_dim: 64,
            vocab_size: 151_936,
            rope_theta: 1e6,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: true,
            attention_bias: true,
            max_position_embeddings: 32_768,
        }
    }

    #[test]
    fn passes_keep_attention_scores_within_the_buffer_bound() {
        // one layer, so that the activations stay far within their bound: 400 tokens
        // attend to S = 448 slots, so a sequence's scores take 4 · 400 · 14 · 448 = 10,035,200
        // bytes: 6 fit in 64 MiB
        let c = ModelConfig {
            num_hidden_layers: 1,
            ..qwen05()
        };
        assert_eq!(pass_rows(&c, 400, 0), 6);
        assert_eq!(passes(&c, 16, 400, 0), [0..6, 6..12, 12..16]);
        // short rows, padded to 16 tokens: the MLP's [m·16, F] bounds instead (4 · 16 · 4864
        // bytes a row)
        assert_eq!(pass_rows(&c, 10, 0), (64 << 20) / (4 * 16 * 4864));
        assert_eq!(passes(&c, 5, 400, 2), [0..2, 2..4, 4..5]);
        assert_eq!(pass_rows(&c, 1 << 20, 0), 1, "at least one");
    }

    #[test]
    fn passes_keep_their_activations_within_the_activation_bound() {
        let c = qwen05();
        // a token attending to S = 448 slots counts, per layer, 4·896 + 2·14·64 + 2·2·64 +
        // 2·14·448 + 3·4864 = 32,768 floats: 24 layers · 4 B · 32,768 = 3 MiB
        assert_eq!(activation_bytes_per_token(&c, 448), 3 << 20);
        // a 400-token row counts 1200 MiB: one a pass (its scores alone would allow 6)
        assert_eq!(pass_rows(&c, 400, 0), 1);
        assert_eq!(passes(&c, 3, 400, 0), [0..1, 1..2, 2..3]);
        // 100-token rows (112 padded, S = 128): 3584 + 1792 + 256 + 3584 + 14,592 = 23,808
        // floats a layer, 2,285,568 B a token, 255,983,616 B a row: 8 in 2 GiB, where the
        // MLP's buffer alone would allow 64 MiB / (4 · 112 · 4864) = 30
        assert_eq!(pass_rows(&c, 100, 0), 8);
        // an explicit --micro-batch is taken as it is
        assert_eq!(pass_rows(&c, 400, 4), 4);
    }
}
