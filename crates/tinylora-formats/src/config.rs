//! The architecture hyper-parameters shared by every loader.

use serde::{Deserialize, Serialize};

/// Supported decoder architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// Llama family (SmolLM2, Llama 2/3): no attention bias by default.
    Llama,
    /// Qwen2 / Qwen2.5: bias on the Q, K and V projections.
    Qwen2,
}

impl Architecture {
    /// Parse a GGUF `general.architecture` or HF `model_type` string.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "llama" | "mistral" => Some(Architecture::Llama),
            "qwen2" => Some(Architecture::Qwen2),
            _ => None,
        }
    }
    /// Name as GGUF and HF spell it.
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Qwen2 => "qwen2",
        }
    }
}

/// Hyper-parameters of a decoder-only transformer (Hugging Face naming).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Architecture family.
    pub architecture: Architecture,
    /// Model width H.
    pub hidden_size: usize,
    /// MLP inner width F.
    pub intermediate_size: usize,
    /// Number of decoder layers L.
    pub num_hidden_layers: usize,
    /// Query heads n_h.
    pub num_attention_heads: usize,
    /// Key/value heads n_kv (grouped-query attention when < n_h).
    pub num_key_value_heads: usize,
    /// Per-head width d_h (usually H / n_h).
    pub head_dim: usize,
    /// Vocabulary size V.
    pub vocab_size: usize,
    /// RoPE base θ.
    pub rope_theta: f32,
    /// RMSNorm ε.
    pub rms_norm_eps: f32,
    /// Whether the LM head reuses the token embedding.
    pub tie_word_embeddings: bool,
    /// Whether Q, K, V projections carry a bias.
    pub attention_bias: bool,
    /// Longest context the model was trained for.
    pub max_position_embeddings: usize,
}

impl ModelConfig {
    /// Total parameter count implied by the configuration.
    pub fn parameter_count(&self) -> usize {
        let (h, f) = (self.hidden_size, self.intermediate_size);
        let (q, kv) = (
            self.num_attention_heads * self.head_dim,
            self.num_key_value_heads * self.head_dim,
        );
        // q, k, v, o, then gate, up, down (as `ModuleKind::shape` gives them)
        let per_layer: usize = q * h
            + 2 * kv * h
            + h * q
            + 3 * f * h
            + 2 * self.hidden_size
            + if self.attention_bias {
                (self.num_attention_heads + 2 * self.num_key_value_heads) * self.head_dim
            } else {
                0
            };
        let embed = self.vocab_size * self.hidden_size;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        embed + head + self.hidden_size + self.num_hidden_layers * per_layer
    }
}
