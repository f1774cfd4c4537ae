//! The daemon's memory, measured the same way on this host and inside the kernel matrix's
//! qemu guests: `cargo xtask bench memory` (through the `memory_guest` helper) and the
//! kernel test's footprint (through `kernel_guest`).
//!
//! Each row is one daemon in a namespace of its own, observed while Prometheus would
//! scrape it (`/metrics` every [`SCRAPE_EVERY`]); its figures are the process's
//! `/proc/<pid>/status` at the end: resident (`VmRSS`, split into anonymous,
//! file-backed and shared), the peak (`VmHWM`, start-up included), and its threads.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{
    Daemon, NetNs, TempDir,
    apiserver::InNetns,
    daemon_binary,
    lab::{
        nodes::synthetic_node,
        pods::{PODS, SLICES, serve_pods},
    },
    poll_until, traffic,
};

/// The start-up peak (`VmHWM`) the daemon must stay under, embedded default config (issue
/// 25; the kernel test holds it).
pub const STARTUP_PEAK_BUDGET_KIB: u64 = 16 * 1024;
/// The idle resident memory (`VmRSS`) the daemon must stay under, embedded default config
/// (issue 25; the kernel test holds it in every guest, the bench prints it). Most of it is
/// the executable's code, clean file pages the kernel reclaims under pressure.
pub const IDLE_BUDGET_KIB: u64 = 9 * 1024;
/// The idle anonymous memory (`RssAnon`: heap, stacks, written data) the daemon must stay
/// under, embedded default config: what it allocated, which nothing but the daemon can give
/// back (the kernel test holds it too; 1.1 MiB measured on x86_64).
pub const IDLE_ANON_BUDGET_KIB: u64 = 4 * 1024;
/// The resident memory (`VmRSS`) the daemon must stay under watching
/// [`NODES_BUDGET_COUNT`] Nodes (a bench figure, `cargo xtask bench memory`; no test holds it).
pub const NODES_BUDGET_KIB: u64 = 12 * 1024;
/// The Nodes [`NODES_BUDGET_KIB`] is for.
pub const NODES_BUDGET_COUNT: usize = 1000;
/// The Pods the DaemonSet's request is derived with (the bench's full run).
pub const PODS_BUDGET_COUNT: usize = 500;
/// The DaemonSet's memory request is the steady state ([`steady_kib`]) times this.
pub const REQUEST_MARGIN: f64 = 1.25;
/// The DaemonSet's memory limit is at least the highest peak of any row times this (and
/// the bound the 100 000-endpoints test holds the peak under: tests/tests/suite/pods.rs).
pub const LIMIT_MARGIN: f64 = 2.0;
/// How far the DaemonSet's memory request may be from the one [`RECORD`] derives
/// (either way): the manifest rounds, and a re-recorded bench moves a little.
pub const RECORD_DRIFT: f64 = 0.10;
/// How much a fresh (`--quick`) run may exceed [`RECORD`]'s figures before the bench
/// fails: the rounds' spread on one machine is a few percent.
pub const RECORD_TOLERANCE: f64 = 0.20;
/// What the tolerance is at least, in KiB (small figures, e.g. RssAnon, move by pages).
pub const RECORD_TOLERANCE_MIN_KIB: u64 = 512;
/// The memory bench's figures the DaemonSet's resources come from, relative to the
/// repository's root: `cargo xtask bench memory --record` writes it; the deploy test
/// holds the manifest and docs/deploy.md to it; every other run of the bench on this host
/// (CI's `--quick`) fails when the daemon grew past it.
pub const RECORD: &str = "deploy/bench-memory.json";
/// How often an observed daemon's `/metrics` is read, as Prometheus would.
pub const SCRAPE_EVERY: Duration = Duration::from_secs(10);
/// Pods alive at once during the churn.
pub const CHURN_PODS_ALIVE: usize = 10;

const NODES: &str = "/api/v1/nodes";

/// A process's memory figures (KiB) and threads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    /// `VmRSS`.
    pub resident_kib: u64,
    /// `VmHWM`: the peak, start-up included.
    pub peak_kib: u64,
    /// `RssAnon`: heap, stacks, written data.
    pub anon_kib: u64,
    /// `RssFile`: mapped files (the executable and its libraries).
    pub file_kib: u64,
    /// `RssShmem`: shared memory, and files mapped from tmpfs (the kernel matrix's guests
    /// run the daemon from their initramfs: there its executable counts here).
    pub shmem_kib: u64,
    /// `Threads`.
    pub threads: u64,
}

