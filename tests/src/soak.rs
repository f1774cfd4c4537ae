//! The soak: a healthy 3-node lab under a realistic mix, the daemon on node 0, for a
//! while. Shared by the soak test (2 minutes) and `cargo xtask bench soak` (10 minutes).
//!
//! The mix: ICMP ping between pods, a paced TCP bulk transfer, one-way UDP to a listener
//! that never answers (statsd-like, every 50 ms), request/response UDP (DNS-like echo, 10
//! a second per pair) and a pod restart on node 0 every few seconds (a host veth on
//! `cni0` deleted and recreated).

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    Daemon,
    lab::{Lab, pod_ip},
    open_fds,
    shipped::Shipped,
};

/// The daemon's configuration in a soak.
#[derive(Clone, Copy, Debug)]
pub enum Settings<'a> {
    /// This config (`""`: the embedded default).
    Given(&'a str),
    /// The shipped DaemonSet's ConfigMap (`namespaces = "node"`, Nodes from the Kubernetes
    /// API: a fake server serving the lab's Nodes), see [`Shipped`].
    Shipped,
}

/// What a soak saw.
#[derive(Clone, Debug, Default)]
pub struct SoakReport {
    /// How long the mix ran.
    pub ran: Duration,
    /// Every distinct finding (`kind subject`) seen on `/api/v1/findings` during the run.
    pub findings: Vec<String>,
    /// Times `/api/v1/findings` was read.
    pub checks: u32,
    /// The daemon's open fds after the warm-up and at the end.
    pub fds: (usize, usize),
    /// The daemon's resident memory (KiB) after the warm-up and at the end.
    pub rss_kib: (u64, u64),
    /// Pod restarts done.
    pub restarts: u32,
    /// Request/response round trips answered, and sent.
    pub echoes: (u64, u64),
    /// One-way datagrams received, and sent.
    pub one_way: (u64, u64),
    /// TCP bulk bytes received.
    pub bulk_bytes: u64,
    /// Connects of the port scan tried.
    pub scanned: u64,
    /// Netfilter drops the daemon counted during the run
    /// (`watchdog_kernel_drops_total{reason="NETFILTER_DROP"}`).
    pub netfilter_drops: u64,
}

/// Resident memory of `pid` in KiB (`VmRSS`); panics when the process is gone.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e} (has the process exited?)"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status:\n{status}"))
}

/// A `ping` in a pod's namespace, killed on drop.
struct Ping(Child);

impl Ping {
    fn start(lab: &Lab, from: usize, to: usize) -> Self {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                lab.node(from).pod_ns().name(),
                "ping",
                "-q",
                "-i",
                "0.2",
            ])
            .arg(pod_ip(to).to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ping");
        Self(child)
    }
}

impl Drop for Ping {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the mix on a fresh 3-node lab with the daemon (started with `settings`) on node 0
/// for `duration` (after a 15 s warm-up that fills the windows and settles memory).
pub fn run(settings: Settings<'_>, duration: Duration) -> SoakReport {
    let lab = Lab::new(3);
    lab.check_pod_connectivity()
        .expect("the lab works before the soak");
    let shipped = matches!(settings, Settings::Shipped).then(|| Shipped::start(&lab, 0));
    let config = match (settings, &shipped) {
        (Settings::Given(config), _) => config.to_owned(),
        (Settings::Shipped, shipped) => shipped.as_ref().expect("started").config(""),
    };
    let mut daemon = Daemon::start(lab.node(0).ns(), &config);
    daemon.wait_ready();
    lab.firewall_node_ports(0, 1000..2001);
    let scan = lab.port_scan(1, 0, 1000..1100);
    let _pings = [Ping::start(&lab, 0, 1), Ping::start(&lab, 2, 0)];
    let bulk = lab.tcp_bulk(0, 1);
    let one_way = [
        lab.one_way_udp(0, 1, Duration::from_millis(50)),
        lab.one_way_udp(0, 2, Duration::from_millis(50)),
        lab.one_way_udp(1, 0, Duration::from_millis(50)),
    ];
    let echoes = [lab.udp_stream(0, 2, 10), lab.udp_stream(1, 0, 10)];
    let mut report = SoakReport::default();
    let mut seen = std::collections::BTreeSet::new();
    let mut check = |daemon: &Daemon, report: &mut SoakReport| {
        for finding in daemon.findings() {
            seen.insert(format!("{} {}", finding.kind, finding.subject));
        }
        report.checks += 1;
    };
    let churn = |report: &mut SoakReport, up: bool| {
        if up {
            lab.ip_in(
                0,
                &[
                    "link", "add", "wdsoak0", "type", "veth", "peer", "name", "wdsoak0p",
                ],
            );
            lab.ip_in(0, &["link", "set", "wdsoak0", "master", "cni0", "up"]);
            lab.ip_in(0, &["link", "set", "wdsoak0p", "up"]);
            report.restarts += 1;
        } else {
            lab.ip_in(0, &["link", "del", "wdsoak0"]);
        }
    };
    let warm_up = Instant::now();
    while warm_up.elapsed() < Duration::from_secs(15) {
        check(&daemon, &mut report);
        std::thread::sleep(Duration::from_millis(500));
    }
    report.fds.0 = open_fds(daemon.pid());
    report.rss_kib.0 = rss_kib(daemon.pid());
    let netfilter_drops = |daemon: &Daemon| {
        daemon.metrics().count(
            "watchdog_kernel_drops_total",
            &[("reason", "NETFILTER_DROP")],
        )
    };
    let drops_before = netfilter_drops(&daemon);
    let start = Instant::now();
    let mut up = false;
    let mut last_churn = Instant::now();
    while start.elapsed() < duration {
        if last_churn.elapsed() >= Duration::from_secs(3) {
            up = !up;
            churn(&mut report, up);
            last_churn = Instant::now();
        }
        check(&daemon, &mut report);
        std::thread::sleep(Duration::from_millis(500));
    }
    if up {
        churn(&mut report, false);
    }
    // The daemon releases the last churned link on its next cycle; read the end figures
    // once that had time to happen (a poll, not a sleep as synchronisation: the figure is
    // taken as soon as it is back at the start's).
    let settle = Instant::now();
    loop {
        report.fds.1 = open_fds(daemon.pid());
        if report.fds.1 <= report.fds.0 || settle.elapsed() > Duration::from_secs(10) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    report.rss_kib.1 = rss_kib(daemon.pid());
    report.netfilter_drops = netfilter_drops(&daemon) - drops_before;
    report.scanned = scan.attempts();
    drop(scan);
    check(&daemon, &mut report);
    report.ran = start.elapsed();
    report.bulk_bytes = bulk.received();
    for stream in echoes {
        let stats = stream.stop();
        report.echoes.0 += stats.replies;
        report.echoes.1 += stats.sent;
    }
    for flow in &one_way {
        let (sent, received) = flow.counts();
        report.one_way.0 += received;
        report.one_way.1 += sent;
    }
    report.findings = seen.into_iter().collect();
    report
}
