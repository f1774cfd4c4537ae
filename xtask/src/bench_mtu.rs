//! `cargo xtask bench mtu`: how fast a path-MTU black hole is named and what the probes
//! cost.
//!
//! - Large packets → finding: on a 3-node lab, the daemon on node 0 with the default
//!   settings (`mtu.interval` 60s, so only the passive trigger can explain a finding
//!   within seconds), node 1's underlay bridge port lowered to 1400 bytes (a silent
//!   layer-2 hop), then 1400-byte DF pings and small pings from pod 0 to pod 1 every
//!   100 ms, timed until `mtu_black_hole` names node 1's VTEP on `/api/v1/findings`.
//!   Healed between runs (the finding resolves at the next recheck, `interval / 6`).
//! - Probe cost and CPU: the same lab healthy, with UDP traffic between every pair of pods
//!   (10 packets/s each), the daemon observed for `--seconds` with `[mtu]` on and off,
//!   alternating for `--rounds`: its CPU time, and with `[mtu]` on the path-MTU probes
//!   and packets counted over the window (`watchdog_mtu_probes_total`,
//!   `watchdog_probe_packets_total{purpose="path_mtu"}`), extrapolated per peer per hour.
//!   Bytes assume every packet was a full-size probe (1450 bytes through `flannel.1`,
//!   1500 on the underlay, one way; the echo reply is as large), which is what a healthy
//!   search sends.
//!
//! The release daemon is used, unless `WATCHDOG_BIN` names one already.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::bail;
use watchdog_tests::{
    Daemon, NetNs,
    lab::{Lab, VXLAN_DEV},
    poll_until,
};

/// The underlay hop's MTU in the broken lab.
const HOP_MTU: &str = "1400";
/// Outer bytes of a full-size path-MTU probe through `flannel.1` (1450 + 50).
const PROBE_OUTER_BYTES: u64 = 1500;

pub fn run(runs: u32, seconds: u64, rounds: u32) -> anyhow::Result<()> {
    if runs == 0 || rounds == 0 || seconds == 0 {
        bail!("--runs, --rounds and --seconds must be at least 1");
    }
    let lab = Lab::new(3);
    if let Err(error) = lab.check_pod_connectivity() {
        bail!("the lab is not connected: {error}");
    }
    // The daemon runs as root (group 0): let it open ping sockets, as a DaemonSet whose
    // node allows them would.
    lab.node(0)
        .ns()
        .run(|| std::fs::write("/proc/sys/net/ipv4/ping_group_range", "0 2147483647"))?;
    latency(&lab, runs)?;
    cost(&lab, Duration::from_secs(seconds), rounds)
}

/// A background `ping` in a namespace, killed on drop.
struct Ping(Child);

impl Ping {
    fn start(ns: &str, to: &str, size: Option<u32>) -> anyhow::Result<Self> {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns, "ping", "-q", "-i", "0.1", "-W", "1"]);
        if let Some(size) = size {
            command.args(["-M", "do", "-s", &size.to_string()]);
        }
        command.arg(to).stdout(Stdio::null()).stderr(Stdio::null());
        Ok(Self(command.spawn()?))
    }
}

