//! Batched generation with a KV cache: one prefill over the left-padded prompts, then one
//! decode step per new token. On a GPU, ended sequences ride along until at most half the batch
//! is live, then the batch shrinks; on the CPU it shrinks as soon as one ends.
//!
//! The buffers that grow with the batch stay within [`MAX_BINDING_BYTES`] (lavapipe and
//! browsers bind at most 128 MiB): a batch whose KV cache would not fit is generated in groups
//! of at most [`cache_rows`] rows, a prefill runs in chunks of [`prefill_slots`] positions, and
//! the next token's logits `[B, V]` are made [`Transformer::logit_chunk_rows`] rows at a time.

use burn::tensor::{Int, Tensor, TensorData};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tinylora_formats::ModelConfig;
use tinylora_kernels::choose_tokens;

use crate::batch::{PROMPT_BLOCK, attention_mask, left_pad, padded_len, positions};
use crate::device::is_cpu;
use crate::error::{EngineError, read_f32, read_f32_async};
use crate::kv_cache::{KV_BLOCK, KvCache};
use crate::linear::MAX_BINDING_BYTES;
use crate::rope::rope_tables;
use crate::sampling::{SamplingParams, sample};
use crate::transformer::{StepInputs, Transformer};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Upper bound on new tokens per sequence.
    pub max_new_tokens: usize,
    /// Token choice.
    pub sampling: SamplingParams,
    /// Tokens that end a sequence (kept as its last output token).
    pub stop_ids: Vec<u32>,
}

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// It produced a stop token.
    Stop,
    /// It reached `max_new_tokens`.
    Length,
}

/// One generated sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The prompt's token ids.
    pub prompt_ids: Vec<u32>,
    /// The generated ids, including the stop token when there is one.
    pub output_ids: Vec<u32>,
    /// Log-probability of each generated id under the distribution it was sampled from.
    pub logprobs: Vec<f32>,
    /// Why it ended.
    pub finish: FinishReason,
}

/// Floats per token of a forward's widest buffers when attention spans `s` slots: the largest
/// of attention's scores (`n_h · S`), the queries (`n_h · d_h`), the hidden state (H) and the
/// MLP's activations (F). Saturating.
pub fn widest_floats_per_token(config: &ModelConfig, s: usize) -> usize {
    let heads = config.num_attention_heads;
    heads
        .saturating_mul(s)
        .max(heads.saturating_mul(config.head_dim))
        .max(config.hidden_size)
        .max(config.intermediate_size)
}

/// Prompt slots per prefill forward of `b` rows whose cache spans `s` slots once prefilled:
/// at most `cap` ([`Transformer::prefill_chunk`]), and few enough that attention's scores
/// `[B, n_h, chunk, S]` and the MLP's activations `[B·chunk, F]`, in f32, each stay within
/// [`MAX_BINDING_BYTES`] (lavapipe and browsers bind at most 128 MiB); a multiple of
/// [`PROMPT_BLOCK`] when it is one block or more (fewer shapes to compile), at least 1.
pub fn prefill_slots(config: &ModelConfig, b: usize, s: usize, cap: usize) -> usize {
    let per_slot = b
        .saturating_mul(widest_floats_per_token(config, s))
        .saturating_mul(4);
    let slots = (MAX_BINDING_BYTES / per_slot.max(1)).clamp(1, cap.max(1));
    if slots >= PROMPT_BLOCK {
        slots / PROMPT_BLOCK * PROMPT_BLOCK
    } else {
        slots
    }
}

/// Slots a generation's KV cache reaches: the prompts' padded rows (`padded` slots, written by
/// the prefill), then one slot per decode step (`most_new − 1` of them: the last token is
/// never fed back), in whole [`KV_BLOCK`]s. Saturating.
pub fn cache_slots(padded: usize, most_new: usize) -> usize {
    padded
        .saturating_add(most_new.saturating_sub(1))
        .div_ceil(KV_BLOCK)
        .saturating_mul(KV_BLOCK)
}

