//! `watchdog config default` and `watchdog config check FILE`.

use std::{path::Path, process::ExitCode};

use crate::{
    config::{Config, DEFAULT_CONFIG, alerts::AlertsConfigError},
    sinks::alerts::{SinkSpec, resolve},
};

/// Prints the embedded default configuration.
pub fn default() -> ExitCode {
    print!("{DEFAULT_CONFIG}");
    ExitCode::SUCCESS
}

/// Checks `file` exactly as `watchdog run` does before it attaches anything (the file,
/// then every alert sink's URL and secret read from their files and environment, the
/// API's TLS certificate, key and client CA) and
/// prints the effective configuration; exit 1 if `run` would refuse it.
pub fn check(file: &Path) -> ExitCode {
    let judged = Config::load(Some(file))
        .map_err(anyhow::Error::from)
        .and_then(|config| {
            judge(&config)?;
            crate::sinks::server_tls::server_config(&config.http)?;
            Ok(config)
        });
    match judged {
        Ok(config) => {
            println!("{file}: valid\n{config:#?}", file = file.display());
            ExitCode::SUCCESS
        }
        Err(err) => super::fail(&err, 1),
    }
}

/// What `run` checks of a loaded configuration before it attaches anything: every alert
/// sink's URL and secret, read and parsed. `config check` calls the same.
pub fn judge(config: &Config) -> Result<Vec<SinkSpec>, AlertsConfigError> {
    resolve(&config.alerts)
}
