//! Problems with verifiable answers, from JSON-lines files:
//!
//! - GSM8K: `{"question", "answer"}` with the gold answer after `#### ` in the solution;
//! - bare answers (AIME and the like): `{"question", "answer": "70"}`;
//! - generic: `{"prompt", "answer"}`.
//!
//! The format is recognised per line. Shuffling and held-out splits are deterministic for a seed.

use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use tinylora_formats::fingerprint::Fnv1a;

/// A problem: what to ask, the gold final answer, and the worked solution when the file has one.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// The question text.
    pub question: String,
    /// The gold final answer (e.g. `18`).
    pub gold: String,
    /// The full reference solution (GSM8K), for SFT; otherwise the gold answer.
    pub solution: String,
    /// Its 1-based line in the file it was read from (0: not read from a file).
    pub line: usize,
}

/// A data file that cannot be read, naming the file and line.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file cannot be read.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// A line is not a problem.
    #[error("{}:{line}: {message}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// No problems at all.
    #[error("{}: no problems in the file", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// Parse one JSON line into a problem.
fn parse_line(text: &str) -> Result<Problem, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let field = |k: &str| -> Option<String> {
        match v.get(k)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let question = field("question")
        .or_else(|| field("prompt"))
        .ok_or("no \"question\" or \"prompt\" string")?;
    let answer = field("answer").ok_or("no \"answer\" string or number")?;
    let (gold, solution) = match answer.rsplit_once("####") {
        Some((_, gold)) => (gold.trim().to_string(), answer.clone()),
        None => (answer.trim().to_string(), answer.trim().to_string()),
    };
    if gold.is_empty() {
        return Err("the gold answer is empty".into());
    }
    Ok(Problem {
        question,
        gold,
        solution,
        line: 0,
    })
}

/// Read every problem of a JSON-lines file (blank lines are skipped; a UTF-8 byte-order mark
/// is ignored; a line that is not UTF-8 is reported with its number).
pub fn load_problems(path: &Path) -> Result<Vec<Problem>, DataError> {
    let bytes = std::fs::read(path).map_err(|error| DataError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    parse_problems(path, &bytes)
}

/// [`load_problems`] of a file's bytes already in memory (`path` names it in errors).
pub fn parse_problems(path: &Path, bytes: &[u8]) -> Result<Vec<Problem>, DataError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut problems = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_error = |message| DataError::Line {
            path: path.to_path_buf(),
            line: i + 1,
            message,
        };
        let text = std::str::from_utf8(raw).map_err(|e| {
            line_error(format!(
                "not UTF-8 text (invalid byte at column {})",
                e.valid_up_to() + 1
            ))
        })?;
        if !text.trim().is_empty() {
            let problem = parse_line(text).map_err(line_error)?;
            problems.push(Problem {
                line: i + 1,
                ..problem
            });
        }
    }
    if problems.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(problems)
}

