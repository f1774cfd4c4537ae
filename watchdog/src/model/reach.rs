//! Whether this node reaches each other Node through the overlay: the targets (each
//! member's `flannel.<VNI>` address, the network address of its pod subnet, where Flannel
//! puts it) and the latest evidence per Node (a probe answered or not, and when). The
//! cluster's verdict (which Node the others cannot reach) is made from every node's
//! evidence by Prometheus rules; each daemon only says what it sees.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use super::desired::Model;

/// A Node to probe through the overlay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The Node's name.
    pub node: String,
    /// Its overlay address: the network address of its pod subnet (`10.244.3.0`), which
    /// Flannel puts on the Node's VXLAN device.
    pub address: Ipv4Addr,
}

/// Every member of the overlay but `own`, by name: one target per Node, so the number of
/// series stays the number of Nodes.
pub fn targets(model: &Model, own: &str) -> Vec<Target> {
    model
        .members()
        .filter(|(node, _)| node.name != own)
        .map(|(node, vtep)| Target {
            node: node.name.clone(),
            address: vtep.subnet.network,
        })
        .collect()
}

/// The latest evidence about one Node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Evidence {
    /// An answer came back through the overlay.
    pub reachable: bool,
    /// When the probe that decided it finished.
    pub at: Instant,
}

/// The latest evidence per peer Node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reach {
    /// By Node name.
    pub peers: BTreeMap<String, Evidence>,
}

impl Reach {
    /// Records a probe's verdict about `node`.
    pub fn record(&mut self, node: &str, reachable: bool, at: Instant) {
        self.peers
            .insert(node.to_owned(), Evidence { reachable, at });
    }

    /// Keeps only the Nodes of `targets` (a Node that left the cluster leaves the metrics).
    pub fn retain(&mut self, targets: &[Target]) {
        self.peers
            .retain(|node, _| targets.iter().any(|t| &t.node == node));
    }

    /// (Node, reachable, age of the evidence) for every Node with evidence, by name.
    pub fn rows(&self, now: Instant) -> Vec<(&str, bool, Duration)> {
        self.peers
            .iter()
            .map(|(node, e)| {
                (
                    node.as_str(),
                    e.reachable,
                    now.saturating_duration_since(e.at),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::desired::{Mac, Node, PodSubnet, Skip, Vtep};

    fn node(name: &str, i: u8, member: bool) -> Node {
        let subnet = PodSubnet::new(Ipv4Addr::new(10, 244, i, 0), 24).unwrap();
        Node {
            name: name.into(),
            addresses: Vec::new(),
            pod_subnet: Some(subnet),
            public_ip: Some(format!("192.168.77.{}", 10 + i)),
            public_ip_overwrite: None,
            vtep: if member {
                Ok(Vtep {
                    subnet,
                    vni: Some(1),
                    mac: Mac([2, 0xfa, 0, 0, 0, i]),
                    public_ip: Ipv4Addr::new(192, 168, 77, 10 + i),
                })
            } else {
                Err(Skip::NotManaged)
            },
        }
    }

    #[test]
    fn targets_are_the_other_members_at_their_overlay_address() {
        let mut model = Model::default();
        for (name, i, member) in [("a", 0, true), ("b", 1, true), ("c", 2, false)] {
            model.nodes.insert(name.into(), node(name, i, member));
        }
        assert_eq!(
            targets(&model, "a"),
            vec![Target {
                node: "b".into(),
                address: Ipv4Addr::new(10, 244, 1, 0)
            }]
        );
    }

    #[test]
    fn evidence_of_a_node_that_left_goes() {
        let now = Instant::now();
        let mut reach = Reach::default();
        reach.record("b", true, now);
        reach.record("gone", false, now);
        reach.retain(&[Target {
            node: "b".into(),
            address: Ipv4Addr::new(10, 244, 1, 0),
        }]);
        let rows = reach.rows(now + Duration::from_secs(3));
        assert_eq!(rows, vec![("b", true, Duration::from_secs(3))]);
    }
}
