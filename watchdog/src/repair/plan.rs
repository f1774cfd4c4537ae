//! The planner: a pure function of (active findings, the mirror's snapshot, the desired
//! state and its freshness, the `[repair]` settings, each object's history) to an ordered
//! list of operations, each with its exact inverse.
//!
//! **The owned set** ([`Owned`]): repair only ever plans changes to
//! - FDB entries on the cluster's VXLAN device (the link with the cluster's VNI, Flannel's
//!   `flannel.<VNI>` preferred) with a unicast MAC (`self` entries: no VLAN, no master);
//! - IPv4 neighbours on that device;
//! - IPv4 routes in the main table whose destination is exactly another Node's pod
//!   subnet, whatever they go through; and routes in the main table through the device in
//!   Flannel's form (`<subnet> via <subnet's network address>`) for a subnet of the
//!   cluster's prefix length (a Node that left);
//! - never this node's own pod subnet, nothing on or through a `repair.protect.devices`
//!   device, no route overlapping a `repair.protect.prefixes` prefix, no neighbour or FDB
//!   destination inside one.
//!
//! **What it plans** (each only while an active finding names the object): a missing FDB
//! entry, neighbour or route for another Node → add Flannel's object; an FDB entry whose
//! destination is not the Node's `public-ip`, a neighbour without the Node's VtepMAC, a
//! route to the Node's pod subnet through anything else → replace with Flannel's object;
//! an FDB entry for a MAC no Node has, a permanent neighbour or a Flannel-form route for a
//! subnet no Node has → delete, only once it has been seen twice `delete_after` apart, the
//! desired state was read again after that, and nothing answers there. Adds and replaces
//! come before deletes; per Node the FDB entry, then the neighbour, then the route.
//!
//! **Guards**: no plan while the desired state is unknown (never listed, or its source
//! failing past `desired.stale_after`), empty, or this node is not in it, or the VXLAN
//! device is missing or down; a plan with more than `max_ops` operations or changing more
//! than `max_fraction` of the expected objects (3 per other Node) is refused whole; an
//! object changed `max_per_hour` times in the last hour, backing off after a rollback, in
//! conflict with another writer, or being verified is held.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::object::{Fdb, Neigh, Object, RouteObj, fdb_object, neigh_object, route_object};
use crate::{
    config::repair::{Protect, RepairConfig},
    findings::{Candidate, Finding, Kind, Severity},
    model::{
        desired::{Mac, PodSubnet, State},
        net::{FdbEntry, Link, Neighbour, Prefix, Route, RouteKind, Snapshot, TABLE_MAIN},
    },
    overlay::{Expected, RemoteObjects, expected, vxlan_device},
};

/// What an operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Create the object (`before` is none).
    Add,
    /// Replace the object in place (same identity).
    Replace,
    /// Delete the object (`after` is none).
    Delete,
}

impl Action {
    /// `add`, `replace`, `delete`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Add => "add",
            Action::Replace => "replace",
            Action::Delete => "delete",
        }
    }
}

/// One netlink change and everything needed to undo it exactly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Op {
    /// Add, replace or delete.
    pub action: Action,
    /// The Node the object belongs to (`none` for leftovers no Node has).
    pub node: String,
    /// The object's identity ([`Object::key`]).
    pub key: String,
    /// The object as it is now (none for an add).
    pub before: Option<Object>,
    /// The object as it will be (none for a delete).
    pub after: Option<Object>,
    /// The finding that names the object: its kind.
    pub finding_kind: Kind,
    /// … and its subject.
    pub finding_subject: String,
    /// Why, in words.
    pub why: String,
}

impl Op {
    /// Builds an operation from its before and after objects (at least one).
    pub fn between(
        before: Option<Object>,
        after: Option<Object>,
        node: &str,
        finding: (Kind, &str),
        why: String,
    ) -> Self {
        let action = match (&before, &after) {
            (None, Some(_)) => Action::Add,
            (Some(_), Some(_)) => Action::Replace,
            (Some(_), None) => Action::Delete,
            (None, None) => panic!("an operation needs a before or an after object"),
        };
        let key = after
            .as_ref()
            .or(before.as_ref())
            .map(Object::key)
            .expect("checked");
        Self {
            action,
            node: node.to_owned(),
            key,
            before,
            after,
            finding_kind: finding.0,
            finding_subject: finding.1.to_owned(),
            why,
        }
    }

