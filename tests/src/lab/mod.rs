//! A Flannel-style multi-node lab: N "nodes" joined by an underlay bridge, each with a
//! `flannel.1` VXLAN device built the way Flannel's vxlan backend builds it, a `cni0`
//! bridge and one pod. Plus traffic generators and injectors that reproduce the incidents
//! of `DESIGN.md` so the daemon can be shown to name the guilty route or FDB entry.
//!
//! Addressing (node indices are 0-based, `i` in `0..nodes`):
//!
//! | what                         | value                                   |
//! |------------------------------|-----------------------------------------|
//! | underlay (`eth0` in node)    | `192.168.77.(10+i)/24`                  |
//! | VTEP MAC of `flannel.1`      | `02:fa:00:00:00:0i`                     |
//! | `flannel.1` address          | `10.244.i.0/32`, MTU 1450, VNI 1, 8472  |
//! | pod CIDR, `cni0` address     | `10.244.i.0/24`, `10.244.i.1/24`        |
//! | pod (`eth0` in pod)          | `10.244.i.2/24`, default via 10.244.i.1 |
//!
//! Every pod runs a responder thread: a UDP echo on [`ECHO_PORT`] and a TCP listener on
//! [`TCP_PORT`] that accepts and closes. Everything (threads first, then namespaces) is
//! torn down by `Drop`, also when a test panics.

mod build;
mod inject;
pub mod netns;
pub mod nodes;
mod observe;
pub mod pods;
mod traffic;

use std::{net::Ipv4Addr, sync::atomic::Ordering, time::Duration};

use self::netns::Background;
pub use self::{
    observe::{FdbEntry, LinkStats, config_dump},
    traffic::{
        BULK_PORT, ConnectReport, ConnectivityError, ONE_WAY_PORT, OneWayUdp, PairFailure,
        PortScan, StreamStats, TcpBulk, UdpStream,
    },
};
use crate::NetNs;

/// Smallest lab [`Lab::new`] builds.
pub const MIN_NODES: usize = 2;
/// Largest lab [`Lab::new`] builds (the MAC and address scheme use one digit).
pub const MAX_NODES: usize = 6;
/// UDP port of the echo responder in every pod.
pub const ECHO_PORT: u16 = 7777;
/// TCP port every pod listens on (accepts and closes).
pub const TCP_PORT: u16 = 8080;
/// Flannel's VXLAN UDP port.
pub const VXLAN_PORT: u16 = 8472;
/// MTU of `flannel.1`, `cni0` and pod interfaces (1500 minus VXLAN overhead).
pub const OVERLAY_MTU: u32 = 1450;
/// The VXLAN device's name, as Flannel names it for VNI 1.
pub const VXLAN_DEV: &str = "flannel.1";
/// An underlay address no node owns: the "retired" VTEP of incident 1.
pub const RETIRED_VTEP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 99);
/// An underlay address no node owns, to use as a gateway that never answers (incident 7).
pub const MISSING_GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 98);
/// The MAC [`Lab::repoint_fdb`] pins for a retired VTEP: no port of the underlay has it.
pub const GHOST_MAC: &str = "02:de:ad:00:00:99";
/// Timeout of each attempt in [`Lab::tcp_connect_attempts`].
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);

/// Node `i`'s underlay address, `192.168.77.(10+i)`.
pub fn underlay_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 77, 10 + index_octet(i))
}

/// Node `i`'s VTEP MAC, `02:fa:00:00:00:0i`.
pub fn vtep_mac(i: usize) -> String {
    format!("02:fa:00:00:00:{:02x}", index_octet(i))
}

/// Node `i`'s `flannel.1` address, `10.244.i.0`.
pub fn overlay_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, index_octet(i), 0)
}

/// Node `i`'s pod CIDR, `10.244.i.0/24`.
pub fn pod_cidr(i: usize) -> String {
    format!("{}/24", overlay_ip(i))
}

