//! TinyLoRA kernels and training cost, on the default device (lavapipe here), or with
//! `--device cpu` the training cost on burn's Flex CPU backend (where the adapter ops are
//! stock burn ops):
//!
//! 1. each WGSL kernel against the same math as a composition of stock burn ops (ratio);
//! 2. forward + backward of SmolLM2-135M-Instruct (or `--model`) with a TinyLoRA adapter (on the activation
//!    path, and on merged weights) against a plain forward, and against forward + backward
//!    through the frozen network without an adapter;
//! 3. the frozen rank-2 SVD of every target weight (CPU, all cores).
//!
//! ```text
//! cargo bench --profile release --bench adapter [-- --tokens 128 --reps 5 --kernel-reps 41
//!     --kernels-only | --training-only | --svd-only] [--device cpu] [--rows 16] [--model M]
//!     [--u 13 --tying full]
//! ```
//!
//! Every figure of one run comes from the same process on the same device, side by side,
//! after one warm-up run (shader compilation): kernel against stock ops in alternating pairs,
//! the three backwards in rotating rounds (median times and median ratios), the forwards as
//! medians of `--reps`.

mod args;

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use clap::Parser;
use tinylora::adapter::{AdaptedModel, AdapterConfig, Tying, frozen_modules, plan};
use tinylora::engine::{DeltaMode, FrozenWeight, Transformer, default_device};
use tinylora::formats::ModelFile;
use tinylora::kernels::{lowrank_merge, lowrank_update};

/// TinyLoRA kernels against stock burn ops, the training cost of a real model with an adapter,
/// and the frozen SVD's time (see the header of benches/adapter.rs).
#[derive(Parser)]
#[command(bin_name = "bench-adapter")]
struct Args {
    /// gpu: all three parts; cpu: the training cost only (there the adapter ops are stock ops)
    #[arg(long, value_enum, default_value_t = args::DeviceChoice::Gpu)]
    device: args::DeviceChoice,
    /// The WGSL kernels against stock ops only
    #[arg(long, conflicts_with_all = ["training_only", "svd_only"])]
    kernels_only: bool,
    /// No kernels: the training cost, then (on the GPU) the frozen SVD's time
    #[arg(long, conflicts_with = "svd_only")]
    training_only: bool,
    /// The frozen SVD's time only
    #[arg(long)]
    svd_only: bool,
    /// Sequences of a forward + backward
    #[arg(long, default_value_t = 1)]
    rows: usize,
    /// Tokens per sequence
    #[arg(long, default_value_t = 128)]
    tokens: usize,
    /// Timed runs of each training figure (the median is reported)
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Alternating pairs of each kernel against its stock ops
    #[arg(long, default_value_t = 41)]
    kernel_reps: usize,
    /// GGUF file or Hugging Face model directory [default: models/SmolLM2-135M-Instruct.Q4_1.gguf]
    #[arg(long)]
    model: Option<PathBuf>,
    /// Trainable parameters per tied group (TinyLoRA r = 2 on all seven modules)
    #[arg(long, default_value_t = 1)]
    u: usize,
    /// Weight tying of the adapter
    #[arg(long, value_parser = ["none", "full"], default_value = "none")]
    tying: String,
    #[command(flatten)]
    cargo: args::CargoBench,
}

/// Median seconds of `reps` runs of `f` after one warm-up; `f` must finish its GPU work
/// (read a value back) so that the time covers it.
fn median(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps).map(|_| seconds(&mut f)).collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn seconds(f: &mut impl FnMut()) -> f64 {
    let s = Instant::now();
    f();
    s.elapsed().as_secs_f64()
}

/// `a` (a kernel) against `b` (stock ops) run in alternating pairs after one warm-up each, so
/// that the machine's drift hits both alike: (median seconds of a, of b, median of the
/// per-pair ratios b / a).
fn paired(reps: usize, mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64, f64) {
    let r = interleaved(reps, &mut [&mut || seconds(&mut a), &mut || seconds(&mut b)]);
    (r[0].0, r[1].0, r[1].1)
}