    /// The command a person would type for it.
    pub fn command(&self) -> String {
        match (&self.before, &self.after) {
            (_, Some(after)) => after.set_command(match self.action {
                Action::Add => "add",
                _ => "replace",
            }),
            (Some(before), None) => before.del_command(),
            (None, None) => unreachable!("an operation has a before or an after object"),
        }
    }

    /// The operation that undoes this one exactly.
    pub fn inverse(&self) -> Op {
        Op {
            action: match self.action {
                Action::Add => Action::Delete,
                Action::Replace => Action::Replace,
                Action::Delete => Action::Add,
            },
            node: self.node.clone(),
            key: self.key.clone(),
            before: self.after.clone(),
            after: self.before.clone(),
            finding_kind: self.finding_kind,
            finding_subject: self.finding_subject.clone(),
            why: format!("undo: {}", self.command()),
        }
    }

    /// The object's kind.
    pub fn object_kind(&self) -> super::object::ObjectKind {
        self.after
            .as_ref()
            .or(self.before.as_ref())
            .map(Object::kind)
            .expect("an operation has an object")
    }
}

/// An object the planner would change but does not now, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Held {
    /// The object's identity.
    pub key: String,
    /// The Node it belongs to.
    pub node: String,
    /// What would be done (`bridge fdb replace …`).
    pub command: String,
    /// Why not now.
    pub why: String,
}

/// The planner's answer when it may plan.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Plan {
    /// The cluster's VXLAN device.
    pub device: String,
    /// How many objects the desired state expects here (3 per other Node).
    pub expected_objects: usize,
    /// The operations, in order.
    pub ops: Vec<Op>,
    /// Objects that differ but are not changed now.
    pub held: Vec<Held>,
    /// Why the whole plan is refused (too many operations, too large a fraction).
    pub refused: Option<String>,
    /// Keys of the objects no Node accounts for seen now (the engine remembers since
    /// when, for `delete_after`).
    #[serde(skip)]
    pub deletable: Vec<String>,
}

impl Plan {
    /// The `repair_refused` finding for a refused plan.
    pub fn refused_candidate(&self) -> Option<Candidate> {
        let reason = self.refused.as_ref()?;
        let mut candidate = Candidate::new(
            Kind::RepairRefused,
            format!("repair plan for dev {}", self.device),
            Severity::Warning,
        )
        .with("reason", reason)
        .with("operations", self.ops.len())
        .with("expected_objects", self.expected_objects);
        for op in self.ops.iter().take(5) {
            candidate = candidate.with("operation", op.command());
        }
        Some(candidate)
    }
}

/// The planner's answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Outcome {
    /// Nothing may be planned: why.
    NoPlan {
        /// The reason (desired state unknown or empty, no VXLAN device, …).
        reason: String,
    },
    /// A plan (possibly empty or refused).
    Planned(Plan),
}

/// Kernel evidence for deletes: which addresses sent packets back lately.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Evidence {
    /// False when there is no traffic evidence at all (today always: neither the
    /// daemon nor a one-shot command gathers it): nothing is deleted then.
    pub available: bool,
    /// Remote addresses (VTEPs on the underlay, pods on the VXLAN device) that sent this
    /// node packets in the detection window.
    pub answering: BTreeSet<IpAddr>,
}

/// What repair remembers about one object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectHistory {
    /// When it was changed (changes and rollbacks) in the last hour.
    pub changes: Vec<Instant>,
    /// Rollbacks in a row.
    pub failures: u32,
    /// Being verified: not planned again meanwhile.
    pub busy: bool,
    /// Another writer put it back: left alone, with the reason.
    pub conflict: Option<String>,
    /// When a change to it was last verified.
    pub verified: Option<Instant>,
}

/// Per-object history: changes, failures, conflicts, and since when each leftover object
/// has been deletable. Plain data the engine keeps between cycles.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    objects: BTreeMap<String, ObjectHistory>,
    deletable_since: BTreeMap<String, Instant>,
}

const HOUR: Duration = Duration::from_secs(3600);

impl History {
    /// The history of `key`.
    pub fn get(&self, key: &str) -> Option<&ObjectHistory> {
        self.objects.get(key)
    }

