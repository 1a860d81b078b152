//! Training tiny adapters with GRPO (SPEC.md §2) and evaluating them (§3), as a library the
//! CLI, the browser or a user's program drive.
//!
//! - [`data`]: problems from JSON lines; [`prompt`]: chat-template prompts;
//! - [`extract`]: final-answer extraction (strict / flexible / boxed) and comparison;
//! - [`reward`]: the [`reward::Reward`] trait, built-ins, weighted sums, external programs;
//! - [`rollout`]: GRPO's first half, generate and score; [`grpo`]: advantages and the clipped
//!   loss (pure functions); [`grpo_trainer`]: the GRPO step; [`sft`]: the SFT baseline;
//! - [`policy`]: teacher-forced log-probabilities of completions; [`optim`]: AdamW on the host;
//! - [`run`]: the whole run (attach or resume, evaluate, step, checkpoint, stop);
//!   [`run_files`]: the run directory; [`metrics`]: one line per step;
//! - [`eval`]: greedy evaluation;
//! - [`collective`]: how the processes of a data-parallel run combine their work.

pub mod collective;
pub mod data;
pub mod error;
pub mod eval;
pub mod extract;
pub mod grpo;
pub mod grpo_trainer;
pub mod metrics;
pub mod optim;
pub mod policy;
pub mod prompt;
pub mod reward;
pub mod rollout;
pub mod run;
pub mod run_files;
pub mod sft;

pub use collective::{Collective, Single, shard};
pub use data::{Problem, data_fingerprint, load_problems, parse_problems, split};
pub use error::TrainError;
pub use eval::{EvalRecord, EvalReport, EvalSettings, evaluate, evaluate_async, evaluate_until};
pub use extract::{ExtractMode, extract, is_correct, normalize};
pub use grpo::{Aggregation, ImportanceSampling, LossConfig, ScaleRewards, advantages, grpo_loss};
pub use grpo_trainer::{GrpoConfig, GrpoTrainer};
pub use metrics::StepMetrics;
pub use prompt::{TooLong, fit_prompts};
pub use reward::{RewardSpec, Rewards};
pub use run::{AdapterRun, Event, Observer, Quiet, RunOutcome, RunSettings, Training, TrainingMethod};
pub use run_files::{RunFiles, RunLock, TrainState};
pub use sft::{SftConfig, SftTrainer};
