//! Opening a model file and moving its weights to the chosen device, with a spinner.

use std::path::Path;
use std::time::{Duration, Instant};

use burn::tensor::Device;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use tinylora_adapter::AdaptedModel;
use tinylora_engine::{Transformer, cpu_device, default_device, gpu_device, hardware_gpu_available};
use tinylora_formats::ModelFile;

/// Where the model runs (`--device`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// The GPU when wgpu finds a hardware one, else the CPU (where wgpu would only offer a
    /// software rasterizer such as lavapipe, many times slower than burn's CPU backend).
    #[default]
    Auto,
    /// The first GPU through wgpu (Vulkan, Metal, DX12); lavapipe (software Vulkan) when
    /// there is none.
    Gpu,
    /// burn's Flex CPU backend (SIMD, every core): on a machine without a GPU, much faster
    /// than lavapipe.
    Cpu,
}

/// The `--device` flag, shared by every command that loads a model.
#[derive(Debug, Clone, Copy, Args)]
pub struct DeviceArgs {
    /// Where to run: auto (the GPU if wgpu finds a hardware one, else the CPU), gpu (wgpu:
    /// Vulkan, Metal, DX12; lavapipe without a GPU) or cpu (burn's Flex backend).
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
}

impl DeviceArgs {
    /// The burn device and its name; for `auto`, also why it is the CPU when it is.
    fn resolve(self) -> (Device, &'static str, Option<&'static str>) {
        // one process of several on a machine (mpirun, srun): its own GPU
        let gpu = || match launcher_local_rank() {
            Some(k) => (gpu_device(k), "the GPU of this process's local rank", None),
            None => (default_device(), "the GPU", None),
        };
        match self.device {
            DeviceArg::Gpu => gpu(),
            DeviceArg::Auto if hardware_gpu_available() => gpu(),
            DeviceArg::Auto => (
                cpu_device(),
                "the CPU",
                Some("no hardware GPU found (wgpu offers only a software adapter); --device gpu forces wgpu"),
            ),
            DeviceArg::Cpu => (cpu_device(), "the CPU", None),
        }
    }
}

/// This process's index among the processes a launcher started on this machine (Open MPI's
/// `mpirun`, MPICH's, Slurm's `srun`), when one started it.
fn launcher_local_rank() -> Option<usize> {
    ["OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
}

/// Open `path`, run `check` on the opened file, then load the weights onto `device` (with no
/// adapter yet). `check` refuses what can be refused before the slow weight load, such as an
/// adapter made for another model; what it returns is handed back.
pub fn load_model_checked<T>(
    path: &Path,
    device: DeviceArgs,
    check: impl FnOnce(&ModelFile) -> anyhow::Result<T>,
) -> anyhow::Result<(ModelFile, AdaptedModel, T)> {
    let start = Instant::now();
    let spinner =
        ProgressBar::new_spinner().with_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}")?);
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner.set_message(format!("opening {}", path.display()));
    let file = ModelFile::open(path)?;
    let checked = spinner.suspend(|| check(&file))?;
    let (device, name, why) = device.resolve();
    if let Some(why) = why {
        spinner.suspend(|| eprintln!("running on {name}: {why}"));
    }
    spinner.set_message(format!(
        "loading {} weights to {name}",
        file.config.architecture.name()
    ));
    let model = Transformer::load(&file, &device)?;
    spinner.finish_and_clear();
    eprintln!(
        "loaded {} ({}, {} layers, {:.1}M parameters) in {:.1}s",
        path.display(),
        file.config.architecture.name(),
        file.config.num_hidden_layers,
        file.config.parameter_count() as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );
    Ok((file, AdaptedModel::new(model), checked))
}
