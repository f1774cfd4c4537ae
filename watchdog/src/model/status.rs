//! How the sources are doing, as plain data: each probe's state, the kernel features found,
//! the mirror's counters. The daemon's sinks (metrics, readiness) read it.

use std::fmt;

use super::net::ObjectCounts;

/// Whether a probe is counting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeState {
    /// Attached and counting.
    Attached,
    /// This kernel lacks what the probe needs (a tracepoint or one of its fields); the
    /// reason says what. Reported, but the daemon is ready without it.
    Unsupported(String),
    /// Enabled, but it could not be set up or attached; the reason says why. The daemon is
    /// not ready.
    Failed(String),
}

/// One probe's name and state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeStatus {
    /// The probe's name, e.g. `kfree_skb` (the `probe` label of `watchdog_probe_up`).
    pub name: &'static str,
    /// Its state.
    pub state: ProbeState,
}

impl fmt::Display for ProbeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            ProbeState::Attached => write!(f, "probe {} attached", self.name),
            ProbeState::Unsupported(why) => {
                write!(f, "probe {} unsupported by this kernel: {why}", self.name)
            }
            ProbeState::Failed(why) => write!(f, "probe {} failed: {why}", self.name),
        }
    }
}

/// The sources at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceStatus {
    /// Every enabled probe's state.
    pub probes: Vec<ProbeStatus>,
    /// What this kernel offers and the probes use (`btf`, `tcx`, …).
    pub features: Vec<(&'static str, bool)>,
    /// Whether drops are attributed to network namespaces (kernel BTF).
    pub netns_attribution: bool,
    /// Why the network mirror is not running, if it is not.
    pub mirror_failure: Option<String>,
}

impl SourceStatus {
    /// What is not working: failed probes (not those this kernel cannot run), a failed or
    /// stopped mirror.
    pub fn failures(&self) -> Vec<String> {
        let mut failures: Vec<String> = self
            .probes
            .iter()
            .filter(|status| matches!(status.state, ProbeState::Failed(_)))
            .map(ToString::to_string)
            .collect();
        failures.extend(self.mirror_failure.clone());
        failures
    }
}

/// The network mirror's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MirrorStats {
    /// Notifications applied to the snapshot.
    pub updates: u64,
    /// Full loads at start-up.
    pub resyncs_initial: u64,
    /// Full reloads after the notification socket overran.
    pub resyncs_overrun: u64,
    /// Objects in the current snapshot.
    pub objects: ObjectCounts,
}