    fn entry(&mut self, key: &str) -> &mut ObjectHistory {
        self.objects.entry(key.to_owned()).or_default()
    }

    /// `key` was changed (or rolled back) at `now`.
    pub fn record_change(&mut self, key: &str, now: Instant) {
        let entry = self.entry(key);
        entry
            .changes
            .retain(|at| now.saturating_duration_since(*at) < HOUR);
        entry.changes.push(now);
    }

    /// A change to `key` was rolled back: it backs off.
    pub fn record_failure(&mut self, key: &str) {
        self.entry(key).failures += 1;
    }

    /// A change to `key` was verified at `now`.
    pub fn record_success(&mut self, key: &str, now: Instant) {
        let entry = self.entry(key);
        entry.failures = 0;
        entry.verified = Some(now);
    }

    /// True when a change to `key` was verified less than `window` before `now`: if it
    /// needs repair again already, another writer put it back.
    pub fn verified_within(&self, key: &str, now: Instant, window: Duration) -> bool {
        self.objects
            .get(key)
            .and_then(|h| h.verified)
            .is_some_and(|at| now.saturating_duration_since(at) < window)
    }

    /// `key` is (or no longer is) being verified.
    pub fn set_busy(&mut self, key: &str, busy: bool) {
        self.entry(key).busy = busy;
    }

    /// Another writer owns `key` now: leave it alone.
    pub fn record_conflict(&mut self, key: &str, why: String) {
        self.entry(key).conflict = Some(why);
    }

    /// Forgets objects with nothing left to remember: not being verified, not in
    /// conflict, not changed in the last hour (keys of Nodes that left, of VTEP MACs
    /// that changed, would otherwise pile up over the daemon's uptime).
    pub fn prune(&mut self, now: Instant) {
        self.objects.retain(|_, h| {
            h.busy
                || h.conflict.is_some()
                || h.changes
                    .iter()
                    .any(|at| now.saturating_duration_since(*at) < HOUR)
        });
    }

    /// How many objects it remembers.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether it remembers none.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Nothing is being verified any more (the executor stopped).
    pub fn clear_busy(&mut self) {
        for entry in self.objects.values_mut() {
            entry.busy = false;
        }
    }

    /// The conflicts still held, by key.
    pub fn conflicts(&self) -> impl Iterator<Item = (&str, &str)> {
        self.objects
            .iter()
            .filter_map(|(k, h)| h.conflict.as_deref().map(|why| (k.as_str(), why)))
    }

    /// Forgets the conflict on `key` (the kernel agrees with the Nodes again).
    pub fn clear_conflict(&mut self, key: &str) {
        if let Some(entry) = self.objects.get_mut(key) {
            entry.conflict = None;
        }
    }

    /// The leftover objects seen now: remembered since their first sighting, forgotten
    /// when a plan no longer has them.
    pub fn observe_deletable(&mut self, keys: &[String], now: Instant) {
        let seen: BTreeSet<&String> = keys.iter().collect();
        self.deletable_since.retain(|k, _| seen.contains(k));
        for key in keys {
            self.deletable_since.entry(key.clone()).or_insert(now);
        }
    }

    /// Since when `key` has been deletable, if it has.
    pub fn deletable_since(&self, key: &str) -> Option<Instant> {
        self.deletable_since.get(key).copied()
    }

    /// Why `key` may not be changed now, if it may not.
    pub fn hold_reason(&self, key: &str, now: Instant, settings: &RepairConfig) -> Option<String> {
        let entry = self.objects.get(key)?;
        if let Some(why) = &entry.conflict {
            return Some(format!("in conflict, left alone: {why}"));
        }
        if entry.busy {
            return Some("a change to it is being verified".into());
        }
        let recent: Vec<&Instant> = entry
            .changes
            .iter()
            .filter(|at| now.saturating_duration_since(**at) < HOUR)
            .collect();
        if recent.len() >= settings.max_per_hour as usize {
            return Some(format!(
                "changed {} times in the last hour (repair.max_per_hour = {})",
                recent.len(),
                settings.max_per_hour
            ));
        }
        if entry.failures > 0
            && let Some(last) = recent.last()
        {
            let wait = backoff(entry.failures, settings.verify_window);
            let since = now.saturating_duration_since(**last);
            if since < wait {
                return Some(format!(
                    "backing off after {} rollback(s): next attempt in {}s",
                    entry.failures,
                    (wait - since).as_secs().max(1)
                ));
            }
        }
        None
    }
}

