//! `cargo xtask bench drops-causes`: how fast each cause of issue 23 is named.
//!
//! One 3-node lab per cause, the daemon on node 0 run as the shipped DaemonSet runs it
//! (the kustomize base's ConfigMap: `namespaces = "node"`, Nodes from a fake API server),
//! node 0 without ping sockets (`net.ipv4.ping_group_range` "1 0", a fresh namespace's),
//! and per run: fault → the finding naming the object on `/api/v1/findings` (timed),
//! healed → resolved (timed too). Median and worst over `--runs`. The faults are those of
//! `tests/tests/suite/causes.rs`: Docker's `iptables -P FORWARD DROP`, an nft rule, strict
//! rp_filter on asymmetric routes, bad VXLAN checksums from a peer, a dead pod address
//! (the clock starts with its first packet; each run kills the same address again, node 2
//! having forgotten its MAC), a remote VXLAN MAC changed, a silent hop on
//! the way to node 1 carrying 1400 bytes (the UDP path-MTU search).
//!
//! The release daemon is used, unless `WATCHDOG_BIN` names one already.

use std::{
    net::{Ipv4Addr, UdpSocket},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::bail;
use watchdog_tests::{
    Daemon, Finding, NetNs,
    lab::{Lab, VXLAN_DEV, overlay_ip, vtep_mac},
    poll_until,
    shipped::Shipped,
};

/// How long one fault may take to be named, or to resolve once healed.
const LIMIT: Duration = Duration::from_secs(90);

/// Something running while a fault is in place (traffic), stopped on drop.
enum Load {
    Stream(#[allow(dead_code)] watchdog_tests::lab::UdpStream),
    Child(Child),
    Thread(Arc<AtomicBool>, Option<std::thread::JoinHandle<()>>),
}

impl Drop for Load {
    fn drop(&mut self) {
        match self {
            Load::Stream(_) => {}
            Load::Child(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Load::Thread(stop, thread) => {
                stop.store(true, Ordering::Relaxed);
                if let Some(thread) = thread.take() {
                    let _ = thread.join();
                }
            }
        }
    }
}

/// One cause: its traffic, fault, heal and the finding that names it.
struct Cause {
    name: &'static str,
    kind: &'static str,
    subject: fn(&Lab) -> String,
    traffic: fn(&Lab) -> anyhow::Result<Load>,
    fault: fn(&Lab) -> anyhow::Result<()>,
    heal: fn(&Lab) -> anyhow::Result<()>,
    /// The bound on fault → named, where it sets one (seconds): the table says
    /// whether the worst run met it.
    bound: Option<f64>,
}

fn run_in(ns: &NetNs, program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ip")
        .args(["netns", "exec", ns.name(), program])
        .args(args)
        .output()?;
    if !output.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

fn nft(ns: &NetNs, ruleset: &str) -> anyhow::Result<()> {
    ns.nft(ruleset).map_err(anyhow::Error::msg)
}

fn sysctl(ns: &NetNs, key: &str, value: &str) -> anyhow::Result<()> {
    ns.run(|| std::fs::write(format!("/proc/sys/{key}"), value))?;
    Ok(())
}

const DEAD: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 77);

fn causes() -> Vec<Cause> {
    vec![
        Cause {
            name: "iptables -P FORWARD DROP",
            kind: "firewall_drop",
            subject: |_| "chain ip filter FORWARD policy drop".into(),
            traffic: |lab| Ok(Load::Stream(lab.udp_stream(0, 1, 50))),
            fault: |lab| run_in(lab.node(0).ns(), "iptables", &["-P", "FORWARD", "DROP"]),
            bound: None,
            heal: |lab| run_in(lab.node(0).ns(), "iptables", &["-P", "FORWARD", "ACCEPT"]),
        },
        Cause {
            name: "an nft rule dropping a pod's traffic",
            kind: "firewall_drop",
            subject: |_| "rule inet guard pods handle".into(),
            traffic: |lab| Ok(Load::Stream(lab.udp_stream(0, 2, 50))),
            fault: |lab| {
                nft(
                    lab.node(0).ns(),
                    &format!(
                        "table inet guard {{\n chain pods {{ type filter hook forward priority 0; \
                         policy accept;\n  ip daddr {} counter drop\n }}\n}}\n",
                        lab.node(2).pod_ip()
                    ),
                )
            },
            bound: None,
            heal: |lab| {
                run_in(
                    lab.node(0).ns(),
                    "nft",
                    &["delete", "table", "inet", "guard"],
                )
            },
        },
        Cause {
            name: "strict rp_filter, asymmetric routes",
            kind: "rp_filter_drop",
            subject: |_| format!("rp_filter dev {VXLAN_DEV}"),
            traffic: |lab| {
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
                Ok(Load::Stream(lab.udp_stream(2, 0, 50)))
            },
            fault: |lab| sysctl(lab.node(0).ns(), "net/ipv4/conf/all/rp_filter", "1"),
            bound: None,
            heal: |lab| sysctl(lab.node(0).ns(), "net/ipv4/conf/all/rp_filter", "2"),
        },
        Cause {
            name: "bad VXLAN checksums from node 1",
            kind: "checksum_drop",
            subject: |lab| format!("checksum drops from {} dev eth0", lab.node(1).underlay_ip()),
            traffic: |lab| {
                run_in(lab.node(0).ns(), "ethtool", &["-K", "eth0", "rx", "off"])?;
                run_in(lab.node(1).ns(), "ethtool", &["-K", "eth0", "tx", "off"])?;
                Ok(Load::Stream(lab.udp_stream(1, 0, 50)))
            },
            fault: |lab| {
                nft(
                    lab.node(1).ns(),
                    "table netdev corrupt {\n chain out { type filter hook egress device \
                     \"eth0\" priority 0;\n  udp dport 8472 udp checksum set 0x1234\n }\n}\n",
                )
            },
            bound: None,
            heal: |lab| {
                run_in(
                    lab.node(1).ns(),
                    "nft",
                    &["delete", "table", "netdev", "corrupt"],
                )
            },
        },
        Cause {
            name: "one-way UDP to a dead pod address (from its first packet)",
            kind: "blackholed_destination",
            subject: |_| format!("destination {DEAD} dev {VXLAN_DEV}"),
            traffic: |_| Ok(Load::Child(Command::new("true").spawn()?)),
            fault: |_| Ok(()),
            bound: Some(5.0),
            heal: |lab| {
                lab.node(2)
                    .pod_ns()
                    .ip(&["addr", "add", &format!("{DEAD}/24"), "dev", "eth0"]);
                Ok(())
            },
        },
        Cause {
            name: "node 2's VXLAN MAC changed",
            kind: "remote_vtep_drops",
            subject: |lab| {
                format!(
                    "remote vtep {} (fdb {} dev {VXLAN_DEV})",
                    lab.node(2).underlay_ip(),
                    vtep_mac(2)
                )
            },
            traffic: |lab| Ok(Load::Stream(lab.udp_stream(0, 2, 50))),
            fault: |lab| {
                lab.ip_in(
                    2,
                    &["link", "set", VXLAN_DEV, "address", "02:fa:00:00:00:77"],
                );
                Ok(())
            },
            bound: None,
            heal: |lab| {
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
                Ok(())
            },
        },
        Cause {
            name: "a silent 1400-byte hop on the way to node 1 (UDP search)",
            kind: "mtu_black_hole",
            subject: |lab| format!("path to vtep {} dev {VXLAN_DEV}", lab.node(1).underlay_ip()),
            traffic: |_| Ok(Load::Child(Command::new("true").spawn()?)),
            fault: |lab| {
                nft(
                    lab.underlay(),
                    "table bridge hole {\n chain out { type filter hook forward priority 0;\n  \
                     oifname \"n1\" meta length > 1400 drop\n }\n}\n",
                )
            },
            bound: Some(10.0),
            heal: |lab| {
                run_in(
                    lab.underlay(),
                    "nft",
                    &["delete", "table", "bridge", "hole"],
                )
            },
        },
    ]
}

/// What runs during the fault besides the cause's own traffic: the dead address's
/// sender, the large pings of the path-MTU hole.
fn fault_traffic(lab: &Lab, cause: &Cause) -> anyhow::Result<Option<Load>> {
    Ok(match cause.kind {
        "blackholed_destination" => {
            // The address is gone again (the last heal added it), and node 2 forgets its
            // MAC, so every run is the first one's case: node 2 resolves the address afresh
            // and says "host unreachable" after its 3 solicits. With the MAC still cached,
            // node 2 forwards to the pod, which (forwarding, as this lab's pods inherit the
            // host's ip_forward) says it itself after its own 3 solicits; a pod really gone
            // says nothing until node 2's neighbour entry fails (15-45 s + 8 s).
            let _ = Command::new("ip")
                .args(["-n", lab.node(2).pod_ns().name(), "addr", "del"])
                .args([&format!("{DEAD}/24"), "dev", "eth0"])
                .stderr(Stdio::null())
                .status();
            lab.ip_in(
                2,
                &["neigh", "flush", "to", &DEAD.to_string(), "dev", "cni0"],
            );
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            let thread = lab.node(0).pod_ns().spawn(move || {
                let Ok(socket) = UdpSocket::bind("0.0.0.0:0") else {
                    return;
                };
                while !flag.load(Ordering::Relaxed) {
                    let _ = socket.send_to(b"metric:1|c", (DEAD, 8125));
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
            Some(Load::Thread(stop, Some(thread)))
        }
        "mtu_black_hole" => Some(Load::Child(
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    lab.node(0).pod_ns().name(),
                    "ping",
                    "-q",
                    "-i",
                    "0.1",
                ])
                .args(["-M", "do", "-s", "1372"])
                .arg(lab.node(1).pod_ip().to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        )),
        _ => None,
    })
}

fn named(daemon: &Daemon, kind: &str, subject: &str) -> bool {
    finding(daemon, kind, subject).is_some()
}

/// The active finding of `kind` whose subject contains `subject`.
fn finding(daemon: &Daemon, kind: &str, subject: &str) -> Option<Finding> {
    daemon
        .try_findings()
        .unwrap_or_default()
        .into_iter()
        .find(|f| f.kind == kind && f.subject.contains(subject))
}

fn summary(times: &mut [f64]) -> String {
    times.sort_by(f64::total_cmp);
    format!(
        "median {:.2}s, worst {:.2}s",
        times[times.len() / 2],
        times[times.len() - 1]
    )
}

pub fn run(runs: u32, only: Option<&str>) -> anyhow::Result<()> {
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let mut table = Vec::new();
    for cause in causes() {
        if only.is_some_and(|only| !cause.name.contains(only) && cause.kind != only) {
            continue;
        }
        let lab = Lab::new(3);
        if let Err(error) = lab.check_pod_connectivity() {
            bail!("the lab is not connected: {error}");
        }
        let shipped = Shipped::start(&lab, 0);
        let mut daemon = Daemon::start(lab.node(0).ns(), &shipped.config(""));
        daemon.wait_ready();
        let subject = (cause.subject)(&lab);
        let _traffic = (cause.traffic)(&lab)?;
        eprintln!("bench drops-causes: {} ({runs} runs)", cause.name);
        let (mut named_after, mut resolved_after) = (Vec::new(), Vec::new());
        for run in 0..runs {
            poll_until(LIMIT, "healthy before the fault", || {
                (!named(&daemon, cause.kind, &subject)).then_some(())
            });
            let started = Instant::now();
            let extra = fault_traffic(&lab, &cause)?;
            (cause.fault)(&lab)?;
            let (took, found) = poll_until(LIMIT, cause.kind, || {
                finding(&daemon, cause.kind, &subject).map(|found| (started.elapsed(), found))
            });
            // What named it, where an ICMP error did (the probe's or the traffic's).
            let icmp = found
                .evidence("icmp")
                .first()
                .map(|icmp| format!(" (icmp: {icmp})"))
                .unwrap_or_default();
            let healed = Instant::now();
            (cause.heal)(&lab)?;
            let resolved = poll_until(LIMIT, "resolved", || {
                (!named(&daemon, cause.kind, &subject)).then(|| healed.elapsed())
            });
            drop(extra);
            eprintln!(
                "  run {}/{runs}: named {:.2}s{icmp}, resolved {:.2}s",
                run + 1,
                took.as_secs_f64(),
                resolved.as_secs_f64()
            );
            named_after.push(took.as_secs_f64());
            resolved_after.push(resolved.as_secs_f64());
        }
        daemon.stop();
        let named = summary(&mut named_after);
        let worst = named_after[named_after.len() - 1];
        let bound = cause.bound.map_or_else(
            || "–".to_owned(),
            |bound| {
                let verdict = if worst <= bound { "met" } else { "MISSED" };
                format!("≤ {bound:.0}s: {verdict}")
            },
        );
        table.push(format!(
            "| {} | `{}` | {named} | {bound} | {} |",
            cause.name,
            cause.kind,
            summary(&mut resolved_after)
        ));
    }
    println!("| cause | finding | fault → named | issue's bound (worst run) | healed → resolved |");
    println!("|---|---|---|---|---|");
    for row in table {
        println!("{row}");
    }
    Ok(())
}

/// The cost of reading what explains the drops: one lab, node 0's FORWARD policy dropping
/// a pod's stream (netfilter drops of this node's pod traffic, so the readers run: the
/// nftables ruleset at most once a second), the daemon as shipped observed for `period`
/// with `probes.explain_drops` on and off, `rounds` times each, side by side.
pub fn readers_cost(period: Duration, rounds: u32) -> anyhow::Result<()> {
    let lab = Lab::new(3);
    if let Err(error) = lab.check_pod_connectivity() {
        bail!("the lab is not connected: {error}");
    }
    let shipped = Shipped::start(&lab, 0);
    let _stream = lab.udp_stream(0, 1, 50);
    run_in(lab.node(0).ns(), "iptables", &["-P", "FORWARD", "DROP"])?;
    let configs =
        [true, false].map(|on| format!("{}\n[probes]\nexplain_drops = {on}\n", shipped.config("")));
    let result = crate::bench::compare_pair(
        "the daemon as shipped while node 0's FORWARD policy drops a pod's 50 packets/s",
        period,
        rounds,
        [
            "probes.explain_drops = true",
            "probes.explain_drops = false",
        ],
        |setup| {
            crate::bench::observe(
                lab.node(0).ns(),
                &configs[setup],
                |daemon| {
                    // Observed once the drops are judged: named (with the chain, when
                    // the readers run) as a firewall drop.
                    poll_until(LIMIT, "the firewall drop named", || {
                        named(daemon, "firewall_drop", "").then_some(())
                    });
                },
                period,
            )
        },
    );
    run_in(lab.node(0).ns(), "iptables", &["-P", "FORWARD", "ACCEPT"])?;
    result.map(|_| ())
}
