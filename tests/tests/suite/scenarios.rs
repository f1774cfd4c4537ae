//! Each incident of DESIGN.md, injected into a real Flannel-style lab while traffic runs:
//! the daemon in node 0's namespace must name the guilty object.

use std::{
    net::UdpSocket,
    time::{Duration, Instant},
};

use watchdog_tests::{
    Daemon, isolation,
    lab::{Lab, MISSING_GATEWAY, RETIRED_VTEP, VXLAN_DEV},
    require_root,
};

/// Fast cycles so each scenario takes seconds: 250 ms polls, a 3 s window.
const CONFIG: &str = "poll_interval = \"250ms\"\n[detect]\nwindow = \"3s\"\n";
const DEADLINE: Duration = Duration::from_secs(30);

fn lab_with_daemon(test: &str) -> Option<Lab> {
    if !require_root(test) {
        return None;
    }
    let lab = Lab::new(3);
    lab.check_pod_connectivity()
        .expect("the lab works before injection");
    Some(lab)
}

#[test]
fn fdb_entry_repointed_at_a_retired_address() {
    let Some(lab) = lab_with_daemon("fdb_entry_repointed_at_a_retired_address") else {
        return;
    };
    let mut daemon = Daemon::start(lab.node(0).ns(), CONFIG);
    daemon.wait_ready();
    let _healthy = lab.udp_stream(0, 1, 20);
    let _victim = lab.udp_stream(0, 2, 20);
    lab.repoint_fdb(0, 2, RETIRED_VTEP);
    let repointed = Instant::now();
    let finding = daemon.wait_finding(
        "stale_fdb",
        &format!("fdb 02:fa:00:00:00:02 dev {VXLAN_DEV} dst {RETIRED_VTEP}"),
        DEADLINE,
    );
    eprintln!(
        "two-way traffic: ghost VTEP named {:?} after the repoint",
        repointed.elapsed()
    );
    assert_eq!(finding.severity, "critical");
    assert_eq!(
        finding.evidence("route"),
        ["10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink table main"]
    );
    assert!(
        finding.evidence("problem")[0].contains("none back"),
        "{finding:#?}"
    );
    // The healthy remote is not blamed.
    let findings = daemon.findings();
    assert!(
        findings
            .iter()
            .all(|f| !f.subject.contains("02:fa:00:00:00:01") && !f.subject.contains("10.244.1.")),
        "{findings:#?}"
    );
}

#[test]
fn route_via_a_gateway_that_no_longer_exists() {
    let Some(lab) = lab_with_daemon("route_via_a_gateway_that_no_longer_exists") else {
        return;
    };
    let mut daemon = Daemon::start(lab.node(0).ns(), CONFIG);
    daemon.wait_ready();
    lab.route_via_missing_gateway(0, "10.55.0.0/24", MISSING_GATEWAY);
    // Pod 0 keeps sending towards the stale route (forwarded by node 0).
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            lab.node(0).pod_ns().run(|| {
                let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = socket.send_to(b"stale", "10.55.0.5:9");
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        });
        let finding = daemon.wait_finding(
            "ghost_gateway",
            &format!("gateway {MISSING_GATEWAY} dev eth0"),
            DEADLINE,
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            finding.evidence("route"),
            [format!(
                "10.55.0.0/24 via {MISSING_GATEWAY} dev eth0 onlink table main"
            )]
        );
        assert!(
            ["INCOMPLETE", "FAILED"].contains(&finding.evidence("neighbour_state")[0]),
            "{finding:#?}"
        );
    });
}

#[test]
fn route_via_a_link_that_went_down() {
    let Some(lab) = lab_with_daemon("route_via_a_link_that_went_down") else {
        return;
    };
    let mut daemon = Daemon::start(lab.node(0).ns(), CONFIG);
    daemon.wait_ready();
    let _stream = lab.udp_stream(0, 1, 20);
    lab.cut_carrier(0);
    let finding = daemon.wait_finding("dead_link_route", "192.168.77.0/24", DEADLINE);
    assert_eq!(finding.evidence("problem"), ["device eth0 has no carrier"]);
}

#[test]
fn blackhole_route_drawing_traffic() {
    let Some(lab) = lab_with_daemon("blackhole_route_drawing_traffic") else {
        return;
    };
    let mut daemon = Daemon::start(lab.node(0).ns(), CONFIG);
    daemon.wait_ready();
    let _stream = lab.udp_stream(0, 2, 20);
    lab.blackhole_route(0, "10.244.2.0/25");
    let finding = daemon.wait_finding(
        "reject_route_traffic",
        "route blackhole 10.244.2.0/25",
        DEADLINE,
    );
    assert_eq!(finding.severity, "critical");
}

