//! Adapters attached to a model, end to end on a tiny random llama: against a plain-Rust f64
//! forward of the model with W + ΔW computed on the host from the SVD and projections, central
//! finite differences of the loss, weight tying, merge/unmerge, the planner's counts, and
//! adapter files reproducing the same logits.

mod common;

use std::path::Path;

use burn::tensor::activation::log_softmax;
use burn::tensor::{Tensor, TensorData};
use common::adapted::adapted_weights;
use common::reference::reference_logits;
use common::tiny_model::{Weights, random_weights, tiny_config, write_tiny_hf_dir};
use tinylora::adapter::{
    AdaptedModel, AdapterConfig, AdapterFile, Method, Precision, SigmaConvention, Tying, group_sizes,
    initial_values, plan, truncated_svd,
};
use tinylora::engine::{DeltaMode, FrozenWeight, Transformer, default_device};
use tinylora::formats::quant::GgmlType;
use tinylora::formats::{Architecture, BlockMatrix, ModelConfig, ModelFile, WeightFormat};

const SEQS: [[u32; 10]; 2] = [
    [5, 17, 200, 3, 99, 42, 7, 7, 1, 30],
    [250, 11, 64, 65, 66, 67, 68, 2, 9, 100],
];

fn tiny(name: &str) -> (common::TestDir, ModelConfig, Weights) {
    let dir = common::temp_dir(name);
    let c = tiny_config(Architecture::Llama, true);
    let w = random_weights(&c, 21);
    write_tiny_hf_dir(&dir, &c, &w, false);
    (dir, c, w)
}

fn load(dir: &Path) -> (ModelFile, AdaptedModel) {
    let file = ModelFile::open(dir).unwrap();
    let model = AdaptedModel::new(Transformer::load(&file, &default_device()).unwrap());
    (file, model)
}

fn adapter(method: Method, tying: Tying, sigma: SigmaConvention) -> AdapterConfig {
    with_rank(method, tying, sigma, 2)
}

/// [`adapter`] with frozen rank `rank` (4 and up: the vec4 kernels on the tiny model's widths).
fn with_rank(method: Method, tying: Tying, sigma: SigmaConvention, rank: usize) -> AdapterConfig {
    AdapterConfig {
        method,
        rank,
        u: 2,
        tying,
        projection_seed: 7,
        sigma,
        precision: Precision::F32,
        ..AdapterConfig::default()
    }
    .validated()
    .unwrap()
}

/// Deterministic values in [-0.5, 0.5).
fn values(n: usize, salt: u32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as u32 * 7919 + salt * 104_729) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

fn seqs() -> Vec<Vec<u32>> {
    SEQS.iter().map(|s| s.to_vec()).collect()
}

fn max_diff(got: &[Vec<f32>], want: &[Vec<f64>]) -> f64 {
    got.iter()
        .flatten()
        .zip(want.iter().flatten())
        .map(|(&g, &w)| (g as f64 - w).abs())
        .fold(0.0, f64::max)
}

fn reference(c: &ModelConfig, w: &Weights) -> Vec<Vec<f64>> {
    seqs()
        .iter()
        .map(|s| reference_logits(c, w, s).concat())
        .collect()
}

/// Mean next-token cross-entropy of [`SEQS`] under the f64 reference.
fn reference_loss(c: &ModelConfig, w: &Weights) -> f64 {
    let (mut sum, mut n) = (0.0, 0);
    for s in seqs() {
        let logits = reference_logits(c, w, &s);
        for t in 0..s.len() - 1 {
            let m = logits[t].iter().cloned().fold(f64::MIN, f64::max);
            let lse = m + logits[t].iter().map(|x| (x - m).exp()).sum::<f64>().ln();
            sum += lse - logits[t][s[t + 1] as usize];
            n += 1;
        }
    }
    sum / n as f64
}

