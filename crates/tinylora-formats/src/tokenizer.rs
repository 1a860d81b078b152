//! Tokenizers: Hugging Face `tokenizer.json`, or rebuilt from GGUF metadata (byte-level BPE).

use std::path::Path;

use serde_json::{Value, json};
use tokenizers::Tokenizer;

use crate::error::{FormatError, Result};
use crate::gguf::{GgufFile, GgufValue};

/// Token texts that end a turn in the chat formats we know; any present becomes a stop token.
const END_OF_TURN_TOKENS: [&str; 5] = [
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|end|>",
];

/// A tokenizer with the special tokens the engine needs.
#[derive(Clone)]
pub struct TextTokenizer {
    /// The underlying `tokenizers` tokenizer.
    pub inner: Tokenizer,
    /// Beginning-of-sequence token, when the model has one.
    pub bos_token: Option<(u32, String)>,
    /// End-of-sequence token.
    pub eos_token: Option<(u32, String)>,
    /// Whether a BOS token is prepended to every encoded text.
    pub add_bos: bool,
    /// Tokens that end generation (EOS and end-of-turn tokens).
    pub stop_ids: Vec<u32>,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab", &self.inner.get_vocab_size(true))
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .field("stop_ids", &self.stop_ids)
            .finish()
    }
}

