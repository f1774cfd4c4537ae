//! Benchmarks, each printing ratios measured side by side in one run.

use std::{
    io::BufRead as _,
    net::UdpSocket,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use watchdog_tests::{
    Daemon, NetNs,
    lab::{self, Lab},
    poll_until, require_root,
};

use crate::util;

#[derive(Subcommand)]
pub enum Bench {
    /// Drop-storm cost: UDP datagrams to a closed port on loopback (each one a NO_SOCKET
    /// drop) per second with nothing attached, with the watchdog attached, and with
    /// bpftrace's `@[args->reason] = count()` attached; rounds interleave the three.
    Drops {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
        /// Rounds of (none, watchdog, bpftrace).
        #[arg(long, default_value_t = 5)]
        rounds: u32,
    },
    /// Idle cost: the daemon's resident memory and CPU time over a quiet period.
    Idle {
        /// Seconds to observe.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Run on node 0 of a 3-node lab with pod traffic between all pods (10 packets/s
        /// per pair) instead of an empty namespace; resident memory is sampled every 10 s.
        #[arg(long)]
        lab: bool,
    },
    /// Network mirror cost: initial load time and memory with many routes and neighbours,
    /// LPM lookup time, and how long a burst of route changes takes to be reflected.
    /// Detection latency: for each lab scenario, the time from injecting the fault (traffic
    /// runs at 50 packets/s, so the first blackholed packet follows within 20 ms) to the
    /// finding on /api/v1/findings, with the default settings, over `runs` fresh labs.
    Latency {
        /// Runs per scenario.
        #[arg(long, default_value_t = 20)]
        runs: u32,
        /// Only these scenarios (comma separated): fdb, gateway, link, blackhole, node, flush.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// TC probe cost: ns per packet from BPF_PROG_TEST_RUN (harness subtracted) for a
    /// recent peer, IPv6, peers sharing a cache slot and a new peer each packet, with the
    /// programs' instruction counts; then iperf3 TCP throughput over a veth pair with the
    /// daemon's probes attached vs detached, interleaved.
    Tc {
        /// Seconds per iperf3 measurement.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
        /// Rounds of (detached, attached).
        #[arg(long, default_value_t = 8)]
        rounds: u32,
        /// Rounds of BPF_PROG_TEST_RUN measurements (medians are reported).
        #[arg(long, default_value_t = 11)]
        test_runs: u32,
        /// Also build the eBPF programs of this git revision (e.g. `main`) and measure them
        /// side by side with the working tree's, rounds interleaved.
        #[arg(long)]
        baseline: Option<String>,
        /// Read the programs' sizes inside the arm64 kernels in this run (boots the
        /// matrix's two arm64 kernels under qemu, a few minutes); without it no arm64
        /// figure is printed (only what this run measured is).
        #[arg(long)]
        arm64: bool,
    },
    /// TCP probe cost per connect: loopback connects per second with its programs
    /// detached vs attached (interleaved), and their own run time per connect (BPF stats).
    Tcp {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 2)]
        seconds: u64,
        /// Rounds of (detached, attached).
        #[arg(long, default_value_t = 5)]
        rounds: u32,
    },
    /// Soak: a healthy 3-node lab under a realistic mix (ping, TCP bulk, one-way UDP,
    /// request/response UDP, a pod restart every 6 s, node 0's host firewall dropping a
    /// port scan of node 0) with the daemon (release; default settings, or the shipped
    /// ConfigMap's with --shipped) on node 0; prints the findings seen (goal 0), the
    /// netfilter drops it counted, and its fds and resident memory after a 15 s warm-up
    /// and at the end.
    Soak {
        /// Minutes to run after the warm-up.
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        /// Run the daemon with the shipped ConfigMap (`namespaces = "node"`, Nodes from a
        /// fake API server serving the lab's Nodes) instead of the embedded default.
        #[arg(long)]
        shipped: bool,
    },
    /// Desired state: Node change -> finding latency (NodeList file and Kubernetes watch,
    /// on the lab), and the idle daemon's memory and CPU with a watch on `nodes` Nodes
    /// (the fake API server) vs `source = "none"`.
    Desired {
        /// Node changes per source.
        #[arg(long, default_value_t = 10)]
        runs: u32,
        /// Nodes the fake API server serves for the idle measurement.
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        /// Seconds each idle daemon is observed.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Rounds of the idle observations (none, kubernetes), their order alternating:
        /// medians and spreads are printed.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
    },
    /// What seeing the pods costs: a pod's connects to a dead Service endpoint → finding
    /// (median/worst over `runs`), the idle daemon's memory with `pods` Pods and their
    /// endpoints from the fake API server vs none, its CPU with `namespaces` pod
    /// namespaces connecting vs none.
    Pods {
        /// Dead endpoints connected to, one per run.
        #[arg(long, default_value_t = 20)]
        runs: u32,
        /// Pods (and endpoints) the fake API server serves for the memory measurement.
        #[arg(long, default_value_t = 500)]
        pods: usize,
        /// Pod namespaces for the CPU measurement.
        #[arg(long, default_value_t = 100)]
        namespaces: usize,
        /// Seconds each daemon is observed.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Rounds of each pair of observations (memory: 0 vs `pods` Pods; CPU: 0 vs
        /// `namespaces`), their order alternating: medians and spreads are printed.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
    },
    /// Repair: for each repairable fault (FDB repointed, FDB deleted, neighbour removed,
    /// ghost-gateway route, route removed), fault -> repaired (journal verdict) and fault
    /// -> traffic restored, median and worst over `runs`, with the daemon in
    /// `[repair] mode = "apply"` on a 3-node lab; and the configuration lines that differ
    /// from the healthy dump after the repairs (goal 0).
    Repair {
        /// Runs per fault.
        #[arg(long, default_value_t = 20)]
        runs: u32,
    },
    /// Path MTU: large packets starting -> `mtu_black_hole` over `runs` (a silent
    /// 1400-byte layer-2 hop, default settings), probe packets and bytes per peer per hour,
    /// and the daemon's CPU time with `[mtu]` on vs off, alternating.
    Mtu {
        /// Black holes to time.
        #[arg(long, default_value_t = 20)]
        runs: u32,
        /// Seconds each cost observation lasts.
        #[arg(long, default_value_t = 180)]
        seconds: u64,
        /// Rounds of ([mtu] on, [mtu] off).
        #[arg(long, default_value_t = 2)]
        rounds: u32,
    },
    /// The causes of issue 23 (firewall, rp_filter, checksum drops, a dead pod address, a
    /// remote VTEP whose MAC changed, a path-MTU hole without ping sockets), each on a lab
    /// with the shipped ConfigMap: fault -> finding and healed -> resolved, median and
    /// worst over `runs` (xtask/src/bench_causes.rs).
    DropsCauses {
        /// Runs per cause.
        #[arg(long, default_value_t = 20)]
        runs: u32,
        /// Only the causes whose name contains this, or of this finding kind.
        #[arg(long)]
        only: Option<String>,
        /// Instead: the daemon's CPU and memory over this many seconds while a FORWARD
        /// policy drops pod traffic, with `probes.explain_drops` on and off side by side.
        #[arg(long, value_name = "SECONDS")]
        readers_cost: Option<u64>,
        /// With --readers-cost: rounds of the two observations, their order alternating.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
    },
    /// Alert retries: `watchdog alert test` against a webhook that fails the first
    /// `failures` posts; the gaps between attempts per retry (median, min, max over
    /// `runs`) against the window the backoff allows.
    Alerts {
        /// Test alerts delivered.
        #[arg(long, default_value_t = 20)]
        runs: u32,
        /// Posts answered 500 before the one answered 200, each run.
        #[arg(long, default_value_t = 3)]
        failures: u32,
        /// The sink's `backoff`, in milliseconds.
        #[arg(long, default_value_t = 100)]
        backoff_ms: u64,
    },
    /// Memory, row by row: the start-up peak and the idle resident memory with the
    /// embedded default, after a churn of pod namespaces, watching Nodes, with the
    /// DaemonSet's Pods and EndpointSlices (`watchdog_tests::memory`); on this host and in
    /// the kernel matrix's qemu guests; side by side with `--baseline`'s daemon; and the
    /// DaemonSet's memory request and limit they suggest.
    Memory {
        /// Also build the daemon of this git revision (e.g. `main`) and measure it side by
        /// side, the two daemons' order alternating row by row.
        #[arg(long)]
        baseline: Option<String>,
        /// Seconds each daemon is observed once ready [default: 60; with --quick 10].
        #[arg(long)]
        seconds: Option<u64>,
        /// Seconds of churn [default: 600; with --quick 30].
        #[arg(long)]
        churn_seconds: Option<u64>,
        /// Nodes the fake API server serves [default: 1000; with --quick 200].
        #[arg(long)]
        nodes: Option<usize>,
        /// Pods (and endpoints) the fake API server serves [default: 500; with --quick 100].
        #[arg(long)]
        pods: Option<usize>,
        /// Idle connections held open [default: 2000; with --quick 500].
        #[arg(long)]
        connections: Option<usize>,
        /// Rounds of every row (medians and spreads are printed).
        #[arg(long, default_value_t = 1)]
        rounds: u32,
        /// Where to measure: `host` and/or kernels of the matrix (comma separated)
        /// [default: host,6.1-arm64,6.12-arm64-16k; with --quick host].
        #[arg(long, value_delimiter = ',')]
        on: Vec<String>,
        /// The reduced run CI makes (shorter, fewer objects, this host only).
        #[arg(long)]
        quick: bool,
        /// Write this host's figures to deploy/bench-memory.json, the record the DaemonSet's
        /// memory request and limit come from (a full-size run). Without it, a run on this
        /// host fails when the daemon grew past the record.
        #[arg(long)]
        record: bool,
        /// Measure this x86_64 daemon binary (e.g. one built with other profile settings)
        /// instead of building the working tree's; with --on host.
        #[arg(long)]
        binary: Option<std::path::PathBuf>,
        /// Measure nothing: report (and check or --record) an earlier run's results, its
        /// target/bench-memory/results.json or a `memory_guest run` output on this host.
        #[arg(long)]
        from_results: Option<std::path::PathBuf>,
    },
    Mirror {
        /// Routes (/24, via a veth) to install before loading.
        #[arg(long, default_value_t = 100_000)]
        routes: u32,
        /// Permanent neighbours to install before loading.
        #[arg(long, default_value_t = 10_000)]
        neighbours: u32,
        /// Route replacements in the burst.
        #[arg(long, default_value_t = 10_000)]
        changes: u32,
    },
}

