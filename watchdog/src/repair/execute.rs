//! The executor: applies a plan's operations through rtnetlink (the only place in repair
//! that writes to the kernel), one Node's objects at a time.
//!
//! For each unit (the consecutive operations of one Node, in the plan's order):
//! 1. a fresh read of the kernel must still show every object as the plan saw it
//!    (`before`); otherwise nothing of the unit is done (the world moved: plan again);
//! 2. each operation is journalled (fsync'd) *before* it is sent, then sent, then the
//!    kernel is read again until it shows the new object (within `repair.verify_window`);
//! 3. once the whole unit is in the kernel, [`World::evidence`] must report the evidence
//!    gone within `repair.verify_window`;
//! 4. if the kernel refuses an operation, does not show it, or the evidence persists,
//!    the exact inverses of what was applied are sent in reverse order, each journalled
//!    as a `rollback` and checked against a fresh read;
//! 5. if the journal cannot be written once something was sent, what was applied is
//!    rolled back unjournalled (nothing is left half-done) and the executor stops with
//!    [`ExecError::Journal`]; the next start journals those changes `not_applied`. (A
//!    `verified` or `conflict` verdict that cannot be written leaves the change as it is:
//!    it is complete, and is verified again at the next start.)
//!
//! In `dry_run` nothing is sent and nothing is journalled: each operation is reported
//! with outcome `dry_run`.

use std::time::{Duration, SystemTime};

use futures::StreamExt as _;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkMessage,
    NetlinkPayload,
};
use tokio::task::JoinHandle;

use super::{
    journal::{Journal, JournalError, Origin, Outcome as Verdict},
    object::{Object, current},
    op::{Action, Op},
    report::{Done, Report},
    world::World,
};
use crate::{config::repair::Mode, model::net::Snapshot, netlink};

/// Why the executor could not work at all (single operations fail into the report).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// No rtnetlink socket.
    #[error(
        "cannot open a netlink route socket for repair: {0}; repair needs NETLINK_ROUTE and \
         CAP_NET_ADMIN"
    )]
    Socket(std::io::Error),
    /// The journal cannot be written: nothing is changed without it.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// The netlink side: sends an [`Op`]'s message and waits for the kernel's answer.
pub struct Netlink {
    handle: rtnetlink::Handle,
    connection: JoinHandle<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl Netlink {
    /// Opens an rtnetlink socket (on the current tokio runtime).
    pub fn open() -> Result<Self, ExecError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(ExecError::Socket)?;
        Ok(Self {
            handle,
            connection: tokio::spawn(connection),
        })
    }

    /// Makes `op` (add, replace or delete) in the kernel.
    pub async fn send(&mut self, op: &Op) -> Result<(), String> {
        let (message, flags) = match (op.action, &op.before, &op.after) {
            // A neighbour is added over the kernel's own unresolved entry for the
            // address, if traffic made one since the plan (see `shows`): an exclusive
            // add would fail on it. Nothing resolved is overwritten: the executor reads
            // the kernel right before the send and accepts only an unresolved entry or
            // none.
            (Action::Add, _, Some(after @ Object::Neighbour(_))) => (
                netlink::new_message(&after.model()),
                NLM_F_CREATE | NLM_F_REPLACE,
            ),
            (Action::Add, _, Some(after)) => (
                netlink::new_message(&after.model()),
                NLM_F_CREATE | NLM_F_EXCL,
            ),
            (Action::Replace, _, Some(after)) => (
                netlink::new_message(&after.model()),
                NLM_F_CREATE | NLM_F_REPLACE,
            ),
            (Action::Delete, Some(before), _) => (netlink::del_message(&before.model()), 0),
            _ => return Err(format!("malformed operation on {}", op.key)),
        };
        let mut request = NetlinkMessage::from(message);
        request.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        let mut answers = self
            .handle
            .request(request)
            .map_err(|err| format!("{}: {err}", op.command()))?;
        while let Some(answer) = answers.next().await {
            if let NetlinkPayload::Error(err) = answer.payload
                && err.code.is_some()
            {
                return Err(format!(
                    "the kernel refused `{}`: {}",
                    op.command(),
                    err.to_io()
                ));
            }
        }
        Ok(())
    }
}

/// True when `net` shows the state `op` leads to: its `after` object exactly, or (for a
/// delete) nothing with the object's identity.
pub fn shows_after(op: &Op, net: &Snapshot) -> bool {
    shows(op.after.as_ref(), op.before.as_ref(), net)
}

