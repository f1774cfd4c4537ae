//! Kernel helpers: BTF, tracefs, capabilities, /proc.

pub mod btf;
pub mod caps;
pub mod procfs;
pub mod tracefs;

/// For tests that read a kernel file: true when `path` exists; otherwise [`skip`]s.
#[cfg(test)]
pub(crate) fn kernel_file_present(test: &str, path: &std::path::Path) -> bool {
    if path.exists() {
        return true;
    }
    skip(
        test,
        &format!("needs {}, which does not exist", path.display()),
    );
    false
}

/// Says that unit test `test` cannot run here and why (`SKIPPED <test>: <why>`); the
/// caller returns. Under CI (`CI` set), where the suite must run for real, it panics
/// instead. Every skip of this crate's unit tests goes through here (the integration
/// suite's is `watchdog_tests::skip`).
#[cfg(test)]
pub(crate) fn skip(test: &str, why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} cannot run: {why} (CI is set: every test must run)"
    );
    eprintln!("SKIPPED {test}: {why}");
}
