//! After a restart: the journal's changes without a final verdict (a crash, a kill, a
//! power cut interrupted them) are settled before any new plan: verified again or rolled
//! back, completed when a rollback was interrupted, `not_applied` or `conflict` when the
//! kernel shows neither side.

use std::{collections::BTreeSet, time::SystemTime};

use super::{
    execute::{ExecError, Executor, shows_after, shows_before},
    journal::{Origin, Outcome as Verdict, Record},
    report::{Done, Report},
    world::World,
};

impl<W: World> Executor<'_, W> {
    /// After a restart: settles every journalled change without a final verdict. A
    /// change the kernel shows is verified again (its evidence must go within the
    /// window) or rolled back; one it does not show was never made (`not_applied`); an
    /// interrupted rollback is completed; an object that is neither before nor after
    /// was changed by another writer (`conflict`, left alone). Each verdict is
    /// journalled.
    pub async fn recover(&mut self, records: &[Record]) -> Result<Vec<Report>, ExecError> {
        let mut reports = Vec::new();
        if self.netlink.is_none() || self.journal.is_none() {
            return Ok(reports);
        }
        // A change an open rollback (or undo) reverts is settled with that rollback:
        // verifying it first would report it applied, then rolled back.
        let reverted: BTreeSet<u64> = records
            .iter()
            .filter(|r| matches!(r.change.origin, Origin::Rollback | Origin::Undo))
            .filter_map(|r| r.change.reverts)
            .collect();
        for record in records {
            if record.change.origin == Origin::Repair && reverted.contains(&record.change.id) {
                continue;
            }
            let op = record.change.op();
            let id = record.change.id;
            let net = match self.world.read().await {
                Ok(net) => net,
                Err(err) => {
                    reports.push(Report {
                        op,
                        id: Some(id),
                        done: Done::Failed(format!("cannot read the kernel: {err}")),
                    });
                    continue;
                }
            };
            let report = |done| Report {
                op: op.clone(),
                id: Some(id),
                done,
            };
            let after = shows_after(&op, &net);
            let before = shows_before(&op, &net);
            let now = SystemTime::now();
            let journal = self.journal.as_mut().expect("checked");
            match record.change.origin {
                Origin::Rollback | Origin::Undo if after => {
                    journal.verdict(
                        id,
                        Verdict::Verified,
                        "before-state back (after a restart)",
                        now,
                    )?;
                    if let Some(reverted) = record.change.reverts {
                        let (outcome, how) = reverted_outcome(record.change.origin, id);
                        journal.verdict(reverted, outcome, how, now)?;
                    }
                    // Reported, so the object backs off like any rollback.
                    reports.push(report(Done::RolledBack(
                        "rolled back before a restart".into(),
                    )));
                    continue;
                }
                Origin::Rollback | Origin::Undo if before => {
                    // Interrupted before it was made: make it now.
                    let sent = self.netlink.as_mut().expect("checked").send(&op).await;
                    let (shown, _) = match sent {
                        Ok(()) => self.wait_for(|net| shows_after(&op, net)).await,
                        Err(err) => (false, Err(err)),
                    };
                    let journal = self.journal.as_mut().expect("checked");
                    let now = SystemTime::now();
                    if shown {
                        journal.verdict(id, Verdict::Verified, "completed after a restart", now)?;
                        if let Some(reverted) = record.change.reverts {
                            let (outcome, how) = reverted_outcome(record.change.origin, id);
                            journal.verdict(reverted, outcome, how, now)?;
                        }
                        reports.push(report(Done::RolledBack("completed after a restart".into())));
                    } else {
                        let why = "the interrupted rollback could not be completed";
                        journal.verdict(id, Verdict::Failed, why, now)?;
                        if let Some(reverted) = record.change.reverts {
                            journal.verdict(reverted, Verdict::Failed, why, now)?;
                        }
                        reports.push(report(Done::Failed(why.into())));
                    }
                    continue;
                }
                _ if after => {}
                _ if before => {
                    journal.verdict(
                        id,
                        Verdict::NotApplied,
                        "interrupted before the kernel had it (found after a restart)",
                        now,
                    )?;
                    reports.push(report(Done::NotApplied(
                        "interrupted before the kernel had it".into(),
                    )));
                    continue;
                }
                _ => {
                    let why = "after a restart the object is neither as before nor as after: \
                               another writer changed it, left alone";
                    journal.verdict(id, Verdict::Conflict, why, now)?;
                    // The change an interrupted rollback reverts was skipped above: it
                    // is settled with it.
                    if matches!(record.change.origin, Origin::Rollback | Origin::Undo)
                        && let Some(reverted) = record.change.reverts
                    {
                        journal.verdict(reverted, Verdict::Conflict, why, now)?;
                    }
                    reports.push(report(Done::Conflict(why.into())));
                    continue;
                }
            }
            // The kernel has the change: verify it again.
            let deadline = tokio::time::Instant::now() + self.verify_window;
            let mut persisting;
            loop {
                persisting = match self.world.read().await {
                    Err(err) => Some(format!("cannot read the kernel: {err}")),
                    Ok(net) if !shows_after(&op, &net) => {
                        Some("the kernel no longer shows it".to_owned())
                    }
                    Ok(net) => self.world.evidence(&op, &net).await,
                };
                if persisting.is_none() || tokio::time::Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(self.poll).await;
            }
            match persisting {
                None => {
                    let journal = self.journal.as_mut().expect("checked");
                    journal.verdict(
                        id,
                        Verdict::Verified,
                        "verified again after a restart",
                        SystemTime::now(),
                    )?;
                    reports.push(report(Done::Verified));
                }
                Some(why) => {
                    let why = format!("after a restart, the evidence persists: {why}");
                    let done = self.roll_back(id, &op, record.change.unit, &why).await?;
                    reports.push(report(done));
                }
            }
        }
        Ok(reports)
    }
}

/// The verdict on a change whose rollback or undo `id` was settled after a restart.
fn reverted_outcome(origin: Origin, id: u64) -> (Verdict, String) {
    match origin {
        Origin::Undo => (
            Verdict::Undone,
            format!("undone by change {id} (settled after a restart)"),
        ),
        _ => (
            Verdict::RolledBack,
            format!("rolled back by change {id} (settled after a restart)"),
        ),
    }
}