/// How long an object waits after `failures` rollbacks in a row: 6 verify windows (1 min
/// at the default), doubling, at most an hour.
pub fn backoff(failures: u32, verify_window: Duration) -> Duration {
    let base = verify_window * 6;
    let factor = 1u32 << failures.saturating_sub(1).min(10);
    (base * factor).min(HOUR)
}

/// Everything the planner looks at.
#[derive(Clone, Copy)]
pub struct Inputs<'a> {
    /// The mirror.
    pub net: &'a Snapshot,
    /// The desired state and its freshness.
    pub desired: &'a State,
    /// This node's name.
    pub own: &'a str,
    /// The active findings.
    pub findings: &'a [Finding],
    /// The `[repair]` settings.
    pub settings: &'a RepairConfig,
    /// Per-object history.
    pub history: &'a History,
    /// Traffic evidence for deletes.
    pub evidence: &'a Evidence,
    /// Now (for history and freshness).
    pub now: Instant,
}

/// The owned set for one snapshot and desired state (see the module documentation).
pub struct Owned<'a> {
    device: &'a Link,
    remotes: BTreeSet<PodSubnet>,
    own_subnet: Option<PodSubnet>,
    subnet_lens: BTreeSet<u8>,
    protect: &'a Protect,
    net: &'a Snapshot,
}

fn prefix_of(subnet: PodSubnet) -> Prefix {
    Prefix {
        addr: IpAddr::V4(subnet.network),
        len: subnet.len,
    }
}

fn subnet_of(prefix: &Prefix) -> Option<PodSubnet> {
    match prefix.addr {
        IpAddr::V4(v4) => PodSubnet::new(v4, prefix.len).filter(|s| s.network == v4),
        IpAddr::V6(_) => None,
    }
}

fn is_unicast_mac(mac: &[u8; 6]) -> bool {
    *mac != [0; 6] && mac[0] & 1 == 0
}

impl<'a> Owned<'a> {
    /// The owned set given the device, the expected objects and `[repair.protect]`.
    pub fn new(
        net: &'a Snapshot,
        device: &'a Link,
        expected: &Expected,
        protect: &'a Protect,
    ) -> Self {
        let remotes: BTreeSet<PodSubnet> = expected.remotes.iter().map(|r| r.subnet).collect();
        let own_subnet = expected.local.as_ref().map(|l| l.subnet);
        let subnet_lens = remotes
            .iter()
            .chain(own_subnet.iter())
            .map(|s| s.len)
            .collect();
        Self {
            device,
            remotes,
            own_subnet,
            subnet_lens,
            protect,
            net,
        }
    }

    fn device_ok(&self) -> bool {
        !self.protect.covers_device(&self.device.name)
    }

    fn dev_protected(&self, index: u32) -> bool {
        self.net
            .link(index)
            .is_some_and(|link| self.protect.covers_device(&link.name))
    }

    /// An FDB entry of the mirror.
    pub fn fdb(&self, entry: &FdbEntry) -> bool {
        self.device_ok()
            && entry.ifindex == self.device.index
            && is_unicast_mac(&entry.mac)
            && entry.vlan.is_none()
            && entry.master.is_none()
            && !entry.dst.is_some_and(|d| self.protect.covers_addr(&d))
    }

    /// A neighbour of the mirror.
    pub fn neighbour(&self, neighbour: &Neighbour) -> bool {
        self.device_ok()
            && neighbour.ifindex == self.device.index
            && neighbour.ip.is_ipv4()
            && !self.protect.covers_addr(&neighbour.ip)
            && !self
                .own_subnet
                .is_some_and(|own| matches!(neighbour.ip, IpAddr::V4(v4) if own.contains(v4)))
    }

