//! The GRPO step (SPEC.md §2), split as TRL splits it: generate and score the rollouts
//! ([`crate::rollout`]), then μ = `num_iterations` updates on them, each a teacher-forced pass
//! on the merged weights (v's gradient through `lowrank_update_merged`), the clipped loss
//! ([`crate::grpo`]) and one AdamW step. The rollouts' own log-probabilities are π_old, so the
//! first update has ρ = 1 up to the difference between sampling and scoring, and later ones
//! see the policy move.
//!
//! The step is `async` ([`GrpoTrainer::step_async`]): it awaits every read of the device, as a
//! browser's WebGPU requires; natively [`TrainingMethod::step`] blocks on it.

use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};
use tinylora_engine::{DeltaMode, FinishReason, read_f32_async};
use web_time::Instant;

use crate::collective::{shard, sum_f32};
use crate::data::Problem;
use crate::error::TrainError;
use crate::extract::ExtractMode;
use crate::grpo::{BatchSize, LossConfig, ScaleRewards, grpo_loss};
use crate::metrics::StepMetrics;
use crate::optim::learning_rate;
use crate::policy::{CompletionBatch, passes, token_logprobs};
use crate::prompt::PromptStyle;
use crate::reward::{RewardOptions, RewardSpec, Rewards};
use crate::rollout::{RolloutSettings, Rollouts, Scored, generate, score};
use crate::run::{AdapterRun, TrainingMethod, check_number, step_problems};

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
    /// Steps (batches of rollouts).
    pub steps: usize,
    /// Updates per batch of rollouts (TRL's `num_iterations`, μ).
    pub num_iterations: usize,
    /// Peak learning rate.
    pub lr: f32,
    /// Linear warm-up steps.
    pub warmup: usize,
    /// Global gradient-norm clip (0: off).
    pub max_grad_norm: f32,
    /// AdamW decoupled weight decay.
    pub weight_decay: f32,
    /// What advantages are divided by.
    pub scale_rewards: ScaleRewards,
    /// Leave completions that hit `max_new_tokens` out of the loss (TRL's
    /// `mask_truncated_completions`); they still count in their group's advantages.
    pub mask_truncated: bool,
    /// Clipping, KL, aggregation, importance-sampling level.
    pub loss: LossConfig,
    /// Most sequences per teacher-forced pass (the gradients of a step's passes add up);
    /// 0: as many as keep attention's scores and the MLP's activations within 64 MiB each and
    /// the activations of all layers together within 2 GiB ([`crate::policy::pass_rows`]).
    #[serde(default)]
    pub micro_batch: usize,
    /// The rewards, summed with their weights.
    pub rewards: Vec<RewardSpec>,
    /// The `format` reward's regular expression (None: `#### <number>` at the end).
    pub format_pattern: Option<String>,
    /// The `cmd` reward's program (a command line).
    pub reward_cmd: Option<String>,
    /// How the `correct` reward and the accuracy read the answer.
    pub extract: ExtractMode,
    /// How questions become prompts.
    pub prompt: PromptStyle,
    /// Seed of the problem order and of the samples.
    pub seed: u64,
}

/// A GRPO run's method: its settings (checked) and its rewards (built from them).
pub struct GrpoTrainer {
    config: GrpoConfig,
    rewards: Rewards,
}

impl GrpoTrainer {
    /// Check `config` and build its rewards (starting the reward program, if any).
    pub fn new(config: GrpoConfig) -> Result<Self, TrainError> {
        if config.group_size < 2 {
            return Err(TrainError::Invalid(
                "the group size must be at least 2 (advantages compare samples of one prompt)".into(),
            ));
        }
        if config.num_iterations == 0 || config.prompts_per_step == 0 || config.max_new_tokens == 0 {
            return Err(TrainError::Invalid(
                "num_iterations, prompts_per_step and max_new_tokens must be at least 1".into(),
            ));
        }
        let c = &config;
        for (name, value, positive) in [
            ("temperature", c.temperature, true),
            ("lr", c.lr, false),
            ("max_grad_norm", c.max_grad_norm, false),
            ("weight_decay", c.weight_decay, false),
            ("eps_low", c.loss.eps_low, false),
            ("eps_high", c.loss.eps_high, false),
            ("beta", c.loss.beta, false),
        ] {
            check_number(name, value, positive)?;
        }
        let opts = RewardOptions {
            format_pattern: config.format_pattern.clone(),
            command: config.reward_cmd.clone(),
            ..RewardOptions::new(config.extract, config.max_new_tokens)
        };
        let rewards = Rewards::new(&config.rewards, &opts).map_err(TrainError::Rewards)?;
        Ok(GrpoTrainer { config, rewards })
    }

    /// The run's settings.
    pub fn settings(&self) -> &GrpoConfig {
        &self.config
    }

