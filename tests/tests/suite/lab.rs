//! The Flannel-style lab itself: it builds, pods reach each other through VXLAN, every
//! injector breaks exactly the traffic its incident broke, and teardown leaves nothing.

use std::{
    net::Ipv4Addr,
    process::Command,
    time::{Duration, Instant},
};

use watchdog_tests::{
    lab::{self, Lab, MISSING_GATEWAY, RETIRED_VTEP, TCP_PORT, VXLAN_DEV},
    poll_until, require_root,
};

const BREAK_TIMEOUT: Duration = Duration::from_secs(10);
const PROBE: Duration = Duration::from_millis(400);

/// Whether `ip netns list` lists `name`.
fn listed(name: &str) -> bool {
    let output = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .any(|line| line.split_whitespace().next() == Some(name))
}

/// Builds a healthy lab of `nodes` and proves it.
fn healthy_lab(nodes: usize) -> Lab {
    let lab = Lab::new(nodes);
    if let Err(error) = lab.check_pod_connectivity() {
        panic!("a fresh lab is not connected: {error}");
    }
    lab
}

/// Waits until pod `from` can no longer reach pod `to`.
fn wait_broken(lab: &Lab, from: usize, to: usize) {
    poll_until(
        BREAK_TIMEOUT,
        &format!("pod {from} -> pod {to} to stop answering"),
        || lab.probe(from, to, PROBE).is_err().then_some(()),
    );
}

/// Both directions of each pair in `pairs` are broken (a round trip needs both ways);
/// every other pair still works.
fn assert_only_broken(lab: &Lab, pairs: &[(usize, usize)]) {
    let mut broken = Vec::new();
    for &(a, b) in pairs {
        wait_broken(lab, a, b);
        wait_broken(lab, b, a);
        broken.extend([(a, b), (b, a)]);
    }
    if let Err(error) = lab.check_pod_connectivity_except(&broken) {
        panic!("pairs other than {broken:?} broke too: {error}");
    }
}

/// Drops `lab` and asserts none of its namespaces is left.
fn assert_teardown(lab: Lab) {
    let names = lab.namespace_names();
    drop(lab);
    for name in names {
        assert!(!listed(&name), "namespace {name} survived the lab");
    }
}

#[test]
fn builds_flannel_topology_and_connects_all_pods() {
    if !require_root("builds_flannel_topology_and_connects_all_pods") {
        return;
    }
    let lab = healthy_lab(3);
    for node in lab.nodes() {
        let i = node.index();
        assert_eq!(
            node.underlay_ip(),
            Ipv4Addr::new(192, 168, 77, 10 + i as u8)
        );
        assert_eq!(node.vtep_mac(), format!("02:fa:00:00:00:0{i}"));
        assert_eq!(node.pod_cidr(), format!("10.244.{i}.0/24"));
        let mut fdb = lab.fdb(i);
        fdb.sort_by(|a, b| a.mac.cmp(&b.mac));
        let expected: Vec<(String, Option<Ipv4Addr>)> = (0..3)
            .filter(|&j| j != i)
            .map(|j| (lab::vtep_mac(j), Some(lab::underlay_ip(j))))
            .collect();
        let got: Vec<(String, Option<Ipv4Addr>)> =
            fdb.iter().map(|e| (e.mac.clone(), e.dst)).collect();
        assert_eq!(got, expected, "FDB of node {i}: {fdb:?}");
        assert!(fdb.iter().all(|e| e.flags == "self permanent"), "{fdb:?}");
        let routes = lab.routes(i);
        for j in (0..3).filter(|&j| j != i) {
            let route = format!("10.244.{j}.0/24 via 10.244.{j}.0 dev {VXLAN_DEV} onlink");
            assert!(
                routes.contains(&route),
                "node {i} lacks `{route}`:\n{routes}"
            );
            assert_eq!(
                lab.neighbour_state(i, VXLAN_DEV, lab::overlay_ip(j))
                    .as_deref(),
                Some("PERMANENT")
            );
        }
    }

    // A background stream gets its echoes, and healthy TCP connects succeed.
    let stream = lab.udp_stream(0, 2, 200);
    stream.wait_replies(50, Duration::from_secs(10));
    let report = lab.tcp_connect_attempts(1, lab.node(2).pod_ip(), TCP_PORT, 5);
    assert_eq!(report.succeeded, 5, "{report:?}");
    let stats = stream.stop();
    assert!(stats.replies >= 50 && stats.send_errors == 0, "{stats:?}");

    assert_teardown(lab);
}

