//! One detection cycle: the new sample into the window history, the judgement over the
//! window ([`judge`]: with the network mirror, the desired state and the prober's latest
//! results), the findings tracker; and the suspects the prober should check before the
//! next cycle.

use std::time::{Duration, Instant, SystemTime};

use super::{
    History,
    judge::{Context, Memory, judge},
};
use crate::{
    config::DetectConfig,
    detect::{self, Inputs, Sample},
    findings::{Candidate, Change, Finding, Tracker},
    model::{
        desired::State,
        endpoints::EndpointView,
        net::Snapshot,
        probe::{MtuTarget, ProbeBook, ProbeRequest},
        stack::StackRequest,
    },
    overlay::Observed,
};

/// Detection state carried from cycle to cycle.
pub struct Pipeline {
    settings: DetectConfig,
    history: History,
    tracker: Tracker,
    /// The prober's results as of the coming cycle.
    probes: ProbeBook,
    /// The suspects the last cycle named.
    requests: Vec<ProbeRequest>,
    /// The overlay peers whose path MTU the prober checks (the last cycle's).
    mtu_targets: Vec<MtuTarget>,
    /// What the stack source should read before the next cycle.
    stack: StackRequest,
    /// This node's name among the cluster's Nodes.
    node: String,
    /// What the detectors remember between cycles (grace, departed Nodes).
    memory: Memory,
    /// Findings repair raised (`repair_refused`, `repair_conflict`), for the next cycle.
    repair: Vec<Candidate>,
    /// Service endpoints and running pods' addresses, for the next cycle.
    endpoints: EndpointView,
}

/// What one cycle produced, for the sinks and for repair.
#[derive(Clone, Debug)]
pub struct Cycle {
    /// What fired and what resolved.
    pub changes: Vec<Change>,
    /// The desired state the detectors were given: known (the Nodes and how long since
    /// they were last confirmed current) or unknown (and why). Repair must not act on an
    /// unknown one.
    pub desired: State,
    /// The overlay compared with the desired state and which drifts lasted
    /// `desired.grace` (none while it is unknown, or before the window has two samples):
    /// what repair plans from.
    pub overlay: Option<Observed>,
}

impl Pipeline {
    /// A pipeline with empty history (no desired state: see [`Pipeline::with_desired`]).
    pub fn new(settings: DetectConfig) -> Self {
        Self {
            history: History::new(settings.window),
            tracker: Tracker::new(settings.confirm, settings.clear_after),
            settings,
            probes: ProbeBook::default(),
            requests: Vec::new(),
            mtu_targets: Vec::new(),
            stack: StackRequest::default(),
            node: String::new(),
            memory: Memory::new(Duration::ZERO),
            repair: Vec::new(),
            endpoints: EndpointView::default(),
        }
    }

    /// The Service endpoints and the running pods' addresses (the pods source's
    /// [`EndpointView`]), for the next cycle.
    pub fn set_endpoints(&mut self, view: EndpointView) {
        self.endpoints = view;
    }

    /// Repair's findings (a refused plan, objects in conflict), tracked from the next
    /// cycle like any detector's: they must persist `detect.confirm` cycles to fire.
    pub fn set_repair_candidates(&mut self, candidates: Vec<Candidate>) {
        self.repair = candidates;
    }

    /// The prober's latest results, for the next cycle.
    pub fn set_probes(&mut self, probes: ProbeBook) {
        self.probes = probes;
    }

    /// The suspects the last cycle named, for the prober (taken once).
    pub fn take_probe_requests(&mut self) -> Vec<ProbeRequest> {
        std::mem::take(&mut self.requests)
    }

    /// The overlay peers whose path MTU the prober checks, urgent ones marked (taken once).
    pub fn take_mtu_targets(&mut self) -> Vec<MtuTarget> {
        std::mem::take(&mut self.mtu_targets)
    }

    /// What the stack source should read for the next cycle: what explains the netfilter,
    /// reverse-path and checksum drops this cycle saw.
    pub fn stack_request(&self) -> StackRequest {
        self.stack.clone()
    }

    /// Compares the overlay with the desired state as node `node` (its name among the
    /// Nodes); a drift must last `grace` (`desired.grace`) to count.
    pub fn with_desired(mut self, node: &str, grace: Duration) -> Self {
        node.clone_into(&mut self.node);
        self.memory = Memory::new(grace);
        self
    }

    /// The bounds a Node's pod subnet must keep (see [`Memory::with_bounds`]); after
    /// [`Pipeline::with_desired`].
    pub fn with_bounds(mut self, bounds: crate::overlay::Bounds) -> Self {
        self.memory = self.memory.with_bounds(bounds);
        self
    }

    /// Adds `sample`, judges the window ([`judge`]: every detector, the overlay ones while
    /// `desired` is known), tracks the candidates with repair's, and returns what changed
    /// with the desired state and the overlay comparison it used.
    pub fn cycle(
        &mut self,
        net: &Snapshot,
        sample: Sample,
        desired: State,
        now: SystemTime,
    ) -> Cycle {
        self.history.push(sample);
        let Some(window) = self.history.window(self.settings.vtep_window) else {
            return Cycle {
                changes: Vec::new(),
                desired,
                overlay: None,
            };
        };
        let newest = &window.now;
        let inputs = Inputs {
            net,
            now: newest,
            then: &window.then,
            recent: &window.recent,
            settings: &self.settings,
            probes: &self.probes,
        };
        let at = newest.at.unwrap_or_else(Instant::now);
        let context = Context {
            desired: &desired,
            node: &self.node,
            endpoints: &self.endpoints,
        };
        let judgement = judge(&inputs, &context, &mut self.memory, at);
        let mut candidates = judgement.candidates;
        candidates.extend(std::mem::take(&mut self.repair));
        self.requests = detect::probe_requests(&inputs);
        self.mtu_targets = detect::mtu::mtu_targets(&inputs);
        self.stack = detect::stack_request(&inputs);
        Cycle {
            changes: self.tracker.update(now, candidates),
            desired,
            overlay: judgement.overlay,
        }
    }

    /// How long ago each remote address last sent this node a packet (the newest
    /// sample's peers, on any interface): repair's traffic evidence.
    pub fn replies(&self) -> std::collections::BTreeMap<std::net::IpAddr, Duration> {
        let mut replies = std::collections::BTreeMap::new();
        for ((_, addr), peer) in self.history.now().map(|s| &s.peers).into_iter().flatten() {
            if let Some(ago) = peer.last_rx_ago {
                replies
                    .entry(*addr)
                    .and_modify(|d: &mut Duration| *d = (*d).min(ago))
                    .or_insert(ago);
            }
        }
        replies
    }

    /// The active findings.
    pub fn active(&self) -> Vec<Finding> {
        self.tracker.active()
    }
}
