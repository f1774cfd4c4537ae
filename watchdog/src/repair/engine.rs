//! The daemon's repair, cycle by cycle (plain data, no I/O): each detection cycle the
//! planner runs on the active findings, the mirror and the desired state; a dry run's
//! new operations are reported, an apply's plan is handed to the executor (which runs in
//! its own task: the cycle never waits for a verification window) and its reports come
//! back through [`Engine::finished`]. The engine keeps each object's history (changes in
//! the last hour, rollbacks in a row, conflicts) and raises `repair_refused` and
//! `repair_conflict` findings as candidates for the next cycle.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant, SystemTime},
};

use super::{
    event::RepairEvent,
    history::History,
    journal::{Origin, Outcome as Verdict, Record},
    op::Op,
    plan::{Evidence, Inputs, Outcome, Plan, plan},
    report::{Done, Report},
};
use crate::{
    config::repair::{Mode, RepairConfig},
    findings::{Candidate, Kind, Severity},
    model::{desired::State, net::Snapshot},
    overlay::Observed,
};

/// What one cycle of repair asks the daemon to do.
#[derive(Debug, Default)]
pub struct Step {
    /// Events for the alert sinks.
    pub events: Vec<RepairEvent>,
    /// `watchdog_repairs_total` increments: (object kind, outcome).
    pub counts: Vec<(&'static str, &'static str)>,
    /// Operations for the executor (apply only; empty while one is running).
    pub execute: Vec<Op>,
    /// Lines to log (at warn).
    pub log: Vec<String>,
}

/// The repair state the daemon carries from cycle to cycle.
#[derive(Debug)]
pub struct Engine {
    settings: RepairConfig,
    history: History,
    /// The executor is working on a plan: no other plan meanwhile.
    running: bool,
    /// The operations of the last dry-run plan (by command): each is reported once.
    reported: BTreeSet<String>,
    /// The refused plan's reason, while it stays refused.
    refused: Option<Candidate>,
    /// Why repair stopped, once it has: no plans from then on.
    stopped: Option<String>,
}

impl Engine {
    /// An engine with `settings`.
    pub fn new(settings: RepairConfig) -> Self {
        Self {
            settings,
            history: History::default(),
            running: false,
            reported: BTreeSet::new(),
            refused: None,
            stopped: None,
        }
    }

    /// Repair cannot go on (the executor stopped; interrupted changes this mode does not
    /// settle): nothing is planned from now on, and a `repair_refused` finding says
    /// `why` until the daemon restarts.
    pub fn stop(&mut self, why: String) {
        self.running = false;
        self.history.clear_busy();
        self.stopped = Some(why);
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.settings.mode
    }

    /// The object history, seeded from the journal's last hour: `max_per_hour` and the
    /// backoff hold across restarts. `now`/`wall` are the same moment in both clocks.
    pub fn seed(&mut self, records: &[Record], now: Instant, wall: SystemTime) {
        for record in records {
            let Ok(at) = humantime::parse_rfc3339(&record.change.at) else {
                continue;
            };
            let Ok(ago) = wall.duration_since(at) else {
                continue;
            };
            if ago >= Duration::from_secs(3600) {
                continue;
            }
            let Some(then) = now.checked_sub(ago) else {
                continue;
            };
            if record.change.origin == Origin::Repair {
                self.history.record_change(&record.change.key, then);
                match record.outcome() {
                    Some(Verdict::RolledBack | Verdict::Failed) => {
                        self.history.record_failure(&record.change.key)
                    }
                    Some(Verdict::Verified) => {
                        self.history.record_success(&record.change.key, then)
                    }
                    Some(Verdict::Conflict) => self.history.record_conflict(
                        &record.change.key,
                        "another writer changed it while it was verified".into(),
                    ),
                    _ => {}
                }
            }
        }
    }

