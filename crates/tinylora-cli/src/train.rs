//! `tinylora train grpo`: train an adapter with GRPO, with metrics, checkpoints, resumption and
//! before/after evaluation on held-out problems.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tinylora_adapter::{initial_values, plan};
use tinylora_engine::AdapterMode;
use tinylora_train::optim::AdamW;
use tinylora_train::prompt::{DEFAULT_INSTRUCTION, PromptStyle};
use tinylora_train::trainer::append_metrics;
use tinylora_train::{
    Aggregation, ExtractMode, GrpoConfig, GrpoTrainer, LossConfig, RunFiles, TrainState, evaluate,
    load_problems, split,
};

use crate::adapter_load::svd_progress;
use crate::load::load_model;
use crate::plan::AdapterArgs;

/// `tinylora train …`
#[derive(Subcommand)]
pub enum TrainCommand {
    /// Reinforcement learning with group-relative advantages (SPEC.md §2).
    Grpo(GrpoArgs),
}

/// Arguments of `tinylora train grpo`.
#[derive(Args)]
pub struct GrpoArgs {
    /// GGUF file or Hugging Face model directory.
    #[arg(long)]
    model: PathBuf,
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
    /// Samples per prompt G.
    #[arg(long, default_value_t = 8)]
    group_size: usize,
    /// Prompts per step.
    #[arg(long, default_value_t = 4)]
    prompts_per_step: usize,
    /// Most new tokens per sample.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Rollout temperature.
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Optimizer steps.
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// Peak learning rate (TinyLoRA's few numbers take large steps).
    #[arg(long, default_value_t = 0.02)]
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
    /// Reward extraction: strict, flexible or boxed.
    #[arg(long, default_value = "strict")]
    extract: ExtractMode,
    /// Instruction appended to every question.
    #[arg(long, default_value = DEFAULT_INSTRUCTION)]
    instruction: String,
    /// Text that starts the assistant's answer inside the prompt (e.g. "The answer is"), so
    /// that a small model answers at once.
    #[arg(long, default_value = "")]
    answer_prefix: String,
    /// Problems held out of training and evaluated before and after (0: none).
    #[arg(long, default_value_t = 0)]
    eval_problems: usize,
    /// Also evaluate every N steps (0: only before and after).
    #[arg(long, default_value_t = 0)]
    eval_every: usize,
    /// Seed of the split, problem order and samples.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Run `tinylora train …`.
pub fn run(cmd: TrainCommand) -> anyhow::Result<()> {
    match cmd {
        TrainCommand::Grpo(args) => grpo(args),
    }
}

fn grpo(args: GrpoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let files = RunFiles {
        dir: args.out.clone(),
    };
    std::fs::create_dir_all(&files.dir).with_context(|| format!("creating {}", files.dir.display()))?;
    let adapter = args.adapter.config()?;
    let config = GrpoConfig {
        group_size: args.group_size,
        prompts_per_step: args.prompts_per_step,
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        steps: args.steps,
        lr: args.lr,
        warmup: args.warmup,
        max_grad_norm: args.max_grad_norm,
        weight_decay: args.weight_decay,
        scale_advantages: !args.no_std_scaling,
        loss: LossConfig {
            eps_low: args.eps_low,
            eps_high: args.eps_high,
            beta: args.beta,
            aggregation: args.loss,
        },
        extract: args.extract,
        prompt: PromptStyle {
            instruction: args.instruction.clone(),
            answer_prefix: args.answer_prefix.clone(),
        },
        seed: args.seed,
    };
    if config.group_size < 2 {
        bail!("--group-size must be at least 2 (advantages compare samples of one prompt)");
    }
    let all = load_problems(&args.data)?;
    let (train, held_out) = split(all, args.seed, args.eval_problems);
    if train.is_empty() {
        bail!(
            "{}: no problems left for training after holding out {}",
            args.data.display(),
            args.eval_problems
        );
    }
    let (file, mut model) = load_model(&args.model)?;
    let p = plan(&file.config, &adapter);
    let state = if args.resume {
        let text = std::fs::read(files.state())
            .with_context(|| format!("--resume: reading {}", files.state().display()))?;
        let s: TrainState = serde_json::from_slice(&text)
            .with_context(|| format!("{}: not a training state", files.state().display()))?;
        if s.values.len() != p.params {
            bail!(
                "{}: {} values, but this adapter configuration has {}",
                files.state().display(),
                s.values.len(),
                p.params
            );
        }
        eprintln!("resuming at step {} of {}", s.step, config.steps);
        s
    } else {
        TrainState {
            step: 0,
            values: initial_values(&file.config, &adapter),
            optimizer: AdamW::new(p.params, config.weight_decay),
        }
    };
    let bar = svd_progress(p.modules, adapter.rank)?;
    model
        .attach_adapter(&file, &adapter, &state.values, &|| bar.inc(1))
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
    let run_config =
        serde_json::json!({ "adapter": adapter, "grpo": config, "model": args.model, "data": args.data });
    tinylora_formats::atomic::write_atomic(
        &files.dir.join("config.json"),
        serde_json::to_string_pretty(&run_config)?.as_bytes(),
    )?;

    let eval = |model: &tinylora_engine::Transformer, what: &str| -> anyhow::Result<Option<f64>> {
        if held_out.is_empty() {
            return Ok(None);
        }
        let bar = ProgressBar::new(held_out.len() as u64).with_style(ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} {elapsed}",
        )?);
        bar.set_message(format!("evaluating ({what})"));
        let r = evaluate(
            model,
            &file,
            &held_out,
            &config.prompt,
            config.max_new_tokens,
            16,
            config.extract,
            |d| bar.set_position(d as u64),
        )
        .map_err(anyhow::Error::msg)?;
        bar.finish_and_clear();
        let acc = r.accuracy(config.extract);
        eprintln!(
            "{what}: {:.1}% ({}) on {} held-out problems",
            100.0 * acc,
            config.extract.name(),
            r.problems
        );
        Ok(Some(acc))
    };
    let before = if state.step == 0 {
        model.set_adapter_mode(AdapterMode::Off);
        eval(&model, "base model")?
    } else {
        None
    };

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("installing the Ctrl-C handler")?;
    }
    let steps = config.steps;
    let mut trainer = GrpoTrainer {
        file: &file,
        model: &mut model,
        adapter: adapter.clone(),
        config: config.clone(),
        problems: train,
        state,
        files: files.clone(),
    };
    let bar = ProgressBar::new(steps as u64)
        .with_position(trainer.state.step as u64)
        .with_style(ProgressStyle::with_template(
            "GRPO [{bar:30}] {pos}/{len} steps {elapsed} (eta {eta}) {msg}",
        )?);
    while trainer.state.step < steps {
        let m = trainer.step().map_err(anyhow::Error::msg)?;
        append_metrics(&files.metrics(), &m).map_err(anyhow::Error::msg)?;
        trainer.checkpoint().map_err(anyhow::Error::msg)?;
        bar.set_position(m.step as u64);
        bar.set_message(format!(
            "reward {:.2} ±{:.2}, flat groups {:.0}%, len {:.0}, |g| {:.2e}, rollout {:.0}s train {:.0}s",
            m.reward_mean,
            m.reward_std,
            100.0 * m.zero_variance_groups,
            m.response_len,
            m.grad_norm,
            m.rollout_s,
            m.train_s
        ));
        if args.eval_every > 0 && m.step % args.eval_every == 0 && m.step < steps {
            trainer.model.set_adapter_mode(AdapterMode::Merged);
            eval(trainer.model, &format!("step {}", m.step))?;
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
    let trained = trainer.adapter_file();
    trainer.model.set_adapter_mode(AdapterMode::Merged);
    let after = eval(trainer.model, "with the adapter")?;
    println!(
        "adapter: {} ({} parameters, {} bytes)",
        files.adapter().display(),
        p.params,
        p.bytes
    );
    println!("metrics: {}", files.metrics().display());
    println!("values:  {:?}", trained.values);
    if let (Some(b), Some(a)) = (before, after) {
        println!(
            "held-out accuracy ({}): {:.1}% → {:.1}%",
            config.extract.name(),
            100.0 * b,
            100.0 * a
        );
    }
    println!("wall time {:.1} min", started.elapsed().as_secs_f64() / 60.0);
    Ok(())
}
