//! Netlink messages → model [`Update`]s. Nothing here fails: a message the model has no
//! place for (another family, a cloned route, a proxy neighbour) or without the
//! attributes that identify its object gives `None`; unknown attributes are skipped.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_APPEND, NLM_F_REPLACE};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage},
    link::{InfoData, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, State},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage},
    route::{RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteNextHopFlags, RouteVia},
    rule::{RuleAction as NlRuleAction, RuleAttribute, RuleFlags, RuleMessage},
};

use crate::model::net::{
    Address, FdbEntry, Link, NeighState, Neighbour, NextHop, Prefix, Route, RouteKind, Rule,
    RuleAction, Update, Vxlan,
};

/// The update a netlink message announces, if the mirror keeps that kind of object.
/// `flags` are the message's netlink header flags: for a route, NLM_F_REPLACE or
/// NLM_F_APPEND say where it goes among the routes with its key (a dump's messages are
/// passed with NLM_F_APPEND: they come in the kernel's order).
pub(crate) fn update(message: RouteNetlinkMessage, flags: u16) -> Option<Update> {
    match message {
        RouteNetlinkMessage::NewLink(m) => link(&m).map(Update::NewLink),
        RouteNetlinkMessage::DelLink(m) => {
            // AF_BRIDGE link messages are about bridge-port state: a DELLINK of that
            // family means "left the bridge", not "gone".
            (m.header.interface_family == AddressFamily::Unspec && m.header.index != 0)
                .then_some(Update::DelLink(m.header.index))
        }
        RouteNetlinkMessage::NewAddress(m) => address(&m).map(Update::NewAddress),
        RouteNetlinkMessage::DelAddress(m) => address(&m).map(Update::DelAddress),
        RouteNetlinkMessage::NewRoute(m) => route(&m).map(|route| {
            if flags & NLM_F_REPLACE != 0 {
                Update::NewRoute(route)
            } else {
                Update::AddRoute {
                    route,
                    append: flags & NLM_F_APPEND != 0,
                }
            }
        }),
        RouteNetlinkMessage::DelRoute(m) => route(&m).map(Update::DelRoute),
        RouteNetlinkMessage::NewRule(m) => rule(&m).map(Update::NewRule),
        RouteNetlinkMessage::DelRule(m) => rule(&m).map(Update::DelRule),
        RouteNetlinkMessage::NewNeighbour(m) => match m.header.family {
            AddressFamily::Bridge => fdb(&m).map(Update::NewFdb),
            _ => neighbour(&m).map(Update::NewNeighbour),
        },
        RouteNetlinkMessage::DelNeighbour(m) => match m.header.family {
            AddressFamily::Bridge => fdb(&m).map(Update::DelFdb),
            _ => neighbour(&m).map(Update::DelNeighbour),
        },
        _ => None,
    }
}

fn mac(bytes: &[u8]) -> Option<[u8; 6]> {
    bytes.try_into().ok()
}