impl Bench {
    pub fn run(self) -> anyhow::Result<()> {
        if !require_root("cargo xtask bench") {
            bail!("benchmarks load eBPF programs and create namespaces: run as root");
        }
        match self {
            Bench::Drops { seconds, rounds } => {
                use_release_daemon()?;
                drops(Duration::from_secs(seconds), rounds)
            }
            Bench::Idle { seconds, lab } => {
                use_release_daemon()?;
                idle(Duration::from_secs(seconds), lab)
            }
            Bench::Latency { runs, only } => latency(runs, &only),
            Bench::Tc {
                seconds,
                rounds,
                test_runs,
                baseline,
                arm64,
            } => tc(seconds, rounds, test_runs, baseline.as_deref(), arm64),
            Bench::Tcp { seconds, rounds } => util::status(
                Command::new(util::build_example("tcp_bench")?)
                    .args(["--seconds", &seconds.to_string()])
                    .args(["--rounds", &rounds.to_string()]),
            ),
            Bench::Soak { minutes, shipped } => {
                use_release_daemon()?;
                soak(Duration::from_secs(minutes * 60), shipped)
            }
            Bench::Desired {
                runs,
                nodes,
                seconds,
                rounds,
            } => {
                use_release_daemon()?;
                crate::bench_desired::run(runs, nodes, seconds, rounds)
            }
            Bench::Pods {
                runs,
                pods,
                namespaces,
                seconds,
                rounds,
            } => {
                // WATCHDOG_BIN picks the daemon measured (e.g. a debug build); else release.
                if std::env::var_os("WATCHDOG_BIN").is_none() {
                    use_release_daemon()?;
                }
                crate::bench_pods::run(runs, pods, namespaces, seconds, rounds)
            }
            Bench::Mtu {
                runs,
                seconds,
                rounds,
            } => {
                if std::env::var_os("WATCHDOG_BIN").is_none() {
                    use_release_daemon()?;
                }
                crate::bench_mtu::run(runs, seconds, rounds)
            }
            Bench::DropsCauses {
                runs,
                only,
                readers_cost,
                rounds,
            } => {
                if std::env::var_os("WATCHDOG_BIN").is_none() {
                    use_release_daemon()?;
                }
                match readers_cost {
                    Some(seconds) => {
                        crate::bench_causes::readers_cost(Duration::from_secs(seconds), rounds)
                    }
                    None => crate::bench_causes::run(runs, only.as_deref()),
                }
            }
            Bench::Mirror {
                routes,
                neighbours,
                changes,
            } => mirror(routes, neighbours, changes),
            Bench::Repair { runs } => crate::bench_repair::run(runs),
            Bench::Alerts {
                runs,
                failures,
                backoff_ms,
            } => crate::bench_alerts::run(runs, failures, backoff_ms),
            Bench::Memory {
                baseline,
                seconds,
                churn_seconds,
                nodes,
                pods,
                connections,
                rounds,
                on,
                quick,
                record,
                binary,
                from_results,
            } => {
                let pick = |full, reduced| if quick { reduced } else { full };
                let on = if !on.is_empty() {
                    on
                } else if quick {
                    vec!["host".to_owned()]
                } else {
                    ["host", "6.1-arm64", "6.12-arm64-16k"]
                        .map(String::from)
                        .to_vec()
                };
                crate::bench_memory::run(&crate::bench_memory::Options {
                    baseline,
                    idle: seconds.unwrap_or(pick(60, 10)),
                    churn: churn_seconds.unwrap_or(pick(600, 30)),
                    nodes: nodes.unwrap_or(if quick { 200 } else { 1000 }),
                    pods: pods.unwrap_or(if quick { 100 } else { 500 }),
                    connections: connections.unwrap_or(if quick { 500 } else { 2000 }),
                    rounds: rounds.max(1),
                    on,
                    record,
                    binary,
                    from_results,
                })
            }
        }
    }
}

