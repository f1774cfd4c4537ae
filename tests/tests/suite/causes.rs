//! The causes of blackholes users hit, each on a 3-node Flannel-style lab with the daemon on
//! node 0 run as the shipped DaemonSet runs it (the kustomize base's ConfigMap:
//! `namespaces = "node"`, Nodes, Pods and EndpointSlices from the (fake) API server,
//! everything else default): a firewall dropping forwarded pod traffic (iptables-nft's
//! FORWARD policy, an nft rule), reverse-path filtering, bad VXLAN checksums from a peer,
//! a dead pod address, a remote VTEP whose MAC changed, a path-MTU black hole without ping
//! sockets. Each fault is named with the object to change, and resolves once healed.

use std::{
    net::{Ipv4Addr, UdpSocket},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use watchdog_tests::{
    Daemon, Finding, NetNs,
    lab::{Lab, VXLAN_DEV, nodes::node_name, overlay_ip, vtep_mac},
    poll_until, require_root,
    shipped::Shipped,
    traffic,
};

/// Time for a fault to be named, and for a healed one to resolve (the window, 10 s, then
/// `detect.clear_after` cycles).
const DEADLINE: Duration = Duration::from_secs(30);

/// A lab with the daemon on node 0, as shipped.
struct Setup {
    daemon: Daemon,
    _shipped: Shipped,
    lab: Lab,
}

fn setup(test: &str) -> Option<Setup> {
    if !require_root(test) {
        return None;
    }
    let lab = Lab::new(3);
    lab.check_pod_connectivity()
        .expect("the lab works before injection");
    let shipped = Shipped::start(&lab, 0);
    let mut daemon = Daemon::start(lab.node(0).ns(), &shipped.config(""));
    daemon.wait_ready();
    Some(Setup {
        daemon,
        _shipped: shipped,
        lab,
    })
}

/// Runs `program args…` in namespace `ns`, panicking with its output on failure.
fn run_in(ns: &NetNs, program: &str, args: &[&str]) {
    let output = Command::new("ip")
        .args(["netns", "exec", ns.name(), program])
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("run {program}: {err}"));
    assert!(
        output.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Feeds `ruleset` to `nft -f -` in `ns`.
fn nft(ns: &NetNs, ruleset: &str) {
    ns.nft(ruleset).unwrap_or_else(|err| panic!("{err}"));
}

/// Writes a sysctl in `ns` (`net/ipv4/conf/all/rp_filter`).
fn sysctl(ns: &NetNs, key: &str, value: &str) {
    ns.run(|| std::fs::write(format!("/proc/sys/{key}"), value).expect(key));
}

/// Waits until no finding of `kind` on `subject` is active.
fn wait_resolved(daemon: &Daemon, kind: &str, subject: &str) {
    poll_until(DEADLINE, &format!("{kind} {subject} resolved"), || {
        let findings = daemon.try_findings()?;
        (!findings
            .iter()
            .any(|f| f.kind == kind && f.subject.contains(subject)))
        .then_some(())
    });
}

fn evidence<'a>(finding: &'a Finding, name: &str) -> &'a str {
    finding
        .evidence(name)
        .first()
        .copied()
        .unwrap_or_else(|| panic!("no {name} in {finding:#?}"))
}

/// Docker's `iptables -P FORWARD DROP` on node 0 (kubernetes#108718): node 0's pod loses
/// every packet to the other nodes. Named as the chain's policy (iptables-nft, read over
/// netlink, its counter moving with the drops), with the flow and a fix.
#[test]
fn a_forward_policy_drop_is_named_with_its_chain_until_healed() {
    let Some(setup) = setup("a_forward_policy_drop_is_named_with_its_chain_until_healed") else {
        return;
    };
    let (lab, daemon) = (&setup.lab, &setup.daemon);
    let _stream = lab.udp_stream(0, 1, 50);
    run_in(lab.node(0).ns(), "iptables", &["-P", "FORWARD", "DROP"]);
    let finding = daemon.wait_finding(
        "firewall_drop",
        "chain ip filter FORWARD policy drop",
        DEADLINE,
    );
    assert_eq!(
        evidence(&finding, "problem"),
        format!(
            "FORWARD policy drop drops pod traffic {} → {}",
            lab.node(0).pod_ip(),
            lab.node(1).pod_ip()
        ),
        "{finding:#?}"
    );
    assert_eq!(evidence(&finding, "hook"), "forward");
    assert!(
        evidence(&finding, "fix").contains("`iptables -P FORWARD ACCEPT`"),
        "{finding:#?}"
    );
    assert!(
        evidence(&finding, "flow").starts_with(&format!(
            "{} → {} udp/7777 dev cni0:",
            lab.node(0).pod_ip(),
            lab.node(1).pod_ip()
        )),
        "{finding:#?}"
    );
    run_in(lab.node(0).ns(), "iptables", &["-P", "FORWARD", "ACCEPT"]);
    wait_resolved(daemon, "firewall_drop", "FORWARD");
}

