//! What the Nodes say must exist on one node: its own VXLAN device, and per other member
//! the FDB entry, neighbour and route flanneld programs (`pkg/backend/vxlan`), as text for
//! people and as the kernel objects themselves (`model::net` types).

use std::net::{IpAddr, Ipv4Addr};

use crate::model::{
    desired::{Mac, Model, PodSubnet},
    net::{FdbEntry, Link, NeighState, Neighbour, Route, TABLE_MAIN},
};

/// RTPROT_BOOT: the protocol `ip route` and flanneld's netlink library install routes with.
const PROTO_BOOT: u8 = 3;

/// The kernel objects flanneld programs on this node for one remote node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteObjects {
    /// The remote Node's name.
    pub node: String,
    /// Its pod subnet (the route's destination).
    pub subnet: PodSubnet,
    /// Its VTEP MAC (the neighbour's lladdr and the FDB entry's MAC).
    pub mac: Mac,
    /// Its `public-ip` (the FDB entry's dst).
    pub public_ip: Ipv4Addr,
}

impl RemoteObjects {
    /// The neighbour's address: the subnet's network address (`10.244.3.0`).
    pub fn gateway(&self) -> Ipv4Addr {
        self.subnet.gateway()
    }

    /// `ip neigh` form: `10.244.3.0 dev flannel.1 lladdr 12:c6:… PERMANENT`.
    pub fn neighbour(&self, dev: &str) -> String {
        format!(
            "neigh {} dev {dev} lladdr {} nud permanent",
            self.gateway(),
            self.mac
        )
    }

    /// `bridge fdb` form: `fdb 12:c6:… dev flannel.1 dst 192.168.1.5 self permanent`.
    pub fn fdb(&self, dev: &str) -> String {
        format!(
            "fdb {} dev {dev} dst {} self permanent",
            self.mac, self.public_ip
        )
    }

    /// `ip route` form: `route 10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink`.
    pub fn route(&self, dev: &str) -> String {
        format!(
            "route {} via {} dev {dev} onlink",
            self.subnet,
            self.gateway()
        )
    }

    /// The FDB entry on `device`: `<VtepMAC> dst <public-ip> self permanent`.
    pub fn fdb_entry(&self, device: &Link) -> FdbEntry {
        FdbEntry {
            ifindex: device.index,
            mac: self.mac.0,
            dst: Some(IpAddr::V4(self.public_ip)),
            vlan: None,
            vni: None,
            port: None,
            state: NeighState::PERMANENT,
            master: None,
        }
    }

    /// The neighbour on `device`: `<subnet>.0 lladdr <VtepMAC> nud permanent`.
    pub fn neighbour_entry(&self, device: &Link) -> Neighbour {
        Neighbour {
            ifindex: device.index,
            ip: IpAddr::V4(self.gateway()),
            mac: Some(self.mac.0),
            state: NeighState::PERMANENT,
        }
    }

    /// The route through `device`: `<subnet> via <subnet>.0 onlink proto boot`.
    pub fn route_entry(&self, device: &Link) -> Route {
        flannel_route(device, self.subnet)
    }
}

/// Flannel's route to `subnet` through `device`: `<subnet> via <network address> dev
/// <device> onlink proto boot`, table main, metric 0.
pub fn flannel_route(device: &Link, subnet: PodSubnet) -> Route {
    Route {
        gateway: Some(IpAddr::V4(subnet.gateway())),
        oif: Some(device.index),
        onlink: true,
        protocol: PROTO_BOOT,
        table: TABLE_MAIN,
        ..Route::unicast(subnet.prefix())
    }
}

/// What this node's own VXLAN device must look like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalObjects {
    /// This node's VTEP MAC (the device's MAC).
    pub mac: Mac,
    /// This node's `public-ip` (the device's local address).
    pub public_ip: Ipv4Addr,
    /// This node's pod subnet (no route through the device is expected for it).
    pub subnet: PodSubnet,
}

/// Every kernel object the desired state implies for one node: a pure function of the
/// model and the node's name, shared by the detectors and the repair planner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    /// This node's name among the Nodes.
    pub node: String,
    /// The cluster's VNI.
    pub vni: u32,
    /// The device Flannel creates for it: `flannel.<VNI>`.
    pub device: String,
    /// This node's own device, when this node takes part.
    pub local: Option<LocalObjects>,
    /// One entry per other member, by name.
    pub remotes: Vec<RemoteObjects>,
}

impl Expected {
    /// The remote node whose VTEP MAC is `mac`.
    pub fn remote_with_mac(&self, mac: Mac) -> Option<&RemoteObjects> {
        self.remotes.iter().find(|r| r.mac == mac)
    }

    /// The remote node whose pod subnet is exactly `subnet`.
    pub fn remote_with_subnet(&self, subnet: PodSubnet) -> Option<&RemoteObjects> {
        self.remotes.iter().find(|r| r.subnet == subnet)
    }
}

/// The kernel objects `own` must have according to `model` (see [`Expected`]). Nodes
/// that do not take part are left out; so is `own` itself from the remotes.
pub fn expected(model: &Model, own: &str) -> Expected {
    let vni = model.vni(own);
    let local = model
        .nodes
        .get(own)
        .and_then(|node| node.vtep.as_ref().ok())
        .map(|vtep| LocalObjects {
            mac: vtep.mac,
            public_ip: vtep.public_ip,
            subnet: vtep.subnet,
        });
    let remotes = model
        .members()
        .filter(|(node, _)| node.name != own)
        .map(|(node, vtep)| RemoteObjects {
            node: node.name.clone(),
            subnet: vtep.subnet,
            mac: vtep.mac,
            public_ip: vtep.public_ip,
        })
        .collect();
    Expected {
        node: own.to_owned(),
        vni,
        device: format!("flannel.{vni}"),
        local,
        remotes,
    }
}
