//! Turning a problem into the model's prompt: its own chat template with the question and an
//! instruction on how to give the final answer.

use tinylora_formats::{ChatMessage, ModelFile, TemplateError};

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
