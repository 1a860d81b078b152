//! `tinylora train grpo | sft`: train an adapter, with metrics, checkpoints, resumption and
//! before/after evaluation on held-out problems.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tinylora_adapter::{initial_values, plan};
use tinylora_engine::{AdapterMode, Transformer};
use tinylora_formats::ModelFile;
use tinylora_formats::atomic::write_atomic;
use tinylora_train::optim::AdamW;
use tinylora_train::trainer::append_metrics;
use tinylora_train::{
    AdapterRun, Aggregation, ExtractMode, GrpoConfig, GrpoTrainer, LossConfig, Problem, RunFiles, SftConfig,
    SftTrainer, TrainState, Trainer, evaluate, load_problems, split,
};

use crate::adapter_load::svd_progress;
use crate::eval::{PromptArgs, show_progress};
use crate::load::{DeviceArgs, load_model};
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
    /// Run directory: adapter.safetensors, state.json, metrics.jsonl, config.json.
    #[arg(long, default_value = "run")]
    out: PathBuf,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    adapter: AdapterArgs,
    /// Optimizer steps.
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
    #[command(flatten)]
    prompt: PromptArgs,
    /// Most new tokens per sample (rollouts and evaluation).
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Answer extraction for rewards and evaluation: strict, flexible or boxed.
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
    /// Rollout temperature.
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
    /// Do not divide advantages by the group's std (Dr. GRPO).
    #[arg(long)]
    no_std_scaling: bool,
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

/// Run `tinylora train …`.
pub fn run(cmd: TrainCommand) -> anyhow::Result<()> {
    match cmd {
        TrainCommand::Grpo(a) => {
            if a.group_size < 2 {
                bail!("--group-size must be at least 2 (advantages compare samples of one prompt)");
            }
            let c = &a.common;
            let config = GrpoConfig {
                group_size: a.group_size,
                prompts_per_step: a.prompts_per_step,
                max_new_tokens: c.max_new_tokens,
                temperature: a.temperature,
                steps: c.steps,
                lr: c.lr,
                warmup: c.warmup,
                max_grad_norm: c.max_grad_norm,
                weight_decay: c.weight_decay,
                scale_advantages: !a.no_std_scaling,
                loss: LossConfig {
                    eps_low: a.eps_low,
                    eps_high: a.eps_high,
                    beta: a.beta,
                    aggregation: a.loss,
                },
                extract: c.extract,
                prompt: c.prompt.style(),
                seed: c.seed,
            };
            let json = serde_json::to_value(&config)?;
            let (file, mut model) = load_model(&c.model, c.device)?;
            train(c, "GRPO", json, &file, &mut model, move |run, problems| {
                Box::new(GrpoTrainer {
                    run,
                    config,
                    problems,
                })
            })
        }
        TrainCommand::Sft(a) => {
            let c = &a.common;
            let config = SftConfig {
                batch_size: a.batch_size,
                steps: c.steps,
                lr: c.lr,
                warmup: c.warmup,
                max_grad_norm: c.max_grad_norm,
                prompt: c.prompt.style(),
                seed: c.seed,
            };
            let json = serde_json::to_value(&config)?;
            let (file, mut model) = load_model(&c.model, c.device)?;
            train(c, "SFT", json, &file, &mut model, move |run, problems| {
                Box::new(SftTrainer {
                    run,
                    config,
                    problems,
                })
            })
        }
    }
}

/// Evaluate `held_out` greedily and report it; `None` without held-out problems.
fn held_out_accuracy(
    model: &Transformer,
    file: &ModelFile,
    held_out: &[Problem],
    c: &CommonArgs,
    what: &str,
) -> anyhow::Result<Option<f64>> {
    if held_out.is_empty() {
        return Ok(None);
    }
    let bar = ProgressBar::new(held_out.len() as u64).with_style(ProgressStyle::with_template(
        "evaluating ({prefix}) [{bar:30}] {pos}/{len}, {msg} {elapsed}",
    )?);
    bar.set_prefix(what.to_string());
    let r = evaluate(
        model,
        file,
        held_out,
        &c.prompt.style(),
        c.max_new_tokens,
        16,
        c.extract,
        show_progress(&bar),
    )
    .map_err(anyhow::Error::msg)?;
    bar.finish_and_clear();
    let acc = r.accuracy(c.extract);
    eprintln!(
        "{what}: {:.1}% ({}) on {} held-out problems",
        100.0 * acc,
        c.extract.name(),
        r.problems
    );
    Ok(Some(acc))
}

