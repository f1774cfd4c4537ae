//! `watchdog_findings` and `watchdog_ghost_route_info`: the active findings.

use std::collections::BTreeMap;

use super::{Labels, Metrics};
use crate::findings::{Finding, Kind, Severity};

impl Metrics {
    /// Publishes the active findings. A finding about another Node (its `node` evidence
    /// names one that is not `own`) is counted in a series with that Node as `peer_node`
    /// (at most one per Node, kind and severity); the others in the series without it,
    /// which exist for every kind and severity (zeros included).
    pub fn set_findings(&self, active: &[Finding], own: &str) {
        let mut counts: BTreeMap<Labels, i64> = BTreeMap::new();
        for kind in Kind::ALL {
            for severity in [Severity::Warning, Severity::Critical] {
                counts.insert(finding_labels(kind, severity), 0);
            }
        }
        for finding in active {
            let mut labels = finding_labels(finding.candidate.kind, finding.candidate.severity);
            if let Some(peer) = peer_node(finding, own) {
                labels.push(("peer_node", peer.to_owned()));
            }
            *counts.entry(labels).or_default() += 1;
        }
        // Series about a peer Node that has no active finding any more go.
        let mut previous = self.finding_peers.lock().expect("finding peers lock");
        for labels in previous.iter() {
            if !counts.contains_key(labels) {
                self.findings.remove(labels);
            }
        }
        *previous = counts
            .keys()
            .filter(|labels| labels.len() > 2)
            .cloned()
            .collect();
        for (labels, count) in &counts {
            self.findings.get_or_create(labels).set(*count);
        }
        self.ghost_routes.clear();
        for finding in active {
            for route in &finding.candidate.routes {
                let labels = vec![
                    ("kind", finding.candidate.kind.as_str().to_owned()),
                    ("prefix", route.prefix.clone()),
                    ("gateway", route.gateway.clone().unwrap_or_default()),
                    ("dev", route.dev.clone().unwrap_or_default()),
                    ("table", route.table.clone()),
                ];
                self.ghost_routes.get_or_create(&labels).set(1);
            }
        }
    }
}

/// The peer Node a finding is about: the first Node of its `node` evidence that is not
/// `own`.
fn peer_node<'a>(finding: &'a Finding, own: &str) -> Option<&'a str> {
    finding
        .candidate
        .evidence("node")?
        .split(',')
        .map(str::trim)
        .find(|node| !node.is_empty() && *node != own && *node != "none")
}

/// The labels of a `watchdog_findings` series.
pub(super) fn finding_labels(kind: Kind, severity: Severity) -> Labels {
    vec![
        ("kind", kind.as_str().to_owned()),
        ("severity", severity.as_str().to_owned()),
    ]
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::findings::Candidate;

    fn finding(kind: Kind, subject: &str, node: Option<&str>) -> Finding {
        let mut candidate = Candidate::new(kind, subject, Severity::Critical);
        if let Some(node) = node {
            candidate = candidate.with("node", node);
        }
        Finding {
            candidate,
            first_seen: SystemTime::now(),
            last_seen: SystemTime::now(),
        }
    }

    #[test]
    fn findings_about_a_peer_node_carry_it() {
        let metrics = Metrics::new();
        metrics.set_findings(
            &[
                finding(Kind::StaleFdb, "fdb a", Some("qx-b")),
                finding(Kind::OverlayDrift, "fdb b", Some("qx-a,qx-b")),
                finding(Kind::OverlayDrift, "dev", Some("qx-a")),
                finding(Kind::GhostGateway, "route", None),
            ],
            "qx-a",
        );
        let text = metrics.encode();
        for line in [
            "watchdog_findings{kind=\"stale_fdb\",severity=\"critical\",peer_node=\"qx-b\"} 1",
            "watchdog_findings{kind=\"stale_fdb\",severity=\"critical\"} 0",
            "watchdog_findings{kind=\"overlay_drift\",severity=\"critical\",peer_node=\"qx-b\"} 1",
            "watchdog_findings{kind=\"overlay_drift\",severity=\"critical\"} 1",
            "watchdog_findings{kind=\"ghost_gateway\",severity=\"critical\"} 1",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        metrics.set_findings(&[], "qx-a");
        let text = metrics.encode();
        assert!(!text.contains("peer_node=\""), "{text}");
        assert!(
            text.contains("watchdog_findings{kind=\"stale_fdb\",severity=\"critical\"} 0"),
            "{text}"
        );
    }
}