/// The same loss on the GPU, differentiable in the adapter's v.
fn engine_loss(model: &Transformer) -> Tensor<1> {
    let rows = seqs();
    let (t, v) = (rows[0].len(), model.config.vocab_size);
    let logits = model.teacher_forced(&rows, &[0, 0]); // [B·T, V]
    let mut pick = vec![0.0f32; rows.len() * t * v];
    let n = (rows.len() * (t - 1)) as f32;
    for (b, s) in rows.iter().enumerate() {
        for i in 0..t - 1 {
            pick[(b * t + i) * v + s[i + 1] as usize] = 1.0 / n;
        }
    }
    let pick = Tensor::<2>::from_data(TensorData::new(pick, [rows.len() * t, v]), &model.device);
    -(log_softmax(logits, 1) * pick).sum()
}

fn weights_t(model: &Transformer) -> Vec<f32> {
    model
        .layers
        .iter()
        .flat_map(|l| [&l.self_attn.q_proj, &l.mlp.down_proj])
        .flat_map(|lin| match &lin.weight {
            FrozenWeight::Dense(chunks) => chunks.iter(),
            FrozenWeight::Blocks(_) => unreachable!("the tiny model loads in f32"),
        })
        .flat_map(|w| w.to_data().try_into_vec::<f32>().unwrap())
        .collect()
}

/// (the engine's loss in `mode` with values `v`, ∂L/∂v), the loss checked against `want_loss`
/// (the f64 reference's) to 1e-4.
fn checked_loss_gradient(
    model: &mut AdaptedModel,
    mode: DeltaMode,
    v: &[f32],
    want_loss: f64,
    what: &str,
) -> Vec<f32> {
    model.set_mode(mode).unwrap();
    let coefs = model.set_values(v, true).unwrap();
    let loss = engine_loss(model);
    let got_loss: f32 = loss.clone().into_scalar();
    assert!(
        (got_loss as f64 - want_loss).abs() < 1e-4,
        "{what} {mode:?}: loss {got_loss} vs reference {want_loss}"
    );
    let grads = loss.backward();
    coefs
        .iter()
        .flat_map(|t| t.grad(&grads).unwrap().into_data().try_into_vec::<f32>().unwrap())
        .collect()
}

/// ∂loss/∂v[i] by central differences (step 1e-3).
fn central_difference(v: &[f32], i: usize, loss: impl Fn(&[f32]) -> f64) -> f64 {
    let eps = 1e-3;
    let at = |d: f32| {
        let mut vv = v.to_vec();
        vv[i] += d;
        loss(&vv)
    };
    (at(eps) - at(-eps)) / (2.0 * eps as f64)
}

/// `adapted`'s logits equal `base`'s bit for bit. On a real GPU, burn's autotune runs a
/// fallback kernel for an op whose tuning another test thread has begun, so the same forward
/// can differ in the last bits while tuning is under way: the comparison counts only when the
/// base model's logits are the same just before and just after the adapted forward.
fn assert_same_logits_once_settled(base: &AdaptedModel, adapted: &AdaptedModel, what: &str) {
    for _ in 0..10 {
        let before = base.forward_logits(&seqs()).unwrap();
        let got = adapted.forward_logits(&seqs()).unwrap();
        if base.forward_logits(&seqs()).unwrap() == before {
            assert_eq!(got, before, "{what}");
            return;
        }
    }
    panic!("{what}: the base model's logits kept changing from one forward to the next");
}

#[test]
fn zero_adapter_is_exactly_the_base_model() {
    let (dir, _, _) = tiny("adapter-zero");
    let (_, base) = load(&dir);
    let (file, mut model) = load(&dir);
    let cfg = adapter(Method::Tinylora, Tying::None, SigmaConvention::Paper);
    let groups = plan(&file.config, &cfg).groups;
    model
        .attach_adapter(&file, &cfg, &vec![0.0; groups * cfg.u], &|| {})
        .unwrap();
    assert_same_logits_once_settled(&base, &model, "activation path with v = 0");
    model.set_mode(DeltaMode::Merged).unwrap();
    assert_same_logits_once_settled(&base, &model, "merged with v = 0");
}

