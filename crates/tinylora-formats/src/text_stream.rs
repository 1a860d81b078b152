//! Streaming detokenization: the text of generated tokens as it becomes complete.

use crate::tokenizer::TextTokenizer;

/// Turns generated token ids, one at a time, into new pieces of text. A multi-byte character
/// split over several tokens is held back until its last byte arrives.
#[derive(Debug, Default, Clone)]
pub struct TextStream {
    ids: Vec<u32>,
    emitted: String,
}

impl TextStream {
    /// An empty stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add one token; returns the text that became complete with it (possibly empty).
    pub fn push(&mut self, tok: &TextTokenizer, id: u32) -> String {
        self.ids.push(id);
        match tok.decode(&self.ids) {
            Ok(text) if text.len() > self.emitted.len() && !text.ends_with('\u{fffd}') => {
                let new = text[self.emitted.len()..].to_string();
                self.emitted = text;
                new
            }
            _ => String::new(),
        }
    }

    /// The text emitted so far.
    pub fn emitted(&self) -> &str {
        &self.emitted
    }
}
