//! What the benches' command lines share; each bench declares its own flags in its `Args`
//! (clap), so `--help` lists them and a misspelt flag is refused instead of ignored.

use burn::tensor::Device;
use clap::ValueEnum;
use tinylora::engine::{cpu_device, default_device};

/// Where a bench runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceChoice {
    /// wgpu's default adapter (lavapipe where there is no GPU)
    Gpu,
    /// burn's Flex CPU backend
    Cpu,
}

impl DeviceChoice {
    pub fn device(self) -> Device {
        match self {
            DeviceChoice::Gpu => default_device(),
            DeviceChoice::Cpu => cpu_device(),
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // the name `--device` takes
        f.write_str(
            self.to_possible_value()
                .expect("no variant is skipped")
                .get_name(),
        )
    }
}

/// The flag `cargo bench` passes to every bench binary, accepted and ignored.
#[derive(clap::Args)]
pub struct CargoBench {
    #[arg(long, hide = true)]
    bench: bool,
}
