//! What can stop training or evaluation: every library error, kept as the source.

use std::path::PathBuf;

use tinylora_adapter::{AdapterError, AdapterFileError};
use tinylora_engine::EngineError;
use tinylora_formats::{TemplateError, TokenizerError};

use crate::data::DataError;
use crate::reward::RewardError;

/// An error while training or evaluating.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A problem file cannot be read.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The chat template failed on a prompt.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// The tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// The engine failed (a device read-back, an empty prompt).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The adapter cannot be attached or used.
    #[error(transparent)]
    Adapter(#[from] AdapterError),
    /// An adapter file cannot be written.
    #[error(transparent)]
    AdapterFile(#[from] AdapterFileError),
    /// The rewards cannot be set up (a bad spec, a pattern that is not a regular expression,
    /// a reward program that does not start).
    #[error("setting up the rewards")]
    Rewards(#[source] RewardError),
    /// A reward failed (e.g. the external reward program).
    #[error("scoring step {step}")]
    Reward {
        /// The step (1-based) being scored.
        step: usize,
        /// What the reward said.
        #[source]
        source: RewardError,
    },
    /// A run file cannot be read or written.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A run file is not what it should be.
    #[error("{}: {message}", path.display())]
    RunFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// `--resume` with settings that differ from the checkpoint's.
    #[error(
        "{}: the run was made with other settings; differing: {}. Resume with the run's settings, or start a new run in another directory",
        path.display(),
        keys.join(", ")
    )]
    ConfigChanged {
        /// The run's recorded configuration.
        path: PathBuf,
        /// Each differing key with both values (`lr: 0.005 → 0.01`).
        keys: Vec<String>,
    },
    /// Training produced a non-finite number; the last checkpoint is kept.
    #[error("step {step}: the {what} is not finite ({value}); the checkpoint of step {} is intact", step - 1)]
    NonFinite {
        /// The step (1-based) that failed.
        step: usize,
        /// `loss`, `gradient` or `values`.
        what: &'static str,
        /// The offending number.
        value: f32,
    },
    /// Settings that cannot work.
    #[error("{0}")]
    Invalid(String),
    /// The processes of a data-parallel run hold different values after a step (they must
    /// all take the same AdamW step on the same summed gradient).
    #[error(
        "after step {step} the processes hold different adapter values (a rank computed something else); the last checkpoint is intact"
    )]
    Diverged {
        /// The step (1-based).
        step: usize,
    },
}

impl TrainError {
    /// Shorthand for [`TrainError::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            source,
        }
    }
}
