//! The desired state in the running daemon, on the real lab: the lab's nodes described as
//! real Node objects (`lab::nodes`) in a NodeList file, or served by the fake API server,
//! and the daemon in node 0's namespace comparing them with the kernel. Each fault must be
//! found naming its Node; the time from the fault to the finding is printed (run with
//! `--nocapture`) and is never shorter than `desired.grace` (90% of it, as the daemon
//! counts it).

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use serde_json::Value;
use watchdog_tests::{
    Daemon, TempDir,
    apiserver::InNetns,
    hook::Hook,
    lab::{
        Lab, RETIRED_VTEP, VXLAN_DEV,
        nodes::{annotate, node_list, node_name, write_node_list},
    },
    poll_until, require_root,
};

/// 250 ms cycles.
const POLL: Duration = Duration::from_millis(250);
/// `desired.grace`: four cycles.
const GRACE: Duration = Duration::from_secs(1);
/// `desired.file_poll`.
const FILE_POLL: Duration = Duration::from_millis(200);
/// Pass/fail deadline for a finding (the latency itself is measured and printed).
const DEADLINE: Duration = Duration::from_secs(30);
const NODES: &str = "/api/v1/nodes";

fn config(desired: &str) -> String {
    format!(
        "poll_interval = \"{}ms\"\n[detect]\nwindow = \"3s\"\n[desired]\nnode_name = \"{}\"\n\
         grace = \"{}ms\"\n{desired}",
        POLL.as_millis(),
        node_name(0),
        GRACE.as_millis(),
    )
}

fn file_config(path: &Path) -> String {
    config(&format!(
        "source = \"file\"\npath = \"{}\"\nfile_poll = \"{}ms\"\n",
        path.display(),
        FILE_POLL.as_millis()
    ))
}

/// A 3-node lab, the daemon on node 0 with `source = "file"`.
struct Overlay {
    daemon: Daemon,
    path: PathBuf,
    // Dropped after the daemon.
    lab: Lab,
    _dir: TempDir,
}

/// Builds the lab, starts the daemon before the NodeList file exists (it must be ready
/// without a desired state), then writes the file and waits until the daemon knows it.
fn overlay(test: &str, extra: &str) -> Option<Overlay> {
    if !require_root(test) {
        return None;
    }
    let lab = Lab::new(3);
    lab.check_pod_connectivity()
        .expect("the lab works before injection");
    let dir = TempDir::new("watchdog-overlay");
    let path = dir.path().join("nodes.json");
    let mut daemon = Daemon::start(lab.node(0).ns(), &format!("{}{extra}", file_config(&path)));
    daemon.wait_ready();
    let metrics = daemon.metrics();
    assert_eq!(
        metrics.value("watchdog_desired_up", &[("source", "file")]),
        Some(0.0),
        "ready, and the desired state unknown without the file: {}",
        metrics.0
    );
    poll_until(DEADLINE, "the missing file counted as an error", || {
        (daemon.metrics().count("watchdog_desired_errors_total", &[]) >= 1).then_some(())
    });
    write_node_list(&path, &lab.node_list());
    wait_desired(&daemon, "file", 3);
    Some(Overlay {
        daemon,
        path,
        lab,
        _dir: dir,
    })
}

/// Waits until the daemon's desired state is known with `nodes` Nodes.
fn wait_desired(daemon: &Daemon, source: &str, nodes: u64) {
    poll_until(DEADLINE, "the desired state known", || {
        let metrics = daemon.metrics();
        (metrics.value("watchdog_desired_up", &[("source", source)]) == Some(1.0)
            && metrics.count("watchdog_desired_nodes", &[]) == nodes)
            .then_some(())
    });
}

/// The active findings as the API serves them (JSON); `None` when the daemon did not
/// answer (a busy machine: polls try again). Any answer but a 200 with a findings array
/// fails the test.
fn try_findings(daemon: &Daemon) -> Option<Vec<Value>> {
    let (status, body) = daemon.get("/api/v1/findings")?;
    assert_eq!(status, 200, "/api/v1/findings: {body}\n{}", daemon.log());
    let report: Value = serde_json::from_str(&body).expect("findings JSON");
    let findings = report["findings"].as_array();
    Some(
        findings
            .unwrap_or_else(|| panic!("no findings array: {report:#}"))
            .clone(),
    )
}

