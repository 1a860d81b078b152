//! Greedy, batched evaluation of a model (with or without its adapter) on problems: accuracy
//! under every extraction mode, tokens/s, and one record per problem.

use std::time::Instant;

use serde::Serialize;
use tinylora_engine::{GenerateOptions, SamplingParams, Transformer};
use tinylora_formats::ModelFile;

use crate::data::Problem;
use crate::extract::{ExtractMode, extract, is_correct};
use crate::prompt::{PromptStyle, render_prompt};

/// One evaluated problem.
#[derive(Debug, Clone, Serialize)]
pub struct EvalRecord {
    /// The question.
    pub question: String,
    /// The model's answer text.
    pub output: String,
    /// The answer found by the primary extraction mode.
    pub extracted: Option<String>,
    /// The gold answer.
    pub gold: String,
    /// Whether the primary mode's answer is right.
    pub correct: bool,
    /// Correctness under strict, flexible and boxed extraction.
    pub correct_by_mode: [bool; 3],
}

/// Accuracy and speed of one evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Problems evaluated.
    pub problems: usize,
    /// Accuracy under strict, flexible, boxed extraction.
    pub accuracy: [f64; 3],
    /// Generated tokens per second.
    pub tokens_per_s: f64,
    /// Seconds in all.
    pub seconds: f64,
    /// Per-problem records.
    #[serde(skip)]
    pub records: Vec<EvalRecord>,
}

impl EvalReport {
    /// Accuracy under `mode`.
    pub fn accuracy(&self, mode: ExtractMode) -> f64 {
        self.accuracy[mode.index()]
    }
}

/// Evaluate greedily in batches of `batch`; `on_batch(done)` reports progress.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    model: &Transformer,
    file: &ModelFile,
    problems: &[Problem],
    style: &PromptStyle,
    max_new_tokens: usize,
    batch: usize,
    mode: ExtractMode,
    mut on_batch: impl FnMut(usize),
) -> Result<EvalReport, String> {
    let start = Instant::now();
    let opts = GenerateOptions {
        max_new_tokens,
        sampling: SamplingParams::greedy(),
        stop_ids: file.tokenizer.stop_ids.clone(),
    };
    let mut records = Vec::with_capacity(problems.len());
    let mut tokens = 0;
    for chunk in problems.chunks(batch.max(1)) {
        let prompts = chunk
            .iter()
            .map(|p| file.tokenizer.encode(&render_prompt(file, &p.question, style)?))
            .collect::<Result<Vec<_>, String>>()?;
        let gens = model.generate(&prompts, &opts, |_, _| {});
        for (p, g) in chunk.iter().zip(gens) {
            tokens += g.output_ids.len();
            let output = file.tokenizer.decode(&g.output_ids)?;
            let by_mode = ExtractMode::ALL.map(|m| is_correct(&output, &p.gold, m));
            records.push(EvalRecord {
                question: p.question.clone(),
                extracted: extract(&output, mode),
                correct: by_mode[mode.index()],
                output,
                gold: p.gold.clone(),
                correct_by_mode: by_mode,
            });
        }
        on_batch(records.len());
    }
    let seconds = start.elapsed().as_secs_f64();
    let n = records.len().max(1) as f64;
    let accuracy = [0, 1, 2].map(|i| records.iter().filter(|r| r.correct_by_mode[i]).count() as f64 / n);
    Ok(EvalReport {
        problems: records.len(),
        accuracy,
        tokens_per_s: tokens as f64 / seconds,
        seconds,
        records,
    })
}
