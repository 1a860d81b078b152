//! Writes the tests' digit task (tests/common/digit_task.rs): a tiny random llama whose first
//! answer token is one of t0..t9, as a Hugging Face directory, and its problems (gold answer 7)
//! as JSON lines. The browser test trains it with GRPO in the page's worker and with
//! `tinylora train grpo`, and compares the two runs step by step.
//!
//!     cargo run --release --example digit_model -- OUT_DIR
//!
//! writes OUT_DIR/model/{config.json, tokenizer.json, tokenizer_config.json, model.safetensors}
//! and OUT_DIR/problems.jsonl.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;

fn main() {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: digit_model OUT_DIR");
        std::process::exit(2);
    };
    common::digit_task::digit_model(&out.join("model"));
    let lines: String = common::digit_task::problems()
        .iter()
        .map(|p| serde_json::json!({"question": p.question, "answer": p.gold}).to_string() + "\n")
        .collect();
    if let Err(e) = std::fs::write(out.join("problems.jsonl"), lines) {
        eprintln!("{}: {e}", out.join("problems.jsonl").display());
        std::process::exit(1);
    }
}
