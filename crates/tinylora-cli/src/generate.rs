//! `tinylora generate`: text generation, streamed or as JSON lines.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;
use tinylora_engine::{GenerateOptions, SamplingParams};
use tinylora_formats::TextStream;

use crate::adapter_load::load_model_with_adapter;
use crate::load::DeviceArgs;

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
    // written so that NaN fails the checks
    if !(args.top_p > 0.0 && args.top_p <= 1.0) {
        bail!("--top-p must be in (0, 1], got {}", args.top_p);
    }
    if !(args.temperature >= 0.0 && args.temperature.is_finite()) {
        bail!(
            "--temperature must be a finite number ≥ 0, got {}",
            args.temperature
        );
    }
    let (file, model) = load_model_with_adapter(&args.model, args.device, args.adapter.as_deref())?;
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
            first_stream: 0,
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

#[cfg(test)]
pub(crate) mod tests {
    use std::path::{Path, PathBuf};

    use serde_json::{Value, json};
    use tinylora_adapter::{AdapterConfig, AdapterFile};
    use tinylora_formats::{Architecture, HostTensor, ModelConfig, SaveDtype, TextTokenizer, write_hf_model};

    use super::*;
    use crate::load::DeviceArg;
    use tinylora_formats::WeightFormat;

    /// A model directory whose configuration and tokenizer open but whose weights cannot load
    /// (one tensor in all), and an adapter file made for another model, in a temporary
    /// directory (removed when the first value is dropped).
    pub(crate) fn unloadable_model_and_foreign_adapter() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let vocab: serde_json::Map<String, Value> = ["a", "b", "c", "d"]
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), json!(i)))
            .collect();
        let tokenizer = json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
            "decoder": null, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "a"}
        });
        let tok = TextTokenizer::from_hf_bytes(
            Path::new("tokenizer.json"),
            tokenizer.to_string().as_bytes(),
            &Value::Null,
            &[],
        )
        .unwrap();
        let config = ModelConfig {
            architecture: Architecture::Llama,
            hidden_size: 8,
            intermediate_size: 8,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            num_key_value_heads: 1,
            head_dim: 4,
            vocab_size: 4,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-5,
            tie_word_embeddings: true,
            attention_bias: false,
            max_position_embeddings: 64,
        };
        let norm = HostTensor {
            shape: vec![8],
            data: vec![1.0; 8],
        };
        let tensors = [("model.layers.0.input_layernorm.weight".to_string(), norm)];
        let model = dir.join("model");
        write_hf_model(&model, &config, &tok, None, &tensors, SaveDtype::F32, vec![]).unwrap();
        let adapter = dir.join("foreign.safetensors");
        AdapterFile {
            config: AdapterConfig::default(),
            base_fingerprint: "0123456789abcdef".into(),
            values: vec![0.0; 7],
        }
        .save(&adapter)
        .unwrap();
        (tmp, model, adapter)
    }

    fn args(model: &Path, adapter: Option<&Path>, temperature: f32, top_p: f32) -> GenerateArgs {
        GenerateArgs {
            model: model.to_path_buf(),
            device: DeviceArgs {
                device: DeviceArg::Cpu,
                weights: WeightFormat::Auto,
            },
            prompt: "a b".into(),
            chat: false,
            system: None,
            max_new_tokens: 2,
            temperature,
            top_k: 0,
            top_p,
            seed: 0,
            num_samples: 1,
            adapter: adapter.map(Path::to_path_buf),
            json: true,
        }
    }

    #[test]
    fn non_finite_or_out_of_range_sampling_options_are_refused() {
        let model = Path::new("no-such-model.gguf");
        for (temperature, top_p, expected) in [
            (
                f32::NAN,
                1.0,
                "--temperature must be a finite number ≥ 0, got NaN",
            ),
            (
                f32::INFINITY,
                1.0,
                "--temperature must be a finite number ≥ 0, got inf",
            ),
            (-0.5, 1.0, "--temperature must be a finite number ≥ 0, got -0.5"),
            (0.7, f32::NAN, "--top-p must be in (0, 1], got NaN"),
            (0.7, 0.0, "--top-p must be in (0, 1], got 0"),
        ] {
            let e = run(args(model, None, temperature, top_p))
                .unwrap_err()
                .to_string();
            assert!(e.contains(expected), "{e}");
        }
    }

    #[test]
    fn an_adapter_for_another_model_is_refused_before_the_weights_load() {
        let (_tmp, model, adapter) = unloadable_model_and_foreign_adapter();
        let e = format!("{:#}", run(args(&model, Some(&adapter), 0.0, 1.0)).unwrap_err());
        assert!(
            e.contains("this adapter was made for base model 0123456789abcdef"),
            "{e}"
        );
        // without the adapter the weights are loaded, and fail: the check came first
        let e = format!("{:#}", run(args(&model, None, 0.0, 1.0)).unwrap_err());
        assert!(e.contains("missing tensor"), "{e}");
    }
}
