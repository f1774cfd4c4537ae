//! `watchdog repair undo`: which journalled change may be undone ([`select`], pure: the
//! journal's records in, the change or the reason it may not be undone out), and the
//! undo itself ([`undo`]): a fresh read must still show exactly what the change left
//! (else someone else changed the object since, and nothing is done), then its inverse
//! is journalled (origin `undo`, `reverts` the change), sent through rtnetlink, and
//! checked on fresh reads within `repair.verify_window`; the change gets the verdict
//! `undone`.

use std::time::{Duration, SystemTime};

use super::{
    execute::{ExecError, Netlink, shows_after},
    journal::{self, Journal, JournalError, Origin, Outcome, Record},
    object::current,
    world::World,
};
use crate::config::repair::RepairConfig;

/// Which change to undo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// The change with this journal id.
    Id(u64),
    /// The latest repair still in effect (verified and not undone).
    Last,
}

/// Why a change may not be undone. Nothing is changed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// No change with that id.
    #[error(
        "change {0} is not in the journal: `watchdog repair journal` lists the ids (the \
         journal keeps its current file and one rotated file)"
    )]
    Unknown(u64),
    /// `--last` found nothing.
    #[error("nothing to undo: no repair in the journal is verified and not undone")]
    NothingToUndo,
    /// Already undone.
    #[error("change {id} was already undone ({detail})")]
    AlreadyUndone {
        /// The change.
        id: u64,
        /// The `undone` verdict's detail.
        detail: String,
    },
    /// A rollback or an undo (only repairs are undone).
    #[error(
        "change {id} is a {origin} of change {reverts}, not a repair: only repairs can be \
         undone (run `watchdog repair apply` to repair again)"
    )]
    NotARepair {
        /// The change.
        id: u64,
        /// `rollback` or `undo`.
        origin: &'static str,
        /// The change it reverted.
        reverts: u64,
    },
    /// Interrupted: no verdict yet.
    #[error(
        "change {id} has no final verdict (interrupted): `watchdog repair apply` or the daemon \
         in apply mode settles it first"
    )]
    Open {
        /// The change.
        id: u64,
    },
    /// Not in effect: rolled back, not applied, failed, or left to another writer.
    #[error("change {id} is not in effect (its verdict is `{outcome}`): nothing to undo")]
    NotInEffect {
        /// The change.
        id: u64,
        /// Its last verdict.
        outcome: &'static str,
    },
    /// A later repair changed the same object.
    #[error("change {later} repaired {key} after change {id}: undo change {later} first")]
    Superseded {
        /// The change.
        id: u64,
        /// The later change.
        later: u64,
        /// The object.
        key: String,
    },
}

/// The change `which` names, if it may be undone: a repair whose last verdict is
/// `verified`, with no later verified repair of the same object. Whether the kernel
/// still shows what it left is the caller's check.
pub fn select(records: &[Record], which: Which) -> Result<&Record, Refused> {
    let in_effect =
        |r: &Record| r.change.origin == Origin::Repair && r.outcome() == Some(Outcome::Verified);
    let record = match which {
        Which::Last => records
            .iter()
            .rev()
            .find(|r| in_effect(r))
            .ok_or(Refused::NothingToUndo)?,
        Which::Id(id) => records
            .iter()
            .find(|r| r.change.id == id)
            .ok_or(Refused::Unknown(id))?,
    };
    let id = record.change.id;
    if let Some(undone) = record
        .verdicts
        .iter()
        .rev()
        .find(|v| v.outcome == Outcome::Undone)
    {
        return Err(Refused::AlreadyUndone {
            id,
            detail: undone.detail.clone(),
        });
    }
    if record.change.origin != Origin::Repair {
        return Err(Refused::NotARepair {
            id,
            origin: record.change.origin.as_str(),
            reverts: record.change.reverts.unwrap_or_default(),
        });
    }
    match record.outcome() {
        Some(Outcome::Verified) => {}
        None | Some(Outcome::Applied) => return Err(Refused::Open { id }),
        Some(other) => {
            return Err(Refused::NotInEffect {
                id,
                outcome: other.as_str(),
            });
        }
    }
    if let Some(later) = records
        .iter()
        .find(|r| r.change.id > id && r.change.key == record.change.key && in_effect(r))
    {
        return Err(Refused::Superseded {
            id,
            later: later.change.id,
            key: record.change.key.clone(),
        });
    }
    Ok(record)
}