/// The active findings; the daemon must answer.
fn findings(daemon: &Daemon) -> Vec<Value> {
    try_findings(daemon)
        .unwrap_or_else(|| panic!("no answer from /api/v1/findings\n{}", daemon.log()))
}

/// Every value of evidence `name`.
fn evidence<'a>(finding: &'a Value, name: &str) -> Vec<&'a str> {
    finding["evidence"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["name"] == name)
        .filter_map(|e| e["value"].as_str())
        .collect()
}

/// Waits for a finding of `kind` whose subject is `subject`, fired after the fault made at
/// `injected`; prints the latency. A drift is never flagged before `desired.grace`.
fn found(daemon: &Daemon, what: &str, kind: &str, subject: &str, injected: SystemTime) -> Value {
    let start = Instant::now();
    let deadline = start + DEADLINE;
    let finding = loop {
        let all = try_findings(daemon).unwrap_or_default();
        if let Some(finding) = all
            .iter()
            .find(|f| f["kind"] == kind && f["subject"] == subject)
        {
            break finding.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {kind} `{subject}` after {DEADLINE:?}; findings: {all:#?}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let latency = injected.elapsed().unwrap_or_default();
    println!(
        "{what}: {kind} after {:.2}s (grace {:.2}s + 2 cycles = {:.2}s)",
        latency.as_secs_f64(),
        GRACE.as_secs_f64(),
        (GRACE + 2 * POLL).as_secs_f64()
    );
    if kind == "overlay_drift" {
        let first_seen =
            humantime::parse_rfc3339(finding["first_seen"].as_str().expect("first_seen"))
                .expect("RFC 3339");
        // The daemon counts 90% of the grace (a poll's jitter); its monotonic clock and
        // the wall clock may differ by a little.
        assert!(
            first_seen + Duration::from_millis(50) >= injected + GRACE * 9 / 10,
            "{what}: flagged before desired.grace: {finding:#}"
        );
    }
    finding
}

fn remote_subject(node: usize) -> (String, String, String) {
    let gateway = format!("10.244.{node}.0");
    (
        format!("fdb 02:fa:00:00:00:0{node} dev {VXLAN_DEV} dst 192.168.77.1{node}"),
        format!("neigh {gateway} dev {VXLAN_DEV}"),
        format!("route 10.244.{node}.0/24 via {gateway} dev {VXLAN_DEV} onlink"),
    )
}

/// Defaults everywhere but the desired state: a minute of traffic between all pods, with
/// the lab exactly as its Nodes describe it, finds nothing.
#[test]
fn a_healthy_overlay_with_traffic_for_a_minute_has_no_findings() {
    if !require_root("a_healthy_overlay_with_traffic_for_a_minute_has_no_findings") {
        return;
    }
    let lab = Lab::new(3);
    lab.check_pod_connectivity().expect("a connected lab");
    let dir = TempDir::new("watchdog-overlay");
    let path = dir.path().join("nodes.json");
    write_node_list(&path, &lab.node_list());
    let mut daemon = Daemon::start(
        lab.node(0).ns(),
        &format!(
            "[desired]\nsource = \"file\"\npath = \"{}\"\nnode_name = \"node-0\"\n",
            path.display()
        ),
    );
    daemon.wait_ready();
    wait_desired(&daemon, "file", 3);
    let streams: Vec<_> = (0..3)
        .flat_map(|from| {
            (0..3)
                .filter(move |&to| to != from)
                .map(move |to| (from, to))
        })
        .map(|(from, to)| lab.udp_stream(from, to, 10))
        .collect();
    let start = Instant::now();
    let mut checks = 0;
    while start.elapsed() < Duration::from_secs(60) {
        let all = findings(&daemon);
        assert!(all.is_empty(), "after {:?}: {all:#?}", start.elapsed());
        let report = lab.tcp_connect_attempts(
            0,
            watchdog_tests::lab::pod_ip(2),
            watchdog_tests::lab::TCP_PORT,
            1,
        );
        assert_eq!(report.failed(), 0, "{report:?}");
        checks += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(checks > 60);
    for stream in streams {
        let stats = stream.stop();
        assert!(stats.replies > 500, "{stats:?}");
    }
    let metrics = daemon.metrics();
    assert!(
        metrics
            .0
            .lines()
            .filter(|line| line.starts_with("watchdog_findings{"))
            .all(|line| line.ends_with(" 0")),
        "{}",
        metrics.0
    );
    assert_eq!(
        metrics.value("watchdog_desired_up", &[("source", "file")]),
        Some(1.0)
    );
    let age = metrics
        .value("watchdog_desired_age_seconds", &[])
        .expect("an age once listed");
    assert!(
        (0.0..5.0).contains(&age),
        "the file is confirmed each file_poll: {age}"
    );
    let log = daemon.log();
    assert!(
        log.contains("desired state: source=file") && log.contains("desired state known"),
        "{log}"
    );
}

/// The ghost VTEP: the kernel's FDB entry for node-2 no longer goes to its public-ip.
/// `overlay_drift` names the entry and the Node; the silence-based `stale_fdb` gains
/// `node=node-2`, in the API and in the alert.
#[test]
fn fdb_repointed_is_named_with_its_node_in_the_api_and_the_alert() {
    let hook_config = "[alerts]\n[[alerts.sinks]]\nname = \"hook\"\ntype = \"webhook\"\n\
                       url = \"http://127.0.0.1:8199/hook\"\n";
    let Some(o) = overlay(
        "fdb_repointed_is_named_with_its_node_in_the_api_and_the_alert",
        hook_config,
    ) else {
        return;
    };
    // The webhook receiver inside node 0 (alerts are retried until it listens).
    let listener = o
        .lab
        .node(0)
        .ns()
        .run(|| TcpListener::bind("127.0.0.1:8199").unwrap());
    let hook = Hook::start(listener);
    let daemon = &o.daemon;
    let _streams = [o.lab.udp_stream(0, 1, 20), o.lab.udp_stream(0, 2, 20)];
    let injected = SystemTime::now();
    o.lab.repoint_fdb(0, 2, RETIRED_VTEP);
    let subject = format!("fdb 02:fa:00:00:00:02 dev {VXLAN_DEV} dst {RETIRED_VTEP}");
    let drift = found(daemon, "FDB repointed", "overlay_drift", &subject, injected);
    assert_eq!(evidence(&drift, "node"), ["node-2"], "{drift:#}");
    assert_eq!(
        evidence(&drift, "expected"),
        [format!(
            "fdb 02:fa:00:00:00:02 dev {VXLAN_DEV} dst 192.168.77.12 self permanent"
        )]
    );
    let stale = found(daemon, "FDB repointed", "stale_fdb", &subject, injected);
    assert_eq!(evidence(&stale, "node"), ["node-2"], "{stale:#}");
    let alert = poll_until(DEADLINE, "the stale_fdb alert", || {
        hook.alerts()
            .into_iter()
            .find(|a| a["kind"] == "stale_fdb" && a["state"] == "firing")
    });
    assert_eq!(evidence(&alert, "node"), ["node-2"], "{alert:#}");
    // Node 1 is healthy: nothing names it.
    let all = findings(daemon);
    assert!(
        all.iter().all(|f| !evidence(f, "node").contains(&"node-1")),
        "{all:#?}"
    );
}

#[test]
fn a_missing_neighbour_names_its_node() {
    let Some(o) = overlay("a_missing_neighbour_names_its_node", "") else {
        return;
    };
    let injected = SystemTime::now();
    o.lab
        .ip_in(0, &["neigh", "del", "10.244.2.0", "dev", VXLAN_DEV]);
    let (_, neigh, _) = remote_subject(2);
    let finding = found(
        &o.daemon,
        "neighbour removed",
        "overlay_drift",
        &format!("{neigh} missing"),
        injected,
    );
    assert_eq!(evidence(&finding, "node"), ["node-2"]);
    assert_eq!(
        evidence(&finding, "expected"),
        [format!(
            "neigh 10.244.2.0 dev {VXLAN_DEV} lladdr 02:fa:00:00:00:02 nud permanent"
        )]
    );
}

#[test]
fn a_missing_route_names_its_node() {
    let Some(o) = overlay("a_missing_route_names_its_node", "") else {
        return;
    };
    let injected = SystemTime::now();
    o.lab.ip_in(0, &["route", "del", "10.244.1.0/24"]);
    let (_, _, route) = remote_subject(1);
    let finding = found(
        &o.daemon,
        "route removed",
        "overlay_drift",
        &format!("{route} missing"),
        injected,
    );
    assert_eq!(evidence(&finding, "node"), ["node-1"]);
    assert_eq!(finding["severity"], "critical");
}

#[test]
fn a_deleted_vxlan_device_names_this_node() {
    let Some(o) = overlay("a_deleted_vxlan_device_names_this_node", "") else {
        return;
    };
    let injected = SystemTime::now();
    o.lab.ip_in(0, &["link", "del", VXLAN_DEV]);
    let finding = found(
        &o.daemon,
        "VXLAN device deleted",
        "overlay_drift",
        &format!("dev {VXLAN_DEV}"),
        injected,
    );
    assert_eq!(evidence(&finding, "node"), ["node-0"]);
    assert_eq!(evidence(&finding, "kernel"), ["missing"]);
    assert_eq!(
        evidence(&finding, "expected"),
        [format!(
            "dev {VXLAN_DEV} type vxlan id 1 local 192.168.77.10 address 02:fa:00:00:00:00"
        )]
    );
}

/// The "Phantom Network": node-2's `public-ip` now holds a retired address, the kernel
/// still sends to the old one: the FDB entry differs from what the Node says.
#[test]
fn a_public_ip_changed_to_a_retired_address_in_the_file() {
    let Some(o) = overlay("a_public_ip_changed_to_a_retired_address_in_the_file", "") else {
        return;
    };
    let mut items: Vec<Value> = o.lab.nodes().map(|n| n.node_object()).collect();
    annotate(&mut items[2], "public-ip", &RETIRED_VTEP.to_string());
    let injected = SystemTime::now();
    write_node_list(&o.path, &node_list(items));
    let (fdb, _, _) = remote_subject(2);
    let finding = found(
        &o.daemon,
        "public-ip annotation retired",
        "overlay_drift",
        &fdb,
        injected,
    );
    assert_eq!(evidence(&finding, "node"), ["node-2"]);
    assert_eq!(
        evidence(&finding, "expected"),
        [format!(
            "fdb 02:fa:00:00:00:02 dev {VXLAN_DEV} dst {RETIRED_VTEP} self permanent"
        )]
    );
}

/// node-2 deleted from the cluster (the file) while node 0 keeps its FDB entry, neighbour
/// and route: each is found and named after node-2, which the daemon saw leave.
#[test]
fn a_node_removed_from_the_file_while_its_objects_stay() {
    let Some(o) = overlay("a_node_removed_from_the_file_while_its_objects_stay", "") else {
        return;
    };
    let items: Vec<Value> = o
        .lab
        .nodes()
        .filter(|n| n.index() != 2)
        .map(|n| n.node_object())
        .collect();
    let injected = SystemTime::now();
    write_node_list(&o.path, &node_list(items));
    let (fdb, neigh, route) = remote_subject(2);
    for subject in [fdb, neigh, format!("{route} table main")] {
        let finding = found(
            &o.daemon,
            "Node removed",
            "overlay_drift",
            &subject,
            injected,
        );
        assert_eq!(evidence(&finding, "node"), ["node-2"], "{finding:#}");
        assert_eq!(finding["severity"], "warning");
        assert!(
            evidence(&finding, "problem")[0].contains("node-2 is no longer among the Nodes"),
            "{finding:#}"
        );
    }
    let metrics = o.daemon.metrics();
    assert_eq!(metrics.count("watchdog_desired_nodes", &[]), 2);
}

/// `watchdog check` with the same desired state: the drift, named, exit 1; clean on a
/// node as its Nodes describe it.
#[test]
fn check_names_the_drift_and_its_node() {
    if !require_root("check_names_the_drift_and_its_node") {
        return;
    }
    let lab = Lab::new(3);
    lab.check_pod_connectivity().expect("a connected lab");
    let dir = TempDir::new("watchdog-overlay-check");
    let path = dir.path().join("nodes.json");
    write_node_list(&path, &lab.node_list());
    let config = dir.path().join("config.toml");
    std::fs::write(&config, file_config(&path)).unwrap();
    let check = || {
        let output = std::process::Command::new("ip")
            .args(["netns", "exec", lab.node(0).ns().name()])
            .arg(watchdog_tests::daemon_binary())
            .args(["check", "--window", "2s", "--json", "--config"])
            .arg(&config)
            .output()
            .expect("run watchdog check");
        let report: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&output.stderr)));
        (output.status.code(), report)
    };
    let (code, report) = check();
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["node"], "node-0");
    lab.ip_in(0, &["neigh", "del", "10.244.1.0", "dev", VXLAN_DEV]);
    let (code, report) = check();
    assert_eq!(code, Some(1), "{report:#}");
    let findings = report["findings"].as_array().unwrap();
    let drift = findings
        .iter()
        .find(|f| f["subject"] == format!("neigh 10.244.1.0 dev {VXLAN_DEV} missing"))
        .unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(evidence(drift, "node"), ["node-1"]);
    // Without its desired state, check does not pretend the overlay is fine.
    std::fs::remove_file(&path).unwrap();
    let output = std::process::Command::new("ip")
        .args(["netns", "exec", lab.node(0).ns().name()])
        .arg(watchdog_tests::daemon_binary())
        .args(["check", "--window", "1s", "--config"])
        .arg(&config)
        .output()
        .expect("run watchdog check");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the desired state is unknown") && stderr.contains("nodes.json"),
        "{stderr}"
    );
}

