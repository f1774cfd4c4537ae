//! Routes (RTM_NEWROUTE), both ways.

use std::net::IpAddr;

use netlink_packet_route::{
    AddressFamily,
    route::{
        RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteNextHop, RouteNextHopFlags,
        RouteProtocol, RouteScope, RouteType, RouteVia,
    },
};

use crate::model::net::{NextHop, Prefix, Route, RouteKind};

fn route_ip(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

/// RTA_VIA: an IPv4 route via an IPv6 gateway (RFC 5549).
fn route_via(via: &RouteVia) -> Option<IpAddr> {
    match via {
        RouteVia::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteVia::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

/// The route a message describes (not a cloned route-cache entry).
pub(super) fn decode(m: &RouteMessage) -> Option<Route> {
    let h = &m.header;
    let unspecified = match h.address_family {
        AddressFamily::Inet => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    if h.flags.contains(RouteFlags::Cloned) {
        // Route cache exceptions (PMTU, redirects), not configuration.
        return None;
    }
    let mut route = Route {
        table: u32::from(h.table),
        dst: Prefix::new(unspecified, h.destination_prefix_length).ok()?,
        src: None,
        kind: RouteKind::from_u8(u8::from(h.kind)),
        gateway: None,
        oif: None,
        onlink: h.flags.contains(RouteFlags::Onlink),
        prefsrc: None,
        priority: 0,
        protocol: u8::from(h.protocol),
        scope: u8::from(h.scope),
        tos: h.tos,
        nexthops: Vec::new(),
    };
    for attr in &m.attributes {
        match attr {
            RouteAttribute::Table(table) => route.table = *table,
            RouteAttribute::Destination(dst) => {
                route.dst.addr = route_ip(dst).filter(|ip| ip.is_ipv4() == unspecified.is_ipv4())?
            }
            RouteAttribute::Source(src) => {
                route.src = route_ip(src)
                    .filter(|ip| ip.is_ipv4() == unspecified.is_ipv4())
                    .and_then(|ip| Prefix::new(ip, h.source_prefix_length).ok())
            }
            RouteAttribute::Gateway(gw) => route.gateway = route_ip(gw),
            RouteAttribute::Via(via) => route.gateway = route_via(via),
            RouteAttribute::Oif(oif) => route.oif = Some(*oif),
            RouteAttribute::PrefSource(src) => route.prefsrc = route_ip(src),
            RouteAttribute::Priority(priority) => route.priority = *priority,
            RouteAttribute::MultiPath(hops) => {
                route.nexthops = hops
                    .iter()
                    .map(|hop| {
                        let mut gateway = None;
                        for attr in &hop.attributes {
                            match attr {
                                RouteAttribute::Gateway(gw) => gateway = route_ip(gw),
                                RouteAttribute::Via(via) => gateway = route_via(via),
                                _ => {}
                            }
                        }
                        NextHop {
                            gateway,
                            oif: (hop.interface_index != 0).then_some(hop.interface_index),
                            onlink: hop.flags.contains(RouteNextHopFlags::Onlink),
                            dead: hop.flags.contains(RouteNextHopFlags::Dead),
                        }
                    })
                    .collect()
            }
            _ => {}
        }
    }
    if !route.dst.is_ipv4() {
        // The kernel lists an IPv6 ECMP route's siblings starting from whichever it
        // reports: the mirror keeps them sorted.
        route.nexthops.sort_by_key(|hop| (hop.oif, hop.gateway));
    }
    Some(route)
}

fn route_address(ip: IpAddr) -> RouteAddress {
    match ip {
        IpAddr::V4(v4) => RouteAddress::Inet(v4),
        IpAddr::V6(v6) => RouteAddress::Inet6(v6),
    }
}

/// The message for `route` (RTM_NEWROUTE or RTM_DELROUTE: the caller picks).
pub(super) fn encode(route: &Route) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = if route.dst.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    m.header.destination_prefix_length = route.dst.len;
    m.header.tos = route.tos;
    // Tables above 255 travel in RTA_TABLE only (RT_TABLE_COMPAT in the header).
    m.header.table = u8::try_from(route.table).unwrap_or(252);
    m.header.protocol = RouteProtocol::from(route.protocol);
    m.header.scope = RouteScope::from(route.scope);
    m.header.kind = RouteType::from(route.kind.number());
    if route.onlink {
        m.header.flags = RouteFlags::Onlink;
    }
    m.attributes.push(RouteAttribute::Table(route.table));
    m.attributes
        .push(RouteAttribute::Destination(route_address(route.dst.addr)));
    if let Some(src) = route.src {
        m.header.source_prefix_length = src.len;
        m.attributes
            .push(RouteAttribute::Source(route_address(src.addr)));
    }
    if let Some(gw) = route.gateway {
        m.attributes
            .push(RouteAttribute::Gateway(route_address(gw)));
    }
    if let Some(oif) = route.oif {
        m.attributes.push(RouteAttribute::Oif(oif));
    }
    if let Some(src) = route.prefsrc {
        m.attributes
            .push(RouteAttribute::PrefSource(route_address(src)));
    }
    if route.priority != 0 {
        m.attributes.push(RouteAttribute::Priority(route.priority));
    }
    if !route.nexthops.is_empty() {
        let hops = route
            .nexthops
            .iter()
            .map(|hop| {
                let mut next = RouteNextHop::default();
                next.interface_index = hop.oif.unwrap_or(0);
                if hop.onlink {
                    next.flags |= RouteNextHopFlags::Onlink;
                }
                if hop.dead {
                    next.flags |= RouteNextHopFlags::Dead;
                }
                if let Some(gw) = hop.gateway {
                    next.attributes
                        .push(RouteAttribute::Gateway(route_address(gw)));
                }
                next
            })
            .collect();
        m.attributes.push(RouteAttribute::MultiPath(hops));
    }
    m
}
