//! Tests' scratch directories (native only).

use std::path::Path;

/// A fresh, empty directory under the system temporary directory (`tinylora-test-NAME-…`),
/// removed when dropped; a test that fails keeps it for inspection and prints its path.
pub fn temp_dir(name: &str) -> TestDir {
    TestDir(
        tempfile::Builder::new()
            .prefix(&format!("tinylora-test-{name}-"))
            .tempdir()
            .unwrap(),
    )
}

/// A test's scratch directory: derefs to its path. See [`temp_dir`].
pub struct TestDir(tempfile::TempDir);

impl std::ops::Deref for TestDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        self.0.path()
    }
}

impl AsRef<Path> for TestDir {
    fn as_ref(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.disable_cleanup(true);
            eprintln!("test files kept in {}", self.0.path().display());
        }
    }
}