/// An nftables rule (no iptables) dropping one pod's traffic: named by table, chain and
/// handle, with the rule in nft's words.
#[test]
fn an_nft_rule_dropping_pod_traffic_is_named_by_its_handle() {
    let Some(setup) = setup("an_nft_rule_dropping_pod_traffic_is_named_by_its_handle") else {
        return;
    };
    let (lab, daemon) = (&setup.lab, &setup.daemon);
    let _stream = lab.udp_stream(0, 2, 50);
    let pod2 = lab.node(2).pod_ip();
    nft(
        lab.node(0).ns(),
        &format!(
            "table inet guard {{\n chain pods {{ type filter hook forward priority 0; policy accept;\n  \
             ip daddr {pod2} counter drop comment \"quarantine\"\n }}\n}}\n"
        ),
    );
    let finding = daemon.wait_finding("firewall_drop", "rule inet guard pods handle", DEADLINE);
    assert_eq!(
        evidence(&finding, "rule"),
        format!("ip daddr {pod2} counter drop"),
        "{finding:#?}"
    );
    assert_eq!(evidence(&finding, "comment"), "quarantine");
    run_in(
        lab.node(0).ns(),
        "nft",
        &["delete", "table", "inet", "guard"],
    );
    wait_resolved(daemon, "firewall_drop", "rule inet guard");
}

/// Asymmetric routing under strict reverse-path filtering: node 0 routes node 2's pods
/// over the underlay directly (Flannel's DirectRouting on node 0 only) while node 2 still
/// sends through VXLAN; node 2's pod's packets arrive on flannel.1, the route back leaves
/// via eth0, `rp_filter = 1` drops them.
#[test]
fn strict_reverse_path_filtering_of_asymmetric_pod_traffic_is_named_until_healed() {
    let Some(setup) =
        setup("strict_reverse_path_filtering_of_asymmetric_pod_traffic_is_named_until_healed")
    else {
        return;
    };
    let (lab, daemon) = (&setup.lab, &setup.daemon);
    let _stream = lab.udp_stream(2, 0, 50);
    let node0 = lab.node(0).ns();
    lab.ip_in(
        0,
        &[
            "route",
            "replace",
            &lab.node(2).pod_cidr(),
            "via",
            &lab.node(2).underlay_ip().to_string(),
            "dev",
            "eth0",
        ],
    );
    sysctl(node0, "net/ipv4/conf/all/rp_filter", "1");
    let finding = daemon.wait_finding("rp_filter_drop", "rp_filter dev flannel.1", DEADLINE);
    assert!(
        evidence(&finding, "rp_filter").starts_with(
            "net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.flannel.1.rp_filter=0 (the larger \
             applies: strict)"
        ),
        "{finding:#?}"
    );
    assert!(
        evidence(&finding, "route_back").starts_with(&format!(
            "the route back to {} leaves via eth0",
            lab.node(2).pod_ip()
        )),
        "{finding:#?}"
    );
    sysctl(node0, "net/ipv4/conf/all/rp_filter", "2");
    wait_resolved(daemon, "rp_filter_drop", "flannel.1");
}

