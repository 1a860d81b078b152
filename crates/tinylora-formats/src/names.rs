//! Parsing the names of options (`--method lora`, `--extract strict`, …).

/// A name that is none of the known ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{given}` (known: {known})")]
pub struct UnknownName {
    /// What was being named (`method`, `module`, …).
    pub what: &'static str,
    /// The name given.
    pub given: String,
    /// The known names, comma-separated.
    pub known: &'static str,
}

/// The entry of `table` named `given`, or an [`UnknownName`] listing the names.
pub fn parse_name<T: Copy>(
    what: &'static str,
    known: &'static str,
    table: &[(&str, T)],
    given: &str,
) -> Result<T, UnknownName> {
    table
        .iter()
        .find(|(name, _)| *name == given)
        .map(|&(_, v)| v)
        .ok_or_else(|| UnknownName {
            what,
            given: given.to_string(),
            known,
        })
}
