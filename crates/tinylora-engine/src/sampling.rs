//! Token sampling: greedy, temperature, top-k, top-p, with per-sequence seeded streams so that
//! a sequence's samples do not depend on what else is in the batch. Greedy and plain temperature
//! sampling run on the device (`tinylora_kernels::choose_tokens`, one uniform draw from the
//! sequence's stream a token); [`sample`] is the host's sampler, which top-k and top-p need.

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
    /// The stream of the batch's first sequence: sequence i draws from stream
    /// `first_stream + i`, so a batch split across processes draws what it would in one.
    pub first_stream: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
            first_stream: 0,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        Self::default()
    }
    /// Whether tokens are drawn (a positive temperature) rather than greedy (0, or NaN).
    pub fn samples(&self) -> bool {
        self.temperature > 0.0
    }
    /// Whether top-k or top-p cut the distribution (sampling only): the logits are then sorted
    /// on the host; otherwise the device chooses (`tinylora_kernels::choose_tokens`).
    pub fn truncates(&self) -> bool {
        self.samples() && (self.top_k > 0 || self.top_p < 1.0)
    }
    /// The random stream of sequence `index` of the batch.
    pub fn rng(&self, index: usize) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(self.first_stream + index as u64);
        rng
    }
}

/// ln Σ exp(x), the sum in f64: summed in f32 one term at a time, a vocabulary of 151,936
/// drifts by ~1e-5, which moves draws among near-equal tokens.
fn log_sum_exp(x: impl Iterator<Item = f32> + Clone) -> f32 {
    let m = x.clone().fold(f32::NEG_INFINITY, f32::max);
    m + x.map(|v| f64::from((v - m).exp())).sum::<f64>().ln() as f32
}

/// Pick a token from `logits` `[V]`; returns the id and its log-probability under the
/// distribution actually sampled from (after temperature, top-k and top-p; for greedy, the
/// model's own log-softmax).
pub fn sample(logits: &[f32], params: &SamplingParams, rng: &mut ChaCha8Rng) -> (u32, f32) {
    if !params.samples() {
        let (id, &best) = logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
            .expect("empty logits");
        return (id as u32, best - log_sum_exp(logits.iter().copied()));
    }
    let inv_t = 1.0 / params.temperature;
    let truncated = params.top_k > 0 || params.top_p < 1.0;
    let mut cand: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, l * inv_t))
        .collect();
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
    // the CDF in f64, as the device's sampler keeps it within 1e-6 of exact
    let (u, mut acc) = (f64::from(u), 0.0f64);
    for &(id, z) in &cand {
        acc += f64::from((z - lse).exp());
        if u < acc {
            return (id, z - lse);
        }
    }
    let &(id, z) = cand.last().expect("no candidates");
    (id, z - lse)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOGITS: [f32; 5] = [1.0, 3.0, 0.5, 2.5, -1.0];

    fn softmax(x: &[f32]) -> Vec<f64> {
        let z: f64 = x.iter().map(|&v| (v as f64).exp()).sum();
        x.iter().map(|&v| (v as f64).exp() / z).collect()
    }

    #[test]
    fn greedy_is_argmax_with_model_logprob() {
        let (id, lp) = sample(
            &LOGITS,
            &SamplingParams::greedy(),
            &mut SamplingParams::greedy().rng(0),
        );
        assert_eq!(id, 1);
        assert!((lp as f64 - softmax(&LOGITS)[1].ln()).abs() < 1e-6);
    }

    #[test]
    fn temperature_one_matches_softmax_frequencies() {
        let p = SamplingParams {
            temperature: 1.0,
            seed: 7,
            first_stream: 0,
            ..Default::default()
        };
        let mut rng = p.rng(3);
        let n = 40_000;
        let mut counts = [0usize; 5];
        for _ in 0..n {
            let (id, lp) = sample(&LOGITS, &p, &mut rng);
            counts[id as usize] += 1;
            assert!((lp as f64 - softmax(&LOGITS)[id as usize].ln()).abs() < 1e-5);
        }
        for (c, q) in counts.iter().zip(softmax(&LOGITS)) {
            let f = *c as f64 / n as f64;
            assert!(
                (f - q).abs() < 4.0 * (q * (1.0 - q) / n as f64).sqrt() + 1e-3,
                "freq {f} vs prob {q}"
            );
        }
    }

    #[test]
    fn top_k_and_top_p_truncate_and_renormalise() {
        let p = SamplingParams {
            temperature: 1.0,
            top_k: 2,
            seed: 1,
            first_stream: 0,
            ..Default::default()
        };
        let mut rng = p.rng(0);
        let s = softmax(&LOGITS);
        for _ in 0..200 {
            let (id, lp) = sample(&LOGITS, &p, &mut rng);
            assert!(id == 1 || id == 3);
            let renorm = s[id as usize] / (s[1] + s[3]);
            assert!((lp as f64 - renorm.ln()).abs() < 1e-5);
        }
        // top-p 0.5: token 1 alone has mass 0.51 > 0.5
        let p = SamplingParams {
            temperature: 1.0,
            top_p: 0.5,
            seed: 1,
            first_stream: 0,
            ..Default::default()
        };
        assert!(s[1] > 0.5);
        let mut rng = p.rng(0);
        for _ in 0..50 {
            assert_eq!(sample(&LOGITS, &p, &mut rng), (1, 0.0));
        }
    }

    #[test]
    fn streams_are_reproducible_and_independent() {
        let p = SamplingParams {
            temperature: 1.0,
            seed: 42,
            first_stream: 0,
            ..Default::default()
        };
        let draw = |stream| {
            let mut rng = p.rng(stream);
            (0..64)
                .map(|_| sample(&LOGITS, &p, &mut rng).0)
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(0), draw(0));
        assert_ne!(draw(0), draw(1));
    }
}
