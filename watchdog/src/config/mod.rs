//! Configuration: an embedded default, overridden key by key by a TOML or YAML file. The
//! schema of every section lives here (`[detect]` in [`detect`], `[alerts]` in
//! [`alerts`], the daemon's own keys in `general`), with its validation (`validate`, and
//! each section's own); `error` holds what a user has to fix.

pub mod alerts;
pub mod cluster;
pub mod desired;
pub mod detect;
mod error;
mod general;
pub mod mtu;
pub mod pods;
pub mod prober;
pub mod read;
pub mod repair;
#[cfg(test)]
mod tests;
mod validate;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

pub use self::{
    alerts::{AlertsConfig, AlertsConfigError},
    detect::DetectConfig,
    error::ConfigError,
    general::{HttpConfig, Namespaces, PeersConfig, Probes},
    mtu::MtuConfig,
    prober::ProberConfig,
};

/// The most interface names `peers.interfaces` may list.
pub const MAX_INTERFACES: usize = 256;

/// The embedded default configuration (also printed by `watchdog config default`).
pub const DEFAULT_CONFIG: &str = include_str!("../default.toml");

/// The daemon's configuration.
///
/// Every key is optional in a file: a missing one keeps its default.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the HTTP server (/metrics, /healthz, /readyz, the JSON API).
    pub listen: SocketAddr,
    /// A second address serving only /healthz and /readyz, never starved by the other
    /// listener's connections (the kubelet's probes); none when absent.
    pub health_listen: Option<SocketAddr>,
    /// How often the in-kernel maps are read.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Which network namespaces' drops are reported.
    pub namespaces: Namespaces,
    /// Kernel BTF file; empty for none.
    pub btf_path: PathBuf,
    /// tracefs mount; auto-detected when absent.
    pub tracefs_path: Option<PathBuf>,
    /// Which probes are enabled.
    pub probes: Probes,
    /// Per-peer traffic probe settings.
    pub peers: PeersConfig,
    /// Detector thresholds.
    pub detect: DetectConfig,
    /// Alert sinks and their lifecycle.
    pub alerts: AlertsConfig,
    /// Where the cluster's desired state of the overlay comes from.
    pub desired: desired::DesiredConfig,
    /// Active probes that confirm a silent peer.
    pub prober: ProberConfig,
    /// Path-MTU probes of the overlay's peers.
    pub mtu: MtuConfig,
    /// `[cluster]`: reachability of the other Nodes through the overlay.
    pub cluster: cluster::ClusterConfig,
    /// `[pods]`: where the names of this node's pods come from.
    pub pods: pods::PodsConfig,
    /// Whether and how the overlay is repaired.
    pub repair: repair::RepairConfig,
    /// Limits of the HTTP server's connections.
    pub http: HttpConfig,
}

impl Default for Config {
    /// Must agree with `default.toml` (a test checks it).
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9477)),
            health_listen: None,
            poll_interval: Duration::from_millis(500),
            namespaces: Namespaces::Own,
            btf_path: PathBuf::from("/sys/kernel/btf/vmlinux"),
            tracefs_path: None,
            probes: Probes::default(),
            peers: PeersConfig::default(),
            detect: DetectConfig::default(),
            alerts: AlertsConfig::default(),
            desired: desired::DesiredConfig::default(),
            prober: ProberConfig::default(),
            mtu: MtuConfig::default(),
            cluster: cluster::ClusterConfig::default(),
            pods: pods::PodsConfig::default(),
            repair: repair::RepairConfig::default(),
            http: HttpConfig::default(),
        }
    }
}

impl Config {
    /// The embedded default, overridden by `path` if given.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = read::read_config_file(path).map_err(|err| match err {
            read::ReadError::Io(source) => ConfigError::Read {
                path: path.to_owned(),
                source,
            },
            source => ConfigError::Refused {
                path: path.to_owned(),
                source,
            },
        })?;
        Self::from_text(path, &text)
    }

    /// Parses a config file's text; the format comes from the path's extension.
    pub fn from_text(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let parse_error = |message: String| ConfigError::Parse {
            path: path.to_owned(),
            message: message.trim_end().to_owned(),
        };
        let depth = read::nesting(text);
        if depth > read::MAX_NESTING {
            return Err(ConfigError::TooDeep {
                path: path.to_owned(),
                depth,
            });
        }
        let config: Config = match path.extension().and_then(|ext| ext.to_str()) {
            Some("toml") => toml::from_str(text).map_err(|err| parse_error(err.to_string()))?,
            Some("yaml" | "yml") => {
                // An empty YAML document means "no overrides", like an empty TOML file.
                if text.trim().is_empty() {
                    Config::default()
                } else {
                    serde_saphyr::from_str(text)
                        .map_err(|err| parse_error(read::yaml_error(&err, text)))?
                }
            }
            _ => {
                return Err(ConfigError::UnknownFormat {
                    path: path.to_owned(),
                });
            }
        };
        config.validate(path)?;
        Ok(config)
    }

    /// `generatorURL` of Alertmanager alerts: `alerts.generator_url`, else the findings API.
    pub fn generator_url(&self) -> String {
        if self.alerts.generator_url.is_empty() {
            format!("http://{}/api/v1/findings", self.listen)
        } else {
            self.alerts.generator_url.clone()
        }
    }

    /// The BTF file to use, or `None` when configured off.
    pub fn btf_path(&self) -> Option<&Path> {
        (!self.btf_path.as_os_str().is_empty()).then_some(self.btf_path.as_path())
    }
}
