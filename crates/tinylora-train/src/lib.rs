//! Training tiny adapters with GRPO (SPEC.md §2) and evaluating them (§3).
//!
//! - [`data`]: problems from JSON lines; [`prompt`]: chat-template prompts;
//! - [`extract`]: final-answer extraction (strict / flexible / boxed) and comparison;
//! - [`grpo`]: advantages and the clipped loss; [`optim`]: AdamW on the host;
//! - [`policy`]: teacher-forced log-probabilities of completions;
//! - [`trainer`]: the GRPO loop with checkpoints; [`sft`]: the SFT baseline;
//!   [`eval`]: greedy evaluation;
//! - [`plot`]: training curves as SVG or PNG.

pub mod data;
pub mod eval;
pub mod extract;
pub mod grpo;
pub mod optim;
pub mod plot;
pub mod policy;
pub mod prompt;
pub mod sft;
pub mod trainer;

pub use data::{Problem, load_problems, split};
pub use eval::{EvalReport, evaluate};
pub use extract::{ExtractMode, extract, is_correct, normalize};
pub use grpo::{Aggregation, LossConfig, advantages, grpo_loss};
pub use sft::{SftConfig, SftTrainer};
pub use trainer::{AdapterRun, GrpoConfig, GrpoTrainer, RunFiles, StepMetrics, TrainState, Trainer};