#[test]
fn adapted_logits_match_reference_with_updated_weights_in_every_mode() {
    let (dir, c, w) = tiny("adapter-modes");
    let (file, mut model) = load(&dir);
    let before = weights_t(&model);
    for (method, sigma, rank) in [
        (Method::Tinylora, SigmaConvention::Paper, 2),
        (Method::Tinylora, SigmaConvention::Peft, 2),
        (Method::LoraXs, SigmaConvention::LoraXs, 2),
        (Method::Lora, SigmaConvention::Paper, 2),
        (Method::Tinylora, SigmaConvention::Paper, 4),
        (Method::Lora, SigmaConvention::Paper, 8),
    ] {
        let tying = if method == Method::Lora {
            Tying::None
        } else {
            Tying::Structured { n_tie: 1 }
        };
        let cfg = with_rank(method, tying, sigma, rank);
        let p = plan(&c, &cfg);
        let v = values(p.params, 1);
        model.attach_adapter(&file, &cfg, &v, &|| {}).unwrap();
        assert_eq!(model.values().unwrap(), v, "planner count = values created");
        let want = reference(&c, &adapted_weights(&c, &w, &cfg, &v));
        let base = reference(&c, &w);
        let shift = max_diff(&model.forward_logits(&seqs()).unwrap(), &base);
        assert!(
            shift > 0.05,
            "{method:?}: the adapter barely changes the logits ({shift})"
        );
        for mode in [DeltaMode::Activation, DeltaMode::Merged, DeltaMode::Activation] {
            model.set_mode(mode).unwrap();
            let d = max_diff(&model.forward_logits(&seqs()).unwrap(), &want);
            assert!(
                d < 3e-4,
                "{method:?} {sigma:?} r={rank} {mode:?}: max |Δlogit| vs reference = {d}"
            );
        }
        model.set_mode(DeltaMode::Merged).unwrap();
        model.set_mode(DeltaMode::Off).unwrap();
        let d = max_diff(&model.forward_logits(&seqs()).unwrap(), &base);
        assert!(
            d < 3e-4,
            "{method:?}: switched off after a merge: max |Δlogit| vs base = {d}"
        );
    }
    model.detach();
    let after = weights_t(&model);
    let worst = before
        .iter()
        .zip(&after)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(worst < 1e-6, "merge then unmerge left weights off by {worst}");
}

#[test]
fn gradients_match_finite_differences_with_tied_groups() {
    let (dir, c, w) = tiny("adapter-fd");
    let (file, mut model) = load(&dir);
    // 14 modules in runs of 3: groups share v across module types and layers
    let cfg = adapter(
        Method::Tinylora,
        Tying::Tiled { n_tie: 3 },
        SigmaConvention::Paper,
    );
    let p = plan(&c, &cfg);
    let v = values(p.params, 2);
    model.attach_adapter(&file, &cfg, &v, &|| {}).unwrap();
    let want_loss = reference_loss(&c, &adapted_weights(&c, &w, &cfg, &v));
    // on the activation path, and on merged weights (lowrank_update_merged)
    let by_mode: Vec<_> = [DeltaMode::Activation, DeltaMode::Merged]
        .into_iter()
        .map(|mode| (mode, checked_loss_gradient(&mut model, mode, &v, want_loss, "")))
        .collect();
    let fd: Vec<f64> = (0..v.len())
        .map(|i| central_difference(&v, i, |vv| reference_loss(&c, &adapted_weights(&c, &w, &cfg, vv))))
        .collect();
    let scale = fd.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    assert!(scale > 1e-3, "the loss does not depend on v");
    for (mode, got) in by_mode {
        for (i, (g, f)) in got.iter().zip(&fd).enumerate() {
            assert!(
                (*g as f64 - f).abs() < 2e-3 * scale + 1e-5,
                "{mode:?} ∂L/∂v[{i}]: kernels {g}, finite differences {f} (scale {scale})"
            );
        }
    }
}

