//! `tinylora export-peft`: write an adapter as a Hugging Face PEFT adapter directory
//! (`adapter_config.json` + `adapter_model.safetensors`) that `PeftModel.from_pretrained`
//! loads onto the same base model.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tinylora_adapter::{Method, TieGroups, frozen_modules, to_peft};
use tinylora_formats::ModelFile;
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
    let cfg = &adapter.config;
    let frozen = if cfg.method == Method::Lora {
        vec![]
    } else {
        let groups = TieGroups::new(file.config.num_hidden_layers, cfg.targets.len(), cfg.tying);
        let bar = svd_progress(groups.modules.len(), cfg.rank)?;
        let frozen = frozen_modules(&file, cfg, &groups, &|| bar.inc(1))?;
        bar.finish_and_clear();
        frozen
    };
    let export = to_peft(&adapter, &file.config, &frozen)
        .map_err(anyhow::Error::msg)
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
