//! Objects' identities, commands and journal JSON.

use super::*;
use crate::model::net::{NeighState, RouteKind};

fn flannel() -> [(u32, String); 1] {
    [(3, "flannel.1".to_owned())]
}

fn route() -> Object {
    Object::Route(Named::new(
        Route {
            gateway: Some("10.244.1.0".parse().unwrap()),
            oif: Some(3),
            onlink: true,
            ..Route::unicast("10.244.1.0/24".parse().unwrap())
        },
        flannel(),
    ))
}

fn fdb() -> Object {
    Object::Fdb(Named::new(
        FdbEntry {
            ifindex: 3,
            mac: [0x02, 0xfa, 0, 0, 0, 1],
            dst: Some("192.168.77.11".parse().unwrap()),
            vlan: None,
            vni: None,
            port: None,
            state: NeighState::PERMANENT,
            master: None,
        },
        flannel(),
    ))
}

fn neighbour(mac: Option<[u8; 6]>, state: NeighState) -> Object {
    Object::Neighbour(Named::new(
        Neighbour {
            ifindex: 3,
            ip: "10.244.1.0".parse().unwrap(),
            mac,
            state,
        },
        flannel(),
    ))
}

#[test]
fn only_entries_without_a_mac_that_are_not_configured_are_unresolved() {
    let unresolved = |mac, state| match neighbour(mac, NeighState(state)) {
        Object::Neighbour(n) => n.is_unresolved(),
        _ => unreachable!(),
    };
    // incomplete, failed, probe, none
    for state in [0x01, 0x20, 0x10, 0x00] {
        assert!(unresolved(None, state), "{state:#x}");
    }
    assert!(!unresolved(None, 0x80), "permanent");
    assert!(!unresolved(None, 0x40), "noarp");
    assert!(!unresolved(Some([0x02, 0xfa, 0, 0, 0, 1]), 0x04), "stale");
}

#[test]
fn commands_are_what_a_person_types() {
    let fdb = fdb();
    assert_eq!(
        fdb.set_command("replace"),
        "bridge fdb replace 02:fa:00:00:00:01 dev flannel.1 dst 192.168.77.11 self permanent"
    );
    assert_eq!(
        fdb.del_command(),
        "bridge fdb del 02:fa:00:00:00:01 dev flannel.1 dst 192.168.77.11 self"
    );
    assert_eq!(fdb.key(), "fdb 02:fa:00:00:00:01 dev flannel.1");
    let neigh = neighbour(Some([0x02, 0xfa, 0, 0, 0, 1]), NeighState::PERMANENT);
    assert_eq!(
        neigh.set_command("add"),
        "ip neigh add 10.244.1.0 lladdr 02:fa:00:00:00:01 dev flannel.1 nud permanent"
    );
    assert_eq!(neigh.del_command(), "ip neigh del 10.244.1.0 dev flannel.1");
    let r = route();
    assert_eq!(
        r.set_command("replace"),
        "ip route replace 10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink proto boot table \
         main"
    );
    assert_eq!(r.key(), "route 10.244.1.0/24 table main");
    let blackhole = Object::Route(Named::new(
        Route {
            kind: RouteKind::Blackhole,
            priority: 100,
            protocol: 4,
            ..Route::unicast("10.244.1.0/24".parse().unwrap())
        },
        [],
    ));
    assert_eq!(
        blackhole.set_command("replace"),
        "ip route replace blackhole 10.244.1.0/24 proto static metric 100 table main"
    );
    assert_eq!(blackhole.key(), "route 10.244.1.0/24 table main metric 100");
}

#[test]
fn objects_round_trip_through_the_journals_json_unchanged() {
    // Lines as the journal has always written them.
    let lines = [
        r#"{"type":"route","table":254,"dst":"10.244.1.0/24","kind":1,"gateway":"10.244.1.0","oif":3,"dev":"flannel.1","onlink":true,"prefsrc":null,"priority":0,"protocol":3,"scope":0,"tos":0,"nexthops":[]}"#,
        r#"{"type":"fdb","dev":"flannel.1","ifindex":3,"mac":"02:fa:00:00:00:01","dst":"192.168.77.11","vni":null,"port":null,"state":128}"#,
        r#"{"type":"neighbour","dev":"flannel.1","ifindex":3,"ip":"10.244.1.0","mac":null,"state":32}"#,
        r#"{"type":"route","table":254,"dst":"10.244.2.0/24","kind":1,"gateway":null,"oif":null,"dev":null,"onlink":false,"prefsrc":null,"priority":0,"protocol":3,"scope":0,"tos":0,"nexthops":[{"gateway":"192.168.77.11","oif":2,"dev":"eth0","onlink":true},{"gateway":"192.168.77.12","oif":2,"dev":"eth0","onlink":false}]}"#,
    ];
    let objects = [route(), fdb(), neighbour(None, NeighState::FAILED)];
    for (line, object) in lines.iter().zip(&objects) {
        assert_eq!(serde_json::to_string(object).unwrap(), *line);
        assert_eq!(&serde_json::from_str::<Object>(line).unwrap(), object);
    }
    let multipath: Object = serde_json::from_str(lines[3]).unwrap();
    assert_eq!(serde_json::to_string(&multipath).unwrap(), lines[3]);
    assert_eq!(
        multipath.spec(),
        "10.244.2.0/24 nexthop via 192.168.77.11 dev eth0 onlink nexthop via 192.168.77.12 \
         dev eth0 proto boot table main"
    );
}
