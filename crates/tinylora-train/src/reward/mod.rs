//! Rewards for GRPO: a [`Reward`] trait, built-ins and their weighted sum.
//!
//! Users compose rewards on the command line as `NAME[:WEIGHT]` specs ([`RewardSpec`]), e.g.
//! `--reward correct:1.0 --reward format:0.2 --reward length:0.1`:
//!
//! - `correct`, `correct-strict`, `correct-flexible`, `correct-boxed`: 1 when the extracted answer
//!   equals the gold one (the run's extraction mode, or the named one), else 0 ([`Correct`]);
//! - `format`: 1 when a regular expression matches the completion, else 0 ([`Format`]);
//! - `length`: −tokens / max new tokens, a penalty in [−1, 0] ([`Length`]);
//! - `cmd`: the number an external program writes for the completion ([`Program`]).
//!
//! [`Rewards`] builds them from specs and [`RewardOptions`] and scores a batch: the total is
//! Σ weight · component, and each unweighted component is kept by name for metrics.

mod builtin;
mod program;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

pub use builtin::{Correct, Format, Length};
pub use program::Program;

use crate::extract::ExtractMode;

/// One completion to score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Completion<'a> {
    /// The prompt the completion answers.
    pub prompt: &'a str,
    /// The generated text.
    pub completion: &'a str,
    /// The gold answer.
    pub answer: &'a str,
    /// Length of the completion in tokens.
    pub tokens: usize,
    /// Whether generation stopped at the most new tokens rather than at a stop token.
    pub truncated: bool,
}

/// Scores completions.
pub trait Reward: Send {
    /// Name in metrics and errors: "correct", "format", "length", "cmd".
    fn name(&self) -> &str;
    /// One finite score per completion, in order.
    fn score(&mut self, batch: &[Completion<'_>]) -> Result<Vec<f32>, RewardError>;
}

/// Which reward a spec names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RewardKind {
    /// Exact answer under the run's extraction mode.
    Correct,
    /// Exact answer under strict extraction (`#### <number>`).
    CorrectStrict,
    /// Exact answer under flexible extraction (the last number).
    CorrectFlexible,
    /// Exact answer under boxed extraction (`\boxed{…}`).
    CorrectBoxed,
    /// The completion matches the format pattern.
    Format,
    /// Length penalty.
    Length,
    /// The external reward program.
    Cmd,
}

impl RewardKind {
    /// All kinds, in the order of the help text.
    pub const ALL: [RewardKind; 7] = [
        RewardKind::Correct,
        RewardKind::CorrectStrict,
        RewardKind::CorrectFlexible,
        RewardKind::CorrectBoxed,
        RewardKind::Format,
        RewardKind::Length,
        RewardKind::Cmd,
    ];

    /// The name in specs, metrics and errors.
    pub fn name(self) -> &'static str {
        match self {
            RewardKind::Correct => "correct",
            RewardKind::CorrectStrict => "correct-strict",
            RewardKind::CorrectFlexible => "correct-flexible",
            RewardKind::CorrectBoxed => "correct-boxed",
            RewardKind::Format => "format",
            RewardKind::Length => "length",
            RewardKind::Cmd => "cmd",
        }
    }

    /// The known names, comma-separated (for help and errors).
    pub fn known() -> String {
        Self::ALL.map(Self::name).join(", ")
    }
}

impl fmt::Display for RewardKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RewardKind {
    type Err = RewardError;
    fn from_str(s: &str) -> Result<Self, RewardError> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| RewardError::UnknownReward {
                name: s.to_string(),
                known: Self::known(),
            })
    }
}

/// A spec from the command line: `NAME[:WEIGHT]`, the weight 1.0 by default. NAME is one of
/// `correct` (exact answer under the run's extraction mode), `correct-strict`,
/// `correct-flexible`, `correct-boxed`, `format`, `length`, `cmd`. Any finite weight is allowed:
/// a weight of 0 logs a reward's mean without training on it.
///
/// Serialised as its string, e.g. `"format:0.2"`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct RewardSpec {
    /// The reward.
    pub kind: RewardKind,
    /// Its weight in the total.
    pub weight: f32,
}