/// Rows per generation group whose caches span `s` slots: few enough that one layer's cached
/// keys (or values) `[B, n_kv, S, d_h]`, in f32, stay within [`MAX_BINDING_BYTES`]; at least 1.
/// Saturating.
pub fn cache_rows(config: &ModelConfig, s: usize) -> usize {
    let per_row = config
        .num_key_value_heads
        .saturating_mul(config.head_dim)
        .saturating_mul(s)
        .saturating_mul(4);
    (MAX_BINDING_BYTES / per_row.max(1)).max(1)
}

impl Transformer {
    /// Run one forward over new tokens `rows[b][t]` after `cache.len()` cached slots and
    /// return the final hidden states `[B, T, H]`.
    fn step(&self, rows: &[Vec<u32>], pads: &[usize], cache: &mut KvCache) -> Tensor<3> {
        self.step_embedded(self.embed(rows), pads, cache)
    }

    /// [`Self::step`] from input embeddings x `[B, T, H]`.
    fn step_embedded(&self, x: Tensor<3>, pads: &[usize], cache: &mut KvCache) -> Tensor<3> {
        let c = &self.config;
        let (past, t) = (cache.len(), x.dims()[1]);
        let rope = rope_tables(&positions(pads, past, t), c.head_dim, c.rope_theta, &self.device);
        let rep = c.num_attention_heads / c.num_key_value_heads;
        let mask = attention_mask(pads, past, t, cache.capacity_after(t), rep, &self.device);
        let step = StepInputs {
            rope,
            mask,
            delta: self.delta_mode,
        };
        let hidden = self.forward_hidden(x, &step, cache);
        cache.advance(t);
        hidden
    }

    /// The prompts' forward in chunks of [`prefill_slots`] slots, each attending to the cache
    /// of the chunks before it, so that attention's scratch is `[B, n_kv, r·chunk, S]`, not
    /// `[B, n_kv, r·T, T]`; returns the last chunk's hidden states.
    fn prefill(&self, rows: &[Vec<u32>], pads: &[usize], cache: &mut KvCache) -> Tensor<3> {
        let t = rows[0].len();
        let chunk = prefill_slots(
            &self.config,
            rows.len(),
            cache.capacity_after(t),
            self.prefill_chunk,
        );
        let mut start = 0;
        loop {
            let end = (start + chunk).min(t);
            let part: Vec<Vec<u32>> = rows.iter().map(|r| r[start..end].to_vec()).collect();
            let hidden = self.step(&part, pads, cache);
            if end == t {
                return hidden;
            }
            start = end;
        }
    }

