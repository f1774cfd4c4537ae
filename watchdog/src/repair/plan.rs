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
//! device is missing or down; a plan with more than `max_ops` operations or changing more
//! than `max_fraction` of the expected objects (3 per other Node) is refused whole; an
//! object changed `max_per_hour` times in the last hour, backing off after a rollback, in
//! conflict with another writer, or being verified is held.

use std::{collections::BTreeSet, net::IpAddr, time::Instant};

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
    overlay::{About, Drift, Observed},
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
    let owned = Owned::new(inputs.net, device, expected, &inputs.settings.protect);
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
                consider(inputs, &owned, &mut plan, drift, lasted, before, after);
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
    lasted: bool,
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
