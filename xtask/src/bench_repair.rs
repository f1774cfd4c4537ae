//! `cargo xtask bench repair`: how fast the daemon in `[repair] mode = "apply"` puts each
//! repairable fault right, and that it changes nothing else.
//!
//! One 3-node lab, objects outside the owned set added to node 0 (another VXLAN device
//! with its own FDB entry and neighbour, a static route in another table, a blackhole and
//! a foreign-protocol route outside the pod subnets), the daemon (debug build) on node 0
//! with the NodeList file as the desired state, UDP traffic from pod 0 to pods 1 and 2.
//! Rounds of five faults, each on its own object: FDB entry repointed at a retired
//! address, FDB entry deleted, neighbour removed, route replaced by a ghost gateway on the
//! underlay, route removed. For each: fault → repaired (the journal's next repair has the
//! verdict `verified`) and fault → traffic restored (a UDP echo from pod 0 through the
//! overlay answered). After each, the node's configuration dump (every table's routes,
//! rules, permanent neighbours, configured FDB entries) is compared with the healthy one:
//! every line that differs counts (goal 0).

use std::{
    collections::BTreeSet,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::bail;
use watchdog_tests::{
    Daemon, TempDir,
    lab::{
        Lab, MISSING_GATEWAY, RETIRED_VTEP, VXLAN_DEV, config_dump, nodes::node_name, overlay_ip,
        underlay_ip, vtep_mac,
    },
    poll_until,
};

/// One fault: its name, the pod it cuts pod 0 from, how to inject it.
struct Fault {
    name: &'static str,
    to: usize,
    inject: fn(&Lab),
}

const FAULTS: &[Fault] = &[
    Fault {
        name: "fdb-repointed",
        to: 1,
        inject: |lab| {
            lab.repoint_fdb(0, 1, RETIRED_VTEP);
            // The injector's ghost neighbour on the underlay is the fault's, not repair's.
            lab.node(0)
                .ns()
                .ip(&["neigh", "del", &RETIRED_VTEP.to_string(), "dev", "eth0"]);
        },
    },
    Fault {
        name: "fdb-deleted",
        to: 2,
        inject: |lab| {
            let (mac, dst) = (vtep_mac(2), underlay_ip(2).to_string());
            lab.node(0)
                .ns()
                .bridge(&["fdb", "del", &mac, "dev", VXLAN_DEV, "dst", &dst]);
        },
    },
    Fault {
        name: "neigh-removed",
        to: 1,
        inject: |lab| {
            let ip = overlay_ip(1).to_string();
            lab.node(0)
                .ns()
                .ip(&["neigh", "del", &ip, "dev", VXLAN_DEV]);
        },
    },
    Fault {
        name: "ghost-gateway",
        to: 2,
        inject: |lab| {
            lab.route_via_missing_gateway(0, &format!("{}/24", overlay_ip(2)), MISSING_GATEWAY)
        },
    },
    Fault {
        name: "route-removed",
        to: 1,
        inject: |lab| {
            let prefix = format!("{}/24", overlay_ip(1));
            lab.node(0).ns().ip(&["route", "del", &prefix]);
        },
    },
];

/// Adds node 0's objects outside the owned set.
fn add_unowned(lab: &Lab) {
    let ns = lab.node(0).ns();
    for command in [
        "link add vx42 type vxlan id 42 local 192.168.77.10 dev eth0 dstport 4790 nolearning",
        "link set vx42 up",
        "neigh add 10.244.9.0 lladdr 02:00:00:00:00:09 dev vx42 nud permanent",
        "route add 10.244.1.0/24 via 192.168.77.98 dev eth0 onlink table 100",
        "route add blackhole 10.99.0.0/16",
        "route add 10.98.0.0/16 via 192.168.77.97 dev eth0 onlink proto 99",
    ] {
        let args: Vec<&str> = command.split_whitespace().collect();
        ns.ip(&args);
    }
    let (mac, dst) = (vtep_mac(1), RETIRED_VTEP.to_string());
    ns.bridge(&["fdb", "append", &mac, "dev", "vx42", "dst", &dst]);
}

/// Repairs in the journal with the verdict `verified`.
fn verified(journal: &Path) -> usize {
    let Ok(text) = std::fs::read_to_string(journal) else {
        return 0;
    };
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| entry["entry"] == "verdict" && entry["outcome"] == "verified")
        .count()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

pub fn run(runs: u32) -> anyhow::Result<()> {
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let lab = Lab::new(3);
    if let Err(error) = lab.check_pod_connectivity() {
        bail!("the lab is not connected: {error}");
    }
    add_unowned(&lab);
    let dir = TempDir::new("wd-bench-repair");
    let nodes = dir.path().join("nodes.json");
    let journal = dir.path().join("journal.jsonl");
    watchdog_tests::lab::nodes::write_node_list(&nodes, &lab.node_list());
    // Defaults but: apply, the file source, and no hourly cap (every run repairs the same
    // five objects). The verify window is waited out before an object is faulted again,
    // else repair rightly calls it a conflict.
    let verify_window = Duration::from_secs(2);
    let config = format!(
        "[desired]\nnode_name = \"{}\"\nsource = \"file\"\npath = \"{}\"\n[repair]\n\
         mode = \"apply\"\njournal = \"{}\"\nverify_window = \"2s\"\nmax_per_hour = 3600\n",
        node_name(0),
        nodes.display(),
        journal.display()
    );
    crate::bench::say_daemon(
        &config,
        &[
            "poll_interval",
            "repair.mode",
            "repair.verify_window",
            "desired.grace",
            "detect.confirm",
        ],
    )?;
    let mut daemon = Daemon::start(lab.node(0).ns(), &config);
    daemon.wait_ready();
    let streams = [lab.udp_stream(0, 1, 50), lab.udp_stream(0, 2, 50)];
    streams[1].wait_replies(50, Duration::from_secs(10));
    let healthy: BTreeSet<String> = config_dump(lab.node(0).ns());
    let probe = Duration::from_millis(200);
    let mut repaired: Vec<Vec<f64>> = vec![Vec::new(); FAULTS.len()];
    let mut restored: Vec<Vec<f64>> = vec![Vec::new(); FAULTS.len()];
    let mut differing = 0usize;
    let mut last_verified: Vec<Option<Instant>> = vec![None; FAULTS.len()];
    for run in 0..runs {
        for (i, fault) in FAULTS.iter().enumerate() {
            if let Some(at) = last_verified[i] {
                let wait =
                    (verify_window + Duration::from_millis(500)).saturating_sub(at.elapsed());
                std::thread::sleep(wait);
            }
            let before = verified(&journal);
            let injected = Instant::now();
            (fault.inject)(&lab);
            let (mut fixed, mut flowing) = (None, None);
            let (a, b) = poll_until(Duration::from_secs(60), fault.name, || {
                if fixed.is_none() && verified(&journal) > before {
                    fixed = Some(injected.elapsed());
                }
                if flowing.is_none() && lab.probe(0, fault.to, probe).is_ok() {
                    flowing = Some(injected.elapsed());
                }
                fixed.zip(flowing)
            });
            last_verified[i] = Some(Instant::now());
            let now = config_dump(lab.node(0).ns());
            let diff = healthy.symmetric_difference(&now).count();
            differing += diff;
            eprintln!(
                "  {} run {}/{runs}: repaired {:.2}s, restored {:.2}s, {diff} line(s) differ",
                fault.name,
                run + 1,
                a.as_secs_f64(),
                b.as_secs_f64()
            );
            repaired[i].push(a.as_secs_f64());
            restored[i].push(b.as_secs_f64());
        }
    }
    drop(streams);
    daemon.stop();
    println!(
        "repair (daemon in apply, debug build, default poll 500ms), {runs} runs per fault, \
         seconds from the fault:"
    );
    println!(
        "  {:<15} {:>16} {:>8} {:>16} {:>8}",
        "fault", "repaired median", "worst", "restored median", "worst"
    );
    for (i, fault) in FAULTS.iter().enumerate() {
        let worst = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        println!(
            "  {:<15} {:>16.2} {:>8.2} {:>16.2} {:>8.2}",
            fault.name,
            median(&mut repaired[i]),
            worst(&repaired[i]),
            median(&mut restored[i]),
            worst(&restored[i])
        );
    }
    println!(
        "configuration lines differing from the healthy dump after a repair, over all {} \
         runs (goal 0; objects outside the owned set included): {differing}",
        runs as usize * FAULTS.len()
    );
    if differing > 0 {
        bail!("{differing} configuration line(s) differ after repairs");
    }
    Ok(())
}