impl Figures {
    /// Process `pid`'s figures now.
    pub fn of(pid: u32) -> Option<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| -> Option<u64> {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        };
        Some(Self {
            resident_kib: field("VmRSS:")?,
            peak_kib: field("VmHWM:")?,
            anon_kib: field("RssAnon:")?,
            file_kib: field("RssFile:")?,
            shmem_kib: field("RssShmem:")?,
            threads: field("Threads:")?,
        })
    }

    /// As JSON (what the helpers print).
    pub fn to_json(self) -> Value {
        json!({
            "resident_kib": self.resident_kib,
            "peak_kib": self.peak_kib,
            "anon_kib": self.anon_kib,
            "file_kib": self.file_kib,
            "shmem_kib": self.shmem_kib,
            "threads": self.threads,
        })
    }

    /// From [`Figures::to_json`]'s JSON.
    pub fn from_json(value: &Value) -> Option<Self> {
        let field = |name: &str| value[name].as_u64();
        Some(Self {
            resident_kib: field("resident_kib")?,
            peak_kib: field("peak_kib")?,
            anon_kib: field("anon_kib")?,
            file_kib: field("file_kib")?,
            shmem_kib: field("shmem_kib")?,
            threads: field("threads")?,
        })
    }
}

/// What a row runs: how long a daemon is observed, how long the churn lasts, how many
/// Nodes and Pods the fake API server serves.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// How long each daemon is observed once ready (and its sources listed).
    pub idle: Duration,
    /// How long the churn runs.
    pub churn: Duration,
    /// Nodes served for the Nodes row.
    pub nodes: usize,
    /// Pods served (and as many endpoints, 10 per EndpointSlice) for the Pods row.
    pub pods: usize,
    /// Idle connections opened for the connections row.
    pub connections: usize,
}

/// The rows, by name: what each runs.
pub const ROWS: &[(&str, &str)] = &[
    (
        "default",
        "the embedded default config in an empty namespace: the start-up peak and the idle \
         resident memory",
    ),
    (
        "churn",
        "namespaces = \"node\"; a pod namespace a second (a veth into the daemon's namespace, \
         a process, failed connects and drops), 10 alive at once; the API read every 10 s",
    ),
    (
        "nodes",
        "[desired] source = \"kubernetes\", the Nodes served by the fake API server (https)",
    ),
    (
        "pods",
        "the DaemonSet's sources: namespaces = \"node\", [desired], [pods] source and \
         endpoints = \"kubernetes\", the Pods and EndpointSlices served by the fake API server",
    ),
    (
        "connections",
        "the embedded default (its [http] limits) while idle connections are opened and held \
         (sending nothing): the figures once /metrics answers, and after they closed",
    ),
];

/// Measures row `name` with the daemon [`daemon_binary`] names.
pub fn measure(name: &str, settings: &Settings) -> Result<Value, String> {
    match name {
        "default" => Ok(default(settings.idle).to_json()),
        "churn" => Ok(churn(settings.churn)),
        "nodes" => Ok(nodes(settings.nodes, settings.idle).to_json()),
        "pods" => Ok(pods(settings.pods, settings.idle).to_json()),
        "connections" => Ok(connections(settings.connections)),
        other => Err(format!(
            "no row {other}; the rows are {:?}",
            ROWS.iter().map(|(name, _)| name).collect::<Vec<_>>()
        )),
    }
}

/// Observes a ready daemon for `period`, reading `/metrics` every [`SCRAPE_EVERY`]; its
/// figures at the end.
fn observe(daemon: &Daemon, period: Duration) -> Figures {
    let start = Instant::now();
    while start.elapsed() < period {
        let _ = daemon.get("/metrics");
        std::thread::sleep(SCRAPE_EVERY.min(period.saturating_sub(start.elapsed())));
    }
    Figures::of(daemon.pid()).expect("the daemon's /proc status")
}

/// The embedded default config in an empty namespace, observed for `idle`.
pub fn default(idle: Duration) -> Figures {
    let ns = NetNs::new("wd-mem");
    let mut daemon = Daemon::start(&ns, "");
    daemon.wait_ready();
    let figures = observe(&daemon, idle);
    daemon.stop();
    figures
}

