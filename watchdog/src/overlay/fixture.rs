//! A Flannel-style cluster by hand, for the unit tests of the rooms that compare with it
//! (`overlay`, `detect`, `repair`): Nodes `node-<j>` with VtepMAC `02:fa:00:00:00:0j`,
//! `public-ip` and InternalIP `192.168.77.(10+j)`, pod subnet `10.244.j.0/24`, VNI 1;
//! and node-0's kernel as Flannel programs it ([`node0`]).

use std::net::{IpAddr, Ipv4Addr};

use crate::model::{
    desired::{Mac, Model, Node, NodeAddress, PodSubnet, Vtep},
    net::{Address, FdbEntry, Link, NeighState, Neighbour, Route, Snapshot, Update, Vxlan},
};

/// `eth0`'s index.
pub const ETH0: u32 = 2;
/// `flannel.1`'s index.
pub const FLANNEL: u32 = 3;

/// An address from text.
pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Node `j`'s VtepMAC.
pub fn mac(j: u8) -> [u8; 6] {
    [0x02, 0xfa, 0, 0, 0, j]
}

/// Node `j` as a member of the overlay.
pub fn member(j: u8) -> Node {
    let public: Ipv4Addr = format!("192.168.77.{}", 10 + j).parse().unwrap();
    Node {
        name: format!("node-{j}"),
        addresses: vec![NodeAddress {
            kind: "InternalIP".into(),
            ip: IpAddr::V4(public),
        }],
        pod_subnet: PodSubnet::parse(&format!("10.244.{j}.0/24")),
        public_ip: Some(public.to_string()),
        public_ip_overwrite: None,
        vtep: Ok(Vtep {
            subnet: PodSubnet::parse(&format!("10.244.{j}.0/24")).unwrap(),
            vni: Some(1),
            mac: Mac(mac(j)),
            public_ip: public,
        }),
    }
}

/// A desired state of `nodes`.
pub fn model(nodes: impl IntoIterator<Item = Node>) -> Model {
    Model {
        nodes: nodes.into_iter().map(|n| (n.name.clone(), n)).collect(),
    }
}

/// node-0, node-1 and node-2.
pub fn cluster() -> Model {
    model((0..=2).map(member))
}

/// Node `name` of `model` announces VtepMAC `mac` (restarted, or a copied annotation).
pub fn set_vtep_mac(model: &mut Model, name: &str, mac: [u8; 6]) {
    let node = model.nodes.get_mut(name).expect("a Node of the model");
    node.vtep.as_mut().expect("a member").mac = Mac(mac);
}

/// node-0's VXLAN device at `flannel.1`'s index.
pub fn vxlan_link(vni: u32, name: &str) -> Link {
    vxlan_link_at(FLANNEL, vni, name)
}

/// node-0's VXLAN device (VtepMAC, local address, underlay `eth0`) with `vni`.
pub fn vxlan_link_at(index: u32, vni: u32, name: &str) -> Link {
    Link {
        kind: Some("vxlan".into()),
        mac: Some(mac(0)),
        vxlan: Some(Vxlan {
            vni,
            local: Some(ip("192.168.77.10")),
            port: 8472,
            underlay: Some(ETH0),
            learning: false,
        }),
        mtu: 1450,
        ..Link::named(index, name)
    }
}

/// The FDB entry for node `j` on `flannel.1`, towards `dst`.
pub fn fdb(j: u8, dst: &str) -> FdbEntry {
    FdbEntry {
        ifindex: FLANNEL,
        mac: mac(j),
        dst: Some(ip(dst)),
        vlan: None,
        vni: None,
        port: None,
        state: NeighState::PERMANENT,
        master: None,
    }
}

/// Flannel's route to node `j`'s pod subnet.
pub fn flannel_route(j: u8) -> Route {
    Route {
        gateway: Some(ip(&format!("10.244.{j}.0"))),
        oif: Some(FLANNEL),
        onlink: true,
        ..Route::unicast(format!("10.244.{j}.0/24").parse().unwrap())
    }
}

/// Flannel's neighbour for node `j`'s gateway.
pub fn neighbour(j: u8) -> Neighbour {
    Neighbour {
        ifindex: FLANNEL,
        ip: ip(&format!("10.244.{j}.0")),
        mac: Some(mac(j)),
        state: NeighState::PERMANENT,
    }
}

/// node-0 as Flannel programs it for `cluster()`.
pub fn node0() -> Snapshot {
    let mut net = Snapshot::new();
    net.apply(Update::NewLink(Link::named(ETH0, "eth0")));
    net.apply(Update::NewLink(vxlan_link(1, "flannel.1")));
    net.apply(Update::NewAddress(Address {
        ifindex: ETH0,
        prefix: "192.168.77.10/24".parse().unwrap(),
    }));
    for j in 1..=2u8 {
        net.apply(Update::NewRoute(flannel_route(j)));
        net.apply(Update::NewNeighbour(neighbour(j)));
        net.apply(Update::NewFdb(fdb(j, &format!("192.168.77.{}", 10 + j))));
    }
    net
}