#[test]
fn tied_group_gradient_is_the_sum_over_its_modules_and_counts_match_the_planner() {
    let (dir, c, _) = tiny("adapter-tying");
    let (file, mut model) = load(&dir);
    let grads_at = |model: &mut AdaptedModel, cfg: &AdapterConfig, value: &[f32]| {
        let groups = plan(&c, cfg).groups;
        let v: Vec<f32> = value.iter().copied().cycle().take(groups * cfg.u).collect();
        model.attach_adapter(&file, cfg, &v, &|| {}).unwrap();
        let coefs = model.set_values(&v, true).unwrap();
        let grads = engine_loss(model).backward();
        coefs
            .iter()
            .map(|t| t.grad(&grads).unwrap().into_data().try_into_vec::<f32>().unwrap())
            .collect::<Vec<_>>()
    };
    let value = [0.3, -0.2];
    let untied = grads_at(
        &mut model,
        &adapter(Method::Tinylora, Tying::None, SigmaConvention::Paper),
        &value,
    );
    let full = grads_at(
        &mut model,
        &adapter(Method::Tinylora, Tying::Full, SigmaConvention::Paper),
        &value,
    );
    assert_eq!((untied.len(), full.len()), (14, 1));
    for i in 0..2 {
        let sum: f32 = untied.iter().map(|g| g[i]).sum();
        assert!(
            (full[0][i] - sum).abs() < 1e-4 * sum.abs().max(1.0),
            "v[{i}]: tied {} vs Σ untied {sum}",
            full[0][i]
        );
    }
    for tying in [
        Tying::None,
        Tying::Tiled { n_tie: 4 },
        Tying::Structured { n_tie: 2 },
        Tying::Full,
    ] {
        let cfg = adapter(Method::Tinylora, tying, SigmaConvention::Paper);
        let p = plan(&c, &cfg);
        model
            .attach_adapter(&file, &cfg, &vec![0.1; p.params], &|| {})
            .unwrap();
        assert_eq!(model.values().unwrap().len(), p.params, "{tying:?}");
    }
}

#[test]
fn adapter_file_reproduces_the_same_update_in_fresh_models() {
    let (dir, c, _) = tiny("adapter-file");
    let cfg = AdapterConfig {
        precision: Precision::Bf16,
        ..adapter(
            Method::Tinylora,
            Tying::Tiled { n_tie: 2 },
            SigmaConvention::Paper,
        )
    };
    let p = plan(&c, &cfg);
    let (file, _) = load(&dir);
    let saved = AdapterFile {
        config: cfg.clone(),
        base_fingerprint: file.fingerprint(),
        values: values(p.params, 3)
            .iter()
            .map(|&x| tinylora::adapter::adapter_file::round_to(Precision::Bf16, x))
            .collect(),
    };
    let path = dir.join("a.safetensors");
    saved.save(&path).unwrap();
    let run = || {
        let (file, mut model) = load(&dir);
        let a = AdapterFile::load(&path).unwrap();
        a.check_base(&path, &file.fingerprint()).unwrap();
        model.attach_adapter(&file, &a.config, &a.values, &|| {}).unwrap();
        // every frozen factor and basis on the device, as stored
        let frozen: Vec<f32> = model
            .layers
            .iter()
            .flat_map(|l| [&l.self_attn.q_proj, &l.self_attn.v_proj, &l.mlp.down_proj])
            .flat_map(|lin| {
                let u = lin.delta.as_ref().unwrap();
                let f = u.factors.to_data().try_into_vec::<f32>().unwrap();
                f.into_iter()
                    .chain(u.basis.to_data().try_into_vec::<f32>().unwrap())
            })
            .collect();
        (frozen, model.forward_logits(&seqs()).unwrap())
    };
    let ((frozen1, logits1), (frozen2, logits2)) = (run(), run());
    assert_eq!(
        frozen1, frozen2,
        "the same adapter file gave different frozen factors"
    );
    // identical up to the GPU's choice of matmul kernel (burn autotunes per process)
    let want: Vec<Vec<f64>> = logits2
        .iter()
        .map(|r| r.iter().map(|&x| x as f64).collect())
        .collect();
    let d = max_diff(&logits1, &want);
    assert!(d < 1e-4, "the same adapter file gave logits {d} apart");
    let err = AdapterFile::load(&path)
        .unwrap()
        .check_base(&path, "another-model")
        .unwrap_err();
    assert!(err.to_string().contains("a.safetensors"), "{err}");
}

