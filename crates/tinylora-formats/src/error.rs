//! One error type for every model-file problem; each variant names the file.

use std::path::{Path, PathBuf};

/// An error while reading a model, tokenizer or template file.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The file could not be opened or read.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The file does not start with the GGUF magic.
    #[error("{}: not a GGUF file (first bytes {found:?}, expected \"GGUF\")", path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The first four bytes found.
        found: String,
    },
    /// A GGUF version this reader does not know.
    #[error("{}: GGUF version {version} is not supported (supported: 2, 3)", path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version in the header.
        version: u32,
    },
    /// The file ends before a structure it announces.
    #[error("{}: truncated: {what} needs bytes {start}..{end} but the file has {len} bytes", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// What was being read.
        what: String,
        /// First byte needed.
        start: u64,
        /// One past the last byte needed.
        end: u64,
        /// The file length.
        len: u64,
    },
    /// A tensor uses a ggml type number this reader does not know.
    #[error("{}: tensor `{tensor}` has unknown ggml type {type_id}", path.display())]
    UnknownType {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// The type number.
        type_id: u32,
    },
    /// A tensor uses a known type that cannot be dequantized here.
    #[error("{}: tensor `{tensor}` is stored as {dtype}, which tinylora cannot convert to f32", path.display())]
    UnsupportedType {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// The type name.
        dtype: String,
    },
    /// A tensor the architecture needs is not in the file.
    #[error("{}: missing tensor `{tensor}`", path.display())]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// The tensor name (Hugging Face naming).
        tensor: String,
    },
    /// A tensor has a shape that does not fit the model configuration.
    #[error("{}: tensor `{tensor}` has shape {found:?}, expected {expected:?}", path.display())]
    ShapeMismatch {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// Shape in the file (row-major, PyTorch order).
        found: Vec<usize>,
        /// Shape the configuration implies.
        expected: Vec<usize>,
    },
    /// A metadata key or config field the model needs is absent.
    #[error("{}: missing {key}", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
        /// The key, field or file that is missing.
        key: String,
    },
    /// Anything else that is malformed, explained in words.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// A weight matrix's blocks do not fit its shape, or cannot be kept as asked.
    #[error("{}: tensor `{tensor}`: {source}", path.display())]
    Blocks {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// What is wrong.
        #[source]
        source: crate::block_matrix::BlockError,
    },
}

impl FormatError {
    /// Shorthand for [`FormatError::Invalid`].
    pub fn invalid(path: &Path, message: impl Into<String>) -> Self {
        FormatError::Invalid {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    /// Shorthand for [`FormatError::Missing`].
    pub fn missing(path: &Path, key: impl Into<String>) -> Self {
        FormatError::Missing {
            path: path.to_path_buf(),
            key: key.into(),
        }
    }

    /// Shorthand for [`FormatError::Io`].
    pub fn io(path: &Path, error: std::io::Error) -> Self {
        FormatError::Io {
            path: path.to_path_buf(),
            error,
        }
    }
}

/// Result with a [`FormatError`].
pub type Result<T, E = FormatError> = std::result::Result<T, E>;

/// `error` and its sources as one line: `outer: inner: innermost` (for messages that carry
/// no error chain of their own, such as a JavaScript exception or an `Invalid` message).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
