//! `watchdog config default` and `watchdog config check FILE`.

use std::{path::Path, process::ExitCode};

use crate::config::{Config, DEFAULT_CONFIG};

/// Prints the embedded default configuration.
pub fn default() -> ExitCode {
    print!("{DEFAULT_CONFIG}");
    ExitCode::SUCCESS
}

/// Checks `file` and prints the effective configuration; exit 1 if invalid.
pub fn check(file: &Path) -> ExitCode {
    match Config::load(Some(file)) {
        Ok(config) => {
            println!("{file}: valid\n{config:#?}", file = file.display());
            ExitCode::SUCCESS
        }
        Err(err) => super::fail(&err.into(), 1),
    }
}