/// Each of `fs` (returning the seconds it measured) `reps` times in rounds, the order rotating
/// from round to round, after one warm-up each: per f, (median seconds, median of the
/// per-round ratios to `fs[0]`).
fn interleaved(reps: usize, fs: &mut [&mut dyn FnMut() -> f64]) -> Vec<(f64, f64)> {
    let n = fs.len();
    for f in fs.iter_mut() {
        f();
    }
    let mut times = vec![Vec::with_capacity(reps); n];
    for round in 0..reps {
        let mut t = vec![0.0; n];
        for k in 0..n {
            let i = (round + k) % n;
            t[i] = fs[i]();
        }
        for (i, ti) in t.into_iter().enumerate() {
            times[i].push(ti);
        }
    }
    let mid = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (0..n)
        .map(|i| {
            let ratios = times[i].iter().zip(&times[0]).map(|(t, t0)| t / t0).collect();
            (mid(times[i].clone()), mid(ratios))
        })
        .collect()
}

/// Wait for `t`'s producer: read one value back.
fn sync<const D: usize>(t: Tensor<D>) {
    let _ = t.sum().into_scalar::<f32>();
}

/// Wait for a layer's weights (a merge just queued) to be ready.
fn sync_weight(linear: &tinylora::engine::Linear) {
    match &linear.weight {
        FrozenWeight::Dense(chunks) => sync(chunks[0].clone()),
        FrozenWeight::Blocks(chunks) => sync(chunks[0].words.clone().float()),
    }
}

fn kernels(reps: usize) {
    let dev = default_device();
    let n = Distribution::Normal(0.0, 1.0);
    println!("kernel vs stock burn ops (same math), {reps} alternating pairs: median times, median ratio:");
    println!("{:<44} {:>10} {:>10} {:>7}", "", "kernel", "stock", "speedup");
    for (t, d_in, d_out, r, u) in [
        (16, 576, 1536, 2, 1),
        (256, 576, 1536, 2, 1),
        (256, 1536, 576, 8, 13),
    ] {
        let x = Tensor::<2>::random([t, d_in], n, &dev);
        let base = Tensor::<2>::random([t, d_out], n, &dev);
        let factors = Tensor::<2>::random([d_out + d_in, r], n, &dev);
        let basis = Tensor::<3>::random([u, r, r], n, &dev);
        let coef = Tensor::<1>::random([u], n, &dev);
        let stock = |x: Tensor<2>, base: Tensor<2>, coef: Tensor<1>| {
            let m = (basis.clone() * coef.reshape([u, 1, 1]))
                .sum_dim(0)
                .reshape([r, r]);
            let (uf, vf) = (
                factors.clone().slice(0..d_out),
                factors.clone().slice(d_out..d_out + d_in),
            );
            base + x.matmul(vf).matmul(m.transpose()).matmul(uf.transpose())
        };
        let kernel = |x: Tensor<2>, base: Tensor<2>, coef: Tensor<1>| {
            lowrank_update(x, base, factors.clone(), basis.clone(), coef)
        };
        let row = |name: &str, (k, s, ratio): (f64, f64, f64)| {
            println!("{name:<44} {:>8.2}ms {:>8.2}ms {ratio:>6.2}×", k * 1e3, s * 1e3)
        };
        let what = format!("T={t} d_in={d_in} d_out={d_out} r={r} u={u}");
        let forward = paired(
            reps,
            || sync(kernel(x.clone(), base.clone(), coef.clone())),
            || sync(stock(x.clone(), base.clone(), coef.clone())),
        );
        row(&format!("forward   {what}"), forward);
        let fwd_bwd = |f: &dyn Fn(Tensor<2>, Tensor<2>, Tensor<1>) -> Tensor<2>| {
            let xa = x.clone().autodiff().require_grad();
            let ca = coef.clone().autodiff().require_grad();
            let g = f(xa.clone(), base.clone().autodiff(), ca.clone())
                .sum()
                .backward();
            sync(xa.grad(&g).unwrap());
            sync(ca.grad(&g).unwrap());
        };
        row(
            &format!("fwd+bwd   {what}"),
            paired(reps, || fwd_bwd(&kernel), || fwd_bwd(&stock)),
        );
    }
    for (d_in, d_out, r) in [(576, 1536, 2), (1536, 576, 8)] {
        let w = Tensor::<2>::random([d_in, d_out], n, &dev);
        let factors = Tensor::<2>::random([d_out + d_in, r], n, &dev);
        let basis = Tensor::<3>::random([1, r, r], n, &dev);
        let coef = Tensor::<1>::random([1], n, &dev);
        let mut current = Some(Tensor::from_data(w.to_data(), &dev));
        let (mk, ms, ratio) = paired(
            reps,
            || {
                // in place: the tensor is moved in and out, never shared
                let out = lowrank_merge(
                    current.take().unwrap(),
                    factors.clone(),
                    basis.clone(),
                    coef.clone(),
                    0,
                    false,
                );
                let _ = out.clone().slice([0..1, 0..1]).into_scalar::<f32>();
                current = Some(out);
            },
            || {
                let m = (basis.clone() * coef.clone().reshape([1, 1, 1]))
                    .sum_dim(0)
                    .reshape([r, r]);
                let (uf, vf) = (
                    factors.clone().slice(0..d_out),
                    factors.clone().slice(d_out..d_out + d_in),
                );
                let out = w.clone() + vf.matmul(m.transpose()).matmul(uf.transpose()); // Wᵀ + V Mᵀ Uᵀ
                let _ = out.slice([0..1, 0..1]).into_scalar::<f32>();
            },
        );
        println!(
            "{:<44} {:>8.2}ms {:>8.2}ms {ratio:>6.2}×",
            format!("merge     d_in={d_in} d_out={d_out} r={r}"),
            mk * 1e3,
            ms * 1e3,
        );
    }
}

