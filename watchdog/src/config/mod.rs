//! Configuration: an embedded default, overridden key by key by a TOML or YAML file. The
//! schema of every section lives here (`[detect]` in [`detect`], `[alerts]` in
//! [`alerts`]), with its validation.

pub mod alerts;
pub mod desired;
pub mod detect;
pub mod mtu;
pub mod pods;
pub mod prober;
pub mod read;
pub mod repair;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

pub use self::{
    alerts::{AlertsConfig, AlertsConfigError},
    detect::DetectConfig,
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
    /// Address of the HTTP server (/metrics, /healthz, /readyz).
    pub listen: SocketAddr,
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
    /// `[pods]`: where the names of this node's pods come from.
    pub pods: pods::PodsConfig,
    /// Whether and how the overlay is repaired.
    pub repair: repair::RepairConfig,
    /// Limits of the HTTP server's connections.
    pub http: HttpConfig,
}

/// How many connections the HTTP server holds and for how long.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// From a connection's opening (or its previous answer) to a request's last header;
    /// closes idle keep-alive connections too.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Without a byte read or written (a client that stops reading an answer).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// From accept to close, however busy.
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_connections: 64,
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            max_lifetime: Duration::from_secs(300),
        }
    }
}

/// Settings of the per-peer traffic probe (TC programs).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct PeersConfig {
    /// Interfaces to watch; empty: every non-loopback interface of the daemon's namespace,
    /// including ones that appear later.
    pub interfaces: Vec<String>,
    /// UDP ports whose traffic is WireGuard (the peer is then the tunnel endpoint). At most
    /// `watchdog_common::MAX_WIREGUARD_PORTS` (4).
    pub wireguard_ports: Vec<u16>,
    /// How many peers `/metrics` shows (the busiest by packets sent).
    pub top_n: usize,
}

impl Default for PeersConfig {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            wireguard_ports: vec![51820, 41641],
            top_n: 20,
        }
    }
}

/// Which network namespaces' drops and TCP connects are reported.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Namespaces {
    /// Only the daemon's own network namespace (filtered in the kernel).
    Own,
    /// The daemon's own plus the namespaces at the other end of its veth interfaces: on a
    /// Kubernetes node the pods' (their host-side veths), in a lab of several "nodes" on
    /// one kernel only this node's.
    Node,
    /// Every namespace on the kernel.
    All,
}

impl Namespaces {
    /// The lowercase name used in the config and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Namespaces::Own => "own",
            Namespaces::Node => "node",
            Namespaces::All => "all",
        }
    }
}

/// Probe switches.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Probes {
    /// `skb:kfree_skb` drop counting.
    pub kfree_skb: bool,
    /// TC per-peer traffic counting.
    pub peers: bool,
    /// TCP connect outcomes per destination.
    pub tcp: bool,
    /// Read what explains netfilter, reverse-path and checksum drops of this node's traffic
    /// (the nftables ruleset over netlink, `rp_filter` sysctls, devices' offload features),
    /// while such drops are seen.
    pub explain_drops: bool,
}

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

impl Default for Config {
    /// Must agree with `default.toml` (a test checks it).
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9477)),
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
            pods: pods::PodsConfig::default(),
            repair: repair::RepairConfig::default(),
            http: HttpConfig::default(),
        }
    }
}

