//! Addresses (RTM_NEWADDR).

use netlink_packet_route::address::{AddressAttribute, AddressMessage};

use crate::model::net::{Address, Prefix};

/// The address a message describes.
pub(super) fn decode(m: &AddressMessage) -> Option<Address> {
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
