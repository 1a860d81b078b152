//! Tiny random models written to disk in both formats, with their weights kept for the
//! reference implementation.

use std::collections::HashMap;
use std::path::Path;

use rand::{Rng, SeedableRng, rngs::StdRng};
use tinylora::formats::{Architecture, ModelConfig, ModuleKind};

use super::gguf_writer::{Meta, RawTensor, byte_level_alphabet, f32_tensor, write_gguf};

/// Weights by Hugging Face name, PyTorch layout, with their shapes.
pub type Weights = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// A small config of the given architecture (GQA with 2 query heads per kv head).
pub fn tiny_config(architecture: Architecture, tied: bool) -> ModelConfig {
    ModelConfig {
        architecture,
        hidden_size: 64,
        intermediate_size: 96,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 16,
        vocab_size: 258,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-5,
        tie_word_embeddings: tied,
        attention_bias: architecture == Architecture::Qwen2,
        max_position_embeddings: 512,
    }
}

/// Random weights for `c` (normal-ish, scaled like a trained model's).
pub fn random_weights(c: &ModelConfig, seed: u64) -> Weights {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut w = Weights::new();
    let mut add = |name: String, shape: Vec<usize>, scale: f32, offset: f32, rng: &mut StdRng| {
        let n: usize = shape.iter().product();
        let data = (0..n)
            .map(|_| offset + scale * (rng.random::<f32>() * 2.0 - 1.0))
            .collect();
        w.insert(name, (shape, data));
    };
    let h = c.hidden_size;
    add(
        "model.embed_tokens.weight".into(),
        vec![c.vocab_size, h],
        1.0,
        0.0,
        &mut rng,
    );
    for i in 0..c.num_hidden_layers {
        let p = format!("model.layers.{i}");
        for kind in ModuleKind::ALL {
            let (o, inp) = kind.shape(c);
            let module = format!("{p}.{}", kind.hf_path());
            add(
                format!("{module}.weight"),
                vec![o, inp],
                1.0 / (inp as f32).sqrt(),
                0.0,
                &mut rng,
            );
            if c.attention_bias && matches!(kind, ModuleKind::Q | ModuleKind::K | ModuleKind::V) {
                add(format!("{module}.bias"), vec![o], 0.1, 0.0, &mut rng);
            }
        }
        add(format!("{p}.input_layernorm.weight"), vec![h], 0.2, 1.0, &mut rng);
        add(
            format!("{p}.post_attention_layernorm.weight"),
            vec![h],
            0.2,
            1.0,
            &mut rng,
        );
    }
    add("model.norm.weight".into(), vec![h], 0.2, 1.0, &mut rng);
    if !c.tie_word_embeddings {
        add(
            "lm_head.weight".into(),
            vec![c.vocab_size, h],
            1.0 / (h as f32).sqrt(),
            0.0,
            &mut rng,
        );
    }
    w
}

