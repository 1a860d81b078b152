//! `tinylora eval`: greedy accuracy of a model (optionally with an adapter) on a problem file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tinylora_formats::ModelFile;
use tinylora_formats::atomic::{check_can_write, write_atomic};
use tinylora_train::prompt::{DEFAULT_INSTRUCTION, PromptStyle};
use tinylora_train::{EvalSettings, ExtractMode, Problem, evaluate, fit_prompts, load_problems};

use crate::adapter_load::load_model_with_adapter_checked;
use crate::load::DeviceArgs;

/// How questions become prompts (`tinylora eval` and `tinylora train`).
#[derive(Args)]
pub struct PromptArgs {
    /// Instruction appended to every question.
    #[arg(long, default_value = DEFAULT_INSTRUCTION)]
    instruction: String,
    /// Text that starts the assistant's answer inside the prompt (e.g. "The answer is"), so
    /// that a small model answers at once.
    #[arg(long, default_value = "")]
    answer_prefix: String,
    /// Leave out problems whose prompt (question, instruction and chat template) has more
    /// tokens than this; each one left out is named by its line. Without it, only prompts
    /// that fill the model's whole context are left out.
    #[arg(long)]
    pub max_prompt_tokens: Option<usize>,
}

impl PromptArgs {
    /// The prompt style these options describe.
    pub fn style(&self) -> PromptStyle {
        PromptStyle {
            instruction: self.instruction.clone(),
            answer_prefix: self.answer_prefix.clone(),
        }
    }

    /// The problems read from `data` whose prompts fit `--max-prompt-tokens` and leave room in
    /// the model's context for at least one new token; the others are reported on stderr.
    pub fn fitting(
        &self,
        data: &Path,
        problems: Vec<Problem>,
        file: &ModelFile,
    ) -> anyhow::Result<Vec<Problem>> {
        let context = file.config.max_position_embeddings;
        let limit = self
            .max_prompt_tokens
            .unwrap_or(usize::MAX)
            .min(context.saturating_sub(1));
        let total = problems.len();
        let (kept, left_out) = fit_prompts(problems, file, &self.style(), limit)?;
        if !left_out.is_empty() {
            const SHOWN: usize = 10;
            let mut lines: Vec<String> = left_out
                .iter()
                .take(SHOWN)
                .map(|t| format!("{}:{} ({} tokens)", data.display(), t.line, t.tokens))
                .collect();
            if left_out.len() > SHOWN {
                lines.push(format!("and {} more", left_out.len() - SHOWN));
            }
            eprintln!(
                "left out {} of {total} problems whose prompts have more than {limit} tokens (the model's context is {context}): {}",
                left_out.len(),
                lines.join(", ")
            );
        }
        if kept.is_empty() {
            anyhow::bail!(
                "{}: no problem has a prompt of at most {limit} tokens",
                data.display()
            );
        }
        Ok(kept)
    }
}

/// Arguments of `tinylora eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// GGUF file or Hugging Face model directory.
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    device: DeviceArgs,
    /// Adapter to apply (merged into the weights): a file from `tinylora train`, or a PEFT
    /// TinyLoRA / LoRA adapter directory (adapter_config.json + adapter_model.safetensors).
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Problems: JSON lines with question/answer (GSM8K `#### n`, or a bare answer) or prompt/answer.
    #[arg(long)]
    data: PathBuf,
    /// Evaluate the first N problems only.
    #[arg(long)]
    limit: Option<usize>,
    /// Extraction that decides `correct` in the per-problem file (all three are reported).
    #[arg(long, default_value = "strict")]
    extract: ExtractMode,
    /// Most new tokens per answer.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Problems generated together.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    #[command(flatten)]
    prompt: PromptArgs,
    /// Per-problem JSON lines (question, output, extracted, gold, correct).
    #[arg(long, default_value = "eval.jsonl")]
    out: PathBuf,
}

/// How often a log without a progress bar hears from a batch still generating.
const LOG_EVERY: Duration = Duration::from_secs(30);