fn training_cost(args: &Args, device: &Device, device_name: &str) {
    let (rows, tokens, reps) = (args.rows, args.tokens, args.reps);
    let path = args.model.clone().unwrap_or_else(|| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
    });
    let file =
        ModelFile::open(&path).unwrap_or_else(|e| panic!("{e}\n(run scripts/fetch_models.sh smollm2)"));
    let name = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let mut model = AdaptedModel::new(Transformer::load(&file, device).unwrap());
    // TinyLoRA r = 2 on all seven modules; `--u N` and `--tying none|full` (default 1, none)
    let cfg = AdapterConfig {
        u: args.u,
        tying: Tying::parse(&args.tying, 1).unwrap_or_else(|e| panic!("--tying: {e}")),
        ..AdapterConfig::default()
    };
    let p = plan(&file.config, &cfg);
    let start = Instant::now();
    model
        .attach_adapter(&file, &cfg, &vec![0.01; p.params], &|| {})
        .unwrap();
    let attach = start.elapsed().as_secs_f64();
    let n_rows = rows;
    let rows: Vec<Vec<u32>> = (0..rows as u32)
        .map(|r| (0..tokens as u32).map(|i| 100 + i * 7 + r).collect())
        .collect();
    let pads = vec![0; n_rows];

    model.set_mode(DeltaMode::Off).unwrap();
    let plain = median(reps, || sync(model.teacher_forced(&rows, &pads)));
    model.set_mode(DeltaMode::Activation).unwrap();
    let adapted = median(reps, || sync(model.teacher_forced(&rows, &pads)));
    model.set_mode(DeltaMode::Merged).unwrap();
    let merged = median(reps, || sync(model.teacher_forced(&rows, &pads)));
    let coefs = model.set_values(&vec![0.01; p.params], true).unwrap();
    // the backwards in rotating rounds; each switches the adapter's mode first, untimed (the
    // merged one merges), then times its forward + backward
    let model = std::cell::RefCell::new(model);
    let timed_backward = |mode: DeltaMode| {
        let mut model = model.borrow_mut();
        model.set_mode(mode).unwrap();
        sync_weight(&model.layers[0].self_attn.q_proj);
        let start = Instant::now();
        if mode == DeltaMode::Off {
            // through the frozen network alone: the input embeddings require a gradient
            let x = model.embed(&rows).autodiff().require_grad();
            let g = model.teacher_forced_embedded(x.clone(), &pads).sum().backward();
            sync(x.grad(&g).unwrap());
        } else {
            let g = model.teacher_forced(&rows, &pads).sum().backward();
            for c in &coefs {
                let _ = c.grad(&g).unwrap();
            }
            sync(coefs[0].grad(&g).unwrap());
        }
        start.elapsed().as_secs_f64()
    };
    let r = interleaved(
        reps,
        &mut [
            &mut || timed_backward(DeltaMode::Off),
            &mut || timed_backward(DeltaMode::Activation),
            &mut || timed_backward(DeltaMode::Merged),
        ],
    );
    let [
        (frozen_bwd, _),
        (activation_bwd, activation_ratio),
        (merged_bwd, merged_ratio),
    ] = r[..]
    else {
        unreachable!()
    };
    println!(
        "\n{name} on the {device_name}, {n_rows} × {tokens} tokens, TinyLoRA r=2 u={} tying {} ({} parameters), median of {reps}:",
        cfg.u, args.tying, p.params
    );
    println!(
        "attach adapter ({} rank-2 SVDs + upload)       {attach:>8.2} s",
        p.modules
    );
    println!("forward, no adapter                             {plain:>8.3} s");
    println!(
        "forward, adapter on the activation path         {adapted:>8.3} s  ({:+.1}%)",
        (adapted / plain - 1.0) * 100.0
    );
    println!(
        "forward, adapter merged                         {merged:>8.3} s  ({:+.1}%)",
        (merged / plain - 1.0) * 100.0
    );
    println!(
        "forward+backward, frozen network (∂L/∂x only)   {frozen_bwd:>8.3} s  ({:.2}× forward)",
        frozen_bwd / plain
    );
    for (what, t, ratio) in [
        ("activation path", activation_bwd, activation_ratio),
        ("merged weights ", merged_bwd, merged_ratio),
    ] {
        println!(
            "forward+backward, TinyLoRA {what} (∂L/∂v) {t:>8.3} s  ({:.2}× forward, {:+.1}% over the frozen backward, median of rounds)",
            t / plain,
            (ratio - 1.0) * 100.0
        );
    }
}

fn svd_time() {
    for name in [
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "Qwen2.5-Coder-0.5B-Instruct.gguf",
        "Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf",
    ] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models")
            .join(name);
        let Ok(file) = ModelFile::open(&path) else {
            println!("{name}: not fetched, skipped");
            continue;
        };
        let cfg = AdapterConfig::default();
        let groups = cfg.tie_groups(file.config.num_hidden_layers);
        let start = Instant::now();
        let m = frozen_modules(&file, &cfg, &groups, &|| {}).unwrap();
        println!(
            "{name}: {} rank-2 SVDs (dequantize + factorise) on {} cores in {:.1} s",
            m.len(),
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            start.elapsed().as_secs_f64()
        );
    }
}

fn main() {
    let args = Args::parse();
    if args.svd_only {
        return svd_time();
    }
    if args.device == args::DeviceChoice::Cpu {
        // no WGSL there: only what training costs
        return training_cost(&args, &args.device.device(), "CPU (Flex)");
    }
    if !args.training_only {
        kernels(args.kernel_reps);
    }
    if args.kernels_only {
        return;
    }
    training_cost(&args, &args.device.device(), "GPU");
    println!();
    svd_time();
}