    /// μ updates on the scored rollouts; returns (mean loss, last KL, last clipped share,
    /// last gradient norm).
    async fn update(
        &self,
        run: &mut AdapterRun<'_>,
        r: &Rollouts,
        s: &Scored,
        lr: f32,
    ) -> Result<[f32; 4], TrainError> {
        let cfg = &self.config;
        // TRL's completion mask: every token, except those of truncated completions with
        // --mask-truncated-completions
        let counted = |i: usize| {
            let g = &r.generations[i];
            !(cfg.mask_truncated && g.finish == FinishReason::Length)
        };
        let n = r.generations.len();
        // the whole batch is every process's share of it (TRL normalises over the whole batch)
        let mut sizes = [
            n as f64,
            (0..n)
                .filter(|&i| counted(i))
                .map(|i| r.generations[i].output_ids.len())
                .sum::<usize>() as f64,
        ];
        run.collective.sum(&mut sizes);
        let whole = BatchSize {
            sequences: sizes[0] as usize,
            tokens: sizes[1] as f32,
        };
        // the sequences that can change the loss: counted, not empty, and A ≠ 0 unless the KL
        // term needs them; the others add nothing but count in `whole`
        let keep: Vec<usize> = (0..n)
            .filter(|&i| {
                counted(i)
                    && !r.generations[i].output_ids.is_empty()
                    && (s.advantages[i] != 0.0 || cfg.loss.beta != 0.0)
            })
            .collect();
        if keep.is_empty() {
            // a zero loss here, as TRL's would be; the other processes' shares may not be, and
            // AdamW steps on its moments either way
            let mut last = 0.0;
            for _ in 0..cfg.num_iterations {
                last = run.apply_gradient(vec![0.0; run.state.values.len()], cfg.max_grad_norm, lr)?;
            }
            return Ok(combine_update_metrics(
                run,
                [0.0, 0.0, 0.0],
                last,
                cfg.num_iterations,
            ));
        }
        // the kept sequences in passes whose buffers fit (their gradients add up), each with
        // its π_old, π_ref (the adapter off, once for all μ updates) and advantages
        let device = run.model.device.clone();
        let longest = keep
            .iter()
            .map(|&i| r.generations[i].prompt_ids.len() + r.generations[i].output_ids.len())
            .max()
            .unwrap_or(0);
        if cfg.loss.beta != 0.0 {
            run.model.set_mode(DeltaMode::Off)?;
        }
        let mut parts = Vec::new();
        for rows in passes(&run.file.config, keep.len(), longest, cfg.micro_batch) {
            let gens: Vec<_> = keep[rows.clone()].iter().map(|&i| &r.generations[i]).collect();
            let batch = CompletionBatch::new(
                &gens.iter().map(|g| g.prompt_ids.clone()).collect::<Vec<_>>(),
                &gens.iter().map(|g| g.output_ids.clone()).collect::<Vec<_>>(),
            );
            // log π_old, host [m·W]
            let old = batch.scatter(&gens.iter().map(|g| g.logprobs.clone()).collect::<Vec<_>>());
            let pass = Pass {
                mask: batch.tensor(batch.mask(), &device).autodiff(),
                old: batch.tensor(old, &device).autodiff(),
                reference: (cfg.loss.beta != 0.0).then(|| {
                    token_logprobs(run.model, &batch, cfg.temperature)
                        .inner()
                        .autodiff()
                }),
                adv: Tensor::<1>::from_data(
                    TensorData::new(
                        keep[rows].iter().map(|&i| s.advantages[i]).collect::<Vec<f32>>(),
                        [gens.len()],
                    ),
                    &device,
                )
                .autodiff(),
                batch,
            };
            parts.push(pass);
        }
        let (mut loss_sum, mut last) = (0.0, [0.0; 3]);
        for _ in 0..cfg.num_iterations {
            // v as tensors that take gradients (uploaded before merging: after the reference
            // pass, with the adapter off, that saves an unmerge and a merge)
            run.model.set_values(&run.state.values, true)?;
            run.model.set_mode(DeltaMode::Merged)?;
            let (mut sums, mut g) = ([0.0; 3], vec![0.0; run.state.values.len()]);
            for p in &parts {
                let logp = token_logprobs(run.model, &p.batch, cfg.temperature);
                let terms = grpo_loss(
                    logp,
                    p.old.clone(),
                    p.reference.clone(),
                    p.adv.clone(),
                    p.mask.clone(),
                    &cfg.loss,
                    cfg.max_new_tokens,
                    Some(whole),
                );
                // this pass's shares of the loss, KL and clipped share in one read of the device
                let scalars = Tensor::cat(
                    vec![
                        terms.loss.clone().inner(),
                        terms.kl.inner(),
                        terms.clipped.inner(),
                    ],
                    0,
                );
                let [loss, kl, clipped] = read_f32_async(scalars, "loss, KL and clipped share").await?[..]
                    .try_into()
                    .expect("three scalars");
                run.add_gradient_async(terms.loss, loss, &mut g).await?;
                sums.iter_mut()
                    .zip([loss, kl, clipped])
                    .for_each(|(a, b)| *a += b);
            }
            let grad_norm = run.apply_gradient(g, cfg.max_grad_norm, lr)?;
            loss_sum += sums[0];
            last = [sums[1], sums[2], grad_norm];
        }
        Ok(combine_update_metrics(
            run,
            [loss_sum, last[0], last[1]],
            last[2],
            cfg.num_iterations,
        ))
    }
}