/// The daemon's start-up, step by step: its debug lines `memory after <step>` (resident
/// and peak KiB), as `[step, resident, peak]`.
pub fn start_up_steps() -> Value {
    let ns = NetNs::new("wd-mem");
    let dir = TempDir::new("wd-mem-steps");
    let log_path = dir.path().join("daemon.log");
    let log = std::fs::File::create(&log_path).expect("create the log");
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .arg(daemon_binary())
        .arg("run")
        .env("RUST_LOG", "info,watchdog::sources::kernel::memory=debug")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup the log"))
        .stderr(log)
        .spawn()
        .expect("start the daemon");
    let read = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let done = poll_until(Duration::from_secs(120), "the start-up's last step", || {
        let text = read();
        (text.contains("memory after start-up") || child.try_wait().ok().flatten().is_some())
            .then_some(text)
    });
    let _ = child.kill();
    let _ = child.wait();
    let steps: Vec<Value> = done
        .lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once("memory after ")?;
            let (step, fields) = rest.split_once(" resident_kib=")?;
            let (resident, peak) = fields.split_once(" peak_kib=")?;
            Some(json!([
                step,
                resident.trim().parse::<u64>().ok()?,
                peak.trim().parse::<u64>().ok()?
            ]))
        })
        .collect();
    Value::Array(steps)
}

/// A pod of the churn: a namespace with a veth into the daemon's and a process in it.
struct ChurnPod {
    process: Child,
    _ns: NetNs,
}

