//! The GRPO training loop: rollouts on merged weights through the batched engine, the gradient
//! pass through the unmerged adapter (the importance ratio corrects the difference), AdamW on
//! the trainable values only, metrics, checkpoints and exact resumption.
//!
//! Every random choice is derived from (seed, step): the problems of a step from a per-epoch
//! shuffle, the samples from per-sequence streams seeded by the step. A run resumed from a
//! checkpoint therefore continues exactly as the uninterrupted run would have.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::{Tensor, TensorData};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tinylora_adapter::adapter_file::round_to;
use tinylora_adapter::{AdapterConfig, AdapterFile};
use tinylora_engine::{AdapterMode, GenerateOptions, SamplingParams, Transformer};
use tinylora_formats::ModelFile;
use tinylora_formats::atomic::write_atomic;

use crate::data::Problem;
use crate::extract::{ExtractMode, is_correct};
use crate::grpo::{LossConfig, advantages, grpo_loss};
use crate::optim::{AdamW, clip_grad_norm, learning_rate};
use crate::policy::{CompletionBatch, token_logprobs};
use crate::prompt::{PromptStyle, render_prompt};

/// Everything that defines a GRPO run (serialisable: a run directory records it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrpoConfig {
    /// Samples per prompt G.
    pub group_size: usize,
    /// Prompts per step.
    pub prompts_per_step: usize,
    /// Most new tokens per sample.
    pub max_new_tokens: usize,
    /// Sampling temperature of the rollouts.
    pub temperature: f32,
    /// Optimizer steps.
    pub steps: usize,
    /// Peak learning rate.
    pub lr: f32,
    /// Linear warm-up steps.
    pub warmup: usize,
    /// Global gradient-norm clip (0: off).
    pub max_grad_norm: f32,
    /// AdamW decoupled weight decay.
    pub weight_decay: f32,
    /// Divide advantages by the group's std (GRPO) or not (Dr. GRPO).
    pub scale_advantages: bool,
    /// Clipping, KL and aggregation.
    pub loss: LossConfig,
    /// How rewards read the answer.
    pub extract: ExtractMode,
    /// How questions become prompts.
    pub prompt: PromptStyle,
    /// Seed of the problem order and of the samples.
    pub seed: u64,
}

/// What a checkpoint holds besides the adapter file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Steps completed.
    pub step: usize,
    /// f32 master copy of the trainable values.
    pub values: Vec<f32>,
    /// Optimizer moments.
    pub optimizer: AdamW,
}

/// One line of the metrics JSONL.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepMetrics {
    /// Step (1-based).
    pub step: usize,
    /// Mean reward of the step's samples.
    pub reward_mean: f32,
    /// Std of the rewards.
    pub reward_std: f32,
    /// Share of samples whose answer was right (= reward_mean for exact-match rewards).
    pub accuracy: f32,
    /// Share of groups whose rewards were all equal (no learning signal).
    pub zero_variance_groups: f32,
    /// Mean completion length in tokens.
    pub response_len: f32,
    /// Mean KL(π_θ‖π_base) estimate over completion tokens.
    pub kl: f32,
    /// Share of tokens whose ratio was clipped.
    pub clipped: f32,
    /// Gradient norm before clipping.
    pub grad_norm: f32,
    /// The loss.
    pub loss: f32,
    /// Learning rate used.
    pub lr: f32,
    /// The trainable values after the step (as applied: rounded to the adapter's precision).
    pub values: Vec<f32>,
    /// Seconds generating.
    pub rollout_s: f64,
    /// Seconds in the gradient pass and update.
    pub train_s: f64,
}

/// The files of a run directory.
#[derive(Debug, Clone)]
pub struct RunFiles {
    /// The directory.
    pub dir: PathBuf,
}

impl RunFiles {
    /// `dir/adapter.safetensors`: the latest adapter.
    pub fn adapter(&self) -> PathBuf {
        self.dir.join("adapter.safetensors")
    }
    /// `dir/state.json`: optimizer state and step, for `--resume`.
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    /// `dir/metrics.jsonl`: one line per step.
    pub fn metrics(&self) -> PathBuf {
        self.dir.join("metrics.jsonl")
    }
}

/// The problems of step `step` (0-based): a fresh shuffle of all problems each epoch.
pub fn step_problems(problems: &[Problem], per_step: usize, seed: u64, step: usize) -> Vec<Problem> {
    let n = problems.len();
    // the order of one epoch, shuffled once per epoch the step touches
    let mut order: (usize, Vec<usize>) = (usize::MAX, Vec::new());
    (step * per_step..(step + 1) * per_step)
        .map(|i| {
            let (epoch, k) = (i / n, i % n);
            if order.0 != epoch {
                let mut o: Vec<usize> = (0..n).collect();
                o.shuffle(&mut ChaCha8Rng::seed_from_u64(
                    seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9),
                ));
                order = (epoch, o);
            }
            problems[order.1[k]].clone()
        })
        .collect()
}

