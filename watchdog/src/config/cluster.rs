//! `[cluster]`: this node's view of the other Nodes for the cluster's verdict
//! (`watchdog_peer_node_reachable`, judged across nodes by the shipped Prometheus rules).

use std::time::Duration;

use serde::Deserialize;

/// The `[cluster]` section.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Off (or `prober.enabled = false`): no Node is probed and
    /// `watchdog_peer_node_reachable` is not exported.
    pub enabled: bool,
    /// Every peer Node is probed through the overlay this often.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for ClusterConfig {
    /// Must agree with `[cluster]` in `default.toml` (a test checks it).
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(5),
        }
    }
}

/// A `[cluster]` value the user has to fix; the message names the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`cluster.{field}` {problem}")]
pub struct ClusterConfigError {
    /// The key under `cluster.`.
    pub field: &'static str,
    /// What is wrong and what to do.
    pub problem: String,
}

impl ClusterConfig {
    /// Checks the values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ClusterConfigError> {
        let interval = Duration::from_secs(1)..=Duration::from_secs(3600);
        if !interval.contains(&self.interval) {
            return Err(ClusterConfigError {
                field: "interval",
                problem: format!(
                    "is {:?}; use a duration from 1s to 1h, e.g. \"5s\"",
                    self.interval
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interval_out_of_range_names_the_key() {
        let config = ClusterConfig {
            interval: Duration::from_millis(10),
            ..ClusterConfig::default()
        };
        let err = config.validate().unwrap_err();
        assert_eq!(err.field, "interval");
        assert!(err.to_string().contains("from 1s to 1h"), "{err}");
    }
}
