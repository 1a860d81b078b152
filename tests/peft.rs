//! PEFT interoperability against fixtures made once with the real Python libraries
//! (tests/peft/make_peft_fixtures.py: torch 2.15, transformers 5.23, PEFT 0.21.2): a tiny random
//! llama saved by transformers, a PEFT TinyLoRA adapter (r = 2, u = 3, weight_tying = 0.5,
//! non-zero v) and a PEFT LoRA adapter (r = 4, α = 8, non-zero B), and PEFT's logits for each.

mod common;

use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use tinylora::adapter::{AdaptedModel, PeftAdapter, PeftMethod};
use tinylora::engine::{DeltaMode, Transformer, default_device};
use tinylora::formats::ModelFile;

fn fixtures() -> PathBuf {
    common::repo().join("tests/peft/fixtures")
}

/// PEFT's logits `[T·V]` for `key` (`base/seq0`, `tinylora/seq1`, ...) and the sequences.
fn peft_logits() -> (Vec<Vec<u32>>, impl Fn(&str) -> Vec<f32>) {
    let bytes = std::fs::read(fixtures().join("tiny-llama-logits.safetensors")).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let seqs: Vec<Vec<u32>> = serde_json::from_str(&meta.metadata().as_ref().unwrap()["seqs"]).unwrap();
    let get = move |key: &str| {
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let t = st.tensor(key).unwrap();
        t.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    (seqs, get)
}

/// Largest |Δlogit| and the share of positions whose argmax agrees.
fn compare(got: &[f32], want: &[f32], vocab: usize) -> (f32, f64) {
    assert_eq!(got.len(), want.len());
    let d = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    let argmax = |row: &[f32]| {
        row.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
            .unwrap()
    };
    let rows = got.len() / vocab;
    let agree = (0..rows)
        .filter(|&r| argmax(&got[r * vocab..(r + 1) * vocab]) == argmax(&want[r * vocab..(r + 1) * vocab]))
        .count();
    (d, agree as f64 / rows as f64)
}

fn load() -> (ModelFile, AdaptedModel) {
    let file = ModelFile::open(&fixtures().join("tiny-llama")).unwrap();
    let model = AdaptedModel::new(Transformer::load(&file, &default_device()).unwrap());
    (file, model)
}

/// PEFT's own logits with `method` differ from the base model's (else matching them shows
/// nothing).
fn assert_adapter_moves_logits(method: &str) {
    let (seqs, peft) = peft_logits();
    for i in 0..seqs.len() {
        let (a, b) = (peft(&format!("{method}/seq{i}")), peft(&format!("base/seq{i}")));
        let d = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
        assert!(
            d > 0.05,
            "{method} seq{i}: the fixture adapter barely moves the logits ({d})"
        );
    }
}

/// Check every sequence's logits against PEFT's `method/seqN`.
fn assert_matches(model: &Transformer, method: &str) {
    let (seqs, peft) = peft_logits();
    let vocab = model.config.vocab_size;
    for (i, got) in model.forward_logits(&seqs).unwrap().iter().enumerate() {
        let want = peft(&format!("{method}/seq{i}"));
        let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let (d, top1) = compare(got, &want, vocab);
        println!("{method} seq{i}: max |Δlogit| {d:.2e} (logits up to {scale:.1}), top-1 agreement {top1}");
        assert!(
            d < 2e-4 * scale.max(1.0),
            "{method} seq{i}: max |Δlogit| {d} vs PEFT"
        );
        assert_eq!(top1, 1.0, "{method} seq{i}: top-1 disagrees with PEFT");
    }
}

#[test]
fn base_model_saved_by_transformers_gives_its_logits() {
    let (_, model) = load();
    assert_matches(&model, "base");
}

#[test]
fn peft_tinylora_adapter_gives_pefts_logits_on_the_path_and_merged() {
    let (_, mut model) = load();
    let peft = PeftAdapter::load(&fixtures().join("tiny-llama-tinylora")).unwrap();
    assert_eq!(
        peft.method,
        PeftMethod::TinyLora {
            u: 3,
            weight_tying: 0.5
        }
    );
    assert_eq!(
        (peft.modules.len(), peft.values.len()),
        (14, 7),
        "2 layers × 7 modules, 7 groups"
    );
    model.attach(peft.to_parts(&model.config).unwrap()).unwrap();
    assert_adapter_moves_logits("tinylora");
    assert_matches(&model, "tinylora");
    model.set_mode(DeltaMode::Merged).unwrap();
    assert_matches(&model, "tinylora");
    model.set_mode(DeltaMode::Off).unwrap();
    assert_matches(&model, "base");
}

#[test]
fn peft_lora_adapter_gives_pefts_logits() {
    let (_, mut model) = load();
    let peft = PeftAdapter::load(&fixtures().join("tiny-llama-lora")).unwrap();
    assert_eq!(peft.method, PeftMethod::Lora { scaling: 2.0 });
    model.attach(peft.to_parts(&model.config).unwrap()).unwrap();
    assert_adapter_moves_logits("lora");
    assert_matches(&model, "lora");
    model.set_mode(DeltaMode::Merged).unwrap();
    assert_matches(&model, "lora");
}

/// A copy of a fixture adapter with its config edited by `edit`.
fn edited(name: &str, edit: impl Fn(&mut serde_json::Value)) -> common::TestDir {
    let dir = common::temp_dir(&format!("peft-{name}"));
    let src = fixtures().join("tiny-llama-tinylora");
    std::fs::copy(
        src.join("adapter_model.safetensors"),
        dir.join("adapter_model.safetensors"),
    )
    .unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("adapter_config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(dir.join("adapter_config.json"), cfg.to_string()).unwrap();
    dir
}

fn error(dir: &Path) -> String {
    PeftAdapter::load(dir).unwrap_err().to_string()
}

#[test]
fn unsupported_peft_options_are_refused_with_the_file_and_the_reason() {
    let e = error(&edited("ia3", |c| c["peft_type"] = "IA3".into()));
    assert!(e.contains("adapter_config.json") && e.contains("IA3"), "{e}");
    let e = error(&edited("fanin", |c| c["fan_in_fan_out"] = true.into()));
    assert!(e.contains("fan_in_fan_out"), "{e}");
    let e = error(&edited("noproj", |c| c["save_projection"] = false.into()));
    assert!(e.contains("save_projection"), "{e}");
    let e = error(&edited("rank", |c| c["r"] = 3.into()));
    assert!(
        e.contains("adapter_model.safetensors") && e.contains("rank r = 3"),
        "{e}"
    );
    let e = error(&edited("u", |c| c["u"] = 5.into()));
    assert!(e.contains("tinylora_P") && e.contains("[5, 2, 2]"), "{e}");
    let e = error(&common::temp_dir("peft-empty"));
    assert!(e.contains("adapter_config.json"), "{e}");
    // an adapter for SmolLM2 on the tiny llama: refused before anything is changed
    let (_, model) = load();
    let foreign = PeftAdapter::load(&fixtures().join("smollm2-tinylora")).unwrap();
    let e = foreign.to_parts(&model.config).unwrap_err().to_string();
    assert!(
        e.contains("smollm2-tinylora") && e.contains("made for another model"),
        "{e}"
    );
    assert!(
        model.adapter().is_none(),
        "a refused adapter leaves the base model"
    );
}

/// Where the exported adapters go, with tinylora's logits, for tests/peft/check_export.py.
fn export_dir(name: &str) -> PathBuf {
    let dir = common::repo().join("target/peft-export").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn exported_adapters_reimport_to_the_same_logits_and_unexpressible_tying_is_refused() {
    use tinylora::adapter::{
        AdapterConfig, AdapterFile, Method, SigmaConvention, TieGroups, Tying, frozen_modules, plan, to_peft,
    };
    let (file, mut model) = load();
    let (seqs, _) = peft_logits();
    let cases = [
        (
            "tinylora-paper-tiled",
            Method::Tinylora,
            SigmaConvention::Paper,
            Tying::Tiled { n_tie: 2 },
        ),
        (
            "tinylora-peft-full",
            Method::Tinylora,
            SigmaConvention::Peft,
            Tying::Full,
        ),
        (
            "loraxs-untied",
            Method::LoraXs,
            SigmaConvention::LoraXs,
            Tying::None,
        ),
        ("lora", Method::Lora, SigmaConvention::Paper, Tying::None),
    ];
    for (name, method, sigma, tying) in cases {
        let config = AdapterConfig {
            method,
            rank: 2,
            u: 3,
            tying,
            sigma,
            projection_seed: 5,
            ..AdapterConfig::default()
        }
        .validated()
        .unwrap();
        let n = plan(&file.config, &config).params;
        let values: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 + 31) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        model.attach_adapter(&file, &config, &values, &|| {}).unwrap();
        let ours = model.forward_logits(&seqs).unwrap();
        let groups = TieGroups::new(file.config.num_hidden_layers, &config.targets, tying);
        let frozen = if method == Method::Lora {
            vec![]
        } else {
            frozen_modules(&file, &config, &groups, &|| {}).unwrap()
        };
        let adapter = AdapterFile {
            config,
            base_fingerprint: file.fingerprint(),
            values,
        };
        let export = to_peft(&adapter, &file.config, &frozen).unwrap();
        let dir = export_dir(name);
        std::fs::write(dir.join("adapter_config.json"), &export.config_json).unwrap();
        std::fs::write(dir.join("adapter_model.safetensors"), &export.safetensors).unwrap();
        std::fs::write(
            dir.join("tinylora-logits.json"),
            serde_json::to_string(&ours).unwrap(),
        )
        .unwrap();
        model
            .attach(PeftAdapter::load(&dir).unwrap().to_parts(&model.config).unwrap())
            .unwrap();
        for (got, want) in model.forward_logits(&seqs).unwrap().iter().zip(&ours) {
            let (d, top1) = compare(got, want, model.config.vocab_size);
            assert!(d < 1e-4, "{name}: re-imported max |Δlogit| {d}");
            assert_eq!(top1, 1.0, "{name}");
        }
    }
    let structured = AdapterConfig {
        u: 3,
        tying: Tying::Structured { n_tie: 2 },
        ..AdapterConfig::default()
    }
    .validated()
    .unwrap();
    let n = plan(&file.config, &structured).params;
    let groups = TieGroups::new(
        file.config.num_hidden_layers,
        &structured.targets,
        structured.tying,
    );
    let frozen = frozen_modules(&file, &structured, &groups, &|| {}).unwrap();
    let adapter = AdapterFile {
        config: structured,
        base_fingerprint: file.fingerprint(),
        values: vec![0.1; n],
    };
    let e = to_peft(&adapter, &file.config, &frozen).unwrap_err();
    assert!(e.to_string().contains("cannot be expressed"), "{e}");
}

#[test]
fn peft_tinylora_on_smollm2_gives_pefts_logits() {
    let bytes = std::fs::read(fixtures().join("smollm2-logits.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let seq: Vec<u32> = serde_json::from_str(&meta.metadata().as_ref().unwrap()["seq"]).unwrap();
    let want = |key: &str| -> Vec<f32> {
        st.tensor(key)
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let file = ModelFile::open(&common::smollm2()).unwrap();
    let mut model = AdaptedModel::new(Transformer::load(&file, &default_device()).unwrap());
    let vocab = model.config.vocab_size;
    let last3 = |model: &Transformer| {
        let all = model
            .forward_logits(std::slice::from_ref(&seq))
            .unwrap()
            .remove(0);
        all[(seq.len() - 3) * vocab..].to_vec()
    };
    let peft = PeftAdapter::load(&fixtures().join("smollm2-tinylora")).unwrap();
    assert_eq!(
        (peft.modules.len(), peft.values.len()),
        (60, 1),
        "q and v of 30 layers, one group"
    );
    let moved = compare(&want("tinylora"), &want("base"), vocab).0;
    assert!(
        moved > 0.05,
        "the fixture adapter barely moves SmolLM2's logits ({moved})"
    );
    for (method, attach) in [("base", false), ("tinylora", true)] {
        if attach {
            model.attach(peft.to_parts(&model.config).unwrap()).unwrap();
            model.set_mode(DeltaMode::Merged).unwrap();
        }
        let w = want(method);
        let scale = w.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let (d, top1) = compare(&last3(&model), &w, vocab);
        println!("SmolLM2 {method}: max |Δlogit| {d:.2e} (logits up to {scale:.1}), top-1 agreement {top1}");
        assert!(
            d < 1e-4 * scale.max(1.0),
            "SmolLM2 {method}: max |Δlogit| {d} vs transformers/PEFT"
        );
        assert_eq!(top1, 1.0, "SmolLM2 {method}: top-1 disagrees");
    }
}