/// One teacher-forced pass of a GRPO update: some of the step's sequences and what their loss
/// needs besides their log-probabilities.
struct Pass {
    /// The sequences, left-padded.
    batch: CompletionBatch,
    /// Completion positions `[m, W]`.
    mask: Tensor<2>,
    /// log π_old (the sampler's) `[m, W]`.
    old: Tensor<2>,
    /// log π_ref (the adapter off) `[m, W]`, when the KL term is on.
    reference: Option<Tensor<2>>,
    /// Advantages `[m]`.
    adv: Tensor<1>,
}

/// (mean loss, KL, clipped share, gradient norm) of the whole batch from this process's
/// shares of the loss sum, KL and clipped share (each normalised over the whole batch, so the
/// shares add up) and the gradient norm (the same everywhere: it is the summed gradient's).
fn combine_update_metrics(
    run: &AdapterRun<'_>,
    shares: [f32; 3],
    grad_norm: f32,
    iterations: usize,
) -> [f32; 4] {
    let mut x = shares;
    sum_f32(run.collective, &mut x);
    [x[0] / iterations as f32, x[1], x[2], grad_norm]
}

impl TrainingMethod for GrpoTrainer {
    fn name(&self) -> &'static str {
        "GRPO"
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

    /// Generate and score, then update: one step.
    fn step(&mut self, run: &mut AdapterRun<'_>, problems: &[Problem]) -> Result<StepMetrics, TrainError> {
        pollster::block_on(self.step_async(run, problems))
    }
}

impl GrpoTrainer {
    /// Take step `run.state.step` (0-based) on the training `problems`, awaiting every read of
    /// the device: generate and score, then update. Returns its metrics.
    pub async fn step_async(
        &mut self,
        run: &mut AdapterRun<'_>,
        problems: &[Problem],
    ) -> Result<StepMetrics, TrainError> {
        let cfg = self.config.clone();
        let step = run.state.step;
        let t0 = Instant::now();
        run.model.set_values(&run.state.values, false)?;
        run.model.set_mode(DeltaMode::Merged)?;
        let settings = RolloutSettings {
            group_size: cfg.group_size,
            max_new_tokens: cfg.max_new_tokens,
            temperature: cfg.temperature,
            prompt: &cfg.prompt,
            seed: cfg.seed,
        };
        // this process's whole prompts of the step's batch (all of them in one process)
        let c = run.collective;
        let mut chosen = step_problems(problems, cfg.prompts_per_step, cfg.seed, step);
        let mine = shard(chosen.len(), c.rank(), c.size());
        let first = mine.start;
        let chosen: Vec<Problem> = chosen.drain(mine).collect();
        let rollouts = generate(run.model, run.file, chosen, &settings, step, first).await?;
        let scored = score(
            &rollouts,
            &mut self.rewards,
            cfg.group_size,
            cfg.scale_rewards,
            cfg.extract,
            c,
        )
        .map_err(|source| TrainError::Reward {
            step: step + 1,
            source,
        })?;
        let rollout_s = t0.elapsed().as_secs_f64();

        let t1 = Instant::now();
        let lr = learning_rate(cfg.lr, step, cfg.warmup);
        let [loss, kl, clipped, grad_norm] = self.update(run, &rollouts, &scored, lr).await?;
        run.state.step += 1;

        // metrics of the whole batch: sums of every process's share
        let total = &scored.scores.total;
        let components = &scored.scores.components;
        let mut sums = vec![
            total.len() as f32,
            total.iter().sum::<f32>(),
            scored.correct.iter().filter(|&&c| c).count() as f32,
            total
                .chunks(cfg.group_size)
                .filter(|g| g.iter().all(|&r| r == g[0]))
                .count() as f32,
            rollouts
                .generations
                .iter()
                .map(|g| g.output_ids.len())
                .sum::<usize>() as f32,
        ];
        sums.extend(components.iter().map(|(_, xs)| xs.iter().sum::<f32>()));
        sum_f32(c, &mut sums);
        let n = sums[0];
        let reward_mean = sums[1] / n;
        let mut squares = [total.iter().map(|r| (r - reward_mean).powi(2)).sum::<f32>()];
        sum_f32(c, &mut squares);
        let mut seconds = [rollout_s, t1.elapsed().as_secs_f64()];
        c.max(&mut seconds);
        Ok(StepMetrics {
            step: run.state.step,
            reward_mean,
            reward_std: (squares[0] / n).sqrt(),
            rewards: components
                .iter()
                .zip(&sums[5..])
                .map(|((name, _), sum)| (name.clone(), sum / n))
                .collect(),
            accuracy: sums[2] / n,
            zero_variance_groups: sums[3] / (n / cfg.group_size as f32),
            response_len: sums[4] / n,
            kl,
            clipped,
            grad_norm,
            loss,
            lr,
            values: run.applied_values(),
            rollout_s: seconds[0],
            train_s: seconds[1],
        })
    }
}
