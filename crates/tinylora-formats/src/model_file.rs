//! One entry point for model files: a GGUF file or a Hugging Face directory.
//!
//! Tensors are always addressed by Hugging Face names (`model.layers.3.self_attn.q_proj.weight`)
//! and returned as f32 in PyTorch layout; GGUF names and llama's Q/K row permutation are undone
//! here so that every later stage sees one convention.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use crate::block_matrix::{BlockError, BlockMatrix};
use crate::bytes::FileBytes;
use crate::chat_template::ChatTemplate;
use crate::config::{Architecture, ModelConfig};
use crate::error::{FormatError, Result, error_chain};
use crate::gguf::{GgufFile, GgufValue};
use crate::quant::GgmlType;
use crate::tokenizer::TextTokenizer;
use crate::weight_format::WeightFormat;

/// A tensor in host memory: f32, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Dims, outermost first.
    pub shape: Vec<usize>,
    /// Values.
    pub data: Vec<f32>,
}

/// One line of a file's tensor listing.
#[derive(Debug, Clone)]
pub struct TensorSummary {
    /// Name as stored in the file.
    pub name: String,
    /// Dims, outermost first.
    pub shape: Vec<usize>,
    /// Storage type as the file names it (`Q4_K`, `BF16`, ...).
    pub dtype: String,
}

enum Weights {
    Gguf(GgufFile),
    Safetensors {
        shards: Vec<(PathBuf, FileBytes)>,
        /// tensor name -> shard index
        index: HashMap<String, usize>,
    },
}

/// An opened model: configuration, tokenizer, chat template and lazily read weights.
pub struct ModelFile {
    path: PathBuf,
    /// Architecture hyper-parameters.
    pub config: ModelConfig,
    /// The model's tokenizer.
    pub tokenizer: TextTokenizer,
    /// The model's chat template, when it ships one.
    pub chat_template: Option<ChatTemplate>,
    weights: Weights,
}

impl std::fmt::Debug for ModelFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelFile")
            .field("path", &self.path)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The llama.cpp name of a Hugging Face tensor name.
pub fn gguf_name(hf: &str) -> Option<String> {
    match hf {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, kind) = rest.rsplit_once('.')?;
    let short = match module {
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        _ => return None,
    };
    Some(format!("blk.{layer}.{short}.{kind}"))
}

/// Little-endian safetensors data of type F32, F16 or BF16 as f32 (`None` for other types).
pub fn safetensors_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

