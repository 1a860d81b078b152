//! Reading an adapter file for a model and attaching it, with a progress bar over the SVDs.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use tinylora_adapter::{AdapterFile, PeftAdapter, TieGroups, is_peft_dir, plan};
use tinylora_engine::Transformer;
use tinylora_formats::ModelFile;

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

/// Read the adapter at `path` and attach it to `model` (on the activation path): a tinylora
/// adapter file, or a PEFT adapter directory (TinyLoRA or LoRA, its stored factors used as
/// they are).
pub fn attach_adapter_file(file: &ModelFile, model: &mut Transformer, path: &Path) -> anyhow::Result<()> {
    if is_peft_dir(path) {
        let peft = PeftAdapter::load(path)?;
        model.attach_peft(&peft)?;
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
    let adapter = read_adapter(file, path)?;
    let start = Instant::now();
    let modules = TieGroups::new(
        file.config.num_hidden_layers,
        adapter.config.targets.len(),
        adapter.config.tying,
    )
    .modules
    .len();
    let bar = svd_progress(modules, adapter.config.rank)?;
    if adapter.config.method == tinylora_adapter::Method::Lora {
        bar.set_length(0); // LoRA has no frozen SVD
    }
    model
        .attach_adapter(file, &adapter.config, &adapter.values, &|| bar.inc(1))
        .with_context(|| format!("applying adapter {}", path.display()))?;
    bar.finish_and_clear();
    eprintln!("adapter attached in {:.1}s", start.elapsed().as_secs_f64());
    Ok(())
}
