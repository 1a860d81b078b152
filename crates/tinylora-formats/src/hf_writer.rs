//! Writing a Hugging Face-style model directory that `transformers` and tinylora load:
//! `config.json`, `model.safetensors`, `tokenizer.json`, `tokenizer_config.json`, each written
//! atomically.

use std::io::Write;
use std::path::Path;

use half::bf16;
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
    let mut meta: std::collections::BTreeMap<String, String> = metadata.into_iter().collect();
    meta.insert("format".into(), "pt".into());
    write_safetensors(&dir.join("model.safetensors"), tensors, dtype, &meta)?;
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

/// Write `tensors` as `dtype` with `metadata` to the safetensors file `path`, atomically.
fn write_safetensors(
    path: &Path,
    tensors: &[(String, HostTensor)],
    dtype: SaveDtype,
    metadata: &std::collections::BTreeMap<String, String>,
) -> Result<()> {
    let header = safetensors_header(tensors, dtype, metadata);
    write_atomic_with(path, |tmp| {
        let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(tmp)?);
        f.write_all(&(header.len() as u64).to_le_bytes())?;
        f.write_all(&header)?;
        for (_, t) in tensors {
            for chunk in t.data.chunks(1 << 16) {
                let bytes: Vec<u8> = match dtype {
                    SaveDtype::F32 => chunk.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    SaveDtype::Bf16 => chunk
                        .iter()
                        .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
                        .collect(),
                };
                f.write_all(&bytes)?;
            }
        }
        f.flush()
    })
}

/// The JSON header of a safetensors file holding `tensors` (in their order, as `dtype`) and
/// `metadata`, padded with spaces to a multiple of 8 bytes as the format recommends. The
/// tensors are then streamed after it: the model is never held twice in memory, and the file
/// is created by [`write_atomic_with`] with the usual permissions (safetensors' own
/// `serialize_to_file` goes through a private, owner-only temporary file).
fn safetensors_header(
    tensors: &[(String, HostTensor)],
    dtype: SaveDtype,
    metadata: &std::collections::BTreeMap<String, String>,
) -> Vec<u8> {
    let (name, size) = match dtype {
        SaveDtype::F32 => ("F32", 4),
        SaveDtype::Bf16 => ("BF16", 2),
    };
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!(metadata));
    let mut offset = 0usize;
    for (tensor, t) in tensors {
        let end = offset + t.data.len() * size;
        header.insert(
            tensor.clone(),
            json!({"dtype": name, "shape": t.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut bytes = serde_json::to_vec(&header).expect("JSON values serialise");
    bytes.resize(bytes.len().next_multiple_of(8), b' ');
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The streamed file, read back by the safetensors crate: same tensors, metadata, and the
    /// permissions any new file gets here.
    #[test]
    fn streamed_safetensors_read_back_with_the_usual_permissions() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let tensors = vec![
            (
                "b.weight".to_string(),
                HostTensor {
                    shape: vec![2, 3],
                    data: vec![1.0, -2.5, 3.0, 0.0, 1e-3, 7.0],
                },
            ),
            (
                "a".to_string(),
                HostTensor {
                    shape: vec![1],
                    data: vec![0.5],
                },
            ),
        ];
        let meta: std::collections::BTreeMap<String, String> = [("k".to_string(), "v".to_string())].into();
        for (dtype, st) in [
            (SaveDtype::F32, safetensors::Dtype::F32),
            (SaveDtype::Bf16, safetensors::Dtype::BF16),
        ] {
            let path = dir.join("model.safetensors");
            write_safetensors(&path, &tensors, dtype, &meta).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            let (n, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
            assert_eq!((8 + n) % 8, 0, "data 8-byte aligned");
            assert_eq!(header.metadata().as_ref().unwrap()["k"], "v");
            let read = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            for (name, t) in &tensors {
                let v = read.tensor(name).unwrap();
                assert_eq!((v.dtype(), v.shape()), (st, &t.shape[..]));
                let back: Vec<f32> = match dtype {
                    SaveDtype::F32 => v
                        .data()
                        .chunks(4)
                        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                        .collect(),
                    SaveDtype::Bf16 => v
                        .data()
                        .chunks(2)
                        .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                        .collect(),
                };
                let want: Vec<f32> = t
                    .data
                    .iter()
                    .map(|&x| {
                        if dtype == SaveDtype::Bf16 {
                            bf16::from_f32(x).to_f32()
                        } else {
                            x
                        }
                    })
                    .collect();
                assert_eq!(back, want, "{name}");
            }
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let probe = dir.join("probe");
                std::fs::File::create(&probe).unwrap();
                let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode(&path), mode(&probe), "as any new file, not owner-only");
            }
        }
    }
}
