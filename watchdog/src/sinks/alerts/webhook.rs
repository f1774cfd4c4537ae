//! The generic JSON webhook: schema `watchdog.alert/v1`, HMAC-SHA256 signed when a secret
//! is set (`X-Watchdog-Signature: sha256=<hex>`).

use hmac::{Hmac, Mac as _};
use serde::Serialize;
use sha2::Sha256;

use super::{Context, event::Alert};

/// The payload's schema name; fields may be added within v1, never removed or renamed.
pub const SCHEMA: &str = "watchdog.alert/v1";
/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-watchdog-signature";

#[derive(Serialize)]
struct Payload<'a> {
    schema: &'static str,
    node: &'a str,
    sent_at: String,
    /// True when every alert is a `watchdog alert test` alert.
    test: bool,
    alerts: Vec<Entry<'a>>,
}

/// An alert as the payload carries it: its fields, then `runbook_url`.
#[derive(Serialize)]
struct Entry<'a> {
    #[serde(flatten)]
    alert: &'a Alert,
    /// The runbook page for the alert (`alerts.runbook_base_url` + page).
    runbook_url: String,
}

/// The JSON body for a batch.
pub fn body(ctx: &Context<'_>, alerts: &[Alert]) -> Vec<u8> {
    let payload = Payload {
        schema: SCHEMA,
        node: ctx.node,
        sent_at: crate::findings::rfc3339::format(ctx.now),
        test: !alerts.is_empty() && alerts.iter().all(|a| a.state == super::event::State::Test),
        alerts: alerts
            .iter()
            .map(|alert| Entry {
                alert,
                runbook_url: ctx.runbook_url(alert),
            })
            .collect(),
    };
    serde_json::to_vec(&payload).expect("a payload serializes")
}

/// `sha256=<lowercase hex of HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(7 + 64);
    hex.push_str("sha256=");
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::alerts::tests::{context, finding};

    #[test]
    fn hmac_sha256_known_answer() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn payload_carries_schema_node_state_and_times() {
        let ctx = context();
        let fired = finding();
        let alerts = [
            Alert::firing(&fired, false),
            Alert::resolved(&fired, ctx.now),
        ];
        let json: serde_json::Value = serde_json::from_slice(&body(&ctx, &alerts)).unwrap();
        assert_eq!(json["schema"], "watchdog.alert/v1");
        assert_eq!(json["node"], "node-a");
        assert_eq!(json["test"], false);
        assert_eq!(json["sent_at"], "1970-01-01T00:01:40.000Z");
        let first = &json["alerts"][0];
        assert_eq!(first["state"], "firing");
        assert_eq!(first["kind"], "vtep_collapse");
        assert_eq!(first["subject"], "dev flannel.1");
        assert_eq!(first["severity"], "critical");
        assert_eq!(first["evidence"][0]["name"], "fdb_entries");
        assert_eq!(first["evidence"][0]["value"], "0");
        assert_eq!(first["first_seen"], "1970-01-01T00:00:10.000Z");
        assert_eq!(first["last_seen"], "1970-01-01T00:00:20.000Z");
        assert_eq!(first["repeat"], false);
        assert_eq!(
            first["runbook_url"],
            "https://example.com/runbooks/vtep_collapse.md"
        );
        assert!(first.get("resolved_at").is_none());
        assert!(first.get("action").is_none());
        assert_eq!(json["alerts"][1]["state"], "resolved");
        assert_eq!(json["alerts"][1]["resolved_at"], "1970-01-01T00:01:40.000Z");
    }

    #[test]
    fn test_alert_is_marked() {
        let ctx = context();
        let json: serde_json::Value =
            serde_json::from_slice(&body(&ctx, &[Alert::test("node-a", ctx.now)])).unwrap();
        assert_eq!(json["test"], true);
        assert_eq!(json["alerts"][0]["state"], "test");
        assert_eq!(json["alerts"][0]["kind"], "test");
        assert_eq!(
            json["alerts"][0]["subject"],
            "watchdog alert test from node-a"
        );
        assert_eq!(
            json["alerts"][0]["runbook_url"],
            "https://example.com/runbooks/watchdog.md#watchdogtest"
        );
    }

    #[test]
    fn repair_and_rollback_payloads() {
        use crate::findings::Kind;
        use crate::repair::event::{RepairEvent, RepairOutcome, RepairReport};
        let ctx = context();
        let report = RepairReport {
            kind: Kind::StaleFdb,
            subject: "fdb 02:fa:00:00:00:02 dev flannel.1 dst 192.168.77.99".into(),
            action: "bridge fdb replace 02:fa:00:00:00:02 dev flannel.1 dst 192.168.77.12".into(),
            outcome: RepairOutcome::Applied,
            evidence: vec![],
            at: ctx.now,
        };
        let rollback = RepairEvent::Rollback(RepairReport {
            outcome: RepairOutcome::Failed("EPERM".into()),
            ..report.clone()
        });
        let alerts = [
            Alert::from_event(&RepairEvent::Repair(report)),
            Alert::from_event(&rollback),
        ];
        let json: serde_json::Value = serde_json::from_slice(&body(&ctx, &alerts)).unwrap();
        let repair = &json["alerts"][0];
        assert_eq!(repair["state"], "repair");
        assert_eq!(repair["kind"], "stale_fdb");
        assert_eq!(repair["severity"], "info");
        assert_eq!(
            repair["action"],
            "bridge fdb replace 02:fa:00:00:00:02 dev flannel.1 dst 192.168.77.12"
        );
        assert_eq!(repair["outcome"], "applied");
        assert_eq!(
            repair["runbook_url"],
            "https://example.com/runbooks/stale_fdb.md#fix"
        );
        assert_eq!(json["alerts"][1]["state"], "rollback");
        assert_eq!(json["alerts"][1]["outcome"], "failed: EPERM");
    }
}
