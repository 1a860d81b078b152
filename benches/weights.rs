//! What each `--weights` choice does to a real model's numbers: teacher-forced logits on the
//! prompts of `tests/reference/<name>_logits.json` against numpy's (float64, weights decoded
//! by llama.cpp's `gguf` package) and against the f32 path, with the bytes the matrices take.
//!
//!     cargo bench --profile release --bench weights [-- --device cpu|gpu]
//!         [--weights f32,auto,f16,q8,q4] [--model smollm2|qwen05]
//!
//! Top-1 agreement and the largest logit difference over each position's numpy top 5 and 64
//! probe tokens (as `tests/engine.rs` checks the f32 and auto paths), and over the whole
//! vocabulary against the f32 path.

mod args;

use std::time::Instant;

use clap::{Parser, ValueEnum};
use tinylora::engine::Transformer;
use tinylora::formats::{ModelFile, WeightFormat};

/// What each weight format does to a real model's logits, against numpy's and the f32 path's
/// (see the header of benches/weights.rs).
#[derive(Parser)]
#[command(bin_name = "bench-weights")]
struct Args {
    /// Where to run
    #[arg(long, value_enum, default_value_t = args::DeviceChoice::Cpu)]
    device: args::DeviceChoice,
    /// Weight formats, comma-separated [default: f32,auto,f16,q8,q4]
    #[arg(long, value_delimiter = ',', hide_default_value = true, default_values_t = [
        WeightFormat::F32, WeightFormat::Auto, WeightFormat::F16, WeightFormat::Q8, WeightFormat::Q4,
    ])]
    weights: Vec<WeightFormat>,
    /// One model only [default: both]
    #[arg(long, value_enum)]
    model: Option<RealModel>,
    #[command(flatten)]
    cargo: args::CargoBench,
}

/// The real models with numpy reference logits (`tests/reference/<name>_logits.json`).
#[derive(Clone, Copy, ValueEnum)]
enum RealModel {
    Smollm2,
    Qwen05,
}

impl RealModel {
    fn file_name(self) -> &'static str {
        match self {
            RealModel::Smollm2 => "SmolLM2-135M-Instruct.Q4_1.gguf",
            RealModel::Qwen05 => "Qwen2.5-Coder-0.5B-Instruct.gguf",
        }
    }
}

fn ids(x: &serde_json::Value) -> Vec<u64> {
    x.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0
}

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let args = Args::parse();
    let device = args.device.device();
    let formats = args.weights;
    let models = args
        .model
        .map_or(vec![RealModel::Smollm2, RealModel::Qwen05], |m| vec![m]);
    for model in models {
        // the name `--model` takes
        let name = model.to_possible_value().expect("no variant is skipped");
        let (name, file_name) = (name.get_name(), model.file_name());
        let file = ModelFile::open(&root.join("models").join(file_name))
            .unwrap_or_else(|e| panic!("{e}\n(run scripts/fetch_models.sh smollm2 qwen0.5b)"));
        let reference: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(root.join(format!("tests/reference/{name}_logits.json"))).unwrap(),
        )
        .unwrap();
        let probes = ids(&reference["probe_ids"]);
        let cases = reference["prompts"].as_array().unwrap();
        let prompts: Vec<Vec<u32>> = cases
            .iter()
            .map(|p| ids(&p["ids"]).into_iter().map(|x| x as u32).collect())
            .collect();
        println!("{name} ({file_name}), {} prompts", prompts.len());
        println!(
            "{:<6} {:>10} {:>8} {:>14} {:>14} {:>14} {:>16}",
            "", "matrices", "load", "top-1 vs numpy", "max Δ vs numpy", "top-1 vs f32", "max Δ vs f32"
        );
        let mut f32_logits: Option<Vec<Vec<f32>>> = None;
        for &w in &formats {
            let start = Instant::now();
            let model = Transformer::load_with(&file, &device, w).unwrap();
            let load = start.elapsed().as_secs_f64();
            let v = model.config.vocab_size;
            let got = model.forward_logits(&prompts).unwrap();
            let (mut positions, mut agree, mut max_diff) = (0, 0, 0.0f64);
            for (p, g) in cases.iter().zip(&got) {
                for (t, row) in g.chunks_exact(v).enumerate() {
                    let top = ids(&p["top5_ids"][t]);
                    positions += 1;
                    agree += (argmax(row) as u64 == top[0]) as usize;
                    let checked = top
                        .iter()
                        .zip(p["top5_logits"][t].as_array().unwrap())
                        .chain(probes.iter().zip(p["probe_logits"][t].as_array().unwrap()));
                    for (&id, want) in checked {
                        max_diff = max_diff.max((row[id as usize] as f64 - want.as_f64().unwrap()).abs());
                    }
                }
            }
            let vs_f32 = f32_logits.as_ref().map(|base| {
                let (mut same, mut n, mut d) = (0, 0, 0.0f32);
                for (a, b) in got.iter().zip(base) {
                    for (ra, rb) in a.chunks_exact(v).zip(b.chunks_exact(v)) {
                        n += 1;
                        same += (argmax(ra) == argmax(rb)) as usize;
                        d = ra.iter().zip(rb).fold(d, |m, (x, y)| m.max((x - y).abs()));
                    }
                }
                (format!("{same}/{n}"), format!("{d:.4}"))
            });
            let (top1_f32, diff_f32) = vs_f32.unwrap_or(("-".into(), "-".into()));
            println!(
                "{:<6} {:>7.0} MB {:>6.2} s {:>14} {:>14.5} {:>14} {:>16}",
                w.name(),
                model.weight_bytes().0 as f64 / 1e6,
                load,
                format!("{agree}/{positions}"),
                max_diff,
                top1_f32,
                diff_f32
            );
            if w == WeightFormat::F32 {
                f32_logits = Some(got);
            }
        }
    }
}
