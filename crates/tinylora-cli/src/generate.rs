//! `tinylora generate`: text generation, streamed or as JSON lines.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;
use tinylora_engine::{DeltaMode, GenerateOptions, SamplingParams};
use tinylora_formats::TextStream;

use crate::adapter_load::attach_adapter_file;
use crate::load::{DeviceArgs, load_model};

/// Arguments of `tinylora generate`.
#[derive(Args)]
pub struct GenerateArgs {
    /// GGUF file or Hugging Face model directory.
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    device: DeviceArgs,
    /// The prompt text.
    #[arg(long)]
    prompt: String,
    /// Wrap the prompt in the model's chat template (as a user message).
    #[arg(long)]
    chat: bool,
    /// System message for --chat (default: the template's own).
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// Most new tokens per sample.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Keep only the k most likely tokens (0: off).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Nucleus sampling mass (1: off).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Random seed (each sample has its own stream derived from it).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Number of samples of the same prompt, generated as one batch.
    #[arg(long, default_value_t = 1)]
    num_samples: usize,
    /// Apply this adapter: a file made for --model by `tinylora train`, or a PEFT TinyLoRA /
    /// LoRA adapter directory. It is merged into the weights, so generation runs at the base
    /// model's speed.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Print one JSON object per sample (prompt_ids, output_ids, text, logprobs) instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct SampleJson<'a> {
    prompt_ids: &'a [u32],
    output_ids: &'a [u32],
    text: String,
    logprobs: &'a [f32],
    finish: &'static str,
}

/// Run generation.
pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    if args.num_samples == 0 {
        bail!("--num-samples must be at least 1");
    }
    if !(args.top_p > 0.0 && args.top_p <= 1.0) {
        bail!("--top-p must be in (0, 1], got {}", args.top_p);
    }
    if args.temperature < 0.0 {
        bail!("--temperature must be ≥ 0, got {}", args.temperature);
    }
    let (file, mut model) = load_model(&args.model, args.device)?;
    if let Some(path) = &args.adapter {
        attach_adapter_file(&file, &mut model, path)?;
        model.set_mode(DeltaMode::Merged)?;
    }
    let tok = &file.tokenizer;
    let text = if args.chat {
        let template = file
            .chat_template
            .as_ref()
            .with_context(|| format!("{} has no chat template; drop --chat", args.model.display()))?;
        template.user_turn(args.system.as_deref(), &args.prompt)?
    } else {
        args.prompt.clone()
    };
    let prompt_ids = tok.encode(&text)?;
    if prompt_ids.is_empty() {
        bail!("the prompt encodes to no tokens");
    }
    let opts = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        sampling: SamplingParams {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            seed: args.seed,
        },
        stop_ids: tok.stop_ids.clone(),
    };
    let prompts = vec![prompt_ids; args.num_samples];
    let stream = !args.json && args.num_samples == 1;
    let mut streamed = TextStream::new();
    let mut stdout = std::io::stdout();
    let start = Instant::now();
    let mut first_token = None;
    let gens = model.generate(&prompts, &opts, |_, id| {
        first_token.get_or_insert_with(|| start.elapsed());
        if stream {
            let _ = write!(stdout, "{}", streamed.push(tok, id));
            let _ = stdout.flush();
        }
    })?;
    let elapsed = start.elapsed().as_secs_f64();
    let new_tokens: usize = gens.iter().map(|g| g.output_ids.len()).sum();
    for (i, g) in gens.iter().enumerate() {
        let text = tok.decode(&g.output_ids)?;
        let finish = match g.finish {
            tinylora_engine::FinishReason::Stop => "stop",
            tinylora_engine::FinishReason::Length => "length",
        };
        if args.json {
            let line = SampleJson {
                prompt_ids: &g.prompt_ids,
                output_ids: &g.output_ids,
                text,
                logprobs: &g.logprobs,
                finish,
            };
            println!("{}", serde_json::to_string(&line)?);
        } else if stream {
            println!("{}", &text[streamed.emitted().len().min(text.len())..]);
        } else {
            println!(
                "--- sample {i} ({} tokens, {finish}) ---\n{text}",
                g.output_ids.len()
            );
        }
    }
    eprintln!(
        "{new_tokens} tokens in {elapsed:.2}s: {:.1} tokens/s (batch {}, prompt {} tokens, first token after {:.2}s)",
        new_tokens as f64 / elapsed,
        args.num_samples,
        prompts[0].len(),
        first_token.map_or(0.0, |d| d.as_secs_f64()),
    );
    Ok(())
}
