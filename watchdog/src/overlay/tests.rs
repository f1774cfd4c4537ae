//! The comparison on hand-built snapshots and Nodes: the expected objects, the one device
//! rule, drifts and leftovers, the grace.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use super::{
    fixture::{
        ETH0, FLANNEL, cluster, fdb, flannel_route, ip, mac, member, neighbour, node0,
        set_vtep_mac, vxlan_link, vxlan_link_at,
    },
    *,
};
use crate::model::{
    desired::{Mac, PodSubnet},
    net::{FdbEntry, Link, NeighState, Neighbour, Object, Route, Snapshot, Update, Vxlan},
};

fn subjects(comparison: &Comparison) -> Vec<&str> {
    comparison
        .drifts
        .iter()
        .map(|d| d.subject.as_str())
        .collect()
}

fn node0_with(change: impl FnOnce(&mut Snapshot)) -> Comparison {
    let mut net = node0();
    change(&mut net);
    compare(&net, &cluster(), "node-0", &Departed::default())
}

#[test]
fn expected_objects_per_remote_node_on_the_vni_device() {
    let mut m = cluster();
    for node in m.nodes.values_mut() {
        node.vtep.as_mut().unwrap().vni = Some(4);
    }
    m.nodes
        .get_mut("node-2")
        .unwrap()
        .vtep
        .as_mut()
        .unwrap()
        .vni = None;
    let e = expected(&m, "node-0");
    assert_eq!(e.vni, 4);
    assert_eq!(e.device, "flannel.4");
    let local = e.local.as_ref().unwrap();
    assert_eq!(local.mac, Mac(mac(0)));
    assert_eq!(local.public_ip, Ipv4Addr::new(192, 168, 77, 10));
    assert_eq!(e.remotes.len(), 2);
    let one = &e.remotes[0];
    assert_eq!(one.node, "node-1");
    assert_eq!(
        one.neighbour(&e.device),
        "neigh 10.244.1.0 dev flannel.4 lladdr 02:fa:00:00:00:01 nud permanent"
    );
    assert_eq!(
        one.fdb(&e.device),
        "fdb 02:fa:00:00:00:01 dev flannel.4 dst 192.168.77.11 self permanent"
    );
    assert_eq!(
        one.route(&e.device),
        "route 10.244.1.0/24 via 10.244.1.0 dev flannel.4 onlink"
    );
    assert_eq!(
        e.remote_with_mac(Mac(mac(2))).map(|r| r.node.as_str()),
        Some("node-2")
    );
    assert_eq!(expected(&m, "nobody").local, None);
    // The objects are the model's, exactly as Flannel programs them (and the fixture
    // builds node-0's kernel).
    let device = vxlan_link(1, "flannel.1");
    assert_eq!(one.fdb_entry(&device), fdb(1, "192.168.77.11"));
    assert_eq!(one.neighbour_entry(&device), neighbour(1));
    assert_eq!(one.route_entry(&device), flannel_route(1));
}

#[test]
fn the_device_is_the_link_with_the_vni_flannels_name_first_never_an_ipv6_one() {
    let e = expected(&cluster(), "node-0");
    let net = node0();
    assert_eq!(vxlan_device(&net, &e).map(|l| l.index), Some(FLANNEL));
    // Another IPv4 device with the VNI is taken when flannel.1 is missing.
    let mut renamed = node0();
    renamed.apply(Update::NewLink(vxlan_link(1, "vxlan-overlay")));
    assert_eq!(
        vxlan_device(&renamed, &e).map(|l| l.name.as_str()),
        Some("vxlan-overlay")
    );
    // Dual-stack Flannel's flannel-v6.1 (same VNI) is never taken for flannel.1, by its
    // name nor by an IPv6 local address under another name.
    for (name, local) in [
        ("flannel-v6.1", Some(ip("fd00:77::10"))),
        ("flannel-v6.1", None),
        ("vxlan6", Some(ip("fd00:77::10"))),
    ] {
        let mut net = node0();
        net.apply(Update::DelLink(FLANNEL));
        net.apply(Update::NewLink(Link {
            vxlan: Some(Vxlan {
                local,
                ..vxlan_link(1, name).vxlan.unwrap()
            }),
            ..vxlan_link_at(9, 1, name)
        }));
        assert_eq!(vxlan_device(&net, &e), None, "{name} {local:?}");
    }
}

