//! What one comparison cannot know alone: since when each drift has been seen (a drift
//! counts only once it lasted `desired.grace`, so Flannel's own reprogramming after a
//! Node changes is never acted on) and the Nodes that left the desired state while this
//! process watched. Plain data: the pipeline (or `watchdog check`) keeps it.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use super::{Comparison, Drift, compare};
use crate::model::{
    desired::{Mac, Model, Node, PodSubnet, State},
    net::Snapshot,
};

/// How many departed Nodes are remembered (the oldest are forgotten first).
const DEPARTED_MAX: usize = 256;

/// Nodes that were in the desired state and are no longer (deleted from the cluster, or
/// from the NodeList file) while this process watched: Flannel removes a Node's objects
/// only when its own watch sees the deletion, so what it leaves behind can still be
/// named after its Node.
#[derive(Clone, Debug, Default)]
pub struct Departed {
    /// The model of the last update (shared with the source, not a copy).
    last: Option<Arc<Model>>,
    /// Newest last.
    nodes: VecDeque<Node>,
}

impl Departed {
    /// Compares `model` with the previous one: Nodes gone from it are remembered, Nodes
    /// back in it forgotten.
    pub fn update(&mut self, model: &Arc<Model>) {
        if let Some(last) = &self.last {
            if Arc::ptr_eq(last, model) {
                return;
            }
            for (name, node) in &last.nodes {
                if !model.nodes.contains_key(name) {
                    self.nodes.retain(|n| n.name != *name);
                    self.nodes.push_back(node.clone());
                }
            }
        }
        self.nodes.retain(|n| !model.nodes.contains_key(&n.name));
        while self.nodes.len() > DEPARTED_MAX {
            self.nodes.pop_front();
        }
        self.last = Some(Arc::clone(model));
    }

    /// The departed Nodes, newest last.
    pub fn nodes(&self) -> impl DoubleEndedIterator<Item = &Node> {
        self.nodes.iter()
    }

    /// The newest departed Node whose VtepMAC was `mac`.
    pub fn with_mac(&self, mac: Mac) -> Option<&Node> {
        self.nodes
            .iter()
            .rev()
            .find(|n| n.vtep.as_ref().is_ok_and(|v| v.mac == mac))
    }

    /// The newest departed Node whose pod subnet was `subnet`.
    pub fn with_subnet(&self, subnet: PodSubnet) -> Option<&Node> {
        self.nodes
            .iter()
            .rev()
            .find(|n| n.pod_subnet == Some(subnet))
    }
}

/// A comparison and which of its drifts have lasted `desired.grace`.
#[derive(Clone, Debug)]
pub struct Observed {
    /// The desired state it was made from (shared with the source).
    pub model: Arc<Model>,
    /// The comparison.
    pub comparison: Comparison,
    /// The subjects of the drifts seen in every look for at least the grace.
    lasted: BTreeSet<String>,
}

impl Observed {
    /// Everything compared counts at once (no grace): for a person asking now
    /// (`watchdog repair plan`).
    pub fn at_once(model: Arc<Model>, comparison: Comparison) -> Self {
        let lasted = comparison
            .drifts
            .iter()
            .map(|d| d.subject.clone())
            .collect();
        Self {
            model,
            comparison,
            lasted,
        }
    }

    /// True when `drift` has lasted the grace.
    pub fn has_lasted(&self, drift: &Drift) -> bool {
        self.lasted.contains(&drift.subject)
    }

    /// The drifts that lasted the grace, in the comparison's order.
    pub fn lasted(&self) -> impl Iterator<Item = &Drift> {
        self.comparison.drifts.iter().filter(|d| self.has_lasted(d))
    }
}

/// What the comparison carries from look to look (see the module documentation).
#[derive(Clone, Debug)]
pub struct Memory {
    grace: Duration,
    since: BTreeMap<String, Instant>,
    departed: Departed,
}

impl Memory {
    /// Drifts must last `grace` before they count.
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            since: BTreeMap::new(),
            departed: Departed::default(),
        }
    }

    /// The Nodes that left the desired state while it was watched.
    pub fn departed(&self) -> &Departed {
        &self.departed
    }

    /// Compares `net` with the desired state as node `own` at `now` and remembers since
    /// when each drift is seen (a drift missing from one look starts over). Nothing, and
    /// everything forgotten, while the desired state is unknown.
    pub fn observe(
        &mut self,
        net: &Snapshot,
        state: &State,
        own: &str,
        now: Instant,
    ) -> Option<Observed> {
        let State::Known { model, .. } = state else {
            self.since.clear();
            return None;
        };
        self.departed.update(model);
        let comparison = compare(net, model, own, &self.departed);
        let lasted = self.lasting(now, &comparison.drifts);
        Some(Observed {
            model: Arc::clone(model),
            comparison,
            lasted,
        })
    }

    /// The subjects of `drifts` seen in every look for at least the grace (90% of it, so
    /// the jitter of a poll does not cost a whole cycle); the others are remembered, and
    /// forgotten as soon as a look does not have them.
    pub(super) fn lasting(&mut self, now: Instant, drifts: &[Drift]) -> BTreeSet<String> {
        let mut seen = BTreeMap::new();
        let mut lasted = BTreeSet::new();
        for drift in drifts {
            let since = self.since.get(&drift.subject).copied().unwrap_or(now);
            seen.insert(drift.subject.clone(), since);
            if now.saturating_duration_since(since) * 10 >= self.grace * 9 {
                lasted.insert(drift.subject.clone());
            }
        }
        self.since = seen;
        lasted
    }
}