    /// One cycle: plans on the drifts of `overlay` (the cycle's comparison of `net` with
    /// `desired`) that lasted `desired.grace` (nothing while the desired state is unknown,
    /// nothing at all in `off`).
    pub fn cycle(
        &mut self,
        net: &Snapshot,
        desired: &State,
        overlay: Option<&Observed>,
        now: Instant,
    ) -> Step {
        let mut step = Step::default();
        if self.settings.mode == Mode::Off || self.stopped.is_some() {
            return step;
        }
        self.history.prune(now);
        let outcome = plan(&Inputs {
            net,
            desired,
            overlay,
            settings: &self.settings,
            history: &self.history,
            evidence: &Evidence::default(),
            now,
        });
        let plan = match outcome {
            Outcome::NoPlan { reason } => {
                // Unknown, stale or empty desired state: no plan, nothing refused.
                tracing::debug!("repair: no plan: {reason}");
                self.refused = None;
                self.reported.clear();
                return step;
            }
            Outcome::Planned(plan) => plan,
        };
        self.history.observe_deletable(&plan.deletable, now);
        self.forget_settled_conflicts(&plan);
        if plan.refused.is_some() {
            let candidate = plan.refused_candidate();
            if self.refused.is_none() {
                let why = plan.refused.clone().unwrap_or_default();
                step.log
                    .push(format!("repair: plan refused by its guards: {why}"));
                for op in &plan.ops {
                    step.counts.push((op.object_kind().as_str(), "refused"));
                }
            }
            self.refused = candidate;
            self.reported.clear();
            return step;
        }
        self.refused = None;
        match self.settings.mode {
            Mode::Off => {}
            Mode::DryRun => {
                let commands: BTreeSet<String> = plan.ops.iter().map(Op::command).collect();
                let at = SystemTime::now();
                for op in &plan.ops {
                    if self.reported.contains(&op.command()) {
                        continue;
                    }
                    step.log.push(format!(
                        "repair (dry run): would run `{}` (undo: `{}`): {}",
                        op.command(),
                        op.inverse().command(),
                        op.why
                    ));
                    step.counts.push((op.object_kind().as_str(), "dry_run"));
                    step.events.push(
                        Report {
                            op: op.clone(),
                            id: None,
                            done: Done::DryRun,
                        }
                        .event(at),
                    );
                }
                self.reported = commands;
            }
            Mode::Apply => {
                if self.running || plan.ops.is_empty() {
                    return step;
                }
                // Wrong again within the verify window after its repair was verified:
                // another writer put it back. Never fight it.
                let window = self.settings.verify_window;
                let (written_back, ops): (Vec<Op>, Vec<Op>) = plan
                    .ops
                    .into_iter()
                    .partition(|op| self.history.verified_within(&op.key, now, window));
                let at = SystemTime::now();
                for op in written_back {
                    let why = format!(
                        "written back within repair.verify_window ({}s) after its repair was \
                         verified (another writer: Flannel, a person?): left alone",
                        window.as_secs()
                    );
                    step.log
                        .push(format!("repair: conflict on {}: {why}", op.key));
                    step.counts.push((op.object_kind().as_str(), "failed"));
                    self.history.record_conflict(&op.key, why.clone());
                    step.events.push(
                        Report {
                            op,
                            id: None,
                            done: Done::Conflict(why),
                        }
                        .event(at),
                    );
                }
                if ops.is_empty() {
                    return step;
                }
                for op in &ops {
                    self.history.set_busy(&op.key, true);
                    step.log.push(format!(
                        "repair: applying `{}` (undo: `{}`): {}",
                        op.command(),
                        op.inverse().command(),
                        op.why
                    ));
                }
                self.running = true;
                step.execute = ops;
            }
        }
        step
    }

