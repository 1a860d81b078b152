//! The SFT baseline (SPEC.md §2's comparison): the same adapter trained on the gold solutions
//! with cross-entropy on the solution tokens only, same optimizer, logging and checkpoints.

use std::time::Instant;

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::data::Problem;
use crate::optim::learning_rate;
use crate::policy::{CompletionBatch, token_logprobs};
use crate::prompt::{PromptStyle, render_prompt};
use crate::trainer::{AdapterRun, StepMetrics, Trainer, step_problems};
use tinylora_engine::AdapterMode;

/// Everything that defines an SFT run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SftConfig {
    /// Problems per step.
    pub batch_size: usize,
    /// Optimizer steps.
    pub steps: usize,
    /// Peak learning rate.
    pub lr: f32,
    /// Linear warm-up steps.
    pub warmup: usize,
    /// Global gradient-norm clip (0: off).
    pub max_grad_norm: f32,
    /// How questions become prompts (the target continues the prompt).
    pub prompt: PromptStyle,
    /// Seed of the problem order.
    pub seed: u64,
}

/// An SFT run on one model with one attached adapter.
pub struct SftTrainer<'a> {
    /// Model, adapter, optimizer, files.
    pub run: AdapterRun<'a>,
    /// Run settings.
    pub config: SftConfig,
    /// Training problems (their `solution` is the target).
    pub problems: Vec<Problem>,
}

impl SftTrainer<'_> {
    /// The target text of a problem: its solution, after a space when the prompt ends in an
    /// answer prefix.
    fn target(&self, p: &Problem) -> String {
        if self.config.prompt.answer_prefix.is_empty() {
            p.solution.clone()
        } else {
            format!(" {}", p.solution)
        }
    }

    /// One step: mean cross-entropy of the solution tokens (and the end-of-sequence token),
    /// one AdamW update. In the metrics, `reward_mean` and `accuracy` hold the mean probability
    /// of the target tokens.
    pub fn step(&mut self) -> Result<StepMetrics, String> {
        let t0 = Instant::now();
        let cfg = self.config.clone();
        let step = self.run.state.step;
        let tok = &self.run.file.tokenizer;
        let problems = step_problems(&self.problems, cfg.batch_size, cfg.seed, step);
        let mut prompts = Vec::new();
        let mut targets = Vec::new();
        for p in &problems {
            prompts.push(tok.encode(&render_prompt(self.run.file, &p.question, &cfg.prompt)?)?);
            let mut t = tok
                .inner
                .encode(self.target(p), false)
                .map_err(|e| e.to_string())?
                .get_ids()
                .to_vec();
            t.extend(tok.eos_token.as_ref().map(|(id, _)| *id));
            targets.push(t);
        }
        let batch = CompletionBatch::new(&prompts, &targets);
        let mask = batch.tensor(batch.mask(), self.run.model).autodiff();
        // v as tensors that take gradients (uploaded before merging, so that a model not yet
        // merged is merged once), then training on the merged weights: v's gradient through
        // lowrank_update_merged
        let trainable = self.run.upload(true);
        self.run.model.set_adapter_mode(AdapterMode::Merged);
        let logp = token_logprobs(self.run.model, &batch, 1.0);
        let active = mask.clone().sum();
        let loss: Tensor<1> = -(logp.clone() * mask.clone()).sum() / active.clone();
        let prob = (logp.exp() * mask).sum() / active;
        let lr = learning_rate(cfg.lr, step, cfg.warmup);
        let grad_norm = self.run.descend(loss.clone(), &trainable, cfg.max_grad_norm, lr);
        self.run.state.step += 1;
        let mean_prob = prob.inner().into_scalar::<f32>();
        Ok(StepMetrics {
            step: self.run.state.step,
            reward_mean: mean_prob,
            reward_std: 0.0,
            accuracy: mean_prob,
            zero_variance_groups: 0.0,
            response_len: targets.iter().map(Vec::len).sum::<usize>() as f32 / targets.len() as f32,
            kl: 0.0,
            clipped: 0.0,
            grad_norm,
            loss: loss.inner().into_scalar::<f32>(),
            lr,
            values: self.run.applied_values(),
            rollout_s: 0.0,
            train_s: t0.elapsed().as_secs_f64(),
        })
    }
}

impl<'a> Trainer<'a> for SftTrainer<'a> {
    fn step(&mut self) -> Result<StepMetrics, String> {
        SftTrainer::step(self)
    }
    fn run(&mut self) -> &mut AdapterRun<'a> {
        &mut self.run
    }
}
