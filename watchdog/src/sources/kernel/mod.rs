//! Kernel helpers: BTF, tracefs, capabilities, /proc, the daemon's own memory.

pub mod btf;
pub mod caps;
pub mod memory;
pub mod procfs;
pub mod tracefs;

/// For tests that read a kernel file: true when `path` exists; otherwise says why the test
/// cannot run, and fails under CI (`CI` set), where the suite must run for real.
#[cfg(test)]
pub(crate) fn kernel_file_present(test: &str, path: &std::path::Path) -> bool {
    if path.exists() {
        return true;
    }
    let message = format!("{test}: needs {}, which does not exist", path.display());
    assert!(std::env::var_os("CI").is_none(), "{message}");
    eprintln!("SKIPPED {message}");
    false
}
