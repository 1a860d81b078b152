//! Tiny model files built in memory for the hostile-input tests: a GGUF writer (v3, written
//! from the format description) and the files of a Hugging Face directory.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::HashMap;

use safetensors::Dtype;
use safetensors::tensor::TensorView;
use serde_json::{Value, json};
use tinylora_formats::quant::GgmlType;

/// A GGUF metadata value.
#[derive(Debug, Clone)]
pub enum Meta {
    U32(u32),
    I32(i32),
    U64(u64),
    F32(f32),
    Str(String),
    Strs(Vec<String>),
    I32s(Vec<i32>),
}

/// A GGUF tensor: name, ggml dims (innermost first), type id, data. `offset` overrides the
/// data offset written in the index (the data is still laid out as usual).
#[derive(Debug, Clone)]
pub struct Tensor {
    pub name: String,
    pub ne: Vec<u64>,
    pub type_id: u32,
    pub bytes: Vec<u8>,
    pub offset: Option<u64>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// One metadata value: its type, then its payload.
pub fn put_value(out: &mut Vec<u8>, value: &Meta) {
    let array = |out: &mut Vec<u8>, ty: u32, n: usize| {
        out.extend(9u32.to_le_bytes());
        out.extend(ty.to_le_bytes());
        out.extend((n as u64).to_le_bytes());
    };
    match value {
        Meta::U32(v) => {
            out.extend(4u32.to_le_bytes());
            out.extend(v.to_le_bytes());
        }
        Meta::I32(v) => {
            out.extend(5u32.to_le_bytes());
            out.extend(v.to_le_bytes());
        }
        Meta::U64(v) => {
            out.extend(10u32.to_le_bytes());
            out.extend(v.to_le_bytes());
        }
        Meta::F32(v) => {
            out.extend(6u32.to_le_bytes());
            out.extend(v.to_le_bytes());
        }
        Meta::Str(s) => {
            out.extend(8u32.to_le_bytes());
            put_str(out, s);
        }
        Meta::Strs(list) => {
            array(out, 8, list.len());
            list.iter().for_each(|s| put_str(out, s));
        }
        Meta::I32s(list) => {
            array(out, 5, list.len());
            list.iter().for_each(|v| out.extend(v.to_le_bytes()));
        }
    }
}

/// A GGUF v3 file (alignment 32) and the offset where its data section starts.
pub fn gguf_bytes(meta: &[(String, Meta)], tensors: &[Tensor]) -> (Vec<u8>, usize) {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((meta.len() as u64).to_le_bytes());
    for (key, value) in meta {
        put_str(&mut out, key);
        put_value(&mut out, value);
    }
    let mut offset = 0u64;
    let mut offsets = Vec::new();
    for t in tensors {
        put_str(&mut out, &t.name);
        out.extend((t.ne.len() as u32).to_le_bytes());
        t.ne.iter().for_each(|d| out.extend(d.to_le_bytes()));
        out.extend(t.type_id.to_le_bytes());
        out.extend(t.offset.unwrap_or(offset).to_le_bytes());
        offsets.push(offset);
        offset += (t.bytes.len() as u64).div_ceil(32) * 32;
    }
    out.resize(out.len().next_multiple_of(32), 0);
    let data_start = out.len();
    for (t, off) in tensors.iter().zip(offsets) {
        out.resize(data_start + off as usize, 0);
        out.extend(&t.bytes);
    }
    (out, data_start)
}

/// Deterministic filler bytes.
pub fn filler(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // small f16/f32 exponents: keep most values finite
            (x >> 56) as u8 & 0x3f
        })
        .collect()
}

/// The tiny model's sizes: hidden 32, MLP 32, 1 layer, 2 heads of 16, 1 kv head, 6 tokens.
pub const HIDDEN: usize = 32;
pub const VOCAB: usize = 6;

/// A GGUF tensor of PyTorch-order `shape` and ggml type `type_id`, filled with bytes.
pub fn tensor(name: &str, shape: &[usize], type_id: u32) -> Tensor {
    let numel: usize = shape.iter().product();
    let len = GgmlType::from_id(type_id).unwrap().bytes_for(numel).unwrap();
    Tensor {
        name: name.into(),
        ne: shape.iter().rev().map(|&d| d as u64).collect(),
        type_id,
        bytes: filler(len, name.len() as u64 * 31 + type_id as u64),
        offset: None,
    }
}