    /// The executor's reports on the plan it was given (`from_plan`) or on interrupted
    /// changes found at start: the history, the events, the counts.
    pub fn finished(&mut self, reports: &[Report], from_plan: bool, now: Instant) -> Step {
        if from_plan {
            self.running = false;
        }
        let mut step = Step::default();
        let at = SystemTime::now();
        for report in reports {
            let key = &report.op.key;
            self.history.set_busy(key, false);
            match &report.done {
                Done::DryRun => {}
                Done::Verified => {
                    self.history.record_change(key, now);
                    self.history.record_success(key, now);
                }
                Done::RolledBack(_) | Done::Failed(_) => {
                    self.history.record_change(key, now);
                    self.history.record_failure(key);
                }
                Done::NotApplied(_) => {
                    // Nothing changed, but a cause that persists would fail the same
                    // way every cycle: it counts against max_per_hour, so it is
                    // reported a bounded number of times. No backoff: the usual cause
                    // (the kernel moved on since the plan) is gone by the next cycle.
                    self.history.record_change(key, now);
                }
                Done::Conflict(why) => {
                    self.history.record_change(key, now);
                    self.history.record_conflict(key, why.clone());
                }
            }
            let detail = match &report.done {
                Done::Verified | Done::DryRun => String::new(),
                Done::RolledBack(why)
                | Done::Failed(why)
                | Done::NotApplied(why)
                | Done::Conflict(why) => format!(": {why}"),
            };
            step.log.push(format!(
                "repair: {} `{}`{detail}",
                report.done.as_str(),
                report.op.command()
            ));
            step.counts
                .push((report.op.object_kind().as_str(), report.done.as_str()));
            step.events.push(report.event(at));
        }
        step
    }

    /// Conflicts the kernel no longer shows (nothing planned or held for the object:
    /// the kernel agrees with the Nodes again) are forgotten.
    fn forget_settled_conflicts(&mut self, plan: &Plan) {
        let differing: BTreeSet<&str> = plan
            .ops
            .iter()
            .map(|op| op.key.as_str())
            .chain(plan.held.iter().map(|h| h.key.as_str()))
            .collect();
        let settled: Vec<String> = self
            .history
            .conflicts()
            .filter(|(key, _)| !differing.contains(key))
            .map(|(key, _)| key.to_owned())
            .collect();
        for key in settled {
            self.history.clear_conflict(&key);
        }
    }

