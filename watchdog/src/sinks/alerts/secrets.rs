//! Secrets (URLs with tokens, HMAC keys) read from files or the environment; never
//! printed.

use std::{fmt, path::Path};

use crate::config::alerts::{AlertsConfigError, error};

/// A secret value (URL with a token, HMAC key): never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value read from a file or the environment.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The value, for use (never for printing).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Reads a secret from `path` (trimmed, non-empty).
pub fn read_secret_file(field: &str, path: &Path) -> Result<String, AlertsConfigError> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        error(
            field,
            format!(
                "cannot read {}: {err}; create the file or fix the path",
                path.display()
            ),
        )
    })?;
    let value = text.trim().to_owned();
    if value.is_empty() {
        return Err(error(field, format!("{} is empty", path.display())));
    }
    Ok(value)
}

/// Reads a secret from environment variable `var` (trimmed, non-empty).
pub fn read_secret_env(field: &str, var: &str) -> Result<String, AlertsConfigError> {
    match std::env::var(var) {
        Ok(value) if !value.trim().is_empty() => Ok(value.trim().to_owned()),
        Ok(_) => Err(error(field, format!("environment variable {var} is empty"))),
        Err(_) => Err(error(
            field,
            format!("environment variable {var} is not set; set it or use a file"),
        )),
    }
}