/// The soak (see [`Bench::Soak`]).
fn soak(duration: Duration, shipped: bool) -> anyhow::Result<()> {
    use watchdog_tests::soak::{Settings, run};
    let settings = if shipped {
        say_daemon(
            &watchdog_tests::shipped::configmap_config(),
            &["poll_interval", "namespaces"],
        )?;
        Settings::Shipped
    } else {
        say_daemon("", &["poll_interval", "namespaces"])?;
        Settings::Given("")
    };
    eprintln!("bench soak: {duration:?} of a healthy mix after a 15 s warm-up");
    let report = run(settings, duration);
    println!(
        "soak ran {:.0} s, {} checks of /api/v1/findings",
        report.ran.as_secs_f64(),
        report.checks
    );
    println!("findings seen: {} (goal 0)", report.findings.len());
    for finding in &report.findings {
        println!("  {finding}");
    }
    println!("daemon fds: start {} end {}", report.fds.0, report.fds.1);
    println!(
        "daemon RSS: start {} KiB end {} KiB ({:+.1}%)",
        report.rss_kib.0,
        report.rss_kib.1,
        (report.rss_kib.1 as f64 / report.rss_kib.0.max(1) as f64 - 1.0) * 100.0
    );
    println!(
        "mix: {} pod restarts, {}/{} echoes answered, {}/{} one-way datagrams received, {} MB TCP bulk",
        report.restarts,
        report.echoes.0,
        report.echoes.1,
        report.one_way.0,
        report.one_way.1,
        report.bulk_bytes / 1_000_000
    );
    println!(
        "host firewall: {} scan connects tried, {} netfilter drops counted by the daemon",
        report.scanned, report.netfilter_drops
    );
    Ok(())
}