#[test]
fn flannel_1_missing_beside_flannel_v6_1_is_one_drift_the_device_is_missing() {
    let comparison = node0_with(|net| {
        net.apply(Update::DelLink(FLANNEL));
        net.apply(Update::NewLink(Link {
            vxlan: Some(Vxlan {
                local: Some(ip("fd00:77::10")),
                ..vxlan_link(1, "flannel-v6.1").vxlan.unwrap()
            }),
            ..vxlan_link_at(9, 1, "flannel-v6.1")
        }));
        // flannel-v6.1 carries the IPv6 overlay's own objects: none of them is flannel.1's.
        net.apply(Update::NewFdb(FdbEntry {
            ifindex: 9,
            dst: Some(ip("fd00:77::11")),
            ..fdb(1, "192.168.77.11")
        }));
    });
    assert_eq!(subjects(&comparison), ["dev flannel.1"]);
    assert_eq!(
        comparison.drifts[0].about,
        About::Device(DeviceDrift::Missing)
    );
    assert_eq!(comparison.drifts[0].node.as_deref(), Some("node-0"));
    assert_eq!(comparison.device, None);
}

#[test]
fn a_node_as_flannel_programs_it_has_no_drift_and_each_difference_is_one() {
    assert_eq!(node0_with(|_| {}).drifts, vec![]);
    let comparison = node0_with(|net| {
        net.apply(Update::NewFdb(fdb(1, "10.67.0.5")));
        net.apply(Update::DelNeighbour(neighbour(2)));
        net.apply(Update::NewRoute(Route {
            gateway: Some(ip("192.168.77.98")),
            oif: Some(ETH0),
            ..Route::unicast("10.244.2.0/24".parse().unwrap())
        }));
    });
    assert_eq!(
        subjects(&comparison),
        [
            "fdb 02:fa:00:00:00:01 dev flannel.1 dst 10.67.0.5",
            "neigh 10.244.2.0 dev flannel.1 missing",
            "route 10.244.2.0/24 via 192.168.77.98 dev eth0 table main",
        ]
    );
    let [fdb_drift, neigh_drift, route_drift] = &comparison.drifts[..] else {
        panic!("three drifts")
    };
    assert_eq!(fdb_drift.kernel, Some(Object::Fdb(fdb(1, "10.67.0.5"))));
    assert_eq!(
        fdb_drift.expected,
        Some(Object::Fdb(fdb(1, "192.168.77.11")))
    );
    assert_eq!(neigh_drift.kernel, None);
    assert_eq!(neigh_drift.expected, Some(Object::Neighbour(neighbour(2))));
    assert_eq!(route_drift.expected, Some(Object::Route(flannel_route(2))));
    for drift in &comparison.drifts {
        assert!(matches!(drift.about, About::Member(_)), "{drift:?}");
    }
    assert_eq!(fdb_drift.node.as_deref(), Some("node-1"));
    assert_eq!(route_drift.node.as_deref(), Some("node-2"));
}

#[test]
fn the_route_judged_is_the_one_the_kernel_uses() {
    // Flannel's route at metric 100 and nothing at metric 0: the kernel uses it, no drift.
    let comparison = node0_with(|net| {
        net.apply(Update::DelRoute(flannel_route(1)));
        net.apply(Update::NewRoute(Route {
            priority: 100,
            ..flannel_route(1)
        }));
    });
    assert_eq!(comparison.drifts, vec![]);
    // A wrong route below a right one at a higher metric: the wrong one wins.
    let comparison = node0_with(|net| {
        net.apply(Update::NewRoute(Route {
            priority: 100,
            ..flannel_route(1)
        }));
        net.apply(Update::NewRoute(Route {
            gateway: Some(ip("192.168.77.98")),
            oif: Some(ETH0),
            onlink: false,
            ..flannel_route(1)
        }));
    });
    assert_eq!(
        subjects(&comparison),
        ["route 10.244.1.0/24 via 192.168.77.98 dev eth0 table main"]
    );
}

#[test]
fn leftovers_are_named_after_who_left_them() {
    let mut gone = cluster();
    gone.nodes.remove("node-2");
    let comparison = compare(&node0(), &gone, "node-0", &Departed::default());
    assert_eq!(
        subjects(&comparison),
        [
            "fdb 02:fa:00:00:00:02 dev flannel.1 dst 192.168.77.12",
            "neigh 10.244.2.0 dev flannel.1",
            "route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink table main",
        ]
    );
    for drift in &comparison.drifts {
        assert_eq!(drift.about, About::Leftover(Owner::Nobody), "{drift:?}");
        assert_eq!(drift.expected, None);
        assert_eq!(drift.node, None);
    }
    // Remembered as departed: each is named after node-2.
    let mut departed = Departed::default();
    departed.update(&std::sync::Arc::new(cluster()));
    departed.update(&std::sync::Arc::new(gone.clone()));
    let comparison = compare(&node0(), &gone, "node-0", &departed);
    for drift in &comparison.drifts {
        assert!(
            matches!(&drift.about, About::Leftover(Owner::Departed(n)) if n.name == "node-2"),
            "{drift:?}"
        );
        assert_eq!(drift.node.as_deref(), Some("node-2"));
    }
    // node-2 restarted with a new VtepMAC: the old-MAC entry points at its public-ip.
    let mut restarted = cluster();
    set_vtep_mac(&mut restarted, "node-2", mac(0x22));
    let comparison = compare(&node0(), &restarted, "node-0", &Departed::default());
    let old = comparison
        .drift("fdb 02:fa:00:00:00:02 dev flannel.1 dst 192.168.77.12")
        .unwrap();
    assert_eq!(
        old.about,
        About::Leftover(Owner::OldVtepOf("node-2".into()))
    );
}

