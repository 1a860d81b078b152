//! What the frozen weight matrices are kept as on the device (`--weights`).

use std::fmt;
use std::str::FromStr;

use crate::model_file::TensorSummary;
use crate::quant::GgmlType;

/// The storage of the weight matrices (projections, LM head, embedding) on the device. Norms
/// and biases are always f32. TinyLoRA never changes these weights, so they may stay
/// compressed: the engine multiplies by the blocks directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// As the file stores them: quantized blocks stay blocks, F16/BF16 stay half precision,
    /// F32 stays f32.
    #[default]
    Auto,
    /// Every matrix dequantized to f32 (4 bytes a value).
    F32,
    /// Every matrix in f16 (2 bytes a value).
    F16,
    /// Every matrix in bf16 (2 bytes a value).
    Bf16,
    /// At most 8 bits a value: quantized blocks stay, others are quantized to Q8_0.
    Q8,
    /// About 4 bits a value: Q4_0, Q4_1 and Q4_K blocks stay, others are quantized to Q4_1;
    /// the embedding and the LM head as with `Q8` (4 bits there cost far more accuracy,
    /// which is why llama.cpp's Q4 mixes keep them at 6 bits or more).
    Q4,
}

impl WeightFormat {
    /// Every choice, in `--help` order.
    pub const ALL: [WeightFormat; 6] = [Self::Auto, Self::F32, Self::F16, Self::Bf16, Self::Q8, Self::Q4];

    /// The name `--weights` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
            Self::Q8 => "q8",
            Self::Q4 => "q4",
        }
    }

    /// The choice for the embedding and the LM head: `Q8` for `Q4`, else the same.
    pub fn for_embedding(self) -> Self {
        if self == Self::Q4 { Self::Q8 } else { self }
    }

    /// The choice for the matrix named `name` (Hugging Face or GGUF name).
    pub fn for_tensor(self, name: &str) -> Self {
        let head = [
            "model.embed_tokens.weight",
            "lm_head.weight",
            "token_embd.weight",
            "output.weight",
        ];
        if head.contains(&name) {
            self.for_embedding()
        } else {
            self
        }
    }

    /// The type a matrix stored as `stored`, with rows of `cols` values, is kept as. A
    /// conversion whose blocks do not divide the rows keeps the matrix in f16 instead.
    pub fn kept_as(self, stored: GgmlType, cols: usize) -> GgmlType {
        use GgmlType::*;
        let target = match self {
            Self::Auto => stored,
            Self::F32 => F32,
            Self::F16 => F16,
            Self::Bf16 => BF16,
            Self::Q8 if is_block_type(stored) => stored,
            Self::Q8 => Q8_0,
            Self::Q4 if matches!(stored, Q4_0 | Q4_1 | Q4_K) => stored,
            Self::Q4 => Q4_1,
        };
        if !target.can_dequantize() {
            F32
        } else if !cols.is_multiple_of(target.block_size()) {
            F16
        } else {
            target
        }
    }
}

/// Whether `ty` is a quantized block type (not F32/F16/BF16).
pub fn is_block_type(ty: GgmlType) -> bool {
    ty.block_size() > 1
}

/// Bits a value of `ty` takes, scales included (Q4_1: 5, Q8_0: 8.5, F16: 16).
pub fn bits_per_value(ty: GgmlType) -> f64 {
    (ty.type_size() * 8) as f64 / ty.block_size() as f64
}

/// The weight matrices of one stored type, as `--weights` keeps them.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageLine {
    /// The file's storage type (`Q4_1`, `BF16`, ...).
    pub stored: String,
    /// What they are kept as.
    pub kept: GgmlType,
    /// How many matrices.
    pub matrices: usize,
    /// Their values.
    pub values: usize,
    /// Their bytes as kept.
    pub bytes: usize,
}

/// What `format` makes of the 2-D tensors of a file (from [`crate::ModelFile::tensor_summaries`]),
/// one line per (stored, kept) pair, in the files' order of first appearance.
pub fn storage_plan(tensors: &[TensorSummary], format: WeightFormat) -> Vec<StorageLine> {
    let mut lines: Vec<StorageLine> = vec![];
    for t in tensors.iter().filter(|t| t.shape.len() == 2) {
        let [rows, cols] = [t.shape[0], t.shape[1]];
        let kept = match GgmlType::from_name(&t.dtype) {
            Some(stored) => format.for_tensor(&t.name).kept_as(stored, cols),
            None => GgmlType::F32, // other safetensors types are read as f32
        };
        let bytes = kept.bytes_for(cols).unwrap_or(0).saturating_mul(rows);
        match lines.iter_mut().find(|l| l.stored == t.dtype && l.kept == kept) {
            Some(l) => {
                l.matrices += 1;
                l.values += rows * cols;
                l.bytes += bytes;
            }
            None => lines.push(StorageLine {
                stored: t.dtype.clone(),
                kept,
                matrices: 1,
                values: rows * cols,
                bytes,
            }),
        }
    }
    lines
}

impl StorageLine {
    /// `Q4_1 kept` or `BF16 → Q8_0`.
    pub fn choice(&self) -> String {
        if self.kept.name() == self.stored {
            format!("{} kept", self.stored)
        } else {
            format!("{} → {}", self.stored, self.kept.name())
        }
    }
}

impl fmt::Display for StorageLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} matrices, {:.1}M values, {:.1} MB)",
            self.choice(),
            self.matrices,
            self.values as f64 / 1e6,
            self.bytes as f64 / 1e6
        )
    }
}

impl fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for WeightFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|w| w.name() == s.to_ascii_lowercase())
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|w| w.name()).collect();
                format!("unknown weight format `{s}` (one of {})", names.join(", "))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use GgmlType::*;

    #[test]
    fn choices_per_stored_type() {
        assert_eq!(WeightFormat::Auto.kept_as(Q4_1, 576), Q4_1);
        assert_eq!(WeightFormat::Auto.kept_as(BF16, 576), BF16);
        assert_eq!(WeightFormat::Auto.kept_as(F32, 576), F32);
        assert_eq!(WeightFormat::F32.kept_as(Q6_K, 1536), F32);
        assert_eq!(WeightFormat::Q8.kept_as(Q6_K, 1536), Q6_K);
        assert_eq!(WeightFormat::Q8.kept_as(BF16, 576), Q8_0);
        assert_eq!(WeightFormat::Q4.kept_as(Q4_K, 1536), Q4_K);
        assert_eq!(WeightFormat::Q4.kept_as(Q8_0, 896), Q4_1);
        assert_eq!(WeightFormat::Q4.kept_as(F32, 50), F16, "rows not whole blocks");
        assert_eq!(
            WeightFormat::Q4.for_tensor("output.weight").kept_as(F32, 64),
            Q8_0
        );
        assert_eq!(
            WeightFormat::Q4
                .for_tensor("blk.0.ffn_up.weight")
                .kept_as(F32, 64),
            Q4_1
        );
        assert_eq!(bits_per_value(Q4_1), 5.0);
        assert_eq!("Q8".parse::<WeightFormat>(), Ok(WeightFormat::Q8));
        assert!(
            "q3".parse::<WeightFormat>()
                .unwrap_err()
                .contains("auto, f32, f16, bf16, q8, q4")
        );
    }
}