/// Prints which daemon binary a bench runs (path, size, age) and, of the config the bench
/// gives it, the effective values of `keys` (dotted, e.g. `detect.confirm`) as that binary
/// reads them (`watchdog config check`): what ran, not what the bench assumes.
pub(crate) fn say_daemon(config: &str, keys: &[&str]) -> anyhow::Result<()> {
    let binary = watchdog_tests::daemon_binary();
    let meta =
        std::fs::metadata(&binary).with_context(|| format!("the daemon {}", binary.display()))?;
    let age = meta
        .modified()
        .ok()
        .and_then(|m| m.elapsed().ok())
        .map_or("?".into(), |age| format!("{} min", age.as_secs() / 60));
    let dir = watchdog_tests::TempDir::new("wd-bench-config");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config)?;
    let effective = util::output(Command::new(&binary).args(["config", "check"]).arg(&path))?;
    let values: Vec<String> = keys
        .iter()
        .map(|key| format!("{key} {}", config_value(&effective, key).unwrap_or("?")))
        .collect();
    let settings = if values.is_empty() {
        String::new()
    } else {
        format!("; settings as it read them: {}", values.join(", "))
    };
    println!(
        "daemon: {} ({:.1} MiB, built {age} ago){settings}",
        binary.display(),
        meta.len() as f64 / 1048576.0,
    );
    Ok(())
}

/// The value of dotted `key` in `watchdog config check`'s output (the configuration's
/// pretty `Debug`: one field a line, four spaces of indent a level).
fn config_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let parts: Vec<&str> = key.split('.').collect();
    let mut lines = text.lines();
    for (level, part) in parts.iter().enumerate() {
        let prefix = format!("{}{part}: ", " ".repeat(4 * (level + 1)));
        // The end of the struct searched (none at the top level).
        let end = format!("{}}}", " ".repeat(4 * level));
        loop {
            let line = lines.next()?;
            if level > 0 && line.starts_with(&end) {
                return None;
            }
            if let Some(value) = line.strip_prefix(&prefix) {
                if level + 1 == parts.len() {
                    return Some(value.trim_end_matches(','));
                }
                break;
            }
        }
    }
    None
}

/// Builds the daemon (release) and points the lab at it.
fn use_release_daemon() -> anyhow::Result<()> {
    let binary = util::build_daemon()?;
    // SAFETY: set before any thread starts; the lab reads it to find the daemon.
    unsafe { std::env::set_var("WATCHDOG_BIN", &binary) };
    Ok(())
}

/// Sends UDP datagrams to a closed loopback port for `period`; returns datagrams per second.
fn storm(ns: &NetNs, period: Duration) -> (u64, f64) {
    ns.run(|| {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < period {
            for _ in 0..1000 {
                if socket.send_to(b"x", "127.0.0.1:9").is_ok() {
                    sent += 1;
                }
            }
        }
        (sent, sent as f64 / start.elapsed().as_secs_f64())
    })
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

const BPFTRACE: &str = "tracepoint:skb:kfree_skb { @[args->reason] = count(); }";

fn start_bpftrace() -> anyhow::Result<Child> {
    let mut child = Command::new("bpftrace")
        .args(["-e", BPFTRACE])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start bpftrace (cargo xtask setup installs it)")?;
    // bpftrace prints "Attaching N probes..." once its program is attached.
    let stdout = child.stdout.take().context("bpftrace stdout")?;
    let mut lines = std::io::BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.starts_with("Attaching") => break,
            Some(Ok(_)) => {}
            _ => bail!("bpftrace exited before attaching"),
        }
    }
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Ok(child)
}