    /// A route of the mirror.
    pub fn route(&self, route: &Route) -> bool {
        if route.table != TABLE_MAIN || !route.dst.is_ipv4() || route.tos != 0 {
            return false;
        }
        let Some(subnet) = subnet_of(&route.dst) else {
            return false;
        };
        if self.own_subnet.is_some_and(|own| own.overlaps(&subnet))
            || self.protect.covers_prefix(&route.dst)
            || route.oifs().any(|oif| self.dev_protected(oif))
        {
            return false;
        }
        if self.remotes.contains(&subnet) {
            // To another Node's pod subnet, whatever it goes through (no protected device:
            // checked above).
            return true;
        }
        // Flannel's form for a Node that left: `<subnet> via <network> dev <vxlan>`.
        self.device_ok()
            && route.kind == RouteKind::Unicast
            && route.nexthops.is_empty()
            && route.oif == Some(self.device.index)
            && route.gateway == Some(IpAddr::V4(subnet.network))
            && self.subnet_lens.contains(&subnet.len)
    }

    /// An object (from a plan or the journal) against this owned set.
    pub fn object(&self, object: &Object) -> bool {
        match object {
            Object::Fdb(f) => self.fdb(&f.to_model()),
            Object::Neighbour(n) => self.neighbour(&n.to_model()),
            Object::Route(r) => self.route(&r.to_model()),
        }
    }
}

/// Does `finding` name `object`? Its subject's words (or the routes it lists) carry the
/// object's identity: `fdb <mac> dev <dev> …`, `neigh|gateway <ip> dev <dev> …`, a route's
/// destination; `vtep_collapse` on the device names every missing FDB entry.
fn names(finding: &Finding, object: &Object, missing: bool) -> bool {
    let candidate = &finding.candidate;
    if matches!(
        candidate.kind,
        Kind::RepairRefused | Kind::RepairConflict | Kind::StaleAnnotation
    ) {
        return false;
    }
    let words: Vec<&str> = candidate.subject.split_whitespace().collect();
    let has = |word: &str| words.contains(&word);
    match object {
        Object::Fdb(f) => {
            (words.first() == Some(&"fdb") && has(&f.mac.to_string()) && has(&f.dev))
                || (missing
                    && candidate.kind == Kind::VtepCollapse
                    && words == ["dev", f.dev.as_str()])
        }
        Object::Neighbour(n) => {
            matches!(words.first(), Some(&"neigh") | Some(&"gateway"))
                && has(&n.ip.to_string())
                && has(&n.dev)
        }
        Object::Route(r) => {
            let dst = r.dst.to_string();
            (words.first() == Some(&"route") && has(&dst))
                || candidate.routes.iter().any(|route| route.prefix == dst)
        }
    }
}

fn covering<'f>(findings: &'f [Finding], object: &Object, missing: bool) -> Option<&'f Finding> {
    // The most severe first: the API's order.
    findings.iter().find(|f| names(f, object, missing))
}

