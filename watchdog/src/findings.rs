//! Findings: what the detectors say is wrong, and their lifecycle.
//!
//! Detectors return [`Candidate`]s every cycle; the [`Tracker`] turns them into
//! [`Finding`]s with hysteresis: a candidate must be seen `confirm` cycles in a row to fire,
//! and a finding clears only after `clear_after` cycles without it, so findings do not flap.

use std::{collections::BTreeMap, time::SystemTime};

use serde::{Deserialize, Serialize};

/// What is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A route's gateway does not answer ARP/NDP (FAILED, or NEIGH_FAILED drops).
    GhostGateway,
    /// A destination keeps getting packets from this node and never answers.
    BlackholedDestination,
    /// A VXLAN FDB entry points at a VTEP that is unreachable, off the underlay, or silent;
    /// or a remote-node route has no FDB entry.
    StaleFdb,
    /// A VXLAN device has far fewer FDB entries than remote-node routes.
    VtepCollapse,
    /// A route goes through a link that is down or gone.
    DeadLinkRoute,
    /// A route's gateway is not on-link for its device.
    GatewayNotOnLink,
    /// Packets dropped for lack of a route.
    NoRouteDrops,
    /// A blackhole/unreachable/prohibit route or rule is drawing traffic.
    RejectRouteTraffic,
    /// TCP connects to a destination keep failing.
    FailingTcpDestination,
    /// An EndpointSlice lists an address in this node's pod subnet that no running pod
    /// has: the Service's clients are sent into the void.
    GhostEndpoint,
    /// The overlay's kernel objects (VXLAN device, FDB, neighbours, routes) differ from
    /// what the cluster's Nodes say they must be.
    OverlayDrift,
    /// A Node's Flannel annotations are wrong: a dead or unusable address, a pending
    /// overwrite, a VtepMAC or pod subnet shared with another Node.
    StaleAnnotation,
    /// Full-size packets to a peer vanish (no ICMP comes back) while small ones pass:
    /// the path carries less than the overlay device needs.
    MtuBlackHole,
    /// Repair refused a plan: it would change too much at once.
    RepairRefused,
    /// Something else wrote an object back while (or right after) repair changed it;
    /// repair stopped touching it.
    RepairConflict,
    /// A firewall (netfilter: a chain's policy or a rule) drops this node's pod or overlay
    /// traffic.
    FirewallDrop,
    /// Reverse-path filtering (`rp_filter`) drops this node's pod or overlay traffic that
    /// arrives on an interface the route back does not leave by.
    RpFilterDrop,
    /// A peer's packets arrive with bad checksums (VXLAN's outer UDP checksum included)
    /// and are dropped.
    ChecksumDrop,
    /// A remote VTEP drops the frames this node sends it (probes through the overlay fail
    /// while its underlay address answers): its VXLAN device's MAC or VNI no longer is
    /// what this node sends to.
    RemoteVtepDrops,
}

impl Kind {
    /// Every kind, for exporting zeros.
    pub const ALL: [Kind; 19] = [
        Kind::GhostGateway,
        Kind::BlackholedDestination,
        Kind::StaleFdb,
        Kind::VtepCollapse,
        Kind::DeadLinkRoute,
        Kind::GatewayNotOnLink,
        Kind::NoRouteDrops,
        Kind::RejectRouteTraffic,
        Kind::FailingTcpDestination,
        Kind::GhostEndpoint,
        Kind::OverlayDrift,
        Kind::StaleAnnotation,
        Kind::MtuBlackHole,
        Kind::RepairRefused,
        Kind::RepairConflict,
        Kind::FirewallDrop,
        Kind::RpFilterDrop,
        Kind::ChecksumDrop,
        Kind::RemoteVtepDrops,
    ];

    /// The snake_case name used in metrics and JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::GhostGateway => "ghost_gateway",
            Kind::BlackholedDestination => "blackholed_destination",
            Kind::StaleFdb => "stale_fdb",
            Kind::VtepCollapse => "vtep_collapse",
            Kind::DeadLinkRoute => "dead_link_route",
            Kind::GatewayNotOnLink => "gateway_not_onlink",
            Kind::NoRouteDrops => "no_route_drops",
            Kind::RejectRouteTraffic => "reject_route_traffic",
            Kind::FailingTcpDestination => "failing_tcp_destination",
            Kind::GhostEndpoint => "ghost_endpoint",
            Kind::OverlayDrift => "overlay_drift",
            Kind::StaleAnnotation => "stale_annotation",
            Kind::MtuBlackHole => "mtu_black_hole",
            Kind::RepairRefused => "repair_refused",
            Kind::RepairConflict => "repair_conflict",
            Kind::FirewallDrop => "firewall_drop",
            Kind::RpFilterDrop => "rp_filter_drop",
            Kind::ChecksumDrop => "checksum_drop",
            Kind::RemoteVtepDrops => "remote_vtep_drops",
        }
    }
}