fn drops(period: Duration, rounds: u32) -> anyhow::Result<()> {
    let ns = NetNs::new("wd-bench");
    let (mut none, mut watchdog, mut bpftrace) = (Vec::new(), Vec::new(), Vec::new());
    let mut daemon_cpu = Vec::new();
    let mut counted_exactly = true;
    say_daemon(DROPS_CONFIG, &["poll_interval"])?;
    eprintln!("bench drops: {rounds} rounds x 3 setups x {period:?} each, their order rotating");
    let mut counted = (0, 0);
    for round in 0..rounds {
        // Each setup goes first in turn, so a drifting machine load favours none.
        for setup in (0..3).map(|i| (i + round as usize) % 3) {
            match setup {
                0 => none.push(storm(&ns, period).1),
                1 => {
                    let mut daemon = Daemon::start(&ns, DROPS_CONFIG);
                    daemon.wait_ready();
                    let before = daemon.metrics().count(DROPS, &[("reason", "NO_SOCKET")]);
                    let cpu_before = cpu_ns(daemon.pid())?;
                    let (sent, rate) = storm(&ns, period);
                    daemon_cpu.push(
                        (cpu_ns(daemon.pid())? - cpu_before) as f64 / 1e9 / period.as_secs_f64(),
                    );
                    watchdog.push(rate);
                    // Every datagram must have been counted, even in a storm.
                    let seen = poll_until(
                        Duration::from_secs(5),
                        "the storm's drops to be read",
                        || {
                            let now = daemon.metrics().count(DROPS, &[("reason", "NO_SOCKET")]);
                            (now - before >= sent).then_some(now - before)
                        },
                    );
                    counted_exactly &= seen == sent;
                    counted = (seen, sent);
                    daemon.stop();
                }
                _ => {
                    let mut tracer = start_bpftrace()?;
                    bpftrace.push(storm(&ns, period).1);
                    let _ = tracer.kill();
                    let _ = tracer.wait();
                }
            }
        }
        eprintln!(
            "  round {} (first: {}): none {:.0}/s, watchdog {:.0}/s (counted {} of {}), bpftrace {:.0}/s",
            round + 1,
            ["none", "watchdog", "bpftrace"][round as usize % 3],
            none.last().unwrap(),
            watchdog.last().unwrap(),
            counted.0,
            counted.1,
            bpftrace.last().unwrap()
        );
    }
    let (none, watchdog, bpftrace) = (
        median(&mut none),
        median(&mut watchdog),
        median(&mut bpftrace),
    );
    println!("drop storm on loopback, median of {rounds} rounds of {period:?}:");
    println!("  no probe          {none:>12.0} drops/s");
    println!(
        "  watchdog          {watchdog:>12.0} drops/s   ratio {:.3}",
        watchdog / none
    );
    println!(
        "  bpftrace count()  {bpftrace:>12.0} drops/s   ratio {:.3}",
        bpftrace / none
    );
    println!("  watchdog counted every drop exactly: {counted_exactly}");
    println!(
        "  daemon userspace CPU during the watchdog storm: {:.2}% of one core (median)",
        100.0 * median(&mut daemon_cpu)
    );
    if !counted_exactly {
        bail!("the watchdog's count differed from the drops sent");
    }
    Ok(())
}

const DROPS: &str = "watchdog_kernel_drops_total";
/// The drops bench's daemon config.
const DROPS_CONFIG: &str = "poll_interval = \"250ms\"\n";

fn idle(period: Duration, with_lab: bool) -> anyhow::Result<()> {
    say_daemon("", &["poll_interval", "namespaces"])?;
    let ns_guard;
    let lab_guard;
    let mut streams = Vec::new();
    let ns = if with_lab {
        lab_guard = Lab::new(3);
        for from in 0..3 {
            for to in (0..3).filter(|&to| to != from) {
                streams.push(lab_guard.udp_stream(from, to, 10));
            }
        }
        lab_guard.node(0).ns()
    } else {
        ns_guard = NetNs::new("wd-idle");
        &ns_guard
    };
    let mut daemon = Daemon::start(ns, "");
    daemon.wait_ready();
    let pid = daemon.pid();
    let cpu_start = cpu_ns(pid)?;
    let what = if with_lab {
        "on the lab with traffic"
    } else {
        "idle"
    };
    eprintln!("bench idle: observing the ready daemon {what} for {period:?}");
    let start = Instant::now();
    let mut max_rss = 0u64;
    while start.elapsed() < period {
        std::thread::sleep((period - start.elapsed()).min(Duration::from_secs(10)));
        max_rss = max_rss.max(status_kib(pid, "VmRSS:")?);
        if !daemon.findings().is_empty() {
            bail!("findings on a healthy run: {:#?}", daemon.findings());
        }
    }
    let cpu = (cpu_ns(pid)? - cpu_start) as f64 / 1e9;
    println!("daemon {what} over {period:?}:");
    println!(
        "  resident memory now          {} KiB",
        status_kib(pid, "VmRSS:")?
    );
    println!("  largest resident sample      {max_rss} KiB (every 10 s)");
    println!(
        "  peak resident (VmHWM)        {} KiB (start-up included)",
        status_kib(pid, "VmHWM:")?
    );
    println!(
        "  CPU time {cpu:.4} s = {:.4}% of one core",
        100.0 * cpu / period.as_secs_f64()
    );
    daemon.stop();
    drop(streams);
    Ok(())
}

/// An observed daemon: resident KiB at the end, peak KiB, CPU seconds over the period.
pub(crate) type Observation = (u64, u64, f64);

/// The daemon with `config` in `ns`, ready and past `wait`, observed for `period`.
pub(crate) fn observe(
    ns: &NetNs,
    config: &str,
    wait: impl Fn(&Daemon),
    period: Duration,
) -> anyhow::Result<Observation> {
    let mut daemon = Daemon::start(ns, config);
    daemon.wait_ready();
    wait(&daemon);
    let pid = daemon.pid();
    let cpu_start = cpu_ns(pid)?;
    std::thread::sleep(period);
    let cpu = (cpu_ns(pid)? - cpu_start) as f64 / 1e9;
    let rss = status_kib(pid, "VmRSS:")?;
    let peak = status_kib(pid, "VmHWM:")?;
    daemon.stop();
    Ok((rss, peak, cpu))
}

