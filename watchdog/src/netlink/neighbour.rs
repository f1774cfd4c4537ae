//! ARP/NDP neighbours (RTM_NEWNEIGH of AF_INET/AF_INET6), both ways.

use std::net::IpAddr;

use netlink_packet_route::{
    AddressFamily,
    neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
    },
    route::RouteType,
};

use super::mac;
use crate::model::net::{NeighState, Neighbour};

/// A neighbour message's NDA_DST.
pub(super) fn neighbour_ip(address: &NeighbourAddress) -> Option<IpAddr> {
    match address {
        NeighbourAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        NeighbourAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        // AF_BRIDGE messages (the FDB) carry NDA_DST as raw bytes; the length says the
        // family.
        NeighbourAddress::Other(bytes) => match bytes.len() {
            4 => <[u8; 4]>::try_from(bytes.as_slice()).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(bytes.as_slice())
                .ok()
                .map(IpAddr::from),
            _ => None,
        },
        _ => None,
    }
}

/// A neighbour message's NDA_DST for `ip`.
pub(super) fn neighbour_address(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }
}

/// The ARP/NDP neighbour a message describes (not a proxy entry, not an address the
/// kernel derives).
pub(super) fn decode(m: &NeighbourMessage) -> Option<Neighbour> {
    if !matches!(m.header.family, AddressFamily::Inet | AddressFamily::Inet6)
        || m.header.flags.contains(NeighbourFlags::Proxy)
    {
        return None;
    }
    let mut ip = None;
    let mut lladdr = None;
    for attr in &m.attributes {
        match attr {
            NeighbourAttribute::Destination(dst) => ip = neighbour_ip(dst),
            NeighbourAttribute::LinkLayerAddress(bytes) => lladdr = mac(bytes),
            _ => {}
        }
    }
    let ip = ip?;
    let state = NeighState(u16::from(m.header.state));
    let derived = state == NeighState::NOARP
        && (ip.is_unspecified()
            || ip.is_loopback()
            || matches!(
                lladdr,
                Some([0, 0, 0, 0, 0, 0] | [0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
            ));
    if ip.is_multicast() || derived {
        // Entries the kernel creates as packets go out, without a notification, with an
        // address it derives (multicast groups, broadcast, loopback): no neighbour a
        // route can depend on.
        return None;
    }
    Some(Neighbour {
        ifindex: m.header.ifindex,
        ip,
        mac: lladdr,
        state,
    })
}

/// The message for `neighbour` (RTM_NEWNEIGH or RTM_DELNEIGH: the caller picks).
pub(super) fn encode(neighbour: &Neighbour) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = match neighbour.ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    m.header.ifindex = neighbour.ifindex;
    m.header.state = NeighbourState::from(neighbour.state.0);
    m.header.kind = RouteType::Unspec;
    m.attributes
        .push(NeighbourAttribute::Destination(neighbour_address(
            neighbour.ip,
        )));
    if let Some(mac) = neighbour.mac {
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    }
    m
}
