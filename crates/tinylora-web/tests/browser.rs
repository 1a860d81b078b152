//! In headless Chromium on WebGPU (`cargo test --target wasm32-unknown-unknown -p tinylora-web`,
//! see scripts/test_web.sh): the forward pass and the merge kernel give the numbers the
//! native tests check on the same inputs. Both sides compare against the same plain-Rust f64
//! reference (tests/common), on the same seeded tiny llama, with the native tolerances.
#![cfg(target_family = "wasm")]

#[path = "../../../tests/common/mod.rs"]
mod common;

use burn::tensor::Tensor;
use common::adapted::adapted_weights;
use common::gguf_writer::gguf_bytes;
use common::reference::reference_logits;
use common::tiny_model::{
    Weights, gguf_metadata, gguf_tensors, random_weights, round_bf16, tiny_config, tiny_hf_files,
};
use tinylora::adapter::{
    AdaptedModel, AdapterConfig, AdapterParts, Method, Precision, SigmaConvention, Tying, plan,
};
use tinylora::engine::{DeltaMode, Transformer};
use tinylora::formats::{Architecture, ModelConfig, ModelFile};
use tinylora_web::{Session, webgpu_device};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// The sequences of the native engine and adapter tests.
const SEQS: [&[u32]; 3] = [
    &[5, 17, 200, 3, 99, 42, 7, 7, 1],
    &[250, 11],
    &[64, 65, 66, 67, 68],
];

/// A tiny llama with seeded random weights, as GGUF bytes (never touching a disk).
fn tiny_llama(seed: u64) -> (ModelConfig, Weights, ModelFile) {
    let c = tiny_config(Architecture::Llama, true);
    let w = random_weights(&c, seed);
    let bytes = gguf_bytes(&gguf_metadata(&c), &gguf_tensors(&c, &w));
    let file = ModelFile::from_gguf_bytes("tiny-llama.gguf", bytes).expect("tiny GGUF parses");
    (c, w, file)
}

/// Teacher-forced logits `[T·V]` of one sequence, read back asynchronously (WebGPU's only way).
async fn logits(model: &Transformer, seq: &[u32]) -> Vec<f32> {
    let t: Tensor<2> = model.teacher_forced(&[seq.to_vec()], &[0]);
    t.into_data_async()
        .await
        .expect("logits read back")
        .try_into_vec::<f32>()
        .expect("f32 logits")
}

/// Largest |browser − reference| over every sequence's logits.
async fn max_diff(model: &Transformer, c: &ModelConfig, w: &Weights) -> f64 {
    let mut worst = 0.0f64;
    for seq in SEQS {
        let want = reference_logits(c, w, seq).concat();
        let got = logits(model, seq).await;
        assert_eq!(got.len(), want.len(), "logit count");
        for (g, r) in got.iter().zip(&want) {
            assert!(g.is_finite(), "non-finite logit in the browser");
            worst = worst.max((*g as f64 - r).abs());
        }
    }
    worst
}

#[wasm_bindgen_test]
async fn forward_pass_on_webgpu_matches_the_plain_rust_reference() {
    let device = webgpu_device().await.expect("headless Chromium has WebGPU");
    let (c, w, file) = tiny_llama(10);
    let model = Transformer::load(&file, &device).expect("tiny model loads");
    let d = max_diff(&model, &c, &w).await;
    // the native test (tests/engine.rs) allows the same 2e-4
    assert!(d < 2e-4, "browser forward: max |Δlogit| vs reference = {d}");
}

#[wasm_bindgen_test]
async fn hugging_face_files_given_as_bytes_load_and_match_the_reference() {
    let device = webgpu_device().await.expect("headless Chromium has WebGPU");
    let c = tiny_config(Architecture::Qwen2, false);
    let w = round_bf16(&random_weights(&c, 11));
    let files = tiny_hf_files(&c, &w, true).into_iter().collect();
    let file = ModelFile::from_hf_bytes("tiny-qwen2", files).expect("HF files parse");
    let model = Transformer::load(&file, &device).expect("tiny qwen2 loads");
    let d = max_diff(&model, &c, &w).await;
    assert!(
        d < 2e-4,
        "browser forward of BF16 safetensors: max |Δlogit| vs reference = {d}"
    );
    assert_eq!(
        file.tokenizer.encode("t5 t17").unwrap(),
        vec![5, 17],
        "tokenizer.json from bytes"
    );
}

