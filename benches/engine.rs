//! Engine throughput (SmolLM2-135M-Instruct unless `--model`): shader compilation, prefill,
//! decode at each batch of `--batches` (default 1,16), on the GPU (wgpu; lavapipe without one)
//! and on the CPU (burn's Flex backend).
//!
//!     cargo bench --profile release --bench engine [-- --new-tokens 128] [--device gpu|cpu]
//!         [--model models/Qwen2.5-Coder-0.5B-Instruct.gguf] [--batches 1,16,64]
//!         [--weights f32,auto,q8] [--temperature 1]
//!
//! Decoding is greedy unless `--temperature` (seeded sampling, as GRPO's rollouts).
//! Every figure of one run comes from the same process, one column per device and `--weights`
//! choice (default f32), side by side.

mod args;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use burn::tensor::{Device, Distribution, Tensor, TensorData};
use clap::Parser;
use tinylora::engine::sampling::sample;
use tinylora::engine::{GenerateOptions, SamplingParams, Transformer, read_f32};
use tinylora::formats::{ModelFile, WeightFormat};
use tinylora::kernels::choose_tokens;

const TEXT: &str = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips \
in May. How many clips did Natalia sell altogether in April and May? Weng earns $12 an hour for babysitting. \
Yesterday, she just did 50 minutes of babysitting. How much did she earn? Betty is saving money for a new \
wallet which costs $100. Betty has only half of the money she needs. Her parents decided to give her $15 for \
that purpose, and her grandparents twice as much as her parents. How much more money does Betty need to buy \
the wallet? Julie is reading a 120-page book. Yesterday, she was able to read 12 pages and today, she read \
twice as many pages as yesterday. If she wants to read half of the remaining pages tomorrow, how many pages \
should she read? James writes a 3-page letter to 2 different friends twice a week. How many pages does he \
write a year? Mark has a garden with flowers. He planted plants of three different colors in it.";

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

/// Engine throughput: shader compilation, prefill and decode, one column per device and
/// weight format (see the header of benches/engine.rs).
#[derive(Parser)]
#[command(bin_name = "bench-engine")]
struct Args {
    /// Tokens each sequence generates (at least 2: decoding is timed after the first)
    #[arg(long, default_value_t = 128)]
    new_tokens: usize,
    /// Where to run [default: both, the GPU first]
    #[arg(long, value_enum)]
    device: Option<args::DeviceChoice>,
    /// Batch sizes decoded, comma-separated [default: 1,16]
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16], hide_default_value = true)]
    batches: Vec<usize>,
    /// 0: greedy; above 0, seeded sampling at this temperature (as GRPO's rollouts)
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// GGUF file or Hugging Face model directory [default: models/SmolLM2-135M-Instruct.Q4_1.gguf]
    #[arg(long)]
    model: Option<PathBuf>,
    /// Weight formats, comma-separated: a column each
    #[arg(long, value_delimiter = ',', default_values_t = [WeightFormat::F32])]
    weights: Vec<WeightFormat>,
    #[command(flatten)]
    cargo: args::CargoBench,
}

/// One column's figures: (label, value, unit) rows, each also printed to stderr as soon as it is
/// measured (a column of a big model takes many minutes on lavapipe).
fn measure(
    column: &str,
    file: &ModelFile,
    device: &Device,
    weights: WeightFormat,
    new_tokens: usize,
    batches: &[usize],
    temperature: f32,
) -> Vec<(String, f64, &'static str)> {
    let (model, load) = timed(|| Transformer::load_with(file, device, weights).unwrap());
    let ids = file.tokenizer.encode(&TEXT.repeat(3)).unwrap();
    assert!(ids.len() >= 256);
    let prompt: Vec<u32> = ids[..256].to_vec();
    let greedy = |n| GenerateOptions {
        max_new_tokens: n,
        sampling: SamplingParams::greedy(),
        stop_ids: vec![],
    };
    let decoding = |n| GenerateOptions {
        sampling: SamplingParams {
            temperature,
            seed: 1,
            ..SamplingParams::default()
        },
        ..greedy(n)
    };

    // first forward in this process: compiles (or loads from Mesa's cache) every shader
    let (_, first) = timed(|| model.forward_logits(&[prompt[..8].to_vec()]).unwrap());
    let (_, first_prefill) = timed(|| {
        model
            .generate(std::slice::from_ref(&prompt), &greedy(1), |_, _| {})
            .unwrap()
    });
    let (_, prefill) = timed(|| {
        model
            .generate(std::slice::from_ref(&prompt), &greedy(1), |_, _| {})
            .unwrap()
    });

    let decode = |batch: usize| {
        // prompts of different lengths (64 to 64 + 15·8 tokens) as in a GRPO rollout; the
        // first 16 as they always were
        let prompts: Vec<Vec<u32>> = (0..batch)
            .map(|i| {
                let start = (i * 3) % 64;
                ids[start..start + 64 + (i % 16) * 8].to_vec()
            })
            .collect();
        let _ = model.generate(&prompts, &decoding(2), |_, _| {}).unwrap(); // compile this batch's shapes
        // the decoding steps after the first token (which ends the prefill): from the first
        // step's last token on
        let (mut seen, mut after_first) = (0, None);
        let gens = model
            .generate(&prompts, &decoding(new_tokens), |_, _| {
                seen += 1;
                if seen == batch {
                    after_first = Some(Instant::now());
                }
            })
            .unwrap();
        let steps = after_first.expect("a first step").elapsed();
        let tokens: usize = gens.iter().map(|g| g.output_ids.len() - 1).sum();
        tokens as f64 / steps.as_secs_f64().max(1e-9)
    };
    let mut rows = Vec::new();
    let mut record = |label: String, value: f64, unit: &'static str| {
        eprintln!("{column}: {label}: {value:.2} {unit}");
        rows.push((label, value, unit));
    };
    record("load (read, convert, upload)".into(), load.as_secs_f64(), "s");
    record(
        "weight matrices on the device".into(),
        model.weight_bytes().0 as f64 / 1e6,
        "MB",
    );
    record(
        "first forward, 8 tokens (compile)".into(),
        first.as_secs_f64(),
        "s",
    );
    record(
        "first 256-token prefill (compile)".into(),
        first_prefill.as_secs_f64(),
        "s",
    );
    record(
        "prefill, 256-token prompt".into(),
        256.0 / prefill.as_secs_f64(),
        "tokens/s",
    );
    for &b in batches {
        record(
            format!("decode, batch {b} × {new_tokens} new tokens"),
            decode(b),
            "tokens/s",
        );
    }
    let b = batches.iter().copied().max().unwrap_or(1);
    let (host, on_device) = token_choice_ms(device, b, file.config.vocab_size, temperature);
    record(format!("next tokens of {b}: read back, host"), host, "ms");
    record(format!("next tokens of {b}: on the device"), on_device, "ms");
    rows
}

