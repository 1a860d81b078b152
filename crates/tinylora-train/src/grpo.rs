//! GRPO (SPEC.md §2): group-relative advantages and the clipped policy-gradient loss with an
//! optional KL penalty against the base model, in three aggregations, with token-level
//! (GRPO) or sequence-level (GSPO) importance ratios. Option names follow TRL's.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};
use tinylora_formats::{UnknownName, parse_name};

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
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        let table = [
            ("grpo", Aggregation::Grpo),
            ("dr_grpo", Aggregation::DrGrpo),
            ("dr-grpo", Aggregation::DrGrpo),
            ("dapo", Aggregation::Dapo),
        ];
        parse_name("loss aggregation", "grpo, dr_grpo, dapo", &table, s)
    }
}

/// What the advantages are divided by (TRL's `scale_rewards`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleRewards {
    /// The std of the prompt's group (GRPO).
    Group,
    /// The std of the whole batch's rewards.
    Batch,
    /// Nothing (Dr. GRPO).
    None,
}

impl std::str::FromStr for ScaleRewards {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        let table = [
            ("group", ScaleRewards::Group),
            ("batch", ScaleRewards::Batch),
            ("none", ScaleRewards::None),
        ];
        parse_name("reward scaling", "group, batch, none", &table, s)
    }
}

/// Whether the importance ratio is per token (GRPO) or per sequence (GSPO).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportanceSampling {
    /// ρ_t = π(y_t)/π_old(y_t).
    #[default]
    Token,
    /// ρ = exp(mean_t log(π(y_t)/π_old(y_t))), one ratio for the whole completion (GSPO).
    Sequence,
}

impl std::str::FromStr for ImportanceSampling {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        let table = [
            ("token", ImportanceSampling::Token),
            ("sequence", ImportanceSampling::Sequence),
        ];
        parse_name("importance sampling level", "token, sequence", &table, s)
    }
}

/// The sizes of the whole batch of rollouts, when the loss is computed on the sequences
/// that can change it only (a sequence with A = 0 and no KL term adds nothing): the loss and
/// the shares are then normalised over the whole batch, as TRL does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchSize {
    /// Sequences B of the whole batch (masked ones included, as in TRL's mean over B).
    pub sequences: usize,
    /// Active (unmasked) completion tokens of the whole batch.
    pub tokens: f32,
}

