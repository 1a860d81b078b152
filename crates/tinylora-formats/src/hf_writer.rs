//! Writing a Hugging Face-style model directory that `transformers` and tinylora load:
//! `config.json`, `model.safetensors`, `tokenizer.json`, `tokenizer_config.json`, each written
//! atomically.

use std::path::Path;

use half::bf16;
use safetensors::{Dtype, tensor::TensorView};
use serde_json::{Value, json};

use crate::atomic::{write_atomic, write_atomic_with};
use crate::config::{Architecture, ModelConfig};
use crate::error::{FormatError, Result};
use crate::model_file::HostTensor;
use crate::module_kind::ModuleKind;
use crate::tokenizer::TextTokenizer;

/// Storage type of the written weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveDtype {
    /// 4 bytes per weight: keeps a tiny merged update exactly.
    F32,
    /// 2 bytes per weight (rounds W + ΔW to 8 significant bits).
    Bf16,
}

impl std::str::FromStr for SaveDtype {
    type Err = crate::UnknownName;
    fn from_str(s: &str) -> std::result::Result<Self, crate::UnknownName> {
        crate::parse_name(
            "dtype",
            "f32, bf16",
            &[("f32", SaveDtype::F32), ("bf16", SaveDtype::Bf16)],
            s,
        )
    }
}

/// Every tensor of a llama / qwen2 checkpoint, Hugging Face names, in a canonical order.
pub fn hf_tensor_names(c: &ModelConfig) -> Vec<String> {
    let mut names = vec!["model.embed_tokens.weight".to_string()];
    for i in 0..c.num_hidden_layers {
        let p = format!("model.layers.{i}");
        names.push(format!("{p}.input_layernorm.weight"));
        for kind in ModuleKind::ALL {
            if kind == ModuleKind::Gate {
                names.push(format!("{p}.post_attention_layernorm.weight"));
            }
            names.push(kind.weight_name(i));
            if c.attention_bias && matches!(kind, ModuleKind::Q | ModuleKind::K | ModuleKind::V) {
                names.push(format!("{p}.{}.bias", kind.hf_path()));
            }
        }
    }
    names.push("model.norm.weight".to_string());
    if !c.tie_word_embeddings {
        names.push("lm_head.weight".to_string());
    }
    names
}

/// `config.json` for `c`.
fn config_json(c: &ModelConfig, tok: &TextTokenizer, dtype: SaveDtype) -> Value {
    let (arch, model_type) = match c.architecture {
        Architecture::Llama => ("LlamaForCausalLM", "llama"),
        Architecture::Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
    };
    json!({
        "architectures": [arch],
        "model_type": model_type,
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
        "attention_bias": c.attention_bias && c.architecture == Architecture::Llama,
        "max_position_embeddings": c.max_position_embeddings,
        "hidden_act": "silu",
        "bos_token_id": tok.bos_token.as_ref().map(|(id, _)| *id),
        "eos_token_id": tok.stop_ids,
        "torch_dtype": match dtype { SaveDtype::F32 => "float32", SaveDtype::Bf16 => "bfloat16" },
    })
}

/// `tokenizer_config.json`: special tokens, BOS policy, chat template.
fn tokenizer_config_json(c: &ModelConfig, tok: &TextTokenizer, chat_template: Option<&str>) -> Value {
    let mut v = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": tok.add_bos,
        "model_max_length": c.max_position_embeddings,
    });
    if let Some((_, text)) = &tok.bos_token {
        v["bos_token"] = json!(text);
    }
    if let Some((_, text)) = &tok.eos_token {
        v["eos_token"] = json!(text);
    }
    if let Some(src) = chat_template {
        v["chat_template"] = json!(src);
    }
    v
}

fn pretty(path: &Path, v: &Value) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(v).map_err(|e| FormatError::invalid(path, e.to_string()))
}

/// Write a model directory `dir` (created if needed) holding `tensors` (Hugging Face names,
/// PyTorch layout) and `metadata` in the safetensors header.
pub fn write_hf_model(
    dir: &Path,
    c: &ModelConfig,
    tok: &TextTokenizer,
    chat_template: Option<&str>,
    tensors: &[(String, HostTensor)],
    dtype: SaveDtype,
    metadata: Vec<(String, String)>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| FormatError::io(dir, e))?;
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, t)| match dtype {
            SaveDtype::F32 => f32_le_bytes(&t.data),
            SaveDtype::Bf16 => t
                .data
                .iter()
                .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
                .collect(),
        })
        .collect();
    let st_dtype = match dtype {
        SaveDtype::F32 => Dtype::F32,
        SaveDtype::Bf16 => Dtype::BF16,
    };
    let path = dir.join("model.safetensors");
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, t), b)| {
            TensorView::new(st_dtype, t.shape.clone(), b)
                .map(|v| (name.as_str(), v))
                .map_err(|e| FormatError::invalid(&path, format!("{name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut meta: std::collections::HashMap<String, String> = metadata.into_iter().collect();
    meta.insert("format".into(), "pt".into());
    write_atomic_with(&path, |tmp| {
        safetensors::serialize_to_file(views, Some(meta), tmp).map_err(std::io::Error::other)
    })?;
    let tok_path = dir.join("tokenizer.json");
    let tok_json = tok
        .inner
        .to_string(false)
        .map_err(|e| FormatError::invalid(&tok_path, format!("cannot serialise the tokenizer: {e}")))?;
    write_atomic(&tok_path, tok_json.as_bytes())?;
    let cfg_path = dir.join("tokenizer_config.json");
    write_atomic(
        &cfg_path,
        &pretty(&cfg_path, &tokenizer_config_json(c, tok, chat_template))?,
    )?;
    let cfg_path = dir.join("config.json");
    write_atomic(&cfg_path, &pretty(&cfg_path, &config_json(c, tok, dtype))?)
}

fn f32_le_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}
