//! The built-in rewards: exact answer, format and length.

use regex::Regex;

use super::{Completion, Reward, RewardError};
use crate::extract::{ExtractMode, is_correct};

/// 1.0 when the answer `mode` extracts equals the gold answer (after normalisation), else 0.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Correct {
    /// How the answer is found in the completion.
    pub mode: ExtractMode,
}

impl Reward for Correct {
    fn name(&self) -> &str {
        "correct"
    }

    fn score(&mut self, batch: &[Completion<'_>]) -> Result<Vec<f32>, RewardError> {
        Ok(batch
            .iter()
            .map(|c| f32::from(u8::from(is_correct(c.completion, c.answer, self.mode))))
            .collect())
    }
}

/// 1.0 when the regular expression matches somewhere in the completion, else 0.0 (anchor it
/// with `$` to require the match at the end).
#[derive(Debug, Clone)]
pub struct Format {
    /// The compiled pattern.
    pub regex: Regex,
}

impl Format {
    /// Compiles `pattern`; the error names it.
    pub fn new(pattern: &str) -> Result<Self, RewardError> {
        Regex::new(pattern)
            .map(|regex| Format { regex })
            .map_err(|source| RewardError::Pattern {
                pattern: pattern.to_string(),
                source,
            })
    }
}

impl Reward for Format {
    fn name(&self) -> &str {
        "format"
    }

    fn score(&mut self, batch: &[Completion<'_>]) -> Result<Vec<f32>, RewardError> {
        Ok(batch
            .iter()
            .map(|c| f32::from(u8::from(self.regex.is_match(c.completion))))
            .collect())
    }
}

/// A length penalty: −tokens / max new tokens, in [−1, 0] (tokens past the maximum count as
/// the maximum; 0 tokens score +0.0). Weight it positively, e.g. `length:0.1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Length {
    /// The scale: the most new tokens of a completion (> 0).
    pub max_new_tokens: usize,
}

impl Length {
    /// The penalty for completions of at most `max_new_tokens` tokens; 0 is an error.
    pub fn new(max_new_tokens: usize) -> Result<Self, RewardError> {
        if max_new_tokens == 0 {
            return Err(RewardError::ZeroMaxTokens);
        }
        Ok(Length { max_new_tokens })
    }
}

impl Reward for Length {
    fn name(&self) -> &str {
        "length"
    }

    fn score(&mut self, batch: &[Completion<'_>]) -> Result<Vec<f32>, RewardError> {
        let max = self.max_new_tokens.max(1);
        // `0.0 - x` rather than `-x`: an empty completion scores +0.0, not -0.0
        Ok(batch
            .iter()
            .map(|c| 0.0 - c.tokens.min(max) as f32 / max as f32)
            .collect())
    }
}
