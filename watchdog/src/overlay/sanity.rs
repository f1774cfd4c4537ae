//! Doubts about the desired state itself: when the Nodes do not say one thing about an
//! object (two Nodes with one VtepMAC, overlapping pod subnets), no side of a comparison
//! can be trusted. The detectors report each doubt (`stale_annotation`); repair changes
//! nothing a doubt touches.

use super::RemoteObjects;
use crate::model::desired::{Mac, Model, PodSubnet};

/// One thing the Nodes contradict themselves about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Doubt {
    /// Several members announce one VtepMAC: a node keeps one FDB entry per MAC, so only
    /// one of them is reachable. The Nodes by name.
    SharedMac {
        /// The MAC.
        mac: Mac,
        /// The members that announce it, by name.
        nodes: Vec<String>,
    },
    /// Two members own overlapping pod subnets: the shared addresses are routed to one.
    Overlap {
        /// One member and its subnet.
        a: (String, PodSubnet),
        /// The other (later by name).
        b: (String, PodSubnet),
    },
}

impl Doubt {
    /// The Nodes it names.
    pub fn nodes(&self) -> Vec<&str> {
        match self {
            Doubt::SharedMac { nodes, .. } => nodes.iter().map(String::as_str).collect(),
            Doubt::Overlap { a, b } => vec![a.0.as_str(), b.0.as_str()],
        }
    }

    /// Why `remote`'s FDB entry and neighbour (by its MAC) cannot be trusted, if this
    /// doubt says so: the other Node sharing its VtepMAC.
    pub fn on_mac(&self, remote: &RemoteObjects) -> Option<String> {
        let Doubt::SharedMac { mac, nodes } = self else {
            return None;
        };
        if *mac != remote.mac || !nodes.contains(&remote.node) {
            return None;
        }
        let other = nodes.iter().find(|n| **n != remote.node)?;
        Some(format!(
            "the Nodes are ambiguous: {} and {other} share VtepMAC {mac} (stale_annotation); \
             fix the annotations first",
            remote.node
        ))
    }

    /// Why `remote`'s neighbour and route (by its subnet) cannot be trusted, if this doubt
    /// says so: the other Node whose subnet overlaps.
    pub fn on_subnet(&self, remote: &RemoteObjects) -> Option<String> {
        let Doubt::Overlap { a, b } = self else {
            return None;
        };
        let other = if a.0 == remote.node {
            b
        } else if b.0 == remote.node {
            a
        } else {
            return None;
        };
        Some(format!(
            "the Nodes are ambiguous: {}'s pod subnet {} overlaps {}'s {} (stale_annotation); \
             fix the Nodes first",
            remote.node, remote.subnet, other.0, other.1
        ))
    }
}

/// Every doubt about `model`: VtepMACs shared by several members (ordered by MAC), then
/// each pair of members whose pod subnets overlap (ordered by name).
pub fn doubts(model: &Model) -> Vec<Doubt> {
    let mut by_mac: std::collections::BTreeMap<Mac, Vec<String>> = Default::default();
    for (node, vtep) in model.members() {
        by_mac.entry(vtep.mac).or_default().push(node.name.clone());
    }
    let mut doubts: Vec<Doubt> = by_mac
        .into_iter()
        .filter(|(_, nodes)| nodes.len() > 1)
        .map(|(mac, nodes)| Doubt::SharedMac { mac, nodes })
        .collect();
    let members: Vec<_> = model.members().collect();
    for (i, (a, va)) in members.iter().enumerate() {
        for (b, vb) in &members[i + 1..] {
            if va.subnet.overlaps(&vb.subnet) {
                doubts.push(Doubt::Overlap {
                    a: (a.name.clone(), va.subnet),
                    b: (b.name.clone(), vb.subnet),
                });
            }
        }
    }
    doubts
}
