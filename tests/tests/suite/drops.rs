//! The kfree_skb probe counts real drops exactly, by reason, per network namespace.

use std::time::Duration;

use watchdog_tests::{Daemon, NetNs, ip, isolation, poll_until, require_root, traffic};

const DROPS: &str = "watchdog_kernel_drops_total";

#[test]
fn counts_drops_by_reason_in_its_own_namespace_only() {
    if !require_root("counts_drops_by_reason_in_its_own_namespace_only") {
        return;
    }
    let node = NetNs::new("wd-own");
    let other = NetNs::new("wd-other");
    let mut daemon = Daemon::start(&node, "");
    daemon.wait_ready();
    let before = daemon.metrics();
    // No NO_SOCKET series yet (the family is there: `count` checks it).
    assert_eq!(
        before.count(DROPS, &[("reason", "NO_SOCKET")]),
        0,
        "{}",
        before.0
    );
    let skipped_before = before.count(
        "watchdog_kernel_drops_skipped_total",
        &[("cause", "other_netns")],
    );

    // Drops in another namespace first: if they leaked in, they would show below.
    other.run(|| {
        traffic::udp_to_closed_port(13, false);
        traffic::ip_unknown_protocol(11);
    });
    node.run(|| {
        traffic::udp_to_closed_port(10, false);
        traffic::udp_to_closed_port(5, true);
        traffic::ip_unknown_protocol(7);
    });

    let metrics = poll_until(
        Duration::from_secs(10),
        "15 NO_SOCKET and 7 IP_NOPROTO",
        || {
            let metrics = daemon.metrics();
            (metrics.count(DROPS, &[("reason", "NO_SOCKET")]) >= 15
                && metrics.count(DROPS, &[("reason", "IP_NOPROTO")]) >= 7)
                .then_some(metrics)
        },
    );
    assert_eq!(
        metrics.count(DROPS, &[("reason", "NO_SOCKET")]),
        15,
        "{}",
        metrics.0
    );
    assert_eq!(
        metrics.count(DROPS, &[("reason", "IP_NOPROTO")]),
        7,
        "{}",
        metrics.0
    );
    // The other namespace's 24 drops were seen by the probe and skipped, not lost.
    let skipped = metrics.count(
        "watchdog_kernel_drops_skipped_total",
        &[("cause", "other_netns")],
    );
    assert!(
        skipped >= skipped_before + 24,
        "{skipped} < {skipped_before} + 24"
    );
    assert_eq!(
        metrics.value("watchdog_probe_up", &[("probe", "kfree_skb")]),
        Some(1.0)
    );
    assert_eq!(metrics.value("watchdog_netns_attribution", &[]), Some(1.0));
    assert!(daemon.stop().success());
}

#[test]
fn all_namespaces_mode_labels_each_namespace() {
    if !require_root("all_namespaces_mode_labels_each_namespace") {
        return;
    }
    // Its daemon counts every namespace's drops: no other test makes any meanwhile.
    let _alone = isolation::alone();
    let node = NetNs::new("wd-all");
    let other = NetNs::new("wd-all-other");
    let mut daemon = Daemon::start(&node, "namespaces = \"all\"\n");
    daemon.wait_ready();
    node.run(|| traffic::udp_to_closed_port(3, false));
    other.run(|| traffic::udp_to_closed_port(4, false));
    let (node_ns, other_ns) = (node.inode().to_string(), other.inode().to_string());
    let metrics = poll_until(
        Duration::from_secs(10),
        "drops labelled per namespace",
        || {
            let metrics = daemon.metrics();
            let node_count = metrics.count(DROPS, &[("netns", &node_ns), ("reason", "NO_SOCKET")]);
            let other_count =
                metrics.count(DROPS, &[("netns", &other_ns), ("reason", "NO_SOCKET")]);
            (node_count >= 3 && other_count >= 4).then_some(metrics)
        },
    );
    assert_eq!(
        metrics.count(DROPS, &[("netns", &node_ns), ("reason", "NO_SOCKET")]),
        3
    );
    assert_eq!(
        metrics.count(DROPS, &[("netns", &other_ns), ("reason", "NO_SOCKET")]),
        4
    );
}

#[test]
fn without_btf_counts_every_namespace_and_says_so() {
    if !require_root("without_btf_counts_every_namespace_and_says_so") {
        return;
    }
    // Its daemon counts every namespace's drops: no other test makes any meanwhile.
    let _alone = isolation::alone();
    let node = NetNs::new("wd-nobtf");
    let other = NetNs::new("wd-nobtf-other");
    let mut daemon = Daemon::start(&node, "btf_path = \"/nonexistent/vmlinux\"\n");
    daemon.wait_ready();
    let metrics = daemon.metrics();
    assert_eq!(metrics.value("watchdog_netns_attribution", &[]), Some(0.0));
    let before = metrics.count(DROPS, &[("reason", "IP_NOPROTO")]);
    // Another namespace's drops are counted too: there is nothing to tell them apart.
    other.run(|| traffic::ip_unknown_protocol(6));
    poll_until(
        Duration::from_secs(10),
        "the other namespace's drops",
        || (daemon.metrics().count(DROPS, &[("reason", "IP_NOPROTO")]) >= before + 6).then_some(()),
    );
    let log = daemon.log();
    assert!(log.contains("running without kernel BTF"), "{log}");
    assert!(log.contains("counted together"), "{log}");
}

#[test]
fn neighbour_failures_are_counted_per_destination() {
    if !require_root("neighbour_failures_are_counted_per_destination") {
        return;
    }
    let node = NetNs::new("wd-neigh");
    let remote = NetNs::new("wd-neigh-remote");
    // The remote side has no address: nothing there answers for 10.79.0.9.
    node.veth_to(&remote, ("wn0", "10.79.0.1/24"), ("wn1", "10.79.0.2/24"));
    // A stale route: its gateway 10.79.0.9 never answers ARP. Resolve fast: one probe, 100 ms.
    ip(&[
        "-n",
        node.name(),
        "route",
        "add",
        "10.55.0.0/24",
        "via",
        "10.79.0.9",
    ]);
    for (key, value) in [("mcast_solicit", "1"), ("retrans_time_ms", "100")] {
        let path = format!("/proc/sys/net/ipv4/neigh/wn0/{key}");
        node.run(|| std::fs::write(&path, value).expect("neigh sysctl"));
    }
    let mut daemon = Daemon::start(&node, "");
    daemon.wait_ready();
    node.run(|| {
        let socket = std::net::UdpSocket::bind("10.79.0.1:0").unwrap();
        for _ in 0..5 {
            socket.send_to(b"lost", "10.55.0.5:9").unwrap();
        }
    });
    let labels = [("reason", "NEIGH_FAILED"), ("destination", "10.55.0.5")];
    let metrics = poll_until(
        Duration::from_secs(10),
        "5 NEIGH_FAILED drops to 10.55.0.5",
        || {
            let metrics = daemon.metrics();
            (metrics.count("watchdog_kernel_drop_destinations_total", &labels) >= 5)
                .then_some(metrics)
        },
    );
    assert_eq!(
        metrics.count("watchdog_kernel_drop_destinations_total", &labels),
        5
    );
    assert_eq!(
        metrics.count(DROPS, &[("reason", "NEIGH_FAILED")]),
        5,
        "{}",
        metrics.0
    );
}
