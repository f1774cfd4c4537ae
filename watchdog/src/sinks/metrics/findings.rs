//! `watchdog_findings` and `watchdog_ghost_route_info`: the active findings.

use super::{Labels, Metrics};
use crate::findings::{Finding, Kind, Severity};

impl Metrics {
    /// Publishes the active findings.
    pub fn set_findings(&self, active: &[Finding]) {
        for kind in Kind::ALL {
            for severity in [Severity::Warning, Severity::Critical] {
                let count = active
                    .iter()
                    .filter(|f| f.candidate.kind == kind && f.candidate.severity == severity)
                    .count();
                self.findings
                    .get_or_create(&finding_labels(kind, severity))
                    .set(count as i64);
            }
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

/// The labels of a `watchdog_findings` series.
pub(super) fn finding_labels(kind: Kind, severity: Severity) -> Labels {
    vec![
        ("kind", kind.as_str().to_owned()),
        ("severity", severity.as_str().to_owned()),
    ]
}
