//! The `[detect]` table: detector thresholds.

use std::time::Duration;

use serde::Deserialize;

/// Detector thresholds (`[detect]` in the config).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct DetectConfig {
    /// A destination that gets packets and sends nothing back for this long is blackholed;
    /// also the span over which drops and connect failures are counted.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// A VXLAN VTEP (an FDB destination) that gets `min_packets` and answers nothing for
    /// this long is silent. Shorter than `window`: node-to-node overlay traffic always
    /// flows both ways, and a ghost VTEP must be named within seconds.
    #[serde(with = "humantime_serde")]
    pub vtep_window: Duration,
    /// Packets sent without reply within the window before a destination counts as
    /// blackholed.
    pub min_packets: u64,
    /// Failed TCP connects within the window (with none succeeding) before a destination
    /// counts as failing.
    pub min_failed_connects: u64,
    /// Retransmitted SYNs within the window (with no connect succeeding) before a
    /// destination counts as failing: a SYN is retransmitted only after a whole
    /// retransmission timeout without an answer.
    pub min_syn_retransmits: u64,
    /// Netfilter, reverse-path or checksum drops of this node's pod or overlay traffic
    /// within the window before their cause is named.
    pub min_drops: u64,
    /// Consecutive cycles a problem must be seen before its finding fires.
    pub confirm: u32,
    /// Consecutive cycles without the problem before its finding resolves.
    pub clear_after: u32,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10),
            vtep_window: Duration::from_secs(1),
            min_packets: 5,
            min_failed_connects: 3,
            min_syn_retransmits: 2,
            min_drops: 5,
            confirm: 2,
            clear_after: 5,
        }
    }
}
