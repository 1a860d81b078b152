//! Adapter files: safetensors holding only the trainable numbers, in their precision, plus
//! metadata (format, version, the full adapter config with its seeds, the base model's
//! fingerprint). A 13-parameter f32 TinyLoRA adapter carries 52 bytes of payload.
//!
//! Tensor `trainable` `[N]`: the values of every tie group in group order (see
//! [`crate::plan::group_sizes`]): v for TinyLoRA (u per group), R flattened for LoRA-XS
//! (r² per group), [B; Aᵀ] for LoRA (r (d_out + d_in) per module). Files are written
//! atomically (temporary file, then rename).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use tinylora_formats::FormatError;
use tinylora_formats::atomic::write_atomic;

use crate::config::{AdapterConfig, Precision};

/// `format` metadata value.
pub const FORMAT: &str = "tinylora-adapter";
/// `version` metadata value written by this build.
pub const VERSION: &str = "2";

/// An adapter file's content.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterFile {
    /// The adapter configuration (seeds included).
    pub config: AdapterConfig,
    /// Fingerprint of the base model it was made for.
    pub base_fingerprint: String,
    /// The trainable values in group order, as stored (rounded to the precision).
    pub values: Vec<f32>,
}

/// A problem with an adapter file, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum AdapterFileError {
    /// Reading or writing failed.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The file is not a valid adapter file.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The adapter belongs to another base model.
    #[error("{}: this adapter was made for base model {expected}, not for this model ({found})", path.display())]
    WrongModel {
        /// The file.
        path: PathBuf,
        /// Fingerprint in the adapter.
        expected: String,
        /// Fingerprint of the model it was applied to.
        found: String,
    },
}