/// How bad.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Something is wrong but no traffic is seen failing yet.
    Warning,
    /// Traffic is going into the void.
    Critical,
}

impl Severity {
    /// The lowercase name used in metrics and JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// A route named by a finding, for the `watchdog_ghost_route_info` metric.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct RouteRef {
    /// Destination prefix, e.g. `10.244.3.0/24`.
    pub prefix: String,
    /// Gateway, if any.
    pub gateway: Option<String>,
    /// Output device name, if any.
    pub dev: Option<String>,
    /// Table name or number (`main`, `local`, `100`).
    pub table: String,
}

/// One piece of kernel evidence: a name and a value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// What it is, e.g. `neighbour_state`.
    pub name: String,
    /// Its value, e.g. `FAILED`.
    pub value: String,
}

/// What a detector reports in one cycle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Candidate {
    /// What is wrong.
    pub kind: Kind,
    /// The thing to fix, e.g. `route 10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink
    /// table main`; with `kind`, the finding's identity.
    pub subject: String,
    /// How bad.
    pub severity: Severity,
    /// The kernel's evidence.
    pub evidence: Vec<Evidence>,
    /// Routes the finding names.
    pub routes: Vec<RouteRef>,
}

impl Candidate {
    /// A candidate without evidence or routes yet.
    pub fn new(kind: Kind, subject: impl Into<String>, severity: Severity) -> Self {
        Self {
            kind,
            subject: subject.into(),
            severity,
            evidence: Vec::new(),
            routes: Vec::new(),
        }
    }

    /// Adds a piece of evidence.
    pub fn with(mut self, name: &str, value: impl ToString) -> Self {
        self.evidence.push(Evidence {
            name: name.to_owned(),
            value: value.to_string(),
        });
        self
    }

    /// The value of evidence `name`, if present.
    pub fn evidence(&self, name: &str) -> Option<&str> {
        self.evidence
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.value.as_str())
    }
}

/// A confirmed finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The latest report.
    #[serde(flatten)]
    pub candidate: Candidate,
    /// When it was first seen (RFC 3339).
    #[serde(serialize_with = "rfc3339::serialize")]
    pub first_seen: SystemTime,
    /// When it was last seen (RFC 3339).
    #[serde(serialize_with = "rfc3339::serialize")]
    pub last_seen: SystemTime,
}

/// RFC 3339 with milliseconds, UTC (`2026-11-27T11:32:09.229Z`): every time the API and the
/// sinks show.
pub mod rfc3339 {
    use std::time::SystemTime;

    /// The time as text.
    pub fn format(time: SystemTime) -> String {
        humantime::format_rfc3339_millis(time).to_string()
    }

    /// `#[serde(serialize_with = "rfc3339::serialize")]`.
    pub fn serialize<S: serde::Serializer>(
        time: &SystemTime,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_rfc3339_millis(*time))
    }

    /// As [`serialize`], for an optional time (`None` serializes as none).
    pub fn serialize_opt<S: serde::Serializer>(
        time: &Option<SystemTime>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match time {
            Some(time) => serialize(time, serializer),
            None => serializer.serialize_none(),
        }
    }
}

/// The answer of `GET /api/v1/findings` and `watchdog check --json`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// `watchdog.findings/v1`.
    pub schema: &'static str,
    /// The node (NODE_NAME, else the host name).
    pub node: String,
    /// When the report was made (RFC 3339).
    #[serde(serialize_with = "rfc3339::serialize")]
    pub generated_at: SystemTime,
    /// Active findings, most severe first.
    pub findings: Vec<Finding>,
}

impl Report {
    /// A report made now.
    pub fn new(node: &str, findings: Vec<Finding>) -> Self {
        Self {
            schema: "watchdog.findings/v1",
            node: node.to_owned(),
            generated_at: SystemTime::now(),
            findings,
        }
    }
}

/// A finding's change in one cycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Confirmed: seen `confirm` cycles in a row.
    Fired(Finding),
    /// Gone for `clear_after` cycles.
    Resolved(Finding),
}

#[derive(Clone, Debug)]
struct Entry {
    candidate: Candidate,
    first_seen: SystemTime,
    last_seen: SystemTime,
    seen_streak: u32,
    missing_streak: u32,
    active: bool,
}

impl Entry {
    fn finding(&self) -> Finding {
        Finding {
            candidate: self.candidate.clone(),
            first_seen: self.first_seen,
            last_seen: self.last_seen,
        }
    }
}

