//! Opening a model file and moving its weights to the chosen device, with a spinner.

use std::path::Path;
use std::time::{Duration, Instant};

use burn::tensor::Device;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tinylora_adapter::AdaptedModel;
use tinylora_engine::{
    Transformer, cpu_device, default_device, device::is_cpu, gpu_device, hardware_gpu_available,
    shader_f16_offered, stages_f16,
};
use tinylora_formats::quant::GgmlType;
use tinylora_formats::{ModelFile, WeightFormat};

/// Where the model runs (`--device`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeviceArg {
    /// The GPU when wgpu finds a hardware one, else the CPU (where wgpu would only offer a
    /// software rasterizer such as lavapipe, many times slower than burn's CPU backend).
    #[default]
    Auto,
    /// A GPU through wgpu (Vulkan, Metal, DX12): discrete GPU K with `gpu:K`; else the
    /// launcher's local rank's GPU under `mpirun`/`srun`, or the first GPU (lavapipe, software
    /// Vulkan, when there is none).
    Gpu(Option<usize>),
    /// burn's Flex CPU backend (SIMD, every core): on a machine without a GPU, much faster
    /// than lavapipe.
    Cpu,
}

impl std::str::FromStr for DeviceArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DeviceArg::Auto),
            "gpu" => Ok(DeviceArg::Gpu(None)),
            "cpu" => Ok(DeviceArg::Cpu),
            _ => s
                .strip_prefix("gpu:")
                .and_then(|k| k.parse().ok())
                .map(|k| DeviceArg::Gpu(Some(k)))
                .ok_or_else(|| format!("`{s}`: expected auto, gpu, gpu:K (K = 0, 1, …) or cpu")),
        }
    }
}

/// The `--device` flag, shared by every command that loads a model.
#[derive(Debug, Clone, Copy, Args)]
pub struct DeviceArgs {
    /// Where to run: auto (the GPU if wgpu finds a hardware one, else the CPU), gpu (wgpu:
    /// Vulkan, Metal, DX12; under mpirun/srun the GPU of the process's local rank; lavapipe
    /// without a GPU), gpu:K (discrete GPU K) or cpu (burn's Flex backend).
    #[arg(long, default_value = "auto")]
    pub device: DeviceArg,
    /// How the weight matrices are kept on the device: auto (as the file stores them:
    /// quantized blocks stay blocks and are multiplied as they are, F16/BF16 stay half, f32
    /// only where the file has f32), f32, f16, bf16, q8 (at most 8 bits: blocks stay, the
    /// others become Q8_0) or q4 (Q4_0/Q4_1/Q4_K blocks stay, the others become Q4_1). Norms
    /// and biases are always f32. An adapter on blocks runs beside the weights (never merged).
    #[arg(long, default_value = "auto")]
    pub weights: WeightFormat,
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
            DeviceArg::Gpu(Some(k)) => (gpu_device(k), "the chosen GPU", None),
            DeviceArg::Gpu(None) => gpu(),
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
    device_args: DeviceArgs,
    check: impl FnOnce(&ModelFile) -> anyhow::Result<T>,
) -> anyhow::Result<(ModelFile, AdaptedModel, T)> {
    let start = Instant::now();
    let spinner =
        ProgressBar::new_spinner().with_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}")?);
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner.set_message(format!("opening {}", path.display()));
    let file = ModelFile::open(path)?;
    let checked = spinner.suspend(|| check(&file))?;
    let (device, name, why) = device_args.resolve();
    if let Some(why) = why {
        spinner.suspend(|| eprintln!("running on {name}: {why}"));
    }
    spinner.set_message(format!(
        "loading {} weights to {name}",
        file.config.architecture.name()
    ));
    let model = Transformer::load_with(&file, &device, device_args.weights)?;
    spinner.finish_and_clear();
    let (on_device, embedding) = model.weight_bytes();
    let plan = tinylora_formats::storage_plan(&file.tensor_summaries(), device_args.weights);
    let choices: Vec<String> = plan.iter().map(|l| l.choice()).collect();
    eprintln!(
        "weights ({}): {}; {:.0} MB on {name}, embedding {:.0} MB in host memory",
        device_args.weights,
        choices.join(", "),
        on_device as f64 / 1e6,
        embedding as f64 / 1e6
    );
    if !is_cpu(&device) && plan.iter().any(|l| l.kept == GgmlType::F16) {
        eprintln!(
            "F16 weight matrices staged in products of more than 8 rows as {}",
            if stages_f16(&device) {
                "f16 (shader-f16)"
            } else if shader_f16_offered(&device) {
                "f32 (a software rasterizer: its shader-f16 converts in software, slower)"
            } else {
                "f32 (the adapter offers no shader-f16)"
            }
        );
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names() {
        assert_eq!("auto".parse(), Ok(DeviceArg::Auto));
        assert_eq!("gpu".parse(), Ok(DeviceArg::Gpu(None)));
        assert_eq!("gpu:3".parse(), Ok(DeviceArg::Gpu(Some(3))));
        assert_eq!("cpu".parse(), Ok(DeviceArg::Cpu));
        for bad in ["gpu:", "gpu:-1", "tpu", ""] {
            let e = bad.parse::<DeviceArg>().unwrap_err();
            assert!(e.contains("expected auto, gpu, gpu:K"), "{bad}: {e}");
        }
    }
}
