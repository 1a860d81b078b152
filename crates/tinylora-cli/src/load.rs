//! Opening a model file and moving its weights to the chosen device, with a spinner.

use std::path::Path;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use tinylora_engine::{Transformer, cpu_device, default_device};
use tinylora_formats::ModelFile;

/// Where the model runs (`--device`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// The first GPU through wgpu (Vulkan, Metal, DX12); lavapipe (software Vulkan) when
    /// there is none.
    #[default]
    Gpu,
    /// burn's Flex CPU backend (SIMD, every core): on a machine without a GPU, much faster
    /// than lavapipe.
    Cpu,
}

impl DeviceArg {
    fn describe(self) -> &'static str {
        match self {
            DeviceArg::Gpu => "the GPU",
            DeviceArg::Cpu => "the CPU",
        }
    }
}

/// Open `path` and load it onto `device`.
pub fn load_model(path: &Path, device: DeviceArg) -> anyhow::Result<(ModelFile, Transformer)> {
    let start = Instant::now();
    let spinner =
        ProgressBar::new_spinner().with_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}")?);
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner.set_message(format!("opening {}", path.display()));
    let file = ModelFile::open(path)?;
    spinner.set_message(format!(
        "loading {} weights to {}",
        file.config.architecture.name(),
        device.describe()
    ));
    let model = match device {
        DeviceArg::Gpu => Transformer::load(&file, &default_device())?,
        DeviceArg::Cpu => Transformer::load(&file, &cpu_device())?,
    };
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