/// Pre-tokenizer split patterns (Oniguruma syntax), as the Hugging Face tokenizers of each family define them.
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The tokenizer failed on a text or on ids (the tokenizers crate's error as the source).
#[derive(Debug, thiserror::Error)]
#[error("the tokenizer could not {op}")]
pub struct TokenizerError {
    /// `encode` or `decode`.
    pub op: &'static str,
    /// The tokenizers crate's error.
    #[source]
    pub source: tokenizers::Error,
}

/// A tokenizer from its JSON. The tokenizers crate panics on some malformed files (a syntax
/// error inside `decoder`, a bad `Precompiled` normalizer): the JSON is checked first, and any
/// other panic becomes an error too. `what` starts the error messages.
fn tokenizer_from_json(path: &Path, json: &[u8], what: &str) -> Result<Tokenizer> {
    serde_json::from_slice::<serde::de::IgnoredAny>(json)
        .map_err(|e| FormatError::invalid(path, format!("{what}: invalid JSON: {e}")))?;
    std::panic::catch_unwind(|| Tokenizer::from_bytes(json))
        .map_err(|_| FormatError::invalid(path, format!("{what}: the tokenizers library failed on it")))?
        .map_err(|e| FormatError::invalid(path, format!("{what}: {e}")))
}

impl TextTokenizer {
    /// Encode text to ids (with BOS when the model wants it; special tokens in the text are
    /// recognised).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|source| TokenizerError { op: "encode", source })?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if let (true, Some((bos, _))) = (self.add_bos, &self.bos_token) {
            ids.push(*bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Decode ids to text, dropping special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, true)
            .map_err(|source| TokenizerError { op: "decode", source })
    }

    /// The id of a token text, if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    fn with_specials(
        inner: Tokenizer,
        bos_token: Option<(u32, String)>,
        eos_token: Option<(u32, String)>,
        add_bos: bool,
        extra_stops: &[u32],
    ) -> Self {
        let mut stop_ids: Vec<u32> = eos_token.iter().map(|(id, _)| *id).collect();
        stop_ids.extend_from_slice(extra_stops);
        for t in END_OF_TURN_TOKENS {
            if let Some(id) = inner.token_to_id(t) {
                stop_ids.push(id);
            }
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();
        TextTokenizer {
            inner,
            bos_token,
            eos_token,
            add_bos,
            stop_ids,
        }
    }

    /// Load a `tokenizer.json` (its bytes; `path` names it in errors) with the special tokens
    /// named in `tokenizer_config.json` (`config` may be `Value::Null` when there is none) and
    /// `config.json` ids.
    pub fn from_hf_bytes(
        path: &Path,
        tokenizer_json: &[u8],
        config: &Value,
        eos_ids: &[u32],
    ) -> Result<Self> {
        let inner = tokenizer_from_json(path, tokenizer_json, "cannot load tokenizer")?;
        let special = |key: &str| -> Option<(u32, String)> {
            let v = config.get(key)?;
            let text = v.as_str().or_else(|| v.get("content")?.as_str())?;
            Some((inner.token_to_id(text)?, text.to_string()))
        };
        let bos = special("bos_token");
        let eos = special("eos_token").or_else(|| {
            let id = *eos_ids.first()?;
            Some((id, inner.id_to_token(id)?))
        });
        let add_bos = config
            .get("add_bos_token")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok(Self::with_specials(inner, bos, eos, add_bos, eos_ids))
    }

    /// Rebuild the tokenizer from GGUF `tokenizer.ggml.*` metadata.
    ///
    /// Supports byte-level BPE (`tokenizer.ggml.model = "gpt2"`) with the pre-tokenizers of
    /// SmolLM / GPT-2, Qwen2 and Llama 3.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let path = gguf.path();
        let model = gguf.require_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(FormatError::invalid(
                path,
                format!("tokenizer.ggml.model = {model:?}: only byte-level BPE (\"gpt2\") is supported"),
            ));
        }
        let strings = |key: &str| -> Result<Vec<&str>> {
            gguf.get(key)
                .and_then(GgufValue::as_array)
                .ok_or_else(|| FormatError::missing(path, format!("metadata `{key}` (string array)")))?
                .iter()
                .map(|v| {
                    v.as_str()
                        .ok_or_else(|| FormatError::invalid(path, format!("`{key}` holds a non-string")))
                })
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = strings("tokenizer.ggml.merges")?;
        let types: Vec<u64> = match gguf
            .get("tokenizer.ggml.token_type")
            .and_then(GgufValue::as_array)
        {
            Some(a) => a.iter().map(|v| v.as_u64().unwrap_or(1)).collect(),
            None => vec![1; tokens.len()],
        };
        let pre = gguf
            .get("tokenizer.ggml.pre")
            .and_then(GgufValue::as_str)
            .unwrap_or("default");
        let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": use_regex});
        let split = |pattern: &str| json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false});
        let pre_tokenizer = match pre {
            "qwen2" => {
                json!({"type": "Sequence", "pretokenizers": [split(QWEN2_PATTERN), byte_level(false)]})
            }
            "llama-bpe" | "llama3" => {
                json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_PATTERN), byte_level(false)]})
            }
            "smollm" => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
            "default" | "gpt2" => byte_level(true),
            other => {
                return Err(FormatError::invalid(
                    path,
                    format!(
                        "tokenizer.ggml.pre = {other:?} is not supported (known: smollm, qwen2, llama-bpe, gpt2)"
                    ),
                ));
            }
        };
        let vocab: serde_json::Map<String, Value> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), json!(i)))
            .collect();
        // Control (3) and user-defined (4) tokens are matched whole, before BPE.
        let added: Vec<Value> = tokens
            .iter()
            .zip(&types)
            .enumerate()
            .filter(|(_, (_, ty))| **ty == 3 || **ty == 4)
            .map(|(id, (t, ty))| {
                json!({"id": id, "content": t, "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": false, "special": *ty == 3})
            })
            .collect();
        let spec = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null,
                      "continuing_subword_prefix": null, "end_of_word_suffix": null,
                      "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": merges},
        });
        let inner = tokenizer_from_json(
            path,
            spec.to_string().as_bytes(),
            "cannot build tokenizer from metadata",
        )?;
        let id_key = |key: &str| -> Option<(u32, String)> {
            let id = gguf.get(key)?.as_u64()? as u32;
            Some((id, tokens.get(id as usize)?.to_string()))
        };
        let bos = id_key("tokenizer.ggml.bos_token_id");
        let eos = id_key("tokenizer.ggml.eos_token_id");
        let eot: Vec<u32> = id_key("tokenizer.ggml.eot_token_id")
            .map(|t| t.0)
            .into_iter()
            .collect();
        let add_bos = matches!(
            gguf.get("tokenizer.ggml.add_bos_token"),
            Some(GgufValue::Bool(true))
        );
        Ok(Self::with_specials(inner, bos, eos, add_bos, &eot))
    }
}