/// True when `net` still shows the state `op` was planned against.
pub fn shows_before(op: &Op, net: &Snapshot) -> bool {
    shows(op.before.as_ref(), op.after.as_ref(), net)
}

/// Whether `net` shows `want` (`None`: nothing with `other`'s identity). A neighbour
/// entry the kernel is resolving (no MAC, neither permanent nor noarp) is the same as
/// none: with traffic running, the kernel creates, fails and forgets such an entry by
/// itself, so a plan that saw none may meet one and the other way round; that is not
/// another writer.
fn shows(want: Option<&Object>, other: Option<&Object>, net: &Snapshot) -> bool {
    let unresolved_or_none = |like: &Object| match current(net, like) {
        None => true,
        Some(Object::Neighbour(n)) => n.is_unresolved(),
        Some(_) => false,
    };
    match (want, other) {
        (Some(object @ Object::Neighbour(n)), _) if n.is_unresolved() => unresolved_or_none(object),
        (Some(object), _) => object.in_snapshot(net) == Some(true),
        (None, Some(like @ Object::Neighbour(_))) => unresolved_or_none(like),
        (None, Some(like)) => current(net, like).is_none(),
        (None, None) => false,
    }
}

/// Applies operations, verifies them and rolls them back; see the module documentation.
pub struct Executor<'a, W: World> {
    /// `dry_run` or `apply` (`off` does nothing at all).
    pub mode: Mode,
    /// How long a change may take to show and its evidence to go.
    pub verify_window: Duration,
    /// How often the kernel is read again while waiting.
    pub poll: Duration,
    /// The netlink socket (none in a dry run).
    pub netlink: Option<&'a mut Netlink>,
    /// The journal (none in a dry run).
    pub journal: Option<&'a mut Journal>,
    /// The kernel and the evidence.
    pub world: &'a mut W,
}

