//! Model file formats for tinylora.
//!
//! - [`gguf`]: GGUF v2/v3 reader; [`quant`]: ggml block dequantization to f32.
//! - [`block_matrix`]: a weight matrix kept in its ggml blocks; [`weight_format`]: which
//!   storage `--weights` picks for each stored type.
//! - [`model_file`]: one entry point ([`ModelFile::open`]) for a GGUF file or a Hugging Face
//!   directory (`config.json`, safetensors, `tokenizer.json`, `tokenizer_config.json`).
//! - [`tokenizer`]: the model's tokenizer; [`chat_template`]: its Jinja chat template.
//! - [`module_kind`]: the seven projections of a decoder layer ([`ModuleKind`]).
//! - [`hf_writer`]: writing a Hugging Face model directory; [`atomic`]: atomic file writes.

pub mod atomic;
pub mod block_matrix;
pub mod bytes;
pub mod chat_template;
pub mod config;
pub mod error;
pub mod fingerprint;
pub mod gguf;
pub mod hf_writer;
pub mod model_file;
pub mod module_kind;
pub mod names;
pub mod quant;
pub mod text_stream;
pub mod tokenizer;
pub mod weight_format;

pub use block_matrix::{BlockError, BlockMatrix};
pub use bytes::FileBytes;
pub use chat_template::{ChatMessage, ChatTemplate, TemplateError};
pub use config::{Architecture, ModelConfig};
pub use error::{FormatError, Result, error_chain};
pub use gguf::{GgufFile, GgufValue};
pub use hf_writer::{SaveDtype, hf_tensor_names, write_hf_model};
pub use model_file::{HostTensor, ModelFile, TensorSummary, read_model_config, safetensors_f32};
pub use module_kind::ModuleKind;
pub use names::{UnknownName, parse_name};
pub use text_stream::TextStream;
pub use tokenizer::{TextTokenizer, TokenizerError};
pub use weight_format::{StorageLine, WeightFormat, storage_plan};