#[test]
fn a_route_with_host_bits_is_no_pod_subnet_and_no_leftover() {
    let comparison = node0_with(|net| {
        net.apply(Update::NewRoute(Route {
            gateway: Some(ip("10.244.9.0")),
            oif: Some(FLANNEL),
            ..Route::unicast("10.244.9.7/24".parse().unwrap())
        }));
        net.apply(Update::NewRoute(Route {
            gateway: Some(ip("10.244.8.0")),
            oif: Some(FLANNEL),
            ..Route::unicast("10.244.8.0/24".parse().unwrap())
        }));
    });
    assert_eq!(
        subjects(&comparison),
        ["route 10.244.8.0/24 via 10.244.8.0 dev flannel.1 table main"]
    );
}

#[test]
fn a_permanent_neighbour_in_this_nodes_subnet_is_no_leftover() {
    let comparison = node0_with(|net| {
        for last in [0, 5] {
            net.apply(Update::NewNeighbour(Neighbour {
                ip: ip(&format!("10.244.0.{last}")),
                ..neighbour(1)
            }));
        }
        net.apply(Update::NewNeighbour(Neighbour {
            ip: ip("10.244.7.0"),
            ..neighbour(1)
        }));
        // Not permanent: the kernel's own, no leftover either.
        net.apply(Update::NewNeighbour(Neighbour {
            ip: ip("10.244.6.0"),
            state: NeighState::STALE,
            ..neighbour(1)
        }));
    });
    assert_eq!(subjects(&comparison), ["neigh 10.244.7.0 dev flannel.1"]);
}

#[test]
fn nothing_is_compared_when_this_node_takes_no_part() {
    let mut others = cluster();
    others.nodes.remove("node-0");
    let comparison = compare(&Snapshot::new(), &others, "node-0", &Departed::default());
    assert!(!comparison.takes_part());
    assert_eq!(comparison.drifts, vec![]);
}

#[test]
fn doubts_name_shared_macs_and_overlapping_subnets() {
    let mut m = cluster();
    set_vtep_mac(&mut m, "node-2", mac(1));
    let mut wide = member(3);
    wide.vtep.as_mut().unwrap().subnet = PodSubnet::parse("10.244.0.0/16").unwrap();
    m.nodes.insert("node-3".into(), wide);
    let found = doubts(&m);
    assert_eq!(
        found[0],
        Doubt::SharedMac {
            mac: Mac(mac(1)),
            nodes: vec!["node-1".into(), "node-2".into()]
        }
    );
    let overlaps: Vec<Vec<&str>> = found[1..].iter().map(Doubt::nodes).collect();
    assert_eq!(
        overlaps,
        [
            ["node-0", "node-3"],
            ["node-1", "node-3"],
            ["node-2", "node-3"]
        ]
    );
    let e = expected(&m, "node-0");
    let two = e.remotes.iter().find(|r| r.node == "node-2").unwrap();
    let why = found.iter().find_map(|d| d.on_mac(two)).unwrap();
    assert!(why.contains("node-2 and node-1 share VtepMAC"), "{why}");
    let why = found.iter().find_map(|d| d.on_subnet(two)).unwrap();
    assert!(why.contains("overlaps node-3's 10.244.0.0/16"), "{why}");
}

#[test]
fn a_drift_lasts_only_when_seen_in_every_look_for_the_grace() {
    let t0 = Instant::now();
    let mut memory = Memory::new(Duration::from_secs(3));
    let comparison = node0_with(|net| net.apply(Update::NewFdb(fdb(1, "10.67.0.5"))));
    let drifts = &comparison.drifts;
    let lasted = |memory: &mut Memory, at: u64, drifts: &[Drift]| {
        memory.lasting(t0 + Duration::from_millis(at), drifts).len()
    };
    assert_eq!(lasted(&mut memory, 0, drifts), 0);
    assert_eq!(lasted(&mut memory, 2000, drifts), 0);
    assert_eq!(
        lasted(&mut memory, 2700, drifts),
        1,
        "90% of the grace: a poll's jitter does not cost a cycle"
    );
    // A look without it starts over.
    assert_eq!(lasted(&mut memory, 4000, &[]), 0);
    assert_eq!(lasted(&mut memory, 5000, drifts), 0);
    assert_eq!(lasted(&mut memory, 8000, drifts), 1);
    assert_eq!(lasted(&mut Memory::new(Duration::ZERO), 0, drifts), 1);
}
