//! Injectors: each reproduces one incident of the design notes on a live lab.

use std::net::Ipv4Addr;

use super::{
    GHOST_MAC, Lab, VXLAN_DEV,
    netns::{batch, ip_tool},
    underlay_ip, vtep_mac,
};
use crate::ip;

impl Lab {
    // ---------------------------------------------------------------- injectors

    /// Incident 1, ghost VTEP: replaces node `node`'s FDB entry for `remote`'s VTEP MAC so
    /// it points at `new_dst` (normally [`RETIRED_VTEP`]).
    ///
    /// When `new_dst` is an underlay address no live node owns, node `node` also gets a
    /// permanent neighbour entry for it with [`GHOST_MAC`], which no underlay port has:
    /// VXLAN packets then leave the node and vanish in the underlay, with no local drop,
    /// exactly as in the incident (without it, ARP for the address would fail and the
    /// node would count `NEIGH_FAILED` drops, which the real incident never showed).
    pub fn repoint_fdb(&self, node: usize, remote: usize, new_dst: Ipv4Addr) {
        let ns = &self.node(node).ns;
        batch(
            "bridge",
            Some(ns),
            &[format!(
                "fdb replace {} dev {VXLAN_DEV} dst {new_dst} self permanent",
                vtep_mac(remote)
            )],
        );
        let on_underlay = new_dst.octets()[..3] == [192, 168, 77];
        let owned = self.nodes().any(|n| n.underlay_ip() == new_dst);
        if on_underlay && !owned {
            batch(
                "ip",
                Some(ns),
                &[format!(
                    "neigh replace {new_dst} lladdr {GHOST_MAC} dev eth0 nud permanent"
                )],
            );
        }
        let entries = self.fdb(node);
        let mac = vtep_mac(remote);
        assert!(
            entries
                .iter()
                .any(|e| e.mac == mac && e.dst == Some(new_dst))
                && !entries
                    .iter()
                    .any(|e| e.mac == mac && e.dst != Some(new_dst)),
            "repointing {mac} to {new_dst} on node {node} left: {entries:?}"
        );
    }

    /// Incident 7 (and 4), stale gateway: `ip route replace <prefix> via <gw> dev eth0
    /// onlink` on node `node`. Use a `gw` nobody owns (e.g. [`MISSING_GATEWAY`]): ARP for
    /// it never resolves, the neighbour goes INCOMPLETE → FAILED, and the node drops the
    /// traffic with `NEIGH_FAILED`.
    pub fn route_via_missing_gateway(&self, node: usize, prefix: &str, gw: Ipv4Addr) {
        self.ip_in(
            node,
            &[
                "route",
                "replace",
                prefix,
                "via",
                &gw.to_string(),
                "dev",
                "eth0",
                "onlink",
            ],
        );
    }

    /// Sets `dev` administratively down in node `node`. For `flannel.1` or `eth0` the
    /// kernel then removes the routes through it and the node answers with ICMP
    /// unreachable (it has no default route).
    pub fn down_link(&self, node: usize, dev: &str) {
        self.ip_in(node, &["link", "set", "dev", dev, "down"]);
    }

    /// Route via a downed link: takes the underlay side of node `node`'s `eth0` down, so
    /// `eth0` loses carrier while staying admin-up. The routes through it stay (marked
    /// `linkdown`) and keep drawing traffic, which the node can no longer send.
    pub fn cut_carrier(&self, node: usize) {
        let port = format!("n{}", self.node(node).index);
        ip(&[
            "-n",
            self.underlay.name(),
            "link",
            "set",
            "dev",
            &port,
            "down",
        ]);
    }

    /// Adds (or replaces) `blackhole <prefix>` on node `node`: a more specific blackhole
    /// draws the traffic of a pod CIDR route and discards it.
    pub fn blackhole_route(&self, node: usize, prefix: &str) {
        self.ip_in(node, &["route", "replace", "blackhole", prefix]);
    }

    /// The decommissioned node: deletes node `j`'s namespaces (node and pod, with their
    /// veths) while every other node keeps its route, neighbour and FDB entry for `j`.
    /// Traffic to pod `j` then goes to an underlay address nothing answers (ARP for it
    /// fails on the senders' `eth0`).
    ///
    /// Stop [`UdpStream`]s *from* pod `j` first: their threads hold the pod namespace
    /// alive (unnamed) until they stop. Streams *to* pod `j` may keep running.
    pub fn remove_node(&mut self, j: usize) {
        let node = self.nodes[j]
            .take()
            .unwrap_or_else(|| panic!("node {j} was already removed"));
        drop(node);
    }

    /// Incident 2, VTEP collapse: flushes `flannel.1`'s FDB on node `node`. Routes and
    /// neighbours stay, so traffic to every remote pod reaches `flannel.1`, which finds no
    /// FDB entry and drops it.
    pub fn flush_fdb(&self, node: usize) {
        let ns = &self.node(node).ns;
        ip_tool("bridge", Some(ns), &["fdb", "flush", "dev", VXLAN_DEV]);
        // Whatever the flush kept (older iproute2 keeps permanent entries), delete.
        let leftovers: Vec<String> = self
            .fdb(node)
            .into_iter()
            .map(|e| match e.dst {
                Some(dst) => format!("fdb del {} dev {VXLAN_DEV} dst {dst}", e.mac),
                None => format!("fdb del {} dev {VXLAN_DEV}", e.mac),
            })
            .collect();
        if !leftovers.is_empty() {
            batch("bridge", Some(ns), &leftovers);
        }
        let left = self.fdb(node);
        assert!(left.is_empty(), "flushing node {node}'s FDB left {left:?}");
    }

    /// Heals [`Lab::flush_fdb`]: appends node `node`'s FDB entry for every other live node
    /// again, as Flannel would.
    pub fn restore_fdb(&self, node: usize) {
        let ns = &self.node(node).ns;
        let entries: Vec<String> = (0..self.size())
            .filter(|&j| j != node && !self.is_removed(j))
            .map(|j| {
                format!(
                    "fdb append {} dev {VXLAN_DEV} dst {}",
                    vtep_mac(j),
                    underlay_ip(j)
                )
            })
            .collect();
        batch("bridge", Some(ns), &entries);
    }
}