/// Node 1 sends VXLAN packets with a bad outer UDP checksum (its egress mangled by nft, as
/// a broken checksum offload would): node 0, whose eth0 validates checksums itself
/// (rx-checksumming off, like a NIC that does not), drops them as UDP_CSUM. Named as the
/// peer and the device, with the device's offloads.
#[test]
fn bad_vxlan_checksums_from_a_peer_are_named_with_the_device_until_healed() {
    let Some(setup) =
        setup("bad_vxlan_checksums_from_a_peer_are_named_with_the_device_until_healed")
    else {
        return;
    };
    let (lab, daemon) = (&setup.lab, &setup.daemon);
    let _stream = lab.udp_stream(1, 0, 50);
    run_in(lab.node(0).ns(), "ethtool", &["-K", "eth0", "rx", "off"]);
    run_in(lab.node(1).ns(), "ethtool", &["-K", "eth0", "tx", "off"]);
    nft(
        lab.node(1).ns(),
        "table netdev corrupt {\n chain out { type filter hook egress device \"eth0\" priority 0;\n  \
         udp dport 8472 udp checksum set 0x1234\n }\n}\n",
    );
    let vtep1 = lab.node(1).underlay_ip();
    let finding = daemon.wait_finding(
        "checksum_drop",
        &format!("checksum drops from {vtep1} dev eth0"),
        DEADLINE,
    );
    assert!(
        evidence(&finding, "problem").contains("VXLAN packets with a bad outer UDP checksum"),
        "{finding:#?}"
    );
    assert!(
        evidence(&finding, "offloads").starts_with("eth0: rx-checksum off"),
        "{finding:#?}"
    );
    assert_eq!(evidence(&finding, "node"), node_name(1), "{finding:#?}");
    run_in(
        lab.node(1).ns(),
        "nft",
        &["delete", "table", "netdev", "corrupt"],
    );
    wait_resolved(daemon, "checksum_drop", &vtep1.to_string());
}

/// One-way UDP (statsd-like, 20 a second) to `to` until dropped, or a listener for it.
struct OneWay {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OneWay {
    fn start(lab: &Lab, to: Ipv4Addr) -> Self {
        Self::start_in(lab.node(0).pod_ns(), to)
    }