#[test]
fn lora_runs_through_the_same_kernels_with_finite_difference_gradients() {
    let (dir, c, w) = tiny("adapter-lora");
    let (file, mut model) = load(&dir);
    let cfg = adapter(Method::Lora, Tying::None, SigmaConvention::Paper);
    // start where PEFT does (B = 0, A random) and move B off zero
    let v: Vec<f32> = initial_values(&c, &cfg)
        .iter()
        .zip(values(plan(&c, &cfg).params, 4))
        .map(|(&a, b)| if a == 0.0 { 0.2 * b } else { a })
        .collect();
    model.attach_adapter(&file, &cfg, &v, &|| {}).unwrap();
    let sizes = group_sizes(&c, &cfg);
    let by_mode: Vec<(DeltaMode, Vec<f32>)> = [DeltaMode::Activation, DeltaMode::Merged]
        .into_iter()
        .map(|mode| {
            model.set_mode(mode).unwrap();
            let trainable = model.set_values(&v, true).unwrap();
            let grads = engine_loss(&model).backward();
            let got: Vec<f32> = trainable
                .iter()
                .flat_map(|t| t.grad(&grads).unwrap().into_data().try_into_vec::<f32>().unwrap())
                .collect();
            assert_eq!(got.len(), sizes.iter().sum::<usize>());
            (mode, got)
        })
        .collect();
    // entries of B and of Aᵀ in the first, a middle and the last module
    let starts: Vec<usize> = sizes
        .iter()
        .scan(0, |acc, &n| Some(std::mem::replace(acc, *acc + n)))
        .collect();
    let picks: Vec<usize> = [0, 7, sizes.len() - 1]
        .iter()
        .flat_map(|&k| [starts[k] + 3, starts[k] + sizes[k] - 5])
        .collect();
    for i in picks {
        let fd = central_difference(&v, i, |vv| reference_loss(&c, &adapted_weights(&c, &w, &cfg, vv)));
        for (mode, got) in &by_mode {
            assert!(
                (got[i] as f64 - fd).abs() < 2e-3 * fd.abs().max(0.05),
                "{mode:?} ∂L/∂θ[{i}]: kernels {}, finite differences {fd}",
                got[i]
            );
        }
    }
}