/// The loop every method shares: attach (or resume), evaluate, step with metrics and
/// checkpoints until done or interrupted, evaluate again.
fn train<'m>(
    c: &CommonArgs,
    method: &str,
    method_config: serde_json::Value,
    file: &'m ModelFile,
    model: &'m mut Transformer,
    make: impl FnOnce(AdapterRun<'m>, Vec<Problem>) -> Box<dyn Trainer<'m> + 'm>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    if let Some(config) = &c.config {
        eprintln!(
            "flags from {} (command-line flags override them)",
            config.display()
        );
    }
    let files = RunFiles { dir: c.out.clone() };
    std::fs::create_dir_all(&files.dir).with_context(|| format!("creating {}", files.dir.display()))?;
    let adapter = c.adapter.config()?;
    let (train, held_out) = split(load_problems(&c.data)?, c.seed, c.eval_problems);
    if train.is_empty() {
        bail!(
            "{}: no problems left for training after holding out {}",
            c.data.display(),
            c.eval_problems
        );
    }
    let p = plan(&file.config, &adapter);
    let state = if c.resume {
        let path = files.state();
        let text = std::fs::read(&path).with_context(|| format!("--resume: reading {}", path.display()))?;
        let s: TrainState = serde_json::from_slice(&text)
            .with_context(|| format!("{}: not a training state", path.display()))?;
        if s.values.len() != p.params {
            bail!(
                "{}: {} values, but this adapter configuration has {}",
                path.display(),
                s.values.len(),
                p.params
            );
        }
        eprintln!("resuming at step {} of {}", s.step, c.steps);
        s
    } else {
        TrainState {
            step: 0,
            values: initial_values(&file.config, &adapter),
            optimizer: AdamW::new(p.params, c.weight_decay),
        }
    };
    let bar = svd_progress(p.modules, adapter.rank)?;
    model
        .attach_adapter(file, &adapter, &state.values, &|| bar.inc(1))
        .context("attaching the adapter")?;
    bar.finish_and_clear();
    eprintln!(
        "adapter: {:?} r={} u={} {}, {} trainable parameters ({} bytes); {} training problems, {} held out",
        adapter.method,
        adapter.rank,
        adapter.u,
        adapter.tying.describe(),
        p.params,
        p.bytes,
        train.len(),
        held_out.len()
    );
    let record = serde_json::json!({ "method": method, "adapter": adapter, "config": method_config, "model": c.model, "data": c.data });
    write_atomic(
        &files.dir.join("config.json"),
        serde_json::to_string_pretty(&record)?.as_bytes(),
    )?;
    let before = if state.step == 0 {
        model.set_adapter_mode(AdapterMode::Off);
        held_out_accuracy(model, file, &held_out, c, "base model")?
    } else {
        None
    };

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("installing the Ctrl-C handler")?;
    }
    let run = AdapterRun {
        file,
        model,
        adapter,
        state,
        files: files.clone(),
    };
    let mut trainer = make(run, train);
    let bar = ProgressBar::new(c.steps as u64)
        .with_position(trainer.run().state.step as u64)
        .with_style(ProgressStyle::with_template(&format!(
            "{method} [{{bar:30}}] {{pos}}/{{len}} steps {{elapsed}} (eta {{eta}}) {{msg}}"
        ))?);
    while trainer.run().state.step < c.steps {
        let m = trainer.step().map_err(anyhow::Error::msg)?;
        append_metrics(&files.metrics(), &m).map_err(anyhow::Error::msg)?;
        trainer.run().checkpoint().map_err(anyhow::Error::msg)?;
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
        if c.eval_every > 0 && m.step % c.eval_every == 0 && m.step < c.steps {
            let run = trainer.run();
            run.model.set_adapter_mode(AdapterMode::Merged);
            held_out_accuracy(run.model, file, &held_out, c, &format!("step {}", m.step))?;
        }
        if stop.load(Ordering::SeqCst) {
            bar.abandon();
            eprintln!(
                "interrupted: checkpoint at step {} saved in {}; continue with --resume",
                m.step,
                files.dir.display()
            );
            return Ok(());
        }
    }
    bar.finish();
    let run = trainer.run();
    let values = run.applied_values();
    run.model.set_adapter_mode(AdapterMode::Merged);
    let after = held_out_accuracy(run.model, file, &held_out, c, "with the adapter")?;
    println!(
        "adapter: {} ({} parameters, {} bytes)",
        files.adapter().display(),
        p.params,
        p.bytes
    );
    println!("metrics: {}", files.metrics().display());
    println!("values:  {values:?}");
    if let (Some(b), Some(a)) = (before, after) {
        println!(
            "held-out accuracy ({}): {:.1}% → {:.1}%",
            c.extract.name(),
            100.0 * b,
            100.0 * a
        );
    }
    println!("wall time {:.1} min", started.elapsed().as_secs_f64() / 60.0);
    Ok(())
}