#[test]
fn four_node_lab_build_and_teardown_times() {
    if !require_root("four_node_lab_build_and_teardown_times") {
        return;
    }
    // Reported, not asserted: timings belong to benchmarks, not tests.
    let start = Instant::now();
    let lab = Lab::new(4);
    let built = start.elapsed();
    lab.check_pod_connectivity()
        .unwrap_or_else(|error| panic!("{error}"));
    let connected = start.elapsed();
    let start = Instant::now();
    assert_teardown(lab);
    eprintln!(
        "4-node lab: built in {built:?}, all 12 pairs proven after {connected:?}, torn down in {:?}",
        start.elapsed()
    );
}

#[test]
fn repoint_fdb_sends_one_pair_into_the_void() {
    if !require_root("repoint_fdb_sends_one_pair_into_the_void") {
        return;
    }
    let lab = healthy_lab(3);
    let stream = lab.udp_stream(0, 1, 100);
    stream.wait_replies(10, BREAK_TIMEOUT);

    lab.repoint_fdb(0, 1, RETIRED_VTEP);
    let vxlan_before = lab.link_stats(0, VXLAN_DEV);
    let eth0_before = lab.link_stats(0, "eth0");

    // Packets keep leaving (no local error or drop), none come back. The stream's own
    // count runs ahead of the devices' (a datagram crosses the pod's veth in softirq
    // after sendto returns, and the unanswered run may start before the repoint), so
    // the device counters are polled until 50 more left, not read once.
    let stats = stream.wait_blackout(50, BREAK_TIMEOUT);
    assert_eq!(stats.send_errors, 0, "{stats:?}");
    let (vxlan, eth0) = poll_until(
        BREAK_TIMEOUT,
        "50 more packets out of flannel.1 and eth0 after the repoint",
        || {
            let vxlan = lab.link_stats(0, VXLAN_DEV);
            let eth0 = lab.link_stats(0, "eth0");
            (vxlan.tx_packets >= vxlan_before.tx_packets + 50
                && eth0.tx_packets >= eth0_before.tx_packets + 50)
                .then_some((vxlan, eth0))
        },
    );
    assert_eq!(stream.stats().send_errors, 0);
    assert_eq!(
        (vxlan.tx_dropped, vxlan.tx_errors, eth0.tx_dropped),
        (
            vxlan_before.tx_dropped,
            vxlan_before.tx_errors,
            eth0_before.tx_dropped
        ),
        "the ghost VTEP must cost no local drop"
    );
    let entry = lab
        .fdb(0)
        .into_iter()
        .find(|e| e.mac == lab::vtep_mac(1))
        .expect("entry for node 1");
    assert_eq!(entry.dst, Some(RETIRED_VTEP));
    assert_only_broken(&lab, &[(0, 1)]);
    drop(stream);
    assert_teardown(lab);
}

#[test]
fn route_via_missing_gateway_fails_neighbour_resolution() {
    if !require_root("route_via_missing_gateway_fails_neighbour_resolution") {
        return;
    }
    let lab = healthy_lab(3);
    lab.route_via_missing_gateway(0, &lab::pod_cidr(2), MISSING_GATEWAY);
    let stream = lab.udp_stream(0, 2, 50);
    stream.wait_blackout(20, BREAK_TIMEOUT);
    // INCOMPLETE while ARP retries, then FAILED: the NEIGH_FAILED drops of incident 7.
    // Every new packet restarts resolution, so stop sending to see it settle on FAILED.
    drop(stream);
    poll_until(
        BREAK_TIMEOUT,
        "the missing gateway's neighbour to become FAILED",
        || {
            (lab.neighbour_state(0, "eth0", MISSING_GATEWAY).as_deref() == Some("FAILED"))
                .then_some(())
        },
    );
    assert_only_broken(&lab, &[(0, 2)]);
    assert_teardown(lab);
}

#[test]
fn down_link_cuts_the_node_off() {
    if !require_root("down_link_cuts_the_node_off") {
        return;
    }
    let lab = healthy_lab(3);
    lab.down_link(1, VXLAN_DEV);
    let routes = lab.routes(1);
    assert!(
        !routes.contains(VXLAN_DEV),
        "routes via a down {VXLAN_DEV} stay:\n{routes}"
    );
    assert_only_broken(&lab, &[(1, 0), (1, 2)]);
    assert_teardown(lab);
}