/// A model with its attached adapter, the optimizer state and the run directory: what GRPO
/// and SFT share.
pub struct AdapterRun<'a> {
    /// The base model's file (tokenizer, template, fingerprint).
    pub file: &'a ModelFile,
    /// The model, with the adapter attached.
    pub model: &'a mut Transformer,
    /// The adapter's configuration.
    pub adapter: AdapterConfig,
    /// Step and optimizer.
    pub state: TrainState,
    /// Where checkpoints and metrics go.
    pub files: RunFiles,
}

impl AdapterRun<'_> {
    /// The adapter file for the current values.
    pub fn adapter_file(&self) -> AdapterFile {
        AdapterFile {
            config: self.adapter.clone(),
            base_fingerprint: self.file.fingerprint(),
            values: self.applied_values(),
        }
    }

    /// The values as the model applies them (rounded to the adapter's precision).
    pub fn applied_values(&self) -> Vec<f32> {
        self.state
            .values
            .iter()
            .map(|&x| round_to(self.adapter.precision, x))
            .collect()
    }

    /// Write the adapter and the state atomically.
    pub fn checkpoint(&self) -> Result<(), String> {
        self.adapter_file()
            .save(&self.files.adapter())
            .map_err(|e| e.to_string())?;
        let json = serde_json::to_vec(&self.state).map_err(|e| e.to_string())?;
        write_atomic(&self.files.state(), &json).map_err(|e| e.to_string())
    }

    /// Upload the current values into the model as per-group tensors (optionally requiring
    /// gradients); returns them.
    pub fn upload(&mut self, require_grad: bool) -> Vec<Tensor<1>> {
        self.model.set_adapter_values(&self.state.values, require_grad)
    }

    /// Backpropagate `loss` to the uploaded `trainable` tensors, clip the gradient to
    /// `max_norm` and take one AdamW step at `lr`; returns the gradient norm before clipping.
    pub fn descend(&mut self, loss: Tensor<1>, trainable: &[Tensor<1>], max_norm: f32, lr: f32) -> f32 {
        let grads = loss.backward();
        let mut g: Vec<f32> = trainable
            .iter()
            .flat_map(|t| {
                t.grad(&grads)
                    .map(|g| g.into_data().try_into_vec::<f32>().unwrap())
                    .unwrap_or_else(|| vec![0.0; t.dims()[0]])
            })
            .collect();
        let norm = clip_grad_norm(&mut g, max_norm);
        self.state.optimizer.step(&mut self.state.values, &g, lr);
        norm
    }
}

/// A training method: one optimizer step at a time on an [`AdapterRun`].
pub trait Trainer<'a> {
    /// Take one step; returns its metrics.
    fn step(&mut self) -> Result<StepMetrics, String>;
    /// The model, adapter, state and files.
    fn run(&mut self) -> &mut AdapterRun<'a>;
}

impl<'a> Trainer<'a> for GrpoTrainer<'a> {
    fn step(&mut self) -> Result<StepMetrics, String> {
        GrpoTrainer::step(self)
    }
    fn run(&mut self) -> &mut AdapterRun<'a> {
        &mut self.run
    }
}

/// A GRPO run on one model with one attached adapter.
pub struct GrpoTrainer<'a> {
    /// Model, adapter, optimizer, files.
    pub run: AdapterRun<'a>,
    /// Run settings.
    pub config: GrpoConfig,
    /// Training problems.
    pub problems: Vec<Problem>,
}

