//! Token sampling on the host: greedy, temperature, top-k, top-p, with per-sequence seeded
//! streams so that a sequence's samples do not depend on what else is in the batch.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How to pick the next token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy (argmax); otherwise logits are divided by it.
    pub temperature: f32,
    /// Keep only the k most likely tokens (0: off).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose mass reaches p (1: off).
    pub top_p: f32,
    /// Seed of the random streams.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        Self::default()
    }
    /// The random stream of sequence `index`.
    pub fn rng(&self, index: usize) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(index as u64);
        rng
    }
}

fn log_sum_exp(x: impl Iterator<Item = f32> + Clone) -> f32 {
    let m = x.clone().fold(f32::NEG_INFINITY, f32::max);
    m + x.map(|v| (v - m).exp()).sum::<f32>().ln()
}

/// Pick a token from `logits` `[V]`; returns the id and its log-probability under the
/// distribution actually sampled from (after temperature, top-k and top-p; for greedy, the
/// model's own log-softmax).
pub fn sample(logits: &[f32], params: &SamplingParams, rng: &mut ChaCha8Rng) -> (u32, f32) {
    if params.temperature <= 0.0 {
        let (id, &best) = logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
            .expect("empty logits");
        return (id as u32, best - log_sum_exp(logits.iter().copied()));
    }
    let inv_t = 1.0 / params.temperature;
    let truncated = params.top_k > 0 || params.top_p < 1.0;
    let mut cand: Vec<(u32, f32)> = logits.iter().enumerate().map(|(i, &l)| (i as u32, l * inv_t)).collect();
    if truncated {
        if params.top_k > 0 && params.top_k < cand.len() {
            cand.select_nth_unstable_by(params.top_k - 1, |a, b| b.1.total_cmp(&a.1));
            cand.truncate(params.top_k);
        }
        cand.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if params.top_p < 1.0 {
            let lse = log_sum_exp(cand.iter().map(|c| c.1));
            let mut mass = 0.0;
            let keep = cand
                .iter()
                .position(|c| {
                    mass += (c.1 - lse).exp();
                    mass >= params.top_p
                })
                .map_or(cand.len(), |i| i + 1);
            cand.truncate(keep);
        }
    }
    let lse = log_sum_exp(cand.iter().map(|c| c.1));
    let u: f32 = rng.random();
    let mut acc = 0.0;
    for &(id, z) in &cand {
        acc += (z - lse).exp();
        if u < acc {
            return (id, z - lse);
        }
    }
    let &(id, z) = cand.last().expect("no candidates");
    (id, z - lse)
}
