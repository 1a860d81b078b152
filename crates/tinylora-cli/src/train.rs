//! `tinylora train grpo | sft`: train an adapter, with metrics, checkpoints, resumption and
//! before/after evaluation on held-out problems.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tinylora_train::reward::RewardSpec;
use tinylora_train::{
    Aggregation, Collective, EvalSettings, Event, ExtractMode, GrpoConfig, GrpoTrainer, ImportanceSampling,
    LossConfig, Observer, Quiet, RunFiles, RunSettings, ScaleRewards, SftConfig, SftTrainer, Training,
    TrainingMethod, data_fingerprint, load_problems, split,
};

use crate::adapter_load::svd_progress;
use crate::eval::{PromptArgs, show_progress};
use crate::load::{DeviceArgs, load_model_checked};
use crate::plan::AdapterArgs;

/// `tinylora train …`
#[derive(Subcommand)]
pub enum TrainCommand {
    /// Reinforcement learning with group-relative advantages (SPEC.md §2).
    Grpo(GrpoArgs),
    /// The SFT baseline: cross-entropy on the gold solutions, same adapter and optimizer.
    Sft(SftArgs),
}

/// What every training method takes.
#[derive(Args)]
pub struct CommonArgs {
    /// Read flags from a TOML file: top-level keys are flag names (`group_size = 8`,
    /// `targets = ["q", "v"]`, `resume = true`); flags on the command line override them.
    #[arg(long)]
    config: Option<PathBuf>,
    /// GGUF file or Hugging Face model directory.
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    device: DeviceArgs,
    /// Training problems (JSON lines; see `tinylora eval --help`).
    #[arg(long)]
    data: PathBuf,
    /// Run directory: adapter.safetensors, state.json, metrics.jsonl, config.json. A directory
    /// that already holds a run is refused unless --resume or --overwrite.
    #[arg(long, default_value = "run")]
    out: PathBuf,
    /// Continue the run in --out from its last checkpoint. Every setting must be the run's
    /// own (they are compared with its config.json, --weights included); only --steps (not
    /// below the checkpoint's step), --eval-every and the paths of --model and --data (same
    /// weights, same data file contents: both are fingerprinted) may change.
    #[arg(long, conflicts_with = "overwrite")]
    resume: bool,
    /// Replace a run already in --out.
    #[arg(long)]
    overwrite: bool,
    #[command(flatten)]
    adapter: AdapterArgs,
    /// Steps: batches of rollouts for GRPO (each --num-iterations optimizer updates), batches
    /// of problems for SFT.
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// Peak learning rate (TinyLoRA's few numbers take large steps).
    #[arg(long, default_value_t = 0.005)]
    lr: f32,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Gradient-norm clip (0: off).
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f32,
    /// Decoupled weight decay.
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f32,
    /// Most sequences per teacher-forced pass; a step's passes add their gradients up, so this
    /// bounds the memory of the largest buffers (attention's scores, the MLP's activations,
    /// and what is kept of them for the backward), not the batch. 0: as many as keep those
    /// within 64 MiB each (lavapipe and browsers bind at most 128 MiB) and the activations of
    /// all layers within 2 GiB (an estimate). May change on --resume.
    #[arg(long, default_value_t = 0)]
    micro_batch: usize,
    #[command(flatten)]
    prompt: PromptArgs,
    /// Most new tokens per sample (rollouts and evaluation).
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Answer extraction for the `correct` reward and evaluation: strict, flexible or boxed.
    #[arg(long, default_value = "strict")]
    extract: ExtractMode,
    /// Problems held out of training and evaluated before and after (0: none).
    #[arg(long, default_value_t = 0)]
    eval_problems: usize,
    /// Also evaluate every N steps (0: only before and after).
    #[arg(long, default_value_t = 0)]
    eval_every: usize,
    /// Seed of the split, the problem order and the samples.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Arguments of `tinylora train grpo`.
#[derive(Args)]
#[command(args_override_self = true)]
pub struct GrpoArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Samples per prompt G.
    #[arg(long, default_value_t = 8)]
    group_size: usize,
    /// Prompts per step.
    #[arg(long, default_value_t = 4)]
    prompts_per_step: usize,
    /// Rollout temperature (> 0).
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Lower ratio clip ε_low.
    #[arg(long, default_value_t = 0.2)]
    eps_low: f32,
    /// Upper ratio clip ε_high.
    #[arg(long, default_value_t = 0.28)]
    eps_high: f32,
    /// KL weight β against the base model (0: no reference pass).
    #[arg(long, default_value_t = 0.0)]
    beta: f32,
    /// Loss aggregation: grpo, dr_grpo or dapo.
    #[arg(long, default_value = "grpo")]
    loss: Aggregation,
    /// What advantages are divided by: the std of the prompt's group (GRPO), of the whole
    /// batch, or nothing (Dr. GRPO).
    #[arg(long, default_value = "group")]
    scale_rewards: ScaleRewards,
    /// Leave completions cut off at --max-new-tokens out of the loss (they still count in
    /// their group's advantages).
    #[arg(long)]
    mask_truncated_completions: bool,
    /// Importance ratio per token (GRPO) or per sequence (GSPO).
    #[arg(long, default_value = "token")]
    importance_sampling_level: ImportanceSampling,
    /// Updates per batch of rollouts (μ); from the second on, the ratio to the rollout policy
    /// differs from 1 and the clipping acts.
    #[arg(long, default_value_t = 1)]
    num_iterations: usize,
    /// A reward and its weight, NAME[:WEIGHT], repeatable; the rewards are summed. NAME:
    /// correct (the answer under --extract), correct-strict, correct-flexible, correct-boxed,
    /// format (1 when --format-pattern matches the completion), length (−tokens / max new
    /// tokens), cmd (the number --reward-cmd prints). E.g. --reward correct:1 --reward format:0.2,
    /// or --reward correct:1,format:0.2
    #[arg(long = "reward", value_delimiter = ',', default_value = "correct:1")]
    rewards: Vec<RewardSpec>,
    /// Regular expression of the `format` reward [default: `#### <number>` at the end,
    /// `####\s*-?[0-9][0-9,]*(\.[0-9]+)?\s*$`].
    #[arg(long)]
    format_pattern: Option<String>,
    /// Program of the `cmd` reward (a command line, split on spaces): started once, it reads
    /// one JSON object per completion on stdin ({"prompt", "completion", "answer", "tokens",
    /// "truncated"}) and writes one number per line on stdout, e.g.
    /// "python3 scripts/rewards/answer_reward.py".
    #[arg(long)]
    reward_cmd: Option<String>,
}

