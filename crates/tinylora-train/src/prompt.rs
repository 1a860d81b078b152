//! Turning a problem into the model's prompt: its own chat template with the question and an
//! instruction on how to give the final answer.

use tinylora_formats::{ChatMessage, ModelFile};

/// The default instruction: GSM8K's answer format, which the `strict` extraction reads.
pub const DEFAULT_INSTRUCTION: &str =
    "Solve the problem step by step, then give the final answer as a number on its own line after \"####\".";

/// The prompt text for `question`: the chat template (user message = question, blank line,
/// instruction) with the generation prompt, or `Question: …\nAnswer:` without a template.
pub fn render_prompt(file: &ModelFile, question: &str, instruction: &str) -> Result<String, String> {
    let user = if instruction.is_empty() {
        question.to_string()
    } else {
        format!("{question}\n\n{instruction}")
    };
    match &file.chat_template {
        Some(t) => t.render(&[ChatMessage::new("user", &user)], true),
        None => Ok(format!("Question: {user}\nAnswer:")),
    }
}
