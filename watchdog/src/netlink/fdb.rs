//! Bridge FDB entries (RTM_NEWNEIGH of AF_BRIDGE), both ways.

use netlink_packet_route::{
    AddressFamily,
    neighbour::{NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState},
    route::RouteType,
};

use super::{
    mac,
    neighbour::{neighbour_address, neighbour_ip},
};
use crate::model::net::{FdbEntry, NeighState};

/// The FDB entry a message of AF_BRIDGE describes (not a device's multicast address
/// list).
pub(super) fn decode(m: &NeighbourMessage) -> Option<FdbEntry> {
    let mut entry = FdbEntry {
        ifindex: m.header.ifindex,
        mac: [0; 6],
        dst: None,
        vlan: None,
        vni: None,
        port: None,
        state: NeighState(u16::from(m.header.state)),
        master: None,
    };
    let mut has_mac = false;
    for attr in &m.attributes {
        match attr {
            NeighbourAttribute::LinkLayerAddress(bytes) => {
                if let Some(mac) = mac(bytes) {
                    entry.mac = mac;
                    has_mac = true;
                }
            }
            NeighbourAttribute::Destination(dst) => entry.dst = neighbour_ip(dst),
            NeighbourAttribute::Vlan(vlan) => entry.vlan = Some(*vlan),
            NeighbourAttribute::Vni(vni) => entry.vni = Some(*vni),
            NeighbourAttribute::Port(port) => entry.port = Some(*port),
            NeighbourAttribute::Controller(master) if *master != 0 => entry.master = Some(*master),
            _ => {}
        }
    }
    // A device's multicast address list (`bridge fdb show` lists it as `self
    // permanent` entries of every device) is no forwarding entry, and the kernel does not
    // announce its changes: a multicast MAC without a remote is left out.
    let address_list = entry.mac[0] & 1 == 1 && entry.dst.is_none();
    (has_mac && !address_list).then_some(entry)
}

/// The message for `entry` (RTM_NEWNEIGH or RTM_DELNEIGH: the caller picks): `bridge fdb
/// … self` (NTF_SELF), or `… master` (NTF_MASTER) for an entry of a bridge port.
pub(super) fn encode(entry: &FdbEntry) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = entry.ifindex;
    m.header.state = NeighbourState::from(entry.state.0);
    m.header.flags = if entry.master.is_some() {
        NeighbourFlags::Controller
    } else {
        NeighbourFlags::Own
    };
    m.header.kind = RouteType::Unspec;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(entry.mac.to_vec()));
    if let Some(dst) = entry.dst {
        m.attributes
            .push(NeighbourAttribute::Destination(neighbour_address(dst)));
    }
    if let Some(vlan) = entry.vlan {
        m.attributes.push(NeighbourAttribute::Vlan(vlan));
    }
    if let Some(vni) = entry.vni {
        m.attributes.push(NeighbourAttribute::Vni(vni));
    }
    if let Some(port) = entry.port {
        m.attributes.push(NeighbourAttribute::Port(port));
    }
    if let Some(master) = entry.master {
        m.attributes.push(NeighbourAttribute::Controller(master));
    }
    m
}
