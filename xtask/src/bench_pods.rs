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
        pods::{endpoint_slice, synthetic_pod},
    },
    poll_until,
};

const PODS: &str = "/api/v1/pods";
const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
const PORT: u16 = 8080;

pub fn run(runs: u32, pods: usize, namespaces: usize, seconds: u64) -> anyhow::Result<()> {
    if runs == 0 || runs > 100 {
        bail!("--runs must be 1 to 100");
    }
    let period = Duration::from_secs(seconds);
    latency(runs)?;
    memory(pods, period)?;
    cpu(namespaces, period)
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
         over {runs} runs (defaults: poll_interval 500ms, detect.min_syn_retransmits 2, \
         detect.confirm 2)",
        times[times.len() / 2],
        times[times.len() - 1]
    );
    Ok(())
}

/// (resident KiB, peak KiB, CPU seconds over `period`) of the daemon with `config`.
fn observe(ns: &NetNs, config: &str, wait: impl Fn(&Daemon), period: Duration) -> (u64, u64, f64) {
    let mut daemon = Daemon::start(ns, config);
    daemon.wait_ready();
    wait(&daemon);
    let pid = daemon.pid();
    let cpu_start = crate::bench::cpu_ns(pid).expect("schedstat");
    std::thread::sleep(period);
    let cpu = (crate::bench::cpu_ns(pid).expect("schedstat") - cpu_start) as f64 / 1e9;
    let rss = crate::bench::status_kib(pid, "VmRSS:").expect("VmRSS");
    let peak = crate::bench::status_kib(pid, "VmHWM:").expect("VmHWM");
    daemon.stop();
    (rss, peak, cpu)
}

fn print_pair(title: &str, period: Duration, rows: [(String, (u64, u64, f64)); 2]) {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "{title} over {period:?} (load average now: {}):",
        load.trim()
    );
    println!(
        "  {:<44} {:>12} {:>12} {:>14}",
        "", "VmRSS KiB", "VmHWM KiB", "CPU % of core"
    );
    for (label, (rss, peak, cpu)) in &rows {
        println!(
            "  {label:<44} {rss:>12} {peak:>12} {:>14.4}",
            100.0 * cpu / period.as_secs_f64()
        );
    }
    let (a, b) = (rows[0].1, rows[1].1);
    println!(
        "  difference: {:+} KiB resident, CPU x{:.2}",
        b.0 as i64 - a.0 as i64,
        b.2 / a.2.max(1e-9)
    );
}

fn memory(pods: usize, period: Duration) -> anyhow::Result<()> {
    let node = "bench-node";
    let ns = NetNs::new("wd-bench-pods");
    let dir = TempDir::new("wd-bench-pods-mem");
    let mut measured = Vec::new();
    for count in [0, pods] {
        let server = InNetns::start(&ns, true);
        server.add_resource(PODS, "PodList");
        server.add_resource(SLICES, "EndpointSliceList");
        let mut addresses = Vec::new();
        for i in 0..count {
            let pod = synthetic_pod(i, node);
            addresses.push(pod["status"]["podIP"].as_str().unwrap().to_owned());
            server.apply(PODS, pod);
        }
        // One Service per 10 pods.
        for (i, chunk) in addresses.chunks(10).enumerate() {
            server.apply(
                SLICES,
                endpoint_slice("default", &format!("svc-{i:03}"), chunk, node, PORT),
            );
        }
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
        measured.push((
            format!("{count} Pods, {} slices", count.div_ceil(10)),
            observe(&ns, &config, wait, period),
        ));
    }
    let [none, many]: [(String, (u64, u64, f64)); 2] =
        measured.try_into().expect("two measurements");
    print_pair(
        "idle daemon, pods and endpoints from the API",
        period,
        [none, many],
    );
    Ok(())
}

fn cpu(namespaces: usize, period: Duration) -> anyhow::Result<()> {
    let ns = NetNs::new("wd-bench-pods-cpu");
    ns.ip(&["link", "set", "lo", "up"]);
    let config = "namespaces = \"node\"\n";
    let base = observe(&ns, config, |_| {}, period);
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
    let busy = observe(&ns, config, |_| {}, period);
    drop(clients);
    print_pair(
        "daemon, namespaces = \"node\"",
        period,
        [
            ("0 pod namespaces".to_owned(), base),
            (
                format!("{namespaces} namespaces, 1 failed connect/s each"),
                busy,
            ),
        ],
    );
    Ok(())
}