impl Drop for Ping {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn black_hole(daemon: &Daemon, subject: &str) -> bool {
    daemon
        .try_findings()
        .unwrap_or_default()
        .iter()
        .any(|f| f.kind == "mtu_black_hole" && f.subject == subject)
}

fn latency(lab: &Lab, runs: u32) -> anyhow::Result<()> {
    crate::bench::say_daemon(
        "",
        &[
            "poll_interval",
            "mtu.enabled",
            "mtu.interval",
            "detect.confirm",
        ],
    )?;
    let mut daemon = Daemon::start(lab.node(0).ns(), "");
    daemon.wait_ready();
    let vtep1 = lab.node(1).underlay_ip().to_string();
    let subject = format!("path to vtep {vtep1} dev {VXLAN_DEV}");
    let pod0 = lab.node(0).pod_ns().name().to_owned();
    let pod1 = lab.node(1).pod_ip().to_string();
    eprintln!("bench mtu: {runs} runs of a silent 1400-byte hop, default settings");
    let mut times = Vec::new();
    for run in 0..runs {
        // Healthy and measured at full size before each run.
        poll_until(Duration::from_secs(60), "a healthy path to node 1", || {
            (!black_hole(&daemon, &subject)
                && daemon.metrics().value(
                    "watchdog_path_mtu_bytes",
                    &[("peer", &vtep1), ("interface", VXLAN_DEV)],
                ) == Some(1500.0))
            .then_some(())
        });
        lab.underlay().ip(&["link", "set", "n1", "mtu", HOP_MTU]);
        let started = Instant::now();
        let large = Ping::start(&pod0, &pod1, Some(1372))?;
        let small = Ping::start(&pod0, &pod1, None)?;
        let took = poll_until(Duration::from_secs(90), "mtu_black_hole", || {
            black_hole(&daemon, &subject).then(|| started.elapsed())
        });
        drop((large, small));
        eprintln!("  run {}/{runs}: {:.2}s", run + 1, took.as_secs_f64());
        times.push(took.as_secs_f64());
        lab.underlay().ip(&["link", "set", "n1", "mtu", "1500"]);
    }
    daemon.stop();
    times.sort_by(f64::total_cmp);
    println!(
        "large packets -> mtu_black_hole: median {:.2}s, worst {:.2}s over {runs} runs",
        times[times.len() / 2],
        times[times.len() - 1]
    );
    Ok(())
}

/// One observation of the daemon with `config` over `period`: CPU seconds, and the
/// path-MTU probes and packets sent meanwhile.
struct Observed {
    cpu: f64,
    probes: u64,
    packets: u64,
}

fn observe(ns: &NetNs, config: &str, period: Duration) -> anyhow::Result<Observed> {
    let mut daemon = Daemon::start(ns, config);
    daemon.wait_ready();
    // Past start-up: the first searches are done (or never start).
    std::thread::sleep(Duration::from_secs(5));
    let counts = |daemon: &Daemon| {
        let metrics = daemon.metrics();
        (
            metrics.count("watchdog_mtu_probes_total", &[]),
            metrics.count("watchdog_probe_packets_total", &[("purpose", "path_mtu")]),
        )
    };
    let pid = daemon.pid();
    let before = counts(&daemon);
    let cpu_start = crate::bench::cpu_ns(pid)?;
    std::thread::sleep(period);
    let cpu = (crate::bench::cpu_ns(pid)? - cpu_start) as f64 / 1e9;
    let after = counts(&daemon);
    let findings = daemon.findings();
    daemon.stop();
    if !findings.is_empty() {
        bail!("findings on a healthy lab: {findings:#?}");
    }
    Ok(Observed {
        cpu,
        probes: after.0 - before.0,
        packets: after.1 - before.1,
    })
}

fn cost(lab: &Lab, period: Duration, rounds: u32) -> anyhow::Result<()> {
    let mut streams = Vec::new();
    for from in 0..3 {
        for to in (0..3).filter(|&to| to != from) {
            streams.push(lab.udp_stream(from, to, 10));
        }
    }
    eprintln!("bench mtu: healthy lab, [mtu] on/off alternating, {rounds} x {period:?} each");
    let ns = lab.node(0).ns();
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Which one goes first alternates, so a drifting machine load favours neither.
        if round % 2 == 0 {
            on.push(observe(ns, "", period)?);
        }
        off.push(observe(ns, "[mtu]\nenabled = false\n", period)?);
        if round % 2 == 1 {
            on.push(observe(ns, "", period)?);
        }
        eprintln!(
            "  round {}/{rounds}: CPU on {:.3}s off {:.3}s; {} probes, {} packets",
            round + 1,
            on[on.len() - 1].cpu,
            off[off.len() - 1].cpu,
            on[on.len() - 1].probes,
            on[on.len() - 1].packets
        );
    }
    drop(streams);
    let seconds = period.as_secs_f64() * f64::from(rounds);
    let peers = 2.0;
    let probes: u64 = on.iter().map(|o| o.probes).sum();
    let packets: u64 = on.iter().map(|o| o.packets).sum();
    let per_hour = |n: u64| n as f64 / peers * 3600.0 / seconds;
    let cpu_on: f64 = on.iter().map(|o| o.cpu).sum();
    let cpu_off: f64 = off.iter().map(|o| o.cpu).sum();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "healthy lab, 2 peers, {rounds} x {period:?} per setting (load average now: {}):",
        load.trim()
    );
    println!(
        "  path-MTU probes: {probes} ({packets} packets) in {seconds:.0} s = {:.1} probes, \
         {:.1} packets, {:.0} KB per peer per hour (full-size packets, one way)",
        per_hour(probes),
        per_hour(packets),
        per_hour(packets * PROBE_OUTER_BYTES) / 1000.0
    );
    println!(
        "  daemon CPU: [mtu] on {:.4}% of a core, off {:.4}% (on/off x{:.2})",
        100.0 * cpu_on / seconds,
        100.0 * cpu_off / seconds,
        cpu_on / cpu_off.max(1e-9)
    );
    Ok(())
}