/// Arguments of `tinylora train sft`.
#[derive(Args)]
#[command(args_override_self = true)]
pub struct SftArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Problems per step.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
}

/// A run stopped by Ctrl-C with its checkpoint saved (the process exits with status 130).
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// Run `tinylora train …`.
pub fn run(cmd: TrainCommand) -> anyhow::Result<()> {
    match cmd {
        TrainCommand::Grpo(a) => {
            let c = &a.common;
            if a.group_size < 2 {
                anyhow::bail!("--group-size must be at least 2 (advantages compare samples of one prompt)");
            }
            let mut method = GrpoTrainer::new(GrpoConfig {
                group_size: a.group_size,
                prompts_per_step: a.prompts_per_step,
                max_new_tokens: c.max_new_tokens,
                temperature: a.temperature,
                steps: c.steps,
                num_iterations: a.num_iterations,
                lr: c.lr,
                warmup: c.warmup,
                max_grad_norm: c.max_grad_norm,
                weight_decay: c.weight_decay,
                micro_batch: c.micro_batch,
                scale_rewards: a.scale_rewards,
                mask_truncated: a.mask_truncated_completions,
                loss: LossConfig {
                    eps_low: a.eps_low,
                    eps_high: a.eps_high,
                    beta: a.beta,
                    aggregation: a.loss,
                    importance_sampling: a.importance_sampling_level,
                },
                rewards: a.rewards.clone(),
                format_pattern: a.format_pattern.clone(),
                reward_cmd: a.reward_cmd.clone(),
                extract: c.extract,
                prompt: c.prompt.style(),
                seed: c.seed,
            })?;
            train(c, &mut method)
        }
        TrainCommand::Sft(a) => {
            let c = &a.common;
            let mut method = SftTrainer {
                config: SftConfig {
                    batch_size: a.batch_size,
                    steps: c.steps,
                    lr: c.lr,
                    warmup: c.warmup,
                    max_grad_norm: c.max_grad_norm,
                    weight_decay: c.weight_decay,
                    micro_batch: c.micro_batch,
                    prompt: c.prompt.style(),
                    seed: c.seed,
                },
            };
            train(c, &mut method)
        }
    }
}

