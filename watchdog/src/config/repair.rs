//! `[repair]`: whether the watchdog may put the overlay's FDB entries, neighbours and
//! routes back to what the Nodes say (off, dry run, apply), what it must never touch, and
//! the guards on every plan.

use std::{path::PathBuf, str::FromStr, time::Duration};

use serde::{Deserialize, Deserializer};

use crate::model::net::Prefix;

/// What repair does with a plan.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Nothing is planned.
    Off,
    /// Plans are computed, logged, exported and alerted; nothing is changed.
    DryRun,
    /// Plans are applied, journalled, verified and rolled back when they do not help.
    Apply,
}

impl Mode {
    /// `off`, `dry_run` or `apply`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::DryRun => "dry_run",
            Mode::Apply => "apply",
        }
    }
}

/// A prefix from the config (`"10.244.7.0/24"`), parsed when the file is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProtectedPrefix(pub Prefix);

impl<'de> Deserialize<'de> for ProtectedPrefix {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Prefix::from_str(&text)
            .map(|prefix| ProtectedPrefix(prefix.network()))
            .map_err(|err| serde::de::Error::custom(format!("`{text}`: {err}")))
    }
}

/// `[repair.protect]`: what repair never touches, whatever the Nodes say.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Protect {
    /// Routes whose destination overlaps one of these, neighbours and FDB destinations
    /// inside one of these.
    pub prefixes: Vec<ProtectedPrefix>,
    /// Objects on these devices and routes through them.
    pub devices: Vec<String>,
}

impl Protect {
    /// True if `prefix` overlaps a protected prefix.
    pub fn covers_prefix(&self, prefix: &Prefix) -> bool {
        self.prefixes.iter().any(|p| {
            p.0.is_ipv4() == prefix.is_ipv4()
                && (p.0.contains(&prefix.network().addr) || prefix.contains(&p.0.addr))
        })
    }

    /// True if `addr` lies inside a protected prefix.
    pub fn covers_addr(&self, addr: &std::net::IpAddr) -> bool {
        self.prefixes.iter().any(|p| p.0.contains(addr))
    }

    /// True if `dev` is protected.
    pub fn covers_device(&self, dev: &str) -> bool {
        self.devices.iter().any(|d| d == dev)
    }
}

/// The `[repair]` section.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RepairConfig {
    /// `off`, `dry_run` or `apply`.
    pub mode: Mode,
    /// The journal (JSON lines) of every change, written before the change is made.
    pub journal: PathBuf,
    /// The journal is rotated (to `<journal>.1`) when it grows past this many bytes.
    pub journal_max_bytes: u64,
    /// What repair never touches.
    pub protect: Protect,
    /// A plan whose adds and replaces exceed this fraction of the expected objects, or
    /// whose replaces and deletes exceed it of the overlay objects the kernel has, is
    /// refused.
    pub max_fraction: f64,
    /// A plan with more operations than this is refused.
    pub max_ops: usize,
    /// At most this many changes to one object per hour.
    pub max_per_hour: u32,
    /// An object no Node accounts for is deleted only when seen twice this far apart.
    #[serde(with = "humantime_serde")]
    pub delete_after: Duration,
    /// How long a change is watched after it is made: the new object must be in the
    /// kernel and the evidence that raised the finding gone, or it is rolled back.
    #[serde(with = "humantime_serde")]
    pub verify_window: Duration,
    /// Routes (and Nodes' pod subnets) wider than this IPv4 prefix length are never
    /// repair's: a `/8` pod subnet is a mistake, not a target.
    pub widest_prefix_v4: u8,
    /// The same for IPv6.
    pub widest_prefix_v6: u8,
    /// An object left to another writer (`repair_conflict`) may be repaired again once
    /// that writer has left it alone this long.
    #[serde(with = "humantime_serde")]
    pub conflict_quiet: Duration,
}

impl Default for RepairConfig {
    /// Must agree with `[repair]` in `default.toml` (a test checks it).
    fn default() -> Self {
        Self {
            mode: Mode::DryRun,
            journal: PathBuf::from("/var/lib/watchdog/journal.jsonl"),
            journal_max_bytes: 1 << 20,
            protect: Protect::default(),
            max_fraction: 0.5,
            max_ops: 32,
            max_per_hour: 3,
            delete_after: Duration::from_secs(300),
            verify_window: Duration::from_secs(10),
            widest_prefix_v4: 16,
            widest_prefix_v6: 48,
            conflict_quiet: Duration::from_secs(600),
        }
    }
}

/// A `[repair]` value the user has to fix; the message names the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`repair.{field}` {problem}")]
pub struct RepairConfigError {
    /// The key under `repair.`.
    pub field: &'static str,
    /// What is wrong and what to do.
    pub problem: String,
}