fn invalid(path: &Path, message: impl Into<String>) -> AdapterFileError {
    AdapterFileError::Invalid {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn dtype(p: Precision) -> Dtype {
    match p {
        Precision::F32 => Dtype::F32,
        Precision::Bf16 => Dtype::BF16,
        Precision::F16 => Dtype::F16,
    }
}

/// Round `x` to the stored precision.
pub fn round_to(p: Precision, x: f32) -> f32 {
    match p {
        Precision::F32 => x,
        Precision::Bf16 => bf16::from_f32(x).to_f32(),
        Precision::F16 => f16::from_f32(x).to_f32(),
    }
}

impl AdapterFile {
    /// The payload bytes as stored.
    fn payload(&self) -> Vec<u8> {
        let p = self.config.precision;
        self.values
            .iter()
            .flat_map(|&x| match p {
                Precision::F32 => x.to_le_bytes().to_vec(),
                Precision::Bf16 => bf16::from_f32(x).to_le_bytes().to_vec(),
                Precision::F16 => f16::from_f32(x).to_le_bytes().to_vec(),
            })
            .collect()
    }

    /// Write atomically: a temporary file next to `path`, then a rename.
    pub fn save(&self, path: &Path) -> Result<(), AdapterFileError> {
        let payload = self.payload();
        let view = TensorView::new(dtype(self.config.precision), vec![self.values.len()], &payload)
            .map_err(|e| invalid(path, e.to_string()))?;
        let config = serde_json::to_string(&self.config).map_err(|e| invalid(path, e.to_string()))?;
        let metadata: HashMap<String, String> = [
            ("format", FORMAT.to_string()),
            ("version", VERSION.to_string()),
            ("config", config),
            ("base_fingerprint", self.base_fingerprint.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let bytes = safetensors::serialize([("trainable", view)], Some(metadata))
            .map_err(|e| invalid(path, e.to_string()))?;
        write_atomic(path, &bytes).map_err(|e| match e {
            FormatError::Io { path, error } => AdapterFileError::Io { path, error },
            other => invalid(path, other.to_string()),
        })
    }

    /// Read and validate an adapter file.
    pub fn load(path: &Path) -> Result<Self, AdapterFileError> {
        let bytes = std::fs::read(path).map_err(|error| AdapterFileError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        Self::parse(path, &bytes)
    }

    /// Validate and decode an adapter file's bytes; `path` names them in errors.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self, AdapterFileError> {
        let (_, meta) = SafeTensors::read_metadata(bytes)
            .map_err(|e| invalid(path, format!("not a safetensors file: {e}")))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        let field = |k: &str| {
            meta.get(k)
                .ok_or_else(|| invalid(path, format!("missing metadata `{k}`")))
        };
        if field("format")? != FORMAT {
            return Err(invalid(
                path,
                format!("format is {:?}, expected {FORMAT:?}", field("format")?),
            ));
        }
        if field("version")? != VERSION {
            return Err(invalid(
                path,
                format!(
                    "adapter format version {} is not supported (this build reads {VERSION})",
                    field("version")?
                ),
            ));
        }
        let config: AdapterConfig = serde_json::from_str(field("config")?)
            .map_err(|e| invalid(path, format!("bad config metadata: {e}")))?;
        let config = config.validated().map_err(|e| invalid(path, e.to_string()))?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| invalid(path, e.to_string()))?;
        let t = st
            .tensor("trainable")
            .map_err(|_| invalid(path, "missing tensor `trainable`"))?;
        if t.dtype() != dtype(config.precision) {
            return Err(invalid(
                path,
                format!(
                    "tensor `trainable` is {:?} but the config says {:?}",
                    t.dtype(),
                    config.precision
                ),
            ));
        }
        if t.shape().len() != 1 {
            return Err(invalid(
                path,
                format!("tensor `trainable` has shape {:?}, expected [N]", t.shape()),
            ));
        }
        let values: Vec<f32> = match config.precision {
            Precision::F32 => t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Precision::Bf16 => t
                .data()
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Precision::F16 => t
                .data()
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        };
        Ok(AdapterFile {
            config,
            base_fingerprint: field("base_fingerprint")?.clone(),
            values,
        })
    }

    /// Refuse a base model whose fingerprint differs from the one the adapter was made for.
    pub fn check_base(&self, path: &Path, fingerprint: &str) -> Result<(), AdapterFileError> {
        if self.base_fingerprint == fingerprint {
            Ok(())
        } else {
            Err(AdapterFileError::WrongModel {
                path: path.to_path_buf(),
                expected: self.base_fingerprint.clone(),
                found: fingerprint.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Tying;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tinylora-adapter-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn thirteen(precision: Precision) -> AdapterFile {
        let config = AdapterConfig {
            u: 13,
            tying: Tying::Full,
            precision,
            ..AdapterConfig::default()
        };
        let values = (0..13)
            .map(|i| round_to(precision, 0.1 * i as f32 - 0.6))
            .collect();
        AdapterFile {
            config,
            base_fingerprint: "0123456789abcdef".into(),
            values,
        }
    }

    #[test]
    fn thirteen_f32_parameters_are_52_bytes_and_round_trip() {
        let d = dir("rt");
        for (p, payload) in [(Precision::F32, 52), (Precision::Bf16, 26), (Precision::F16, 26)] {
            let a = thirteen(p);
            let path = d.join("a.safetensors");
            a.save(&path).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            let st = SafeTensors::deserialize(&bytes).unwrap();
            assert_eq!(st.tensor("trainable").unwrap().data().len(), payload);
            assert_eq!(AdapterFile::load(&path).unwrap(), a);
            assert!(!path.with_extension("safetensors.tmp").exists());
        }
    }

    #[test]
    fn wrong_model_and_broken_files_are_reported() {
        let d = dir("bad");
        let path = d.join("a.safetensors");
        let a = thirteen(Precision::F32);
        a.save(&path).unwrap();
        let e = AdapterFile::load(&path)
            .unwrap()
            .check_base(&path, "ffffffffffffffff")
            .unwrap_err();
        assert!(
            e.to_string().contains("made for base model 0123456789abcdef"),
            "{e}"
        );
        std::fs::write(&path, b"not an adapter").unwrap();
        let e = AdapterFile::load(&path).unwrap_err();
        assert!(
            e.to_string().contains("a.safetensors: not a safetensors file"),
            "{e}"
        );
        let e = AdapterFile::load(&d.join("missing.safetensors")).unwrap_err();
        assert!(e.to_string().contains("missing.safetensors"), "{e}");
    }
}
