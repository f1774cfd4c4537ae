//! What a user has to fix in a configuration file; every message names the file and the
//! key.

use std::path::PathBuf;

use super::{AlertsConfigError, desired, mtu, prober, read, repair};

/// A configuration the user has to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a small regular text file (a FIFO, a device, too large).
    #[error("config file {path} {source}")]
    Refused {
        /// The file.
        path: PathBuf,
        /// Why it was not read.
        source: read::ReadError,
    },
    /// The document nests deeper than [`read::MAX_NESTING`] levels.
    #[error("config file {path}: nests {depth} levels deep; at most {max} are allowed", max = read::MAX_NESTING)]
    TooDeep {
        /// The file.
        path: PathBuf,
        /// The deepest nesting found.
        depth: usize,
    },
    /// The file's extension says neither TOML nor YAML.
    #[error(
        "config file {path}: unknown format; name it *.toml, *.yaml or *.yml (see `watchdog config default`)"
    )]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// The file does not parse or has a wrong or unknown key.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, which names the key and what is allowed.
        message: String,
    },
    /// An alert setting is wrong (the message names the key, e.g. `alerts.sinks[1].url`).
    #[error("config file {path}: {source}")]
    Alerts {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: AlertsConfigError,
    },
    /// A `[desired]` setting is wrong (the message names the key).
    #[error("config file {path}: {source}")]
    Desired {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: desired::DesiredConfigError,
    },
    /// A `[prober]` setting is wrong (the message names the key).
    #[error("config file {path}: {source}")]
    Prober {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: prober::ProberConfigError,
    },
    /// A `[mtu]` setting is wrong (the message names the key).
    #[error("config file {path}: {source}")]
    Mtu {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: mtu::MtuConfigError,
    },
    /// A `[cluster]` setting is wrong (the message names the key).
    #[error("config file {path}: {source}")]
    Cluster {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: super::cluster::ClusterConfigError,
    },
    /// A `[repair]` setting is wrong (the message names the key).
    #[error("config file {path}: {source}")]
    Repair {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: repair::RepairConfigError,
    },
    /// A value parses but is out of range.
    #[error("config file {path}: `{field}` {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key.
        field: &'static str,
        /// What is wrong and what is allowed.
        problem: String,
    },
}
