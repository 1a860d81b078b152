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

/// Remove temporary files of `path` left by writers that were killed before their rename
/// (`name.tmpPID` of a process that no longer runs). Only Linux can tell whether a process
/// runs (`/proc/PID`); elsewhere nothing is removed.
fn remove_stale_temporaries(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.tmp", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let is_pid = !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
        if is_pid && pid != std::process::id().to_string() && !process_runs(pid) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Whether process `pid` runs (conservatively true where that cannot be told).
fn process_runs(pid: &str) -> bool {
    if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid).exists()
    } else {
        true
    }
}

/// Check, before long work whose result goes to `path`, that `write_atomic` will be able to
/// write it: `path` is not a directory, and its directory exists and takes a new file (tried
/// with the very temporary file the write will use, removed again).
pub fn check_can_write(path: &Path) -> Result<()> {
    refuse_non_regular(path)?;
    create_and_remove(&temporary(path))
        .map_err(|e| FormatError::invalid(path, format!("cannot be written: {e}")))
}

/// Create `probe` as a new file and remove it again.
fn create_and_remove(probe: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(probe)?;
    std::fs::remove_file(probe)
}

/// Refuse to replace anything at `path` but a regular file: renaming over a device node, a
/// symbolic link or a directory would destroy it (as root, `/dev/null` itself).
fn refuse_non_regular(path: &Path) -> Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(()); // nothing there yet
    };
    let what = if meta.is_dir() {
        "is a directory"
    } else if meta.file_type().is_symlink() {
        "is a symbolic link (give the file it points to)"
    } else if !meta.is_file() {
        "is not a regular file (a device, a pipe or a socket)"
    } else {
        return Ok(());
    };
    Err(FormatError::invalid(
        path,
        format!("{what}; outputs are written to a new file that replaces a regular one"),
    ))
}

/// [`check_can_write`] for files in the directory `dir`, which may not exist yet: then its
/// nearest existing ancestor must be a directory that takes a new file.
pub fn check_can_write_in(dir: &Path) -> Result<()> {
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => existing = p,
            _ => {
                existing = Path::new(".");
                break;
            }
        }
    }
    if !existing.is_dir() {
        return Err(FormatError::invalid(existing, "is not a directory"));
    }
    create_and_remove(&temporary(&existing.join(".tinylora-write-check")))
        .map_err(|e| FormatError::invalid(existing, format!("cannot create files in it: {e}")))
}

/// Write `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |tmp| std::fs::write(tmp, bytes))
}

/// Let `write` fill a temporary file, then rename it to `path`; the temporary file is removed
/// when `write` fails, and those of killed earlier writers of `path` before it starts.
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&Path) -> std::io::Result<()>) -> Result<()> {
    refuse_non_regular(path)?;
    remove_stale_temporaries(path);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_removes_what_killed_writers_left_and_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let target = dir.join("model.safetensors");
        // pid_max is at most 2^22 on Linux: no such process
        let stale = dir.join("model.safetensors.tmp4294967295");
        let unrelated = [
            dir.join("model.safetensors.tmpx"),
            dir.join("other.tmp4294967295"),
        ];
        for p in unrelated.iter().chain([&stale]) {
            std::fs::write(p, b"x").unwrap();
        }
        write_atomic(&target, b"new").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(!stale.exists(), cfg!(target_os = "linux"));
        assert!(unrelated.iter().all(|p| p.exists()));
    }

    #[test]
    fn only_regular_files_are_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let file = dir.join("file");
        std::fs::write(&file, b"old").unwrap();
        write_atomic(&file, b"new").unwrap();
        #[cfg(unix)]
        {
            let link = dir.join("link");
            std::os::unix::fs::symlink(&file, &link).unwrap();
            let e = write_atomic(&link, b"x").unwrap_err().to_string();
            assert!(e.contains("is a symbolic link"), "{e}");
            assert!(check_can_write(&link).is_err());
            assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
            let e = check_can_write(Path::new("/dev/null")).unwrap_err().to_string();
            assert!(e.contains("is not a regular file"), "{e}");
        }
        let e = write_atomic(dir, b"x").unwrap_err().to_string();
        assert!(e.contains("is a directory"), "{e}");
        assert_eq!(std::fs::read(&file).unwrap(), b"new");
    }
}