    /// From namespace `ns`.
    fn start_in(ns: &NetNs, to: Ipv4Addr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = ns.spawn(move || {
            let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
            while !flag.load(Ordering::Relaxed) {
                let _ = socket.send_to(b"metric:1|c", (to, 8125));
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// A statsd-like listener on `port` in namespace `ns`: reads every datagram, never
    /// answers, so the one-way traffic to it gets nothing back.
    fn listen_in(ns: &NetNs, port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = ns.spawn(move || {
            let socket = UdpSocket::bind(("0.0.0.0", port)).expect("bind the listener");
            socket
                .set_read_timeout(Some(Duration::from_millis(50)))
                .expect("read timeout");
            let mut buf = [0u8; 512];
            while !flag.load(Ordering::Relaxed) {
                let _ = socket.recv_from(&mut buf);
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for OneWay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The shipped `detect.window`: silence alone names a destination only after it.
const WINDOW: Duration = Duration::from_secs(10);

/// A pod sends one-way UDP to a pod address that no longer exists on node 2: node 2 says
/// "host unreachable" to the prober (its neighbour resolution fails), which names the
/// destination before a window of silence could (how soon is `cargo xtask bench
/// drops-causes`' figure), with the ICMP error as evidence. The pod comes back, answers,
/// and dies again: named again from node 2's ICMP error while its replies from before are
/// still in the window (a window of silence could not name it yet). Back again, it answers
/// a probe and dies right after: named from the ICMP error node 2 sends for the traffic,
/// while the probe's answer still vouches for it.
#[test]
fn a_dead_pod_address_is_named_at_once_from_a_definitive_icmp_error() {
    let Some(setup) = setup("a_dead_pod_address_is_named_at_once_from_a_definitive_icmp_error")
    else {
        return;
    };
    let (lab, daemon) = (&setup.lab, &setup.daemon);
    let dead = Ipv4Addr::new(10, 244, 2, 77);
    let _sender = OneWay::start(lab, dead);
    let finding = daemon.wait_finding(
        "blackholed_destination",
        &format!("destination {dead} dev {VXLAN_DEV}"),
        WINDOW,
    );
    assert!(
        evidence(&finding, "icmp").starts_with("host unreachable from "),
        "{finding:#?}"
    );
    // The pod comes back, its ICMP errors `ratelimit` ms apart at least, and the finding
    // resolves.
    let revive = |ratelimit: &str| {
        sysctl(lab.node(2).pod_ns(), "net/ipv4/icmp_ratelimit", ratelimit);
        lab.node(2)
            .pod_ns()
            .ip(&["addr", "add", &format!("{dead}/24"), "dev", "eth0"]);
        wait_resolved(daemon, "blackholed_destination", &dead.to_string());
    };
    // The pod's address goes and node 2 forgets its MAC: the finding that names it.
    let die = || {
        lab.node(2)
            .pod_ns()
            .ip(&["addr", "del", &format!("{dead}/24"), "dev", "eth0"]);
        lab.ip_in(
            2,
            &["neigh", "flush", "to", &dead.to_string(), "dev", "cni0"],
        );
        daemon.wait_finding(
            "blackholed_destination",
            &format!("destination {dead} dev {VXLAN_DEV}"),
            WINDOW,
        )
    };
    // The pod comes back: the address answers again, every datagram.
    revive("0");
    // And dies again, the sender still sending. Node 2 forgets its MAC (as its neighbour
    // cache does once the entry expires), so it resolves the address afresh and says
    // "host unreachable" itself, as the first time. The pod answered every datagram
    // (no ICMP rate limit in its namespace), so no probe answered just before the death
    // vouches for it (an answer does for `prober.valid_for`, and delays the naming: `cargo
    // xtask bench drops-causes` shows it).
    let again = die();
    assert!(
        evidence(&again, "icmp").starts_with("host unreachable from "),
        "{again:#?}"
    );
    let back: u64 = evidence(&again, "packets_back_in_window")
        .parse()
        .expect("a count");
    assert!(
        back > 0,
        "named only once its replies left the window: {again:#?}"
    );
    // Back once more, now with a statsd listener: the traffic gets nothing back (no
    // ICMP error from the pod either), so the daemon suspects the silent destination and
    // probes it; the probe (another port) is answered. That answer vouches for it for
    // `prober.valid_for`, and no reply to the traffic ends that early, so no new probe is
    // in flight when it dies (one would race the traffic's error to name it).
    let _statsd = OneWay::listen_in(lab.node(2).pod_ns(), 8125);
    let probes = |outcome| {
        daemon.metrics().count(
            "watchdog_probes_total",
            &[("purpose", "destination"), ("outcome", outcome)],
        )
    };
    revive("1000");
    let answered = probes("answered");
    poll_until(
        DEADLINE,
        "a fresh probe of the revived pod answered",
        || (probes("answered") > answered).then_some(()),
    );
    // It dies right after. Node 2 gives up resolving its address after one solicit, so
    // its "host unreachable" for the traffic comes well within the answer's validity.
    for (key, value) in [("mcast_solicit", "1"), ("retrans_time_ms", "200")] {
        sysctl(
            lab.node(2).ns(),
            &format!("net/ipv4/neigh/cni0/{key}"),
            value,
        );
    }
    let third = die();
    // Named from the traffic's own error while the answer still vouched: the latest
    // evidence wins.
    assert!(
        evidence(&third, "icmp").starts_with("host unreachable from ")
            && evidence(&third, "icmp").ends_with(" (to the traffic)"),
        "{third:#?}"
    );
    assert!(
        evidence(&third, "probe").contains(": answered in "),
        "{third:#?}"
    );
}

/// Node 2's flannel.1 gets another MAC (systemd-udev's MACAddressPolicy, flannel#1795):
/// node 0's FDB entry and neighbour are right, node 2 drops the frames. Probes through the
/// overlay fail, node 2's underlay address answers: named as the remote VTEP with what
/// node 0 sends it, not as a stale FDB entry.
#[test]
fn a_remote_vtep_whose_mac_changed_is_named_not_a_stale_fdb_entry() {
    let Some(setup) = setup("a_remote_vtep_whose_mac_changed_is_named_not_a_stale_fdb_entry")
    else {
        return;
    };
    let (lab, daemon) = (&setup.lab, &setup.daemon);
    let _stream = lab.udp_stream(0, 2, 50);
    lab.ip_in(
        2,
        &["link", "set", VXLAN_DEV, "address", "02:fa:00:00:00:77"],
    );
    let vtep2 = lab.node(2).underlay_ip();
    let finding = daemon.wait_finding(
        "remote_vtep_drops",
        &format!("remote vtep {vtep2} (fdb 02:fa:00:00:00:02 dev {VXLAN_DEV})"),
        DEADLINE,
    );
    assert_eq!(
        evidence(&finding, "sends"),
        format!(
            "VXLAN from {} to {vtep2}:8472 VNI 1 with inner destination MAC 02:fa:00:00:00:02",
            lab.node(0).underlay_ip()
        )
    );
    assert_eq!(evidence(&finding, "node"), node_name(2), "{finding:#?}");
    assert!(
        !daemon
            .findings()
            .iter()
            .any(|f| f.kind == "stale_fdb" && f.subject.contains(&vtep2.to_string())),
        "{:#?}",
        daemon.findings()
    );
    // Healed as Flannel heals it: the MAC back, and the neighbours the kernel flushed
    // with the address change (permanent ones included) written again.
    lab.ip_in(2, &["link", "set", VXLAN_DEV, "address", &vtep_mac(2)]);
    for j in [0, 1] {
        lab.ip_in(
            2,
            &[
                "neigh",
                "replace",
                &overlay_ip(j).to_string(),
                "lladdr",
                &vtep_mac(j),
                "dev",
                VXLAN_DEV,
                "nud",
                "permanent",
            ],
        );
    }
    wait_resolved(daemon, "remote_vtep_drops", &vtep2.to_string());
}

/// Node 0 as a host without systemd's sysctl defaults: `net.ipv4.ping_group_range` at a
/// fresh namespace's "1 0", so the prober falls back to UDP probes.
fn without_ping_sockets(lab: &Lab, daemon: &Daemon) {
    let range = lab
        .node(0)
        .ns()
        .run(|| std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range").unwrap());
    assert_eq!(range.split_whitespace().collect::<Vec<_>>(), ["1", "0"]);
    assert_eq!(
        daemon
            .metrics()
            .value("watchdog_kernel_feature", &[("feature", "ping_socket")]),
        Some(0.0)
    );
}

/// Large DF pings from node 0's pod to node 1's, 10 a second, until dropped.
fn large_pings(lab: &Lab) -> KillOnDrop {
    let pod0 = lab.node(0).pod_ns().name().to_owned();
    Command::new("ip")
        .args([
            "netns", "exec", &pod0, "ping", "-q", "-i", "0.1", "-M", "do", "-s", "1372",
        ])
        .arg(lab.node(1).pod_ip().to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(KillOnDrop)
        .expect("ping")
}

/// A silent hop on the way to node 1 that carries 1400-byte packets at most (the underlay
/// bridge drops larger frames towards node 1, as a switch with a smaller MTU does), with
/// node 0 unable to open ping sockets: the UDP path-MTU search (its steps back to back
/// while the remote's ICMP burst lasts) names the black hole soon after large packets
/// start; how soon is `cargo xtask bench drops-causes`' figure.
#[test]
fn a_path_mtu_black_hole_on_the_way_there_is_named_without_ping_sockets() {
    let Some(setup) = setup("a_path_mtu_black_hole_on_the_way_there_is_named_without_ping_sockets")
    else {
        return;
    };
    let (lab, daemon) = (&setup.lab, &setup.daemon);
    without_ping_sockets(lab, daemon);
    let hole = "table bridge hole {\n chain out { type filter hook forward priority 0;\n  \
                oifname \"n1\" meta length > 1400 drop\n }\n}\n";
    nft(lab.underlay(), hole);
    let _pings = large_pings(lab);
    let vtep1 = lab.node(1).underlay_ip().to_string();
    let finding = daemon.wait_finding(
        "mtu_black_hole",
        &format!("path to vtep {vtep1} dev {VXLAN_DEV}"),
        DEADLINE,
    );
    assert_eq!(evidence(&finding, "peer"), vtep1, "{finding:#?}");
    run_in(
        lab.underlay(),
        "nft",
        &["delete", "table", "bridge", "hole"],
    );
    wait_resolved(daemon, "mtu_black_hole", &vtep1);
}

/// The lab's usual black hole (node 1's bridge port at MTU 1400): node 1's large packets
/// back are dropped, but the bridge refragments node 0's VXLAN packets on the way there
/// (outer DF unset), so a UDP probe of any size is answered by a small ICMP error. Without
/// ping sockets the hole cannot be seen: `check` says exactly that, and what to change.
#[test]
fn check_says_what_a_path_mtu_search_without_ping_sockets_cannot_see() {
    if !require_root("check_says_what_a_path_mtu_search_without_ping_sockets_cannot_see") {
        return;
    }
    let lab = Lab::new(3);
    lab.underlay().ip(&["link", "set", "n1", "mtu", "1400"]);
    let output = Command::new("ip")
        .args(["netns", "exec", lab.node(0).ns().name()])
        .arg(watchdog_tests::daemon_binary())
        .args(["check", "--window", "1s"])
        .env("NODE_NAME", "node-0")
        .env_remove("RUST_LOG")
        .output()
        .expect("run watchdog check");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "a black hole that drops only the large packets coming back (a UDP probe's answer \
             is a small ICMP error) is not seen; to see it, allow ping sockets for the \
             daemon's group once: sysctl -w net.ipv4.ping_group_range=\"0 2147483647\""
        ),
        "{stderr}"
    );
}

/// A child process killed when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every series of a scrape: `name{labels}` → how many times it appears.
fn duplicate_series(metrics: &watchdog_tests::Metrics) -> Vec<String> {
    let mut seen = std::collections::BTreeMap::<&str, u32>::new();
    for line in metrics
        .0
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let series = line.rsplit_once(' ').map_or(line, |(series, _)| series);
        *seen.entry(series).or_default() += 1;
    }
    seen.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(series, n)| format!("{series} ×{n}"))
        .collect()
}

/// Pod UIDs of the lab's pods on nodes 0 and 1 (kubelet-shaped cgroups name them).
const POD_UIDS: [&str; 2] = [
    "0a0a0a0a-0000-4000-8000-000000000000",
    "1b1b1b1b-1111-4111-8111-111111111111",
];

/// `namespaces = "node"` (the ConfigMap's), on two nodes of one machine as on two hosts:
/// each node's daemon is confined as the DaemonSet's container and has its node's part of
/// the cgroup tree as its host tree (`pods.cgroup_root`), each node's pod is a process in a
/// kubelet-shaped cgroup of its node's part that connects to the other node's pod. A
/// burst of IP_NOPROTO drops (a reason nothing else in the lab causes) of a different
/// size in each namespace — node 0: 5 in the node's, 7 in the pod's; node 1: 13 and 17 —
/// is counted exactly by each node's daemon for its own namespaces only (12 and 30: any
/// other namespace's burst would show in the sum). Node 0's scrape, with drops to one
/// destination from two of its namespaces, has no series twice; neither has node 1's.
#[test]
fn the_shipped_config_counts_only_this_nodes_namespaces_with_unique_series() {
    if !require_root("the_shipped_config_counts_only_this_nodes_namespaces_with_unique_series") {
        return;
    }
    use crate::pods::{NodeCgroups, PodProcess, confined, systemd_layout};
    const DROPS: &str = "watchdog_kernel_drops_total";
    let lab = Lab::new(3);
    lab.check_pod_connectivity()
        .expect("the lab works before injection");
    let parts = [NodeCgroups::new(), NodeCgroups::new()];
    let _pods: Vec<PodProcess> = (0..2)
        .map(|i| {
            PodProcess::start_every(
                lab.node(i).pod_ns(),
                &parts[i],
                &systemd_layout(POD_UIDS[i]),
                &lab.node(1 - i).pod_ip().to_string(),
                watchdog_tests::lab::TCP_PORT,
                1,
            )
        })
        .collect();
    let shipped: Vec<Shipped> = (0..2).map(|i| Shipped::start(&lab, i)).collect();
    let daemons: Vec<Daemon> = (0..2)
        .map(|i| {
            let config = shipped[i].config_with_cgroup_root("", &parts[i].confined_root());
            let mut daemon = confined(lab.node(i).ns(), &config);
            daemon.wait_ready();
            daemon
        })
        .collect();
    // Each daemon knows its node's pod as this node's: its connects are counted, by UID.
    for (i, daemon) in daemons.iter().enumerate() {
        let client = format!("pod-uid:{}", POD_UIDS[i]);
        poll_until(DEADLINE, &format!("node {i}'s pod counted as its"), || {
            (daemon.metrics().count(
                "watchdog_tcp_client_connects_total",
                &[("client", &client), ("outcome", "attempted")],
            ) > 0)
                .then_some(())
        });
    }
    let before: Vec<u64> = daemons
        .iter()
        .map(|daemon| daemon.metrics().count(DROPS, &[("reason", "IP_NOPROTO")]))
        .collect();
    // Node 1's bursts first: had node 0's daemon counted them, they would show below.
    lab.node(1).ns().run(|| traffic::ip_unknown_protocol(13));
    lab.node(1)
        .pod_ns()
        .run(|| traffic::ip_unknown_protocol(17));
    lab.node(0).ns().run(|| traffic::ip_unknown_protocol(5));
    lab.node(0).pod_ns().run(|| traffic::ip_unknown_protocol(7));
    // A dead address in node 0's pod subnet, sent to from the pod and from the node:
    // NEIGH_FAILED drops to one destination in two of node 0's namespaces (one series).
    let dead = Ipv4Addr::new(10, 244, 0, 99);
    let _pod = OneWay::start_in(lab.node(0).pod_ns(), dead);
    let _node = OneWay::start_in(lab.node(0).ns(), dead);
    for (i, (daemon, want)) in daemons.iter().zip([12, 30]).enumerate() {
        let metrics = poll_until(
            DEADLINE,
            &format!("node {i}'s {want} drops counted"),
            || {
                let metrics = daemon.metrics();
                let dead_counted = i != 0
                    || metrics.count(
                        "watchdog_kernel_drop_destinations_total",
                        &[("reason", "NEIGH_FAILED"), ("destination", "10.244.0.99")],
                    ) > 0;
                (metrics.count(DROPS, &[("reason", "IP_NOPROTO")]) >= before[i] + want
                    && dead_counted)
                    .then_some(metrics)
            },
        );
        assert_eq!(
            metrics.count(DROPS, &[("reason", "IP_NOPROTO")]),
            before[i] + want,
            "node {i}'s daemon: {}",
            metrics.0
        );
        assert_eq!(
            duplicate_series(&metrics),
            Vec::<String>::new(),
            "node {i}'s daemon: {}",
            metrics.0
        );
    }
}

/// A healthy mix: pod traffic both ways, and node 0's host firewall dropping a port scan
/// of node 0 from node 1 (netfilter drops of traffic to the node itself, not a pod's):
/// the drops are counted, nothing is raised about them. (The 10-minute version of this
/// mix belongs with the soak test.)
#[test]
fn a_host_firewall_dropping_a_port_scan_of_the_node_raises_nothing() {
    let Some(setup) = setup("a_host_firewall_dropping_a_port_scan_of_the_node_raises_nothing")
    else {
        return;
    };
    let (lab, daemon) = (&setup.lab, &setup.daemon);
    let _there = lab.udp_stream(0, 1, 50);
    let _back = lab.udp_stream(2, 0, 50);
    lab.firewall_node_ports(0, 1000..2001);
    let scan = lab.port_scan(1, 0, 1000..1100);
    let drops = |metrics: &watchdog_tests::Metrics| {
        metrics.count(
            "watchdog_kernel_drops_total",
            &[("reason", "NETFILTER_DROP")],
        )
    };
    let before = drops(&daemon.metrics());
    // Twice the window: every drop detector has judged a full window of the scan.
    let until = std::time::Instant::now() + 2 * WINDOW;
    while std::time::Instant::now() < until {
        let findings = daemon.findings();
        assert!(findings.is_empty(), "{findings:#?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let counted = drops(&daemon.metrics()) - before;
    drop(scan);
    assert!(
        counted >= 100,
        "the scan's drops were not counted: {counted}"
    );
}