    /// Teacher-forced logits of every position: `prompts` (any lengths) → per prompt a
    /// row-major `[len, V]` host array.
    pub fn forward_logits(&self, prompts: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, EngineError> {
        check_prompts(prompts)?;
        if prompts.is_empty() {
            return Ok(vec![]);
        }
        let (rows, pads) = left_pad(prompts, 0);
        let (b, t, v) = (rows.len(), rows[0].len(), self.config.vocab_size);
        let all = read_f32(self.teacher_forced(&rows, &pads), "logits")?;
        Ok((0..b)
            .map(|i| all[(i * t + pads[i]) * v..(i + 1) * t * v].to_vec())
            .collect())
    }

    /// Teacher-forced logits `[B·T, V]` on the device of left-padded `rows` (`pads[b]` padding
    /// slots first): differentiable in the deltas' coefficients (and factors) when they require
    /// gradients, on the activation path or merged (see [`crate::DeltaMode`]).
    pub fn teacher_forced(&self, rows: &[Vec<u32>], pads: &[usize]) -> Tensor<2> {
        self.teacher_forced_embedded(self.embed(rows), pads)
    }

    /// Final hidden states `[B, T, H]` (after the last norm) of left-padded `rows`; the LM head
    /// can then be applied to the positions that matter only.
    pub fn hidden_states(&self, rows: &[Vec<u32>], pads: &[usize]) -> Tensor<3> {
        self.step_embedded(self.embed(rows), pads, &mut KvCache::new(self.layers.len()))
    }

    /// [`Self::teacher_forced`] from input embeddings x `[B, T, H]` (which may require a
    /// gradient: the backward then runs through the whole frozen network).
    pub fn teacher_forced_embedded(&self, x: Tensor<3>, pads: &[usize]) -> Tensor<2> {
        let [b, t, h] = x.dims();
        let hidden = self.step_embedded(x, pads, &mut KvCache::new(self.layers.len()));
        self.logits(hidden.reshape([b * t, h]))
    }

    /// Generate continuations for every prompt, in batches of at most [`cache_rows`] rows (one
    /// batch unless the KV cache would pass a binding). `on_token(i, id)` is called for each
    /// new token of prompt `i` as soon as it is chosen.
    pub fn generate(
        &self,
        prompts: &[Vec<u32>],
        opts: &GenerateOptions,
        on_token: impl FnMut(usize, u32),
    ) -> Result<Vec<Generation>, EngineError> {
        pollster::block_on(self.generate_async(prompts, opts, on_token))
    }

    /// [`Self::generate`] that awaits each step's logits instead of blocking on them: a
    /// browser's WebGPU can only be read asynchronously.
    pub async fn generate_async(
        &self,
        prompts: &[Vec<u32>],
        opts: &GenerateOptions,
        mut on_token: impl FnMut(usize, u32),
    ) -> Result<Vec<Generation>, EngineError> {
        check_prompts(prompts)?;
        // every prompt leaves room for a token in the context; sequences stop at its end
        let context = self.config.max_position_embeddings;
        if let Some(index) = prompts.iter().position(|p| p.len() >= context) {
            return Err(EngineError::ContextTooLong {
                index,
                tokens: prompts[index].len(),
                context,
            });
        }
        let limits: Vec<usize> = prompts
            .iter()
            .map(|p| opts.max_new_tokens.min(context - p.len()))
            .collect();
        if opts.max_new_tokens == 0 || prompts.is_empty() {
            return Ok(prompts.iter().map(|p| Generation::empty(p)).collect());
        }
        // every group is bounded by the whole batch's longest rows and most new tokens; the
        // groups are as even as can be (7 prompts at 3 rows a group: 3, 3, 1)
        let most_new = limits.iter().copied().max().unwrap_or(0);
        let slots = cache_slots(padded_len(prompts), most_new);
        let groups = prompts.len().div_ceil(cache_rows(&self.config, slots));
        let size = prompts.len().div_ceil(groups);
        let mut out = Vec::with_capacity(prompts.len());
        for first in (0..prompts.len()).step_by(size) {
            let end = (first + size).min(prompts.len());
            out.extend(
                self.generate_group(
                    &prompts[first..end],
                    first,
                    &limits[first..end],
                    opts,
                    &mut on_token,
                )
                .await?,
            );
        }
        Ok(out)
    }

    /// Generate for `prompts` in one batch, at most `limits[i]` new tokens for prompt i, which
    /// is prompt `first + i` of the caller's (its sampling stream and `on_token`'s index).
    async fn generate_group(
        &self,
        prompts: &[Vec<u32>],
        first: usize,
        limits: &[usize],
        opts: &GenerateOptions,
        on_token: &mut impl FnMut(usize, u32),
    ) -> Result<Vec<Generation>, EngineError> {
        let mut out: Vec<Generation> = prompts.iter().map(|p| Generation::empty(p)).collect();
        let mut rngs: Vec<_> = (0..prompts.len()).map(|i| opts.sampling.rng(first + i)).collect();
        let h = self.config.hidden_size;
        let (mut rows, mut pads) = left_pad(prompts, 0);
        // `active[r]`: index into `prompts` of batch row r, `None` once that sequence ended.
        // On a GPU every new batch size compiles and tunes its own shaders, so ended rows
        // ride along (their outputs ignored) until at most half the batch is live. The CPU
        // compiles nothing: there the batch sheds a row as soon as it ends, and a step's
        // products cost the live rows only.
        let sheds_each_row = is_cpu(&self.device);
        let shrink_at = |b: usize| if sheds_each_row { b - 1 } else { b / 2 };
        let mut active: Vec<Option<usize>> = (0..prompts.len()).map(Some).collect();
        let mut cache = KvCache::new(self.layers.len());
        loop {
            let hidden = if cache.is_empty() {
                self.prefill(&rows, &pads, &mut cache) // [B, T_last, H]
            } else {
                self.step(&rows, &pads, &mut cache) // [B, 1, H]
            };
            let (b, t) = (active.len(), hidden.dims()[1]);
            let last = hidden.narrow(1, t - 1, 1).reshape([b, h]); // [B, H]
            let choices = self.choose_next(last, &active, &opts.sampling, &mut rngs).await?;
            let mut next_rows = Vec::with_capacity(b);
            for (r, slot) in active.iter_mut().enumerate() {
                let (Some(i), Some((id, lp))) = (*slot, choices[r]) else {
                    next_rows.push(rows[r].clone());
                    continue;
                };
                let g = &mut out[i];
                g.output_ids.push(id);
                g.logprobs.push(lp);
                on_token(first + i, id);
                if opts.stop_ids.contains(&id) {
                    g.finish = FinishReason::Stop;
                    *slot = None;
                } else if g.output_ids.len() >= limits[i] {
                    *slot = None;
                }
                next_rows.push(vec![id]);
            }
            let live: Vec<usize> = (0..b).filter(|&r| active[r].is_some()).collect();
            if live.is_empty() {
                return Ok(out);
            }
            if live.len() <= shrink_at(b) {
                let idx: Vec<i64> = live.iter().map(|&r| r as i64).collect();
                cache.retain_rows(Tensor::<1, Int>::from_data(
                    TensorData::new(idx, [live.len()]),
                    &self.device,
                ));
                active = live.iter().map(|&r| active[r]).collect();
                pads = live.iter().map(|&r| pads[r]).collect();
                next_rows = live.iter().map(|&r| next_rows[r].clone()).collect();
            }
            rows = next_rows;
        }
    }

    /// (id, log-probability) of the next token of every live row of the batch (`None` for
    /// rows whose sequence ended) from the last positions' hidden states `[B, H]`: the logits
    /// `[n, V]` are made [`Self::logit_chunk_rows`] rows at a time and chosen on the device,
    /// reading back two numbers a row, unless top-k or top-p need the host's sort of the
    /// logits. Either way a sampled row takes one uniform draw from its sequence's stream.
    async fn choose_next(
        &self,
        last: Tensor<2>,
        active: &[Option<usize>],
        sampling: &SamplingParams,
        rngs: &mut [ChaCha8Rng],
    ) -> Result<Vec<Option<(u32, f32)>>, EngineError> {
        let [b, _] = last.dims();
        let (v, step) = (self.config.vocab_size, self.logit_chunk_rows());
        // (first row, rows) of each chunk
        let chunks: Vec<(usize, usize)> = (0..b).step_by(step).map(|s| (s, step.min(b - s))).collect();
        if sampling.truncates() {
            let mut choices = Vec::with_capacity(b);
            for &(start, n) in &chunks {
                let logits = self.logits(row_range(last.clone(), start, n)); // [n, V]
                let logits = read_f32_async(logits, "logits").await?;
                choices.extend(
                    logits
                        .chunks_exact(v)
                        .zip(&active[start..])
                        .map(|(row, slot)| slot.map(|i| sample(row, sampling, &mut rngs[i]))),
                );
            }
            return Ok(choices);
        }
        let draws: Vec<f32> = active
            .iter()
            .map(|slot| match slot {
                Some(i) if sampling.samples() => rngs[*i].random(),
                _ => 0.0,
            })
            .collect();
        let draws = Tensor::<1>::from_data(TensorData::new(draws, [b]), &self.device); // [B]
        let mut chosen: Vec<Tensor<2>> = chunks
            .iter()
            .map(|&(start, n)| {
                let logits = self.logits(row_range(last.clone(), start, n)); // [n, V]
                choose_tokens(logits, row_range(draws.clone(), start, n), sampling.temperature) // [n, 2]
            })
            .collect();
        // one chunk (the common case) is read as it is: a concatenation would copy it
        let chosen = if chosen.len() == 1 {
            chosen.swap_remove(0)
        } else {
            Tensor::cat(chosen, 0)
        }; // [B, 2]
        let chosen = read_f32_async(chosen, "tokens").await?;
        Ok(active
            .iter()
            .zip(chosen.chunks_exact(2))
            .map(|(slot, c)| slot.map(|_| (c[0] as u32, c[1])))
            .collect())
    }
}

impl Generation {
    /// `prompt` with nothing generated yet.
    fn empty(prompt: &[u32]) -> Self {
        Generation {
            prompt_ids: prompt.to_vec(),
            output_ids: vec![],
            logprobs: vec![],
            finish: FinishReason::Length,
        }
    }
}

/// Rows `start..start + n` of x (x itself when that is all of them).
fn row_range<const D: usize>(x: Tensor<D>, start: usize, n: usize) -> Tensor<D> {
    if start == 0 && n == x.dims()[0] {
        x
    } else {
        x.narrow(0, start, n)
    }
}

/// Every prompt must have a token to condition on.
fn check_prompts(prompts: &[Vec<u32>]) -> Result<(), EngineError> {
    match prompts.iter().position(Vec::is_empty) {
        Some(index) => Err(EngineError::EmptyPrompt { index }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use tinylora_formats::{Architecture, ModelConfig};

    use super::{cache_rows, cache_slots, prefill_slots};

    /// SmolLM2-135M's widths: 9 heads, F = 1536.
    fn smollm2() -> ModelConfig {
        ModelConfig {
            architecture: Architecture::Llama,
            hidden_size: 576,
            intermediate_size: 1536,
            num_hidden_layers: 30,
            num_attention_heads: 9,
            num_key_value_heads: 3,
            head_dim: 64,
            vocab_size: 49152,
            rope_theta: 100_000.0,
            rms_norm_eps: 1e-5,
            tie_word_embeddings: true,
            attention_bias: false,
            max_position_embeddings: 8192,
        }
    }

    #[test]
    fn prefill_chunks_keep_scores_and_activations_within_a_binding() {
        let c = smollm2();
        // 64 rows spanning 320 slots: scores take 4 · 64 · 9 · 320 = 737,280 bytes a slot,
        // 64 MiB / 737,280 = 91.02 → 91 slots, 80 as a multiple of 16
        assert_eq!(prefill_slots(&c, 64, 320, 512), 80);
        // one row: 5825 slots fit, the cap (512) holds
        assert_eq!(prefill_slots(&c, 1, 320, 512), 512);
        // short spans: the MLP's 1536 floats a token are the widest (9 · 64 = 576 < 1536):
        // 64 MiB / (4 · 2048 · 1536) = 5.33 → 5
        assert_eq!(prefill_slots(&c, 2048, 64, 512), 5);
        // fewer than a block stay as they are; never 0, even when one slot is past the bound;
        // a cap of 0 means 1
        assert_eq!(prefill_slots(&c, 1 << 20, 8192, 512), 1);
        assert_eq!(prefill_slots(&c, 1, 64, 0), 1);
        // sizes from a file that would overflow saturate instead
        assert_eq!(prefill_slots(&c, usize::MAX, usize::MAX, 512), 1);
    }

    #[test]
    fn generation_groups_keep_one_layers_cache_within_a_binding() {
        let c = smollm2();
        // 3 kv heads 64 wide over 704 slots: 4 · 3 · 64 · 704 = 540,672 bytes a row,
        // 64 MiB / 540,672 = 124.1 → 124 rows
        assert_eq!(cache_rows(&c, 704), 124);
        // Qwen2.5-0.5B (2 kv heads 64 wide) over 576 slots: 64 MiB / 294,912 = 227.6 → 227
        let qwen = ModelConfig {
            num_key_value_heads: 2,
            ..smollm2()
        };
        assert_eq!(cache_rows(&qwen, 576), 227);
        // never 0, even when one row is past the bound; 0 slots mean no bound; overflow saturates
        assert_eq!(cache_rows(&c, 1 << 20), 1);
        assert_eq!(cache_rows(&c, 0), 64 << 20);
        assert_eq!(cache_rows(&c, usize::MAX), 1);
    }

    #[test]
    fn the_cache_bound_counts_the_padded_prompt_and_every_decode_step() {
        // a 100-token prompt is prefilled as 112 slots (7 blocks of 16), then 27 decode steps
        // write one slot each for 28 new tokens: 139 slots, 3 blocks of 64
        assert_eq!(cache_slots(112, 28), 192);
        // 49 tokens → 64 slots, + 14 steps = 78 → 128
        assert_eq!(cache_slots(64, 15), 128);
        // one new token needs no decode step
        assert_eq!(cache_slots(64, 1), 64);
        assert_eq!(cache_slots(0, 0), 0);
        assert_eq!(cache_slots(usize::MAX, 2), usize::MAX);
    }
}
