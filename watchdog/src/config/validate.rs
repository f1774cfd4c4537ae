//! The checks a parsed configuration must pass: each value in its range, each section's
//! own validation; the error names the key and what is allowed.

use std::{path::Path, time::Duration};

use super::{Config, ConfigError, MAX_INTERFACES, pods, read};

impl Config {
    pub(super) fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        if !(1..=65536).contains(&self.http.max_connections) {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                field: "http.max_connections",
                problem: format!("is {}; use 1 to 65536", self.http.max_connections),
            });
        }
        let timeouts = Duration::from_millis(100)..=Duration::from_secs(24 * 3600);
        for (field, value) in [
            ("http.header_timeout", self.http.header_timeout),
            ("http.idle_timeout", self.http.idle_timeout),
            ("http.max_lifetime", self.http.max_lifetime),
        ] {
            if !timeouts.contains(&value) {
                return Err(ConfigError::Invalid {
                    path: path.to_owned(),
                    field,
                    problem: format!("is {}; use 100ms to 24h", humantime::format_duration(value)),
                });
            }
        }
        let set = |file: &Path| !file.as_os_str().is_empty();
        let (cert, key, ca) = (
            set(&self.http.tls_cert_file),
            set(&self.http.tls_key_file),
            set(&self.http.client_ca_file),
        );
        if cert != key {
            let (field, other) = if cert {
                ("http.tls_key_file", "http.tls_cert_file")
            } else {
                ("http.tls_cert_file", "http.tls_key_file")
            };
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                field,
                problem: format!("is empty while {other} is set; set both (TLS) or neither"),
            });
        }
        if ca && !cert {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                field: "http.client_ca_file",
                problem: "needs http.tls_cert_file and http.tls_key_file (client \
                          certificates are asked for in the TLS handshake)"
                    .to_owned(),
            });
        }
        if self.peers.wireguard_ports.len() > watchdog_common::MAX_WIREGUARD_PORTS {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                field: "peers.wireguard_ports",
                problem: format!(
                    "lists {} ports; at most {} are supported",
                    self.peers.wireguard_ports.len(),
                    watchdog_common::MAX_WIREGUARD_PORTS
                ),
            });
        }
        if self.peers.interfaces.len() > MAX_INTERFACES {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                field: "peers.interfaces",
                problem: format!(
                    "lists {} interfaces; at most {MAX_INTERFACES} are supported (leave it \
                     empty to watch every interface)",
                    self.peers.interfaces.len()
                ),
            });
        }
        for name in &self.peers.interfaces {
            if let Some(why) = read::invalid_interface_name(name) {
                return Err(ConfigError::Invalid {
                    path: path.to_owned(),
                    field: "peers.interfaces",
                    problem: format!(
                        "names {name:?}, which {why}: no interface can have that name; \
                         use names as `ip link` shows them"
                    ),
                });
            }
        }
        if self.pods.source == pods::PodSource::File && self.pods.path.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                field: "pods.path",
                problem: "is empty while pods.source = \"file\"; name a PodList file \
                          (`kubectl get pods -o json --field-selector spec.nodeName=<node>`)"
                    .into(),
            });
        }
        if self.pods.endpoints == pods::PodSource::File
            && self.pods.endpoints_path.as_os_str().is_empty()
        {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                field: "pods.endpoints_path",
                problem: "is empty while pods.endpoints = \"file\"; name an EndpointSlice \
                          list file (`kubectl get endpointslices -A -o json`)"
                    .into(),
            });
        }
        if self.pods.endpoints != pods::PodSource::None && self.pods.source == pods::PodSource::None
        {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                field: "pods.endpoints",
                problem: "needs the running pods' addresses: set pods.source = \"file\" or \
                          \"kubernetes\" too, or pods.endpoints = \"none\""
                    .into(),
            });
        }
        if self.pods.top_n > 1000 {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                field: "pods.top_n",
                problem: format!("is {}; use 0 to 1000", self.pods.top_n),
            });
        }
        if !(1..=1_000_000).contains(&self.pods.max_endpoints) {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                field: "pods.max_endpoints",
                problem: format!("is {}; use 1 to 1000000", self.pods.max_endpoints),
            });
        }
        if !(1..=65536).contains(&self.pods.max_namespaces) {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                field: "pods.max_namespaces",
                problem: format!("is {}; use 1 to 65536", self.pods.max_namespaces),
            });
        }
        if self.peers.top_n > 1000 {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                field: "peers.top_n",
                problem: format!("is {}; use 0 to 1000", self.peers.top_n),
            });
        }
        let window = Duration::from_secs(1)..=Duration::from_secs(3600);
        if !window.contains(&self.detect.window) {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                field: "detect.window",
                problem: format!(
                    "is {:?}; use a duration from 1s to 1h, e.g. \"10s\"",
                    self.detect.window
                ),
            });
        }
        if self.detect.vtep_window < Duration::from_millis(100)
            || self.detect.vtep_window > self.detect.window
        {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                field: "detect.vtep_window",
                problem: format!(
                    "is {:?}; use a duration from 100ms up to detect.window ({:?})",
                    self.detect.vtep_window, self.detect.window
                ),
            });
        }
        if self.detect.confirm == 0 || self.detect.clear_after == 0 {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                field: "detect.confirm",
                problem: "and detect.clear_after must be at least 1 (cycles)".into(),
            });
        }
        self.alerts
            .validate()
            .map_err(|source| ConfigError::Alerts {
                path: path.to_owned(),
                source,
            })?;
        self.desired
            .validate()
            .map_err(|source| ConfigError::Desired {
                path: path.to_owned(),
                source,
            })?;
        self.prober
            .validate()
            .map_err(|source| ConfigError::Prober {
                path: path.to_owned(),
                source,
            })?;
        self.mtu.validate().map_err(|source| ConfigError::Mtu {
            path: path.to_owned(),
            source,
        })?;
        self.cluster
            .validate()
            .map_err(|source| ConfigError::Cluster {
                path: path.to_owned(),
                source,
            })?;
        self.repair
            .validate()
            .map_err(|source| ConfigError::Repair {
                path: path.to_owned(),
                source,
            })?;
        let range = Duration::from_millis(100)..=Duration::from_secs(3600);
        if !range.contains(&self.poll_interval) {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                field: "poll_interval",
                problem: format!(
                    "is {:?}; use a duration from 100ms to 1h, e.g. \"1s\"",
                    self.poll_interval
                ),
            });
        }
        Ok(())
    }
}
