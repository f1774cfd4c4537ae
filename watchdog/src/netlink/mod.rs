//! The kernel's netlink messages and the model, both ways: each kind of object is
//! decoded from netlink in one file and, for the kinds repair changes (routes,
//! neighbours, FDB entries), encoded back to netlink in the same file, so
//! `decode(encode(x)) == x` is one file's promise (`tests.rs` checks it through the
//! bytes). The mirror decodes what the kernel announces; repair's executor encodes what
//! it sends. Nothing here fails: a message the model has no place for (another family,
//! a cloned route, a proxy neighbour) or without the attributes that identify its object
//! decodes to `None`; unknown attributes are skipped. [`nftables`] is the one codec of
//! another protocol (`NETLINK_NETFILTER`): its dump requests, their replies (where the
//! kernel's error or a truncated message is reported) and the ruleset they make.

mod address;
mod fdb;
mod link;
mod neighbour;
pub mod nftables;
mod route;
mod rule;

#[cfg(test)]
mod tests;

use netlink_packet_core::{NLM_F_APPEND, NLM_F_REPLACE};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::model::net::{Object, Update};

/// The update a netlink message announces, if the mirror keeps that kind of object.
/// `flags` are the message's netlink header flags: for a route, NLM_F_REPLACE or
/// NLM_F_APPEND say where it goes among the routes with its key (a dump's messages are
/// passed with NLM_F_APPEND: they come in the kernel's order).
pub fn update(message: RouteNetlinkMessage, flags: u16) -> Option<Update> {
    match message {
        RouteNetlinkMessage::NewLink(m) => link::decode(&m).map(Update::NewLink),
        RouteNetlinkMessage::DelLink(m) => {
            // AF_BRIDGE link messages are about bridge-port state: a DELLINK of that
            // family means "left the bridge", not "gone".
            (m.header.interface_family == AddressFamily::Unspec && m.header.index != 0)
                .then_some(Update::DelLink(m.header.index))
        }
        RouteNetlinkMessage::NewAddress(m) => address::decode(&m).map(Update::NewAddress),
        RouteNetlinkMessage::DelAddress(m) => address::decode(&m).map(Update::DelAddress),
        RouteNetlinkMessage::NewRoute(m) => route::decode(&m).map(|route| {
            if flags & NLM_F_REPLACE != 0 {
                Update::NewRoute(route)
            } else {
                Update::AddRoute {
                    route,
                    append: flags & NLM_F_APPEND != 0,
                }
            }
        }),
        RouteNetlinkMessage::DelRoute(m) => route::decode(&m).map(Update::DelRoute),
        RouteNetlinkMessage::NewRule(m) => rule::decode(&m).map(Update::NewRule),
        RouteNetlinkMessage::DelRule(m) => rule::decode(&m).map(Update::DelRule),
        RouteNetlinkMessage::NewNeighbour(m) => match m.header.family {
            AddressFamily::Bridge => fdb::decode(&m).map(Update::NewFdb),
            _ => neighbour::decode(&m).map(Update::NewNeighbour),
        },
        RouteNetlinkMessage::DelNeighbour(m) => match m.header.family {
            AddressFamily::Bridge => fdb::decode(&m).map(Update::DelFdb),
            _ => neighbour::decode(&m).map(Update::DelNeighbour),
        },
        _ => None,
    }
}

/// The message that creates (or replaces) `object` in the kernel.
pub fn new_message(object: &Object) -> RouteNetlinkMessage {
    match object {
        Object::Fdb(entry) => RouteNetlinkMessage::NewNeighbour(fdb::encode(entry)),
        Object::Neighbour(neighbour) => {
            RouteNetlinkMessage::NewNeighbour(neighbour::encode(neighbour))
        }
        Object::Route(route) => RouteNetlinkMessage::NewRoute(route::encode(route)),
    }
}

/// The message that deletes `object` from the kernel.
pub fn del_message(object: &Object) -> RouteNetlinkMessage {
    match object {
        Object::Fdb(entry) => RouteNetlinkMessage::DelNeighbour(fdb::encode(entry)),
        Object::Neighbour(neighbour) => {
            RouteNetlinkMessage::DelNeighbour(neighbour::encode(neighbour))
        }
        Object::Route(route) => RouteNetlinkMessage::DelRoute(route::encode(route)),
    }
}

/// A 6-byte link-layer address.
fn mac(bytes: &[u8]) -> Option<[u8; 6]> {
    bytes.try_into().ok()
}