/// How an undo ended (besides errors).
#[derive(Debug, PartialEq, Eq)]
pub enum Undone {
    /// Restored and journalled: what was done.
    Done(String),
    /// Refused: nothing changed. Why.
    Refused(String),
    /// Sent, but the kernel refused it or does not show it (journalled `failed`): why.
    Failed(String),
}

/// Why an undo could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum UndoError {
    /// The journal cannot be opened, read or written.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// No netlink socket.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// The kernel's network state cannot be read.
    #[error("cannot read the kernel's network state: {0}")]
    Read(String),
}

/// Undoes the change `which` picks in `settings.journal` (see the module documentation),
/// reading the kernel through `world`.
pub async fn undo<W: World>(
    settings: &RepairConfig,
    which: Which,
    world: &mut W,
) -> Result<Undone, UndoError> {
    // Opened (and locked) first: nobody else writes the journal or repairs meanwhile.
    let mut journal = Journal::open(&settings.journal, settings.journal_max_bytes)?;
    let (entries, _) = journal::read(&settings.journal)?;
    let records = journal::records(&entries);
    let target = match select(&records, which) {
        Ok(record) => record,
        Err(refused) => return Ok(Undone::Refused(refused.to_string())),
    };
    let id = target.change.id;
    let op = target.change.op();
    let net = world.read().await.map_err(UndoError::Read)?;
    if !shows_after(&op, &net) {
        let like = op.after.as_ref().or(op.before.as_ref()).expect("an object");
        let now = current(&net, like).map_or_else(|| "absent".into(), |o| o.spec());
        let left = op
            .after
            .as_ref()
            .map_or_else(|| "absent".into(), |o| o.spec());
        return Ok(Undone::Refused(format!(
            "{} was changed since change {id} by someone else: the kernel shows `{now}`, \
             change {id} left `{left}`; nothing done",
            op.key
        )));
    }
    let inverse = op.inverse();
    let unit = journal.next_id();
    let change = journal.change(&inverse, Origin::Undo, Some(id), unit, SystemTime::now())?;
    let mut netlink = Netlink::open()?;
    if let Err(err) = netlink.send(&inverse).await {
        journal.verdict(change.id, Outcome::Failed, &err, SystemTime::now())?;
        return Ok(Undone::Failed(format!("undo of change {id}: {err}")));
    }
    let deadline = tokio::time::Instant::now() + settings.verify_window;
    loop {
        let shown = world
            .read()
            .await
            .is_ok_and(|net| shows_after(&inverse, &net));
        let now = SystemTime::now();
        if shown {
            journal.verdict(change.id, Outcome::Verified, "before-state back", now)?;
            journal.verdict(
                id,
                Outcome::Undone,
                format!("undone by change {}", change.id),
                now,
            )?;
            return Ok(Undone::Done(format!(
                "undone: change {id} by change {}: {}",
                change.id, change.command
            )));
        }
        if tokio::time::Instant::now() >= deadline {
            let why = format!(
                "the kernel does not show `{}` within {}s",
                change.command,
                settings.verify_window.as_secs()
            );
            journal.verdict(change.id, Outcome::Failed, &why, now)?;
            return Ok(Undone::Failed(format!("undo of change {id}: {why}")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::{
        findings::Kind,
        repair::{
            journal::{Journal, read, records},
            object::Object,
            op::Op,
        },
    };

    fn op(mac: &str, from: &str, to: &str) -> Op {
        let fdb = |dst: &str| Object::test_fdb(mac, dst);
        Op::between(
            Some(fdb(from)),
            Some(fdb(to)),
            "node-1",
            (Kind::OverlayDrift, "fdb"),
            "test".into(),
        )
    }

    #[test]
    fn only_a_verified_repair_not_undone_nor_superseded_is_selected() {
        let dir = std::env::temp_dir().join(format!("watchdog-undo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("journal.jsonl");
        let now = SystemTime::UNIX_EPOCH;
        let mut j = Journal::open(&path, 1 << 20).unwrap();
        let (a, b) = ("02:fa:00:00:00:01", "02:fa:00:00:00:02");
        // 1 verified, 2 rolled back (by 3), 4 open, 5 verified and undone by 6,
        // 7 verified then 8 a later verified repair of the same object.
        let c1 = j.change(
            &op(a, "192.168.77.99", "192.168.77.11"),
            Origin::Repair,
            None,
            1,
            now,
        );
        j.verdict(c1.unwrap().id, Outcome::Verified, "ok", now)
            .unwrap();
        let c2 = j
            .change(
                &op(b, "192.168.77.99", "192.168.77.12"),
                Origin::Repair,
                None,
                2,
                now,
            )
            .unwrap();
        let c3 = j
            .change(
                &op(b, "192.168.77.12", "192.168.77.99"),
                Origin::Rollback,
                Some(c2.id),
                2,
                now,
            )
            .unwrap();
        j.verdict(c3.id, Outcome::Verified, "back", now).unwrap();
        j.verdict(c2.id, Outcome::RolledBack, "no answer", now)
            .unwrap();
        let c4 = j
            .change(
                &op(b, "192.168.77.99", "192.168.77.13"),
                Origin::Repair,
                None,
                4,
                now,
            )
            .unwrap();
        j.verdict(c4.id, Outcome::Applied, "shown", now).unwrap();
        let c5 = j
            .change(
                &op(b, "192.168.77.98", "192.168.77.12"),
                Origin::Repair,
                None,
                5,
                now,
            )
            .unwrap();
        j.verdict(c5.id, Outcome::Verified, "ok", now).unwrap();
        let c6 = j
            .change(
                &op(b, "192.168.77.12", "192.168.77.98"),
                Origin::Undo,
                Some(c5.id),
                6,
                now,
            )
            .unwrap();
        j.verdict(c6.id, Outcome::Verified, "back", now).unwrap();
        j.verdict(c5.id, Outcome::Undone, "undone by change 6", now)
            .unwrap();
        let c7 = j
            .change(
                &op(a, "192.168.77.11", "192.168.77.21"),
                Origin::Repair,
                None,
                7,
                now,
            )
            .unwrap();
        j.verdict(c7.id, Outcome::Verified, "ok", now).unwrap();
        let c8 = j
            .change(
                &op(a, "192.168.77.21", "192.168.77.11"),
                Origin::Repair,
                None,
                8,
                now,
            )
            .unwrap();
        j.verdict(c8.id, Outcome::Failed, "refused", now).unwrap();
        drop(j);
        let (entries, _) = read(&path).unwrap();
        let all = records(&entries);

        assert_eq!(select(&all, Which::Last).unwrap().change.id, 7);
        assert_eq!(select(&all, Which::Id(7)).unwrap().change.id, 7);
        assert_eq!(
            select(&all, Which::Id(1)),
            Err(Refused::Superseded {
                id: 1,
                later: 7,
                key: all[0].change.key.clone()
            })
        );
        assert_eq!(
            select(&all, Which::Id(2)),
            Err(Refused::NotInEffect {
                id: 2,
                outcome: "rolled_back"
            })
        );
        assert_eq!(
            select(&all, Which::Id(3)),
            Err(Refused::NotARepair {
                id: 3,
                origin: "rollback",
                reverts: 2
            })
        );
        assert_eq!(select(&all, Which::Id(4)), Err(Refused::Open { id: 4 }));
        assert_eq!(
            select(&all, Which::Id(5)),
            Err(Refused::AlreadyUndone {
                id: 5,
                detail: "undone by change 6".into()
            })
        );
        assert!(matches!(
            select(&all, Which::Id(6)),
            Err(Refused::NotARepair { .. })
        ));
        assert_eq!(select(&all, Which::Id(99)), Err(Refused::Unknown(99)));
        assert_eq!(select(&all[..6], Which::Last).unwrap().change.id, 1);
        assert_eq!(select(&[], Which::Last), Err(Refused::NothingToUndo));
        assert!(Refused::Unknown(99).to_string().contains("repair journal"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