/// Mean and sample std (Bessel's correction, as torch's `std` and TRL compute it; 0 for one
/// value).
fn mean_std(x: &[f32]) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = if x.len() > 1 {
        x.iter().map(|r| (r - mean).powi(2)).sum::<f32>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// Advantages of `rewards` laid out as consecutive groups of `group` samples of one prompt:
/// Aᵢ = rᵢ − mean(group), divided by (std + 1e-4) of the group or of the whole batch as
/// `scale` says. A group whose rewards are all equal gets zeros.
pub fn advantages(rewards: &[f32], group: usize, scale: ScaleRewards) -> Vec<f32> {
    advantages_with_batch_std(rewards, group, scale, mean_std(rewards).1)
}

/// [`advantages`] with the batch's std given (the whole batch's, when `rewards` are one
/// process's share of it).
pub fn advantages_with_batch_std(
    rewards: &[f32],
    group: usize,
    scale: ScaleRewards,
    batch_std: f32,
) -> Vec<f32> {
    assert!(
        group > 0 && rewards.len().is_multiple_of(group),
        "{} rewards in groups of {group}",
        rewards.len()
    );
    rewards
        .chunks(group)
        .flat_map(|g| {
            // all equal: exactly zero (a float mean of equal non-dyadic rewards may not be)
            let flat = g.iter().all(|&r| r == g[0]);
            let (mean, std) = mean_std(g);
            let denom = match scale {
                ScaleRewards::Group => std + 1e-4,
                ScaleRewards::Batch => batch_std + 1e-4,
                ScaleRewards::None => 1.0,
            };
            g.iter().map(move |r| if flat { 0.0 } else { (r - mean) / denom })
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
    /// Token-level (GRPO) or sequence-level (GSPO) ratios.
    #[serde(default)]
    pub importance_sampling: ImportanceSampling,
}

impl Default for LossConfig {
    /// TRL's defaults (and the CLI's): ε_low 0.2, ε_high 0.28, no KL term, GRPO's
    /// aggregation, token-level ratios.
    fn default() -> Self {
        LossConfig {
            eps_low: 0.2,
            eps_high: 0.28,
            beta: 0.0,
            aggregation: Aggregation::Grpo,
            importance_sampling: ImportanceSampling::Token,
        }
    }
}

/// The batch loss and what it is made of.
#[derive(Debug, Clone)]
pub struct LossParts {
    /// The scalar loss (differentiable through `logp`).
    pub loss: Tensor<1>,
    /// Mean KL estimate over active tokens (0 without a reference).
    pub kl: Tensor<1>,
    /// Share where clipping took effect (TRL's `clip_ratio/region_mean`: ρ < 1 − ε_low with
    /// A < 0, or ρ > 1 + ε_high with A > 0): of the active tokens with token-level ratios, of
    /// the sequences with sequence-level ones.
    pub clipped: Tensor<1>,
}

/// The GRPO loss. `logp`, `old_logp`, `ref_logp`, `mask`: `[B, T]` (log-probabilities of each
/// completion token under the current, rollout and reference policies; mask 1 on completion
/// tokens); `adv`: `[B]`; `max_len`: the Dr. GRPO normaliser (max new tokens); `whole`: the
/// whole batch's sizes when these B sequences are only part of it (else these B's own).
///
/// Per token: −min(ρA, clip(ρ, 1−ε_low, 1+ε_high)A) + β (exp(ref−logp) − (ref−logp) − 1),
/// with ρ = exp(logp − old_logp) per token, or with GSPO's sequence-level
/// ρ = exp(Σ_t mask (logp − old_logp) / Σ_t mask) for every token of a completion.
#[allow(clippy::too_many_arguments)]
pub fn grpo_loss(
    logp: Tensor<2>,
    old_logp: Tensor<2>,
    ref_logp: Option<Tensor<2>>,
    adv: Tensor<1>,
    mask: Tensor<2>,
    cfg: &LossConfig,
    max_len: usize,
    whole: Option<BatchSize>,
) -> LossParts {
    let [b, t] = logp.dims();
    let adv = adv.reshape([b, 1]);
    let log_ratio = logp.clone() - old_logp; // [B, T]
    let log_ratio = match cfg.importance_sampling {
        ImportanceSampling::Token => log_ratio,
        // [B, 1], broadcast over the completion's tokens
        ImportanceSampling::Sequence => {
            let per_seq = (log_ratio * mask.clone()).sum_dim(1) / mask.clone().sum_dim(1).clamp_min(1.0); // [B, 1]
            per_seq.expand([b, t])
        }
    };
    let ratio = log_ratio.exp();
    let unclipped = ratio.clone() * adv.clone();
    let bounded = ratio.clone().clamp(1.0 - cfg.eps_low, 1.0 + cfg.eps_high);
    let low = ratio.clone().lower_elem(1.0 - cfg.eps_low).float() * adv.clone().lower_elem(0.0).float();
    let high = ratio.clone().greater_elem(1.0 + cfg.eps_high).float() * adv.clone().greater_elem(0.0).float();
    let clipped_flag = (low + high) * mask.clone(); // [B, T]
    let mut per_token = -unclipped.min_pair(bounded * adv);
    let (sequences, active) = match whole {
        Some(w) => (
            w.sequences as f32,
            Tensor::<1>::from_floats([w.tokens.max(1.0)], &mask.device()),
        ),
        None => (b as f32, mask.clone().sum().clamp_min(1.0)),
    };
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
        Aggregation::Grpo => (masked.sum_dim(1) / mask.clone().sum_dim(1).clamp_min(1.0)).sum() / sequences,
        Aggregation::Dapo => masked.sum() / active.clone(),
        Aggregation::DrGrpo => masked.sum() / (sequences * max_len as f32),
    };
    let clipped = match cfg.importance_sampling {
        ImportanceSampling::Token => clipped_flag.sum() / active,
        // one flag per sequence (its ratio, and so its flag, is the same at every active
        // token): TRL's mean over the [B, 1] flags
        ImportanceSampling::Sequence => clipped_flag.sum_dim(1).clamp_max(1.0).sum() / sequences,
    };
    LossParts { loss, kl, clipped }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    use tinylora_engine::default_device;

    #[test]
    fn advantages_by_hand() {
        // group [1, 0, 0, 1]: mean 0.5, sample std √(4·0.25/3) = 0.57735
        let a = advantages(&[1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0], 4, ScaleRewards::Group);
        let s = 0.5 / (0.577_350_3 + 1e-4);
        for (x, y) in a.iter().zip([s, -s, -s, s, 0.0, 0.0, 0.0, 0.0]) {
            assert!((x - y).abs() < 1e-5, "{a:?}");
        }
        assert_eq!(
            advantages(&[1.0, 0.0, 0.0, 0.0], 4, ScaleRewards::None),
            [0.75, -0.25, -0.25, -0.25]
        );
        assert_eq!(
            advantages(&[0.0; 3], 3, ScaleRewards::Group),
            [0.0; 3],
            "zero-variance group"
        );
        // batch scaling: rewards [1, 0 | 1, 1], batch mean 0.75, sample std √(0.75/3) = 0.5
        let b = advantages(&[1.0, 0.0, 1.0, 1.0], 2, ScaleRewards::Batch);
        let d = 0.5 + 1e-4;
        for (x, y) in b.iter().zip([0.5 / d, -0.5 / d, 0.0, 0.0]) {
            assert!((x - y).abs() < 1e-6, "{b:?}");
        }
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
            importance_sampling: ImportanceSampling::Token,
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
                None,
            );
            let got = value(parts.loss);
            assert!((got - want).abs() < 1e-5, "{agg:?}: {got} vs {want}");
            // clipping takes effect on 1.5 (above 1.28, A > 0) and 0.7 (below 0.8, A < 0), not
            // on 0.5 (below 0.8, but A > 0: min picks the unclipped term) of 5 active tokens
            assert!((value(parts.clipped) - 2.0 / 5.0).abs() < 1e-6);
        }
    }

    /// The loss of the sequences that matter, normalised over the whole batch, equals the loss
    /// of the whole batch: a third sequence with A = 0 adds nothing but counts in the
    /// normalisers, for every aggregation.
    #[test]
    fn a_part_of_the_batch_with_the_whole_batch_sizes_gives_the_whole_batch_loss() {
        let ln = f32::ln;
        let t3 = |v: [[f32; 3]; 3]| Tensor::<2>::from_data(TensorData::from(v), &default_device());
        let logp = t3([
            [ln(1.5), ln(0.5), 0.0],
            [ln(1.1), ln(0.7), 0.0],
            [ln(0.9), 0.0, 0.0],
        ]);
        let mask = t3([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]);
        let adv = Tensor::<1>::from_data(TensorData::from([1.0f32, -2.0, 0.0]), &default_device());
        let zeros = t3([[0.0; 3]; 3]);
        for aggregation in [Aggregation::Grpo, Aggregation::Dapo, Aggregation::DrGrpo] {
            let cfg = LossConfig {
                eps_low: 0.2,
                eps_high: 0.28,
                beta: 0.0,
                aggregation,
                importance_sampling: ImportanceSampling::Token,
            };
            let all = grpo_loss(
                logp.clone(),
                zeros.clone(),
                None,
                adv.clone(),
                mask.clone(),
                &cfg,
                4,
                None,
            );
            let two = |t: Tensor<2>| t.narrow(0, 0, 2);
            let whole = BatchSize {
                sequences: 3,
                tokens: 6.0,
            };
            let part = grpo_loss(
                two(logp.clone()),
                two(zeros.clone()),
                None,
                adv.clone().narrow(0, 0, 2),
                two(mask.clone()),
                &cfg,
                4,
                Some(whole),
            );
            let (a, p) = (value(all.loss), value(part.loss));
            assert!((a - p).abs() < 1e-6, "{aggregation:?}: whole {a} vs part {p}");
            assert!((value(all.clipped) - value(part.clipped)).abs() < 1e-6);
        }
    }

    /// GSPO: one ratio per sequence, the exp of the mean token log-ratio over its active tokens.
    #[test]
    fn sequence_level_ratio_by_hand() {
        let ln = f32::ln;
        // seq 0: token ratios [1.5, 0.5, 1.0] → ρ = (1.5 · 0.5 · 1.0)^(1/3) = 0.75^(1/3) = 0.90856
        // seq 1: token ratios [1.1, 0.7, (masked 9.0)] → ρ = (1.1 · 0.7)^(1/2) = 0.77^(1/2) = 0.87750
        let logp = t2([[ln(1.5), ln(0.5), 0.0], [ln(1.1), ln(0.7), ln(9.0)]]);
        let old = t2([[0.0; 3], [0.0; 3]]);
        let mask = t2([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]);
        let adv = Tensor::<1>::from_data(TensorData::from([1.0f32, -2.0]), &default_device());
        let cfg = LossConfig {
            eps_low: 0.1,
            eps_high: 0.1,
            beta: 0.0,
            aggregation: Aggregation::Dapo,
            importance_sampling: ImportanceSampling::Sequence,
        };
        let (r0, r1) = (0.75f64.powf(1.0 / 3.0), 0.77f64.sqrt());
        // seq 0, A = 1: min(ρ, clip(ρ, 0.9, 1.1)) = min(0.90856, 0.90856) = ρ (inside the band)
        // seq 1, A = −2: min(−2ρ, −2 clip(ρ)) = min(−1.7550, −1.8) = −1.8 (clipped from below)
        let per0 = -r0;
        let per1 = 2.0 * 0.9;
        let want = (3.0 * per0 + 2.0 * per1) / 5.0;
        let parts = grpo_loss(logp, old, None, adv, mask, &cfg, 3, None);
        let got = value(parts.loss) as f64;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        assert!(r1 < 0.9, "seq 1's ratio is below the band");
        // clipping takes effect on seq 1 (ρ < 0.9, A < 0): 1 of 2 sequences
        assert!((value(parts.clipped) - 0.5).abs() < 1e-6);
    }

    /// A step's passes (some of its sequences each, each pass's window starting where its own
    /// longest completion does, as `CompletionBatch` lays them out) add up to the whole batch:
    /// loss, KL and clipped share, for every aggregation, ratio level and with the KL term.
    #[test]
    fn passes_add_up_to_the_whole_batch() {
        let dev = default_device();
        // 4 completions of 4, 2, 3 and 1 tokens, right-aligned in a window of 5 (the last
        // column is filler)
        let lens = [4usize, 2, 3, 1];
        let (b, w) = (4, 5);
        let mask: Vec<f32> = lens
            .iter()
            .flat_map(|&n| (0..w).map(move |t| f32::from(u8::from(t + 1 + n >= w && t + 1 < w))))
            .collect();
        let wave = |k: usize, a: f32, f: f32| {
            (0..b * w)
                .map(|i| a * ((i + k) as f32 * f).sin())
                .collect::<Vec<f32>>()
        };
        let (logp, old, reference) = (wave(0, 0.3, 1.3), wave(3, 0.3, 0.7), wave(5, 0.2, 2.1));
        let adv = [1.0f32, -0.5, 0.8, -1.2];
        let whole = BatchSize {
            sequences: b,
            tokens: mask.iter().sum(),
        };
        // rows [r0, r1) with the window's first `skip` columns dropped
        let part = |v: &[f32], rows: std::ops::Range<usize>, skip: usize| {
            let data: Vec<f32> = rows
                .clone()
                .flat_map(|r| v[r * w + skip..(r + 1) * w].to_vec())
                .collect();
            Tensor::<2>::from_data(TensorData::new(data, [rows.len(), w - skip]), &dev)
        };
        for aggregation in [Aggregation::Grpo, Aggregation::DrGrpo, Aggregation::Dapo] {
            for importance_sampling in [ImportanceSampling::Token, ImportanceSampling::Sequence] {
                for beta in [0.0, 0.1] {
                    let cfg = LossConfig {
                        eps_low: 0.1,
                        eps_high: 0.1,
                        beta,
                        aggregation,
                        importance_sampling,
                    };
                    let run = |rows: std::ops::Range<usize>, skip: usize| {
                        let a = Tensor::<1>::from_data(TensorData::from(&adv[rows.clone()]), &dev);
                        let p = grpo_loss(
                            part(&logp, rows.clone(), skip),
                            part(&old, rows.clone(), skip),
                            Some(part(&reference, rows.clone(), skip)),
                            a,
                            part(&mask, rows, skip),
                            &cfg,
                            4,
                            Some(whole),
                        );
                        [value(p.loss), value(p.kl), value(p.clipped)]
                    };
                    let all = run(0..4, 0);
                    // passes {0, 1} (window from column 0) and {2, 3} (their longest has 3
                    // tokens: window from column 1)
                    let (p1, p2) = (run(0..2, 0), run(2..4, 1));
                    for k in 0..3 {
                        assert!(
                            (p1[k] + p2[k] - all[k]).abs() < 1e-6,
                            "{aggregation:?} {importance_sampling:?} β = {beta}: term {k}: {} + {} vs {}",
                            p1[k],
                            p2[k],
                            all[k]
                        );
                    }
                    if importance_sampling == ImportanceSampling::Sequence {
                        assert!(all[2] > 0.0, "some sequence is clipped");
                    }
                }
            }
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
            importance_sampling: ImportanceSampling::Token,
        };
        // d = ref − logp = [−0.5, 1.0]: k3 = e^d − d − 1
        let k3 = |d: f32| d.exp() - d - 1.0;
        let kl = (k3(-0.5) + k3(1.0)) / 2.0;
        let parts = grpo_loss(logp.clone(), logp, Some(reference), adv, mask, &cfg, 3, None);
        assert!((value(parts.kl) - kl).abs() < 1e-5);
        assert!(
            (value(parts.loss) - 0.1 * kl).abs() < 1e-5,
            "A = 0: only the KL term remains"
        );
    }
}
