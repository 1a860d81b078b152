//! Reading an adapter file for a model and attaching it, with a progress bar over the SVDs.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use tinylora_adapter::{AdaptedModel, AdapterFile, AdapterParts, PeftAdapter, is_peft_dir, plan};
use tinylora_engine::DeltaMode;
use tinylora_formats::ModelFile;

use crate::load::{DeviceArgs, load_model_checked};

/// A bar counting the frozen SVDs of `modules` modules.
pub fn svd_progress(modules: usize, rank: usize) -> anyhow::Result<ProgressBar> {
    let bar = ProgressBar::new(modules as u64).with_style(ProgressStyle::with_template(
        "{msg} [{bar:30}] {pos}/{len} modules {elapsed}",
    )?);
    bar.set_message(format!("rank-{rank} SVD of the target weights"));
    Ok(bar)
}

/// Load `path`, check that it was made for `file`'s model, and describe it on stderr.
pub fn read_adapter(file: &ModelFile, path: &Path) -> anyhow::Result<AdapterFile> {
    let adapter = AdapterFile::load(path)?;
    adapter.check_base(path, &file.fingerprint())?;
    let p = plan(&file.config, &adapter.config);
    eprintln!(
        "adapter {}: {:?}, {} trainable parameters ({} bytes, {} tie groups)",
        path.display(),
        adapter.config.method,
        p.params,
        p.bytes,
        p.groups
    );
    Ok(adapter)
}

/// An adapter read from disk (and checked against the model file), not yet attached.
pub enum ReadAdapter {
    /// A tinylora adapter file made for the model.
    File(AdapterFile),
    /// A PEFT adapter directory.
    Peft(PeftAdapter),
}

/// Read the adapter at `path`, a tinylora adapter file or a PEFT adapter directory, and check
/// that a file was made for `file`'s model: cheap, so call it before the weights load.
pub fn read_any_adapter(file: &ModelFile, path: &Path) -> anyhow::Result<ReadAdapter> {
    Ok(if is_peft_dir(path) {
        ReadAdapter::Peft(PeftAdapter::load(path)?)
    } else {
        ReadAdapter::File(read_adapter(file, path)?)
    })
}

/// Attach `adapter`, read from `path` by [`read_any_adapter`], to `model` (on the activation
/// path); a PEFT adapter's stored factors (TinyLoRA or LoRA) are used as they are.
pub fn attach_adapter(
    file: &ModelFile,
    model: &mut AdaptedModel,
    path: &Path,
    adapter: ReadAdapter,
) -> anyhow::Result<()> {
    let adapter = match adapter {
        ReadAdapter::File(adapter) => adapter,
        ReadAdapter::Peft(peft) => {
            model.attach(peft.to_parts(&file.config)?)?;
            let params: usize = peft.values.iter().map(Vec::len).sum();
            eprintln!(
                "PEFT adapter {}: {:?}, rank {}, {} modules, {params} values in {} tie groups",
                path.display(),
                peft.method,
                peft.rank,
                peft.modules.len(),
                peft.values.len()
            );
            return Ok(());
        }
    };
    let start = Instant::now();
    let cfg = &adapter.config;
    let modules = if cfg.mixing_matrices(0).is_some() {
        cfg.tie_groups(file.config.num_hidden_layers).modules.len()
    } else {
        0 // LoRA has no frozen SVD
    };
    let bar = svd_progress(modules, cfg.rank)?;
    AdapterParts::build(file, cfg, &adapter.values, &|| bar.inc(1))
        .and_then(|parts| model.attach(parts))
        .with_context(|| format!("applying adapter {}", path.display()))?;
    bar.finish_and_clear();
    eprintln!("adapter attached in {:.1}s", start.elapsed().as_secs_f64());
    Ok(())
}

/// Open the model at `path` and, with `adapter`, read that adapter and check it against the
/// model file before the weights load, then attach it merged into the weights.
pub fn load_model_with_adapter(
    path: &Path,
    device: DeviceArgs,
    adapter: Option<&Path>,
) -> anyhow::Result<(ModelFile, AdaptedModel)> {
    let (file, model, ()) = load_model_with_adapter_checked(path, device, adapter, |_| Ok(()))?;
    Ok((file, model))
}

/// [`load_model_with_adapter`] that also runs `check` on the opened file before the weights
/// load (what it returns is handed back).
pub fn load_model_with_adapter_checked<T>(
    path: &Path,
    device: DeviceArgs,
    adapter: Option<&Path>,
    check: impl FnOnce(&ModelFile) -> anyhow::Result<T>,
) -> anyhow::Result<(ModelFile, AdaptedModel, T)> {
    let (file, mut model, (read, checked)) = load_model_checked(path, device, |file| {
        let read = adapter.map(|p| read_any_adapter(file, p)).transpose()?;
        Ok((read, check(file)?))
    })?;
    if let (Some(adapter_path), Some(read)) = (adapter, read) {
        attach_adapter(&file, &mut model, adapter_path, read)?;
        model.set_mode(DeltaMode::Merged)?;
    }
    Ok((file, model, checked))
}
