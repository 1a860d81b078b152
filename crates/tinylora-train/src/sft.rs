//! The SFT baseline (SPEC.md §2's comparison): the same adapter trained on the gold solutions
//! with cross-entropy on the solution tokens only, same optimizer, logging and checkpoints.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};
use tinylora_engine::{DeltaMode, read_f32};
use web_time::Instant;

use crate::collective::{shard, sum_f32};
use crate::data::Problem;
use crate::error::TrainError;
use crate::metrics::StepMetrics;
use crate::optim::learning_rate;
use crate::policy::{CompletionBatch, passes, token_logprobs};
use crate::prompt::{PromptStyle, render_prompt};
use crate::run::{AdapterRun, TrainingMethod, check_number, step_problems};

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
    /// AdamW decoupled weight decay.
    #[serde(default)]
    pub weight_decay: f32,
    /// Most sequences per teacher-forced pass (the gradients of a step's passes add up);
    /// 0: as many as keep attention's scores and the MLP's activations within 64 MiB each and
    /// the activations of all layers together within 2 GiB ([`crate::policy::pass_rows`]).
    #[serde(default)]
    pub micro_batch: usize,
    /// How questions become prompts (the target continues the prompt).
    pub prompt: PromptStyle,
    /// Seed of the problem order.
    pub seed: u64,
}

/// An SFT run's method: its settings.
pub struct SftTrainer {
    /// Run settings.
    pub config: SftConfig,
}

impl SftTrainer {
    /// The target text of a problem: its solution, after a space when the prompt ends in an
    /// answer prefix.
    fn target(&self, p: &Problem) -> String {
        if self.config.prompt.answer_prefix.is_empty() {
            p.solution.clone()
        } else {
            format!(" {}", p.solution)
        }
    }
}

impl TrainingMethod for SftTrainer {
    fn name(&self) -> &'static str {
        "SFT"
    }

    fn config(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).expect("the configuration serialises")
    }

    fn steps(&self) -> usize {
        self.config.steps
    }

    fn weight_decay(&self) -> f32 {
        self.config.weight_decay
    }

    fn validate(&self) -> Result<(), TrainError> {
        if self.config.batch_size == 0 {
            return Err(TrainError::Invalid("batch_size must be at least 1".into()));
        }
        check_number("lr", self.config.lr, false)?;
        check_number("max_grad_norm", self.config.max_grad_norm, false)?;
        check_number("weight_decay", self.config.weight_decay, false)
    }

    /// One step: mean cross-entropy of the solution tokens (and the end-of-sequence token),
    /// one AdamW update. In the metrics, `reward_mean` and `accuracy` hold the mean probability
    /// of the target tokens.
    fn step(&mut self, run: &mut AdapterRun<'_>, problems: &[Problem]) -> Result<StepMetrics, TrainError> {
        let t0 = Instant::now();
        let cfg = self.config.clone();
        let step = run.state.step;
        let tok = &run.file.tokenizer;
        // this process's share of the step's problems (all of them in one process)
        let c = run.collective;
        let mut chosen = step_problems(problems, cfg.batch_size, cfg.seed, step);
        let chosen: Vec<Problem> = chosen.drain(shard(chosen.len(), c.rank(), c.size())).collect();
        let mut prompts = Vec::new();
        let mut targets = Vec::new();
        for p in &chosen {
            let prompt = tok.encode(&render_prompt(run.file, &p.question, &cfg.prompt)?)?;
            if prompt.is_empty() {
                return Err(tinylora_engine::EngineError::EmptyPrompt { index: prompts.len() }.into());
            }
            prompts.push(prompt);
            let mut t = tok
                .inner
                .encode(self.target(p), false)
                .map_err(|source| tinylora_formats::TokenizerError { op: "encode", source })?
                .get_ids()
                .to_vec();
            t.extend(tok.eos_token.as_ref().map(|(id, _)| *id));
            targets.push(t);
        }
        // the mean is over the target tokens of the whole batch (every process's share)
        let mut counts = [
            targets.len() as f64,
            targets.iter().map(Vec::len).sum::<usize>() as f64,
        ];
        c.sum(&mut counts);
        let lr = learning_rate(cfg.lr, step, cfg.warmup);
        let (loss_value, prob, grad_norm) = if chosen.is_empty() {
            let g = run.apply_gradient(vec![0.0; run.state.values.len()], cfg.max_grad_norm, lr)?;
            (0.0, 0.0, g)
        } else {
            // v as tensors that take gradients (uploaded before merging, so that a model not
            // yet merged is merged once), then training on the merged weights: v's gradient
            // through lowrank_update_merged
            run.model.set_values(&run.state.values, true)?;
            run.model.set_mode(DeltaMode::Merged)?;
            let active = counts[1] as f32;
            let longest = prompts.iter().zip(&targets).map(|(p, t)| p.len() + t.len()).max();
            let (mut loss_value, mut prob, mut g) = (0.0, 0.0, vec![0.0; run.state.values.len()]);
            for rows in passes(
                &run.file.config,
                prompts.len(),
                longest.unwrap_or(0),
                cfg.micro_batch,
            ) {
                let batch = CompletionBatch::new(&prompts[rows.clone()], &targets[rows]);
                let mask = batch.tensor(batch.mask(), &run.model.device); // [m, W]
                let logp = token_logprobs(run.model, &batch, 1.0); // [m, W]
                // this pass's shares of the means over the whole batch's target tokens
                let loss: Tensor<1> = -(logp.clone() * mask.clone().autodiff()).sum() / active;
                let p = (logp.clone().inner().exp() * mask).sum() / active;
                let shares = read_f32(
                    Tensor::cat(vec![loss.clone().inner(), p], 0),
                    "loss and target probability",
                )?;
                pollster::block_on(run.add_gradient_async(loss, shares[0], &mut g))?;
                loss_value += shares[0];
                prob += shares[1];
            }
            (loss_value, prob, run.apply_gradient(g, cfg.max_grad_norm, lr)?)
        };
        run.state.step += 1;
        let mut shares = [loss_value, prob];
        sum_f32(c, &mut shares);
        let [loss_value, mean_prob] = shares;
        let mut seconds = [t0.elapsed().as_secs_f64()];
        c.max(&mut seconds);
        Ok(StepMetrics {
            step: run.state.step,
            reward_mean: mean_prob,
            accuracy: mean_prob,
            response_len: (counts[1] / counts[0]) as f32,
            grad_norm,
            loss: loss_value,
            lr,
            values: run.applied_values(),
            train_s: seconds[0],
            ..StepMetrics::default()
        })
    }
}
