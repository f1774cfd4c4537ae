//! `cargo xtask bench desired`: what the desired state costs and how fast it speaks.
//!
//! - Node change → finding: on a 3-node lab, the daemon on node 0 with the default
//!   settings (`poll_interval` 500ms, `desired.grace` 3s, `desired.file_poll` 1s), node-2's
//!   `public-ip` set to a retired address (in the NodeList file, or through the fake API
//!   server's watch), timed until `overlay_drift` names the FDB entry on
//!   `/api/v1/findings`; then reverted, and the next run waits for the finding to
//!   resolve. Both sources share the lab and alternate.
//! - Idle cost: the daemon in an empty namespace with `source = "none"` and with
//!   `source = "kubernetes"` watching `--nodes` Nodes served by the fake API server (this
//!   host's name is none of them, so `overlay_drift` stays quiet; `stale_annotation` and
//!   the node naming run over every Node each cycle), one after the other: resident
//!   memory and CPU time over `--seconds`.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::Value;
use watchdog_tests::{
    Daemon, NetNs, TempDir,
    apiserver::InNetns,
    lab::{
        Lab, RETIRED_VTEP, VXLAN_DEV,
        nodes::{annotate, node_list, node_name, synthetic_node, write_node_list},
    },
    memory::wait_desired,
    poll_until,
};

const NODES: &str = "/api/v1/nodes";

pub fn run(runs: u32, nodes: usize, seconds: u64, rounds: u32) -> anyhow::Result<()> {
    if runs == 0 || nodes == 0 {
        bail!("--runs and --nodes must be at least 1");
    }
    latency(runs)?;
    idle(nodes, Duration::from_secs(seconds), rounds)
}

fn latency(runs: u32) -> anyhow::Result<()> {
    let lab = Lab::new(3);
    if let Err(error) = lab.check_pod_connectivity() {
        bail!("the lab is not connected: {error}");
    }
    let dir = TempDir::new("wd-bench-desired");
    let path = dir.path().join("nodes.json");
    let original: Vec<Value> = lab.nodes().map(|n| n.node_object()).collect();
    let mut changed = original.clone();
    annotate(&mut changed[2], "public-ip", &RETIRED_VTEP.to_string());
    write_node_list(&path, &node_list(original.clone()));
    let server = InNetns::start(lab.node(0).ns(), true);
    server.load_nodes(&node_list(original.clone()));
    let kubeconfig = server.kubeconfig(dir.path());
    let desired = [
        (
            "file",
            format!("source = \"file\"\npath = \"{}\"\n", path.display()),
        ),
        (
            "kubernetes",
            format!(
                "source = \"kubernetes\"\nkubeconfig = \"{}\"\n",
                kubeconfig.display()
            ),
        ),
    ];
    let subject = format!("fdb 02:fa:00:00:00:02 dev {VXLAN_DEV} dst 192.168.77.12");
    for (source, settings) in &desired {
        let config = format!("[desired]\nnode_name = \"{}\"\n{settings}", node_name(0));
        crate::bench::say_daemon(
            &config,
            &[
                "poll_interval",
                "desired.source",
                "desired.grace",
                "desired.file_poll",
                "detect.confirm",
            ],
        )?;
        let mut daemon = Daemon::start(lab.node(0).ns(), &config);
        daemon.wait_ready();
        wait_desired(&daemon, source, 3);
        let mut times = Vec::new();
        for run in 0..runs {
            poll_until(Duration::from_secs(60), "no findings before a run", || {
                daemon
                    .try_findings()
                    .is_some_and(|f| f.is_empty())
                    .then_some(())
            });
            let change = |items: &[Value]| match *source {
                "file" => write_node_list(&path, &node_list(items.to_vec())),
                _ => server.apply(NODES, items[2].clone()),
            };
            let injected = Instant::now();
            change(&changed);
            let found = poll_until(Duration::from_secs(60), "overlay_drift", || {
                daemon
                    .try_findings()
                    .unwrap_or_default()
                    .iter()
                    .any(|f| f.kind == "overlay_drift" && f.subject == subject)
                    .then(|| injected.elapsed())
            });
            eprintln!(
                "  {source} run {}/{runs}: {:.2}s",
                run + 1,
                found.as_secs_f64()
            );
            times.push(found.as_secs_f64());
            change(&original);
        }
        daemon.stop();
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let worst = times[times.len() - 1];
        println!(
            "  Node change -> overlay_drift, source {source:<10}: median {median:.2}s, worst \
             {worst:.2}s over {runs} runs"
        );
    }
    Ok(())
}

fn idle(nodes: usize, period: Duration, rounds: u32) -> anyhow::Result<()> {
    let ns = NetNs::new("wd-bench-desired");
    let server = InNetns::start(&ns, true);
    for i in 0..nodes {
        server.apply(NODES, synthetic_node(i));
    }
    let dir = TempDir::new("wd-bench-desired-idle");
    let kubeconfig = server.kubeconfig(dir.path());
    let kube_config = format!(
        "[desired]\nsource = \"kubernetes\"\nkubeconfig = \"{}\"\n",
        kubeconfig.display()
    );
    crate::bench::say_daemon(&kube_config, &["poll_interval", "desired.source"])?;
    let kube_label = format!("desired source kubernetes, {nodes} Nodes");
    let [none, kube] = crate::bench::compare_pair(
        "idle daemon",
        period,
        rounds,
        ["desired source none", &kube_label],
        |setup| match setup {
            0 => crate::bench::observe(&ns, "", |_| {}, period),
            _ => crate::bench::observe(
                &ns,
                &kube_config,
                |daemon| wait_desired(daemon, "kubernetes", nodes as u64),
                period,
            ),
        },
    )?;
    if server.watchers(NODES) != 0 {
        bail!("the daemon's watch outlived it");
    }
    println!(
        "  {:+.0} bytes per Node (medians)",
        (kube.0 as f64 - none.0 as f64) * 1024.0 / nodes as f64
    );
    Ok(())
}