impl Default for Probes {
    fn default() -> Self {
        Self {
            kfree_skb: true,
            peers: true,
            tcp: true,
            explain_drops: true,
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
                    serde_yaml::from_str(text).map_err(|err| parse_error(err.to_string()))?
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

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str, text: &str) -> Result<Config, ConfigError> {
        Config::from_text(Path::new(name), text)
    }

    #[test]
    fn embedded_default_file_matches_default() {
        assert_eq!(
            parse("default.toml", DEFAULT_CONFIG).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn default_serves_on_localhost() {
        let config = Config::default();
        assert_eq!(config.listen, "127.0.0.1:9477".parse().unwrap());
        assert_eq!(config.namespaces, Namespaces::Own);
        assert!(config.probes.kfree_skb);
        assert_eq!(config.poll_interval, Duration::from_millis(500));
    }

    #[test]
    fn toml_and_yaml_override_single_keys() {
        let toml = parse(
            "a.toml",
            "namespaces = \"all\"\n[probes]\nkfree_skb = false\n",
        )
        .unwrap();
        assert_eq!(toml.namespaces, Namespaces::All);
        assert!(!toml.probes.kfree_skb);
        assert_eq!(toml.listen, Config::default().listen);
        let yaml = parse("a.yaml", "listen: 0.0.0.0:9000\npoll_interval: 250ms\n").unwrap();
        assert_eq!(yaml.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(yaml.poll_interval, Duration::from_millis(250));
        assert_eq!(parse("empty.yml", "").unwrap(), Config::default());
    }

    #[test]
    fn limits_bound_what_a_file_can_ask_for() {
        // 100 000 levels of YAML nesting: refused before the parser recurses.
        let deep = format!(
            "peers:\n  interfaces: {}{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let start = std::time::Instant::now();
        let err = parse("deep.yaml", &deep).unwrap_err().to_string();
        assert!(
            err.contains("nests 100000 levels deep; at most 32"),
            "{err}"
        );
        assert!(start.elapsed() < Duration::from_secs(5));
        // Too many interface names.
        let names: Vec<String> = (0..=MAX_INTERFACES).map(|i| format!("\"e{i}\"")).collect();
        let err = parse(
            "many.toml",
            &format!("[peers]\ninterfaces = [{}]\n", names.join(",")),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("lists 257 interfaces; at most 256"), "{err}");
        // Names no interface can have.
        for (bad, why) in [
            ("", "is empty"),
            ("a b", "whitespace"),
            ("../../etc", "`/`"),
            ("..", "`.` or `..`"),
            ("abcdefghijklmnop", "longer than 15 bytes"),
        ] {
            let err = parse(
                "bad.toml",
                &format!("[peers]\ninterfaces = [\"eth0\", {bad:?}]\n"),
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("`peers.interfaces` names") && err.contains(why),
                "{bad:?}: {err}"
            );
        }
        let ok = parse(
            "ok.toml",
            "[peers]\ninterfaces = [\"flannel.1\", \"tailscale0\"]\n",
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn refused_files_are_named_with_the_reason() {
        let err = Config::load(Some(Path::new("/dev/zero")))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "config file /dev/zero is a character device, not a regular file; point \
             --config at a TOML or YAML file"
        );
    }

    #[test]
    fn unknown_field_is_named_with_the_allowed_ones() {
        let err = parse("a.toml", "listn = \"127.0.0.1:1\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `listn`"), "{err}");
        assert!(err.contains("`listen`"), "{err}");
        let err = parse("a.yaml", "probes:\n  kfree: true\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `kfree`"), "{err}");
        assert!(err.contains("kfree_skb"), "{err}");
    }

    #[test]
    fn bad_values_name_the_field() {
        let err = parse("a.toml", "listen = \"localhost\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen"), "{err}");
        assert!(err.contains("socket address"), "{err}");
        let err = parse("a.toml", "namespaces = \"some\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`own`") && err.contains("`node`") && err.contains("`all`"),
            "{err}"
        );
        assert_eq!(
            parse("a.toml", "namespaces = \"node\"\n")
                .unwrap()
                .namespaces,
            Namespaces::Node
        );
        let err = parse("a.toml", "[pods]\nsource = \"file\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("pods.path"), "{err}");
        let err = parse("a.toml", "[pods]\nendpoints = \"kubernetes\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("pods.endpoints") && err.contains("pods.source"),
            "{err}"
        );
        let err = parse(
            "a.toml",
            "[pods]\nsource = \"kubernetes\"\nendpoints = \"file\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("pods.endpoints_path"), "{err}");
        let err = parse("a.toml", "poll_interval = \"10ms\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`poll_interval`") && err.contains("100ms"),
            "{err}"
        );
        let err = parse("a.json", "{}").unwrap_err().to_string();
        assert!(err.contains("*.toml"), "{err}");
    }

    #[test]
    fn runbook_base_url_defaults_to_the_repository_and_must_be_a_url() {
        let default = Config::default().alerts.runbook_base();
        assert_eq!(
            default,
            concat!(env!("CARGO_PKG_REPOSITORY"), "/blob/main/docs/runbooks/")
        );
        let config = parse(
            "a.toml",
            "[alerts]\nrunbook_base_url = \"https://wiki.example/runbooks\"\n",
        )
        .unwrap();
        assert_eq!(
            config.alerts.runbook_base(),
            "https://wiki.example/runbooks/"
        );
        let err = parse("a.toml", "[alerts]\nrunbook_base_url = \"docs/runbooks\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("alerts.runbook_base_url: `docs/…` is not an http(s) URL"),
            "{err}"
        );
    }

    #[test]
    fn alert_sinks_parse_and_errors_name_the_field() {
        let config = parse(
            "a.toml",
            "[alerts]\nrepeat_interval = \"10m\"\n[[alerts.sinks]]\nname = \"am\"\n\
             type = \"alertmanager\"\nurl = \"http://127.0.0.1:9093\"\n\
             [[alerts.sinks]]\nname = \"hook\"\ntype = \"webhook\"\nurl_env = \"HOOK_URL\"\n\
             secret_file = \"/etc/watchdog/hmac\"\nqueue = 8\n",
        )
        .unwrap();
        assert_eq!(config.alerts.sinks.len(), 2);
        assert_eq!(config.alerts.sinks[1].queue, 8);
        assert_eq!(config.alerts.repeat_interval, Duration::from_secs(600));
        let err = parse(
            "a.toml",
            "[[alerts.sinks]]\nname = \"x\"\ntype = \"webhook\"\nurl = \"htp://x\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("alerts.sinks[0].url: `htp://x` is not an http(s) URL"),
            "{err}"
        );
        let err = parse(
            "a.toml",
            "[[alerts.sinks]]\nname = \"x\"\ntype = \"pager\"\nurl = \"http://x\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`webhook`") && err.contains("`slack`"),
            "{err}"
        );
    }

    #[test]
    fn desired_section_parses_and_errors_name_the_key() {
        let config = parse(
            "a.yaml",
            "desired:\n  source: kubernetes\n  stale_after: 2m\n  grace: 5s\n",
        )
        .unwrap();
        assert_eq!(config.desired.source, desired::Source::Kubernetes);
        assert_eq!(config.desired.stale_after, Duration::from_secs(120));
        let err = parse("a.toml", "[desired]\nsource = \"file\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("config file a.toml: `desired.path` is empty"),
            "{err}"
        );
        let err = parse("a.toml", "[desired]\nsorce = \"file\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown field `sorce`") && err.contains("`source`"),
            "{err}"
        );
    }

    #[test]
    fn empty_btf_path_means_none() {
        let config = parse("a.toml", "btf_path = \"\"\n").unwrap();
        assert_eq!(config.btf_path(), None);
        assert!(Config::default().btf_path().is_some());
    }
}
