//! The overlay detectors' wording on hand-built snapshots and Nodes.

use std::{
    net::Ipv4Addr,
    sync::Arc,
    time::{Duration, Instant},
};

use super::*;
use crate::{
    config::detect::DetectConfig as Settings,
    detect::Sample,
    model::counters::PeerSample,
    model::desired::{Mac, Model, Skip, State},
    model::net::{Link, Route, Snapshot, Update, Vxlan},
    overlay::{
        Departed, Memory, compare, doubts,
        fixture::{
            ETH0, FLANNEL, cluster, fdb, flannel_route, ip, mac, member, model, neighbour, node0,
            set_vtep_mac, vxlan_link, vxlan_link_at,
        },
    },
};

fn run<T>(net: &Snapshot, f: impl FnOnce(&Inputs<'_>) -> T) -> T {
    run_with(net, &Sample::default(), &Sample::default(), f)
}

fn run_with<T>(net: &Snapshot, now: &Sample, then: &Sample, f: impl FnOnce(&Inputs<'_>) -> T) -> T {
    let settings = Settings::default();
    f(&Inputs {
        net,
        now,
        then,
        recent: now,
        settings: &settings,
        probes: &crate::model::probe::ProbeBook::default(),
    })
}

fn drift(net: &Snapshot, model: &Model) -> Vec<Candidate> {
    let comparison = compare(net, model, "node-0", &Departed::default());
    run(net, |inputs| {
        comparison
            .drifts
            .iter()
            .map(|d| overlay_drift(inputs, &comparison, d))
            .collect()
    })
}

fn annotations(inputs: &Inputs<'_>, m: &Model) -> Vec<Candidate> {
    stale_annotation(inputs, m, &doubts(m))
}

/// The overlay detectors on a look of `memory` at `state`.
fn look(net: &Snapshot, state: &State, memory: &mut Memory, at: Instant) -> Vec<Candidate> {
    match memory.observe(net, state, "node-0", at) {
        Some(observed) => run(net, |inputs| detect(inputs, &observed)),
        None => Vec::new(),
    }
}

fn subjects(candidates: &[Candidate]) -> Vec<&str> {
    candidates.iter().map(|c| c.subject.as_str()).collect()
}

#[test]
fn a_node_as_flannel_programs_it_has_no_drift() {
    assert_eq!(drift(&node0(), &cluster()), vec![]);
    let stale = run(&node0(), |inputs| annotations(inputs, &cluster()));
    assert_eq!(stale, vec![]);
}

#[test]
fn fdb_repointed_names_the_node_and_both_sides() {
    let mut net = node0();
    net.apply(Update::NewFdb(fdb(1, "10.67.0.5")));
    let found = drift(&net, &cluster());
    assert_eq!(
        subjects(&found),
        ["fdb 02:fa:00:00:00:01 dev flannel.1 dst 10.67.0.5"]
    );
    let c = &found[0];
    assert_eq!(c.kind, Kind::OverlayDrift);
    assert_eq!(c.severity, Severity::Critical);
    assert_eq!(c.evidence("node"), Some("node-1"));
    assert_eq!(
        c.evidence("expected"),
        Some("fdb 02:fa:00:00:00:01 dev flannel.1 dst 192.168.77.11 self permanent")
    );
    assert_eq!(
        c.evidence("kernel"),
        Some("fdb 02:fa:00:00:00:01 dev flannel.1 dst 10.67.0.5")
    );
}

#[test]
fn missing_fdb_neighbour_and_route_are_each_named() {
    let mut net = node0();
    net.apply(Update::DelFdb(fdb(2, "192.168.77.12")));
    net.apply(Update::DelNeighbour(neighbour(2)));
    net.apply(Update::DelRoute(flannel_route(2)));
    let found = drift(&net, &cluster());
    assert_eq!(
        subjects(&found),
        [
            "fdb 02:fa:00:00:00:02 dev flannel.1 dst 192.168.77.12 missing",
            "neigh 10.244.2.0 dev flannel.1 missing",
            "route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink missing",
        ]
    );
    assert!(found.iter().all(|c| c.evidence("node") == Some("node-2")));
    assert_eq!(
        found[1].evidence("expected"),
        Some("neigh 10.244.2.0 dev flannel.1 lladdr 02:fa:00:00:00:02 nud permanent")
    );
}

#[test]
fn a_route_through_something_else_and_a_wrong_neighbour_mac() {
    let mut net = node0();
    net.apply(Update::NewRoute(Route {
        gateway: Some(ip("192.168.77.98")),
        oif: Some(ETH0),
        ..Route::unicast("10.244.1.0/24".parse().unwrap())
    }));
    net.apply(Update::NewNeighbour(Neighbour {
        mac: Some(mac(9)),
        ..neighbour(2)
    }));
    let found = drift(&net, &cluster());
    assert_eq!(
        subjects(&found),
        [
            "route 10.244.1.0/24 via 192.168.77.98 dev eth0 table main",
            "neigh 10.244.2.0 dev flannel.1",
        ]
    );
    assert_eq!(found[0].evidence("node"), Some("node-1"));
    assert_eq!(found[0].routes.len(), 1);
    assert_eq!(
        found[1].evidence("kernel"),
        Some("neigh 10.244.2.0 dev flannel.1 lladdr 02:fa:00:00:00:09 PERMANENT")
    );
}

#[test]
fn the_device_is_found_by_the_clusters_vni() {
    // VNI 7 in the Nodes: flannel.1 (VNI 1) is not the cluster's device.
    let mut nodes = cluster();
    for node in nodes.nodes.values_mut() {
        node.vtep.as_mut().unwrap().vni = Some(7);
    }
    let found = drift(&node0(), &nodes);
    assert_eq!(subjects(&found), ["dev flannel.7"]);
    assert_eq!(found[0].evidence("kernel"), Some("missing"));
    assert_eq!(found[0].evidence("node"), Some("node-0"));
    // Any name works when the VNI matches: another device with VNI 7 has none of
    // the remote objects (they are on flannel.1).
    let mut net = node0();
    net.apply(Update::NewLink(vxlan_link_at(9, 7, "vxlan-overlay")));
    let found = drift(&net, &nodes);
    assert_eq!(found.len(), 6, "{:?}", subjects(&found));
    assert!(
        found.iter().all(|c| c
            .evidence("expected")
            .unwrap()
            .contains("dev vxlan-overlay")),
        "{:?}",
        subjects(&found)
    );
    // flannel.1 renamed and given VNI 7 in place: everything is where it should be.
    let mut net = node0();
    net.apply(Update::NewLink(vxlan_link(7, "vxlan-overlay")));
    assert_eq!(drift(&net, &nodes), vec![]);
}

#[test]
fn the_local_device_down_with_another_mac_or_local_address() {
    let mut net = node0();
    net.apply(Update::NewLink(Link {
        admin_up: false,
        mac: Some(mac(0x33)),
        vxlan: Some(Vxlan {
            local: Some(ip("10.67.0.10")),
            ..vxlan_link(1, "flannel.1").vxlan.unwrap()
        }),
        ..vxlan_link(1, "flannel.1")
    }));
    let found = drift(&net, &cluster());
    let names = subjects(&found);
    assert!(names.contains(&"dev flannel.1"), "{names:?}");
    assert!(
        names.contains(&"dev flannel.1 address 02:fa:00:00:00:33"),
        "{names:?}"
    );
    assert!(
        names.contains(&"dev flannel.1 local 10.67.0.10"),
        "{names:?}"
    );
    let local: Vec<_> = found
        .iter()
        .filter(|c| c.subject.starts_with("dev "))
        .collect();
    assert_eq!(local.len(), 3, "{names:?}");
    assert!(local.iter().all(|c| c.evidence("node") == Some("node-0")));
    // Down, the kernel flushed the device's routes and neighbours: named per Node.
    assert!(
        names.contains(&"neigh 10.244.1.0 dev flannel.1 missing"),
        "{names:?}"
    );
}

#[test]
fn a_node_removed_leaves_objects_no_node_has() {
    let mut gone = cluster();
    gone.nodes.remove("node-2");
    let found = drift(&node0(), &gone);
    assert_eq!(
        subjects(&found),
        [
            "fdb 02:fa:00:00:00:02 dev flannel.1 dst 192.168.77.12",
            "neigh 10.244.2.0 dev flannel.1",
            "route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink table main",
        ]
    );
    assert!(found.iter().all(|c| c.severity == Severity::Warning));
    // node-2 restarted with a new VtepMAC: the old-MAC entry points at its address.
    let mut restarted = cluster();
    set_vtep_mac(&mut restarted, "node-2", mac(0x22));
    let found = drift(&node0(), &restarted);
    let orphan = found
        .iter()
        .find(|c| c.subject == "fdb 02:fa:00:00:00:02 dev flannel.1 dst 192.168.77.12")
        .unwrap();
    assert_eq!(orphan.evidence("node"), Some("node-2"));
    assert!(orphan.evidence("problem").unwrap().contains("old VTEP MAC"));
}

#[test]
fn quiet_when_this_node_does_not_take_part() {
    let mut net = node0();
    net.apply(Update::DelLink(FLANNEL));
    assert_eq!(drift(&net, &model([member(1), member(2)])), vec![]);
    assert_eq!(drift(&net, &Model::default()), vec![]);
}

#[test]
fn nothing_fires_while_the_desired_state_is_unknown() {
    let mut net = node0();
    net.apply(Update::DelLink(FLANNEL));
    let mut memory = Memory::new(Duration::ZERO);
    let unknown = State::Unknown {
        reason: "no full list".into(),
    };
    let found = look(&net, &unknown, &mut memory, Instant::now());
    assert_eq!(found, vec![]);
    let known = State::Known {
        model: Arc::new(cluster()),
        age: Duration::ZERO,
    };
    let found = look(&net, &known, &mut memory, Instant::now());
    assert_eq!(subjects(&found), ["dev flannel.1"]);
}

#[test]
fn what_a_departed_node_leaves_behind_is_named_after_it() {
    let mut memory = Memory::new(Duration::ZERO);
    let t0 = Instant::now();
    let all = State::Known {
        model: Arc::new(cluster()),
        age: Duration::ZERO,
    };
    let found = look(&node0(), &all, &mut memory, t0);
    assert_eq!(found, vec![]);
    let mut without = cluster();
    without.nodes.remove("node-2");
    let without = State::Known {
        model: Arc::new(without),
        age: Duration::ZERO,
    };
    let found = look(&node0(), &without, &mut memory, t0);
    assert_eq!(
        subjects(&found),
        [
            "fdb 02:fa:00:00:00:02 dev flannel.1 dst 192.168.77.12",
            "neigh 10.244.2.0 dev flannel.1",
            "route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink table main",
        ]
    );
    for candidate in &found {
        assert_eq!(candidate.evidence("node"), Some("node-2"), "{candidate:?}");
        assert!(
            candidate
                .evidence("problem")
                .unwrap()
                .contains("node-2 is no longer among the Nodes"),
            "{candidate:?}"
        );
    }
    assert_eq!(
        memory
            .departed()
            .nodes()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>(),
        ["node-2"]
    );
    // Back in the desired state: forgotten.
    look(&node0(), &all, &mut memory, t0);
    assert_eq!(memory.departed().nodes().count(), 0);
}

#[test]
fn other_kinds_gain_the_node_behind_their_addresses() {
    use crate::findings::RouteRef;
    let m = cluster();
    let departed = Departed::default();
    let route = |prefix: &str, gateway: &str| RouteRef {
        prefix: prefix.into(),
        gateway: Some(gateway.into()),
        dev: Some("flannel.1".into()),
        table: "main".into(),
    };
    let mut stale = Candidate::new(
        Kind::StaleFdb,
        "fdb 02:fa:00:00:00:02 dev flannel.1 dst 192.168.77.99",
        Severity::Critical,
    );
    stale.routes.push(route("10.244.2.0/24", "10.244.2.0"));
    let mut gateway = Candidate::new(
        Kind::GhostGateway,
        "gateway 192.168.77.98 dev eth0",
        Severity::Critical,
    );
    gateway.routes.push(route("10.244.1.0/25", "192.168.77.98"));
    let mut candidates = vec![
        stale,
        Candidate::new(
            Kind::BlackholedDestination,
            "destination 10.244.1.2 dev flannel.1",
            Severity::Critical,
        ),
        Candidate::new(
            Kind::FailingTcpDestination,
            "tcp 10.244.2.7:8080",
            Severity::Critical,
        ),
        Candidate::new(
            Kind::BlackholedDestination,
            "destination 192.168.77.11 dev eth0",
            Severity::Critical,
        ),
        gateway,
        Candidate::new(Kind::VtepCollapse, "dev flannel.1", Severity::Critical),
        Candidate::new(
            Kind::NoRouteDrops,
            "no route to 10.9.9.0/24",
            Severity::Critical,
        ),
        Candidate::new(Kind::OverlayDrift, "dev flannel.1", Severity::Critical)
            .with("node", "node-0"),
    ];
    name_nodes(&mut candidates, &m, &departed);
    let nodes: Vec<Vec<&str>> = candidates
        .iter()
        .map(|c| {
            c.evidence
                .iter()
                .filter(|e| e.name == "node")
                .map(|e| e.value.as_str())
                .collect()
        })
        .collect();
    assert_eq!(
        nodes,
        [
            vec!["node-2"],
            vec!["node-1"],
            vec!["node-2"],
            vec!["node-1"],
            vec!["node-1"],
            vec![],
            vec![],
            vec!["node-0"],
        ]
    );
    // Two Nodes named by one finding are joined.
    let mut both = vec![Candidate::new(
        Kind::DeadLinkRoute,
        "route 10.244.1.0/24 via 192.168.77.12 dev eth0",
        Severity::Warning,
    )];
    name_nodes(&mut both, &m, &departed);
    assert_eq!(both[0].evidence("node"), Some("node-1,node-2"));
}

#[test]
fn stale_annotations_each_give_the_fix() {
    let mut m = cluster();
    m.nodes.get_mut("node-1").unwrap().public_ip_overwrite = Some("10.67.0.11".into());
    let n2 = m.nodes.get_mut("node-2").unwrap();
    n2.vtep.as_mut().unwrap().mac = Mac(mac(1));
    let mut overlapping = member(3);
    overlapping.vtep.as_mut().unwrap().subnet = PodSubnet::parse("10.244.0.0/16").unwrap();
    m.nodes.insert("node-3".into(), overlapping);
    let mut broken = member(4);
    broken.vtep = Err(Skip::Invalid(vec![
        "flannel.alpha.coreos.com/backend-data `{`: is not valid JSON".into(),
    ]));
    m.nodes.insert("node-4".into(), broken);
    let found = run(&node0(), |inputs| annotations(inputs, &m));
    let names = subjects(&found);
    assert!(
        names.contains(
            &"node node-1 annotation flannel.alpha.coreos.com/public-ip-overwrite=10.67.0.11"
        ),
        "{names:?}"
    );
    assert!(names.contains(&"node node-4"), "{names:?}");
    assert!(
        names.contains(&"VtepMAC 02:fa:00:00:00:01 on nodes node-1, node-2"),
        "{names:?}"
    );
    assert!(
        names.contains(&"pod subnets 10.244.0.0/24 (node-0) and 10.244.0.0/16 (node-3) overlap"),
        "{names:?}"
    );
    assert!(
        found
            .iter()
            .all(|c| c.evidence("fix").is_some() && c.evidence("node").is_some())
    );
    let overwrite = &found[names.iter().position(|n| n.contains("overwrite")).unwrap()];
    assert!(
        overwrite.evidence("fix").unwrap().starts_with(
            "kubectl annotate node node-1 flannel.alpha.coreos.com/public-ip-overwrite-"
        )
    );
}

#[test]
fn a_dead_public_ip_needs_silence_and_an_answering_internal_ip() {
    let mut m = cluster();
    // node-1 advertises a retired address; its InternalIP is still 192.168.77.11.
    let n1 = m.nodes.get_mut("node-1").unwrap();
    n1.vtep.as_mut().unwrap().public_ip = Ipv4Addr::new(10, 67, 0, 11);
    n1.public_ip = Some("10.67.0.11".into());
    let start = Instant::now();
    let at = |s: u64, peers: &[(&str, u64, u64)]| Sample {
        at: Some(start + Duration::from_secs(s)),
        peers: peers
            .iter()
            .map(|&(addr, tx, rx)| {
                (
                    (ETH0, ip(addr)),
                    PeerSample {
                        tx_packets: tx,
                        rx_packets: rx,
                        ..PeerSample::default()
                    },
                )
            })
            .collect(),
        ..Sample::default()
    };
    let then = at(0, &[("10.67.0.11", 10, 0), ("192.168.77.11", 10, 10)]);
    let now = at(10, &[("10.67.0.11", 60, 0), ("192.168.77.11", 20, 20)]);
    let found = run_with(&node0(), &now, &then, |inputs| annotations(inputs, &m));
    assert_eq!(
        subjects(&found),
        ["node node-1 annotation flannel.alpha.coreos.com/public-ip=10.67.0.11"]
    );
    assert_eq!(found[0].severity, Severity::Critical);
    // The InternalIP silent too: the node may just be down; not an annotation problem.
    let now = at(10, &[("10.67.0.11", 60, 0), ("192.168.77.11", 20, 10)]);
    let found = run_with(&node0(), &now, &then, |inputs| annotations(inputs, &m));
    assert_eq!(found, vec![]);
    // Answering public-ip: fine even if it is none of the Node's addresses.
    let now = at(10, &[("10.67.0.11", 60, 5), ("192.168.77.11", 20, 20)]);
    let found = run_with(&node0(), &now, &then, |inputs| annotations(inputs, &m));
    assert_eq!(found, vec![]);
}

#[test]
fn node_of_names_vteps_and_pod_addresses() {
    let m = cluster();
    assert_eq!(node_of(&m, ip("192.168.77.12")), Some("node-2"));
    assert_eq!(node_of(&m, ip("10.244.1.77")), Some("node-1"));
    assert_eq!(node_of(&m, ip("10.9.9.9")), None);
}