/// Undo llama.cpp's rotary permutation of Q/K rows.
///
/// The converter stores, per head, row `2j + s` = original row `s·d_h/2 + j`
/// (j < d_h/2, s ∈ {0, 1}); `data` is `[n_heads·d_h, cols]`.
/// Rows are `cols` elements of any type (f32 values, or the bytes of a row of ggml blocks).
pub fn unpermute_rows<E: Copy + Default>(data: &[E], n_heads: usize, cols: usize) -> Vec<E> {
    if n_heads == 0 || cols == 0 {
        return data.to_vec(); // nothing to undo (and no division by zero)
    }
    let rows = data.len() / cols;
    let head_dim = rows / n_heads;
    let half = head_dim / 2;
    let mut out = vec![E::default(); data.len()];
    for h in 0..n_heads {
        for j in 0..half {
            for s in 0..2 {
                let src = h * head_dim + 2 * j + s;
                let dst = h * head_dim + s * half + j;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

fn read_json(path: &Path) -> Result<Value> {
    parse_json(path, &std::fs::read(path).map_err(|e| FormatError::io(path, e))?)
}

fn parse_json(path: &Path, bytes: &[u8]) -> Result<Value> {
    serde_json::from_slice(bytes).map_err(|e| FormatError::invalid(path, format!("invalid JSON: {e}")))
}

/// The files of a Hugging Face model directory, by file name: `None` for a file that is not
/// there. On disk they are memory-mapped; in a browser they are the bytes the page was given.
type HfFiles<'a> = dyn FnMut(&str) -> Result<Option<FileBytes>> + 'a;

/// Read a Hugging Face `config.json`: the architecture and the EOS ids it names.
pub fn hf_config(path: &Path) -> Result<(ModelConfig, Vec<u32>)> {
    hf_config_of(path, &read_json(path)?)
}

/// The largest width (hidden, MLP, head and attention widths) a configuration may state.
const MAX_WIDTH: usize = 1 << 20;
/// The most layers, or heads, a configuration may state.
const MAX_COUNT: usize = 1 << 16;
/// The largest vocabulary a configuration may state.
const MAX_VOCAB: usize = 1 << 24;

/// Check the sizes of a configuration before anything is sized from them, and fill in
/// `head_dim` (`None`: hidden_size / num_attention_heads). `key` names a field (Hugging Face
/// naming) as the file spells it, quoted.
fn validate_config(
    path: &Path,
    c: &mut ModelConfig,
    head_dim: Option<usize>,
    key: &dyn Fn(&str) -> String,
) -> Result<()> {
    let bad = |field: &str, value: &dyn std::fmt::Display, why: &str| {
        FormatError::invalid(path, format!("{} = {value} {why}", key(field)))
    };
    let sizes = [
        ("hidden_size", c.hidden_size, MAX_WIDTH),
        ("intermediate_size", c.intermediate_size, MAX_WIDTH),
        ("num_hidden_layers", c.num_hidden_layers, MAX_COUNT),
        ("num_attention_heads", c.num_attention_heads, MAX_COUNT),
        ("num_key_value_heads", c.num_key_value_heads, MAX_COUNT),
        ("vocab_size", c.vocab_size, MAX_VOCAB),
    ];
    for (field, value, max) in sizes
        .into_iter()
        .chain(head_dim.map(|d| ("head_dim", d, MAX_WIDTH)))
    {
        if value == 0 {
            return Err(bad(field, &value, "is invalid: it must be at least 1"));
        }
        if value > max {
            return Err(bad(field, &value, &format!("is absurdly large (at most {max})")));
        }
    }
    c.head_dim = match head_dim {
        Some(d) => d,
        None if c.hidden_size.is_multiple_of(c.num_attention_heads) => c.hidden_size / c.num_attention_heads,
        None => {
            return Err(bad(
                "hidden_size",
                &c.hidden_size,
                &format!(
                    "is not divisible by {} = {} (and no {} is given)",
                    key("num_attention_heads"),
                    c.num_attention_heads,
                    key("head_dim")
                ),
            ));
        }
    };
    if !c.head_dim.is_multiple_of(2) {
        return Err(bad(
            "head_dim",
            &c.head_dim,
            "is odd (rotary embeddings rotate pairs of dimensions)",
        ));
    }
    if !c.num_attention_heads.is_multiple_of(c.num_key_value_heads) {
        return Err(bad(
            "num_attention_heads",
            &c.num_attention_heads,
            &format!(
                "is not a multiple of {} = {}",
                key("num_key_value_heads"),
                c.num_key_value_heads
            ),
        ));
    }
    let width = c.num_attention_heads.checked_mul(c.head_dim);
    if width.is_none_or(|w| w > MAX_WIDTH) {
        return Err(bad(
            "head_dim",
            &c.head_dim,
            &format!(
                "is absurdly large: {} heads × {} is more than {MAX_WIDTH}",
                c.num_attention_heads, c.head_dim
            ),
        ));
    }
    if !(c.rope_theta.is_finite() && c.rope_theta > 0.0) {
        return Err(bad(
            "rope_theta",
            &c.rope_theta,
            "is invalid: it must be a positive number",
        ));
    }
    if !(c.rms_norm_eps.is_finite() && c.rms_norm_eps >= 0.0) {
        return Err(bad(
            "rms_norm_eps",
            &c.rms_norm_eps,
            "is invalid: it must be a number ≥ 0",
        ));
    }
    Ok(())
}

/// A size read from a file as usize (`usize::MAX` when it does not fit, which
/// [`validate_config`] then refuses).
fn size(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

fn hf_config_of(path: &Path, cfg: &Value) -> Result<(ModelConfig, Vec<u32>)> {
    // absent (or null): None; present but not a non-negative integer: an error with its value
    let opt = |k: &str| -> Result<Option<usize>> {
        match cfg.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(|n| Some(size(n))).ok_or_else(|| {
                FormatError::invalid(
                    path,
                    format!("field `{k}` is present but invalid: {v} is not a non-negative integer"),
                )
            }),
        }
    };
    let num = |k: &str| -> Result<usize> {
        opt(k)?.ok_or_else(|| FormatError::missing(path, format!("field `{k}`")))
    };
    let model_type = match cfg.get("model_type") {
        None | Some(Value::Null) => return Err(FormatError::missing(path, "field `model_type`")),
        Some(v) => v.as_str().ok_or_else(|| {
            FormatError::invalid(
                path,
                format!("field `model_type` is present but invalid: {v} is not a string"),
            )
        })?,
    };
    let architecture = Architecture::parse(model_type).ok_or_else(|| {
        FormatError::invalid(
            path,
            format!("model_type {model_type:?} is not supported (llama, qwen2)"),
        )
    })?;
    let hidden_size = num("hidden_size")?;
    let num_attention_heads = num("num_attention_heads")?;
    let float = |k: &str, d: f64| cfg.get(k).and_then(Value::as_f64).unwrap_or(d) as f32;
    let mut config = ModelConfig {
        architecture,
        hidden_size,
        intermediate_size: num("intermediate_size")?,
        num_hidden_layers: num("num_hidden_layers")?,
        num_attention_heads,
        num_key_value_heads: opt("num_key_value_heads")?.unwrap_or(num_attention_heads),
        head_dim: 0, // set by validate_config
        vocab_size: num("vocab_size")?,
        // transformers 5 writes it inside `rope_parameters`
        rope_theta: cfg
            .get("rope_theta")
            .or_else(|| cfg.get("rope_parameters")?.get("rope_theta"))
            .and_then(Value::as_f64)
            .unwrap_or(10_000.0) as f32,
        rms_norm_eps: float("rms_norm_eps", 1e-6),
        tie_word_embeddings: cfg
            .get("tie_word_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        attention_bias: architecture == Architecture::Qwen2
            || cfg
                .get("attention_bias")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        max_position_embeddings: opt("max_position_embeddings")?.unwrap_or(4096),
    };
    validate_config(path, &mut config, opt("head_dim")?, &|k| format!("`{k}`"))?;
    let eos_ids: Vec<u32> = match cfg.get("eos_token_id") {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_u64).map(|v| v as u32).collect(),
        Some(v) => v.as_u64().map(|v| v as u32).into_iter().collect(),
        None => vec![],
    };
    Ok((config, eos_ids))
}

/// The architecture of a model without reading its weights: `PATH` is a `config.json`, a
/// Hugging Face directory or a GGUF file.
pub fn read_model_config(path: &Path) -> Result<ModelConfig> {
    if path.is_dir() {
        Ok(hf_config(&path.join("config.json"))?.0)
    } else if path.extension().is_some_and(|e| e == "json") {
        Ok(hf_config(path)?.0)
    } else {
        Ok(ModelFile::open(path)?.config)
    }
}

impl ModelFile {
    /// Open a `.gguf` file or a Hugging Face model directory.
    pub fn open(path: &Path) -> Result<Self> {
        if path.is_dir() {
            Self::open_hf_dir(path)
        } else if path.exists() {
            Self::open_gguf(path)
        } else {
            Err(FormatError::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
            ))
        }
    }

    /// The path this model was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A GGUF file given as bytes (a browser's file); `name` labels it in errors.
    pub fn from_gguf_bytes(name: &str, bytes: Vec<u8>) -> Result<Self> {
        Self::from_gguf(GgufFile::parse(Path::new(name), bytes.into())?)
    }

    /// A Hugging Face model given as its files' bytes by file name (`config.json`,
    /// `tokenizer.json`, optional `tokenizer_config.json`, `model.safetensors` or an index and
    /// its shards); `name` labels the set in errors.
    pub fn from_hf_bytes(name: &str, mut files: HashMap<String, Vec<u8>>) -> Result<Self> {
        Self::open_hf(Path::new(name), &mut |f: &str| {
            Ok(files.remove(f).map(FileBytes::from))
        })
    }

    fn open_gguf(path: &Path) -> Result<Self> {
        Self::from_gguf(GgufFile::open(path)?)
    }

    fn from_gguf(gguf: GgufFile) -> Result<Self> {
        let path = &gguf.path().to_path_buf();
        let arch_name = gguf.require_str("general.architecture")?;
        let architecture = Architecture::parse(arch_name).ok_or_else(|| {
            FormatError::invalid(
                path,
                format!("architecture {arch_name:?} is not supported (llama, qwen2)"),
            )
        })?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let u = |k: &str| gguf.require_u64(&key(k)).map(size);
        let opt = |k: &str| gguf.optional_u64(&key(k)).map(|v| v.map(size));
        let f =
            |k: &str, default: f64| gguf.get(&key(k)).and_then(GgufValue::as_f64).unwrap_or(default) as f32;
        let hidden_size = u("embedding_length")?;
        let num_attention_heads = u("attention.head_count")?;
        let tokenizer = TextTokenizer::from_gguf(&gguf)?;
        let stated_vocab = opt("vocab_size")?;
        let vocab_size = stated_vocab.unwrap_or_else(|| tokenizer.inner.get_vocab_size(true));
        let mut config = ModelConfig {
            architecture,
            hidden_size,
            intermediate_size: u("feed_forward_length")?,
            num_hidden_layers: u("block_count")?,
            num_attention_heads,
            num_key_value_heads: opt("attention.head_count_kv")?.unwrap_or(num_attention_heads),
            head_dim: 0, // set by validate_config
            vocab_size,
            rope_theta: f("rope.freq_base", 10_000.0),
            rms_norm_eps: f("attention.layer_norm_rms_epsilon", 1e-6),
            tie_word_embeddings: gguf.tensor_info("output.weight").is_none(),
            attention_bias: gguf.tensor_info("blk.0.attn_q.bias").is_some(),
            max_position_embeddings: opt("context_length")?.unwrap_or(4096),
        };
        let gguf_key = |field: &str| match field {
            "vocab_size" if stated_vocab.is_none() => "the vocabulary size (`tokenizer.ggml.tokens`)".into(),
            _ => format!(
                "`{}`",
                key(match field {
                    "hidden_size" => "embedding_length",
                    "intermediate_size" => "feed_forward_length",
                    "num_hidden_layers" => "block_count",
                    "num_attention_heads" => "attention.head_count",
                    "num_key_value_heads" => "attention.head_count_kv",
                    "head_dim" => "attention.key_length",
                    "rope_theta" => "rope.freq_base",
                    "rms_norm_eps" => "attention.layer_norm_rms_epsilon",
                    other => other,
                })
            ),
        };
        validate_config(path, &mut config, opt("attention.key_length")?, &gguf_key)?;
        let chat_template = match gguf.get("tokenizer.chat_template").and_then(GgufValue::as_str) {
            Some(src) => Some(Self::compile_template(path, src, &tokenizer)?),
            None => None,
        };
        let layers_key = gguf_key("num_hidden_layers");
        let file = ModelFile {
            path: path.to_path_buf(),
            config,
            tokenizer,
            chat_template,
            weights: Weights::Gguf(gguf),
        };
        file.check_layers(&layers_key)?;
        Ok(file)
    }

    /// Refuse a layer count the weights do not back: every layer below it must have at least
    /// one tensor in the file, so the count is at most the number of tensors the file holds.
    fn check_layers(&self, key: &str) -> Result<()> {
        let (prefix, names): (&str, Vec<&str>) = match &self.weights {
            Weights::Gguf(g) => ("blk.", g.tensors.iter().map(|t| t.name.as_str()).collect()),
            Weights::Safetensors { index, .. } => {
                ("model.layers.", index.keys().map(String::as_str).collect())
            }
        };
        let layers = self.config.num_hidden_layers; // ≤ MAX_COUNT (validate_config)
        let mut seen = vec![false; layers];
        for name in names {
            let layer = name
                .strip_prefix(prefix)
                .and_then(|rest| rest.split_once('.'))
                .and_then(|(i, _)| i.parse::<usize>().ok());
            if let Some(seen) = layer.and_then(|i| seen.get_mut(i)) {
                *seen = true;
            }
        }
        match seen.iter().position(|&s| !s) {
            Some(missing) => Err(FormatError::invalid(
                &self.path,
                format!(
                    "{key} = {layers}, but the weights hold no tensors for layer {missing} ({} of the {layers} layers have tensors)",
                    seen.iter().filter(|&&s| s).count()
                ),
            )),
            None => Ok(()),
        }
    }

    fn compile_template(path: &Path, src: &str, tok: &TextTokenizer) -> Result<ChatTemplate> {
        let name = |t: &Option<(u32, String)>| t.as_ref().map(|t| t.1.clone()).unwrap_or_default();
        ChatTemplate::new(src, &name(&tok.bos_token), &name(&tok.eos_token))
            .map_err(|e| FormatError::invalid(path, error_chain(&e)))
    }

    fn open_hf_dir(dir: &Path) -> Result<Self> {
        Self::open_hf(dir, &mut |name: &str| {
            let path = dir.join(name);
            path.exists().then(|| FileBytes::map(&path)).transpose()
        })
    }

    fn open_hf(dir: &Path, files: &mut HfFiles) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let cfg = files("config.json")?.ok_or_else(|| {
            FormatError::missing(dir, "config.json (a Hugging Face model directory needs one)")
        })?;
        let (config, eos_ids) = hf_config_of(&cfg_path, &parse_json(&cfg_path, &cfg)?)?;
        let tok_path = dir.join("tokenizer.json");
        let tok = files("tokenizer.json")?
            .ok_or_else(|| FormatError::missing(dir, "tokenizer.json (the model's tokenizer)"))?;
        let tok_cfg_path = dir.join("tokenizer_config.json");
        let tok_cfg = match files("tokenizer_config.json")? {
            Some(bytes) => parse_json(&tok_cfg_path, &bytes)?,
            None => Value::Null,
        };
        let tokenizer = TextTokenizer::from_hf_bytes(&tok_path, &tok, &tok_cfg, &eos_ids)?;
        let template_src = match tok_cfg.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template")?.as_str().map(String::from)),
            _ => None,
        };
        let chat_template = match template_src {
            Some(src) => Some(Self::compile_template(&tok_cfg_path, &src, &tokenizer)?),
            None => None,
        };
        let weights = Self::open_safetensors(dir, files)?;
        let file = ModelFile {
            path: dir.to_path_buf(),
            config,
            tokenizer,
            chat_template,
            weights,
        };
        file.check_layers("`num_hidden_layers` in config.json")?;
        Ok(file)
    }

    fn open_safetensors(dir: &Path, files: &mut HfFiles) -> Result<Weights> {
        let index_path = dir.join("model.safetensors.index.json");
        let shards: Vec<(String, FileBytes)> = if let Some(single) = files("model.safetensors")? {
            vec![("model.safetensors".into(), single)]
        } else if let Some(index) = files("model.safetensors.index.json")? {
            let idx = parse_json(&index_path, &index)?;
            let map = idx
                .get("weight_map")
                .and_then(Value::as_object)
                .ok_or_else(|| FormatError::missing(&index_path, "field `weight_map`"))?;
            let mut names: Vec<&str> = map.values().filter_map(Value::as_str).collect();
            names.sort_unstable();
            names.dedup();
            let mut shards = Vec::new();
            for name in names {
                let bytes = files(name)?.ok_or_else(|| {
                    FormatError::missing(&index_path, format!("shard {name} (named in `weight_map`)"))
                })?;
                shards.push((name.to_string(), bytes));
            }
            shards
        } else {
            return Err(FormatError::missing(
                dir,
                "model.safetensors or model.safetensors.index.json",
            ));
        };
        let mut index = HashMap::new();
        let mut mapped = Vec::new();
        for (name, bytes) in shards {
            let file = dir.join(name);
            let st = SafeTensors::deserialize(&bytes)
                .map_err(|e| FormatError::invalid(&file, format!("invalid safetensors file: {e}")))?;
            for name in st.names() {
                index.insert(name.to_string(), mapped.len());
            }
            mapped.push((file, bytes));
        }
        Ok(Weights::Safetensors {
            shards: mapped,
            index,
        })
    }

    /// Every tensor stored in the file, in file order (GGUF) or name order (safetensors).
    pub fn tensor_summaries(&self) -> Vec<TensorSummary> {
        match &self.weights {
            Weights::Gguf(g) => g
                .tensors
                .iter()
                .map(|t| TensorSummary {
                    name: t.name.clone(),
                    shape: t.shape(),
                    dtype: t.dtype.name(),
                })
                .collect(),
            Weights::Safetensors { shards, .. } => {
                let mut out = BTreeMap::new();
                for (_, mmap) in shards {
                    if let Ok(st) = SafeTensors::deserialize(mmap) {
                        for (name, view) in st.tensors() {
                            out.insert(
                                name.clone(),
                                TensorSummary {
                                    name,
                                    shape: view.shape().to_vec(),
                                    dtype: format!("{:?}", view.dtype()),
                                },
                            );
                        }
                    }
                }
                out.into_values().collect()
            }
        }
    }

    /// GGUF metadata (empty for Hugging Face directories).
    pub fn gguf_metadata(&self) -> Option<&BTreeMap<String, GgufValue>> {
        match &self.weights {
            Weights::Gguf(g) => Some(&g.metadata),
            Weights::Safetensors { .. } => None,
        }
    }

    /// Whether the file holds a tensor (Hugging Face name).
    pub fn has_tensor(&self, name: &str) -> bool {
        match &self.weights {
            Weights::Gguf(g) => gguf_name(name).is_some_and(|n| g.tensor_info(&n).is_some()),
            Weights::Safetensors { index, .. } => index.contains_key(name),
        }
    }

    /// Read a tensor by Hugging Face name as f32 and check its shape.
    pub fn load(&self, name: &str, expected: &[usize]) -> Result<HostTensor> {
        let t = self.load_any(name)?;
        if t.shape != expected {
            return Err(FormatError::ShapeMismatch {
                path: self.path.clone(),
                tensor: name.into(),
                found: t.shape,
                expected: expected.to_vec(),
            });
        }
        Ok(t)
    }

    /// The heads whose Q/K rows llama.cpp permuted in tensor `name` (Hugging Face name), when
    /// this is a llama GGUF and `name` is such a projection; `None` otherwise.
    fn permuted_heads(&self, name: &str) -> Option<usize> {
        let cfg = &self.config;
        if !matches!(self.weights, Weights::Gguf(_)) || cfg.architecture != Architecture::Llama {
            return None;
        }
        if name.ends_with("q_proj.weight") {
            Some(cfg.num_attention_heads)
        } else if name.ends_with("k_proj.weight") {
            Some(cfg.num_key_value_heads)
        } else {
            None
        }
    }

    /// `read` on the view of safetensors tensor `name` held by shard `i`, with the shard's path.
    fn with_safetensors<T>(
        &self,
        shards: &[(PathBuf, FileBytes)],
        i: usize,
        name: &str,
        read: impl FnOnce(&Path, safetensors::tensor::TensorView<'_>) -> Result<T>,
    ) -> Result<T> {
        let (file, mmap) = &shards[i];
        let st = SafeTensors::deserialize(mmap)
            .map_err(|e| FormatError::invalid(file, format!("invalid safetensors file: {e}")))?;
        let view = st.tensor(name).map_err(|_| FormatError::MissingTensor {
            path: self.path.clone(),
            tensor: name.into(),
        })?;
        read(file, view)
    }

    /// Read a weight matrix `[rows, cols]` by Hugging Face name in the storage `format` picks
    /// for its stored type ([`WeightFormat::kept_as`]): the file's own blocks, or converted.
    pub fn load_blocks(
        &self,
        name: &str,
        [rows, cols]: [usize; 2],
        format: WeightFormat,
    ) -> Result<BlockMatrix> {
        let missing = || FormatError::MissingTensor {
            path: self.path.clone(),
            tensor: name.into(),
        };
        let (ty, shape, bytes, file) = match &self.weights {
            Weights::Gguf(g) => {
                let info = gguf_name(name)
                    .and_then(|n| g.tensor_info(&n))
                    .ok_or_else(missing)?;
                (
                    info.dtype,
                    info.shape(),
                    g.tensor_bytes(info).to_vec(),
                    self.path.clone(),
                )
            }
            Weights::Safetensors { shards, index } => {
                let &i = index.get(name).ok_or_else(missing)?;
                self.with_safetensors(shards, i, name, |file, view| {
                    let ty = match view.dtype() {
                        Dtype::F32 => GgmlType::F32,
                        Dtype::F16 => GgmlType::F16,
                        Dtype::BF16 => GgmlType::BF16,
                        other => {
                            return Err(FormatError::UnsupportedType {
                                path: file.to_path_buf(),
                                tensor: name.into(),
                                dtype: format!("{other:?}"),
                            });
                        }
                    };
                    Ok((
                        ty,
                        view.shape().to_vec(),
                        view.data().to_vec(),
                        file.to_path_buf(),
                    ))
                })?
            }
        };
        if shape != [rows, cols] {
            return Err(FormatError::ShapeMismatch {
                path: file,
                tensor: name.into(),
                found: shape,
                expected: vec![rows, cols],
            });
        }
        let blocks_error = |source: BlockError| FormatError::Blocks {
            path: file.clone(),
            tensor: name.into(),
            source,
        };
        let mut m = BlockMatrix::new(ty, rows, cols, bytes).map_err(blocks_error)?;
        if let Some(heads) = self.permuted_heads(name) {
            m.bytes = unpermute_rows(&m.bytes, heads, m.row_bytes());
        }
        m.convert(format.for_tensor(name).kept_as(ty, cols))
            .map_err(blocks_error)
    }

    /// Read a tensor by Hugging Face name as f32, whatever its shape.
    pub fn load_any(&self, name: &str) -> Result<HostTensor> {
        let missing = || FormatError::MissingTensor {
            path: self.path.clone(),
            tensor: name.into(),
        };
        match &self.weights {
            Weights::Gguf(g) => {
                let gname = gguf_name(name).ok_or_else(missing)?;
                let info = g.tensor_info(&gname).ok_or_else(missing)?;
                let shape = info.shape();
                let mut data = g.tensor_f32(info)?;
                if let (Some(heads), 2) = (self.permuted_heads(name), shape.len()) {
                    data = unpermute_rows(&data, heads, shape[1]);
                }
                Ok(HostTensor { shape, data })
            }
            Weights::Safetensors { shards, index } => {
                let &i = index.get(name).ok_or_else(missing)?;
                self.with_safetensors(shards, i, name, |file, view| {
                    let data = safetensors_f32(view.dtype(), view.data()).ok_or_else(|| {
                        FormatError::UnsupportedType {
                            path: file.to_path_buf(),
                            tensor: name.into(),
                            dtype: format!("{:?}", view.dtype()),
                        }
                    })?;
                    Ok(HostTensor {
                        shape: view.shape().to_vec(),
                        data,
                    })
                })
            }
        }
    }

    /// A fingerprint of the base model: FNV-1a (64-bit, hex) over the configuration, every
    /// tensor's name, shape and storage type, and the first 256 stored bytes of each tensor.
    /// Adapters record it so that applying one to another model can be refused.
    pub fn fingerprint(&self) -> String {
        let mut h = crate::fingerprint::Fnv1a::default();
        h.eat(serde_json::to_string(&self.config).unwrap_or_default().as_bytes());
        for t in self.tensor_summaries() {
            h.eat(format!("{}|{:?}|{}", t.name, t.shape, t.dtype).as_bytes());
            h.eat(self.raw_prefix(&t.name, 256));
        }
        h.hex()
    }

    /// Up to `n` leading stored bytes of a tensor (file naming), empty if absent.
    fn raw_prefix(&self, name: &str, n: usize) -> &[u8] {
        match &self.weights {
            Weights::Gguf(g) => g.tensor_info(name).map_or(&[][..], |i| {
                let b = g.tensor_bytes(i);
                &b[..b.len().min(n)]
            }),
            Weights::Safetensors { shards, index } => index.get(name).map_or(&[][..], |&i| {
                let mmap = &shards[i].1;
                match SafeTensors::deserialize(mmap)
                    .ok()
                    .and_then(|st| st.tensor(name).ok())
                {
                    Some(view) => {
                        let offset = view.data().as_ptr() as usize - mmap.as_ptr() as usize;
                        &mmap[offset..offset + view.data().len().min(n)]
                    }
                    None => &[],
                }
            }),
        }
    }

    /// A one-line description of the storage types, e.g. `Q4_1 ×211, F32 ×61`.
    pub fn dtype_summary(&self) -> String {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for t in self.tensor_summaries() {
            *counts.entry(t.dtype).or_default() += 1;
        }
        let mut v: Vec<_> = counts.into_iter().collect();
        v.sort_by_key(|b| std::cmp::Reverse(b.1));
        v.iter()
            .map(|(d, n)| format!("{d} ×{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
