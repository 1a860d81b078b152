//! `tinylora export-peft`: write an adapter as a Hugging Face PEFT adapter directory
//! (`adapter_config.json` + `adapter_model.safetensors`) that `PeftModel.from_pretrained`
//! loads onto the same base model.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tinylora_adapter::{frozen_modules, to_peft};
use tinylora_formats::ModelFile;
use tinylora_formats::atomic::check_can_write_in;
use tinylora_formats::atomic::write_atomic;

use crate::adapter_load::{read_adapter, svd_progress};

/// Arguments of `tinylora export-peft`.
#[derive(Args)]
pub struct ExportPeftArgs {
    /// Adapter file made by `tinylora train`.
    #[arg(long)]
    adapter: PathBuf,
    /// The base model it was made for (GGUF file or Hugging Face directory); its weights give
    /// the frozen factors PEFT stores.
    #[arg(long)]
    model: PathBuf,
    /// Output directory (created; its two files are replaced atomically).
    #[arg(long)]
    out: PathBuf,
}

/// Run `tinylora export-peft`.
pub fn run(args: ExportPeftArgs) -> anyhow::Result<()> {
    let file = ModelFile::open(&args.model)?;
    let adapter = read_adapter(&file, &args.adapter)?;
    // before the SVDs and the merge: a wrong --out is reported now, not after the work
    check_can_write_in(&args.out).context("--out")?;
    let cfg = &adapter.config;
    let groups = cfg.tie_groups(file.config.num_hidden_layers);
    let with_svd = cfg.mixing_matrices(0).is_some();
    let bar = svd_progress(if with_svd { groups.modules.len() } else { 0 }, cfg.rank)?;
    let frozen = frozen_modules(&file, cfg, &groups, &|| bar.inc(1))?; // empty for LoRA
    bar.finish_and_clear();
    let export = to_peft(&adapter, &file.config, &frozen)
        .with_context(|| format!("{} cannot be written in PEFT's format", args.adapter.display()))?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    write_atomic(&args.out.join("adapter_model.safetensors"), &export.safetensors)?;
    write_atomic(
        &args.out.join("adapter_config.json"),
        export.config_json.as_bytes(),
    )?;
    eprintln!(
        "wrote PEFT adapter {} ({} bytes of tensors)",
        args.out.display(),
        export.safetensors.len()
    );
    Ok(())
}