/// A fingerprint of the file's bytes (FNV-1a, 64 bits, hex): a run records it, so that a
/// resume notices a data file whose contents changed, wherever the file now is.
pub fn data_fingerprint(path: &Path) -> Result<String, DataError> {
    let bytes = std::fs::read(path).map_err(|error| DataError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    let mut h = Fnv1a::default();
    h.eat(&bytes);
    Ok(h.hex())
}

/// Shuffle with `seed`, then split off the last `held_out` problems: (train, held-out).
pub fn split(mut problems: Vec<Problem>, seed: u64, held_out: usize) -> (Vec<Problem>, Vec<Problem>) {
    problems.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let cut = problems.len().saturating_sub(held_out);
    let test = problems.split_off(cut);
    (problems, test)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gsm8k_bare_and_generic_lines() {
        let g = parse_line("{\"question\": \"2+2?\", \"answer\": \"Add them: 2+2=4.\\n#### 4\"}").unwrap();
        assert_eq!((g.question.as_str(), g.gold.as_str()), ("2+2?", "4"));
        assert!(g.solution.starts_with("Add them"));
        let b = parse_line(r#"{"question": "AIME", "answer": "70"}"#).unwrap();
        assert_eq!(b.gold, "70");
        let n = parse_line(r#"{"question": "AIME", "answer": 70}"#).unwrap();
        assert_eq!(n.gold, "70");
        let p = parse_line(r#"{"prompt": "Say 3", "answer": " 3 "}"#).unwrap();
        assert_eq!((p.question.as_str(), p.gold.as_str()), ("Say 3", "3"));
        assert!(parse_line(r#"{"answer": "3"}"#).unwrap_err().contains("question"));
        assert!(
            parse_line("{\"question\": \"x\", \"answer\": \"#### \"}")
                .unwrap_err()
                .contains("empty")
        );
        assert!(parse_line("{oops").unwrap_err().contains("not JSON"));
    }

    #[test]
    fn malformed_line_names_file_and_line() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let path = dir.join("bad.jsonl");
        std::fs::write(
            &path,
            "{\"question\": \"a\", \"answer\": \"1\"}\n\n{\"question\": 3}\n",
        )
        .unwrap();
        let e = load_problems(&path).unwrap_err().to_string();
        assert!(e.contains("bad.jsonl:3:"), "{e}");
        std::fs::write(&path, "\n").unwrap();
        assert!(
            load_problems(&path)
                .unwrap_err()
                .to_string()
                .contains("no problems")
        );
    }

    #[test]
    fn non_utf8_line_names_file_and_line_and_a_bom_is_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let path = dir.join("latin1.jsonl");
        let mut bytes = b"{\"question\": \"a\", \"answer\": \"1\"}\r\n".to_vec();
        bytes.extend(b"{\"question\": \"caf\xe9\", \"answer\": \"2\"}\n");
        std::fs::write(&path, &bytes).unwrap();
        let e = load_problems(&path).unwrap_err().to_string();
        assert!(
            e.contains("latin1.jsonl:2: not UTF-8 text (invalid byte at column 18)"),
            "{e}"
        );

        let path = dir.join("bom.jsonl");
        std::fs::write(
            &path,
            "\u{feff}{\"question\": \"a\", \"answer\": \"1\"}\r\n{\"prompt\": \"b\", \"answer\": 2}\r\n",
        )
        .unwrap();
        let ps = load_problems(&path).unwrap();
        assert_eq!((ps[0].question.as_str(), ps[1].gold.as_str()), ("a", "2"));
        assert_eq!((ps[0].line, ps[1].line), (1, 2));
    }

    #[test]
    fn the_fingerprint_follows_the_contents_not_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let (a, b) = (dir.join("a.jsonl"), dir.join("b.jsonl"));
        std::fs::write(&a, "{\"question\": \"1+1\", \"answer\": \"2\"}\n").unwrap();
        std::fs::copy(&a, &b).unwrap();
        assert_eq!(data_fingerprint(&a).unwrap(), data_fingerprint(&b).unwrap());
        // FNV-1a of the empty input is its offset basis
        std::fs::write(&b, "").unwrap();
        assert_eq!(data_fingerprint(&b).unwrap(), "cbf29ce484222325");
    }

    #[test]
    fn split_is_deterministic_and_disjoint() {
        let ps: Vec<Problem> = (0..50)
            .map(|i| Problem {
                question: i.to_string(),
                gold: i.to_string(),
                solution: String::new(),
                line: i + 1,
            })
            .collect();
        let (a, b) = split(ps.clone(), 7, 10);
        assert_eq!((a.len(), b.len()), (40, 10));
        assert_eq!(split(ps.clone(), 7, 10), (a.clone(), b.clone()));
        assert_ne!(split(ps, 8, 10).1, b);
        assert!(b.iter().all(|p| !a.contains(p)));
    }
}