impl<W: World> Executor<'_, W> {
    /// Runs `ops` (a plan's, in order), one Node's consecutive operations at a time.
    pub async fn run(&mut self, ops: &[Op]) -> Result<Vec<Report>, ExecError> {
        let mut reports = Vec::with_capacity(ops.len());
        if self.mode != Mode::Apply {
            if self.mode == Mode::DryRun {
                reports.extend(ops.iter().map(|op| Report {
                    op: op.clone(),
                    id: None,
                    done: Done::DryRun,
                }));
            }
            return Ok(reports);
        }
        let mut start = 0;
        while start < ops.len() {
            let node = &ops[start].node;
            let end = ops[start..]
                .iter()
                .position(|op| &op.node != node)
                .map_or(ops.len(), |n| start + n);
            reports.extend(self.unit(&ops[start..end]).await?);
            start = end;
        }
        Ok(reports)
    }

    /// Reads the kernel until `check` holds or the window ends; the last read.
    pub(super) async fn wait_for(
        &mut self,
        mut check: impl FnMut(&Snapshot) -> bool,
    ) -> (bool, Result<Snapshot, String>) {
        let deadline = tokio::time::Instant::now() + self.verify_window;
        loop {
            let read = self.world.read().await;
            if read.as_ref().is_ok_and(&mut check) {
                return (true, read);
            }
            if tokio::time::Instant::now() >= deadline {
                return (false, read);
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    async fn unit(&mut self, ops: &[Op]) -> Result<Vec<Report>, ExecError> {
        let not_applied = |why: &str| {
            ops.iter()
                .map(|op| Report {
                    op: op.clone(),
                    id: None,
                    done: Done::NotApplied(why.to_owned()),
                })
                .collect::<Vec<_>>()
        };
        let (Some(_), Some(_)) = (self.netlink.as_ref(), self.journal.as_ref()) else {
            return Ok(not_applied("apply needs a netlink socket and the journal"));
        };
        // 1. The kernel must still be what the plan saw.
        match self.world.read().await {
            Err(err) => return Ok(not_applied(&format!("cannot read the kernel: {err}"))),
            Ok(net) => {
                if let Some(op) = ops.iter().find(|op| !shows_before(op, &net)) {
                    let now = current(
                        &net,
                        op.before.as_ref().or(op.after.as_ref()).expect("an object"),
                    );
                    return Ok(not_applied(&format!(
                        "{} changed since the plan (now `{}`): planned again next time",
                        op.key,
                        now.map_or_else(|| "absent".into(), |o| o.spec())
                    )));
                }
            }
        }
        let unit = self.journal.as_ref().expect("checked").next_id();
        // 2. Journal, send, and see each operation in the kernel.
        let mut applied: Vec<(u64, &Op)> = Vec::new();
        let mut failure = None;
        for op in ops {
            // A neighbour add replaces an unresolved entry (see `Netlink::send`): the
            // kernel is read again right before it, so nothing someone set since the
            // unit started (earlier operations may have waited) is overwritten.
            if !applied.is_empty()
                && op.action == Action::Add
                && matches!(op.after, Some(Object::Neighbour(_)))
            {
                let fresh = self.world.read().await;
                if !fresh.as_ref().is_ok_and(|net| shows_before(op, net)) {
                    failure = Some((
                        None,
                        format!("{} changed since the plan: planned again next time", op.key),
                    ));
                    break;
                }
            }
            let journal = self.journal.as_mut().expect("checked");
            let change = match journal.change(op, Origin::Repair, None, unit, SystemTime::now()) {
                Ok(change) => change,
                Err(err) => return Err(self.abandon(&applied, err.into()).await),
            };
            let sent = self.netlink.as_mut().expect("checked").send(op).await;
            if let Err(err) = sent {
                let journal = self.journal.as_mut().expect("checked");
                if let Err(jerr) =
                    journal.verdict(change.id, Verdict::NotApplied, &err, SystemTime::now())
                {
                    return Err(self.abandon(&applied, jerr.into()).await);
                }
                failure = Some((None, err));
                break;
            }
            applied.push((change.id, op));
            let (shown, read) = self.wait_for(|net| shows_after(op, net)).await;
            let journal = self.journal.as_mut().expect("checked");
            if !shown {
                // The kernel took it (acked) and now shows the object as before: another
                // writer put it back.
                if let Ok(net) = &read
                    && shows_before(op, net)
                    && op.before.is_some()
                {
                    let why = format!(
                        "another writer put {} back to `{}` right after the change: left alone",
                        op.key,
                        op.before.as_ref().map(Object::spec).unwrap_or_default()
                    );
                    return self.conflict(&applied, ops, &why);
                }
                let seen = match read {
                    Ok(net) => current(&net, op.after.as_ref().or(op.before.as_ref()).unwrap())
                        .map_or_else(|| "absent".into(), |o| o.spec()),
                    Err(err) => format!("unreadable: {err}"),
                };
                let why = format!(
                    "the kernel does not show `{}` within {}s (it shows `{seen}`)",
                    op.command(),
                    self.verify_window.as_secs()
                );
                failure = Some((Some(change.id), why));
                break;
            }
            if let Err(err) = journal.verdict(
                change.id,
                Verdict::Applied,
                "the kernel shows it",
                SystemTime::now(),
            ) {
                return Err(self.abandon(&applied, err.into()).await);
            }
        }
        // 3. The evidence must go; meanwhile nothing else may write the objects.
        if failure.is_none() {
            let deadline = tokio::time::Instant::now() + self.verify_window;
            loop {
                let mut persisting = None;
                match self.world.read().await {
                    Err(err) => persisting = Some(format!("cannot read the kernel: {err}")),
                    Ok(net) => {
                        if let Some(op) = ops.iter().find(|op| !shows_after(op, &net)) {
                            let seen = current(
                                &net,
                                op.after.as_ref().or(op.before.as_ref()).expect("an object"),
                            )
                            .map_or_else(|| "absent".into(), |o| o.spec());
                            let why = format!(
                                "another writer changed {} while it was verified (now `{seen}`): \
                                 left alone",
                                op.key
                            );
                            return self.conflict(&applied, ops, &why);
                        }
                        for op in ops {
                            if let Some(why) = self.world.evidence(op, &net).await {
                                persisting = Some(format!("{}: {why}", op.key));
                                break;
                            }
                        }
                    }
                }
                match persisting {
                    None => break,
                    Some(why) if tokio::time::Instant::now() >= deadline => {
                        failure = Some((None, format!("the evidence persists: {why}")));
                        break;
                    }
                    Some(_) => tokio::time::sleep(self.poll).await,
                }
            }
        }
        let Some((_, why)) = failure else {
            let journal = self.journal.as_mut().expect("checked");
            let mut reports = Vec::new();
            for (id, op) in applied {
                journal.verdict(id, Verdict::Verified, "evidence gone", SystemTime::now())?;
                reports.push(Report {
                    op: op.clone(),
                    id: Some(id),
                    done: Done::Verified,
                });
            }
            return Ok(reports);
        };
        // 4. Roll back what was applied, in reverse.
        let mut reports: Vec<Report> = Vec::new();
        let mut undone: Vec<(u64, Done)> = Vec::new();
        for (i, (id, op)) in applied.iter().enumerate().rev() {
            match self.roll_back(*id, op, unit, &why).await {
                Ok(done) => undone.push((*id, done)),
                // The journal failed: the rest goes back unjournalled.
                Err(err) => return Err(self.abandon(&applied[..i], err).await),
            }
        }
        for op in ops {
            let done = applied
                .iter()
                .zip(undone.iter().rev())
                .find(|((_, applied_op), _)| std::ptr::eq(*applied_op, op))
                .map(|((id, _), (_, done))| (Some(*id), done.clone()));
            let (id, done) = done.unwrap_or((None, Done::NotApplied(why.clone())));
            reports.push(Report {
                op: op.clone(),
                id,
                done,
            });
        }
        Ok(reports)
    }

    /// Another writer took over the unit's objects: journalled, not rolled back.
    fn conflict(
        &mut self,
        applied: &[(u64, &Op)],
        ops: &[Op],
        why: &str,
    ) -> Result<Vec<Report>, ExecError> {
        let journal = self.journal.as_mut().expect("checked");
        for (id, _) in applied {
            journal.verdict(*id, Verdict::Conflict, why, SystemTime::now())?;
        }
        Ok(ops
            .iter()
            .map(|op| Report {
                op: op.clone(),
                id: applied
                    .iter()
                    .find(|(_, a)| std::ptr::eq(*a, op))
                    .map(|(id, _)| *id),
                done: Done::Conflict(why.to_owned()),
            })
            .collect())
    }

    /// The journal failed while `applied` (sent, in this order) were in the kernel: puts
    /// back their exact before-state, in reverse, without journalling (the journal is what
    /// failed), so nothing is left half-done. Their changes stay open in the journal; at
    /// the next start the kernel shows their before-state and they are journalled
    /// `not_applied`. Returns `err`, to stop on.
    async fn abandon(&mut self, applied: &[(u64, &Op)], err: ExecError) -> ExecError {
        tracing::error!(
            "repair: {err}; rolling back {} change(s) without journalling them",
            applied.len()
        );
        for (id, op) in applied.iter().rev() {
            let inverse = op.inverse();
            let sent = self.netlink.as_mut().expect("checked").send(&inverse).await;
            let shown = match sent {
                Ok(()) => self.wait_for(|net| shows_after(&inverse, net)).await.0,
                Err(why) => {
                    tracing::error!("repair: rolling back change {id}: {why}");
                    false
                }
            };
            if shown {
                tracing::warn!(
                    "repair: change {id} rolled back (not journalled): {}",
                    inverse.command()
                );
            } else {
                tracing::error!(
                    "repair: change {id} could not be rolled back; it needs a person: {}",
                    inverse.command()
                );
            }
        }
        err
    }

    pub(super) async fn roll_back(
        &mut self,
        id: u64,
        op: &Op,
        unit: u64,
        why: &str,
    ) -> Result<Done, ExecError> {
        let inverse = op.inverse();
        let journal = self.journal.as_mut().expect("checked");
        let change = match journal.change(
            &inverse,
            Origin::Rollback,
            Some(id),
            unit,
            SystemTime::now(),
        ) {
            Ok(change) => change,
            Err(err) => return Err(self.abandon(&[(id, op)], err.into()).await),
        };
        let sent = self.netlink.as_mut().expect("checked").send(&inverse).await;
        let result = match sent {
            Err(err) => Err(err),
            Ok(()) => {
                let (shown, _) = self.wait_for(|net| shows_after(&inverse, net)).await;
                if shown {
                    Ok(())
                } else {
                    Err(format!(
                        "the kernel does not show the before-state `{}` after the rollback",
                        inverse.command()
                    ))
                }
            }
        };
        let journal = self.journal.as_mut().expect("checked");
        let now = SystemTime::now();
        Ok(match result {
            Ok(()) => {
                journal.verdict(change.id, Verdict::Verified, "before-state back", now)?;
                journal.verdict(id, Verdict::RolledBack, why, now)?;
                Done::RolledBack(why.to_owned())
            }
            Err(err) => {
                journal.verdict(change.id, Verdict::Failed, &err, now)?;
                journal.verdict(id, Verdict::Failed, format!("{why}; {err}"), now)?;
                Done::Failed(format!("{why}; rollback failed: {err}"))
            }
        })
    }
}
