//! `[prober]`: active probes that confirm a silent peer before a detector condemns it.

use std::time::Duration;

use serde::Deserialize;

/// How probes ask.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProbeMethod {
    /// ICMP echo where unprivileged ping sockets are allowed (`net.ipv4.ping_group_range`
    /// covers the daemon's group), else UDP.
    Auto,
    /// ICMP echo only (an unprivileged ping socket).
    Icmp,
    /// A UDP datagram to an unused high port, answered by the target's ICMP port
    /// unreachable.
    Udp,
}

impl ProbeMethod {
    /// The lowercase name.
    pub fn as_str(&self) -> &'static str {
        match self {
            ProbeMethod::Auto => "auto",
            ProbeMethod::Icmp => "icmp",
            ProbeMethod::Udp => "udp",
        }
    }
}

/// The `[prober]` section.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ProberConfig {
    /// Off: nothing is probed, and silence (packets out, none back) never condemns a VTEP
    /// or a destination on its own.
    pub enabled: bool,
    /// `auto`, `icmp` or `udp`.
    pub method: ProbeMethod,
    /// How long a probe waits for an answer, from its first packet.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Packets per probe, spread over the first part of `timeout`; the first answer ends it.
    pub tries: u32,
    /// How long a result counts: an answer vouches for a silent peer this long, a failure
    /// condemns it this long.
    #[serde(with = "humantime_serde")]
    pub valid_for: Duration,
    /// At most one probe per target this often.
    #[serde(with = "humantime_serde")]
    pub min_interval: Duration,
    /// At most this many probes a second in all.
    pub max_per_second: u32,
}

impl Default for ProberConfig {
    /// Must agree with `[prober]` in `default.toml` (a test checks it).
    fn default() -> Self {
        Self {
            enabled: true,
            method: ProbeMethod::Auto,
            timeout: Duration::from_millis(450),
            tries: 3,
            valid_for: Duration::from_secs(5),
            min_interval: Duration::from_secs(1),
            max_per_second: 20,
        }
    }
}

/// A `[prober]` value the user has to fix; the message names the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`prober.{field}` {problem}")]
pub struct ProberConfigError {
    /// The key under `prober.`.
    pub field: &'static str,
    /// What is wrong and what to do.
    pub problem: String,
}

impl ProberConfig {
    /// Checks the values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ProberConfigError> {
        let err = |field, problem: String| Err(ProberConfigError { field, problem });
        let timeout = Duration::from_millis(50)..=Duration::from_secs(10);
        if !timeout.contains(&self.timeout) {
            return err(
                "timeout",
                format!(
                    "is {:?}; use a duration from 50ms to 10s, e.g. \"450ms\" (above the \
                     slowest round trip between nodes)",
                    self.timeout
                ),
            );
        }
        if !(1..=10).contains(&self.tries) {
            return err("tries", format!("is {}; use 1 to 10", self.tries));
        }
        let valid = self.timeout.max(Duration::from_secs(1))..=Duration::from_secs(3600);
        if !valid.contains(&self.valid_for) {
            return err(
                "valid_for",
                format!(
                    "is {:?}; use a duration from 1s (and at least prober.timeout) to 1h, \
                     e.g. \"5s\"",
                    self.valid_for
                ),
            );
        }
        if self.min_interval > self.valid_for {
            return err(
                "min_interval",
                format!(
                    "is {:?}; use a duration up to prober.valid_for ({:?}), e.g. \"1s\"",
                    self.min_interval, self.valid_for
                ),
            );
        }
        if !(1..=1000).contains(&self.max_per_second) {
            return err(
                "max_per_second",
                format!("is {}; use 1 to 1000", self.max_per_second),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_the_key() {
        assert_eq!(ProberConfig::default().validate(), Ok(()));
        let bad = |config: ProberConfig| config.validate().unwrap_err().to_string();
        let err = bad(ProberConfig {
            timeout: Duration::from_millis(10),
            ..ProberConfig::default()
        });
        assert!(err.starts_with("`prober.timeout` is 10ms"), "{err}");
        let err = bad(ProberConfig {
            tries: 0,
            ..ProberConfig::default()
        });
        assert!(err.contains("`prober.tries` is 0; use 1 to 10"), "{err}");
        let err = bad(ProberConfig {
            timeout: Duration::from_secs(3),
            valid_for: Duration::from_secs(2),
            ..ProberConfig::default()
        });
        assert!(err.starts_with("`prober.valid_for` is 2s"), "{err}");
        let err = bad(ProberConfig {
            min_interval: Duration::from_secs(10),
            ..ProberConfig::default()
        });
        assert!(err.starts_with("`prober.min_interval`"), "{err}");
        let err = bad(ProberConfig {
            max_per_second: 0,
            ..ProberConfig::default()
        });
        assert!(err.contains("`prober.max_per_second` is 0"), "{err}");
    }
}
