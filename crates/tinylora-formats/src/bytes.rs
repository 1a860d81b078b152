//! File contents held in memory: a read-only memory map of a file on disk (native), or bytes
//! handed over by the caller (a browser's `File` / `fetch` result, a test buffer).

use std::ops::Deref;
use std::path::Path;

use memmap2::Mmap;

use crate::error::{FormatError, Result};

/// The bytes of one model file, however they reached memory.
pub enum FileBytes {
    /// A read-only map of a file on disk.
    Mapped(Mmap),
    /// Bytes owned by this value.
    Owned(Vec<u8>),
}

impl FileBytes {
    /// Map the file at `path` read-only.
    pub fn map(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| FormatError::io(path, e))?;
        // SAFETY: read-only mapping of a file tinylora never modifies in place.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| FormatError::io(path, e))?;
        Ok(Self::Mapped(mmap))
    }
}

impl Deref for FileBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Self::Mapped(m) => m,
            Self::Owned(v) => v,
        }
    }
}

impl std::fmt::Debug for FileBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileBytes({} bytes)", self.len())
    }
}

impl From<Vec<u8>> for FileBytes {
    fn from(v: Vec<u8>) -> Self {
        Self::Owned(v)
    }
}
