//! One line of a run's `metrics.jsonl` per step.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What one training step measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// Step (1-based).
    pub step: usize,
    /// Mean (total) reward of the step's samples.
    pub reward_mean: f32,
    /// Std of the total rewards.
    pub reward_std: f32,
    /// Mean of each reward, unweighted, by name (`correct`, `format`, …).
    #[serde(default)]
    pub rewards: BTreeMap<String, f32>,
    /// Share of samples whose answer was right under the run's extraction mode.
    pub accuracy: f32,
    /// Share of groups whose rewards were all equal (no learning signal).
    pub zero_variance_groups: f32,
    /// Mean completion length in tokens.
    pub response_len: f32,
    /// Mean KL(π_θ‖π_base) estimate over completion tokens.
    pub kl: f32,
    /// Share of completion tokens where ratio clipping took effect.
    pub clipped: f32,
    /// Gradient norm before clipping (of the last update of the step).
    pub grad_norm: f32,
    /// The loss (mean over the step's updates).
    pub loss: f32,
    /// Learning rate used.
    pub lr: f32,
    /// The trainable values after the step (as applied: rounded to the adapter's precision).
    pub values: Vec<f32>,
    /// Seconds generating and scoring.
    pub rollout_s: f64,
    /// Seconds in the gradient passes and updates.
    pub train_s: f64,
}
