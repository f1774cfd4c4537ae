//! The planner: a pure function of (the overlay's comparison with the desired state and
//! which drifts lasted `desired.grace`, the mirror's snapshot, the desired state's
//! freshness, the `[repair]` settings, each object's history) to an ordered list of
//! operations, each with its exact inverse. It changes only the owned set
//! ([`Owned`](super::owned::Owned)).
//!
//! **What it plans** (each only for a drift that lasted `desired.grace`: the drifts the
//! detectors report as `overlay_drift`, from the same comparison): a missing FDB entry,
//! neighbour or route of another Node → add Flannel's object; an FDB entry whose
//! destination is not the Node's `public-ip`, a neighbour without the Node's VtepMAC, a
//! route to the Node's pod subnet through anything else → replace it with Flannel's
//! object (a route at another metric than Flannel's 0: add Flannel's, which the kernel
//! then prefers); an FDB entry for a MAC no Node has, a permanent neighbour or a
//! Flannel-form route for a subnet no Node has → delete, only once it has been seen twice
//! `delete_after` apart, the desired state was read again after that, and nothing answers
//! there. Objects a doubt about the Nodes touches (a shared VtepMAC, overlapping subnets)
//! are held. Adds and replaces come before deletes; per Node the FDB entry, then the
//! neighbour, then the route.
//!
//! **Guards**: no plan while the desired state is unknown (never listed, or its source
//! failing past `desired.stale_after`), empty, or this node is not in it, or the VXLAN
//! device is missing or down; a plan with more than `max_ops` operations, or over the
//! fraction guard below, is refused whole; an object changed `max_per_hour` times in the
//! last hour, backing off after a rollback, in conflict with another writer, or being
//! verified is held.
//!
//! **The fraction guard** (`max_fraction`) is there for the day the desired state is
//! wrong (a Node list half-written or from another cluster, annotations rewritten for
//! every Node at once): then most of the overlay looks wrong, and repairing from that
//! picture would rewrite or remove working paths en masse. Each operation is judged
//! against the side it acts on:
//!
//! - **adds and replaces** write what the Nodes say: at most `max_fraction` of the
//!   expected objects (3 per other Node, [`Plan::expected_objects`]);
//! - **replaces and deletes** change or remove what the kernel has: at most
//!   `max_fraction` of the overlay objects the kernel has on the device now
//!   ([`Plan::kernel_objects`]: the expected objects it has, right or not, plus the
//!   leftovers no Node accounts for);
//! - a plan that would **delete every** overlay object the kernel has is refused whatever
//!   `max_fraction` (even 1.0): a desired state that accounts for none of them is far
//!   more likely wrong than the whole overlay stale.
//!
//! Deletes used to be counted against the expected objects, which a removed Node's
//! leftovers do not belong to: a two-node cluster that lost a third Node expects 3
//! objects and has 3 leftovers, 100 % of 3, refused for ever at the default 0.5. Judged
//! against the kernel's 6 objects they are 50 % and are cleaned. What the guard still
//! catches: a desired state that makes every kernel object a leftover (100 % of what the
//! kernel has, and the rule above), or most of them (with 0.5, the desired state must
//! still account for at least as many of the kernel's objects as the plan deletes: at
//! most as many Nodes leave at once as other Nodes stay). Adds do not count
//! on the kernel's side (they change no path that exists), deletes not on the expected
//! side (they write nothing the Nodes say). Deletes have their own evidence besides
//! (two sightings `delete_after` apart, a fresh read, nothing answering there): the
//! fraction is the last line, not the first.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::{Duration, Instant},
};

use serde::Serialize;

use super::{
    history::History,
    object::Object,
    op::{Action, Op},
    owned::Owned,
};
use crate::{
    config::repair::RepairConfig,
    findings::{Candidate, Kind, Severity},
    model::{
        desired::State,
        net::{Prefix, Snapshot},
    },
    overlay::{About, Comparison, Drift, Observed},
};

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
    /// How many overlay objects the kernel has on the device now: the expected ones it
    /// has (right or not; none counted for a Node whose objects are not compared) and
    /// the leftovers no Node accounts for.
    pub kernel_objects: usize,
    /// The operations, in order.
    pub ops: Vec<Op>,
    /// Objects that differ but are not changed now.
    pub held: Vec<Held>,
    /// Objects the Nodes disagree with that carry traffic: never replaced, reported as
    /// `stale_annotation` (the kernel's entry works, the annotation does not).
    pub working: Vec<Held>,
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

