//! `decode(encode(x)) == x` for every kind repair sends, through the bytes: each object is
//! encoded, serialized as the kernel would receive it, parsed back and decoded.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_REPLACE, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;

use super::{del_message, new_message, update};
use crate::model::net::{
    FdbEntry, NeighState, Neighbour, NextHop, Object, Prefix, Route, RouteKind, Update,
};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// `message` as bytes on the socket, parsed back.
fn through_the_bytes(message: RouteNetlinkMessage) -> RouteNetlinkMessage {
    let mut packet = NetlinkMessage::from(message);
    packet.header.flags = NLM_F_REQUEST | NLM_F_REPLACE;
    packet.finalize();
    let mut bytes = vec![0; packet.buffer_len()];
    packet.serialize(&mut bytes);
    let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).expect("it parses");
    match parsed.payload {
        NetlinkPayload::InnerMessage(inner) => inner,
        other => panic!("not a route message: {other:?}"),
    }
}

/// The object a new-object message decodes to, and the one its delete decodes to.
fn round_trip(object: &Object) -> (Option<Object>, Option<Object>) {
    let decoded = |message| match update(through_the_bytes(message), NLM_F_REPLACE) {
        Some(Update::NewRoute(route) | Update::DelRoute(route)) => Some(Object::Route(route)),
        Some(Update::NewNeighbour(n) | Update::DelNeighbour(n)) => Some(Object::Neighbour(n)),
        Some(Update::NewFdb(entry) | Update::DelFdb(entry)) => Some(Object::Fdb(entry)),
        _ => None,
    };
    (decoded(new_message(object)), decoded(del_message(object)))
}

fn routes() -> Vec<Route> {
    let flannel = Route {
        gateway: Some(ip("10.244.1.0")),
        oif: Some(3),
        onlink: true,
        ..Route::unicast("10.244.1.0/24".parse().unwrap())
    };
    vec![
        flannel.clone(),
        Route {
            kind: RouteKind::Blackhole,
            gateway: None,
            oif: None,
            onlink: false,
            priority: 100,
            protocol: 4,
            ..flannel.clone()
        },
        Route {
            table: 1000,
            tos: 8,
            scope: 253,
            prefsrc: Some(ip("192.168.77.10")),
            protocol: 186,
            ..flannel.clone()
        },
        Route {
            gateway: None,
            oif: None,
            onlink: false,
            nexthops: vec![
                NextHop {
                    onlink: true,
                    ..NextHop::new(Some(ip("192.168.77.11")), Some(2))
                },
                NextHop {
                    dead: true,
                    ..NextHop::new(Some(ip("192.168.77.12")), Some(2))
                },
            ],
            ..flannel.clone()
        },
        Route {
            src: Some("fd00:1::/64".parse::<Prefix>().unwrap()),
            gateway: Some(ip("fe80::1")),
            oif: Some(2),
            onlink: false,
            priority: 1024,
            ..Route::unicast("fd00:2::/64".parse().unwrap())
        },
    ]
}

#[test]
fn routes_decode_to_what_was_encoded() {
    for route in routes() {
        let object = Object::Route(route);
        let (new, del) = round_trip(&object);
        assert_eq!(new.as_ref(), Some(&object));
        assert_eq!(del.as_ref(), Some(&object));
    }
}

#[test]
fn neighbours_decode_to_what_was_encoded() {
    for neighbour in [
        Neighbour {
            ifindex: 3,
            ip: ip("10.244.1.0"),
            mac: Some([0x02, 0xfa, 0, 0, 0, 1]),
            state: NeighState::PERMANENT,
        },
        Neighbour {
            ifindex: 2,
            ip: ip("192.168.77.98"),
            mac: None,
            state: NeighState::FAILED,
        },
        Neighbour {
            ifindex: 2,
            ip: ip("fd00::11"),
            mac: Some([0x0a, 0, 0, 0, 0, 2]),
            state: NeighState::STALE,
        },
    ] {
        let object = Object::Neighbour(neighbour);
        let (new, del) = round_trip(&object);
        assert_eq!(new.as_ref(), Some(&object));
        assert_eq!(del.as_ref(), Some(&object));
    }
}

#[test]
fn fdb_entries_decode_to_what_was_encoded() {
    let entry = FdbEntry {
        ifindex: 3,
        mac: [0x02, 0xfa, 0, 0, 0, 1],
        dst: Some(ip("192.168.77.11")),
        vlan: None,
        vni: None,
        port: None,
        state: NeighState::PERMANENT,
        master: None,
    };
    for entry in [
        entry.clone(),
        FdbEntry {
            dst: Some(ip("fd00:77::11")),
            vni: Some(42),
            port: Some(4789),
            ..entry.clone()
        },
        FdbEntry {
            mac: [0; 6],
            dst: Some(ip("192.168.77.12")),
            ..entry.clone()
        },
        FdbEntry {
            ifindex: 5,
            dst: None,
            vlan: Some(10),
            master: Some(4),
            state: NeighState::REACHABLE,
            ..entry
        },
    ] {
        let object = Object::Fdb(entry);
        let (new, del) = round_trip(&object);
        assert_eq!(new.as_ref(), Some(&object));
        assert_eq!(del.as_ref(), Some(&object));
    }
}