/// The plan (see the module documentation).
pub fn plan(inputs: &Inputs<'_>) -> Outcome {
    let no_plan = |reason: String| Outcome::NoPlan { reason };
    let model = match inputs.desired {
        State::Unknown { reason } => return no_plan(format!("desired state unknown: {reason}")),
        State::Known { model, .. } => model.as_ref(),
    };
    let expected = expected(model, inputs.own);
    if expected.local.is_none() {
        return no_plan(format!(
            "desired state: this node ({}) is not a member of the overlay (no Node of that \
             name with Flannel's VXLAN annotations)",
            inputs.own
        ));
    }
    if expected.remotes.is_empty() {
        return no_plan("desired state is empty: no other Node takes part in the overlay".into());
    }
    let Some(device) = vxlan_device(inputs.net, &expected) else {
        return no_plan(format!(
            "no VXLAN device with VNI {} ({}): repair does not create devices",
            expected.vni, expected.device
        ));
    };
    if !device.admin_up {
        return no_plan(format!(
            "{} is down: repair does not bring devices up",
            device.name
        ));
    }
    let owned = Owned::new(inputs.net, device, &expected, &inputs.settings.protect);
    let mut plan = Plan {
        device: device.name.clone(),
        expected_objects: expected.remotes.len() * 3,
        ..Plan::default()
    };
    let mut sets = Vec::new();
    for remote in &expected.remotes {
        let ambiguous = ambiguity(model, remote);
        for (before, after) in wanted(inputs.net, device, remote) {
            let why = match (&after, &ambiguous) {
                (Object::Fdb(_) | Object::Neighbour(_), Ambiguity { mac: Some(why), .. }) => {
                    Some(why)
                }
                (
                    Object::Neighbour(_) | Object::Route(_),
                    Ambiguity {
                        subnet: Some(why), ..
                    },
                ) => Some(why),
                _ => None,
            };
            if let Some(why) = why {
                if owned.object(&after) {
                    plan.held.push(Held {
                        key: after.key(),
                        node: remote.node.clone(),
                        command: after.set_command(if before.is_some() {
                            "replace"
                        } else {
                            "add"
                        }),
                        why: why.clone(),
                    });
                }
                continue;
            }
            sets.push((remote.node.clone(), before, Some(after)));
        }
    }
    let deletes = leftovers(inputs.net, device, &expected, model);
    plan.deletable = deletes.iter().map(|(_, o)| o.key()).collect();
    for (node, before, after) in sets {
        let object = after.as_ref().expect("adds and replaces have an after");
        consider(
            inputs,
            &owned,
            &mut plan,
            &node,
            before,
            after.clone(),
            object,
        );
    }
    for (node, before) in deletes {
        consider_delete(inputs, &owned, &mut plan, &node, before);
    }
    // Adds and replaces first (per Node: FDB, neighbour, route), then deletes (route,
    // neighbour, FDB: the reverse dependency).
    plan.ops.sort_by_key(|op| {
        let kind = op.object_kind() as u8;
        match op.action {
            Action::Delete => (1, String::new(), 2 - kind),
            _ => (0, op.node.clone(), kind),
        }
    });
    if plan.ops.len() > inputs.settings.max_ops {
        plan.refused = Some(format!(
            "{} operations, more than repair.max_ops = {}",
            plan.ops.len(),
            inputs.settings.max_ops
        ));
    } else if plan.ops.len() as f64 > inputs.settings.max_fraction * plan.expected_objects as f64 {
        plan.refused = Some(format!(
            "{} operations would change {:.0} % of the {} expected objects, more than \
             repair.max_fraction = {} %",
            plan.ops.len(),
            100.0 * plan.ops.len() as f64 / plan.expected_objects as f64,
            plan.expected_objects,
            100.0 * inputs.settings.max_fraction
        ));
    }
    Outcome::Planned(plan)
}

/// Why the Nodes do not say one thing about a remote node's objects.
#[derive(Default)]
struct Ambiguity {
    /// Its VtepMAC is another member's too.
    mac: Option<String>,
    /// Its pod subnet overlaps another member's.
    subnet: Option<String>,
}

fn ambiguity(model: &crate::model::desired::Model, remote: &RemoteObjects) -> Ambiguity {
    let others = || model.members().filter(|(node, _)| node.name != remote.node);
    let mac = others()
        .find(|(_, vtep)| vtep.mac == remote.mac)
        .map(|(node, _)| {
            format!(
                "the Nodes are ambiguous: {} and {} share VtepMAC {} (stale_annotation); fix \
                 the annotations first",
                remote.node, node.name, remote.mac
            )
        });
    let subnet = others()
        .find(|(_, vtep)| vtep.subnet.overlaps(&remote.subnet))
        .map(|(node, vtep)| {
            format!(
                "the Nodes are ambiguous: {}'s pod subnet {} overlaps {}'s {} \
                 (stale_annotation); fix the Nodes first",
                remote.node, remote.subnet, node.name, vtep.subnet
            )
        });
    Ambiguity { mac, subnet }
}

