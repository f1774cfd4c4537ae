//! `[desired]`: where the cluster's picture of the overlay comes from (Kubernetes Nodes,
//! a NodeList file, or nothing) and how long it may be trusted.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

/// Where the desired state comes from.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// No desired state: the overlay detectors stay off.
    None,
    /// A NodeList file (`kubectl get nodes -o json` or `-o yaml`), re-read when it changes.
    File,
    /// The Kubernetes API: a watch on Nodes.
    Kubernetes,
}

impl Source {
    /// The lowercase name used in logs and the feature report.
    pub fn as_str(&self) -> &'static str {
        match self {
            Source::None => "none",
            Source::File => "file",
            Source::Kubernetes => "kubernetes",
        }
    }
}

/// The `[desired]` section.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct DesiredConfig {
    /// `none`, `file` or `kubernetes`.
    pub source: Source,
    /// `file`: the NodeList file.
    pub path: PathBuf,
    /// `kubernetes`: a kubeconfig file; empty: the in-cluster service account.
    pub kubeconfig: PathBuf,
    /// This node's name; empty: `NODE_NAME`, else the host name.
    pub node_name: String,
    /// How long the source may fail (watch down, file unreadable) before the desired
    /// state counts as unknown.
    #[serde(with = "humantime_serde")]
    pub stale_after: Duration,
    /// How long the kernel must disagree with the desired state before it counts (so
    /// Flannel's own reprogramming after a change is never flagged).
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// `file`: how often the file is checked for changes.
    #[serde(with = "humantime_serde")]
    pub file_poll: Duration,
    /// `file`: the largest file read, in bytes.
    pub max_file_bytes: u64,
}

impl Default for DesiredConfig {
    /// Must agree with `[desired]` in `default.toml` (a test checks it).
    fn default() -> Self {
        Self {
            source: Source::None,
            path: PathBuf::new(),
            kubeconfig: PathBuf::new(),
            node_name: String::new(),
            stale_after: Duration::from_secs(300),
            grace: Duration::from_secs(3),
            file_poll: Duration::from_secs(1),
            max_file_bytes: 64 << 20,
        }
    }
}

/// A `[desired]` value the user has to fix; the message names the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`desired.{field}` {problem}")]
pub struct DesiredConfigError {
    /// The key under `desired.`.
    pub field: &'static str,
    /// What is wrong and what to do.
    pub problem: String,
}

impl DesiredConfig {
    /// Checks the values that parse but cannot work.
    pub fn validate(&self) -> Result<(), DesiredConfigError> {
        let err = |field, problem: String| Err(DesiredConfigError { field, problem });
        match self.source {
            Source::File if self.path.as_os_str().is_empty() => {
                return err(
                    "path",
                    "is empty; `source = \"file\"` needs the NodeList file, e.g. \
                     path = \"/etc/watchdog/nodes.yaml\" (made by `kubectl get nodes -o yaml`)"
                        .into(),
                );
            }
            Source::None | Source::Kubernetes if !self.path.as_os_str().is_empty() => {
                return err(
                    "path",
                    format!(
                        "is only read with `source = \"file\"` (source is \"{}\"); remove it or \
                         set source = \"file\"",
                        self.source.as_str()
                    ),
                );
            }
            Source::None | Source::File if !self.kubeconfig.as_os_str().is_empty() => {
                return err(
                    "kubeconfig",
                    format!(
                        "is only read with `source = \"kubernetes\"` (source is \"{}\"); remove \
                         it or set source = \"kubernetes\"",
                        self.source.as_str()
                    ),
                );
            }
            _ => {}
        }
        let stale = Duration::from_secs(1)..=Duration::from_secs(24 * 3600);
        if !stale.contains(&self.stale_after) {
            return err(
                "stale_after",
                format!(
                    "is {:?}; use a duration from 1s to 24h, e.g. \"5m\"",
                    self.stale_after
                ),
            );
        }
        if self.grace > Duration::from_secs(3600) {
            return err(
                "grace",
                format!("is {:?}; use a duration up to 1h, e.g. \"3s\"", self.grace),
            );
        }
        let poll = Duration::from_millis(100)..=Duration::from_secs(3600);
        if !poll.contains(&self.file_poll) {
            return err(
                "file_poll",
                format!(
                    "is {:?}; use a duration from 100ms to 1h, e.g. \"1s\"",
                    self.file_poll
                ),
            );
        }
        if !(1024..=1 << 30).contains(&self.max_file_bytes) {
            return err(
                "max_file_bytes",
                format!(
                    "is {}; use 1024 to 1073741824 (a NodeList of 1000 Nodes is about 10 MB)",
                    self.max_file_bytes
                ),
            );
        }
        if self
            .node_name
            .chars()
            .any(|c| c.is_whitespace() || c == '/')
        {
            return err(
                "node_name",
                format!(
                    "`{}` is not a Kubernetes node name; leave it empty to use NODE_NAME or \
                     the host name",
                    self.node_name
                ),
            );
        }
        Ok(())
    }

    /// This node's name: `node_name`, else `NODE_NAME`, else the host name (`fallback`).
    pub fn node_name(&self, fallback: impl FnOnce() -> String) -> String {
        if !self.node_name.is_empty() {
            return self.node_name.clone();
        }
        match std::env::var("NODE_NAME") {
            Ok(name) if !name.is_empty() => name,
            _ => fallback(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> DesiredConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_are_off_and_valid() {
        let config = DesiredConfig::default();
        assert_eq!(config.source, Source::None);
        config.validate().unwrap();
        assert_eq!(parse(""), config);
    }

    #[test]
    fn sources_parse_and_need_their_keys() {
        let config = parse("source = \"file\"\npath = \"/tmp/nodes.yaml\"\n");
        assert_eq!(config.source, Source::File);
        config.validate().unwrap();
        let err = parse("source = \"file\"\n").validate().unwrap_err();
        assert_eq!(err.field, "path");
        assert!(
            err.to_string().starts_with("`desired.path` is empty"),
            "{err}"
        );
        let err = parse("source = \"kubernetes\"\npath = \"/x\"\n")
            .validate()
            .unwrap_err();
        assert_eq!(err.field, "path");
        let err = parse("kubeconfig = \"/root/.kube/config\"\n")
            .validate()
            .unwrap_err();
        assert_eq!(err.field, "kubeconfig");
        parse("source = \"kubernetes\"\nkubeconfig = \"/root/.kube/config\"\n")
            .validate()
            .unwrap();
        let err = toml::from_str::<DesiredConfig>("source = \"etcd\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`kubernetes`") && err.contains("`file`"),
            "{err}"
        );
    }

    #[test]
    fn out_of_range_values_name_the_key() {
        for (text, field) in [
            ("stale_after = \"0s\"", "stale_after"),
            ("grace = \"2h\"", "grace"),
            ("file_poll = \"1ms\"", "file_poll"),
            ("max_file_bytes = 10", "max_file_bytes"),
            ("node_name = \"a b\"", "node_name"),
        ] {
            let err = parse(text).validate().unwrap_err();
            assert_eq!(err.field, field, "{text}");
            assert!(
                err.to_string().contains(&format!("desired.{field}")),
                "{err}"
            );
        }
    }

    #[test]
    fn node_name_prefers_the_config() {
        let config = parse("node_name = \"pi-3\"");
        assert_eq!(config.node_name(|| "host".into()), "pi-3");
    }
}
