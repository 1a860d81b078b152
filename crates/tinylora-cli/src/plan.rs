//! `tinylora plan`: how many trainable numbers an adapter has, from the model config alone.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use tinylora_adapter::{AdapterConfig, Method, Precision, Tying, budget_options, plan};
use tinylora_formats::{ModuleKind, read_model_config};

/// Adapter options shared by the commands that build adapters.
#[derive(Args, Clone)]
pub struct AdapterArgs {
    /// Parametrization: tinylora (ΔW = U Σ (Σᵢ vᵢ Pᵢ) Vᵀ), lora-xs (U Σ R Vᵀ) or lora (B A).
    #[arg(long, default_value = "tinylora")]
    method: Method,
    /// Frozen rank r of the truncated SVD (the paper finds r = 2 best).
    #[arg(long, default_value_t = 2)]
    rank: usize,
    /// Trainable numbers per tie group (TinyLoRA).
    #[arg(long, default_value_t = 1)]
    u: usize,
    /// Weight tying: none, tiled (n_tie neighbouring modules share), structured (same-type
    /// modules of n_tie neighbouring layers share) or full (one group for the whole model).
    #[arg(long, default_value = "none")]
    tying: String,
    /// Group size for --tying tiled / structured.
    #[arg(long, default_value_t = 1)]
    n_tie: usize,
    /// Adapted projections, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "q,k,v,o,gate,up,down")]
    targets: Vec<ModuleKind>,
    /// Precision of the trainable numbers: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    precision: Precision,
    /// Seed of the fixed random projections Pᵢ (and of LoRA's initial A); stored in the
    /// adapter file.
    #[arg(long, default_value_t = 0)]
    projection_seed: u64,
}

impl AdapterArgs {
    /// The validated adapter configuration.
    pub fn config(&self) -> anyhow::Result<AdapterConfig> {
        let cfg = AdapterConfig {
            method: self.method,
            rank: self.rank,
            u: self.u,
            tying: Tying::parse(&self.tying, self.n_tie)?,
            targets: self.targets.clone(),
            precision: self.precision,
            projection_seed: self.projection_seed,
            ..AdapterConfig::default()
        };
        Ok(cfg.validated()?)
    }
}

/// Arguments of `tinylora plan`.
#[derive(Args)]
pub struct PlanArgs {
    /// A config.json, a Hugging Face directory or a GGUF file (weights are not read).
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    adapter: AdapterArgs,
    /// Instead, list TinyLoRA configurations with exactly this many trainable numbers.
    #[arg(long)]
    budget: Option<usize>,
}

/// Print the plan.
pub fn run(args: PlanArgs) -> anyhow::Result<()> {
    let model = read_model_config(&args.model)?;
    let adapter = args.adapter.config()?;
    println!(
        "model: {} ({}, {} layers, hidden {})",
        args.model.display(),
        model.architecture.name(),
        model.num_hidden_layers,
        model.hidden_size
    );
    match args.budget {
        None => {
            let p = plan(&model, &adapter);
            println!("method:            {:?} (r = {})", adapter.method, adapter.rank);
            println!("n (layers):        {}", p.n_layers);
            println!(
                "m (modules/layer): {} ({})",
                p.modules_per_layer,
                adapter
                    .targets
                    .iter()
                    .map(|k| k.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            println!("u:                 {}", adapter.u);
            println!("tying:             {}", adapter.tying.describe());
            println!("tie groups:        {}", p.groups);
            println!("N_params:          {}", p.params);
            println!("bytes:             {} ({:?})", p.bytes, adapter.precision);
        }
        Some(0) => bail!("--budget must be at least 1"),
        Some(budget) => {
            let options = budget_options(&model, &adapter, budget);
            if options.is_empty() {
                bail!("no TinyLoRA configuration has exactly {budget} parameters on this model");
            }
            println!(
                "TinyLoRA configurations with exactly {budget} trainable numbers (least sharing first):"
            );
            for (cfg, p) in options {
                println!(
                    "  --u {:<4} --tying {:<22} groups {:<5} bytes {}",
                    cfg.u,
                    match cfg.tying {
                        Tying::Tiled { n_tie } => format!("tiled --n-tie {n_tie}"),
                        other => other.describe(),
                    },
                    p.groups,
                    p.bytes
                );
            }
        }
    }
    Ok(())
}
