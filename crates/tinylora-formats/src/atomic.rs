//! Atomic file writes: a temporary file next to the target, then a rename, so that a reader
//! (or an interrupted run) never sees half a file.

use std::path::{Path, PathBuf};

use crate::error::{FormatError, Result};

/// The temporary path `write_atomic` uses for `path`.
fn temporary(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp{}", std::process::id()));
    path.with_file_name(name)
}

/// Write `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |tmp| std::fs::write(tmp, bytes))
}

/// Let `write` fill a temporary file, then rename it to `path`; the temporary file is removed
/// when `write` fails.
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&Path) -> std::io::Result<()>) -> Result<()> {
    let tmp = temporary(path);
    if let Err(e) = write(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(FormatError::io(&tmp, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| FormatError::io(path, e))
}
