//! log π(y | h) of given target tokens under the LM head, in row chunks, so that the logits
//! `[N, V]` never exist whole: only `[n, V]` of one chunk at a time (Qwen2.5's V = 151,936
//! makes a 32 × 256-token GRPO batch's logits 5.0 GB, past any GPU's largest storage binding,
//! and 16 × 220 SmolLM2 tokens already pass lavapipe's 128 MiB).
//!
//! For a row h `[H]` with target t, z = W h / τ `[V]` and
//!
//!   ℓ = log softmax(z)_t = z_t − log Σ_v exp(z_v),   ∂ℓ/∂h = (W_t − Σ_v p_v W_v) / τ =: d,
//!
//! with p = softmax(z). W (the LM head) is frozen, so d is all the backward needs from the head.
//! Each chunk runs its own small forward and backward at once (stock burn ops: `log_softmax`,
//! `gather`, the head's own product and its backward) and keeps ℓ `[n]` and d `[n, H]`; the
//! chunks' results then enter the caller's graph as
//!
//!   ℓ̃ = ℓ + Σ_H (h − sg(h)) ⊙ d,
//!
//! sg = stop-gradient: ℓ̃ equals ℓ, and ∂ℓ̃/∂h = d, the exact first derivative. Memory: one
//! chunk's logits plus d, the size of h; the work is the unchunked forward and backward's.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};

use crate::linear::MAX_BINDING_BYTES;
use crate::transformer::Transformer;

/// Most bytes one chunk's f32 logits `[n, V]` take.
pub const LOGIT_CHUNK_BYTES: usize = MAX_BINDING_BYTES;

impl Transformer {
    /// Rows per chunk of [`Self::target_logprobs`]: [`LOGIT_CHUNK_BYTES`] of logits, at least one.
    pub fn logit_chunk_rows(&self) -> usize {
        (LOGIT_CHUNK_BYTES / (4 * self.config.vocab_size.max(1))).max(1)
    }

    /// log softmax(W hᵢ / τ)[targets[i]] for hidden states h `[N, H]` → `[N]`, differentiable
    /// in h (and through it in whatever h depends on) when h is tracked; when it is not, the
    /// result is a plain tensor (autodiff off). The logits are made [`Self::logit_chunk_rows`]
    /// rows at a time.
    pub fn target_logprobs(&self, hidden: Tensor<2>, targets: &[u32], temperature: f32) -> Tensor<1> {
        self.target_logprobs_in_chunks(hidden, targets, temperature, self.logit_chunk_rows())
    }

    /// [`Self::target_logprobs`] with `rows` rows per chunk.
    ///
    /// # Panics
    /// If `hidden` has no rows, `targets` is not one per row, `rows` is 0 or the LM head
    /// carries a delta (its parameters would get no gradient: deltas go on the seven
    /// projections only).
    pub fn target_logprobs_in_chunks(
        &self,
        hidden: Tensor<2>,
        targets: &[u32],
        temperature: f32,
        rows: usize,
    ) -> Tensor<1> {
        let [n, h] = hidden.dims();
        assert!(n > 0, "hidden states of at least one row");
        assert_eq!(targets.len(), n, "one target per row of the hidden states");
        assert!(rows > 0, "chunks of at least one row");
        assert!(self.lm_head.delta.is_none(), "the LM head carries no delta");
        let tracked = hidden.is_tracked();
        let plain = hidden.clone().inner(); // h without its graph [N, H]
        let (mut logps, mut dirs) = (Vec::new(), Vec::new());
        for start in (0..n).step_by(rows) {
            let end = (start + rows).min(n);
            let h_c = plain.clone().slice([start..end, 0..h]); // [n_c, H]
            let idx: Vec<i64> = targets[start..end].iter().map(|&t| i64::from(t)).collect();
            let idx = Tensor::<2, Int>::from_data(TensorData::new(idx, [end - start, 1]), &self.device);
            if tracked {
                let leaf = h_c.autodiff().require_grad();
                let logp = self.chunk_logprobs(leaf.clone(), idx, temperature); // [n_c]
                let grads = logp.clone().sum().backward();
                let d = leaf.grad(&grads).expect("the chunk's head reaches its input"); // [n_c, H]
                logps.push(logp.inner());
                dirs.push(d);
            } else {
                logps.push(self.chunk_logprobs(h_c, idx, temperature));
            }
        }
        let logp = Tensor::cat(logps, 0); // ℓ [N]
        if !tracked {
            return logp;
        }
        let d = Tensor::cat(dirs, 0); // [N, H]
        // ℓ + Σ_H (h − sg(h)) ⊙ d: the value ℓ, the derivative d
        let tangent = (hidden.clone() - hidden.detach()) * d.autodiff(); // [N, H], all zeros
        logp.autodiff() + tangent.sum_dim(1).reshape([n])
    }

    /// log softmax(W h / τ)[idx] of one chunk: h `[n, H]`, idx `[n, 1]` → `[n]`.
    fn chunk_logprobs(&self, hidden: Tensor<2>, idx: Tensor<2, Int>, temperature: f32) -> Tensor<1> {
        let n = hidden.dims()[0];
        let mut logits = self.logits(hidden); // [n, V]
        if temperature != 1.0 {
            logits = logits / temperature;
        }
        log_softmax(logits, 1).gather(1, idx).reshape([n])
    }
}