/// Median milliseconds of choosing the next tokens of `batch` sequences from random logits
/// `[batch, V]` on `device`: (read the logits back and sample on the host, choose on the device
/// and read back `[batch, 2]`), 9 times each, alternating.
fn token_choice_ms(device: &Device, batch: usize, vocab: usize, temperature: f32) -> (f64, f64) {
    let logits = Tensor::<2>::random([batch, vocab], Distribution::Normal(0.0, 3.0), device);
    let _ = read_f32(logits.clone(), "logits").unwrap(); // computed before the clocks start
    let params = SamplingParams {
        temperature,
        seed: 1,
        ..SamplingParams::default()
    };
    let mut rngs: Vec<_> = (0..batch).map(|i| params.rng(i)).collect();
    let (mut host, mut on_device) = (Vec::new(), Vec::new());
    for _ in 0..9 {
        let (_, t) = timed(|| {
            let l = read_f32(logits.clone(), "logits").unwrap();
            (0..batch)
                .map(|r| sample(&l[r * vocab..(r + 1) * vocab], &params, &mut rngs[r]).0)
                .sum::<u32>()
        });
        host.push(t.as_secs_f64() * 1e3);
        let (_, t) = timed(|| {
            let draws = Tensor::<1>::from_data(TensorData::new(vec![0.5f32; batch], [batch]), device);
            read_f32(choose_tokens(logits.clone(), draws, temperature), "tokens").unwrap()
        });
        on_device.push(t.as_secs_f64() * 1e3);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(host), median(on_device))
}

fn main() {
    let args = Args::parse();
    let new_tokens = args.new_tokens;
    assert!(
        new_tokens >= 2,
        "--new-tokens {new_tokens}: at least 2 (decoding is timed after the first)"
    );
    let devices: Vec<(String, Device)> = match args.device {
        None => [args::DeviceChoice::Gpu, args::DeviceChoice::Cpu].into(),
        Some(d) => vec![d],
    }
    .into_iter()
    .map(|d| (d.to_string(), d.device()))
    .collect();
    let batches = args.batches;
    assert!(!batches.contains(&0), "--batches: every batch needs a prompt");
    let temperature = args.temperature;
    assert!(
        temperature.is_finite() && temperature >= 0.0,
        "--temperature {temperature}: 0 (greedy) or more"
    );
    let model_path = args.model.unwrap_or_else(|| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
    });
    let file =
        ModelFile::open(&model_path).unwrap_or_else(|e| panic!("{e}\n(run scripts/fetch_models.sh smollm2)"));
    let formats = args.weights;
    let columns: Vec<(String, &Device, WeightFormat)> = devices
        .iter()
        .flat_map(|(name, device)| formats.iter().map(move |&w| (format!("{name}/{w}"), device, w)))
        .collect();
    let figures: Vec<Vec<(String, f64, &str)>> = columns
        .iter()
        .map(|(name, device, w)| measure(name, &file, device, *w, new_tokens, &batches, temperature))
        .collect();

    println!(
        "{} ({}), {}, decoding {}",
        file.config.architecture.name(),
        model_path.display(),
        std::env::consts::ARCH,
        if temperature > 0.0 {
            format!("at temperature {temperature}")
        } else {
            "greedy".into()
        }
    );
    print!("{:<40}", "");
    for (name, _, _) in &columns {
        print!("{name:>12}");
    }
    println!();
    for (row, (label, _, unit)) in figures[0].iter().enumerate() {
        print!("{label:<40}");
        for f in &figures {
            print!("{:>12.2}", f[row].1);
        }
        println!(" {unit}");
    }
}
