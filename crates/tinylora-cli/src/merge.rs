//! `tinylora merge`: write the base model with W + ΔW in every adapted module as a Hugging
//! Face-style model directory (loads in `transformers` and in tinylora as a plain model).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use tinylora_adapter::{frozen_modules, group_offsets, group_sizes, lora_delta};
use tinylora_formats::atomic::check_can_write_in;
use tinylora_formats::{ModelFile, SaveDtype, hf_tensor_names, write_hf_model};

use crate::adapter_load::{read_adapter, svd_progress};

/// Arguments of `tinylora merge`.
#[derive(Args)]
pub struct MergeArgs {
    /// Base model: GGUF file or Hugging Face model directory.
    #[arg(long)]
    model: PathBuf,
    /// Adapter file made for that model (by `tinylora train`).
    #[arg(long)]
    adapter: PathBuf,
    /// Output directory (created; its model files are replaced atomically).
    #[arg(long)]
    out: PathBuf,
    /// Weight storage type: f32 keeps a tiny update exactly; bf16 halves the size but rounds
    /// W + ΔW to 8 significant bits, which can erase small updates.
    #[arg(long, default_value = "f32")]
    dtype: SaveDtype,
}

/// Run `tinylora merge`.
pub fn run(args: MergeArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let file = ModelFile::open(&args.model)?;
    let adapter = read_adapter(&file, &args.adapter)?;
    // before the SVDs and the merge: a wrong --out is reported now, not after the work
    check_can_write_in(&args.out).context("--out")?;
    let cfg = &adapter.config;
    let groups = cfg.tie_groups(file.config.num_hidden_layers);
    let sizes = group_sizes(&file.config, cfg);
    if adapter.values.len() != sizes.iter().sum::<usize>() {
        bail!(
            "{}: {} values, but its configuration needs {} on this model",
            args.adapter.display(),
            adapter.values.len(),
            sizes.iter().sum::<usize>()
        );
    }
    let offsets = group_offsets(&sizes);
    let with_svd = cfg.mixing_matrices(0).is_some();
    let bar = svd_progress(if with_svd { groups.modules.len() } else { 0 }, cfg.rank)?;
    let frozen = frozen_modules(&file, cfg, &groups, &|| bar.inc(1))?; // empty for LoRA
    bar.finish_and_clear();
    // weight name → (module, tie group)
    let targets: HashMap<String, (usize, usize)> = groups
        .modules
        .iter()
        .zip(&groups.group)
        .enumerate()
        .map(|(k, (&slot, &g))| (slot.kind.weight_name(slot.layer), (k, g)))
        .collect();
    let mut tensors = Vec::new();
    for name in hf_tensor_names(&file.config) {
        let mut t = file.load_any(&name)?;
        if let Some(&(k, g)) = targets.get(&name) {
            let v = &adapter.values[offsets[g]..offsets[g] + sizes[g]];
            // with frozen factors the values mix them; without (LoRA) they are the factors
            let delta = match frozen.get(k) {
                Some(m) => m.delta(v),
                None => lora_delta(v, t.shape[0], t.shape[1], cfg.rank),
            };
            t.data.iter_mut().zip(delta).for_each(|(w, d)| *w += d);
        }
        tensors.push((name, t));
    }
    let metadata = vec![
        ("tinylora_adapter_config".to_string(), serde_json::to_string(cfg)?),
        (
            "tinylora_base_fingerprint".to_string(),
            adapter.base_fingerprint.clone(),
        ),
    ];
    let template = file.chat_template.as_ref().map(|t| t.source());
    write_hf_model(
        &args.out,
        &file.config,
        &file.tokenizer,
        template,
        &tensors,
        args.dtype,
        metadata,
    )
    .with_context(|| format!("writing the merged model to {}", args.out.display()))?;
    eprintln!(
        "merged {} modules into {} in {:.1}s",
        targets.len(),
        args.out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