#[test]
fn node_removed_while_its_routes_and_fdb_entries_remain() {
    let Some(mut lab) = lab_with_daemon("node_removed_while_its_routes_and_fdb_entries_remain")
    else {
        return;
    };
    let mut daemon = Daemon::start(lab.node(0).ns(), CONFIG);
    daemon.wait_ready();
    let _stream = lab.udp_stream(0, 2, 20);
    lab.remove_node(2);
    let finding = daemon.wait_finding(
        "stale_fdb",
        &format!("fdb 02:fa:00:00:00:02 dev {VXLAN_DEV} dst 192.168.77.12"),
        DEADLINE,
    );
    assert_eq!(
        finding.evidence("route"),
        ["10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink table main"]
    );
}

#[test]
fn fdb_table_flushed_on_one_node() {
    let Some(lab) = lab_with_daemon("fdb_table_flushed_on_one_node") else {
        return;
    };
    let mut daemon = Daemon::start(lab.node(0).ns(), CONFIG);
    daemon.wait_ready();
    let _stream = lab.udp_stream(0, 1, 20);
    lab.flush_fdb(0);
    let finding = daemon.wait_finding("vtep_collapse", &format!("dev {VXLAN_DEV}"), DEADLINE);
    assert_eq!(finding.evidence("fdb_entries"), ["0"]);
    assert_eq!(finding.evidence("remote_node_routes"), ["2"]);
    daemon.wait_finding(
        "stale_fdb",
        "02:fa:00:00:00:01 dev flannel.1 missing",
        DEADLINE,
    );
}

#[test]
fn another_nodes_problem_is_not_reported_here() {
    let Some(lab) = lab_with_daemon("another_nodes_problem_is_not_reported_here") else {
        return;
    };
    let mut here = Daemon::start(lab.node(0).ns(), CONFIG);
    let mut there = Daemon::start(lab.node(1).ns(), CONFIG);
    here.wait_ready();
    there.wait_ready();
    let _streams = [lab.udp_stream(0, 1, 20), lab.udp_stream(1, 0, 20)];
    lab.flush_fdb(1);
    there.wait_finding("vtep_collapse", "dev flannel.1", DEADLINE);
    // Node 0 keeps all its entries; its traffic to node 1 is answered... except that node
    // 1 can no longer answer (its FDB is gone): the only thing node 0 may say is that
    // pod 1 stopped answering, never that its own FDB or routes are broken.
    let findings = here.findings();
    let only_silence = |f: &watchdog_tests::Finding| {
        f.kind == "blackholed_destination"
            || (f.kind == "stale_fdb"
                && f.evidence("problem")
                    .iter()
                    .all(|p| p.contains("none back")))
    };
    assert!(findings.iter().all(only_silence), "{findings:#?}");
}