fn link(m: &LinkMessage) -> Option<Link> {
    if m.header.interface_family != AddressFamily::Unspec || m.header.index == 0 {
        return None;
    }
    let flags = m.header.flags;
    let mut link = Link {
        index: m.header.index,
        name: String::new(),
        kind: None,
        admin_up: flags.contains(LinkFlags::Up),
        oper_up: flags.contains(LinkFlags::LowerUp),
        mtu: 0,
        master: None,
        mac: None,
        vxlan: None,
    };
    let mut operstate = None;
    for attr in &m.attributes {
        match attr {
            LinkAttribute::IfName(name) => link.name = name.clone(),
            LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
            LinkAttribute::Controller(master) if *master != 0 => link.master = Some(*master),
            LinkAttribute::Address(bytes) => link.mac = mac(bytes),
            LinkAttribute::OperState(state) => operstate = Some(*state),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(kind) => link.kind = Some(kind.to_string()),
                        LinkInfo::Data(InfoData::Vxlan(data)) => link.vxlan = Some(vxlan(data)),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    // Carrier alone is not enough: a device in operstate down/lowerlayerdown is not up.
    if matches!(
        operstate,
        Some(State::Down | State::LowerLayerDown | State::NotPresent)
    ) {
        link.oper_up = false;
    }
    Some(link)
}

fn vxlan(data: &[InfoVxlan]) -> Vxlan {
    let mut vxlan = Vxlan {
        vni: 0,
        local: None,
        port: 4789,
        underlay: None,
        learning: true,
    };
    for attr in data {
        match attr {
            InfoVxlan::Id(vni) => vxlan.vni = *vni,
            InfoVxlan::Local(ip) => vxlan.local = Some(IpAddr::V4(*ip)),
            InfoVxlan::Local6(ip) => vxlan.local = Some(IpAddr::V6(*ip)),
            InfoVxlan::Port(port) => vxlan.port = *port,
            InfoVxlan::Link(index) if *index != 0 => vxlan.underlay = Some(*index),
            InfoVxlan::Learning(learning) => vxlan.learning = *learning,
            _ => {}
        }
    }
    vxlan
}

fn address(m: &AddressMessage) -> Option<Address> {
    let (mut local, mut address) = (None, None);
    for attr in &m.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on
    // point-to-point links (and the only one for IPv6).
    let ip = local.or(address)?;
    Some(Address {
        ifindex: m.header.index,
        prefix: Prefix::new(ip, m.header.prefix_len).ok()?,
    })
}

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

fn route(m: &RouteMessage) -> Option<Route> {
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

fn rule(m: &RuleMessage) -> Option<Rule> {
    let h = &m.header;
    let family = match h.family {
        AddressFamily::Inet => libc::AF_INET as u8,
        AddressFamily::Inet6 => libc::AF_INET6 as u8,
        _ => return None,
    };
    let mut rule = Rule::to_table(family, 0, u32::from(h.table));
    rule.action = match h.action {
        NlRuleAction::ToTable => RuleAction::ToTable,
        NlRuleAction::Goto => RuleAction::Goto,
        NlRuleAction::Nop => RuleAction::Nop,
        NlRuleAction::Blackhole => RuleAction::Blackhole,
        NlRuleAction::Unreachable => RuleAction::Unreachable,
        NlRuleAction::Prohibit => RuleAction::Prohibit,
        other => RuleAction::Other(u8::from(other)),
    };
    rule.invert = h.flags.contains(RuleFlags::Invert);
    rule.tos = h.tos;
    for attr in &m.attributes {
        match attr {
            RuleAttribute::Priority(p) => rule.priority = *p,
            RuleAttribute::Table(t) => rule.table = *t,
            RuleAttribute::Source(ip) => rule.src = Prefix::new(*ip, h.src_len).ok(),
            RuleAttribute::Destination(ip) => rule.dst = Prefix::new(*ip, h.dst_len).ok(),
            RuleAttribute::Iifname(name) => rule.iif = Some(name.clone()),
            RuleAttribute::Oifname(name) => rule.oif = Some(name.clone()),
            RuleAttribute::FwMark(mark) => rule.fwmark = Some(*mark),
            RuleAttribute::FwMask(mask) => rule.fwmask = Some(*mask),
            RuleAttribute::Goto(target) => rule.goto = Some(*target),
            RuleAttribute::SuppressPrefixLen(len) if *len != u32::MAX => {
                rule.suppress_prefixlen = Some(*len)
            }
            RuleAttribute::L3MDev(on) => rule.l3mdev = *on,
            RuleAttribute::IpProtocol(proto) => rule.ip_proto = Some(u8::from(*proto)),
            RuleAttribute::SourcePortRange(r) => rule.sport = Some((r.start, r.end)),
            RuleAttribute::DestinationPortRange(r) => rule.dport = Some((r.start, r.end)),
            RuleAttribute::UidRange(r) => rule.uid_range = Some((r.start, r.end)),
            RuleAttribute::TunId(id) => rule.tun_id = Some(*id),
            RuleAttribute::Realm(r) => {
                rule.realms = Some(u32::from(r.source) << 16 | u32::from(r.destination))
            }
            RuleAttribute::SuppressIfGroup(group) if *group != u32::MAX => {
                rule.suppress_ifgroup = Some(*group)
            }
            RuleAttribute::Protocol(proto) => rule.protocol = u8::from(*proto),
            _ => {}
        }
    }
    Some(rule)
}

fn neighbour_ip(address: &NeighbourAddress) -> Option<IpAddr> {
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

fn neighbour(m: &NeighbourMessage) -> Option<Neighbour> {
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

fn fdb(m: &NeighbourMessage) -> Option<FdbEntry> {
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
