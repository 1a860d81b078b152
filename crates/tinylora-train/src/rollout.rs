//! GRPO's first half (TRL's "generate and score"): G samples of every prompt of the step,
//! generated on the model as it is (merged weights), then scored by the rewards, with
//! group-relative advantages.

use tinylora_engine::{FinishReason, GenerateOptions, Generation, SamplingParams, Transformer};
use tinylora_formats::ModelFile;

use crate::collective::Collective;
use crate::data::Problem;
use crate::error::TrainError;
use crate::extract::{ExtractMode, is_correct};
use crate::grpo::{ScaleRewards, advantages, advantages_with_batch_std};
use crate::prompt::{PromptStyle, render_prompt};
use crate::reward::{Completion, Rewards, Scores};

/// What the rollouts of one step need to know.
#[derive(Debug, Clone)]
pub struct RolloutSettings<'a> {
    /// Samples per prompt G.
    pub group_size: usize,
    /// Most new tokens per sample.
    pub max_new_tokens: usize,
    /// Sampling temperature.
    pub temperature: f32,
    /// How questions become prompts.
    pub prompt: &'a PromptStyle,
    /// Seed of the sample streams (with the step).
    pub seed: u64,
}

/// G samples of each problem: `generations[p·G + i]` is sample i of problem p.
#[derive(Debug, Clone)]
pub struct Rollouts {
    /// The step's problems.
    pub problems: Vec<Problem>,
    /// Each problem's prompt text.
    pub prompts: Vec<String>,
    /// The samples, G per problem, in problem order.
    pub generations: Vec<Generation>,
    /// Each sample's text.
    pub texts: Vec<String>,
}

/// Sample G completions of each of `problems` at step `step` (0-based), the first of them
/// the step's problem number `first` (0 unless the step's problems are split across
/// processes), awaiting the device. Every sample's stream is seeded by (seed, step) and its
/// index in the step's whole batch, so a resumed run, or the same batch split across
/// processes, draws the same.
pub async fn generate(
    model: &Transformer,
    file: &ModelFile,
    problems: Vec<Problem>,
    s: &RolloutSettings<'_>,
    step: usize,
    first: usize,
) -> Result<Rollouts, TrainError> {
    let tok = &file.tokenizer;
    let prompts = problems
        .iter()
        .map(|p| render_prompt(file, &p.question, s.prompt))
        .collect::<Result<Vec<_>, _>>()?;
    let ids = prompts
        .iter()
        .map(|p| tok.encode(p))
        .collect::<Result<Vec<_>, _>>()?;
    let repeated: Vec<Vec<u32>> = ids
        .iter()
        .flat_map(|p| std::iter::repeat_n(p.clone(), s.group_size))
        .collect();
    let opts = GenerateOptions {
        max_new_tokens: s.max_new_tokens,
        sampling: SamplingParams {
            temperature: s.temperature,
            top_k: 0,
            top_p: 1.0,
            seed: s.seed.wrapping_mul(1_000_003).wrapping_add(step as u64),
            first_stream: (first * s.group_size) as u64,
        },
        stop_ids: tok.stop_ids.clone(),
    };
    let generations = model.generate_async(&repeated, &opts, |_, _| {}).await?;
    let texts = generations
        .iter()
        .map(|g| tok.decode(&g.output_ids))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Rollouts {
        problems,
        prompts,
        generations,
        texts,
    })
}

/// Rollouts with their rewards and advantages.
#[derive(Debug, Clone)]
pub struct Scored {
    /// The total reward of each sample and its components.
    pub scores: Scores,
    /// Aᵢ of each sample.
    pub advantages: Vec<f32>,
    /// Whether each sample's answer is right under the run's extraction mode.
    pub correct: Vec<bool>,
}

/// Score `r` with `rewards` and compute the advantages (groups of `group_size`); with
/// [`ScaleRewards::Batch`] the batch is every process's share of it (`c`).
pub fn score(
    r: &Rollouts,
    rewards: &mut Rewards,
    group_size: usize,
    scale: ScaleRewards,
    extract: ExtractMode,
    c: &dyn Collective,
) -> Result<Scored, crate::reward::RewardError> {
    let batch: Vec<Completion<'_>> = r
        .generations
        .iter()
        .zip(&r.texts)
        .enumerate()
        .map(|(i, (g, text))| Completion {
            prompt: &r.prompts[i / group_size],
            completion: text,
            answer: &r.problems[i / group_size].gold,
            tokens: g.output_ids.len(),
            truncated: g.finish == FinishReason::Length,
        })
        .collect();
    let scores = rewards.score(&batch)?;
    let advantages = if scale == ScaleRewards::Batch && c.size() > 1 {
        let std = batch_std(&scores.total, c);
        advantages_with_batch_std(&scores.total, group_size, scale, std)
    } else {
        advantages(&scores.total, group_size, scale)
    };
    let correct = batch
        .iter()
        .map(|c| is_correct(c.completion, c.answer, extract))
        .collect();
    Ok(Scored {
        scores,
        advantages,
        correct,
    })
}

/// The sample std (Bessel's correction) of the rewards of all processes together, in two passes
/// as for one process.
fn batch_std(rewards: &[f32], c: &dyn Collective) -> f32 {
    let mut sums = [rewards.len() as f64, rewards.iter().map(|&r| f64::from(r)).sum()];
    c.sum(&mut sums);
    let mean = sums[1] / sums[0];
    let mut squares = [rewards
        .iter()
        .map(|&r| (f64::from(r) - mean).powi(2))
        .sum::<f64>()];
    c.sum(&mut squares);
    if sums[0] > 1.0 {
        (squares[0] / (sums[0] - 1.0)).sqrt() as f32
    } else {
        0.0
    }
}