/// One-way UDP (statsd-like: a datagram every 50 ms to a listener that never answers)
/// across the overlay is no stale FDB entry and no blackhole: the prober's answered probe
/// vouches for the silent VTEP and pod. A ghost VTEP that carries only one-way traffic is
/// still named: its probe goes unanswered.
#[test]
fn one_way_udp_is_not_stale_but_a_ghost_vtep_under_it_is_named() {
    let Some(lab) = lab_with_daemon("one_way_udp_is_not_stale_but_a_ghost_vtep_under_it_is_named")
    else {
        return;
    };
    let mut daemon = Daemon::start(lab.node(0).ns(), CONFIG);
    daemon.wait_ready();
    let healthy = lab.one_way_udp(0, 1, Duration::from_millis(50));
    let victim = lab.one_way_udp(0, 2, Duration::from_millis(50));
    healthy.wait_received(20, DEADLINE);
    victim.wait_received(20, DEADLINE);
    // Several full windows (3 s) and VTEP windows (1 s) of one-way traffic only.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        let findings = daemon.findings();
        assert!(
            findings.is_empty(),
            "one-way UDP after {:?}: {findings:#?}",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // Not because nothing looked silent: the silent peers were probed and answered.
    let metrics = daemon.metrics();
    for purpose in ["vtep", "destination"] {
        assert!(
            metrics.count(
                "watchdog_probes_total",
                &[("purpose", purpose), ("outcome", "answered")]
            ) > 0,
            "{purpose}: {}",
            metrics.0
        );
    }
    let (sent, received) = healthy.counts();
    assert!(sent > 150 && received > 150, "({sent}, {received})");

    lab.repoint_fdb(0, 2, RETIRED_VTEP);
    let repointed = Instant::now();
    let finding = daemon.wait_finding(
        "stale_fdb",
        &format!("fdb 02:fa:00:00:00:02 dev {VXLAN_DEV} dst {RETIRED_VTEP}"),
        DEADLINE,
    );
    eprintln!(
        "one-way traffic only: ghost VTEP named {:?} after the repoint",
        repointed.elapsed()
    );
    assert_eq!(finding.severity, "critical");
    // The healthy remote is still not blamed.
    let findings = daemon.findings();
    assert!(
        findings
            .iter()
            .all(|f| !f.subject.contains("02:fa:00:00:00:01") && !f.subject.contains("10.244.1.")),
        "{findings:#?}"
    );
}

#[test]
fn a_healthy_lab_with_traffic_for_a_minute_has_no_findings() {
    let Some(lab) = lab_with_daemon("a_healthy_lab_with_traffic_for_a_minute_has_no_findings")
    else {
        return;
    };
    // Default settings: the healthy run must not trip the defaults.
    let mut daemon = Daemon::start(lab.node(0).ns(), "");
    daemon.wait_ready();
    let streams: Vec<_> = (0..3)
        .flat_map(|from| {
            (0..3)
                .filter(move |&to| to != from)
                .map(move |to| (from, to))
        })
        .map(|(from, to)| lab.udp_stream(from, to, 10))
        .collect();
    let start = std::time::Instant::now();
    let mut checks = 0;
    while start.elapsed() < Duration::from_secs(60) {
        let findings = daemon.findings();
        assert!(
            findings.is_empty(),
            "after {:?}: {findings:#?}",
            start.elapsed()
        );
        let report = lab.tcp_connect_attempts(
            0,
            watchdog_tests::lab::pod_ip(1),
            watchdog_tests::lab::TCP_PORT,
            1,
        );
        assert_eq!(report.failed(), 0, "{report:?}");
        checks += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    for stream in streams {
        let stats = stream.stop();
        assert!(stats.replies > 500, "{stats:?}");
    }
    let metrics = daemon.metrics();
    assert!(checks > 60);
    assert!(
        metrics
            .0
            .lines()
            .filter(|line| line.starts_with("watchdog_findings{"))
            .all(|line| line.ends_with(" 0")),
        "{}",
        metrics.0
    );
}

/// `watchdog check` in a node's namespace: 0 on a healthy node, 1 with the finding in
/// JSON once the node's FDB is flushed.
#[test]
fn check_audits_a_node_once_with_exit_codes() {
    let Some(lab) = lab_with_daemon("check_audits_a_node_once_with_exit_codes") else {
        return;
    };
    let check = |node: usize| {
        let output = std::process::Command::new("ip")
            .args(["netns", "exec", lab.node(node).ns().name()])
            .arg(watchdog_tests::daemon_binary())
            .args(["check", "--window", "1s", "--json"])
            .output()
            .expect("run watchdog check");
        let report: serde_json::Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&output.stderr)));
        (output.status.code(), report)
    };
    let _stream = lab.udp_stream(0, 1, 20);
    let (code, report) = check(0);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["findings"], serde_json::json!([]));

    lab.flush_fdb(0);
    let (code, report) = check(0);
    assert_eq!(code, Some(1), "{report:#}");
    let kinds: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"vtep_collapse"), "{report:#}");
    // Node 1 is untouched and clean.
    assert_eq!(check(1).0, Some(0));
}

/// Stock Raspberry Pi OS kernels have no BTF: every core detection must still work.
#[test]
fn without_btf_the_core_detections_still_work() {
    // Without BTF its daemon counts every namespace's traffic, and every lab has the same
    // addresses: no other test runs meanwhile.
    let _alone = isolation::alone();
    let Some(lab) = lab_with_daemon("without_btf_the_core_detections_still_work") else {
        return;
    };
    let config = format!("btf_path = \"\"\n{CONFIG}");
    let mut daemon = Daemon::start(lab.node(0).ns(), &config);
    daemon.wait_ready();
    let metrics = daemon.metrics();
    assert_eq!(
        metrics.value("watchdog_kernel_feature", &[("feature", "btf")]),
        Some(0.0),
        "{}",
        metrics.0
    );
    let log = daemon.log();
    assert!(log.contains("without kernel BTF"), "{log}");

    let _victim = lab.udp_stream(0, 2, 20);
    lab.repoint_fdb(0, 2, RETIRED_VTEP);
    daemon.wait_finding("stale_fdb", &format!("dst {RETIRED_VTEP}"), DEADLINE);
    lab.route_via_missing_gateway(0, "10.55.0.0/24", MISSING_GATEWAY);
    lab.node(0).pod_ns().run(|| {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..5 {
            let _ = socket.send_to(b"stale", "10.55.0.5:9");
        }
    });
    // Found from the neighbour going FAILED (no per-destination drops without BTF).
    daemon.wait_finding(
        "ghost_gateway",
        &format!("gateway {MISSING_GATEWAY}"),
        DEADLINE,
    );
    lab.flush_fdb(0);
    daemon.wait_finding("vtep_collapse", "dev flannel.1", DEADLINE);
    lab.cut_carrier(0);
    daemon.wait_finding("dead_link_route", "192.168.77.0/24", DEADLINE);
}