    /// Repair's findings for the next cycle: the refused plan, each object in conflict.
    pub fn candidates(&self) -> Vec<Candidate> {
        let mut candidates: Vec<Candidate> = self.refused.iter().cloned().collect();
        if let Some(why) = &self.stopped {
            candidates.push(
                Candidate::new(Kind::RepairRefused, "repair".to_owned(), Severity::Warning)
                    .with("reason", why),
            );
        }
        for (key, why) in self.history.conflicts() {
            candidates.push(
                Candidate::new(Kind::RepairConflict, key.to_owned(), Severity::Warning)
                    .with("reason", why),
            );
        }
        candidates
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repair::object::Object;

    fn fdb(dst: &str) -> Object {
        Object::test_fdb("02:fa:00:00:00:01", dst)
    }

    fn op() -> Op {
        Op::between(
            Some(fdb("192.168.77.99")),
            Some(fdb("192.168.77.11")),
            "node-1",
            (Kind::OverlayDrift, "fdb"),
            "wrong dst".into(),
        )
    }

    #[test]
    fn off_and_an_unknown_desired_state_plan_nothing() {
        let net = Snapshot::default();
        let unknown = State::Unknown {
            reason: "never listed".into(),
        };
        for mode in [Mode::Off, Mode::DryRun, Mode::Apply] {
            let settings = RepairConfig {
                mode,
                ..RepairConfig::default()
            };
            let mut engine = Engine::new(settings);
            let step = engine.cycle(&net, &unknown, None, Instant::now());
            assert!(step.execute.is_empty() && step.events.is_empty());
            assert!(engine.candidates().is_empty());
        }
    }

    #[test]
    fn reports_update_the_history_and_a_conflict_becomes_a_finding() {
        let mut engine = Engine::new(RepairConfig::default());
        let now = Instant::now();
        let step = engine.finished(
            &[Report {
                op: op(),
                id: Some(1),
                done: Done::RolledBack("no answer".into()),
            }],
            true,
            now,
        );
        assert_eq!(step.counts, [("fdb", "rolled_back")]);
        assert!(matches!(step.events[0], RepairEvent::Rollback(_)));
        let held = engine
            .history
            .hold_reason(&op().key, now, &engine.settings)
            .expect("backs off after a rollback");
        assert!(held.contains("backing off"), "{held}");
        engine.finished(
            &[Report {
                op: op(),
                id: Some(2),
                done: Done::Conflict("flannel wrote it back".into()),
            }],
            true,
            now,
        );
        let candidates = engine.candidates();
        assert_eq!(candidates.len(), 1);
        assert_eq!(candidates[0].kind, Kind::RepairConflict);
        assert_eq!(candidates[0].subject, op().key);
    }

    #[test]
    fn the_journal_seeds_the_hourly_limit() {
        let settings = RepairConfig::default();
        let mut engine = Engine::new(settings.clone());
        let wall = SystemTime::now();
        let now = Instant::now();
        let mut journal = crate::repair::journal::Journal::open(
            &std::env::temp_dir().join(format!("watchdog-engine-{}.jsonl", std::process::id())),
            1 << 20,
        )
        .unwrap();
        let path = journal.path().to_owned();
        for _ in 0..settings.max_per_hour {
            let change = journal
                .change(&op(), Origin::Repair, None, 1, wall)
                .unwrap();
            journal
                .verdict(change.id, Verdict::Verified, "ok", wall)
                .unwrap();
        }
        let (entries, _) = crate::repair::journal::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        drop(journal);
        std::fs::remove_file(crate::repair::journal::lock_path(&path)).unwrap();
        engine.seed(&crate::repair::journal::records(&entries), now, wall);
        let held = engine.history.hold_reason(&op().key, now, &settings);
        assert!(held.is_some_and(|h| h.contains("max_per_hour")));
    }

    #[test]
    fn an_operation_that_keeps_not_applying_is_held_and_counted_a_bounded_number_of_times() {
        let settings = RepairConfig::default();
        let mut engine = Engine::new(settings.clone());
        let start = Instant::now();
        let mut reported = 0;
        // Every cycle for an hour, if nothing held it.
        for i in 0..1800u64 {
            let now = start + Duration::from_secs(2 * i);
            if engine
                .history
                .hold_reason(&op().key, now, &settings)
                .is_some()
            {
                continue;
            }
            let step = engine.finished(
                &[Report {
                    op: op(),
                    id: None,
                    done: Done::NotApplied("cannot read the kernel".into()),
                }],
                true,
                now,
            );
            reported += step.events.len();
        }
        assert!(
            (1..=settings.max_per_hour as usize).contains(&reported),
            "{reported} reports in an hour"
        );
    }

    #[test]
    fn a_stopped_executor_plans_nothing_and_says_why() {
        let settings = RepairConfig {
            mode: Mode::Apply,
            ..RepairConfig::default()
        };
        let mut engine = Engine::new(settings);
        engine.history.set_busy(&op().key, true);
        engine.running = true;
        engine.stop("repair.journal /x: cannot open it".into());
        assert!(!engine.running);
        assert!(engine.history.get(&op().key).is_some_and(|h| !h.busy));
        let candidates = engine.candidates();
        assert_eq!(candidates.len(), 1);
        assert_eq!(candidates[0].kind, Kind::RepairRefused);
        assert!(format!("{:?}", candidates[0]).contains("cannot open it"));
        let unknown = State::Unknown {
            reason: "never listed".into(),
        };
        let step = engine.cycle(&Snapshot::default(), &unknown, None, Instant::now());
        assert!(step.execute.is_empty() && step.log.is_empty());
    }

    #[test]
    fn the_history_forgets_objects_with_nothing_to_remember() {
        let mut history = History::default();
        let start = Instant::now();
        history.record_change("old", start);
        history.record_change("recent", start + Duration::from_secs(3000));
        history.set_busy("busy", true);
        history.record_conflict("conflict", "flannel".into());
        history.prune(start + Duration::from_secs(3700));
        let kept: Vec<bool> = ["old", "recent", "busy", "conflict"]
            .iter()
            .map(|k| history.get(k).is_some())
            .collect();
        assert_eq!(kept, [false, true, true, true]);
        assert_eq!(history.len(), 3);
    }
}
