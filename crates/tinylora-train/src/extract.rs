//! Final-answer extraction and numeric comparison (SPEC.md §3), as lm-evaluation-harness does
//! for GSM8K:
//!
//! - `strict`: the number after `#### ` (`#### (-?[0-9.,]+)`);
//! - `flexible`: the last number in the text (`(-?[$0-9.,]{2,})|(-?[0-9]+)`, last match);
//! - `boxed`: the content of the last `\boxed{…}` (nested braces allowed).
//!
//! Numbers are normalised before comparison: `$`, `,` and trailing `.` dropped, `18.00` = `18`.

use std::sync::LazyLock;

use regex::Regex;

/// How to find the final answer in a completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExtractMode {
    /// `#### <number>`.
    Strict,
    /// The last number in the text.
    Flexible,
    /// `\boxed{…}`.
    Boxed,
}

impl ExtractMode {
    /// All modes, in report order.
    pub const ALL: [ExtractMode; 3] = [ExtractMode::Strict, ExtractMode::Flexible, ExtractMode::Boxed];

    /// Position in [`Self::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The mode's name.
    pub fn name(self) -> &'static str {
        match self {
            ExtractMode::Strict => "strict",
            ExtractMode::Flexible => "flexible",
            ExtractMode::Boxed => "boxed",
        }
    }
}

impl std::str::FromStr for ExtractMode {
    type Err = tinylora_formats::UnknownName;
    fn from_str(s: &str) -> Result<Self, tinylora_formats::UnknownName> {
        let table = ExtractMode::ALL.map(|m| (m.name(), m));
        tinylora_formats::parse_name("extraction", "strict, flexible, boxed", &table, s)
    }
}

static STRICT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"#### (-?[0-9.,]+)").unwrap());
static FLEXIBLE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(-?[$0-9.,]{2,})|(-?[0-9]+)").unwrap());

/// The content of the last `\boxed{…}`, braces balanced.
fn last_boxed(text: &str) -> Option<&str> {
    let start = text.rfind("\\boxed{")? + "\\boxed{".len();
    let mut depth = 1;
    for (i, c) in text[start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&text[start..start + i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// The raw answer string `mode` finds in `text`.
pub fn extract(text: &str, mode: ExtractMode) -> Option<String> {
    let found = match mode {
        ExtractMode::Strict => STRICT.captures_iter(text).last().map(|c| c[1].to_string()),
        ExtractMode::Flexible => FLEXIBLE.find_iter(text).last().map(|m| m.as_str().to_string()),
        ExtractMode::Boxed => last_boxed(text).map(str::to_string),
    }?;
    let found = found.trim().to_string();
    (!found.is_empty()).then_some(found)
}

/// A canonical form of a numeric answer: `$1,234.50` → `1234.5`, `18.00` → `18`, `-3` → `-3`;
/// text that is not a number is trimmed and kept (e.g. `\frac{1}{2}`).
pub fn normalize(answer: &str) -> String {
    let s: String = answer
        .trim()
        .trim_end_matches(['.', ' '])
        .chars()
        .filter(|c| !matches!(c, '$' | ',' | ' '))
        .collect();
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() => {
            if x.fract() == 0.0 && x.abs() < 1e15 {
                format!("{}", x as i64)
            } else {
                format!("{x}")
            }
        }
        _ => s,
    }
}

/// Whether the answer `mode` extracts from `text` equals `gold` after normalisation.
pub fn is_correct(text: &str, gold: &str, mode: ExtractMode) -> bool {
    extract(text, mode).is_some_and(|a| normalize(&a) == normalize(gold))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ExtractMode::*;

    #[test]
    fn tricky_cases() {
        // (text, mode, extracted, correct for gold)
        let table: &[(&str, ExtractMode, Option<&str>, &str, bool)] = &[
            ("so she makes $18.\n#### 18", Strict, Some("18"), "18", true),
            ("#### 1,234", Strict, Some("1,234"), "1234", true),
            ("#### -3", Strict, Some("-3"), "-3", true),
            ("#### 18.00", Strict, Some("18.00"), "18", true),
            ("The answer is 18", Strict, None, "18", false),
            ("#### 5 then #### 7", Strict, Some("7"), "7", true),
            ("She pays $18.", Flexible, Some("$18."), "18", true),
            ("3 apples and 4 pears make 7", Flexible, Some("7"), "7", true),
            ("total: 1,234 dollars", Flexible, Some("1,234"), "1234", true),
            ("it is -5 degrees", Flexible, Some("-5"), "-5", true),
            ("costs $0.50 each", Flexible, Some("$0.50"), "0.5", true),
            ("no digits here", Flexible, None, "1", false),
            ("x = 12, y = 7.", Flexible, Some("7."), "7", true),
            ("answer \\boxed{42}", Boxed, Some("42"), "42", true),
            (
                "\\boxed{\\frac{1}{2}}",
                Boxed,
                Some("\\frac{1}{2}"),
                "\\frac{1}{2}",
                true,
            ),
            ("\\boxed{1} then \\boxed{2}", Boxed, Some("2"), "2", true),
            ("\\boxed{unclosed", Boxed, None, "1", false),
            ("#### 17", Strict, Some("17"), "18", false),
        ];
        for &(text, mode, want, gold, correct) in table {
            assert_eq!(extract(text, mode).as_deref(), want, "{mode:?} on {text:?}");
            assert_eq!(
                is_correct(text, gold, mode),
                correct,
                "{mode:?} on {text:?} vs {gold}"
            );
        }
    }

    #[test]
    fn normalisation() {
        for (a, b) in [
            ("$1,234", "1234"),
            ("18.00", "18"),
            ("-3", "-3"),
            ("0.50", "0.5"),
            ("7.", "7"),
            (" 12 ", "12"),
        ] {
            assert_eq!(normalize(a), b, "{a}");
        }
        assert_eq!(normalize("x+1"), "x+1");
        for (i, m) in ExtractMode::ALL.iter().enumerate() {
            assert_eq!(m.index(), i);
        }
    }
}