/// Measures two setups (`measure(0)`, `measure(1)`) `rounds` times each, which one goes
/// first alternating round by round; prints each one's medians with their rounds' range,
/// and the second against the first; returns the medians.
pub(crate) fn compare_pair(
    title: &str,
    period: Duration,
    rounds: u32,
    labels: [&str; 2],
    mut measure: impl FnMut(usize) -> anyhow::Result<Observation>,
) -> anyhow::Result<[Observation; 2]> {
    let mut seen: [Vec<Observation>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds.max(1) {
        let first = round as usize % 2;
        for setup in [first, 1 - first] {
            eprintln!("  round {}: {}", round + 1, labels[setup]);
            seen[setup].push(measure(setup)?);
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "{title}, observed {period:?} each, {} round(s), their order alternating (load average \
         now: {}); medians (min-max):",
        rounds.max(1),
        load.trim()
    );
    println!(
        "  {:<44} {:>20} {:>20} {:>22}",
        "", "VmRSS KiB", "VmHWM KiB", "CPU % of a core"
    );
    let per_cent = |cpu: f64| 100.0 * cpu / period.as_secs_f64();
    let mut medians = [(0, 0, 0.0); 2];
    for (setup, observations) in seen.iter().enumerate() {
        let column = |value: &dyn Fn(&Observation) -> f64, digits: usize| {
            let mut values: Vec<f64> = observations.iter().map(value).collect();
            values.sort_by(f64::total_cmp);
            let (low, mid, high) = (
                values[0],
                values[values.len() / 2],
                values[values.len() - 1],
            );
            (
                mid,
                format!("{mid:.digits$} ({low:.digits$}-{high:.digits$})"),
            )
        };
        let (rss, rss_text) = column(&|o| o.0 as f64, 0);
        let (peak, peak_text) = column(&|o| o.1 as f64, 0);
        let (cpu, cpu_text) = column(&|o| per_cent(o.2), 4);
        println!(
            "  {:<44} {rss_text:>20} {peak_text:>20} {cpu_text:>22}",
            labels[setup]
        );
        medians[setup] = (rss as u64, peak as u64, cpu * period.as_secs_f64() / 100.0);
    }
    let [a, b] = medians;
    println!(
        "  second - first: {:+} KiB resident, CPU x{:.2}",
        b.0 as i64 - a.0 as i64,
        b.2 / a.2.max(1e-9)
    );
    Ok(medians)
}

/// A `kB` field of /proc/<pid>/status.
pub(crate) fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// Nanoseconds the task has run on a CPU (first field of /proc/<pid>/schedstat).
pub(crate) fn cpu_ns(pid: u32) -> anyhow::Result<u64> {
    let schedstat = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))?;
    Ok(schedstat
        .split_whitespace()
        .next()
        .context("empty schedstat")?
        .parse()?)
}

/// The /24 destination of route number `i`: 20.0.0.0/24, 20.0.1.0/24, …
fn bench_prefix(i: u32) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(0x1400_0000u32 + (i << 8))
}

fn mirror(routes: u32, neighbours: u32, changes: u32) -> anyhow::Result<()> {
    if changes > routes || neighbours > 60_000 {
        bail!("--changes must not exceed --routes, and --neighbours at most 60000");
    }
    let helper = util::build_example("mirror_bench")?;

    let ns = NetNs::new("wd-bench-mirror");
    ns.ip(&["link", "add", "vb0", "type", "veth", "peer", "name", "vb1"]);
    ns.ip(&["addr", "add", "10.200.0.1/16", "dev", "vb0"]);
    ns.ip(&["link", "set", "vb0", "up"]);
    ns.ip(&["link", "set", "vb1", "up"]);

    let mut batch = String::new();
    for i in 0..routes {
        batch.push_str(&format!(
            "route add {}/24 via 10.200.0.2 dev vb0\n",
            bench_prefix(i)
        ));
    }
    for i in 0..neighbours {
        let host = 10 + i;
        batch.push_str(&format!(
            "neigh add 10.200.{}.{} lladdr 02:00:00:00:{:02x}:{:02x} dev vb0 nud permanent\n",
            host >> 8,
            host & 0xff,
            host >> 8,
            host & 0xff
        ));
    }
    let begin = Instant::now();
    ns.ip_batch(&batch);
    eprintln!(
        "bench mirror: installed {routes} routes and {neighbours} neighbours in {:.1} s",
        begin.elapsed().as_secs_f64()
    );

    let dir = watchdog_tests::TempDir::new("wd-bench-mirror");
    let burst = dir.path().join("burst.batch");
    let mut text = String::new();
    for i in 0..changes {
        // Spread the changes over the whole table.
        let n = (u64::from(i) * u64::from(routes) / u64::from(changes)) as u32;
        text.push_str(&format!(
            "route replace {}/24 via 10.200.0.3 dev vb0\n",
            bench_prefix(n)
        ));
    }
    std::fs::write(&burst, text)?;

    println!("network mirror with {routes} routes and {neighbours} neighbours (release build):");
    util::status(
        Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .arg(&helper)
            .arg(&burst),
    )
}

/// A fault to inject and the finding that must name it.
struct Scenario {
    name: &'static str,
    kind: &'static str,
    subject: &'static str,
    inject: fn(&mut Lab),
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "fdb",
        kind: "stale_fdb",
        subject: "dst 192.168.77.99",
        inject: |lab| lab.repoint_fdb(0, 2, lab::RETIRED_VTEP),
    },
    Scenario {
        name: "gateway",
        kind: "ghost_gateway",
        subject: "gateway 192.168.77.98",
        inject: |lab| lab.route_via_missing_gateway(0, "10.244.2.0/25", lab::MISSING_GATEWAY),
    },
    Scenario {
        name: "link",
        kind: "dead_link_route",
        subject: "192.168.77.0/24",
        inject: |lab| lab.cut_carrier(0),
    },
    Scenario {
        name: "blackhole",
        kind: "reject_route_traffic",
        subject: "blackhole 10.244.2.0/25",
        inject: |lab| lab.blackhole_route(0, "10.244.2.0/25"),
    },
    Scenario {
        name: "node",
        kind: "stale_fdb",
        subject: "dst 192.168.77.12",
        inject: |lab| lab.remove_node(2),
    },
    Scenario {
        name: "flush",
        kind: "vtep_collapse",
        subject: "dev flannel.1",
        inject: |lab| lab.flush_fdb(0),
    },
];