/// `source = "kubernetes"`: the same daemon against the fake API server (inside node 0's
/// namespace) serving the lab's Nodes; a Node update through the watch becomes a finding.
#[test]
fn kubernetes_source_turns_a_node_update_into_a_finding() {
    if !require_root("kubernetes_source_turns_a_node_update_into_a_finding") {
        return;
    }
    let lab = Lab::new(3);
    lab.check_pod_connectivity().expect("a connected lab");
    let dir = TempDir::new("watchdog-overlay-kube");
    let server = InNetns::start(lab.node(0).ns(), true);
    server.load_nodes(&lab.node_list());
    let kubeconfig = server.kubeconfig(dir.path());
    let mut daemon = Daemon::start(
        lab.node(0).ns(),
        &config(&format!(
            "source = \"kubernetes\"\nkubeconfig = \"{}\"\n",
            kubeconfig.display()
        )),
    );
    daemon.wait_ready();
    wait_desired(&daemon, "kubernetes", 3);
    poll_until(DEADLINE, "the daemon's watch", || {
        (server.watchers(NODES) == 1).then_some(())
    });
    assert!(findings(&daemon).is_empty(), "{:#?}", findings(&daemon));
    let mut node = server.node(&node_name(1)).expect("node-1 served");
    annotate(&mut node, "public-ip", &RETIRED_VTEP.to_string());
    let injected = SystemTime::now();
    server.apply(NODES, node);
    let (fdb, _, _) = remote_subject(1);
    let finding = found(
        &daemon,
        "Node update (kubernetes)",
        "overlay_drift",
        &fdb,
        injected,
    );
    assert_eq!(evidence(&finding, "node"), ["node-1"]);
    assert_eq!(server.lists(NODES), 1, "{:?}", server.requests());
    let log = daemon.log();
    assert!(log.contains("source=kubernetes (kubeconfig"), "{log}");
}