/// The progress callback of [`tinylora_train::evaluate`] drawn on `bar`: problems done as
/// its position, tokens generated as its message. Where no bar is drawn (stderr is not a
/// terminal: logs, CI, `nohup`), a line when a batch has finished and every [`LOG_EVERY`]
/// within one, so a large batch's minutes of generation do not look like a hang.
pub fn show_progress(bar: ProgressBar) -> impl FnMut(usize, usize) + Send {
    let start = Instant::now();
    let mut logged = (0, start);
    move |done, tokens| {
        bar.set_position(done as u64);
        bar.set_message(format!("{tokens} tokens generated"));
        // called per generated token too
        if bar.is_hidden() && (done > logged.0 || logged.1.elapsed() >= LOG_EVERY) {
            logged = (done, Instant::now());
            eprintln!(
                "evaluated {done}/{} problems, {tokens} tokens generated, {:.0} s",
                bar.length().unwrap_or(0),
                start.elapsed().as_secs_f64()
            );
        }
    }
}

/// Run `tinylora eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let mut problems = load_problems(&args.data)?;
    if let Some(n) = args.limit {
        problems.truncate(n);
    }
    check_can_write(&args.out).context("--out")?;
    // prompts too long for the model are left out before the weights load
    let (file, model, problems) =
        load_model_with_adapter_checked(&args.model, args.device, args.adapter.as_deref(), |file| {
            args.prompt.fitting(&args.data, problems, file)
        })?;
    let bar = ProgressBar::new(problems.len() as u64).with_style(ProgressStyle::with_template(
        "evaluating [{bar:30}] {pos}/{len} problems, {msg} {elapsed} (eta {eta})",
    )?);
    let settings = EvalSettings {
        prompt: args.prompt.style(),
        max_new_tokens: args.max_new_tokens,
        batch: args.batch_size,
        extract: args.extract,
    };
    let report = evaluate(&model, &file, &problems, &settings, show_progress(bar.clone()))?;
    bar.finish_and_clear();
    let mut lines = Vec::new();
    for r in &report.records {
        writeln!(lines, "{}", serde_json::to_string(r)?)?;
    }
    for mode in ExtractMode::ALL {
        println!(
            "{:<8} accuracy {:>6.2}%  ({} problems)",
            mode.name(),
            100.0 * report.accuracy(mode),
            report.problems
        );
    }
    println!("{:.1} tokens/s, {:.1} s", report.tokens_per_s, report.seconds);
    write_atomic(&args.out, &lines).with_context(|| "writing the per-problem results")?;
    println!("per-problem results in {}", args.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::tests::unloadable_model_and_foreign_adapter;
    use crate::load::DeviceArg;
    use tinylora_formats::WeightFormat;

    #[test]
    fn an_adapter_for_another_model_is_refused_before_the_weights_load() {
        let (_tmp, model, adapter) = unloadable_model_and_foreign_adapter();
        let data = adapter.with_file_name("problems.jsonl");
        std::fs::write(&data, "{\"question\": \"a\", \"answer\": \"1\"}\n").unwrap();
        let args = |adapter: Option<PathBuf>| EvalArgs {
            model: model.clone(),
            device: DeviceArgs {
                device: DeviceArg::Cpu,
                weights: WeightFormat::Auto,
            },
            adapter,
            data: data.clone(),
            limit: None,
            extract: ExtractMode::Strict,
            max_new_tokens: 2,
            batch_size: 1,
            prompt: PromptArgs {
                instruction: String::new(),
                answer_prefix: String::new(),
                max_prompt_tokens: None,
            },
            out: data.with_file_name("eval.jsonl"),
        };
        let e = format!("{:#}", run(args(Some(adapter.clone()))).unwrap_err());
        assert!(
            e.contains("this adapter was made for base model 0123456789abcdef"),
            "{e}"
        );
        let e = format!("{:#}", run(args(None)).unwrap_err());
        assert!(e.contains("missing tensor"), "{e}");
    }
}
