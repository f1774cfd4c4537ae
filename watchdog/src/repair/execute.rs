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
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
    },
    route::{
        RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteNextHop, RouteNextHopFlags,
        RouteProtocol, RouteScope, RouteType,
    },
};
use tokio::task::JoinHandle;

use super::{
    event::{RepairEvent, RepairOutcome, RepairReport},
    journal::{Journal, JournalError, Origin, Outcome as Verdict, Record},
    object::{Fdb, Neigh, Object, RouteObj, current},
    op::{Action, Op},
    world::World,
};
use crate::{config::repair::Mode, findings::Evidence, model::net::Snapshot};

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
            (Action::Add, _, Some(after @ Object::Neighbour(_))) => {
                (new(after), NLM_F_CREATE | NLM_F_REPLACE)
            }
            (Action::Add, _, Some(after)) => (new(after), NLM_F_CREATE | NLM_F_EXCL),
            (Action::Replace, _, Some(after)) => (new(after), NLM_F_CREATE | NLM_F_REPLACE),
            (Action::Delete, Some(before), _) => (del(before), 0),
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

fn new(object: &Object) -> RouteNetlinkMessage {
    match object {
        Object::Fdb(f) => RouteNetlinkMessage::NewNeighbour(fdb_message(f)),
        Object::Neighbour(n) => RouteNetlinkMessage::NewNeighbour(neigh_message(n)),
        Object::Route(r) => RouteNetlinkMessage::NewRoute(route_message(r)),
    }
}

fn del(object: &Object) -> RouteNetlinkMessage {
    match object {
        Object::Fdb(f) => RouteNetlinkMessage::DelNeighbour(fdb_message(f)),
        Object::Neighbour(n) => RouteNetlinkMessage::DelNeighbour(neigh_message(n)),
        Object::Route(r) => RouteNetlinkMessage::DelRoute(route_message(r)),
    }
}

fn neighbour_address(ip: std::net::IpAddr) -> NeighbourAddress {
    match ip {
        std::net::IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        std::net::IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }
}

fn route_address(ip: std::net::IpAddr) -> RouteAddress {
    match ip {
        std::net::IpAddr::V4(v4) => RouteAddress::Inet(v4),
        std::net::IpAddr::V6(v6) => RouteAddress::Inet6(v6),
    }
}

/// `bridge fdb … self`: family AF_BRIDGE, NTF_SELF.
fn fdb_message(f: &Fdb) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = f.ifindex;
    m.header.state = NeighbourState::from(f.state);
    m.header.flags = NeighbourFlags::Own;
    m.header.kind = RouteType::Unspec;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(f.mac.0.to_vec()));
    if let Some(dst) = f.dst {
        m.attributes
            .push(NeighbourAttribute::Destination(neighbour_address(dst)));
    }
    if let Some(vni) = f.vni {
        m.attributes.push(NeighbourAttribute::Vni(vni));
    }
    if let Some(port) = f.port {
        m.attributes.push(NeighbourAttribute::Port(port));
    }
    m
}

fn neigh_message(n: &Neigh) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = match n.ip {
        std::net::IpAddr::V4(_) => AddressFamily::Inet,
        std::net::IpAddr::V6(_) => AddressFamily::Inet6,
    };
    m.header.ifindex = n.ifindex;
    m.header.state = NeighbourState::from(n.state);
    m.header.kind = RouteType::Unspec;
    m.attributes
        .push(NeighbourAttribute::Destination(neighbour_address(n.ip)));
    if let Some(mac) = n.mac {
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    }
    m
}

fn route_message(r: &RouteObj) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = if r.dst.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    m.header.destination_prefix_length = r.dst.len;
    m.header.tos = r.tos;
    // Tables above 255 travel in RTA_TABLE only (RT_TABLE_COMPAT in the header).
    m.header.table = u8::try_from(r.table).unwrap_or(252);
    m.header.protocol = RouteProtocol::from(r.protocol);
    m.header.scope = RouteScope::from(r.scope);
    m.header.kind = RouteType::from(r.kind);
    if r.onlink {
        m.header.flags = RouteFlags::Onlink;
    }
    m.attributes.push(RouteAttribute::Table(r.table));
    m.attributes
        .push(RouteAttribute::Destination(route_address(r.dst.addr)));
    if let Some(gw) = r.gateway {
        m.attributes
            .push(RouteAttribute::Gateway(route_address(gw)));
    }
    if let Some(oif) = r.oif {
        m.attributes.push(RouteAttribute::Oif(oif));
    }
    if let Some(src) = r.prefsrc {
        m.attributes
            .push(RouteAttribute::PrefSource(route_address(src)));
    }
    if r.priority != 0 {
        m.attributes.push(RouteAttribute::Priority(r.priority));
    }
    if !r.nexthops.is_empty() {
        let hops = r
            .nexthops
            .iter()
            .map(|hop| {
                let mut next = RouteNextHop::default();
                next.interface_index = hop.oif.unwrap_or(0);
                if hop.onlink {
                    next.flags = RouteNextHopFlags::Onlink;
                }
                if let Some(gw) = hop.gateway {
                    next.attributes
                        .push(RouteAttribute::Gateway(route_address(gw)));
                }
                next
            })
            .collect();
        m.attributes.push(RouteAttribute::MultiPath(hops));
    }
    m
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
        Some(Object::Neighbour(n)) => n.unresolved(),
        Some(_) => false,
    };
    match (want, other) {
        (Some(object @ Object::Neighbour(n)), _) if n.unresolved() => unresolved_or_none(object),
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
    async fn wait_for(
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
        let reverted: std::collections::BTreeSet<u64> = records
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

    async fn roll_back(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        findings::Kind,
        model::desired::Mac,
        repair::object::{Fdb, Object},
    };

    fn fdb(dst: &str) -> Object {
        Object::Fdb(Fdb {
            dev: "flannel.1".into(),
            ifindex: 3,
            mac: Mac::parse("02:fa:00:00:00:01").unwrap(),
            dst: Some(dst.parse().unwrap()),
            vni: None,
            port: None,
            state: 0x80,
        })
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
