//! Links (RTM_NEWLINK), with their VXLAN settings.

use std::net::IpAddr;

use netlink_packet_route::{
    AddressFamily,
    link::{InfoData, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, State},
};

use super::mac;
use crate::model::net::{Link, Vxlan};

/// The link a message describes (not an AF_BRIDGE port message).
pub(super) fn decode(m: &LinkMessage) -> Option<Link> {
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
