//! Slack-compatible incoming webhook: `{"text": "…"}`, which Slack, Mattermost and
//! Discord's `/slack` endpoint all accept.

use super::{
    Context,
    event::{Alert, State},
};

/// `text` safe in a Slack message: `&`, `<` and `>` escaped as Slack asks (no
/// `<!channel>`, no `<url|link>`), a backtick (which would end the code span the value
/// sits in) replaced by `'`. The values were cleaned of control characters when read.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '`' => out.push('\''),
            c => out.push(c),
        }
    }
    out
}

/// The message text for a batch: one line per alert, its evidence and runbook indented
/// under it. Every value that can come from outside (subjects, evidence, commands, the
/// node's name) is escaped ([`escape`]) and in a code span, where Slack's markdown does
/// not apply.
pub fn text(ctx: &Context<'_>, alerts: &[Alert]) -> String {
    let node = escape(ctx.node);
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
                "{head} watchdog alert test from {node}: checking the wiring, not a problem"
            )),
            State::Repair | State::Rollback => lines.push(format!(
                "{head} {} on {node}: `{}` ({}): `{}`",
                escape(&alert.kind),
                escape(&alert.subject),
                escape(alert.outcome.as_deref().unwrap_or_default()),
                escape(alert.action.as_deref().unwrap_or_default())
            )),
            _ => lines.push(format!(
                "{head} {} {} on {node}: `{}`",
                escape(&alert.severity),
                escape(&alert.kind),
                escape(&alert.subject)
            )),
        }
        if alert.state != State::Test && !alert.evidence.is_empty() {
            lines.push(format!(
                "    evidence: `{}`",
                escape(&alert.evidence_text())
            ));
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
    use crate::sinks::alerts::tests::{context, finding, named};

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
             evidence: `fdb_entries=0; remote_routes=2`\n    \
             runbook: https://example.com/runbooks/vtep_collapse.md\n\
             [RESOLVED] critical vtep_collapse on node-a: `dev flannel.1`\n    \
             evidence: `fdb_entries=0; remote_routes=2`\n    \
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

    #[test]
    fn values_cannot_mention_link_or_leave_their_code_span() {
        let ctx = context();
        let fired = named(
            "node n annotation public-ip-overwrite=<!channel> <https://x.example|click> `*bold*`",
        );
        let text = text(&ctx, &[Alert::firing(&fired, false)]);
        let first = text.lines().next().unwrap();
        assert_eq!(
            first,
            "[FIRING] critical vtep_collapse on node-a: `node n annotation \
             public-ip-overwrite=&lt;!channel&gt; &lt;https://x.example|click&gt; '*bold*'`"
        );
        // One code span, opened and closed: nothing of the value outside it.
        assert_eq!(first.matches('`').count(), 2, "{first}");
    }
}