impl FromStr for RewardSpec {
    type Err = RewardError;
    fn from_str(s: &str) -> Result<Self, RewardError> {
        let (name, weight) = match s.split_once(':') {
            Some((name, weight)) => (name.trim(), Some(weight.trim())),
            None => (s.trim(), None),
        };
        let kind = name.parse()?;
        let weight = match weight {
            None => 1.0,
            Some(w) => {
                let weight: f32 = w.parse().map_err(|source| RewardError::BadWeight {
                    spec: s.to_string(),
                    weight: w.to_string(),
                    source,
                })?;
                if !weight.is_finite() {
                    return Err(RewardError::NonFiniteWeight { spec: s.to_string() });
                }
                weight
            }
        };
        Ok(RewardSpec { kind, weight })
    }
}

impl fmt::Display for RewardSpec {
    /// `NAME:WEIGHT`, with the shortest weight that parses back exactly (`correct:1`,
    /// `format:0.2`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.weight)
    }
}

impl From<RewardSpec> for String {
    fn from(spec: RewardSpec) -> String {
        spec.to_string()
    }
}

impl TryFrom<String> for RewardSpec {
    type Error = RewardError;
    fn try_from(s: String) -> Result<Self, RewardError> {
        s.parse()
    }
}

/// The default format pattern: `#### <number>` at the end of the completion.
pub const DEFAULT_FORMAT_PATTERN: &str = r"####\s*-?[0-9][0-9,]*(\.[0-9]+)?\s*$";

/// How long the reward program may take for one answer, by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// What the built-ins need besides their spec.
#[derive(Debug, Clone, PartialEq)]
pub struct RewardOptions {
    /// Extraction mode of the `correct` reward (the run's mode).
    pub extract: ExtractMode,
    /// Pattern of the `format` reward; [`DEFAULT_FORMAT_PATTERN`] when `None`.
    pub format_pattern: Option<String>,
    /// Command line of the `cmd` reward (`--reward-cmd`), split on whitespace.
    pub command: Option<String>,
    /// Most new tokens per completion: the scale of the `length` penalty.
    pub max_new_tokens: usize,
    /// Longest wait for one answer of the reward program.
    pub timeout: Duration,
}

impl RewardOptions {
    /// Options with no pattern, no command and the default timeout.
    pub fn new(extract: ExtractMode, max_new_tokens: usize) -> Self {
        RewardOptions {
            extract,
            format_pattern: None,
            command: None,
            max_new_tokens,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// One weighted reward of a sum.
struct Term {
    name: String,
    weight: f32,
    reward: Box<dyn Reward>,
}

/// The weighted sum of several rewards.
pub struct Rewards {
    terms: Vec<Term>,
}

impl fmt::Debug for Rewards {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.terms.iter().map(|t| (&t.name, t.weight)))
            .finish()
    }
}

impl Rewards {
    /// The rewards of `specs`, in order. Errors: no specs; a reward named twice; `cmd` without
    /// a command or a command without `cmd` (it is never added implicitly); a format pattern
    /// without `format`; a pattern that is not a regular expression; `length` with
    /// `max_new_tokens` 0; a program that cannot be started (it is started here, once).
    pub fn new(specs: &[RewardSpec], opts: &RewardOptions) -> Result<Self, RewardError> {
        if specs.is_empty() {
            return Err(RewardError::NoRewards);
        }
        let has = |kind| specs.iter().any(|s| s.kind == kind);
        if let Some(command) = &opts.command
            && !has(RewardKind::Cmd)
        {
            return Err(RewardError::UnusedCommand {
                command: command.clone(),
            });
        }
        if let Some(pattern) = &opts.format_pattern
            && !has(RewardKind::Format)
        {
            return Err(RewardError::UnusedPattern {
                pattern: pattern.clone(),
            });
        }
        for (i, spec) in specs.iter().enumerate() {
            if specs[..i].iter().any(|s| s.kind == spec.kind) {
                return Err(RewardError::Duplicate {
                    name: spec.kind.name().to_string(),
                });
            }
        }
        let mut rewards = Rewards {
            terms: Vec::with_capacity(specs.len()),
        };
        for spec in specs {
            let reward: Box<dyn Reward> = match spec.kind {
                RewardKind::Correct => Box::new(Correct { mode: opts.extract }),
                RewardKind::CorrectStrict => Box::new(Correct {
                    mode: ExtractMode::Strict,
                }),
                RewardKind::CorrectFlexible => Box::new(Correct {
                    mode: ExtractMode::Flexible,
                }),
                RewardKind::CorrectBoxed => Box::new(Correct {
                    mode: ExtractMode::Boxed,
                }),
                RewardKind::Format => Box::new(Format::new(
                    opts.format_pattern.as_deref().unwrap_or(DEFAULT_FORMAT_PATTERN),
                )?),
                RewardKind::Length => Box::new(Length::new(opts.max_new_tokens)?),
                RewardKind::Cmd => {
                    let command = opts.command.as_deref().ok_or(RewardError::MissingCommand)?;
                    let argv: Vec<String> = command.split_whitespace().map(str::to_string).collect();
                    Box::new(Program::spawn(&argv, opts.timeout)?)
                }
            };
            rewards.push_named(spec.kind.name().to_string(), spec.weight, reward)?;
        }
        Ok(rewards)
    }

