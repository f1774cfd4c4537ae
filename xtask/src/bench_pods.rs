//! `cargo xtask bench pods`: what seeing the pods costs and how fast it speaks.
//!
//! - Ghost endpoint, connects start → finding: on a 3-node lab, the daemon on node 0 with
//!   the defaults (`poll_interval` 500ms, `namespaces = "node"`, Pods and EndpointSlices
//!   from the fake API server), node 0's pod connecting (TCP, 2 s timeout, retried) to a
//!   Service endpoint on node 2 that no pod has; timed from the first connect until
//!   `failing_tcp_destination` names it with `service=`. Each run uses another dead
//!   address of the slice, so runs do not wait for the previous finding to resolve.
//! - Memory: the idle daemon (`namespaces = "node"`, pods and endpoints from the fake API
//!   server) with `--pods` Pods on its node and as many endpoints in EndpointSlices,
//!   against the same daemon with 0 Pods and no slices, one after the other.
//! - CPU: the daemon (`namespaces = "node"`, no pod source) with `--namespaces` pod
//!   namespaces behind veths into its own, each connecting to a closed port once a second
//!   (failed connects in the kernel's maps, attributed per namespace), against 0 such
//!   namespaces, over `--seconds` each.

use std::{
    os::unix::process::CommandExt as _,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::bail;
use watchdog_tests::{
    Daemon, NetNs, TempDir,
    apiserver::InNetns,
    lab::{
        Lab,
        nodes::node_name,
        pods::{PODS, SLICES, endpoint_slice, serve_pods},
    },
    poll_until,
};

const PORT: u16 = 8080;

pub fn run(
    runs: u32,
    pods: usize,
    namespaces: usize,
    seconds: u64,
    rounds: u32,
) -> anyhow::Result<()> {
    if runs == 0 || runs > 100 {
        bail!("--runs must be 1 to 100");
    }
    let period = Duration::from_secs(seconds);
    latency(runs)?;
    memory(pods, period, rounds)?;
    cpu(namespaces, period, rounds)
}

/// A shell loop connecting to `target:port` from `ns`, in its own process group, killed on
/// drop.
struct Client(Child);

impl Client {
    fn start(ns: &NetNs, target: &str, port: u16, pause: &str) -> Self {
        let script = format!(
            "while :; do timeout 2 bash -c ': </dev/tcp/{target}/{port}' 2>/dev/null; {pause}; done"
        );
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name(), "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start a client loop");
        Self(child)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group we created.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

fn latency(runs: u32) -> anyhow::Result<()> {
    let lab = Lab::new(3);
    if let Err(error) = lab.check_pod_connectivity() {
        bail!("the lab is not connected: {error}");
    }
    let dir = TempDir::new("wd-bench-pods");
    let server = InNetns::start(lab.node(0).ns(), true);
    server.load_nodes(&lab.node_list());
    server.add_resource(PODS, "PodList");
    server.add_resource(SLICES, "EndpointSliceList");
    let dead: Vec<String> = (0..runs).map(|i| format!("10.244.2.{}", 100 + i)).collect();
    server.apply(
        SLICES,
        endpoint_slice("default", "web", &dead, &node_name(2), PORT),
    );
    let config = format!(
        "namespaces = \"node\"\n[desired]\nsource = \"kubernetes\"\nkubeconfig = \"{}\"\n\
         node_name = \"{}\"\n[pods]\nsource = \"kubernetes\"\nendpoints = \"kubernetes\"\n",
        server.kubeconfig(dir.path()).display(),
        node_name(0)
    );
    crate::bench::say_daemon(
        &config,
        &[
            "poll_interval",
            "namespaces",
            "detect.min_syn_retransmits",
            "detect.confirm",
        ],
    )?;
    let mut daemon = Daemon::start(lab.node(0).ns(), &config);
    daemon.wait_ready();
    eprintln!("bench pods: a pod's connects to a dead Service endpoint -> finding, {runs} runs");
    let mut times = Vec::new();
    for (run, address) in dead.iter().enumerate() {
        let subject = format!("tcp {address}:{PORT}");
        let started = Instant::now();
        let client = Client::start(lab.node(0).pod_ns(), address, PORT, ":");
        let took = poll_until(Duration::from_secs(60), "failing_tcp_destination", || {
            daemon
                .try_findings()
                .unwrap_or_default()
                .iter()
                .any(|f| {
                    f.kind == "failing_tcp_destination"
                        && f.subject == subject
                        && f.evidence("service") == ["default/web"]
                })
                .then(|| started.elapsed())
        });
        drop(client);
        eprintln!("  run {}/{runs}: {:.2}s", run + 1, took.as_secs_f64());
        times.push(took.as_secs_f64());
    }
    daemon.stop();
    times.sort_by(f64::total_cmp);
    println!(
        "  connects start -> failing_tcp_destination with service=: median {:.2}s, worst {:.2}s \
         over {runs} runs",
        times[times.len() / 2],
        times[times.len() - 1]
    );
    Ok(())
}

fn memory(pods: usize, period: Duration, rounds: u32) -> anyhow::Result<()> {
    let node = "bench-node";
    let ns = NetNs::new("wd-bench-pods");
    let dir = TempDir::new("wd-bench-pods-mem");
    let observe = |count: usize| {
        let server = serve_pods(&ns, count, node, PORT);
        let config = format!(
            "namespaces = \"node\"\n[desired]\nsource = \"kubernetes\"\nkubeconfig = \"{}\"\n\
             node_name = \"{node}\"\n\
             [pods]\nsource = \"kubernetes\"\nendpoints = \"kubernetes\"\n",
            server.kubeconfig(dir.path()).display()
        );
        let wait = |_: &Daemon| {
            poll_until(
                Duration::from_secs(60),
                "the pods and slices watched",
                || (server.watchers(PODS) >= 1 && server.watchers(SLICES) >= 1).then_some(()),
            );
        };
        crate::bench::observe(&ns, &config, wait, period)
    };
    let many = format!("{pods} Pods, {} slices", pods.div_ceil(10));
    crate::bench::compare_pair(
        "idle daemon, pods and endpoints from the API",
        period,
        rounds,
        ["0 Pods, 0 slices", &many],
        |setup| observe([0, pods][setup]),
    )?;
    Ok(())
}

fn cpu(namespaces: usize, period: Duration, rounds: u32) -> anyhow::Result<()> {
    let ns = NetNs::new("wd-bench-pods-cpu");
    ns.ip(&["link", "set", "lo", "up"]);
    let config = "namespaces = \"node\"\n";
    let busy = format!("{namespaces} namespaces, 1 failed connect/s each");
    crate::bench::compare_pair(
        "daemon, namespaces = \"node\"",
        period,
        rounds,
        ["0 pod namespaces", &busy],
        |setup| {
            if setup == 0 {
                return crate::bench::observe(&ns, config, |_| {}, period);
            }
            let mut pods = Vec::new();
            let mut clients = Vec::new();
            for i in 0..namespaces {
                let pod = NetNs::new("wd-bp");
                pod.veth_to(
                    &ns,
                    (
                        "eth0",
                        &format!("10.200.{}.{}/31", i / 100, (i % 100) * 2 + 1),
                    ),
                    (
                        &format!("vb{i}"),
                        &format!("10.200.{}.{}/31", i / 100, (i % 100) * 2),
                    ),
                );
                pod.ip(&["link", "set", "lo", "up"]);
                clients.push(Client::start(&pod, "127.0.0.1", 9, "sleep 1"));
                pods.push(pod);
            }
            let observed = crate::bench::observe(&ns, config, |_| {}, period);
            drop(clients);
            drop(pods);
            observed
        },
    )?;
    Ok(())
}
