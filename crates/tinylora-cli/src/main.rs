//! `tinylora`: train and apply TinyLoRA adapters on any GPU through WebGPU.

mod adapter_load;
mod eval;
mod export_peft;
mod generate;
mod info;
mod load;
mod merge;
#[cfg(feature = "mpi")]
mod mpi_collective;
mod plan;
mod plot;
mod train;
mod train_config;

use clap::{Parser, Subcommand};

/// TinyLoRA on WebGPU: run language models, train tiny adapters with GRPO, apply them.
///
/// --model takes a GGUF file or a Hugging Face directory (config.json, model.safetensors or a
/// sharded index, tokenizer.json). Fetch the default model with scripts/fetch_models.sh.
#[derive(Parser)]
#[command(name = "tinylora", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a model's architecture, parameter count, storage types and tensors.
    Info(info::InfoArgs),
    /// Generate text with a model (greedy or sampled, batched over --num-samples).
    Generate(generate::GenerateArgs),
    /// Count an adapter's trainable parameters from the model config alone (or, with
    /// --budget N, list TinyLoRA configurations with exactly N).
    Plan(plan::PlanArgs),
    /// Write the base model with an adapter merged into its weights (W + ΔW) as a Hugging
    /// Face-style directory.
    Merge(merge::MergeArgs),
    /// Write an adapter as a Hugging Face PEFT adapter directory (TinyLoRA or LoRA) that
    /// `PeftModel.from_pretrained` loads onto the same base model.
    ExportPeft(export_peft::ExportPeftArgs),
    /// Greedy accuracy on a problem file (GSM8K, AIME-style or prompt/answer JSON lines),
    /// under strict, flexible and boxed answer extraction.
    Eval(eval::EvalArgs),
    /// Draw reward, accuracy and response length over steps of one or more runs (SVG).
    Plot(plot::PlotArgs),
    /// Train an adapter.
    #[command(subcommand)]
    Train(Box<train::TrainCommand>),
}

fn main() -> std::process::ExitCode {
    let cli = match train_config::expand::<Cli>(std::env::args_os().collect()) {
        Ok(args) => Cli::parse_from(args),
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Info(args) => info::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Merge(args) => merge::run(args),
        Command::ExportPeft(args) => export_peft::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Train(cmd) => train::run(*cmd),
        Command::Plot(args) => plot::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // said so already; 130 as for a shell's interrupted command
        Err(e) if e.is::<train::Interrupted>() => std::process::ExitCode::from(130),
        Err(e) => {
            // the whole cause chain on one line: "what failed: why"
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
