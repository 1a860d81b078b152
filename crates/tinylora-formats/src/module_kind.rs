//! The seven linear projections of a decoder layer, by kind: what adapters target, what the
//! engine exposes, and how Hugging Face names their weights.

use serde::{Deserialize, Serialize};

use crate::config::ModelConfig;
use crate::names::UnknownName;

/// One of the seven projections of a decoder layer, in layer order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModuleKind {
    /// Attention query `[n_h·d_h, H]`.
    Q,
    /// Attention key `[n_kv·d_h, H]`.
    K,
    /// Attention value `[n_kv·d_h, H]`.
    V,
    /// Attention output `[H, n_h·d_h]`.
    O,
    /// MLP gate `[F, H]`.
    Gate,
    /// MLP up `[F, H]`.
    Up,
    /// MLP down `[H, F]`.
    Down,
}

impl ModuleKind {
    /// All seven, in layer order.
    pub const ALL: [ModuleKind; 7] = [
        ModuleKind::Q,
        ModuleKind::K,
        ModuleKind::V,
        ModuleKind::O,
        ModuleKind::Gate,
        ModuleKind::Up,
        ModuleKind::Down,
    ];

    /// Short name: `q`, `k`, `v`, `o`, `gate`, `up`, `down`.
    pub fn name(self) -> &'static str {
        match self {
            ModuleKind::Q => "q",
            ModuleKind::K => "k",
            ModuleKind::V => "v",
            ModuleKind::O => "o",
            ModuleKind::Gate => "gate",
            ModuleKind::Up => "up",
            ModuleKind::Down => "down",
        }
    }

    /// Path inside a Hugging Face decoder layer, e.g. `self_attn.q_proj`, `mlp.down_proj`.
    pub fn hf_path(self) -> &'static str {
        match self {
            ModuleKind::Q => "self_attn.q_proj",
            ModuleKind::K => "self_attn.k_proj",
            ModuleKind::V => "self_attn.v_proj",
            ModuleKind::O => "self_attn.o_proj",
            ModuleKind::Gate => "mlp.gate_proj",
            ModuleKind::Up => "mlp.up_proj",
            ModuleKind::Down => "mlp.down_proj",
        }
    }

    /// Hugging Face name of this projection's weight in `layer`.
    pub fn weight_name(self, layer: usize) -> String {
        format!("model.layers.{layer}.{}.weight", self.hf_path())
    }

    /// (d_out, d_in) of this projection on `model`.
    pub fn shape(self, model: &ModelConfig) -> (usize, usize) {
        let (h, f) = (model.hidden_size, model.intermediate_size);
        let (q, kv) = (
            model.num_attention_heads * model.head_dim,
            model.num_key_value_heads * model.head_dim,
        );
        match self {
            ModuleKind::Q => (q, h),
            ModuleKind::K | ModuleKind::V => (kv, h),
            ModuleKind::O => (h, q),
            ModuleKind::Gate | ModuleKind::Up => (f, h),
            ModuleKind::Down => (h, f),
        }
    }
}

impl std::fmt::Display for ModuleKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ModuleKind {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        ModuleKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownName {
                what: "module",
                given: s.to_string(),
                known: "q, k, v, o, gate, up, down",
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for k in ModuleKind::ALL {
            assert_eq!(k.name().parse::<ModuleKind>(), Ok(k));
            assert_eq!(k.to_string(), k.name());
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{}\"", k.name()));
        }
        let err = "q_proj".parse::<ModuleKind>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown module `q_proj` (known: q, k, v, o, gate, up, down)"
        );
        assert_eq!(
            ModuleKind::Down.weight_name(3),
            "model.layers.3.mlp.down_proj.weight"
        );
    }
}