/// Progress bars for a run: the SVDs, the held-out evaluations and the steps.
struct Progress {
    method: &'static str,
    steps: usize,
    bars: Mutex<Bars>,
}

/// An evaluation's bar and the callback that draws on it.
type EvalBar = (ProgressBar, Box<dyn FnMut(usize, usize) + Send>);

#[derive(Default)]
struct Bars {
    svd: Option<ProgressBar>,
    eval: Option<EvalBar>,
    steps: Option<ProgressBar>,
}

impl Progress {
    fn step_bar(&self, at: usize) -> ProgressBar {
        let style = ProgressStyle::with_template(&format!(
            "{} [{{bar:30}}] {{pos}}/{{len}} steps {{elapsed}} (eta {{eta}}) {{msg}}",
            self.method
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        ProgressBar::new(self.steps as u64)
            .with_position(at as u64)
            .with_style(style)
    }
}

impl Observer for Progress {
    fn event(&self, event: Event<'_>) {
        let Ok(mut bars) = self.bars.lock() else { return };
        match event {
            Event::Attaching { modules, rank } => bars.svd = svd_progress(modules, rank).ok(),
            Event::ModuleDone => {
                if let Some(b) = &bars.svd {
                    b.inc(1);
                }
            }
            Event::Attached { params, bytes } => {
                if let Some(b) = bars.svd.take() {
                    b.finish_and_clear();
                }
                eprintln!("adapter attached: {params} trainable parameters ({bytes} bytes)");
            }
            Event::Resumed { step } => eprintln!("resuming at step {step} of {}", self.steps),
            Event::EvalStart { label, problems } => {
                let bar = ProgressBar::new(problems as u64).with_style(
                    ProgressStyle::with_template(
                        "evaluating ({prefix}) [{bar:30}] {pos}/{len}, {msg} {elapsed}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.set_prefix(label.to_string());
                let callback: Box<dyn FnMut(usize, usize) + Send> = Box::new(show_progress(bar.clone()));
                bars.eval = Some((bar, callback));
            }
            Event::EvalProgress { done, tokens } => {
                if let Some((_, callback)) = bars.eval.as_mut() {
                    callback(done, tokens);
                }
            }
            Event::EvalDone { label, report } => {
                if let Some((bar, _)) = bars.eval.take() {
                    bar.finish_and_clear();
                }
                eprintln!("{label}: {}", describe(report));
            }
            Event::Step(m) => {
                let bar = bars
                    .steps
                    .get_or_insert_with(|| self.step_bar(m.step.saturating_sub(1)));
                bar.set_position(m.step as u64);
                bar.set_message(format!(
                    "reward {:.2} ±{:.2}, flat groups {:.0}%, len {:.0}, loss {:.3}, |g| {:.2e}, rollout {:.0}s train {:.0}s",
                    m.reward_mean,
                    m.reward_std,
                    100.0 * m.zero_variance_groups,
                    m.response_len,
                    m.loss,
                    m.grad_norm,
                    m.rollout_s,
                    m.train_s
                ));
            }
            Event::Logged { .. } => {}
        }
    }
}

/// `62.5% (strict) on 32 held-out problems`.
fn describe(r: &tinylora_train::EvalReport) -> String {
    let primary = ExtractMode::ALL
        .iter()
        .map(|&m| format!("{} {:.1}%", m.name(), 100.0 * r.accuracy(m)))
        .collect::<Vec<_>>()
        .join(", ");
    format!("{primary} on {} held-out problems", r.problems)
}

/// The loop every method shares, run by the training library: attach (or resume), evaluate,
/// step with checkpoints until done or interrupted (Ctrl-C), evaluate again.
fn train(c: &CommonArgs, method: &mut dyn TrainingMethod) -> anyhow::Result<()> {
    #[cfg(feature = "mpi")]
    {
        let mpi = crate::mpi_collective::MpiCollective::init()?;
        let result = train_with(c, method, &mpi);
        let (calls, bytes, seconds) = mpi.traffic();
        if mpi.size() > 1 {
            match &result {
                Err(e) if !e.is::<Interrupted>() => {
                    // the other ranks would wait for this one forever: end them all
                    eprintln!("rank {}: error: {e:#}", mpi.rank());
                    mpi.abort(1)
                }
                _ if mpi.rank() == 0 => eprintln!(
                    "MPI: {} ranks; {calls} collective operations, {bytes} bytes sent by each rank, {seconds:.3} s in them",
                    mpi.size()
                ),
                _ => {}
            }
        }
        result
    }
    #[cfg(not(feature = "mpi"))]
    train_with(c, method, &tinylora_train::Single)
}

/// [`train`] as one of the processes of `collective`.
fn train_with(
    c: &CommonArgs,
    method: &mut dyn TrainingMethod,
    collective: &dyn Collective,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let leader = collective.rank() == 0;
    if let Some(config) = &c.config {
        eprintln!(
            "flags from {} (command-line flags override them)",
            config.display()
        );
    }
    let adapter = c.adapter.config()?;
    let problems = load_problems(&c.data)?;
    // prompts too long for the model are left out before the weights load
    // and what the run directory would refuse is said before that too
    if leader {
        let files = RunFiles { dir: c.out.clone() };
        files.preflight(c.resume, c.overwrite)?;
    }
    let (file, mut model, problems) = load_model_checked(&c.model, c.device, |file| {
        c.prompt.fitting(&c.data, problems, file)
    })?;
    let (train, held_out) = split(problems, c.seed, c.eval_problems);
    if train.is_empty() {
        anyhow::bail!(
            "{}: no problems left for training after holding out {}",
            c.data.display(),
            c.eval_problems
        );
    }
    eprintln!(
        "adapter: {:?} r={} u={} {}; {} training problems, {} held out",
        adapter.method,
        adapter.rank,
        adapter.u,
        adapter.tying.describe(),
        train.len(),
        held_out.len()
    );
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                eprintln!("\nsecond Ctrl-C: exiting now (the last checkpoint, if there is one, is intact)");
                std::process::exit(130);
            }
            eprintln!("\nCtrl-C: stopping at the next checkpoint (after this step or evaluation batch; again to exit at once)");
        })
        .context("installing the Ctrl-C handler")?;
    }
    let progress = Progress {
        method: method.name(),
        steps: method.steps(),
        bars: Mutex::new(Bars::default()),
    };
    let eval = EvalSettings {
        prompt: c.prompt.style(),
        max_new_tokens: c.max_new_tokens,
        batch: 16,
        extract: c.extract,
    };
    let record = serde_json::json!({
        "model": c.model,
        "weights": c.device.weights.to_string(),
        "data": c.data,
        "data_fingerprint": data_fingerprint(&c.data)?,
        "eval_problems": c.eval_problems,
        "max_prompt_tokens": c.prompt.max_prompt_tokens,
    });
    let outcome = Training {
        file: &file,
        model: &mut model,
        adapter,
        method,
        train,
        held_out,
        settings: RunSettings {
            dir: c.out.clone(),
            resume: c.resume,
            overwrite: c.overwrite,
            eval_every: c.eval_every,
            eval,
            record,
        },
        stop,
        collective,
    }
    .run(if leader { &progress } else { &Quiet })?;
    if !leader {
        return if outcome.interrupted {
            Err(Interrupted.into())
        } else {
            Ok(())
        };
    }
    if let Some(bar) = progress.bars.lock().ok().and_then(|mut b| b.steps.take()) {
        if outcome.interrupted {
            bar.abandon();
        } else {
            bar.finish();
        }
    }
    let dir = c.out.display();
    if outcome.interrupted {
        eprintln!(
            "interrupted: checkpoint at step {} saved in {dir}; continue with the same command and --resume",
            outcome.step
        );
        return Err(Interrupted.into());
    }
    println!(
        "adapter: {dir}/adapter.safetensors ({} parameters, {} bytes)",
        outcome.params, outcome.bytes
    );
    println!("metrics: {dir}/metrics.jsonl");
    println!("values:  {:?}", outcome.values);
    if let (Some(b), Some(a)) = (&outcome.before, &outcome.after) {
        println!(
            "held-out accuracy ({}): {:.1}% → {:.1}%",
            c.extract.name(),
            100.0 * b.accuracy(c.extract),
            100.0 * a.accuracy(c.extract)
        );
        // one process holds every record (under MPI each holds its share's)
        if b.records.len() == b.problems && a.records.len() == a.problems {
            let changed = |from: bool| {
                let flips = b.records.iter().zip(&a.records);
                flips
                    .filter(|(b, a)| b.correct == from && a.correct != from)
                    .count()
            };
            println!(
                "held-out changes: right only with the adapter {}, right only without it {} (of {})",
                changed(false),
                changed(true),
                b.problems
            );
        }
    }
    println!("wall time {:.1} min", started.elapsed().as_secs_f64() / 60.0);
    Ok(())
}
