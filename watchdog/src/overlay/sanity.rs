//! Doubts about the desired state itself: when the Nodes do not say one thing about an
//! object (two Nodes with one VtepMAC or one `public-ip`, overlapping pod subnets), or a
//! Node claims a pod subnet no overlay route may have (one holding an address of this
//! node, overlapping the underlay, wider than [`Bounds::widest_v4`]), no side of a
//! comparison can be trusted. The detectors report each doubt (`stale_annotation`);
//! repair changes nothing a doubt touches. The desired state is sane before it is a
//! target.

use std::net::{IpAddr, Ipv4Addr};

use super::RemoteObjects;
use crate::model::{
    desired::{Mac, Model, PodSubnet},
    net::{Link, Prefix, Snapshot},
};

/// What no Node's pod subnet may be, beyond not overlapping another's: wider than this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// The widest IPv4 prefix length (`repair.widest_prefix_v4`, 16 by default).
    pub widest_v4: u8,
}

impl Default for Bounds {
    fn default() -> Self {
        Self { widest_v4: 16 }
    }
}

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
    /// Several members announce one `public-ip`: their VXLAN packets all go to one host.
    SharedPublicIp {
        /// The address.
        ip: Ipv4Addr,
        /// The members that announce it, by name.
        nodes: Vec<String>,
    },
    /// A member's pod subnet cannot be an overlay route on this node: it holds one of
    /// this node's addresses, overlaps the underlay, or is wider than the bound. Nothing
    /// of the Node is compared or planned.
    Unsafe {
        /// The member.
        node: String,
        /// Its pod subnet.
        subnet: PodSubnet,
        /// Why, in words (`holds 192.168.77.10, an address of this node`).
        reason: String,
    },
}

impl Doubt {
    /// The Nodes it names.
    pub fn nodes(&self) -> Vec<&str> {
        match self {
            Doubt::SharedMac { nodes, .. } => nodes.iter().map(String::as_str).collect(),
            Doubt::Overlap { a, b } => vec![a.0.as_str(), b.0.as_str()],
            Doubt::SharedPublicIp { nodes, .. } => nodes.iter().map(String::as_str).collect(),
            Doubt::Unsafe { node, .. } => vec![node.as_str()],
        }
    }

    /// Why none of `remote`'s objects can be trusted, if this doubt says so: its pod
    /// subnet is unsafe, or it shares its `public-ip` with another Node.
    pub fn on_node(&self, remote: &RemoteObjects) -> Option<String> {
        match self {
            Doubt::Unsafe {
                node,
                subnet,
                reason,
            } if *node == remote.node => Some(format!(
                "the Node is not believed: {node}'s pod subnet {subnet} {reason} \
                 (stale_annotation); nothing of it is planned, fix the Node first"
            )),
            Doubt::SharedPublicIp { ip, nodes } if nodes.contains(&remote.node) => {
                let others: Vec<&str> = nodes
                    .iter()
                    .filter(|n| **n != remote.node)
                    .map(String::as_str)
                    .collect();
                Some(format!(
                    "the Nodes are ambiguous: {} and {} share public-ip {ip} \
                     (stale_annotation); fix the annotations first",
                    remote.node,
                    others.join(", ")
                ))
            }
            _ => None,
        }
    }

    /// True when the Node's objects are not compared at all (its subnet is unsafe).
    pub fn hides(&self, node: &str) -> bool {
        matches!(self, Doubt::Unsafe { node: n, .. } if n == node)
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
/// each pair of members whose pod subnets overlap (ordered by name), then `public-ip`s
/// shared by several members (ordered by address).
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
    let mut by_ip: std::collections::BTreeMap<Ipv4Addr, Vec<String>> = Default::default();
    for (node, vtep) in model.members() {
        by_ip
            .entry(vtep.public_ip)
            .or_default()
            .push(node.name.clone());
    }
    doubts.extend(
        by_ip
            .into_iter()
            .filter(|(_, nodes)| nodes.len() > 1)
            .map(|(ip, nodes)| Doubt::SharedPublicIp { ip, nodes }),
    );
    doubts
}

/// The underlay's networks: the prefixes of the addresses on the VXLAN device's lower
/// link (`dev` of the device), and of the address the device sends from (`local`).
pub fn underlay(net: &Snapshot, device: Option<&Link>) -> Vec<Prefix> {
    let Some(vxlan) = device.and_then(|d| d.vxlan.as_ref()) else {
        return Vec::new();
    };
    net.addresses()
        .filter(|a| Some(a.ifindex) == vxlan.underlay || Some(a.prefix.addr) == vxlan.local)
        .map(|a| a.prefix.network())
        .collect()
}

/// Why `subnet` cannot be another Node's pod subnet on this node, if it cannot: it holds
/// one of this node's addresses (`net`), overlaps the `underlay`, or is wider than the
/// bound.
pub fn unsafe_subnet(
    subnet: PodSubnet,
    net: &Snapshot,
    underlay: &[Prefix],
    bounds: Bounds,
) -> Option<String> {
    if subnet.len < bounds.widest_v4 {
        return Some(format!(
            "is wider than /{} (repair.widest_prefix_v4)",
            bounds.widest_v4
        ));
    }
    let prefix = subnet.prefix();
    if let Some(under) = underlay
        .iter()
        .find(|u| u.is_ipv4() && (u.contains(&prefix.network().addr) || prefix.contains(&u.addr)))
    {
        return Some(format!("overlaps the underlay {under}"));
    }
    if let Some(address) = net
        .addresses()
        .map(|a| a.prefix.addr)
        .find(|addr| matches!(addr, IpAddr::V4(v4) if subnet.contains(*v4)))
    {
        return Some(format!("holds {address}, an address of this node"));
    }
    None
}

/// The doubts about the other members' pod subnets on this node (see [`unsafe_subnet`]),
/// ordered by name. This node's own subnet holds its own addresses by design.
pub fn local_doubts(
    model: &Model,
    own: &str,
    net: &Snapshot,
    device: Option<&Link>,
    bounds: Bounds,
) -> Vec<Doubt> {
    let underlay = underlay(net, device);
    model
        .members()
        .filter(|(node, _)| node.name != own)
        .filter_map(|(node, vtep)| {
            unsafe_subnet(vtep.subnet, net, &underlay, bounds).map(|reason| Doubt::Unsafe {
                node: node.name.clone(),
                subnet: vtep.subnet,
                reason,
            })
        })
        .collect()
}
