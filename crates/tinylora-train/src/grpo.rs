//! GRPO (SPEC.md §2): group-relative advantages and the clipped policy-gradient loss with an
//! optional KL penalty against the base model, in three aggregations.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// How per-token losses are averaged into the batch loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// Mean over each sequence's tokens, then mean over sequences.
    Grpo,
    /// Sum over all tokens / (sequences × max new tokens) (Dr. GRPO).
    DrGrpo,
    /// Sum over all tokens / number of active tokens (DAPO).
    Dapo,
}

impl std::str::FromStr for Aggregation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "grpo" => Ok(Aggregation::Grpo),
            "dr_grpo" | "dr-grpo" => Ok(Aggregation::DrGrpo),
            "dapo" => Ok(Aggregation::Dapo),
            _ => Err(format!("unknown loss aggregation `{s}` (grpo, dr_grpo, dapo)")),
        }
    }
}

/// Advantages of `rewards` laid out as consecutive groups of `group` samples of one prompt:
/// Aᵢ = rᵢ − mean(r), divided by (std(r) + 1e-4) when `scale` (std with Bessel's correction,
/// as TRL computes it). A group whose rewards are all equal gets zeros.
pub fn advantages(rewards: &[f32], group: usize, scale: bool) -> Vec<f32> {
    assert!(
        group > 0 && rewards.len().is_multiple_of(group),
        "{} rewards in groups of {group}",
        rewards.len()
    );
    rewards
        .chunks(group)
        .flat_map(|g| {
            let n = g.len() as f32;
            let mean = g.iter().sum::<f32>() / n;
            let var = if g.len() > 1 {
                g.iter().map(|r| (r - mean).powi(2)).sum::<f32>() / (n - 1.0)
            } else {
                0.0
            };
            let denom = if scale { var.sqrt() + 1e-4 } else { 1.0 };
            g.iter().map(move |r| (r - mean) / denom)
        })
        .collect()
}

/// Loss hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossConfig {
    /// Lower clip: ρ ≥ 1 − ε_low.
    pub eps_low: f32,
    /// Upper clip: ρ ≤ 1 + ε_high.
    pub eps_high: f32,
    /// KL weight β (0: no reference pass).
    pub beta: f32,
    /// Aggregation.
    pub aggregation: Aggregation,
}

/// The batch loss and what it is made of.
#[derive(Debug, Clone)]
pub struct LossParts {
    /// The scalar loss (differentiable through `logp`).
    pub loss: Tensor<1>,
    /// Mean KL estimate over active tokens (0 without a reference).
    pub kl: Tensor<1>,
    /// Share of active tokens whose ratio was clipped.
    pub clipped: Tensor<1>,
}