/// Turns per-cycle candidates into findings with hysteresis.
#[derive(Clone, Debug)]
pub struct Tracker {
    confirm: u32,
    clear_after: u32,
    entries: BTreeMap<(Kind, String), Entry>,
}

impl Tracker {
    /// Fires after `confirm` consecutive sightings; resolves after `clear_after`
    /// consecutive cycles without one (both at least 1).
    pub fn new(confirm: u32, clear_after: u32) -> Self {
        Self {
            confirm: confirm.max(1),
            clear_after: clear_after.max(1),
            entries: BTreeMap::new(),
        }
    }

    /// Feeds one cycle's candidates; returns what fired and what resolved.
    pub fn update(&mut self, now: SystemTime, candidates: Vec<Candidate>) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for candidate in candidates {
            let key = (candidate.kind, candidate.subject.clone());
            if !seen.insert(key.clone()) {
                continue;
            }
            let entry = self.entries.entry(key).or_insert_with(|| Entry {
                candidate: candidate.clone(),
                first_seen: now,
                last_seen: now,
                seen_streak: 0,
                missing_streak: 0,
                active: false,
            });
            entry.candidate = candidate;
            entry.last_seen = now;
            entry.seen_streak += 1;
            entry.missing_streak = 0;
            if !entry.active && entry.seen_streak >= self.confirm {
                entry.active = true;
                changes.push(Change::Fired(entry.finding()));
            }
        }
        let clear_after = self.clear_after;
        self.entries.retain(|key, entry| {
            if seen.contains(key) {
                return true;
            }
            entry.seen_streak = 0;
            entry.missing_streak += 1;
            if !entry.active {
                // An unconfirmed sighting is forgotten at once.
                return false;
            }
            if entry.missing_streak >= clear_after {
                changes.push(Change::Resolved(entry.finding()));
                return false;
            }
            true
        });
        changes
    }

    /// The active findings, most severe first.
    pub fn active(&self) -> Vec<Finding> {
        let mut findings: Vec<Finding> = self
            .entries
            .values()
            .filter(|entry| entry.active)
            .map(Entry::finding)
            .collect();
        sort(&mut findings);
        findings
    }
}

/// Most severe first, then by kind and subject: the order of the API and `check`.
pub fn sort(findings: &mut [Finding]) {
    findings.sort_by(|a, b| {
        b.candidate
            .severity
            .cmp(&a.candidate.severity)
            .then(a.candidate.kind.cmp(&b.candidate.kind))
            .then(a.candidate.subject.cmp(&b.candidate.subject))
    });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn candidate(subject: &str) -> Candidate {
        Candidate::new(Kind::GhostGateway, subject, Severity::Critical)
    }

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn fires_after_confirmation_and_resolves_after_absence() {
        let mut tracker = Tracker::new(2, 3);
        assert!(tracker.update(at(1), vec![candidate("a")]).is_empty());
        let changes = tracker.update(at(2), vec![candidate("a")]);
        assert!(matches!(&changes[..], [Change::Fired(f)] if f.first_seen == at(1)));
        // Missing twice: still active (no flapping).
        assert!(tracker.update(at(3), vec![]).is_empty());
        assert!(tracker.update(at(4), vec![]).is_empty());
        assert_eq!(tracker.active().len(), 1);
        // Back before clearing: the streak of absence restarts, nothing fires again.
        assert!(tracker.update(at(5), vec![candidate("a")]).is_empty());
        for second in 6..8 {
            assert!(tracker.update(at(second), vec![]).is_empty());
        }
        let changes = tracker.update(at(8), vec![]);
        assert!(matches!(&changes[..], [Change::Resolved(f)] if f.last_seen == at(5)));
        assert!(tracker.active().is_empty());
    }

    #[test]
    fn a_single_sighting_never_fires() {
        let mut tracker = Tracker::new(2, 3);
        for second in 0..10 {
            let candidates = if second % 2 == 0 {
                vec![candidate("flap")]
            } else {
                vec![]
            };
            assert!(tracker.update(at(second), candidates).is_empty());
        }
    }

    #[test]
    fn json_names_kind_severity_and_times() {
        let mut tracker = Tracker::new(1, 1);
        tracker.update(
            at(0),
            vec![candidate("gateway 10.0.0.1 dev eth0").with("drops", 3)],
        );
        let json = serde_json::to_value(&tracker.active()[0]).unwrap();
        assert_eq!(json["kind"], "ghost_gateway");
        assert_eq!(json["severity"], "critical");
        assert_eq!(json["subject"], "gateway 10.0.0.1 dev eth0");
        assert_eq!(json["evidence"][0]["name"], "drops");
        assert_eq!(json["first_seen"], "1970-01-01T00:00:00.000Z");
    }
}
