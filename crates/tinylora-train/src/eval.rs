//! Greedy, batched evaluation of a model (with or without its adapter) on problems: accuracy
//! under every extraction mode, tokens/s, and one record per problem.

use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use tinylora_engine::{GenerateOptions, SamplingParams, Transformer};
use tinylora_formats::ModelFile;
use web_time::Instant;

use crate::data::Problem;
use crate::error::TrainError;
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
    /// Tokens generated.
    pub tokens: usize,
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

/// Problem indices in batches of at most `batch`, problems of similar prompt length together
/// (shortest first), so that left padding wastes little of each batch's prefill.
pub fn length_sorted_batches(lengths: &[usize], batch: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]); // stable: equal lengths keep file order
    order.chunks(batch.max(1)).map(<[usize]>::to_vec).collect()
}

/// How to evaluate: prompts, answer length, batch size, answer extraction.
#[derive(Debug, Clone)]
pub struct EvalSettings {
    /// How questions become prompts.
    pub prompt: PromptStyle,
    /// Most new tokens per answer.
    pub max_new_tokens: usize,
    /// Prompts per generation batch.
    pub batch: usize,
    /// How answers are read.
    pub extract: ExtractMode,
}

/// Evaluate greedily in batches of `s.batch` (grouped by prompt length; greedy answers do not
/// depend on the grouping); `progress(problems done, tokens generated)` is called after every
/// generated token and batch. Records are in `problems` order.
pub fn evaluate(
    model: &Transformer,
    file: &ModelFile,
    problems: &[Problem],
    s: &EvalSettings,
    progress: impl FnMut(usize, usize),
) -> Result<EvalReport, TrainError> {
    let never = AtomicBool::new(false);
    let report = evaluate_until(model, file, problems, s, progress, &never)?;
    Ok(report.expect("an evaluation that is never stopped finishes"))
}

/// [`evaluate`] that checks `stop` before every batch and returns `None` once it is set.
pub fn evaluate_until(
    model: &Transformer,
    file: &ModelFile,
    problems: &[Problem],
    s: &EvalSettings,
    progress: impl FnMut(usize, usize),
    stop: &AtomicBool,
) -> Result<Option<EvalReport>, TrainError> {
    pollster::block_on(evaluate_async(model, file, problems, s, progress, stop))
}

/// [`evaluate_until`] that awaits the device (a browser's WebGPU can only be read
/// asynchronously).
pub async fn evaluate_async(
    model: &Transformer,
    file: &ModelFile,
    problems: &[Problem],
    s: &EvalSettings,
    mut progress: impl FnMut(usize, usize),
    stop: &AtomicBool,
) -> Result<Option<EvalReport>, TrainError> {
    let (style, max_new_tokens, batch, mode) = (&s.prompt, s.max_new_tokens, s.batch, s.extract);
    let start = Instant::now();
    let opts = GenerateOptions {
        max_new_tokens,
        sampling: SamplingParams::greedy(),
        stop_ids: file.tokenizer.stop_ids.clone(),
    };
    let mut prompts = Vec::with_capacity(problems.len());
    for p in problems {
        prompts.push(file.tokenizer.encode(&render_prompt(file, &p.question, style)?)?);
    }
    let lengths: Vec<usize> = prompts.iter().map(Vec::len).collect();
    let mut records: Vec<Option<EvalRecord>> = vec![None; problems.len()];
    let (mut tokens, mut done) = (0, 0);
    for indices in length_sorted_batches(&lengths, batch) {
        if stop.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let chunk: Vec<Vec<u32>> = indices.iter().map(|&i| prompts[i].clone()).collect();
        let mut live = tokens;
        let gens = model
            .generate_async(&chunk, &opts, |_, _| {
                live += 1;
                progress(done, live);
            })
            .await?;
        for (&i, g) in indices.iter().zip(gens) {
            let p = &problems[i];
            tokens += g.output_ids.len();
            let output = file.tokenizer.decode(&g.output_ids)?;
            let by_mode = ExtractMode::ALL.map(|m| is_correct(&output, &p.gold, m));
            records[i] = Some(EvalRecord {
                question: p.question.clone(),
                extracted: extract(&output, mode),
                correct: by_mode[mode.index()],
                output,
                gold: p.gold.clone(),
                correct_by_mode: by_mode,
            });
        }
        done += indices.len();
        progress(done, tokens);
    }
    let records: Vec<EvalRecord> = records.into_iter().flatten().collect();
    let seconds = start.elapsed().as_secs_f64();
    let n = records.len().max(1) as f64;
    let accuracy = [0, 1, 2].map(|i| records.iter().filter(|r| r.correct_by_mode[i]).count() as f64 / n);
    Ok(Some(EvalReport {
        problems: records.len(),
        accuracy,
        tokens,
        tokens_per_s: tokens as f64 / seconds,
        seconds,
        records,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slots a batched prefill computes: each batch is padded to its longest prompt.
    fn padded_slots(lengths: &[usize], batches: &[Vec<usize>]) -> usize {
        batches
            .iter()
            .map(|b| b.len() * b.iter().map(|&i| lengths[i]).max().unwrap())
            .sum()
    }

    #[test]
    fn length_sorted_batches_cover_every_problem_once_and_pad_less() {
        let lengths = [90, 20, 200, 25, 95, 30, 210, 22, 100];
        let batches = length_sorted_batches(&lengths, 3);
        assert_eq!(batches, vec![vec![1, 7, 3], vec![5, 0, 4], vec![8, 2, 6]]);
        let in_file_order: Vec<Vec<usize>> = (0..9)
            .collect::<Vec<_>>()
            .chunks(3)
            .map(<[usize]>::to_vec)
            .collect();
        // file order: 3·200 + 3·95 + 3·210 = 1515 slots; sorted: 3·25 + 3·95 + 3·210 = 990
        assert_eq!(padded_slots(&lengths, &in_file_order), 1515);
        assert_eq!(padded_slots(&lengths, &batches), 990);
        assert_eq!(length_sorted_batches(&lengths, 0).len(), 9, "batch 0 counts as 1");
        assert!(length_sorted_batches(&[], 4).is_empty());
    }
}
