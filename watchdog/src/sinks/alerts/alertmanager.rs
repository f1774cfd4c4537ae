//! Alertmanager API v2: `POST <url>/api/v2/alerts` with a JSON array of alerts.
//!
//! Labels (the alert's identity in Alertmanager): `alertname` (`Watchdog` + the kind in
//! CamelCase, e.g. `WatchdogVtepCollapse`), `node`, `kind`, `subject`, `severity`.
//! Annotations: `summary`, `evidence`, `runbook_url` (and `action`, `outcome` for repairs).
//! A firing alert's `endsAt` is now + 3 × `repeat_interval`: the watchdog re-posts it every
//! `repeat_interval` while the finding is active, so Alertmanager resolves it on its own
//! if the watchdog dies. A resolved alert's `endsAt` is when it cleared.

use std::{collections::BTreeMap, time::Duration};

use serde::Serialize;

use crate::findings::rfc3339;

use super::{
    Context,
    event::{Alert, State},
};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PostableAlert {
    labels: BTreeMap<&'static str, String>,
    annotations: BTreeMap<&'static str, String>,
    starts_at: String,
    ends_at: String,
    #[serde(rename = "generatorURL")]
    generator_url: String,
}

/// `Watchdog` + CamelCase kind: `vtep_collapse` → `WatchdogVtepCollapse`.
pub fn alertname(alert: &Alert) -> String {
    let mut name = String::from("Watchdog");
    let base = match alert.state {
        State::Repair => "repair",
        State::Rollback => "rollback",
        _ => &alert.kind,
    };
    for word in base.split('_') {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            name.extend(first.to_uppercase());
            name.push_str(chars.as_str());
        }
    }
    name
}

/// The JSON array for a batch.
pub fn body(ctx: &Context<'_>, alerts: &[Alert]) -> Vec<u8> {
    let ttl = ctx.repeat_interval * 3;
    let postable: Vec<PostableAlert> = alerts
        .iter()
        .map(|alert| {
            let mut labels = BTreeMap::new();
            labels.insert("alertname", alertname(alert));
            labels.insert("node", ctx.node.to_owned());
            labels.insert("kind", alert.kind.clone());
            labels.insert("subject", alert.subject.clone());
            labels.insert("severity", alert.severity.clone());
            let mut annotations = BTreeMap::new();
            let summary = match alert.state {
                State::Test => format!(
                    "TEST alert from watchdog on {}: checking the wiring, not a problem",
                    ctx.node
                ),
                State::Repair | State::Rollback => format!(
                    "{} on {}: {} ({})",
                    alert.state.as_str(),
                    ctx.node,
                    alert.subject,
                    alert.outcome.as_deref().unwrap_or_default()
                ),
                _ => format!("{} on {}: {}", alert.kind, ctx.node, alert.subject),
            };
            annotations.insert("summary", summary);
            annotations.insert("evidence", alert.evidence_text());
            annotations.insert("runbook_url", ctx.runbook_url(alert));
            if let Some(action) = &alert.action {
                annotations.insert("action", action.clone());
            }
            if let Some(outcome) = &alert.outcome {
                annotations.insert("outcome", outcome.clone());
            }
            let ends_at = match alert.state {
                State::Resolved => alert
                    .resolved_at
                    .unwrap_or(ctx.now)
                    .max(alert.first_seen + Duration::from_millis(1)),
                State::Test => ctx.now + Duration::from_secs(300),
                _ => ctx.now + ttl,
            };
            PostableAlert {
                labels,
                annotations,
                starts_at: rfc3339::format(alert.first_seen),
                ends_at: rfc3339::format(ends_at),
                generator_url: ctx.generator_url.to_owned(),
            }
        })
        .collect();
    serde_json::to_vec(&postable).expect("alerts serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::alerts::tests::{context, finding};

    #[test]
    fn labels_annotations_times_and_generator_url() {
        let ctx = context();
        let fired = finding();
        let alerts = [
            Alert::firing(&fired, false),
            Alert::resolved(&fired, ctx.now),
        ];
        let json: serde_json::Value = serde_json::from_slice(&body(&ctx, &alerts)).unwrap();
        let firing = &json[0];
        assert_eq!(
            firing["labels"],
            serde_json::json!({
                "alertname": "WatchdogVtepCollapse",
                "node": "node-a",
                "kind": "vtep_collapse",
                "subject": "dev flannel.1",
                "severity": "critical",
            })
        );
        assert_eq!(
            firing["annotations"]["summary"],
            "vtep_collapse on node-a: dev flannel.1"
        );
        assert_eq!(
            firing["annotations"]["evidence"],
            "fdb_entries=0; remote_routes=2"
        );
        assert_eq!(
            firing["annotations"]["runbook_url"],
            "https://example.com/runbooks/vtep_collapse.md"
        );
        assert_eq!(firing["startsAt"], "1970-01-01T00:00:10.000Z");
        // now (100s) + 3 × repeat_interval (60s).
        assert_eq!(firing["endsAt"], "1970-01-01T00:04:40.000Z");
        assert_eq!(
            firing["generatorURL"],
            "http://127.0.0.1:9477/api/v1/findings"
        );
        // Same labels: Alertmanager sees the same alert, now resolved.
        assert_eq!(json[1]["labels"], firing["labels"]);
        assert_eq!(json[1]["endsAt"], "1970-01-01T00:01:40.000Z");
    }

    #[test]
    fn test_alert_has_its_own_name() {
        let ctx = context();
        let json: serde_json::Value =
            serde_json::from_slice(&body(&ctx, &[Alert::test("node-a", ctx.now)])).unwrap();
        assert_eq!(json[0]["labels"]["alertname"], "WatchdogTest");
        assert_eq!(json[0]["labels"]["severity"], "info");
        assert!(
            json[0]["annotations"]["summary"]
                .as_str()
                .unwrap()
                .starts_with("TEST")
        );
    }
}