/// The metadata of a tiny llama GGUF (byte-level BPE tokenizer of 6 tokens, chat template).
pub fn tiny_gguf_meta() -> Vec<(String, Meta)> {
    let s = |k: &str, v: Meta| (k.to_string(), v);
    let tokens = ["a", "b", "c", "Ġ", "<|im_start|>", "<|im_end|>"];
    vec![
        s("general.architecture", Meta::Str("llama".into())),
        s("llama.embedding_length", Meta::U32(HIDDEN as u32)),
        s("llama.feed_forward_length", Meta::U32(32)),
        s("llama.block_count", Meta::U32(1)),
        s("llama.attention.head_count", Meta::U32(2)),
        s("llama.attention.head_count_kv", Meta::U32(1)),
        s("llama.rope.freq_base", Meta::F32(10_000.0)),
        s("llama.attention.layer_norm_rms_epsilon", Meta::F32(1e-5)),
        s("llama.context_length", Meta::U32(64)),
        s("tokenizer.ggml.model", Meta::Str("gpt2".into())),
        s("tokenizer.ggml.pre", Meta::Str("smollm".into())),
        s(
            "tokenizer.ggml.tokens",
            Meta::Strs(tokens.iter().map(|t| t.to_string()).collect()),
        ),
        s("tokenizer.ggml.token_type", Meta::I32s(vec![1, 1, 1, 1, 3, 3])),
        s("tokenizer.ggml.merges", Meta::Strs(vec![])),
        s("tokenizer.ggml.eos_token_id", Meta::U32(5)),
        s(
            "tokenizer.chat_template",
            Meta::Str("{% for m in messages %}{{ m.content }}{% endfor %}".into()),
        ),
    ]
}

/// The tensors of the tiny llama GGUF, in ten storage types.
pub fn tiny_gguf_tensors() -> Vec<Tensor> {
    let h = HIDDEN;
    vec![
        tensor("token_embd.weight", &[VOCAB, h], 30),
        tensor("output_norm.weight", &[h], 0),
        tensor("blk.0.attn_norm.weight", &[h], 0),
        tensor("blk.0.attn_q.weight", &[h, h], 8),
        tensor("blk.0.attn_k.weight", &[16, h], 2),
        tensor("blk.0.attn_v.weight", &[16, h], 7),
        tensor("blk.0.attn_output.weight", &[h, h], 6),
        tensor("blk.0.ffn_norm.weight", &[h], 1),
        tensor("blk.0.ffn_gate.weight", &[h, h], 12),
        tensor("blk.0.ffn_up.weight", &[h, h], 14),
        tensor("blk.0.ffn_down.weight", &[h, h], 13),
    ]
}

/// The tiny GGUF with `key` set to `value` (added when absent).
pub fn gguf_with(key: &str, value: Meta) -> Vec<u8> {
    let mut meta = tiny_gguf_meta();
    match meta.iter_mut().find(|(k, _)| k == key) {
        Some(kv) => kv.1 = value,
        None => meta.push((key.to_string(), value)),
    }
    gguf_bytes(&meta, &tiny_gguf_tensors()).0
}

/// The tiny model's `config.json`.
pub fn hf_config() -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "vocab_size": VOCAB,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": true,
        "max_position_embeddings": 64,
        "eos_token_id": 5,
    })
}

/// A word-level `tokenizer.json` of the tiny model's 6 tokens.
pub fn hf_tokenizer() -> Vec<u8> {
    json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [
            {"id": 4, "content": "<|im_start|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 5, "content": "<|im_end|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": {"a": 0, "b": 1, "c": 2, "d": 3, "<|im_start|>": 4, "<|im_end|>": 5}, "unk_token": "a"}
    })
    .to_string()
    .into_bytes()
}

/// The tiny model's `model.safetensors` (BF16 and F32 tensors).
pub fn hf_safetensors() -> Vec<u8> {
    let h = HIDDEN;
    let specs: Vec<(&str, Vec<usize>, Dtype)> = vec![
        ("model.embed_tokens.weight", vec![VOCAB, h], Dtype::BF16),
        ("model.norm.weight", vec![h], Dtype::F32),
        ("model.layers.0.input_layernorm.weight", vec![h], Dtype::F32),
        (
            "model.layers.0.post_attention_layernorm.weight",
            vec![h],
            Dtype::F16,
        ),
        ("model.layers.0.self_attn.q_proj.weight", vec![h, h], Dtype::BF16),
        ("model.layers.0.self_attn.k_proj.weight", vec![16, h], Dtype::BF16),
        ("model.layers.0.self_attn.v_proj.weight", vec![16, h], Dtype::F32),
        ("model.layers.0.self_attn.o_proj.weight", vec![h, h], Dtype::BF16),
        ("model.layers.0.mlp.gate_proj.weight", vec![h, h], Dtype::BF16),
        ("model.layers.0.mlp.up_proj.weight", vec![h, h], Dtype::BF16),
        ("model.layers.0.mlp.down_proj.weight", vec![h, h], Dtype::BF16),
    ];
    let data: Vec<Vec<u8>> = specs
        .iter()
        .enumerate()
        .map(|(i, (_, shape, dtype))| filler(shape.iter().product::<usize>() * dtype.bitsize() / 8, i as u64))
        .collect();
    let views: Vec<(String, TensorView)> = specs
        .iter()
        .zip(&data)
        .map(|((name, shape, dtype), bytes)| {
            (
                name.to_string(),
                TensorView::new(*dtype, shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

/// The files of the tiny Hugging Face directory, with `config` as its `config.json`.
pub fn hf_files_with(config: &Value) -> HashMap<String, Vec<u8>> {
    HashMap::from([
        ("config.json".to_string(), config.to_string().into_bytes()),
        ("tokenizer.json".to_string(), hf_tokenizer()),
        ("model.safetensors".to_string(), hf_safetensors()),
    ])
}

/// The files of the tiny Hugging Face directory.
pub fn hf_files() -> HashMap<String, Vec<u8>> {
    hf_files_with(&hf_config())
}