impl RepairConfig {
    /// Checks the values that parse but cannot work.
    pub fn validate(&self) -> Result<(), RepairConfigError> {
        let err = |field, problem: String| Err(RepairConfigError { field, problem });
        if self.journal.as_os_str().is_empty() || !self.journal.is_absolute() {
            return err(
                "journal",
                format!(
                    "is `{}`; give an absolute file path, e.g. \"/var/lib/watchdog/journal.jsonl\"",
                    self.journal.display()
                ),
            );
        }
        if !(4096..=1 << 30).contains(&self.journal_max_bytes) {
            return err(
                "journal_max_bytes",
                format!(
                    "is {}; use 4096 to 1073741824, e.g. 1048576",
                    self.journal_max_bytes
                ),
            );
        }
        if !(self.max_fraction > 0.0 && self.max_fraction <= 1.0) {
            return err(
                "max_fraction",
                format!(
                    "is {}; use a fraction above 0 and at most 1, e.g. 0.5",
                    self.max_fraction
                ),
            );
        }
        if !(1..=10_000).contains(&self.max_ops) {
            return err(
                "max_ops",
                format!("is {}; use 1 to 10000, e.g. 32", self.max_ops),
            );
        }
        if !(1..=3600).contains(&self.max_per_hour) {
            return err(
                "max_per_hour",
                format!("is {}; use 1 to 3600, e.g. 3", self.max_per_hour),
            );
        }
        let delete = Duration::from_secs(1)..=Duration::from_secs(24 * 3600);
        if !delete.contains(&self.delete_after) {
            return err(
                "delete_after",
                format!(
                    "is {:?}; use a duration from 1s to 24h, e.g. \"5m\"",
                    self.delete_after
                ),
            );
        }
        let verify = Duration::from_secs(1)..=Duration::from_secs(600);
        if !verify.contains(&self.verify_window) {
            return err(
                "verify_window",
                format!(
                    "is {:?}; use a duration from 1s to 10m, e.g. \"10s\"",
                    self.verify_window
                ),
            );
        }
        if !(1..=32).contains(&self.widest_prefix_v4) {
            return err(
                "widest_prefix_v4",
                format!(
                    "is {}; use a prefix length from 1 to 32, e.g. 16",
                    self.widest_prefix_v4
                ),
            );
        }
        if !(1..=128).contains(&self.widest_prefix_v6) {
            return err(
                "widest_prefix_v6",
                format!(
                    "is {}; use a prefix length from 1 to 128, e.g. 48",
                    self.widest_prefix_v6
                ),
            );
        }
        let quiet = Duration::from_secs(1)..=Duration::from_secs(24 * 3600);
        if !quiet.contains(&self.conflict_quiet) {
            return err(
                "conflict_quiet",
                format!(
                    "is {:?}; use a duration from 1s to 24h, e.g. \"10m\"",
                    self.conflict_quiet
                ),
            );
        }
        for (i, dev) in self.protect.devices.iter().enumerate() {
            if dev.is_empty() || dev.len() > 15 || dev.contains(['/', ' ']) {
                return err(
                    "protect.devices",
                    format!("[{i}] `{dev}` is not an interface name (1–15 characters, no `/`)"),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> RepairConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_are_dry_run_and_valid() {
        let config = RepairConfig::default();
        assert_eq!(config.mode, Mode::DryRun);
        config.validate().unwrap();
        assert_eq!(parse(""), config);
    }

    #[test]
    fn modes_and_protect_parse() {
        let config = parse(
            "mode = \"apply\"\n[protect]\nprefixes = [\"10.244.7.1/24\", \"fd00::/64\"]\n\
             devices = [\"eth0\"]\n",
        );
        assert_eq!(config.mode, Mode::Apply);
        assert_eq!(
            config.protect.prefixes[0].0,
            "10.244.7.0/24".parse().unwrap()
        );
        assert!(
            config
                .protect
                .covers_prefix(&"10.244.0.0/16".parse().unwrap())
        );
        assert!(
            config
                .protect
                .covers_prefix(&"10.244.7.128/25".parse().unwrap())
        );
        assert!(
            !config
                .protect
                .covers_prefix(&"10.244.8.0/24".parse().unwrap())
        );
        assert!(config.protect.covers_addr(&"10.244.7.0".parse().unwrap()));
        assert!(config.protect.covers_device("eth0"));
        config.validate().unwrap();
        let err = toml::from_str::<RepairConfig>("mode = \"yes\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`dry_run`") && err.contains("`apply`"),
            "{err}"
        );
        let err = toml::from_str::<RepairConfig>("[protect]\nprefixes = [\"10.0.0.0/40\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`10.0.0.0/40`"), "{err}");
    }

    #[test]
    fn out_of_range_values_name_the_key() {
        for (text, field) in [
            ("journal = \"journal.jsonl\"", "journal"),
            ("journal_max_bytes = 10", "journal_max_bytes"),
            ("max_fraction = 0.0", "max_fraction"),
            ("max_fraction = 1.5", "max_fraction"),
            ("max_ops = 0", "max_ops"),
            ("max_per_hour = 0", "max_per_hour"),
            ("delete_after = \"0s\"", "delete_after"),
            ("verify_window = \"1h\"", "verify_window"),
            ("widest_prefix_v4 = 0", "widest_prefix_v4"),
            ("widest_prefix_v6 = 129", "widest_prefix_v6"),
            ("conflict_quiet = \"0s\"", "conflict_quiet"),
            ("[protect]\ndevices = [\"a/b\"]", "protect.devices"),
        ] {
            let err = parse(text).validate().unwrap_err();
            assert_eq!(err.field, field, "{text}");
            assert!(
                err.to_string().contains(&format!("repair.{field}")),
                "{err}"
            );
        }
    }
}
