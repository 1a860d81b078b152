//! Turning a problem into the model's prompt: its own chat template with the question and an
//! instruction on how to give the final answer.

use tinylora_formats::{ChatMessage, ModelFile, TemplateError};

use crate::data::Problem;
use crate::error::TrainError;

/// The default instruction: GSM8K's answer format, which the `strict` extraction reads.
pub const DEFAULT_INSTRUCTION: &str =
    "Solve the problem step by step, then give the final answer as a number on its own line after \"####\".";

/// How a question becomes a prompt.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PromptStyle {
    /// Appended to the question after a blank line (empty: none).
    pub instruction: String,
    /// The start of the assistant's answer, written into the prompt (e.g. `The answer is`),
    /// so that a small model answers at once; empty: none.
    pub answer_prefix: String,
}

impl Default for PromptStyle {
    fn default() -> Self {
        PromptStyle {
            instruction: DEFAULT_INSTRUCTION.to_string(),
            answer_prefix: String::new(),
        }
    }
}

/// The prompt text for `question`: the chat template (user message = question, blank line,
/// instruction) with the generation prompt, or `Question: …\nAnswer:` without a template,
/// followed by the answer prefix.
pub fn render_prompt(file: &ModelFile, question: &str, style: &PromptStyle) -> Result<String, TemplateError> {
    let user = if style.instruction.is_empty() {
        question.to_string()
    } else {
        format!("{question}\n\n{}", style.instruction)
    };
    let prompt = match &file.chat_template {
        Some(t) => t.render(&[ChatMessage::new("user", &user)], true)?,
        None => format!("Question: {user}\nAnswer:"),
    };
    Ok(prompt + &style.answer_prefix)
}

/// A problem left out because its prompt is too long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLong {
    /// Its line in the data file.
    pub line: usize,
    /// Its prompt's tokens.
    pub tokens: usize,
}

/// Split `problems` into those whose prompts (rendered with `style`, tokenized) have at most
/// `max_tokens` tokens, in their order, and those left out.
pub fn fit_prompts(
    problems: Vec<Problem>,
    file: &ModelFile,
    style: &PromptStyle,
    max_tokens: usize,
) -> Result<(Vec<Problem>, Vec<TooLong>), TrainError> {
    let (mut kept, mut left_out) = (Vec::with_capacity(problems.len()), Vec::new());
    for p in problems {
        let tokens = file
            .tokenizer
            .encode(&render_prompt(file, &p.question, style)?)?
            .len();
        if tokens <= max_tokens {
            kept.push(p);
        } else {
            left_out.push(TooLong { line: p.line, tokens });
        }
    }
    Ok((kept, left_out))
}