/// The GRPO loss. `logp`, `old_logp`, `ref_logp`, `mask`: `[B, T]` (log-probabilities of each
/// completion token under the current, rollout and reference policies; mask 1 on completion
/// tokens); `adv`: `[B]`; `max_len`: the Dr. GRPO normaliser (max new tokens).
///
/// Per token: −min(ρA, clip(ρ, 1−ε_low, 1+ε_high)A) + β (exp(ref−logp) − (ref−logp) − 1),
/// ρ = exp(logp − old_logp).
pub fn grpo_loss(
    logp: Tensor<2>,
    old_logp: Tensor<2>,
    ref_logp: Option<Tensor<2>>,
    adv: Tensor<1>,
    mask: Tensor<2>,
    cfg: &LossConfig,
    max_len: usize,
) -> LossParts {
    let [b, _] = logp.dims();
    let adv = adv.reshape([b, 1]);
    let ratio = (logp.clone() - old_logp).exp();
    let unclipped = ratio.clone() * adv.clone();
    let bounded = ratio.clone().clamp(1.0 - cfg.eps_low, 1.0 + cfg.eps_high);
    let clipped_flag = ratio.clone().not_equal(bounded.clone()).float() * mask.clone();
    let mut per_token = -unclipped.min_pair(bounded * adv);
    let active = mask.clone().sum().clamp_min(1.0);
    let kl = match ref_logp {
        Some(r) if cfg.beta != 0.0 => {
            let d = r - logp;
            let kl = d.clone().exp() - d - 1.0;
            per_token = per_token + kl.clone() * cfg.beta;
            (kl * mask.clone()).sum() / active.clone()
        }
        _ => Tensor::zeros([1], &mask.device()),
    };
    let masked = per_token * mask.clone();
    let loss = match cfg.aggregation {
        Aggregation::Grpo => (masked.sum_dim(1) / mask.sum_dim(1).clamp_min(1.0)).mean(),
        Aggregation::Dapo => masked.sum() / active.clone(),
        Aggregation::DrGrpo => masked.sum() / (b * max_len) as f32,
    };
    LossParts {
        loss,
        kl,
        clipped: clipped_flag.sum() / active,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    use tinylora_engine::default_device;

    #[test]
    fn advantages_by_hand() {
        // group [1, 0, 0, 1]: mean 0.5, sample std √(4·0.25/3) = 0.57735
        let a = advantages(&[1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0], 4, true);
        let s = 0.5 / (0.577_350_3 + 1e-4);
        for (x, y) in a.iter().zip([s, -s, -s, s, 0.0, 0.0, 0.0, 0.0]) {
            assert!((x - y).abs() < 1e-5, "{a:?}");
        }
        assert_eq!(
            advantages(&[1.0, 0.0, 0.0, 0.0], 4, false),
            [0.75, -0.25, -0.25, -0.25]
        );
        assert_eq!(advantages(&[0.0; 3], 3, true), [0.0; 3], "zero-variance group");
    }

    fn t2(v: [[f32; 3]; 2]) -> Tensor<2> {
        Tensor::from_data(TensorData::from(v), &default_device())
    }

    fn value(t: Tensor<1>) -> f32 {
        t.into_scalar()
    }

    /// Two sequences of at most 3 tokens; the second has 2 active tokens.
    #[test]
    fn loss_by_hand_for_each_aggregation_with_clipping_on_both_sides() {
        let ln = f32::ln;
        // ratios: seq 0 = [1.5, 0.5, 1.0], seq 1 = [1.1, 0.7, (masked)]
        let logp = t2([[ln(1.5), ln(0.5), 0.0], [ln(1.1), ln(0.7), 0.0]]);
        let old = t2([[0.0; 3], [0.0; 3]]);
        let mask = t2([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]);
        let adv = Tensor::<1>::from_data(TensorData::from([1.0f32, -2.0]), &default_device());
        let cfg = |aggregation| LossConfig {
            eps_low: 0.2,
            eps_high: 0.28,
            beta: 0.0,
            aggregation,
        };
        // seq 0, A = 1: min(ρ, clip(ρ)) = [min(1.5, 1.28), min(0.5, 0.8), 1.0] = [1.28, 0.5, 1.0]
        // seq 1, A = −2: min(−2ρ, −2 clip(ρ)) = [min(−2.2, −2.2), min(−1.4, −1.6)] = [−2.2, −1.6]
        let per0 = [-1.28f32, -0.5, -1.0];
        let per1 = [2.2f32, 1.6];
        let grpo = (per0.iter().sum::<f32>() / 3.0 + per1.iter().sum::<f32>() / 2.0) / 2.0;
        let total = per0.iter().sum::<f32>() + per1.iter().sum::<f32>();
        for (agg, want) in [
            (Aggregation::Grpo, grpo),
            (Aggregation::Dapo, total / 5.0),
            (Aggregation::DrGrpo, total / (2.0 * 4.0)),
        ] {
            let parts = grpo_loss(
                logp.clone(),
                old.clone(),
                None,
                adv.clone(),
                mask.clone(),
                &cfg(agg),
                4,
            );
            let got = value(parts.loss);
            assert!((got - want).abs() < 1e-5, "{agg:?}: {got} vs {want}");
            // clipped: 1.5 (high), 0.5 (low), 0.7 (low) of 5 active tokens
            assert!((value(parts.clipped) - 3.0 / 5.0).abs() < 1e-6);
        }
    }

    #[test]
    fn kl_penalty_uses_the_k3_estimator() {
        let logp = t2([[-1.0, -2.0, 0.0], [-0.5, -0.5, -0.5]]);
        let reference = t2([[-1.5, -1.0, 0.0], [-0.5, -0.5, -0.5]]);
        let mask = t2([[1.0, 1.0, 0.0], [0.0; 3]]);
        let adv = Tensor::<1>::zeros([2], &default_device());
        let cfg = LossConfig {
            eps_low: 0.2,
            eps_high: 0.2,
            beta: 0.1,
            aggregation: Aggregation::Dapo,
        };
        // d = ref − logp = [−0.5, 1.0]: k3 = e^d − d − 1
        let k3 = |d: f32| d.exp() - d - 1.0;
        let kl = (k3(-0.5) + k3(1.0)) / 2.0;
        let parts = grpo_loss(logp.clone(), logp, Some(reference), adv, mask, &cfg, 3);
        assert!((value(parts.kl) - kl).abs() < 1e-5);
        assert!(
            (value(parts.loss) - 0.1 * kl).abs() < 1e-5,
            "A = 0: only the KL term remains"
        );
    }
}