fn latency(runs: u32, only: &[String]) -> anyhow::Result<()> {
    let chosen: Vec<&Scenario> = SCENARIOS
        .iter()
        .filter(|s| only.is_empty() || only.iter().any(|o| o == s.name))
        .collect();
    if chosen.is_empty() {
        bail!("--only names no scenario; use fdb, gateway, link, blackhole, node, flush");
    }
    say_daemon(
        "",
        &["poll_interval", "detect.confirm", "detect.vtep_window"],
    )?;
    println!("detection latency, default settings, {runs} runs each (seconds):");
    println!(
        "  {:<10} {:<22} {:>7} {:>7} {:>7}",
        "scenario", "finding", "median", "p90", "worst"
    );
    for scenario in chosen {
        let mut times = Vec::new();
        for run in 0..runs {
            let mut lab = Lab::new(3);
            let mut daemon = Daemon::start(lab.node(0).ns(), "");
            daemon.wait_ready();
            // Traffic from pod 0 to both remote pods, then one VTEP window of history.
            let streams = [lab.udp_stream(0, 1, 50), lab.udp_stream(0, 2, 50)];
            streams[1].wait_replies(50, Duration::from_secs(10));
            let injected = Instant::now();
            (scenario.inject)(&mut lab);
            let found = poll_until(Duration::from_secs(60), scenario.kind, || {
                daemon
                    .try_findings()
                    .unwrap_or_default()
                    .iter()
                    .any(|f| f.kind == scenario.kind && f.subject.contains(scenario.subject))
                    .then(|| injected.elapsed())
            });
            eprintln!(
                "  {} run {}/{runs}: {:.2}s",
                scenario.name,
                run + 1,
                found.as_secs_f64()
            );
            times.push(found.as_secs_f64());
            drop(streams);
            daemon.stop();
        }
        let worst = times.iter().copied().fold(0.0, f64::max);
        let p90 = {
            let mut sorted = times.clone();
            sorted.sort_by(f64::total_cmp);
            sorted[(sorted.len() * 9 / 10).min(sorted.len() - 1)]
        };
        println!(
            "  {:<10} {:<22} {:>7.2} {:>7.2} {:>7.2}",
            scenario.name,
            scenario.kind,
            median(&mut times),
            p90,
            worst
        );
    }
    Ok(())
}

/// The source tree of git revision `rev`, unpacked once (`git archive`, no worktree
/// registered) under `target/bench-baseline/<commit>/src`; returns (commit, its path).
pub(crate) fn baseline_source(rev: &str) -> anyhow::Result<(String, std::path::PathBuf)> {
    let root = util::root();
    let commit = util::output(Command::new("git").arg("-C").arg(&root).args([
        "rev-parse",
        "--verify",
        &format!("{rev}^{{commit}}"),
    ]))
    .with_context(|| format!("--baseline {rev} is not a commit of this repository"))?;
    let commit = commit.trim().to_owned();
    let src = root
        .join("target/bench-baseline")
        .join(&commit[..12])
        .join("src");
    if !src.join("Cargo.toml").exists() {
        std::fs::create_dir_all(&src)?;
        let archive = Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(["archive", "--format=tar", &commit])
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot run git archive")?;
        util::status(
            Command::new("tar")
                .arg("-x")
                .arg("-C")
                .arg(&src)
                .stdin(archive.stdout.context("git archive output")?),
        )?;
    }
    Ok((commit, src))
}

/// Builds the eBPF object of git revision `rev` (as `watchdog/build.rs` builds the working
/// tree's) under `target/bench-baseline/`; returns its path.
fn build_baseline_object(rev: &str) -> anyhow::Result<std::path::PathBuf> {
    let (commit, src) = baseline_source(rev)?;
    let dir = src.parent().expect("src has a parent").to_owned();
    eprintln!(
        "xtask: building the eBPF programs of {rev} ({})",
        &commit[..12]
    );
    // What aya-build runs for watchdog/build.rs: the eBPF crate alone, for the BPF target,
    // `core` built from source (allowed on stable by RUSTC_BOOTSTRAP), linked by bpf-linker.
    let mut path: Vec<_> =
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
    if let Some(home) = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cargo")))
    {
        path.push(home.join("bin"));
    }
    let target = dir.join("target");
    util::status(
        util::cargo()
            .current_dir(&src)
            .env("PATH", std::env::join_paths(path)?)
            .env("RUSTC_BOOTSTRAP", "1")
            .env(
                "CARGO_ENCODED_RUSTFLAGS",
                format!(
                    "--cfg=bpf_target_arch=\"{}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf",
                    std::env::consts::ARCH
                ),
            )
            .args([
                "build",
                "--package",
                "watchdog-ebpf",
                "--bins",
                "--release",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--target-dir",
            ])
            .arg(&target),
    )?;
    Ok(target.join("bpfel-unknown-none/release/watchdog-ebpf"))
}