/// Kernel evidence: which addresses sent packets back lately.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Evidence {
    /// False when there is no traffic evidence at all (a one-shot command has none, the
    /// daemon's peer counters read nothing): nothing is deleted then.
    pub available: bool,
    /// Remote addresses (VTEPs on the underlay, pods on the VXLAN device) that sent this
    /// node packets in the detection window.
    pub answering: BTreeSet<IpAddr>,
    /// How long ago each remote address last sent this node a packet: a reply from
    /// behind an object more recent than its drift proves the object works.
    pub replies: BTreeMap<IpAddr, Duration>,
}

impl Evidence {
    /// The evidence from per-peer "last packet received" ages: `answering` those within
    /// `window`. Available when any peer was read.
    pub fn from_replies(replies: BTreeMap<IpAddr, Duration>, window: Duration) -> Self {
        Self {
            available: !replies.is_empty(),
            answering: replies
                .iter()
                .filter(|(_, ago)| **ago <= window)
                .map(|(addr, _)| *addr)
                .collect(),
            replies,
        }
    }
}

/// Everything the planner looks at.
#[derive(Clone, Copy)]
pub struct Inputs<'a> {
    /// The mirror.
    pub net: &'a Snapshot,
    /// The desired state and its freshness.
    pub desired: &'a State,
    /// The overlay compared with that desired state on `net`, and which drifts lasted
    /// `desired.grace` (none before the first comparison).
    pub overlay: Option<&'a Observed>,
    /// The `[repair]` settings.
    pub settings: &'a RepairConfig,
    /// Per-object history.
    pub history: &'a History,
    /// Traffic evidence for deletes.
    pub evidence: &'a Evidence,
    /// Now (for history and freshness).
    pub now: Instant,
}

