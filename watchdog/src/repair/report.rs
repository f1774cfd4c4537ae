//! How each operation went ([`Done`], [`Report`]), and what the sinks are told about it.

use std::time::SystemTime;

use super::{
    event::{RepairEvent, RepairOutcome, RepairReport},
    op::Op,
};
use crate::findings::Evidence;

/// How one operation went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Done {
    /// Dry run: planned only.
    DryRun,
    /// Applied and verified.
    Verified,
    /// Applied, then undone to the exact before-state: why.
    RolledBack(String),
    /// Not applied: why (the kernel changed since the plan, an earlier operation of
    /// the unit failed, the kernel refused it).
    NotApplied(String),
    /// Applied and could not be undone (or the undo could not be verified): why. The
    /// object needs a person.
    Failed(String),
    /// Applied, then something else wrote the object again while it was verified: left
    /// as the other writer made it (never fought), why.
    Conflict(String),
}

impl Done {
    /// The outcome as `watchdog_repairs_total` will name it: `dry_run`, `applied`,
    /// `rolled_back` or `failed`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Done::DryRun => "dry_run",
            Done::Verified => "applied",
            Done::RolledBack(_) => "rolled_back",
            Done::NotApplied(_) | Done::Failed(_) | Done::Conflict(_) => "failed",
        }
    }
}

/// One operation and how it went.
#[derive(Clone, Debug)]
pub struct Report {
    /// The operation.
    pub op: Op,
    /// Its journal id (none in a dry run or when not journalled).
    pub id: Option<u64>,
    /// How it went.
    pub done: Done,
}

impl Report {
    /// The event the sinks are told: a verified change is a `repair` (applied), a dry run
    /// a `repair` (dry_run), a rolled-back change a `rollback` with the reason, anything
    /// else a `repair` that failed.
    pub fn event(&self, at: SystemTime) -> RepairEvent {
        let mut evidence = vec![
            Evidence {
                name: "why".into(),
                value: self.op.why.clone(),
            },
            Evidence {
                name: "undo".into(),
                value: self.op.inverse().command(),
            },
        ];
        if let Some(id) = self.id {
            evidence.push(Evidence {
                name: "journal_id".into(),
                value: id.to_string(),
            });
        }
        let report = |outcome, evidence| RepairReport {
            kind: self.op.finding_kind,
            subject: self.op.finding_subject.clone(),
            action: self.op.command(),
            outcome,
            evidence,
            at,
        };
        match &self.done {
            Done::DryRun => RepairEvent::Repair(report(RepairOutcome::DryRun, evidence)),
            Done::Verified => RepairEvent::Repair(report(RepairOutcome::Applied, evidence)),
            Done::RolledBack(why) => {
                evidence.push(Evidence {
                    name: "rollback_reason".into(),
                    value: why.clone(),
                });
                RepairEvent::Rollback(report(RepairOutcome::Applied, evidence))
            }
            Done::NotApplied(why) | Done::Failed(why) | Done::Conflict(why) => {
                RepairEvent::Repair(report(RepairOutcome::Failed(why.clone()), evidence))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{findings::Kind, repair::object::Object};

    fn fdb(dst: &str) -> Object {
        Object::test_fdb("02:fa:00:00:00:01", dst)
    }

    fn report(done: Done) -> Report {
        Report {
            op: Op::between(
                Some(fdb("192.168.77.99")),
                Some(fdb("192.168.77.11")),
                "b",
                (
                    Kind::OverlayDrift,
                    "fdb 02:fa:00:00:00:01 dev flannel.1 dst 192.168.77.99",
                ),
                "wrong dst".into(),
            ),
            id: Some(7),
            done,
        }
    }

    #[test]
    fn reports_become_repair_and_rollback_events() {
        let at = SystemTime::UNIX_EPOCH;
        let RepairEvent::Repair(r) = report(Done::Verified).event(at) else {
            panic!("a verified change is a repair")
        };
        assert_eq!(r.outcome, RepairOutcome::Applied);
        assert_eq!(
            r.action,
            "bridge fdb replace 02:fa:00:00:00:01 dev flannel.1 dst 192.168.77.11 self permanent"
        );
        assert!(
            r.evidence
                .iter()
                .any(|e| e.name == "undo" && e.value.ends_with("dst 192.168.77.99 self permanent"))
        );
        assert!(
            r.evidence
                .iter()
                .any(|e| e.name == "journal_id" && e.value == "7")
        );
        let RepairEvent::Repair(r) = report(Done::DryRun).event(at) else {
            panic!("a dry run is a repair")
        };
        assert_eq!(r.outcome, RepairOutcome::DryRun);
        let RepairEvent::Rollback(r) = report(Done::RolledBack("no answer".into())).event(at)
        else {
            panic!("a rolled-back change is a rollback")
        };
        assert!(
            r.evidence
                .iter()
                .any(|e| e.name == "rollback_reason" && e.value == "no answer")
        );
        let RepairEvent::Repair(r) = report(Done::Failed("EPERM".into())).event(at) else {
            panic!("a failed change is a repair")
        };
        assert_eq!(r.outcome, RepairOutcome::Failed("EPERM".into()));
        assert_eq!(Done::RolledBack(String::new()).as_str(), "rolled_back");
    }
}