#[test]
fn cut_carrier_keeps_routes_via_a_dead_link() {
    if !require_root("cut_carrier_keeps_routes_via_a_dead_link") {
        return;
    }
    let lab = healthy_lab(3);
    lab.cut_carrier(2);
    poll_until(
        BREAK_TIMEOUT,
        "node 2's underlay route marked linkdown",
        || {
            lab.routes(2)
                .lines()
                .any(|line| line.starts_with("192.168.77.0/24") && line.contains("linkdown"))
                .then_some(())
        },
    );
    // The pod CIDR routes still draw the traffic.
    assert!(lab.routes(2).contains(&lab::pod_cidr(0)));
    assert_only_broken(&lab, &[(2, 0), (2, 1)]);
    assert_teardown(lab);
}

#[test]
fn blackhole_route_draws_a_pods_traffic() {
    if !require_root("blackhole_route_draws_a_pods_traffic") {
        return;
    }
    let lab = healthy_lab(3);
    // More specific than the pod CIDR route, so it wins for pod 1 (10.244.1.2).
    lab.blackhole_route(2, "10.244.1.0/25");
    assert!(lab.routes(2).contains("blackhole 10.244.1.0/25"));
    assert_only_broken(&lab, &[(2, 1)]);
    assert_teardown(lab);
}

#[test]
fn removed_node_leaves_stale_state_and_ghost_endpoints() {
    if !require_root("removed_node_leaves_stale_state_and_ghost_endpoints") {
        return;
    }
    let mut lab = healthy_lab(3);
    let gone: Vec<String> = [lab.node(2).ns(), lab.node(2).pod_ns()]
        .map(|ns| ns.name().to_owned())
        .into();
    let ghost = lab.node(2).pod_ip();
    let healthy = lab.tcp_connect_attempts(0, ghost, TCP_PORT, 3);
    assert_eq!(healthy.succeeded, 3, "{healthy:?}");
    let stream = lab.udp_stream(0, 2, 100);
    stream.wait_replies(10, BREAK_TIMEOUT);

    lab.remove_node(2);

    assert!(lab.is_removed(2));
    for name in &gone {
        assert!(!listed(name), "{name} still listed after remove_node");
    }
    stream.wait_blackout(50, BREAK_TIMEOUT);
    // The survivors still route, resolve and tunnel to the departed node.
    for i in 0..2 {
        assert!(lab.routes(i).contains(&lab::pod_cidr(2)));
        assert_eq!(
            lab.neighbour_state(i, VXLAN_DEV, lab::overlay_ip(2))
                .as_deref(),
            Some("PERMANENT")
        );
        assert!(
            lab.fdb(i)
                .iter()
                .any(|e| e.mac == lab::vtep_mac(2) && e.dst == Some(lab::underlay_ip(2)))
        );
    }
    // Incident 6: connects to the departed pod hang in SYN_SENT.
    let ghosts = lab.tcp_connect_attempts(0, ghost, TCP_PORT, 3);
    assert_eq!(ghosts.timed_out, 3, "{ghosts:?}");
    wait_broken(&lab, 1, 2);
    lab.check_pod_connectivity()
        .unwrap_or_else(|error| panic!("the survivors lost each other: {error}"));
    drop(stream);
    assert_teardown(lab);
}

#[test]
fn flush_fdb_collapses_one_nodes_tunnels() {
    if !require_root("flush_fdb_collapses_one_nodes_tunnels") {
        return;
    }
    let lab = healthy_lab(3);
    let before = lab.link_stats(0, VXLAN_DEV);
    lab.flush_fdb(0);
    assert!(lab.fdb(0).is_empty());
    // Routes and neighbours stay: traffic still reaches flannel.1 and dies there.
    assert!(lab.routes(0).contains(&lab::pod_cidr(1)));
    assert_only_broken(&lab, &[(0, 1), (0, 2)]);
    // The packets die on flannel.1 itself: no FDB entry, no remote.
    let after = lab.link_stats(0, VXLAN_DEV);
    assert!(
        after.tx_dropped > before.tx_dropped,
        "{before:?} -> {after:?}"
    );
    assert_teardown(lab);
}

#[test]
fn teardown_happens_when_a_test_panics() {
    if !require_root("teardown_happens_when_a_test_panics") {
        return;
    }
    let names = std::sync::Mutex::new(Vec::new());
    let outcome = std::panic::catch_unwind(|| {
        let lab = Lab::new(2);
        *names.lock().unwrap() = lab.namespace_names();
        panic!("a failing test");
    });
    assert!(outcome.is_err());
    let names = names.into_inner().unwrap();
    assert_eq!(names.len(), 5);
    for name in names {
        assert!(!listed(&name), "{name} survived a panic");
    }
}