/// The plan (see the module documentation).
pub fn plan(inputs: &Inputs<'_>) -> Outcome {
    let no_plan = |reason: String| Outcome::NoPlan { reason };
    if let State::Unknown { reason } = inputs.desired {
        return no_plan(format!("desired state unknown: {reason}"));
    }
    let Some(observed) = inputs.overlay else {
        return no_plan("the overlay has not been compared with the desired state yet".into());
    };
    let comparison = &observed.comparison;
    let expected = &comparison.expected;
    if !comparison.takes_part() {
        return no_plan(format!(
            "desired state: this node ({}) is not a member of the overlay (no Node of that \
             name with Flannel's VXLAN annotations)",
            expected.node
        ));
    }
    if expected.remotes.is_empty() {
        return no_plan("desired state is empty: no other Node takes part in the overlay".into());
    }
    let Some(device) = &comparison.device else {
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
    let owned = Owned::new(inputs.net, device, expected, inputs.settings);
    let mut plan = Plan {
        device: device.name.clone(),
        expected_objects: expected.remotes.len() * 3,
        ..Plan::default()
    };
    plan.deletable = comparison
        .drifts
        .iter()
        .filter(|drift| drift.is_leftover())
        .filter_map(|drift| drift.kernel.as_ref())
        .map(|object| Object::of(inputs.net, object).key())
        .collect();
    for drift in &comparison.drifts {
        let lasted = observed.has_lasted(drift);
        match &drift.about {
            // Repair does not create, bring up or reconfigure devices.
            About::Device(_) => {}
            About::Member(remote) => {
                let Some(after) = drift.expected.as_ref().map(|o| Object::of(inputs.net, o)) else {
                    continue;
                };
                let before = drift
                    .kernel
                    .as_ref()
                    .map(|o| Object::of(inputs.net, o))
                    .filter(|before| before.key() == after.key());
                let doubt = comparison.doubts.iter().find_map(|doubt| match &after {
                    _ if doubt.on_node(remote).is_some() => doubt.on_node(remote),
                    Object::Fdb(_) => doubt.on_mac(remote),
                    Object::Neighbour(_) => {
                        doubt.on_mac(remote).or_else(|| doubt.on_subnet(remote))
                    }
                    Object::Route(_) => doubt.on_subnet(remote),
                });
                if let Some(why) = doubt {
                    if owned.object(&after) {
                        plan.held.push(Held {
                            key: after.key(),
                            node: remote.node.clone(),
                            command: after.set_command(if before.is_some() {
                                "replace"
                            } else {
                                "add"
                            }),
                            why,
                        });
                    }
                    continue;
                }
                let age = observed.age(drift);
                consider(
                    inputs,
                    &owned,
                    &mut plan,
                    drift,
                    (lasted, age),
                    before,
                    after,
                );
            }
            About::Leftover(_) => {
                let Some(before) = drift.kernel.as_ref().map(|o| Object::of(inputs.net, o)) else {
                    continue;
                };
                consider_delete(inputs, &owned, &mut plan, drift, lasted, before);
            }
        }
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
    plan.kernel_objects = kernel_objects(comparison);
    plan.refused = refusal(&plan, inputs.settings);
    Outcome::Planned(plan)
}

/// How many overlay objects the kernel has on the device (see [`Plan::kernel_objects`]):
/// 3 per compared Node less those missing, plus the leftovers.
fn kernel_objects(comparison: &Comparison) -> usize {
    let compared = comparison
        .expected
        .remotes
        .iter()
        .filter(|remote| !comparison.doubts.iter().any(|d| d.hides(&remote.node)))
        .count();
    let missing = comparison
        .drifts
        .iter()
        .filter(|drift| matches!(drift.about, About::Member(_)) && drift.kernel.is_none())
        .count();
    let leftovers = comparison.drifts.iter().filter(|d| d.is_leftover()).count();
    (compared * 3).saturating_sub(missing) + leftovers
}

/// Why the whole plan is refused, if it is: `max_ops`, then the fraction guard (see the
/// module documentation).
fn refusal(plan: &Plan, settings: &RepairConfig) -> Option<String> {
    let count = |action: Action| plan.ops.iter().filter(|op| op.action == action).count();
    let (adds, replaces, deletes) = (
        count(Action::Add),
        count(Action::Replace),
        count(Action::Delete),
    );
    let fraction = settings.max_fraction;
    let percent = |part: usize, whole: usize| 100.0 * part as f64 / whole.max(1) as f64;
    if plan.ops.len() > settings.max_ops {
        return Some(format!(
            "{} operations, more than repair.max_ops = {}",
            plan.ops.len(),
            settings.max_ops
        ));
    }
    if deletes > 0 && deletes >= plan.kernel_objects {
        return Some(format!(
            "{deletes} deletes would remove every one of the {} overlay objects the kernel \
             has: the desired state accounts for none of them, which is more likely wrong \
             than the whole overlay stale (refused whatever repair.max_fraction)",
            plan.kernel_objects
        ));
    }
    let writes = adds + replaces;
    if writes as f64 > fraction * plan.expected_objects as f64 {
        return Some(format!(
            "{writes} adds and replaces would change {:.0} % of the {} expected objects, \
             more than repair.max_fraction = {} %",
            percent(writes, plan.expected_objects),
            plan.expected_objects,
            100.0 * fraction
        ));
    }
    let changes = replaces + deletes;
    if changes as f64 > fraction * plan.kernel_objects as f64 {
        return Some(format!(
            "{changes} replaces and deletes would change {:.0} % of the {} overlay objects \
             the kernel has, more than repair.max_fraction = {} %",
            percent(changes, plan.kernel_objects),
            plan.kernel_objects,
            100.0 * fraction
        ));
    }
    None
}

/// Why nothing is planned for a drift yet.
const NOT_LASTED: &str =
    "not yet seen for desired.grace: the kernel may be on its way to what the Nodes say";

/// Why nothing is planned for the object `key` now, if something holds it: its drift has
/// not lasted the grace yet, or its history holds it (see [`History::hold_reason`]).
fn held_back(inputs: &Inputs<'_>, key: &str, lasted: bool) -> Option<String> {
    if !lasted {
        return Some(NOT_LASTED.into());
    }
    inputs.history.hold_reason(key, inputs.now, inputs.settings)
}

/// The operation that answers `drift`, named after it.
fn op_for(
    drift: &Drift,
    node: &str,
    before: Option<Object>,
    after: Option<Object>,
    why: String,
) -> Op {
    Op::between(
        before,
        after,
        node,
        (Kind::OverlayDrift, &drift.subject),
        why,
    )
}

fn consider(
    inputs: &Inputs<'_>,
    owned: &Owned<'_>,
    plan: &mut Plan,
    drift: &Drift,
    (lasted, age): (bool, Option<Duration>),
    before: Option<Object>,
    after: Object,
) {
    if !before.as_ref().is_none_or(|b| owned.object(b)) || !owned.object(&after) {
        return;
    }
    let node = drift.node.as_deref().unwrap_or("none");
    let key = after.key();
    let command = match &before {
        None => after.set_command("add"),
        Some(_) => after.set_command("replace"),
    };
    // Do no harm: an object that carries traffic is never replaced because the Nodes
    // disagree (the annotation may be the stale side).
    if let Some(before) = &before
        && let Some((addr, ago)) = replied_since(before, inputs.evidence, owned.subnet_lens(), age)
    {
        plan.working.push(Held {
            key,
            node: node.to_owned(),
            command,
            why: format!(
                "the kernel's entry works, the annotation does not: {addr} sent packets \
                 through `{}` {}s ago, after the difference appeared (stale_annotation)",
                before.spec(),
                ago.as_secs()
            ),
        });
        return;
    }
    if let Some(why) = held_back(inputs, &key, lasted) {
        plan.held.push(Held {
            key,
            node: node.to_owned(),
            command,
            why,
        });
        return;
    }
    let why = match &before {
        None => format!("{key} is missing; {node} needs it"),
        Some(b) => format!("{key} is `{}`; {node} needs `{}`", b.spec(), after.spec()),
    };
    plan.ops.push(op_for(drift, node, before, Some(after), why));
}

fn consider_delete(
    inputs: &Inputs<'_>,
    owned: &Owned<'_>,
    plan: &mut Plan,
    drift: &Drift,
    lasted: bool,
    before: Object,
) {
    if !owned.object(&before) {
        return;
    }
    let node = drift.node.as_deref().unwrap_or("none");
    let key = before.key();
    let hold = |plan: &mut Plan, why: String| {
        plan.held.push(Held {
            key: key.clone(),
            node: node.to_owned(),
            command: before.del_command(),
            why,
        })
    };
    if let Some(why) = held_back(inputs, &key, lasted) {
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
    if let Some(addr) = answering(&before, inputs.evidence, owned.subnet_lens()) {
        hold(plan, format!("{addr} still answers there"));
        return;
    }
    let why = format!(
        "{key} (`{}`) belongs to no Node, seen for {}s, nothing answers",
        before.spec(),
        seen_for.as_secs()
    );
    plan.ops
        .push(op_for(drift, node, Some(before.clone()), None, why));
}

/// An address behind `object` that sent packets well after its drift appeared (`age`:
/// so while the kernel had the object as it is), and how long ago. Nothing when the
/// drift's age is unknown.
fn replied_since(
    object: &Object,
    evidence: &Evidence,
    lens: &BTreeSet<u8>,
    age: Option<Duration>,
) -> Option<(IpAddr, Duration)> {
    // Twice as recent as the drift: a reply still in flight when the object changed
    // (the drift is first seen a poll later) does not count.
    let age = age?;
    evidence
        .replies
        .iter()
        .filter(|(_, ago)| **ago * 2 < age)
        .find(|(addr, _)| behind(object, addr, lens))
        .map(|(addr, ago)| (*addr, *ago))
}

/// True when `addr` answering shows `object` carries traffic (see [`answering`]).
fn behind(object: &Object, addr: &IpAddr, lens: &BTreeSet<u8>) -> bool {
    match object {
        Object::Fdb(f) => f.dst.as_ref() == Some(addr),
        Object::Neighbour(n) => {
            *addr == n.ip
                || lens
                    .iter()
                    .any(|len| Prefix::new(n.ip, *len).is_ok_and(|p| p.network().contains(addr)))
        }
        Object::Route(r) => r.dst.contains(addr),
    }
}

/// An address that answered behind `object`: the FDB entry's destination, any address
/// in the route's destination, or in the subnet (of the cluster's prefix lengths) whose
/// gateway the neighbour is.
fn answering(object: &Object, evidence: &Evidence, lens: &BTreeSet<u8>) -> Option<IpAddr> {
    evidence
        .answering
        .iter()
        .find(|addr| behind(object, addr, lens))
        .copied()
}

#[cfg(test)]
mod tests;