/// Node `i`'s `cni0` address (the pod's gateway), `10.244.i.1`.
pub fn gateway_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, index_octet(i), 1)
}

/// The address of node `i`'s pod, `10.244.i.2`.
pub fn pod_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, index_octet(i), 2)
}

fn index_octet(i: usize) -> u8 {
    assert!(i < MAX_NODES, "node index {i} out of range 0..{MAX_NODES}");
    i as u8
}

/// One node: its namespace (underlay `eth0`, `flannel.1`, `cni0`) and its pod's namespace.
#[derive(Debug)]
pub struct Node {
    index: usize,
    // Drop order matters: the responder thread holds a reference to the pod namespace.
    responder: Background,
    pod: NetNs,
    ns: NetNs,
}

impl Node {
    /// The node's index in the lab (0-based).
    pub fn index(&self) -> usize {
        self.index
    }

    /// The node's network namespace (where the daemon would run).
    pub fn ns(&self) -> &NetNs {
        &self.ns
    }

    /// The namespace of the node's pod.
    pub fn pod_ns(&self) -> &NetNs {
        &self.pod
    }

    /// The node's underlay address on `eth0`.
    pub fn underlay_ip(&self) -> Ipv4Addr {
        underlay_ip(self.index)
    }

    /// The MAC address of the node's `flannel.1`.
    pub fn vtep_mac(&self) -> String {
        vtep_mac(self.index)
    }

    /// The node's `flannel.1` address, `10.244.i.0`.
    pub fn overlay_ip(&self) -> Ipv4Addr {
        overlay_ip(self.index)
    }

    /// The node's pod CIDR, `10.244.i.0/24`.
    pub fn pod_cidr(&self) -> String {
        pod_cidr(self.index)
    }

    /// The `cni0` address, `10.244.i.1`.
    pub fn gateway_ip(&self) -> Ipv4Addr {
        gateway_ip(self.index)
    }

    /// The pod's address, `10.244.i.2`.
    pub fn pod_ip(&self) -> Ipv4Addr {
        pod_ip(self.index)
    }
}

/// A lab of Flannel VXLAN nodes on one underlay bridge. Dropping it removes everything.
#[derive(Debug)]
pub struct Lab {
    // Dropped first: node threads and namespaces, then the underlay.
    nodes: Vec<Option<Node>>,
    underlay: NetNs,
}

impl Lab {
    /// How many nodes the lab was built with (removed ones included).
    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// Node `i`. Panics if `i` is out of range or was removed by [`Lab::remove_node`].
    pub fn node(&self, i: usize) -> &Node {
        self.nodes
            .get(i)
            .unwrap_or_else(|| panic!("the lab has {} nodes, no node {i}", self.nodes.len()))
            .as_ref()
            .unwrap_or_else(|| panic!("node {i} was removed by remove_node"))
    }

    /// The nodes not removed, in index order.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().flatten()
    }

    /// Whether node `i` was removed by [`Lab::remove_node`].
    pub fn is_removed(&self, i: usize) -> bool {
        self.nodes.get(i).is_some_and(Option::is_none)
    }

    /// The namespace holding the underlay bridge `br-ul` (ports `n0`, `n1`, …).
    pub fn underlay(&self) -> &NetNs {
        &self.underlay
    }

    /// Names of every namespace the lab currently owns (underlay, nodes, pods).
    pub fn namespace_names(&self) -> Vec<String> {
        std::iter::once(self.underlay.name().to_owned())
            .chain(
                self.nodes()
                    .flat_map(|node| [node.ns.name().to_owned(), node.pod.name().to_owned()]),
            )
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Threads and node namespaces first (each Node joins its thread before its
        // namespaces go), then the underlay. Signal every thread first so their
        // receive timeouts run out together.
        for node in self.nodes.iter().flatten() {
            node.responder.stop.store(true, Ordering::Relaxed);
        }
        self.nodes.clear();
    }
}