/// llama.cpp's Q/K row permutation (the inverse of what the loader undoes).
pub fn permute_rows(data: &[f32], n_heads: usize, cols: usize) -> Vec<f32> {
    let rows = data.len() / cols;
    let hd = rows / n_heads;
    let mut out = vec![0.0; data.len()];
    for h in 0..n_heads {
        for s in 0..2 {
            for j in 0..hd / 2 {
                let src = h * hd + s * hd / 2 + j;
                let dst = h * hd + 2 * j + s;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// The llama.cpp tensor name for a Hugging Face name.
fn ggml_name(hf: &str) -> String {
    let map = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ];
    if let Some((_, g)) = map.iter().find(|(h, _)| *h == hf) {
        return g.to_string();
    }
    let rest = hf.strip_prefix("model.layers.").unwrap();
    let (layer, rest) = rest.split_once('.').unwrap();
    let rest = rest
        .replace("self_attn.q_proj", "attn_q")
        .replace("self_attn.k_proj", "attn_k")
        .replace("self_attn.v_proj", "attn_v")
        .replace("self_attn.o_proj", "attn_output")
        .replace("mlp.gate_proj", "ffn_gate")
        .replace("mlp.up_proj", "ffn_up")
        .replace("mlp.down_proj", "ffn_down")
        .replace("post_attention_layernorm", "ffn_norm")
        .replace("input_layernorm", "attn_norm");
    format!("blk.{layer}.{rest}")
}

/// GGUF metadata describing `c` with a byte-level vocabulary (256 bytes + 2 specials).
pub fn gguf_metadata(c: &ModelConfig) -> Vec<(&'static str, Meta)> {
    let arch = c.architecture.name();
    let k = |s: &str| -> &'static str { Box::leak(format!("{arch}.{s}").into_boxed_str()) };
    let mut tokens = byte_level_alphabet();
    tokens.extend(["<|im_start|>".to_string(), "<|im_end|>".to_string()]);
    let mut types = vec![1; 256];
    types.extend([3, 3]);
    vec![
        ("general.architecture", Meta::Str(arch.into())),
        (k("embedding_length"), Meta::U32(c.hidden_size as u32)),
        (k("feed_forward_length"), Meta::U32(c.intermediate_size as u32)),
        (k("block_count"), Meta::U32(c.num_hidden_layers as u32)),
        (k("attention.head_count"), Meta::U32(c.num_attention_heads as u32)),
        (k("attention.head_count_kv"), Meta::U32(c.num_key_value_heads as u32)),
        (k("rope.freq_base"), Meta::F32(c.rope_theta)),
        (k("attention.layer_norm_rms_epsilon"), Meta::F32(c.rms_norm_eps)),
        (k("context_length"), Meta::U32(c.max_position_embeddings as u32)),
        ("tokenizer.ggml.model", Meta::Str("gpt2".into())),
        ("tokenizer.ggml.pre", Meta::Str("qwen2".into())),
        ("tokenizer.ggml.tokens", Meta::Strs(tokens)),
        ("tokenizer.ggml.token_type", Meta::I32s(types)),
        ("tokenizer.ggml.merges", Meta::Strs(vec![])),
        ("tokenizer.ggml.eos_token_id", Meta::U32(257)),
        (
            "tokenizer.chat_template",
            Meta::Str("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}".into()),
        ),
    ]
}

/// The tensors of `w` as GGUF F32 tensors (llama Q/K permuted as llama.cpp stores them).
pub fn gguf_tensors(c: &ModelConfig, w: &Weights) -> Vec<RawTensor> {
    let mut names: Vec<&String> = w.keys().collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let (shape, data) = &w[name];
            let data = match (c.architecture, name) {
                (Architecture::Llama, n) if n.ends_with("q_proj.weight") => {
                    permute_rows(data, c.num_attention_heads, shape[1])
                }
                (Architecture::Llama, n) if n.ends_with("k_proj.weight") => {
                    permute_rows(data, c.num_key_value_heads, shape[1])
                }
                _ => data.clone(),
            };
            f32_tensor(&ggml_name(name), shape, &data)
        })
        .collect()
}

/// Write `w` as a GGUF file.
pub fn write_tiny_gguf(path: &Path, c: &ModelConfig, w: &Weights) {
    write_gguf(path, &gguf_metadata(c), &gguf_tensors(c, w));
}

/// Write `w` as a Hugging Face directory (see [`tiny_hf_files`]).
pub fn write_tiny_hf_dir(dir: &Path, c: &ModelConfig, w: &Weights, bf16: bool) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, bytes) in tiny_hf_files(c, w, bf16) {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// `w` as the files of a Hugging Face directory, by name: config.json, model.safetensors (BF16
/// or F32), tokenizer.json, tokenizer_config.json.
pub fn tiny_hf_files(c: &ModelConfig, w: &Weights, bf16: bool) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let config = serde_json::json!({
        "architectures": [if c.architecture == Architecture::Qwen2 { "Qwen2ForCausalLM" } else { "LlamaForCausalLM" }],
        "model_type": c.architecture.name(),
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "head_dim": c.head_dim,
        "vocab_size": c.vocab_size,
        "rope_theta": c.rope_theta,
        "rms_norm_eps": c.rms_norm_eps,
        "tie_word_embeddings": c.tie_word_embeddings,
        "max_position_embeddings": c.max_position_embeddings,
        "eos_token_id": 257,
    });
    files.push(("config.json".to_string(), config.to_string().into_bytes()));
    let vocab: serde_json::Map<String, serde_json::Value> = (0..256)
        .map(|i| (format!("t{i}"), serde_json::json!(i)))
        .chain([
            ("<|im_start|>".to_string(), serde_json::json!(256)),
            ("<|im_end|>".to_string(), serde_json::json!(257)),
        ])
        .collect();
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [
            {"id": 256, "content": "<|im_start|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 257, "content": "<|im_end|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "t0"}
    });
    files.push(("tokenizer.json".to_string(), tokenizer.to_string().into_bytes()));
    let tok_cfg = serde_json::json!({"eos_token": "<|im_end|>", "chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"});
    files.push((
        "tokenizer_config.json".to_string(),
        tok_cfg.to_string().into_bytes(),
    ));
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = w
        .iter()
        .map(|(name, (shape, data))| {
            let raw: Vec<u8> = if bf16 {
                data.iter()
                    .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                    .collect()
            } else {
                data.iter().flat_map(|v| v.to_le_bytes()).collect()
            };
            (name.clone(), shape.clone(), raw)
        })
        .collect();
    let dtype = if bf16 {
        safetensors::Dtype::BF16
    } else {
        safetensors::Dtype::F32
    };
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(dtype, s.clone(), b).unwrap(),
            )
        })
        .collect();
    files.push((
        "model.safetensors".to_string(),
        safetensors::serialize(views, None).unwrap(),
    ));
    files
}

/// Round every weight to bf16 (what a BF16 safetensors file holds).
pub fn round_bf16(w: &Weights) -> Weights {
    w.iter()
        .map(|(k, (s, d))| {
            (
                k.clone(),
                (
                    s.clone(),
                    d.iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect(),
                ),
            )
        })
        .collect()
}
