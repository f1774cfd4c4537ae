//! `[mtu]`: path-MTU probes of every overlay peer, to find the black holes no kernel
//! counter shows (full-size packets vanish, small ones pass, no ICMP comes back).

use std::time::Duration;

use serde::Deserialize;

/// The `[mtu]` section.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct MtuConfig {
    /// Off (or `prober.enabled = false`): no path-MTU probe is sent and `mtu_black_hole`
    /// never fires.
    pub enabled: bool,
    /// Every peer's path is searched this often; passive evidence (large packets out, none
    /// that size back) and a black hole already found are rechecked every `interval / 6`.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// At most this many path-MTU probe packets a second in all.
    pub max_pps: u32,
}

impl Default for MtuConfig {
    /// Must agree with `[mtu]` in `default.toml` (a test checks it).
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(60),
            max_pps: 10,
        }
    }
}

/// A `[mtu]` value the user has to fix; the message names the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`mtu.{field}` {problem}")]
pub struct MtuConfigError {
    /// The key under `mtu.`.
    pub field: &'static str,
    /// What is wrong and what to do.
    pub problem: String,
}

impl MtuConfig {
    /// Checks the values that parse but cannot work.
    pub fn validate(&self) -> Result<(), MtuConfigError> {
        let interval = Duration::from_secs(5)..=Duration::from_secs(3600);
        if !interval.contains(&self.interval) {
            return Err(MtuConfigError {
                field: "interval",
                problem: format!(
                    "is {:?}; use a duration from 5s to 1h, e.g. \"60s\"",
                    self.interval
                ),
            });
        }
        if !(1..=1000).contains(&self.max_pps) {
            return Err(MtuConfigError {
                field: "max_pps",
                problem: format!(
                    "is {}; use 1 to 1000 (packets a second), e.g. 10",
                    self.max_pps
                ),
            });
        }
        Ok(())
    }

    /// How soon a peer with passive evidence, or a black hole, is searched again.
    pub fn recheck(&self) -> Duration {
        self.interval / 6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_the_key() {
        assert_eq!(MtuConfig::default().validate(), Ok(()));
        let err = MtuConfig {
            interval: Duration::from_secs(1),
            ..MtuConfig::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("`mtu.interval` is 1s; use"), "{err}");
        let err = MtuConfig {
            max_pps: 0,
            ..MtuConfig::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("`mtu.max_pps` is 0; use 1 to 1000"),
            "{err}"
        );
    }
}
