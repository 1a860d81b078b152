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

/// `bytes` (a safetensors file as the safetensors crate writes it) with its JSON header's keys
/// sorted: the crate writes the metadata from a `HashMap`, in an order that changes from one
/// write to the next, and an adapter file should be the same bytes for the same adapter. The
/// header is padded with spaces to a multiple of 8 bytes, as the format asks.
fn canonical_header(bytes: &[u8]) -> Vec<u8> {
    use std::collections::BTreeMap;
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes of header length")) as usize;
    let header: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).expect("the safetensors crate writes JSON");
    let sorted: BTreeMap<String, serde_json::Value> = header
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::Object(map) => {
                let inner: BTreeMap<String, serde_json::Value> = map.into_iter().collect();
                (k, serde_json::to_value(inner).expect("JSON values serialise"))
            }
            other => (k, other),
        })
        .collect();
    let mut json = serde_json::to_vec(&sorted).expect("JSON values serialise");
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + json.len() + bytes.len() - 8 - n);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&bytes[8 + n..]);
    out
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

    /// Write atomically (a temporary file next to `path`, flushed, then renamed), byte for byte
    /// the same for the same adapter.
    pub fn save(&self, path: &Path) -> Result<(), AdapterFileError> {
        write_atomic(path, &self.encode(path)?).map_err(|e| match e {
            FormatError::Io { path, error } => AdapterFileError::Io { path, error },
            other => invalid(path, other.to_string()),
        })
    }

    /// The file's bytes, as [`Self::save`] writes them (a browser offers them for download).
    pub fn to_bytes(&self) -> Result<Vec<u8>, AdapterFileError> {
        self.encode(Path::new("adapter.safetensors"))
    }

    /// The file's bytes; `path` names it in errors.
    fn encode(&self, path: &Path) -> Result<Vec<u8>, AdapterFileError> {
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
        Ok(canonical_header(&bytes))
    }

    /// Read and validate an adapter file.
    pub fn load(path: &Path) -> Result<Self, AdapterFileError> {
        if path.is_dir() {
            return Err(invalid(
                path,
                "is a directory but not a PEFT adapter: it has no adapter_config.json (an adapter is a file from `tinylora train` or a PEFT directory)",
            ));
        }
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
        if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(invalid(
                path,
                format!(
                    "value #{i} of tensor `trainable` is {v} (of {} values; adapter values must be finite)",
                    values.len()
                ),
            ));
        }
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

    /// The safetensors crate writes metadata from a `HashMap` (a new order per map); the file
    /// must not depend on it.
    #[test]
    fn the_same_adapter_is_the_same_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let files: Vec<Vec<u8>> = (0..12)
            .map(|i| {
                let path = d.join(format!("a{i}.safetensors"));
                thirteen(Precision::F32).save(&path).unwrap();
                std::fs::read(&path).unwrap()
            })
            .collect();
        assert!(files.iter().all(|f| f == &files[0]));
        let n = u64::from_le_bytes(files[0][..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0, "header padded to 8 bytes");
        assert_eq!(
            AdapterFile::parse(d, &files[0]).unwrap(),
            thirteen(Precision::F32)
        );
    }

    #[test]
    fn thirteen_f32_parameters_are_52_bytes_and_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
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
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
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

    #[test]
    fn non_finite_values_are_refused_naming_the_file_and_index() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let path = d.join("nan.safetensors");
        for (p, i, bad, shown) in [
            (Precision::F32, 3, f32::NAN, "NaN"),
            (Precision::F32, 0, f32::NEG_INFINITY, "-inf"),
            (Precision::F16, 12, 1e6, "inf"), // beyond f16: stored as +inf
            (Precision::Bf16, 7, f32::INFINITY, "inf"),
        ] {
            let mut a = thirteen(p);
            a.values[i] = bad;
            a.save(&path).unwrap();
            let e = AdapterFile::load(&path).unwrap_err().to_string();
            let expected =
                format!("nan.safetensors: value #{i} of tensor `trainable` is {shown} (of 13 values");
            assert!(e.contains(&expected), "{e}");
        }
    }

    #[test]
    fn a_directory_without_adapter_config_is_not_an_adapter() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let e = AdapterFile::load(d).unwrap_err().to_string();
        let expected = format!(
            "{}: is a directory but not a PEFT adapter: it has no adapter_config.json",
            d.display()
        );
        assert!(e.contains(&expected), "{e}");
    }

    // Property tests of the parser on hostile input: random byte edits (often digits, so that
    // the metadata JSON stays well-formed and its numbers change), 8-byte writes of boundary
    // values, deletions and truncations of a valid file (biased to its header), and random
    // payloads under valid metadata, must parse or fail with an error, never panic. The parser
    // sizes nothing from the header beyond the bytes given (safetensors checks its offsets;
    // the values are at most the payload's bytes). Cases: proptest's default (256) or
    // PROPTEST_CASES, e.g. for a long run
    // `PROPTEST_CASES=1000000 cargo test --release -p tinylora-adapter --lib adapter_file`.
    mod fuzz {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        /// A valid file's bytes with `values` as its payload (`None`: the thirteen values).
        fn file_bytes(p: Precision, payload: Option<&[u8]>) -> Vec<u8> {
            let a = thirteen(p);
            let payload = payload.map_or_else(|| a.payload(), <[u8]>::to_vec);
            let width = if p == Precision::F32 { 4 } else { 2 };
            let n = payload.len() / width;
            let view = TensorView::new(dtype(p), vec![n], &payload[..n * width]).unwrap();
            let metadata: HashMap<String, String> = [
                ("format", FORMAT.to_string()),
                ("version", VERSION.to_string()),
                ("config", serde_json::to_string(&a.config).unwrap()),
                ("base_fingerprint", a.base_fingerprint.clone()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            safetensors::serialize([("trainable", view)], Some(metadata)).unwrap()
        }

        fn precision() -> impl Strategy<Value = Precision> {
            prop_oneof![Just(Precision::F32), Just(Precision::Bf16), Just(Precision::F16)]
        }

        /// (position, value, operation)
        fn edit() -> impl Strategy<Value = (usize, u64, u8)> {
            let value = prop_oneof![
                Just(0u64),
                Just(u64::MAX),
                Just(u64::MAX - 15),
                Just(1 << 31),
                Just(1 << 63),
                0u64..512,
                any::<u64>(),
            ];
            let op = prop_oneof![4 => Just(0u8), 2 => Just(1), 2 => Just(2), 1 => Just(3), 1 => Just(4)];
            (any::<usize>(), value, op)
        }

        fn parses_or_fails_cleanly(bytes: &[u8]) -> Result<(), TestCaseError> {
            if let Ok(a) = AdapterFile::parse(Path::new("fuzz.safetensors"), bytes) {
                prop_assert!(a.values.iter().all(|v| v.is_finite()));
                prop_assert!(a.values.len() * 2 <= bytes.len());
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn edited_adapter_files_parse_or_fail_cleanly(p in precision(), edits in vec(edit(), 1..4)) {
                let mut bytes = file_bytes(p, None);
                let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
                for (pos, v, op) in edits {
                    let len = bytes.len();
                    if len == 0 {
                        break;
                    }
                    // half the positions in the header, past its length field
                    let i = if pos & 1 == 0 { 8 + (pos >> 1) % (header.min(len).max(9) - 8) } else { (pos >> 1) % len };
                    let i = i.min(len - 1);
                    match op {
                        0 => bytes[i] = b'0' + (v % 10) as u8,
                        1 => bytes[i] = v as u8,
                        2 => {
                            let end = (i + 8).min(len);
                            bytes[i..end].copy_from_slice(&v.to_le_bytes()[..end - i]);
                        }
                        3 => {
                            bytes.remove(i);
                        }
                        _ => bytes.truncate(i),
                    }
                }
                parses_or_fails_cleanly(&bytes)?;
            }

            #[test]
            fn any_payload_parses_or_fails_cleanly(p in precision(), payload in vec(any::<u8>(), 0..80)) {
                parses_or_fails_cleanly(&file_bytes(p, Some(&payload)))?;
            }
        }
    }
}