/// Rank 2 runs the scalar kernels; rank 4 on the tiny model's widths (multiples of 4) the vec4
/// ones (`shaders/lowrank_*_vec4.wgsl`).
#[wasm_bindgen_test]
async fn tinylora_adapters_on_webgpu_match_the_reference_merged_and_on_the_activation_path() {
    let device = webgpu_device().await.expect("headless Chromium has WebGPU");
    let (c, w, file) = tiny_llama(21);
    for rank in [2, 4] {
        let mut model = AdaptedModel::new(Transformer::load(&file, &device).expect("tiny model loads"));
        let cfg = AdapterConfig {
            method: Method::Tinylora,
            rank,
            u: 2,
            tying: Tying::Structured { n_tie: 1 },
            projection_seed: 7,
            sigma: SigmaConvention::Paper,
            precision: Precision::F32,
            ..AdapterConfig::default()
        }
        .validated()
        .unwrap();
        let n = plan(&c, &cfg).params;
        let v: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 + 104_729) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        // the frozen SVDs run on the page's one thread (wasm has none to spare)
        let parts = AdapterParts::build(&file, &cfg, &v, &|| {}).expect("SVDs of the tiny model");
        model.attach(parts).expect("adapter attaches");
        let adapted = adapted_weights(&c, &w, &cfg, &v);
        model.set_mode(DeltaMode::Merged).unwrap(); // the merge kernel, in place on Wᵀ
        let base = max_diff(&model, &c, &w).await;
        assert!(
            base > 0.05,
            "r={rank}: the merged adapter barely changes the logits ({base})"
        );
        let d = max_diff(&model, &c, &adapted).await;
        assert!(
            d < 3e-4,
            "r={rank} merged in the browser: max |Δlogit| vs reference = {d}"
        );
        model.set_mode(DeltaMode::Off).unwrap(); // unmerge: the same kernel, subtracting
        let d = max_diff(&model, &c, &w).await;
        assert!(
            d < 3e-4,
            "r={rank} unmerged in the browser: max |Δlogit| vs base = {d}"
        );
        model.set_mode(DeltaMode::Activation).unwrap(); // down + up on every activation
        let d = max_diff(&model, &c, &adapted).await;
        assert!(
            d < 3e-4,
            "r={rank} on the activation path in the browser: max |Δlogit| vs reference = {d}"
        );
    }
}

/// The message of the `Error` a [`Session`] call rejected with.
fn message(err: wasm_bindgen::JsError) -> String {
    js_sys::Error::from(wasm_bindgen::JsValue::from(err))
        .message()
        .into()
}

/// `{ name: Uint8Array }`, as the page passes files.
fn files(name: &str, bytes: &[u8]) -> js_sys::Object {
    let obj = js_sys::Object::new();
    js_sys::Reflect::set(&obj, &name.into(), &js_sys::Uint8Array::from(bytes).into()).unwrap();
    obj
}

#[wasm_bindgen_test]
async fn bad_files_reach_javascript_as_readable_errors() {
    let e = message(
        Session::load("m".into(), files("broken.gguf", b"GGUX\x03\0\0\0"), None)
            .await
            .err()
            .unwrap(),
    );
    assert!(e.contains("broken.gguf") && e.contains("GGUX"), "{e}");
    let e = message(
        Session::load("my-model".into(), files("config.json", b"{}"), None)
            .await
            .err()
            .unwrap(),
    );
    assert!(e.contains("my-model") && e.contains("model_type"), "{e}");

    let (c, w, _) = tiny_llama(10);
    let gguf = gguf_bytes(&gguf_metadata(&c), &gguf_tensors(&c, &w));
    let e = message(
        Session::load("tiny".into(), files("tiny.gguf", &gguf), Some("q3".into()))
            .await
            .err()
            .unwrap(),
    );
    assert!(
        e.contains("tiny") && e.contains("unknown weight format `q3`"),
        "{e}"
    );
    let session = Session::load("tiny".into(), files("tiny.gguf", &gguf), None)
        .await
        .unwrap();
    let e = message(session.set_adapter(true).err().unwrap());
    assert!(e.contains("no adapter"), "{e}");
    let e = message(
        session
            .load_adapter("junk.safetensors".into(), vec![7; 40], None)
            .err()
            .unwrap(),
    );
    assert!(e.contains("junk.safetensors") && e.contains("safetensors"), "{e}");
    // the adapter of the recorded SmolLM2 run, applied to another model
    let smollm2_adapter = include_bytes!("../../../web/adapters/smollm2-arithmetic-u13.safetensors");
    let e = message(
        session
            .load_adapter("smollm2.safetensors".into(), smollm2_adapter.to_vec(), None)
            .err()
            .unwrap(),
    );
    assert!(
        e.contains("smollm2.safetensors") && e.contains("made for base model"),
        "{e}"
    );
    assert!(!session.adapter_on(), "a refused adapter leaves the base model");

    // training and comparing: bad settings and problem files are refused before anything runs
    let never = js_sys::Function::new_no_args("");
    let problems = b"{\"question\": \"What is 1 + 1?\", \"answer\": \"2\"}\n".to_vec();
    let settings = |json: &str| js_sys::JSON::parse(json).unwrap();
    for (data, json, want) in [
        (&b"not json\n"[..], "{}", "problems.jsonl:1: not JSON"),
        (
            &problems[..],
            r#"{"group_size": 1}"#,
            "group size must be at least 2",
        ),
        (&problems[..], r#"{"grup_size": 4}"#, "unknown field `grup_size`"),
        (&problems[..], r#"{"tying": "knotted"}"#, "knotted"),
        (
            &problems[..],
            r#"{"eval_problems": 5}"#,
            "no problems left for training",
        ),
    ] {
        let e = message(
            session
                .train(data.to_vec(), settings(json), never.clone())
                .err()
                .unwrap(),
        );
        assert!(e.contains(want), "{json}: {e}");
    }
    let e = message(
        session
            .evaluate(
                problems.clone(),
                settings(r#"{"eval_problems": 0}"#),
                never.clone(),
            )
            .err()
            .unwrap(),
    );
    assert!(e.contains("hold out at least one problem"), "{e}");
    assert!(
        session.adapter_file().unwrap().is_none(),
        "no adapter file without an adapter"
    );
}
