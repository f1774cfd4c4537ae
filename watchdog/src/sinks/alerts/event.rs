//! What the sinks send: [`Alert`]s, made from findings (firing, resolved), repair events
//! (repair, rollback) and test requests.

use std::time::SystemTime;

use serde::Serialize;

use crate::{
    findings::{Evidence, Finding, rfc3339},
    repair::event::{RepairEvent, RepairReport},
};

/// The state of an alert (`state` in the webhook payload, a metrics label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// A finding is active (first time, or repeated every `repeat_interval`).
    Firing,
    /// A finding cleared.
    Resolved,
    /// `watchdog alert test`: not a real problem.
    Test,
    /// The repair executor changed something to fix a finding.
    Repair,
    /// The repair executor undid a repair.
    Rollback,
}

impl State {
    /// Every state, for exporting zeros.
    pub const ALL: [State; 5] = [
        State::Firing,
        State::Resolved,
        State::Test,
        State::Repair,
        State::Rollback,
    ];

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Firing => "firing",
            State::Resolved => "resolved",
            State::Test => "test",
            State::Repair => "repair",
            State::Rollback => "rollback",
        }
    }
}

/// One alert, as the webhook payload's `alerts[]` entries carry it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Alert {
    /// firing, resolved, test, repair or rollback.
    pub state: State,
    /// The finding's kind (`vtep_collapse`, …), or `test`.
    pub kind: String,
    /// The thing to fix; with `kind`, the alert's identity.
    pub subject: String,
    /// `warning`, `critical`, or `info` (test, repair, rollback).
    pub severity: String,
    /// The kernel's evidence, ordered.
    pub evidence: Vec<Evidence>,
    /// When the finding was first seen (the event's time for repair/rollback/test).
    #[serde(serialize_with = "rfc3339::serialize")]
    pub first_seen: SystemTime,
    /// When it was last seen.
    #[serde(serialize_with = "rfc3339::serialize")]
    pub last_seen: SystemTime,
    /// When it resolved (`resolved` only).
    #[serde(
        serialize_with = "rfc3339::serialize_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub resolved_at: Option<SystemTime>,
    /// True when re-sent because the finding is still firing after `repeat_interval`.
    pub repeat: bool,
    /// What the repair executor did (`repair`/`rollback` only), e.g. `bridge fdb replace …`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// How it went (`repair`/`rollback` only): `applied`, `dry_run` or `failed: <why>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

impl Alert {
    /// The alert the sinks send for a repair event.
    pub fn from_event(event: &RepairEvent) -> Self {
        match event {
            RepairEvent::Repair(report) => Self::from_repair(State::Repair, report),
            RepairEvent::Rollback(report) => Self::from_repair(State::Rollback, report),
        }
    }

    /// A finding that fired (`repeat`: re-sent because still active).
    pub fn firing(finding: &Finding, repeat: bool) -> Self {
        Self::from_finding(State::Firing, finding, repeat, None)
    }

    /// A finding that cleared at `at`.
    pub fn resolved(finding: &Finding, at: SystemTime) -> Self {
        Self::from_finding(State::Resolved, finding, false, Some(at))
    }

    fn from_finding(
        state: State,
        finding: &Finding,
        repeat: bool,
        resolved_at: Option<SystemTime>,
    ) -> Self {
        Self {
            state,
            kind: finding.candidate.kind.as_str().to_owned(),
            subject: finding.candidate.subject.clone(),
            severity: finding.candidate.severity.as_str().to_owned(),
            evidence: finding.candidate.evidence.clone(),
            first_seen: finding.first_seen,
            last_seen: finding.last_seen,
            resolved_at,
            repeat,
            action: None,
            outcome: None,
        }
    }

    /// The clearly marked test alert of `watchdog alert test`.
    pub fn test(node: &str, at: SystemTime) -> Self {
        Self {
            state: State::Test,
            kind: "test".into(),
            subject: format!("watchdog alert test from {node}"),
            severity: "info".into(),
            evidence: vec![Evidence {
                name: "note".into(),
                value: "sent by `watchdog alert test` to check the wiring; not a problem".into(),
            }],
            first_seen: at,
            last_seen: at,
            resolved_at: None,
            repeat: false,
            action: None,
            outcome: None,
        }
    }

    /// A repair report.
    pub fn from_repair(state: State, report: &RepairReport) -> Self {
        Self {
            state,
            kind: report.kind.as_str().to_owned(),
            subject: report.subject.clone(),
            severity: "info".into(),
            evidence: report.evidence.clone(),
            first_seen: report.at,
            last_seen: report.at,
            resolved_at: None,
            repeat: false,
            action: Some(report.action.clone()),
            outcome: Some(report.outcome.as_string()),
        }
    }

    /// `name=value; …`.
    pub fn evidence_text(&self) -> String {
        self.evidence
            .iter()
            .map(|e| format!("{}={}", e.name, e.value))
            .collect::<Vec<_>>()
            .join("; ")
    }
}
