//! `tinylora plot`: training curves of one or more runs as an SVG or PNG chart.

pub mod chart;
pub mod png;
pub mod svg;

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use tinylora_formats::atomic::write_atomic;
use tinylora_train::StepMetrics;

use self::chart::Run;
use self::png::render_png;
use self::svg::render_svg;

/// Arguments of `tinylora plot`.
#[derive(Args)]
pub struct PlotArgs {
    /// metrics.jsonl files (one line per run in the chart).
    #[arg(required = true)]
    metrics: Vec<PathBuf>,
    /// Output file: .svg, or .png (a raster at twice the SVG's size).
    #[arg(short, long, default_value = "metrics.svg")]
    out: PathBuf,
}

/// Run `tinylora plot`.
pub fn run(args: PlotArgs) -> anyhow::Result<()> {
    let extension = args
        .out
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let png = match extension.as_deref() {
        Some("svg") => false,
        Some("png") => true,
        _ => bail!(
            "{}: the chart is written as .svg or .png; name the file so",
            args.out.display()
        ),
    };
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
            // run/metrics.jsonl is labelled "run"; grpo.jsonl is labelled "grpo"
            let named = if path.file_name().is_some_and(|n| n == "metrics.jsonl") {
                path.parent().and_then(|p| p.file_name())
            } else {
                path.file_stem()
            };
            let label = named.unwrap_or(path.as_os_str()).to_string_lossy().into_owned();
            Ok(Run { label, metrics })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let bytes = if png {
        render_png(&runs).with_context(|| format!("encoding {}", args.out.display()))?
    } else {
        render_svg(&runs).into_bytes()
    };
    write_atomic(&args.out, &bytes)?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}
