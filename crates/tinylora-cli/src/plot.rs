//! `tinylora plot`: training curves of one or more runs as an SVG.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use tinylora_formats::atomic::write_atomic;
use tinylora_train::StepMetrics;
use tinylora_train::plot::{Run, render_svg};

/// Arguments of `tinylora plot`.
#[derive(Args)]
pub struct PlotArgs {
    /// metrics.jsonl files (one line per run in the chart).
    #[arg(required = true)]
    metrics: Vec<PathBuf>,
    /// Output file (.svg).
    #[arg(short, long, default_value = "metrics.svg")]
    out: PathBuf,
}

/// Run `tinylora plot`.
pub fn run(args: PlotArgs) -> anyhow::Result<()> {
    if args.out.extension().and_then(|e| e.to_str()) != Some("svg") {
        bail!("{}: only .svg output is supported", args.out.display());
    }
    let runs = args
        .metrics
        .iter()
        .map(|path| {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let metrics = text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(i, l)| {
                    serde_json::from_str::<StepMetrics>(l)
                        .with_context(|| format!("{}:{}: not a metrics line", path.display(), i + 1))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let label = path
                .parent()
                .and_then(|p| p.file_name())
                .unwrap_or(path.as_os_str())
                .to_string_lossy()
                .into_owned();
            Ok(Run { label, metrics })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    write_atomic(&args.out, render_svg(&runs).as_bytes())?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}