    /// Adds a reward of your own, named by [`Reward::name`]. Errors: a non-finite weight, a
    /// name already in the sum.
    pub fn push(&mut self, weight: f32, reward: Box<dyn Reward>) -> Result<(), RewardError> {
        if !weight.is_finite() {
            return Err(RewardError::NonFiniteWeight {
                spec: format!("{}:{weight}", reward.name()),
            });
        }
        self.push_named(reward.name().to_string(), weight, reward)
    }

    fn push_named(&mut self, name: String, weight: f32, reward: Box<dyn Reward>) -> Result<(), RewardError> {
        if self.terms.iter().any(|t| t.name == name) {
            return Err(RewardError::Duplicate { name });
        }
        self.terms.push(Term { name, weight, reward });
        Ok(())
    }

    /// Scores a batch with every reward. Errors: a reward's own, or a reward that returns the
    /// wrong number of scores or a non-finite one.
    pub fn score(&mut self, batch: &[Completion<'_>]) -> Result<Scores, RewardError> {
        let mut total = vec![0.0f32; batch.len()];
        let mut components = Vec::with_capacity(self.terms.len());
        for (k, term) in self.terms.iter_mut().enumerate() {
            let scores = term.reward.score(batch)?;
            if scores.len() != batch.len() {
                return Err(RewardError::Count {
                    name: term.name.clone(),
                    got: scores.len(),
                    expected: batch.len(),
                });
            }
            if let Some((index, &value)) = scores.iter().enumerate().find(|(_, x)| !x.is_finite()) {
                return Err(RewardError::NotFinite {
                    name: term.name.clone(),
                    index,
                    value,
                });
            }
            // the first term sets the total (so `correct:1` is exactly the 0/1 reward), the others add
            for (t, &x) in total.iter_mut().zip(&scores) {
                *t = if k == 0 {
                    term.weight * x
                } else {
                    *t + term.weight * x
                };
            }
            components.push((term.name.clone(), scores));
        }
        Ok(Scores { total, components })
    }

    /// The rewards' names, in order.
    pub fn names(&self) -> Vec<String> {
        self.terms.iter().map(|t| t.name.clone()).collect()
    }
}

/// Scores of a batch: `total[i]` = Σₖ weightₖ · componentₖ\[i\]; the components unweighted, by
/// name, in spec order.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// The weighted sum per completion.
    pub total: Vec<f32>,
    /// Each reward's unweighted scores, by name.
    pub components: Vec<(String, Vec<f32>)>,
}

impl Scores {
    /// Each reward's mean over the batch, by name (0 for an empty batch), for metrics.
    pub fn means(&self) -> Vec<(String, f32)> {
        self.components
            .iter()
            .map(|(name, xs)| {
                let mean = if xs.is_empty() {
                    0.0
                } else {
                    xs.iter().sum::<f32>() / xs.len() as f32
                };
                (name.clone(), mean)
            })
            .collect()
    }
}

/// Display of an exit status, or of a program that closed its output and has not exited.
fn exit_text(status: &Option<std::process::ExitStatus>) -> String {
    match status {
        Some(status) => format!("exited ({status})"),
        None => "closed its output".to_string(),
    }
}

/// Output shown in errors: trimmed, at most 80 characters.
fn shown(text: &str) -> String {
    const MAX: usize = 80;
    let text = text.trim();
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// Why rewards cannot be built or cannot score.
#[derive(Debug, thiserror::Error)]
pub enum RewardError {
    /// A spec names no known reward.
    #[error("unknown reward `{name}` (known: {known})")]
    UnknownReward {
        /// The name given.
        name: String,
        /// The known names.
        known: String,
    },
    /// A spec's weight is not a number.
    #[error("reward `{spec}`: weight `{weight}` is not a number")]
    BadWeight {
        /// The spec.
        spec: String,
        /// The weight text.
        weight: String,
        /// The parse error.
        source: std::num::ParseFloatError,
    },
    /// A spec's weight is infinite or NaN.
    #[error("reward `{spec}`: the weight must be finite")]
    NonFiniteWeight {
        /// The spec.
        spec: String,
    },
    /// No rewards at all.
    #[error("no rewards: give at least one (--reward NAME[:WEIGHT])")]
    NoRewards,
    /// A reward named twice.
    #[error("reward `{name}` given twice")]
    Duplicate {
        /// Its name.
        name: String,
    },
    /// `cmd` without a command.
    #[error("reward `cmd` needs a program (--reward-cmd PROG)")]
    MissingCommand,
    /// A command without `cmd`.
    #[error("reward program `{command}` given but no `cmd` reward (add --reward cmd[:WEIGHT])")]
    UnusedCommand {
        /// The command line.
        command: String,
    },
    /// A format pattern without `format`.
    #[error("format pattern `{pattern}` given but no `format` reward (add --reward format[:WEIGHT])")]
    UnusedPattern {
        /// The pattern.
        pattern: String,
    },
    /// The command line is empty.
    #[error("reward program: the command is empty")]
    EmptyCommand,
    /// The format pattern is not a regular expression.
    #[error("format pattern `{pattern}` is not a regular expression")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// The regex error.
        source: regex::Error,
    },
    /// `length` with `max_new_tokens` 0.
    #[error("reward `length` needs max new tokens > 0")]
    ZeroMaxTokens,
    /// A reward returned the wrong number of scores.
    #[error("reward `{name}` gave {got} scores for {expected} completions")]
    Count {
        /// The reward.
        name: String,
        /// Scores returned.
        got: usize,
        /// Completions in the batch.
        expected: usize,
    },
    /// A reward returned a non-finite score.
    #[error("reward `{name}` gave {value} for completion {} of the batch", index + 1)]
    NotFinite {
        /// The reward.
        name: String,
        /// 0-based position in the batch.
        index: usize,
        /// The score.
        value: f32,
    },
    /// The program cannot be started.
    #[error("reward program `{program}` could not be started")]
    Start {
        /// The command line.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Writing to the program failed and it gave no more answers.
    #[error("reward program `{program}`: writing to its input failed")]
    Write {
        /// The command line.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Reading the program's output failed.
    #[error("reward program `{program}`: reading its output failed")]
    Read {
        /// The command line.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The program ended (or closed its output) before answering the whole batch.
    #[error("reward program `{program}` {} after {answered} of {expected} answers", exit_text(.status))]
    Exited {
        /// The command line.
        program: String,
        /// Its exit status; `None` if it closed its output but has not exited.
        status: Option<std::process::ExitStatus>,
        /// Answers read in this batch.
        answered: usize,
        /// Completions in the batch.
        expected: usize,
    },
    /// A line of output is not a finite number.
    #[error(
        "reward program `{program}`: line {line} of its output is `{}`, not a finite number \
         (the answer to completion {} of {batch})",
        shown(.text), index + 1
    )]
    NotANumber {
        /// The command line.
        program: String,
        /// 1-based line number over the program's lifetime.
        line: usize,
        /// The line.
        text: String,
        /// 0-based position in the batch.
        index: usize,
        /// Completions in the batch.
        batch: usize,
    },
    /// The program wrote a line before it was sent a completion to answer.
    #[error(
        "reward program `{program}`: line {line} of its output (`{}`) came before it was sent a \
         completion (more than one line per completion?)",
        shown(.text)
    )]
    Unexpected {
        /// The command line.
        program: String,
        /// 1-based line number over the program's lifetime.
        line: usize,
        /// The line.
        text: String,
    },
    /// The program took longer than the timeout for one answer.
    #[error(
        "reward program `{program}` gave no answer within {} s (completion {} of {batch})",
        timeout.as_secs_f64(), index + 1
    )]
    Timeout {
        /// The command line.
        program: String,
        /// The timeout.
        timeout: Duration,
        /// 0-based position in the batch.
        index: usize,
        /// Completions in the batch.
        batch: usize,
    },
    /// The program failed before and is not restarted.
    #[error("reward program `{program}` failed earlier and is not restarted")]
    Dead {
        /// The command line.
        program: String,
    },
}

#[cfg(test)]
mod tests;
