//! The executor's world: what it needs besides the netlink socket and the journal. A
//! fresh read of the kernel, and whether the evidence behind an operation is gone: the
//! drift it answers no longer in a fresh comparison with the desired state
//! ([`drift_persists`]), and (in the daemon, with `prober.enabled`) the remote Node's
//! flannel address answering a probe through the overlay ([`probe_target`]).

use std::{future::Future, net::IpAddr, sync::Arc};

use super::{object::Object, op::Op};
use crate::{
    model::{
        desired::Model,
        net::Snapshot,
        probe::{Method, Outcome as ProbeOutcome},
    },
    overlay::{Departed, compare},
};

/// What the executor needs from the world besides the netlink socket: a fresh read of
/// the kernel, and whether the evidence behind an operation's finding is gone. The
/// daemon answers from its mirror and counters; `watchdog repair apply` from one-shot
/// dumps; tests can force a verification failure.
#[allow(async_fn_in_trait)] // used generically, on one runtime
pub trait World {
    /// A fresh read of the kernel (links, routes, neighbours, FDB).
    async fn read(&mut self) -> Result<Snapshot, String>;
    /// `None` when the evidence that raised `op`'s finding is gone in `net`, else why
    /// not (polled until `repair.verify_window` ends).
    async fn evidence(&mut self, op: &Op, net: &Snapshot) -> Option<String>;
}

/// Why `op` has not helped yet, if its drift is still in a comparison of `net` with
/// `model` as node `own`: the same comparison that planned it.
pub fn drift_persists(net: &Snapshot, model: &Model, own: &str, op: &Op) -> Option<String> {
    compare(net, model, own, &Departed::default())
        .drift(&op.finding_subject)
        .map(|drift| format!("the drift `{}` persists", drift.subject))
}

/// The address whose answer shows `op` helped: the remote Node's flannel address (the
/// route's destination network, the neighbour's address, the FDB MAC's neighbour).
pub fn probe_target(op: &Op, net: &Snapshot) -> Option<IpAddr> {
    match op.after.as_ref()? {
        Object::Route(r) => Some(r.dst.network().addr),
        Object::Neighbour(n) => Some(n.ip),
        Object::Fdb(f) => net
            .neighbours()
            .find(|n| n.ifindex == f.ifindex && n.mac == Some(f.mac))
            .map(|n| n.ip),
    }
}

/// A [`World`] from two closures, for callers that have them at hand.
pub struct FnWorld<R, E> {
    /// Reads the kernel.
    pub read: R,
    /// Judges the evidence.
    pub evidence: E,
}

impl<R, RF, E> World for FnWorld<R, E>
where
    R: FnMut() -> RF,
    RF: Future<Output = Result<Snapshot, String>>,
    E: FnMut(&Op, &Snapshot) -> Option<String>,
{
    async fn read(&mut self) -> Result<Snapshot, String> {
        (self.read)().await
    }

    async fn evidence(&mut self, op: &Op, net: &Snapshot) -> Option<String> {
        (self.evidence)(op, net)
    }
}

/// The daemon's world: each read a fresh dump (`read`); an operation's evidence is gone
/// when its drift is no longer in a comparison of the fresh dump with the desired state
/// the plan was made from *and*, when probing is on, the remote Node's flannel address
/// ([`probe_target`]) answers a probe through the overlay (`probe`).
pub struct OverlayWorld<R, P> {
    /// The desired state the plan was made from (none while settling a crash: the
    /// evidence is then the probe alone).
    pub model: Option<Arc<Model>>,
    /// This node's name.
    pub own: String,
    /// Reads the kernel.
    pub read: R,
    /// Probes an address through the overlay (none when `prober.enabled` is off, ICMP
    /// blocked on purpose, say: a change is then judged by its drift alone, never by a
    /// probe the operator turned off).
    pub probe: Option<P>,
    /// How `probe` asks, for the evidence's words.
    pub method: Method,
}

impl<R, RF, P, PF> World for OverlayWorld<R, P>
where
    R: FnMut() -> RF,
    RF: Future<Output = Result<Snapshot, String>>,
    P: FnMut(IpAddr) -> PF,
    PF: Future<Output = ProbeOutcome>,
{
    async fn read(&mut self) -> Result<Snapshot, String> {
        (self.read)().await
    }

    async fn evidence(&mut self, op: &Op, net: &Snapshot) -> Option<String> {
        if let Some(model) = &self.model
            && let Some(why) = drift_persists(net, model, &self.own, op)
        {
            return Some(why);
        }
        let probe = self.probe.as_mut()?;
        let target = probe_target(op, net)?;
        match probe(target).await {
            ProbeOutcome::Answered { .. } => None,
            ProbeOutcome::Unanswered => Some(format!(
                "{target} (the Node's flannel address) does not answer a {} probe",
                self.method.as_str()
            )),
            other => Some(format!("{target} (the Node's flannel address): {other:?}")),
        }
    }
}
