//! Opening a model file and moving its weights to the GPU, with a spinner.

use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tinylora_engine::{Transformer, default_device};
use tinylora_formats::ModelFile;

/// Open `path` and load it onto the default GPU.
pub fn load_model(path: &Path) -> anyhow::Result<(ModelFile, Transformer)> {
    let start = Instant::now();
    let spinner =
        ProgressBar::new_spinner().with_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}")?);
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner.set_message(format!("opening {}", path.display()));
    let file = ModelFile::open(path)?;
    spinner.set_message(format!(
        "loading {} weights to the GPU",
        file.config.architecture.name()
    ));
    let model = Transformer::load(&file, &default_device())?;
    spinner.finish_and_clear();
    eprintln!(
        "loaded {} ({}, {} layers, {:.1}M parameters) in {:.1}s",
        path.display(),
        file.config.architecture.name(),
        file.config.num_hidden_layers,
        file.config.parameter_count() as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );
    Ok((file, model))
}
