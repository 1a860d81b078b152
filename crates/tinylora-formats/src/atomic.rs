//! Atomic, durable file writes: a temporary file next to the target, flushed to the disk, then
//! renamed over the target and the directory flushed, so that a reader (or a run interrupted
//! at any point, power loss included) sees either the old file or the new one, never half.

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
    // flushed through a handle that may write (Windows' flush needs one)
    let written = write(&tmp).and_then(|()| std::fs::OpenOptions::new().write(true).open(&tmp)?.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(FormatError::io(&tmp, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| FormatError::io(path, e))?;
    sync_dir(path).map_err(|e| FormatError::io(path, e))
}

/// Flush the directory entry of `path` (after a rename or a create) to the disk.
pub fn sync_dir(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        std::fs::File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}