fn tc(
    seconds: u64,
    rounds: u32,
    test_runs: u32,
    baseline: Option<&str>,
    arm64: bool,
) -> anyhow::Result<()> {
    let baseline = baseline.map(build_baseline_object).transpose()?;
    let helper = util::build_example("tc_bench")?;
    let mut bench = Command::new(helper);
    bench.args(["--rounds", &test_runs.to_string()]);
    if let Some(object) = &baseline {
        bench.arg("--baseline").arg(object);
    }
    util::status(&mut bench)?;

    let client = NetNs::new("wd-tc-client");
    let server = NetNs::new("wd-tc-server");
    client.ip(&["link", "add", "tc0", "type", "veth", "peer", "name", "tc1"]);
    client.ip(&["link", "set", "tc1", "netns", server.name()]);
    client.ip(&["addr", "add", "10.91.0.1/24", "dev", "tc0"]);
    server.ip(&["addr", "add", "10.91.0.2/24", "dev", "tc1"]);
    client.ip(&["link", "set", "tc0", "up"]);
    server.ip(&["link", "set", "tc1", "up"]);
    let mut iperf_server = Command::new("ip")
        .args(["netns", "exec", server.name(), "iperf3", "-s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start iperf3 (cargo xtask setup installs it)")?;
    let throughput = || -> anyhow::Result<f64> {
        let port_open = || {
            server
                .run(|| std::net::TcpStream::connect("10.91.0.2:5201").is_ok())
                .then_some(())
        };
        poll_until(Duration::from_secs(10), "iperf3 to listen", port_open);
        let out = util::output(Command::new("ip").args([
            "netns",
            "exec",
            client.name(),
            "iperf3",
            "-c",
            "10.91.0.2",
            "-J",
            "-t",
            &seconds.to_string(),
        ]))?;
        let report: serde_json::Value = serde_json::from_str(&out)?;
        report["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .context("iperf3 JSON has no end.sum_received.bits_per_second")
    };
    say_daemon("", &["poll_interval", "probes.peers"])?;
    let (mut detached, mut attached) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate which setup runs first, so a drifting machine load favours neither.
        if round % 2 == 0 {
            detached.push(throughput()?);
        }
        let mut daemon = Daemon::start(&client, "");
        daemon.wait_ready();
        attached.push(throughput()?);
        let metrics = daemon.metrics();
        let seen = metrics.count(
            "watchdog_peer_packets_total",
            &[
                ("interface", "tc0"),
                ("peer", "10.91.0.2"),
                ("direction", "tx"),
            ],
        );
        daemon.stop();
        if round % 2 == 1 {
            detached.push(throughput()?);
        }
        eprintln!(
            "  round {}: detached {:.2} Gbit/s, attached {:.2} Gbit/s ({seen} packets counted)",
            round + 1,
            detached.last().unwrap() / 1e9,
            attached.last().unwrap() / 1e9
        );
        if seen == 0 {
            bail!("the probe counted nothing: it was not on the path");
        }
    }
    let _ = iperf_server.kill();
    let _ = iperf_server.wait();
    let (detached, attached) = (median(&mut detached), median(&mut attached));
    println!("iperf3 TCP over veth, median of {rounds} rounds of {seconds}s:");
    println!("  probes detached  {:>8.2} Gbit/s", detached / 1e9);
    println!(
        "  probes attached  {:>8.2} Gbit/s   ratio {:.3}",
        attached / 1e9,
        attached / detached
    );
    arm64_figure(arm64)
}

/// The programs' sizes inside the arm64 kernels (an emulated CPU cannot time them, so
/// instruction counts stand in, 4 bytes each), read in this run (`measure`: the matrix's
/// arm64 kernels booted now). Without `measure` nothing is printed but that: a figure
/// from an earlier run is of a commit this run cannot vouch for.
fn arm64_figure(measure: bool) -> anyhow::Result<()> {
    if !measure {
        println!(
            "arm64: not measured in this run (--arm64 boots the matrix's arm64 kernels and \
             reads each program's size there)"
        );
        return Ok(());
    }
    let fresh = watchdog_tests::TempDir::new("wd-bench-tc-kernels");
    crate::setup::kernel_matrix_tools()?;
    let path = fresh.path().join("results.json");
    let arm64 = ["6.1-arm64", "6.12-arm64-16k"].map(String::from);
    crate::kernels::run(&arm64, Some(path.clone()))?;
    let results: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(&path)?)
        .with_context(|| format!("{}: not the kernels' results", path.display()))?;
    println!(
        "arm64 (read inside each arm64 kernel in this run, the daemon of {}):",
        util::revision()
    );
    for r in results.iter().filter(|r| r["machine"] == "aarch64") {
        for program in ["peers_egress", "peers_ingress"] {
            let size = &r["programs"][program];
            if let (Some(xlated), Some(jited)) =
                (size["xlated_insns"].as_u64(), size["jited_bytes"].as_u64())
            {
                println!(
                    "  {:<15} {program:<14} xlated {xlated:>5} insns  jited {:>5} arm64 instructions",
                    r["name"].as_str().unwrap_or("?"),
                    jited / 4
                );
            }
        }
    }
    Ok(())
}