impl GrpoTrainer<'_> {
    /// Run one step: rollouts, rewards, gradient, update. Returns its metrics.
    pub fn step(&mut self) -> Result<StepMetrics, String> {
        let cfg = self.config.clone();
        let step = self.run.state.step;
        let tok = &self.run.file.tokenizer;
        // rollouts on merged weights
        let t0 = Instant::now();
        self.run.upload(false);
        self.run.model.set_adapter_mode(AdapterMode::Merged);
        let problems = step_problems(&self.problems, cfg.prompts_per_step, cfg.seed, step);
        let prompts: Vec<Vec<u32>> = problems
            .iter()
            .map(|p| tok.encode(&render_prompt(self.run.file, &p.question, &cfg.prompt)?))
            .collect::<Result<_, String>>()?;
        let repeated: Vec<Vec<u32>> = prompts
            .iter()
            .flat_map(|p| std::iter::repeat_n(p.clone(), cfg.group_size))
            .collect();
        let opts = GenerateOptions {
            max_new_tokens: cfg.max_new_tokens,
            sampling: SamplingParams {
                temperature: cfg.temperature,
                top_k: 0,
                top_p: 1.0,
                seed: cfg.seed.wrapping_mul(1_000_003).wrapping_add(step as u64),
            },
            stop_ids: tok.stop_ids.clone(),
        };
        let gens = self.run.model.generate(&repeated, &opts, |_, _| {});
        let rollout_s = t0.elapsed().as_secs_f64();

        // rewards and advantages
        let t1 = Instant::now();
        let rewards: Vec<f32> = gens
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let text = tok.decode(&g.output_ids).unwrap_or_default();
                f32::from(u8::from(is_correct(
                    &text,
                    &problems[i / cfg.group_size].gold,
                    cfg.extract,
                )))
            })
            .collect();
        let adv = advantages(&rewards, cfg.group_size, cfg.scale_advantages);
        let n = rewards.len() as f32;
        let reward_mean = rewards.iter().sum::<f32>() / n;
        let reward_std = (rewards.iter().map(|r| (r - reward_mean).powi(2)).sum::<f32>() / n).sqrt();
        let groups = rewards.len() / cfg.group_size;
        let flat = rewards
            .chunks(cfg.group_size)
            .filter(|g| g.iter().all(|&r| r == g[0]))
            .count();
        let response_len = gens.iter().map(|g| g.output_ids.len()).sum::<usize>() as f32 / n;

        // the gradient pass on the sequences that carry signal
        let keep: Vec<usize> = (0..gens.len())
            .filter(|&i| adv[i] != 0.0 && !gens[i].output_ids.is_empty())
            .collect();
        let (mut loss_v, mut kl_v, mut clipped_v, mut grad_norm) = (0.0, 0.0, 0.0, 0.0);
        let lr = learning_rate(cfg.lr, step, cfg.warmup);
        if !keep.is_empty() {
            let batch = CompletionBatch::new(
                &keep
                    .iter()
                    .map(|&i| gens[i].prompt_ids.clone())
                    .collect::<Vec<_>>(),
                &keep
                    .iter()
                    .map(|&i| gens[i].output_ids.clone())
                    .collect::<Vec<_>>(),
            );
            let mask = batch.tensor(batch.mask(), self.run.model);
            let old = batch.tensor(
                batch.scatter(&keep.iter().map(|&i| gens[i].logprobs.clone()).collect::<Vec<_>>()),
                self.run.model,
            );
            let reference = if cfg.loss.beta != 0.0 {
                self.run.model.set_adapter_mode(AdapterMode::Off);
                Some(token_logprobs(self.run.model, &batch, cfg.temperature))
            } else {
                None
            };
            // v as tensors that take gradients (uploaded before merging: after the reference
            // pass, with the adapter off, that saves an unmerge and a merge), then training on
            // the merged weights too: v's gradient through lowrank_update_merged
            let trainable = self.run.upload(true);
            self.run.model.set_adapter_mode(AdapterMode::Merged);
            let logp = token_logprobs(self.run.model, &batch, cfg.temperature);
            let a = Tensor::<1>::from_data(
                TensorData::new(keep.iter().map(|&i| adv[i]).collect::<Vec<f32>>(), [keep.len()]),
                &self.run.model.device,
            );
            let parts = grpo_loss(
                logp,
                old.autodiff(),
                reference.map(Tensor::autodiff),
                a.autodiff(),
                mask.autodiff(),
                &cfg.loss,
                cfg.max_new_tokens,
            );
            grad_norm = self
                .run
                .descend(parts.loss.clone(), &trainable, cfg.max_grad_norm, lr);
            loss_v = parts.loss.inner().into_scalar::<f32>();
            kl_v = parts.kl.inner().into_scalar::<f32>();
            clipped_v = parts.clipped.inner().into_scalar::<f32>();
        }
        self.run.state.step += 1;
        Ok(StepMetrics {
            step: self.run.state.step,
            reward_mean,
            reward_std,
            accuracy: reward_mean,
            zero_variance_groups: flat as f32 / groups as f32,
            response_len,
            kl: kl_v,
            clipped: clipped_v,
            grad_norm,
            loss: loss_v,
            lr,
            values: self.run.applied_values(),
            rollout_s,
            train_s: t1.elapsed().as_secs_f64(),
        })
    }
}

/// Append one metrics line to `path` (the file grows by whole lines).
pub fn append_metrics(path: &Path, m: &StepMetrics) -> Result<(), String> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let line = serde_json::to_string(m).map_err(|e| e.to_string())?;
    writeln!(f, "{line}").map_err(|e| format!("{}: {e}", path.display()))
}