/// (before, after) for each of `remote`'s objects that differs from Flannel's.
fn wanted(net: &Snapshot, device: &Link, remote: &RemoteObjects) -> Vec<(Option<Object>, Object)> {
    let mut out = Vec::new();
    let dev = device.name.clone();
    let fdb = Object::Fdb(Fdb {
        dev: dev.clone(),
        ifindex: device.index,
        mac: remote.mac,
        dst: Some(IpAddr::V4(remote.public_ip)),
        vni: None,
        port: None,
        state: 0x80,
    });
    match net
        .fdb_of(device.index)
        .find(|e| e.mac == remote.mac.0 && e.vlan.is_none() && e.master.is_none())
    {
        None => out.push((None, fdb)),
        Some(entry) if entry.dst != Some(IpAddr::V4(remote.public_ip)) => {
            out.push((Some(Object::Fdb(fdb_object(net, entry))), fdb));
        }
        Some(_) => {}
    }
    let gateway = IpAddr::V4(remote.gateway());
    let neigh = Object::Neighbour(Neigh {
        dev: dev.clone(),
        ifindex: device.index,
        ip: gateway,
        mac: Some(remote.mac),
        state: 0x80,
    });
    match net.neighbour(device.index, &gateway) {
        None => out.push((None, neigh)),
        Some(n) if n.mac != Some(remote.mac.0) => {
            out.push((Some(Object::Neighbour(neigh_object(net, n))), neigh));
        }
        Some(_) => {}
    }
    let route = Object::Route(flannel_route(device, remote.subnet));
    let prefix = prefix_of(remote.subnet);
    match net.route(TABLE_MAIN, &prefix, 0) {
        None => out.push((None, route)),
        Some(r) => {
            let right = r.kind == RouteKind::Unicast
                && r.nexthops.is_empty()
                && r.gateway == Some(gateway)
                && r.oif == Some(device.index);
            if !right {
                out.push((Some(Object::Route(route_object(net, r))), route));
            }
        }
    }
    out
}

/// Flannel's route to `subnet`: `<subnet> via <network> dev <device> onlink proto boot`.
pub fn flannel_route(device: &Link, subnet: PodSubnet) -> RouteObj {
    RouteObj {
        table: TABLE_MAIN,
        dst: prefix_of(subnet),
        kind: 1,
        gateway: Some(IpAddr::V4(subnet.network)),
        oif: Some(device.index),
        dev: Some(device.name.clone()),
        onlink: true,
        prefsrc: None,
        priority: 0,
        protocol: 3,
        scope: 0,
        tos: 0,
        nexthops: Vec::new(),
    }
}

/// Objects on the device that no Node accounts for: (node, object). `node` names the
/// Node whose `public-ip` an FDB entry points at, else `none`.
fn leftovers(
    net: &Snapshot,
    device: &Link,
    expected: &Expected,
    model: &crate::model::desired::Model,
) -> Vec<(String, Object)> {
    let mut out = Vec::new();
    for entry in net.fdb_of(device.index) {
        if !is_unicast_mac(&entry.mac)
            || entry.vlan.is_some()
            || entry.master.is_some()
            || model.node_with_mac(Mac(entry.mac)).is_some()
        {
            continue;
        }
        let node = match entry.dst {
            Some(IpAddr::V4(v4)) => model.node_with_public_ip(v4).map(|n| n.name.clone()),
            _ => None,
        };
        out.push((
            node.unwrap_or_else(|| "none".into()),
            Object::Fdb(fdb_object(net, entry)),
        ));
    }
    let own = expected.local.as_ref().map(|l| l.subnet);
    let known = |v4: Ipv4Addr| {
        expected.remotes.iter().any(|r| r.gateway() == v4) || own.is_some_and(|s| s.contains(v4))
    };
    for neighbour in net.neighbours() {
        if neighbour.ifindex != device.index || !neighbour.state.is_permanent() {
            continue;
        }
        if let IpAddr::V4(v4) = neighbour.ip
            && !known(v4)
        {
            out.push((
                "none".into(),
                Object::Neighbour(neigh_object(net, neighbour)),
            ));
        }
    }
    for route in net.routes_in_table(TABLE_MAIN) {
        if route.oif != Some(device.index) || route.gateway.is_none() {
            continue;
        }
        let Some(subnet) = subnet_of(&route.dst) else {
            continue;
        };
        if expected.remote_with_subnet(subnet).is_some() || own.is_some_and(|o| o.overlaps(&subnet))
        {
            continue;
        }
        out.push(("none".into(), Object::Route(route_object(net, route))));
    }
    out
}

