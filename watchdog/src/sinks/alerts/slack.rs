//! Slack-compatible incoming webhook: `{"text": "…"}`, which Slack, Mattermost and
//! Discord's `/slack` endpoint all accept.

use super::{
    Context,
    event::{Alert, State},
};

/// The message text for a batch: one line per alert, its evidence and runbook indented
/// under it.
pub fn text(ctx: &Context<'_>, alerts: &[Alert]) -> String {
    let mut lines = Vec::new();
    for alert in alerts {
        let head = match alert.state {
            State::Firing if alert.repeat => "[FIRING, still]",
            State::Firing => "[FIRING]",
            State::Resolved => "[RESOLVED]",
            State::Test => "[TEST]",
            State::Repair => "[REPAIR]",
            State::Rollback => "[ROLLBACK]",
        };
        match alert.state {
            State::Test => lines.push(format!(
                "{head} watchdog alert test from {}: checking the wiring, not a problem",
                ctx.node
            )),
            State::Repair | State::Rollback => lines.push(format!(
                "{head} {} on {}: {} ({}): `{}`",
                alert.kind,
                ctx.node,
                alert.subject,
                alert.outcome.as_deref().unwrap_or_default(),
                alert.action.as_deref().unwrap_or_default()
            )),
            _ => lines.push(format!(
                "{head} {} {} on {}: `{}`",
                alert.severity, alert.kind, ctx.node, alert.subject
            )),
        }
        if alert.state != State::Test && !alert.evidence.is_empty() {
            lines.push(format!("    evidence: {}", alert.evidence_text()));
        }
        lines.push(format!("    runbook: {}", ctx.runbook_url(alert)));
    }
    lines.join("\n")
}

/// The JSON body for a batch.
pub fn body(ctx: &Context<'_>, alerts: &[Alert]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "text": text(ctx, alerts) }))
        .expect("a message serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::alerts::tests::{context, finding};

    #[test]
    fn text_message() {
        let ctx = context();
        let fired = finding();
        let json: serde_json::Value = serde_json::from_slice(&body(
            &ctx,
            &[
                Alert::firing(&fired, false),
                Alert::resolved(&fired, ctx.now),
            ],
        ))
        .unwrap();
        assert_eq!(
            json["text"],
            "[FIRING] critical vtep_collapse on node-a: `dev flannel.1`\n    \
             evidence: fdb_entries=0; remote_routes=2\n    \
             runbook: https://example.com/runbooks/vtep_collapse.md\n\
             [RESOLVED] critical vtep_collapse on node-a: `dev flannel.1`\n    \
             evidence: fdb_entries=0; remote_routes=2\n    \
             runbook: https://example.com/runbooks/vtep_collapse.md"
        );
        let test = text(&ctx, &[Alert::test("node-a", ctx.now)]);
        assert!(
            test.starts_with("[TEST] watchdog alert test from node-a"),
            "{test}"
        );
        assert!(
            test.ends_with("\n    runbook: https://example.com/runbooks/watchdog.md#watchdogtest"),
            "{test}"
        );
    }
}