impl Drop for ChurnPod {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// `namespaces = "node"` while pods come and go for `period` (see [`ROWS`]); the figures
/// at the end and how many pods came and went.
pub fn churn(period: Duration) -> Value {
    let host = NetNs::new("wd-mem");
    let mut daemon = Daemon::start(&host, "namespaces = \"node\"\n");
    daemon.wait_ready();
    let mut alive: std::collections::VecDeque<ChurnPod> = Default::default();
    let start = Instant::now();
    let mut last_scrape = start;
    let mut created = 0usize;
    while start.elapsed() < period {
        let began = Instant::now();
        let i = created;
        let (net, host_octet) = (i / 128 % 256, (i % 128) * 2);
        let pod = NetNs::new("wd-mp");
        let pod_addr = format!("10.211.{net}.{}", host_octet + 1);
        let host_addr = format!("10.211.{net}.{host_octet}");
        pod.veth_to(
            &host,
            ("eth0", &format!("{pod_addr}/31")),
            (&format!("mp{}", i % 1000), &format!("{host_addr}/31")),
        );
        let process = Command::new("ip")
            .args(["netns", "exec", pod.name(), "sleep", "3600"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a process in the pod");
        pod.run(|| {
            traffic::udp_to_closed_port(5, false);
            let target = format!("{host_addr}:9").parse().expect("address");
            let _ = std::net::TcpStream::connect_timeout(&target, Duration::from_millis(200));
            let socket = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind udp");
            let _ = socket.send_to(b"watchdog", target);
        });
        alive.push_back(ChurnPod { process, _ns: pod });
        created += 1;
        if alive.len() > CHURN_PODS_ALIVE {
            alive.pop_front();
        }
        if last_scrape.elapsed() >= SCRAPE_EVERY {
            let _ = daemon.get("/metrics");
            let _ = daemon.get("/api/v1/findings");
            last_scrape = Instant::now();
        }
        std::thread::sleep(Duration::from_secs(1).saturating_sub(began.elapsed()));
    }
    drop(alive);
    let figures = Figures::of(daemon.pid()).expect("the daemon's /proc status");
    daemon.stop();
    let mut value = figures.to_json();
    value["pods_created"] = json!(created);
    value
}

/// Waits until the daemon's desired state is known from `source` with `nodes` Nodes.
pub fn wait_desired(daemon: &Daemon, source: &str, nodes: u64) {
    poll_until(Duration::from_secs(120), "the desired state known", || {
        let metrics = daemon.metrics();
        (metrics.value("watchdog_desired_up", &[("source", source)]) == Some(1.0)
            && metrics.count("watchdog_desired_nodes", &[]) == nodes)
            .then_some(())
    });
}

/// The daemon watching `nodes` Nodes on the fake API server, observed for `idle` once it
/// knows them all.
pub fn nodes(nodes: usize, idle: Duration) -> Figures {
    let ns = NetNs::new("wd-mem");
    let server = InNetns::start(&ns, true);
    for i in 0..nodes {
        server.apply(NODES, synthetic_node(i));
    }
    let dir = TempDir::new("wd-mem-nodes");
    let config = format!(
        "[desired]\nsource = \"kubernetes\"\nkubeconfig = \"{}\"\n",
        server.kubeconfig(dir.path()).display()
    );
    let mut daemon = Daemon::start(&ns, &config);
    daemon.wait_ready();
    wait_desired(&daemon, "kubernetes", nodes as u64);
    let figures = observe(&daemon, idle);
    daemon.stop();
    figures
}

/// The daemon with the DaemonSet's sources, `pods` Pods on its node and as many endpoints
/// (10 per EndpointSlice) served, observed for `idle` once it watches them.
pub fn pods(pods: usize, idle: Duration) -> Figures {
    let node = "bench-node";
    let ns = NetNs::new("wd-mem");
    let server = serve_pods(&ns, pods, node, 8080);
    let dir = TempDir::new("wd-mem-pods");
    let config = format!(
        "namespaces = \"node\"\n[desired]\nsource = \"kubernetes\"\nkubeconfig = \"{}\"\n\
         node_name = \"{node}\"\n[pods]\nsource = \"kubernetes\"\nendpoints = \"kubernetes\"\n",
        server.kubeconfig(dir.path()).display()
    );
    let mut daemon = Daemon::start(&ns, &config);
    daemon.wait_ready();
    poll_until(
        Duration::from_secs(120),
        "the pods and slices watched",
        || (server.watchers(PODS) >= 1 && server.watchers(SLICES) >= 1).then_some(()),
    );
    let figures = observe(&daemon, idle);
    daemon.stop();
    figures
}

/// The embedded default holding `count` idle connections (see [`ROWS`]): the figures once
/// `/metrics` answers during the flood (and how long that took), and the resident memory
/// after the connections closed and the daemon settled.
pub fn connections(count: usize) -> Value {
    let ns = NetNs::new("wd-mem");
    let mut daemon = Daemon::start(&ns, "");
    daemon.wait_ready();
    let _ = daemon.get("/metrics");
    let address: std::net::SocketAddr = "127.0.0.1:9477".parse().expect("address");
    raise_open_files_limit();
    let flood: Vec<std::net::TcpStream> = crate::run_in(&ns.path(), || {
        (0..count)
            .filter_map(|_| {
                std::net::TcpStream::connect_timeout(&address, Duration::from_secs(5)).ok()
            })
            .collect()
    });
    let opened = flood.len();
    let started = Instant::now();
    let answered = poll_until(Duration::from_secs(60), "/metrics during the flood", || {
        matches!(daemon.get("/metrics"), Some((200, _))).then(|| started.elapsed())
    });
    let held = Figures::of(daemon.pid()).expect("the daemon's /proc status");
    drop(flood);
    // Settled: the same resident memory a second apart, after a scrape.
    let after = poll_until(
        Duration::from_secs(60),
        "the resident memory to settle",
        || {
            let _ = daemon.get("/metrics");
            let a = Figures::of(daemon.pid())?.resident_kib;
            std::thread::sleep(Duration::from_secs(1));
            let b = Figures::of(daemon.pid())?.resident_kib;
            (a == b).then_some(b)
        },
    );
    daemon.stop();
    let mut value = held.to_json();
    value["connections"] = json!(opened);
    value["metrics_answered_ms"] = json!(answered.as_millis() as u64);
    value["after_kib"] = json!(after);
    value
}

/// Lifts this process's open-file limit to its hard limit (the connections row holds
/// thousands of sockets; the soft limit is often 1024).
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// The steady state with the DaemonSet's sources: the Nodes row plus the anonymous memory
/// the Pods row adds to idle. The executable's pages (RssFile, RssShmem in the guests) are
/// counted once, as the larger of the two rows': they are the same code, mapped once.
pub fn steady_kib(idle: &Figures, nodes: &Figures, pods: &Figures) -> u64 {
    let mapped = |f: &Figures| f.file_kib + f.shmem_kib;
    nodes.resident_kib
        + pods.anon_kib.saturating_sub(idle.anon_kib)
        + mapped(pods).saturating_sub(mapped(nodes))
}

/// The memory request (MiB) for a steady state of `steady_kib`.
pub fn request_mib(steady_kib: u64) -> u64 {
    (steady_kib as f64 * REQUEST_MARGIN / 1024.0).ceil() as u64
}

/// The lowest memory limit (MiB) for a highest peak of `peak_kib`.
pub fn limit_floor_mib(peak_kib: u64) -> u64 {
    (peak_kib as f64 * LIMIT_MARGIN / 1024.0).ceil() as u64
}

/// The DaemonSet's memory (request, limit) in MiB, from the kustomize base's manifest.
pub fn daemonset_memory_mib() -> (u64, u64) {
    let path = crate::repo::root().join("deploy/kustomize/base/daemonset.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let after = |key: &str| -> u64 {
        let rest = &text[text
            .find(key)
            .unwrap_or_else(|| panic!("{}: no {key}", path.display()))..];
        rest.lines()
            .find_map(|line| line.trim().strip_prefix("memory: "))
            .and_then(|value| value.strip_suffix("Mi")?.parse().ok())
            .unwrap_or_else(|| panic!("{}: no `memory: <n>Mi` under {key}", path.display()))
    };
    (after("requests:"), after("limits:"))
}