/// TinyLoRA on a base kept in quantized blocks (`--weights q4`: the projections in Q4_1, the
/// tied embedding and LM head in Q8_0), on lavapipe and the CPU: the delta runs on the
/// activation path in both modes (blocks cannot take a merge), the loss equals the f64
/// reference's with W replaced by its quantized values, and ∂L/∂v equals that reference's
/// central finite differences. The frozen SVD is of the file's own (f32) weights.
#[test]
fn gradients_through_a_quantized_base_match_finite_differences() {
    let (dir, c, w) = tiny("adapter-fd-q4");
    let file = ModelFile::open(&dir).unwrap();
    let format = WeightFormat::Q4;
    // the weights as the blocks hold them
    let mut wq = w.clone();
    for (name, (shape, data)) in wq.iter_mut().filter(|(_, (shape, _))| shape.len() == 2) {
        let kept = format.for_tensor(name).kept_as(GgmlType::F32, shape[1]);
        assert_ne!(kept, GgmlType::F32, "{name} is quantized");
        *data = BlockMatrix::quantize(kept, data, shape[0], shape[1])
            .unwrap()
            .dequantize();
    }
    let cfg = adapter(
        Method::Tinylora,
        Tying::Tiled { n_tie: 3 },
        SigmaConvention::Paper,
    );
    let v = values(plan(&c, &cfg).params, 5);
    // W_q + ΔW(v): the adapted f32 weights with W swapped for its quantized values
    let reference_at = |v: &[f32]| {
        let mut out = adapted_weights(&c, &w, &cfg, v);
        for (name, (_, data)) in out.iter_mut() {
            let (orig, quant) = (&w[name].1, &wq[name].1);
            data.iter_mut()
                .zip(orig.iter().zip(quant))
                .for_each(|(x, (o, q))| *x += q - o);
        }
        reference_loss(&c, &out)
    };
    let fd: Vec<f64> = (0..v.len())
        .map(|i| central_difference(&v, i, reference_at))
        .collect();
    let scale = fd.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    assert!(scale > 1e-3, "the loss does not depend on v");
    let want_loss = reference_at(&v);
    for (device, dev) in common::devices() {
        let mut model = AdaptedModel::new(Transformer::load_with(&file, &dev, format).unwrap());
        assert!(model.is_compressed(), "{device}: the base is kept in blocks");
        model.attach_adapter(&file, &cfg, &v, &|| {}).unwrap();
        for mode in [DeltaMode::Activation, DeltaMode::Merged] {
            let got = checked_loss_gradient(&mut model, mode, &v, want_loss, device);
            for (i, (g, f)) in got.iter().zip(&fd).enumerate() {
                assert!(
                    (*g as f64 - f).abs() < 2e-3 * scale + 1e-5,
                    "{device} {mode:?} ∂L/∂v[{i}]: kernels {g}, finite differences {f} (scale {scale})"
                );
            }
        }
    }
}

/// The frozen rank-2 SVD of real weights (three Q4_1 matrices of SmolLM2, Q5_0 and Q6_K ones of
/// Qwen2.5-Coder-0.5B, square, wide and tall) against numpy's full f64 SVD of the same
/// weights dequantized by llama.cpp's `gguf` package (tests/reference/svd.json, written by
/// make_svd_reference.py): σ₁, σ₂ and the right singular vectors, which the row
/// un-permutation of Llama's Q/K at load leaves unchanged. Some of these spectra are tight
/// (Qwen's layer-23 o_proj: σ₁/σ₂ = 1.019, σ₂/σ₃ = 1.055).
#[test]
fn frozen_svd_of_real_weights_matches_numpy() {
    let reference: serde_json::Value = serde_json::from_str(include_str!("reference/svd.json")).unwrap();
    for (model, path) in [
        ("SmolLM2-135M-Instruct.Q4_1.gguf", common::smollm2()),
        ("Qwen2.5-Coder-0.5B-Instruct.gguf", common::qwen05()),
    ] {
        let file = ModelFile::open(&path).unwrap();
        for t in reference[model].as_array().unwrap() {
            let name = t["name"].as_str().unwrap();
            let [m, n] = [0, 1].map(|i| t["shape"][i].as_u64().unwrap() as usize);
            let w = file.load(name, &[m, n]).unwrap();
            let svd = truncated_svd(&w.data, m, n, 2, 7);
            for c in 0..2 {
                let sigma = t["sigma"][c].as_f64().unwrap();
                let v_ref: Vec<f64> = serde_json::from_value(t["v"][c].clone()).unwrap();
                let cos: f64 = (0..n).map(|j| svd.v[j * 2 + c] as f64 * v_ref[j]).sum();
                println!(
                    "{model} {name} σ{c}: {} vs {sigma}, |cos(v, v_numpy)| = {}",
                    svd.s[c],
                    cos.abs()
                );
                assert!(
                    (svd.s[c] as f64 - sigma).abs() < 1e-5 * sigma,
                    "{model} {name} σ{c}: {} vs numpy {sigma}",
                    svd.s[c]
                );
                assert!(
                    cos.abs() > 1.0 - 1e-6,
                    "{model} {name} v{c}: |cos| = {} against numpy",
                    cos.abs()
                );
            }
        }
    }
}
