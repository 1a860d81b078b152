//! `tinylora info`: what is in a model file.

use std::path::PathBuf;

use clap::Args;
use tinylora_formats::{ModelFile, WeightFormat, storage_plan};

/// Arguments of `tinylora info`.
#[derive(Args)]
pub struct InfoArgs {
    /// GGUF file or Hugging Face model directory.
    #[arg(long)]
    model: PathBuf,
    /// Also list every tensor with its shape and storage type.
    #[arg(long)]
    tensors: bool,
    /// Also list GGUF metadata (arrays summarised).
    #[arg(long)]
    metadata: bool,
    /// Show what `--weights FMT` keeps each stored type as, and the bytes the matrices take
    /// (auto, f32, f16, bf16, q8, q4).
    #[arg(long, default_value = "auto")]
    weights: WeightFormat,
}

/// Print the summary.
pub fn run(args: InfoArgs) -> anyhow::Result<()> {
    let file = ModelFile::open(&args.model)?;
    let c = &file.config;
    let tensors = file.tensor_summaries();
    println!("model:          {}", args.model.display());
    println!("architecture:   {}", c.architecture.name());
    println!(
        "parameters:     {} ({:.1}M)",
        c.parameter_count(),
        c.parameter_count() as f64 / 1e6
    );
    println!("layers:         {}", c.num_hidden_layers);
    println!("hidden / ffn:   {} / {}", c.hidden_size, c.intermediate_size);
    println!(
        "heads (q / kv): {} / {} × {}",
        c.num_attention_heads, c.num_key_value_heads, c.head_dim
    );
    println!("vocab:          {}", c.vocab_size);
    println!("rope θ / rms ε: {} / {:e}", c.rope_theta, c.rms_norm_eps);
    println!("tied embedding: {}", c.tie_word_embeddings);
    println!("qkv bias:       {}", c.attention_bias);
    println!("context:        {}", c.max_position_embeddings);
    println!("storage types:  {}", file.dtype_summary());
    println!("tensors:        {}", tensors.len());
    let plan = storage_plan(&tensors, args.weights);
    for (i, line) in plan.iter().enumerate() {
        let head = if i == 0 {
            format!("weights ({}):", args.weights)
        } else {
            String::new()
        };
        println!("{head:<16}{line}");
    }
    let bytes: usize = plan.iter().map(|l| l.bytes).sum();
    // the embedding is gathered on the host; tied, it is also the LM head on the device
    let embed = storage_plan(
        &tensors
            .iter()
            .filter(|t| ["token_embd.weight", "model.embed_tokens.weight"].contains(&t.name.as_str()))
            .cloned()
            .collect::<Vec<_>>(),
        args.weights,
    )
    .iter()
    .map(|l| l.bytes)
    .sum::<usize>();
    let on_device = if c.tie_word_embeddings {
        bytes
    } else {
        bytes - embed
    };
    println!(
        "weight bytes:   {:.1} MB on the device, {:.1} MB of embedding in host memory",
        on_device as f64 / 1e6,
        embed as f64 / 1e6
    );
    let tok = &file.tokenizer;
    let name = |t: &Option<(u32, String)>| t.as_ref().map_or("-".into(), |(id, s)| format!("{s} ({id})"));
    println!(
        "bos / eos:      {} / {}",
        name(&tok.bos_token),
        name(&tok.eos_token)
    );
    println!("stop tokens:    {:?}", tok.stop_ids);
    println!(
        "chat template:  {}",
        if file.chat_template.is_some() { "yes" } else { "no" }
    );
    if let (true, Some(meta)) = (args.metadata, file.gguf_metadata()) {
        println!();
        for (k, v) in meta {
            println!("{k} = {}", v.summary());
        }
    }
    if args.tensors {
        println!();
        for t in tensors {
            println!("{:<48} {:<8} {:?}", t.name, t.dtype, t.shape);
        }
    }
    Ok(())
}