fn consider(
    inputs: &Inputs<'_>,
    owned: &Owned<'_>,
    plan: &mut Plan,
    node: &str,
    before: Option<Object>,
    after: Option<Object>,
    object: &Object,
) {
    if !before.as_ref().is_none_or(|b| owned.object(b)) || !owned.object(object) {
        return;
    }
    let key = object.key();
    let command = match &before {
        None => object.set_command("add"),
        Some(_) => object.set_command("replace"),
    };
    let hold = |plan: &mut Plan, why: String| {
        plan.held.push(Held {
            key: key.clone(),
            node: node.to_owned(),
            command: command.clone(),
            why,
        })
    };
    let Some(finding) = covering(
        inputs.findings,
        before.as_ref().unwrap_or(object),
        before.is_none(),
    ) else {
        hold(
            plan,
            "no active finding names it yet (desired.grace and detect.confirm must pass)".into(),
        );
        return;
    };
    if let Some(why) = inputs
        .history
        .hold_reason(&key, inputs.now, inputs.settings)
    {
        hold(plan, why);
        return;
    }
    let why = match &before {
        None => format!("{key} is missing; {} needs it", node),
        Some(b) => format!(
            "{key} is `{}`; {} needs `{}`",
            b.spec(),
            node,
            object.spec()
        ),
    };
    plan.ops.push(Op::between(
        before,
        after,
        node,
        (finding.candidate.kind, &finding.candidate.subject),
        why,
    ));
}

fn consider_delete(
    inputs: &Inputs<'_>,
    owned: &Owned<'_>,
    plan: &mut Plan,
    node: &str,
    before: Object,
) {
    if !owned.object(&before) {
        return;
    }
    let key = before.key();
    let hold = |plan: &mut Plan, why: String| {
        plan.held.push(Held {
            key: key.clone(),
            node: node.to_owned(),
            command: before.del_command(),
            why,
        })
    };
    let Some(finding) = covering(inputs.findings, &before, false) else {
        hold(
            plan,
            "no active finding names it yet (desired.grace and detect.confirm must pass)".into(),
        );
        return;
    };
    if let Some(why) = inputs
        .history
        .hold_reason(&key, inputs.now, inputs.settings)
    {
        hold(plan, why);
        return;
    }
    let delete_after = inputs.settings.delete_after;
    let Some(since) = inputs.history.deletable_since(&key) else {
        hold(
            plan,
            format!(
                "first seen now: deleted only when seen again after repair.delete_after ({})",
                humantime::format_duration(delete_after)
            ),
        );
        return;
    };
    let seen_for = inputs.now.saturating_duration_since(since);
    if seen_for < delete_after {
        hold(
            plan,
            format!(
                "seen for {}s: deleted only when seen again after repair.delete_after ({})",
                seen_for.as_secs(),
                humantime::format_duration(delete_after)
            ),
        );
        return;
    }
    // The desired state must have been read again after the second observation point.
    let confirmed = match inputs.desired {
        State::Known { age, .. } => inputs.now.checked_sub(*age),
        State::Unknown { .. } => None,
    };
    if confirmed.is_none_or(|at| at < since + delete_after) {
        hold(
            plan,
            "waiting for a fresh read of the desired state since it was first seen".into(),
        );
        return;
    }
    if !inputs.evidence.available {
        hold(
            plan,
            "no traffic evidence (the daemon does not gather it for repair yet, and a \
             one-shot command has none): deletes need proof that nothing answers there, so \
             this one is left to a person"
                .into(),
        );
        return;
    }
    if let Some(addr) = answering(&before, inputs.evidence, &owned.subnet_lens) {
        hold(plan, format!("{addr} still answers there"));
        return;
    }
    let why = format!(
        "{key} (`{}`) belongs to no Node, seen for {}s, nothing answers",
        before.spec(),
        seen_for.as_secs()
    );
    plan.ops.push(Op::between(
        Some(before.clone()),
        None,
        node,
        (finding.candidate.kind, &finding.candidate.subject),
        why,
    ));
}

/// An address that answered behind `object`: the FDB entry's destination, any address
/// in the route's destination, or in the subnet (of the cluster's prefix lengths) whose
/// gateway the neighbour is.
fn answering(object: &Object, evidence: &Evidence, lens: &BTreeSet<u8>) -> Option<IpAddr> {
    match object {
        Object::Fdb(f) => f.dst.filter(|d| evidence.answering.contains(d)),
        Object::Neighbour(n) => evidence
            .answering
            .iter()
            .find(|addr| {
                **addr == n.ip
                    || lens.iter().any(|len| {
                        Prefix::new(n.ip, *len).is_ok_and(|p| p.network().contains(addr))
                    })
            })
            .copied(),
        Object::Route(r) => evidence
            .answering
            .iter()
            .find(|addr| r.dst.contains(addr))
            .copied(),
    }
}

#[cfg(test)]
mod tests;
