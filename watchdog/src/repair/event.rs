//! What the repair executor reports: one change (or its rollback) and how it went. Sinks
//! (alerts) read these; repair never imports a sink.

use std::{
    sync::{Arc, RwLock},
    time::SystemTime,
};

use crate::findings::{Evidence, Kind};

/// How a repair (or rollback) went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RepairOutcome {
    /// The change was made.
    Applied,
    /// Dry run: the change was only planned.
    DryRun,
    /// The change failed, and why.
    Failed(String),
}

impl RepairOutcome {
    /// `applied`, `dry_run` or `failed: <why>`.
    pub fn as_string(&self) -> String {
        match self {
            RepairOutcome::Applied => "applied".into(),
            RepairOutcome::DryRun => "dry_run".into(),
            RepairOutcome::Failed(why) => format!("failed: {why}"),
        }
    }
}

/// What the repair executor reports about one change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairReport {
    /// The finding's kind the change addresses.
    pub kind: Kind,
    /// The finding's subject.
    pub subject: String,
    /// The change, e.g. `bridge fdb replace 02:fa:00:00:00:02 dev flannel.1 dst 192.168.77.12`.
    pub action: String,
    /// How it went.
    pub outcome: RepairOutcome,
    /// Why (the finding's evidence, or the reason for a rollback).
    pub evidence: Vec<Evidence>,
    /// When.
    pub at: SystemTime,
}

/// A repair event, reported to the sinks outside the findings lifecycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RepairEvent {
    /// A repair was made (or planned, in dry-run).
    Repair(RepairReport),
    /// A repair was undone.
    Rollback(RepairReport),
}

/// The journal's most recent entries (changes with their verdicts, newest last) as the
/// daemon last read them, for `GET /api/v1/repairs`. Written by the repair task, read by
/// the HTTP server.
#[derive(Clone, Debug, Default)]
pub struct RecentRepairs(Arc<RwLock<Vec<serde_json::Value>>>);

impl RecentRepairs {
    /// Replaces the entries.
    pub fn set(&self, entries: Vec<serde_json::Value>) {
        *self.0.write().expect("recent repairs lock") = entries;
    }

    /// A copy of the entries.
    pub fn get(&self) -> Vec<serde_json::Value> {
        self.0.read().expect("recent repairs lock").clone()
    }
}
