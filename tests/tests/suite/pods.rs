//! What the pods see: a pod's connects to a dead pod address on another node are named
//! within seconds (SYN retransmits, not connect timeouts), with the client pod, by the
//! daemon of the pod's node only (`namespaces = "node"`); a Service endpoint left at a
//! deleted pod's address is a `ghost_endpoint` naming the Service, and connects to a
//! Service's dead endpoint name it (`service=`). The daemon runs as the DaemonSet's
//! container does: exactly its capabilities (no SYS_PTRACE) and no other process in
//! sight (no hostPID); it names pods from the cgroups the kernel records.

use std::{
    fs,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use watchdog_tests::{
    Daemon, NetNs, TempDir,
    apiserver::InNetns,
    lab::{
        Lab,
        nodes::{node_name, write_node_list},
    },
    poll_until, require_root,
};

/// The recorded PodList and the UID of its `default/web-7f9c5d8b6-x2x7q`.
const POD_LIST: &str = include_str!("../../../watchdog/tests/fixtures/pods/podlist.json");
const WEB_UID: &str = "0f1c6d2e-3b4a-4c5d-8e9f-0a1b2c3d4e5f";
const WEB: &str = "default/web-7f9c5d8b6-x2x7q";
/// The coredns pod of the same list (cgroupfs layout in the tests).
const DNS_UID: &str = "b7e1a9c3-52d4-4f80-a1e6-c9d8e7f6a5b4";

const DEADLINE: Duration = Duration::from_secs(20);

/// Where cgroup v2 is mounted (`/sys/fs/cgroup` or, on a hybrid host, `…/unified`).
fn cgroup2_root() -> PathBuf {
    let mounts = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    mounts
        .lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let point = left.split(' ').nth(4)?;
            right.starts_with("cgroup2 ").then(|| PathBuf::from(point))
        })
        .expect("cgroup v2 is mounted")
}

/// A lab node's part of the cgroup v2 tree (`wd-pods-<pid>-<n>` at its root): the pods of
/// that node are created under it, and its daemon's `pods.cgroup_root` is it, as a real
/// node's daemon has the node's whole tree. Removed on drop (after its pods).
pub(crate) struct NodeCgroups {
    dir: PathBuf,
    /// Relative to the cgroup2 mount.
    relative: String,
}

impl NodeCgroups {
    pub(crate) fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let relative = format!(
            "wd-pods-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = cgroup2_root().join(&relative);
        fs::create_dir(&dir).expect("create the node's cgroup");
        Self { dir, relative }
    }

    /// `pods.cgroup_root` for a daemon started with [`Daemon::start_confined`], which has
    /// the cgroup2 tree at `/sys/fs/cgroup`.
    pub(crate) fn config(&self) -> String {
        format!("cgroup_root = \"{}\"\n", self.confined_root())
    }

    /// Its path as a daemon started with [`Daemon::start_confined`] sees it.
    pub(crate) fn confined_root(&self) -> String {
        format!("/sys/fs/cgroup/{}", self.relative)
    }
}

impl Drop for NodeCgroups {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.dir);
    }
}

/// The capabilities the shipped DaemonSet's container adds, as the manifest names them.
fn daemonset_capabilities() -> Vec<String> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kustomize/base/daemonset.yaml");
    let daemonset: serde_json::Value =
        serde_saphyr::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    let pod = &daemonset["spec"]["template"]["spec"];
    assert_ne!(pod["hostPID"], true, "the DaemonSet asks for hostPID");
    pod["containers"][0]["securityContext"]["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|cap| cap.as_str().unwrap().to_owned())
        .collect()
}

/// The daemon as the DaemonSet runs it: exactly its capabilities (no SYS_PTRACE), no
/// other process in sight (no hostPID).
pub(crate) fn confined(ns: &NetNs, config: &str) -> Daemon {
    let caps = daemonset_capabilities();
    assert!(!caps.iter().any(|cap| cap == "SYS_PTRACE"), "{caps:?}");
    let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
    Daemon::start_confined(ns, config, &caps)
}

/// A "pod": a shell loop in a network namespace and a kubelet-shaped cgroup, each try a
/// TCP connect given up after 2 s. Killed and its cgroups removed on drop.
pub(crate) struct PodProcess {
    child: Child,
    /// The cgroup directories created, outermost first.
    cgroups: Vec<PathBuf>,
}

impl PodProcess {
    /// `layout`: the cgroup path below the node's part of the tree.
    pub(crate) fn start(
        ns: &NetNs,
        node: &NodeCgroups,
        layout: &str,
        target: &str,
        port: u16,
    ) -> Self {
        Self::start_every(ns, node, layout, target, port, 0)
    }

    /// As [`PodProcess::start`], pausing `pause_secs` seconds after each try (a client of
    /// a live address that should not connect hundreds of times a second).
    pub(crate) fn start_every(
        ns: &NetNs,
        node: &NodeCgroups,
        layout: &str,
        target: &str,
        port: u16,
        pause_secs: u32,
    ) -> Self {
        let mut cgroups = Vec::new();
        let mut dir = node.dir.clone();
        for part in layout.split('/') {
            dir = dir.join(part);
            fs::create_dir(&dir).expect("create a cgroup");
            cgroups.push(dir.clone());
        }
        let leaf = dir.join("cgroup.procs");
        let script = format!(
            "echo $$ > {leaf} && exec ip netns exec {ns} sh -c \
             'while :; do timeout 2 bash -c \": </dev/tcp/{target}/{port}\" 2>/dev/null; {pause}done'",
            leaf = leaf.display(),
            ns = ns.name(),
            pause = if pause_secs == 0 {
                String::new()
            } else {
                format!("sleep {pause_secs}; ")
            },
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start the pod's client");
        Self { child, cgroups }
    }
}

impl Drop for PodProcess {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group we created.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
        let leaf = self.cgroups.last().expect("a leaf").join("cgroup.procs");
        let deadline = Instant::now() + Duration::from_secs(5);
        while fs::read_to_string(&leaf).is_ok_and(|procs| !procs.trim().is_empty())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        for dir in self.cgroups.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    }
}

pub(crate) fn systemd_layout(uid: &str) -> String {
    let uid = uid.replace('-', "_");
    format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid}.slice/cri-containerd-4b1d.scope"
    )
}

fn cgroupfs_layout(uid: &str) -> String {
    format!("kubepods/besteffort/pod{uid}/4b1d2c")
}

fn config(pods: &Path, cgroups: &NodeCgroups, extra: &str) -> String {
    format!(
        "poll_interval = \"250ms\"\nnamespaces = \"node\"\n{extra}[detect]\nwindow = \"5s\"\n\
         [pods]\nsource = \"file\"\npath = \"{}\"\n{}",
        pods.display(),
        cgroups.config()
    )
}

/// A second pod on lab node `i` (the lab builds one): its own namespace, a veth into
/// `cni0`, address `10.244.i.5`.
fn second_pod(lab: &Lab, i: usize) -> NetNs {
    let pod = NetNs::new("wd-pod2");
    let node = lab.node(i).ns();
    node.ip(&[
        "link",
        "add",
        "vpod2",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        pod.name(),
    ]);
    node.ip(&[
        "link", "set", "vpod2", "master", "cni0", "mtu", "1450", "up",
    ]);
    pod.ip(&["link", "set", "eth0", "mtu", "1450", "up"]);
    pod.ip(&["addr", "add", &format!("10.244.{i}.5/24"), "dev", "eth0"]);
    pod.ip(&[
        "route",
        "add",
        "default",
        "via",
        &lab.node(i).gateway_ip().to_string(),
    ]);
    pod
}

/// A dead pod address on node 3 (its pod CIDR, no pod has it).
const DEAD: &str = "10.244.2.99";
/// Another one, for the pod of node 2.
const DEAD_TOO: &str = "10.244.2.98";

#[test]
fn a_pod_retrying_a_dead_pod_address_is_named_by_its_node_only() {
    if !require_root("a_pod_retrying_a_dead_pod_address_is_named_by_its_node_only") {
        return;
    }
    let lab = Lab::new(3);
    lab.check_pod_connectivity().expect("the lab works");
    let dir = TempDir::new("wd-pods");
    let pods = dir.path().join("pods.json");
    fs::write(&pods, POD_LIST).unwrap();
    // Each lab node's pods in its own part of the cgroup tree.
    let (node1, node2) = (NodeCgroups::new(), NodeCgroups::new());
    let mut daemon = confined(lab.node(0).ns(), &config(&pods, &node1, ""));
    daemon.wait_ready();

    // A pod on node 1 connecting to a live pod on node 2 all along: never a finding.
    let live = PodProcess::start(
        lab.node(0).pod_ns(),
        &node1,
        &cgroupfs_layout(DNS_UID),
        &lab.node(1).pod_ip().to_string(),
        watchdog_tests::lab::TCP_PORT,
    );
    // The pod of node 2 retries a dead address too: node 1's daemon must not report it.
    let _elsewhere = PodProcess::start(
        lab.node(1).pod_ns(),
        &node2,
        &systemd_layout("11111111-2222-4333-8444-555555555555"),
        DEAD_TOO,
        8080,
    );
    let web_ns = second_pod(&lab, 0);
    let started = Instant::now();
    let _web = PodProcess::start(&web_ns, &node1, &systemd_layout(WEB_UID), DEAD, 8080);
    let finding = daemon.wait_finding(
        "failing_tcp_destination",
        &format!("tcp {DEAD}:8080"),
        DEADLINE,
    );
    // How soon is `cargo xtask bench pods`' figure (dead endpoint → finding).
    let took = started.elapsed();
    eprintln!("failing_tcp_destination {DEAD} after {took:?}: {finding:#?}");
    assert_eq!(finding.evidence("client"), [WEB], "{finding:#?}");
    assert_eq!(
        finding.evidence("route"),
        ["10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink table main"]
    );
    assert_eq!(finding.evidence("established_in_window"), ["0"]);

    // The live pod kept connecting (its namespace is this node's: counted), and node 2's
    // pod has retried its dead address for two SYN retransmission timeouts by now...
    let metrics = poll_until(DEADLINE, "the live pod's established connects", || {
        let metrics = daemon.metrics();
        (started.elapsed() >= Duration::from_secs(3)
            && metrics.count(
                "watchdog_tcp_connects_total",
                &[
                    ("peer", &lab.node(1).pod_ip().to_string()),
                    ("port", "8080"),
                    ("outcome", "established"),
                ],
            ) >= 2)
            .then_some(metrics)
    });
    // ...but node 2's pod is not this node's (the tracepoints are global): with
    // namespaces = "node" nothing of it is counted.
    assert!(!metrics.0.contains(DEAD_TOO), "{}", metrics.0);
    // Neither is a finding of node 1's.
    let findings = daemon.findings();
    assert!(
        findings
            .iter()
            .all(|f| !f.subject.contains(DEAD_TOO) && !f.subject.contains("10.244.1.2")),
        "{findings:#?}"
    );
    drop(live);
    assert!(daemon.stop().success());
}

/// Without kernel BTF no namespace can be told apart: every namespace's connects are
/// counted together, so a failing destination is still named (from any namespace on the
/// kernel, this node's or not), with `client=unattributed`.
#[test]
fn without_btf_a_failing_destination_is_named_but_no_client() {
    if !require_root("without_btf_a_failing_destination_is_named_but_no_client") {
        return;
    }
    // Its daemon counts every namespace's connects, and every lab has the same addresses:
    // no other test runs meanwhile.
    let _alone = watchdog_tests::isolation::alone();
    let lab = Lab::new(3);
    let dir = TempDir::new("wd-pods");
    let pods = dir.path().join("pods.json");
    fs::write(&pods, POD_LIST).unwrap();
    let node1 = NodeCgroups::new();
    let mut daemon = confined(
        lab.node(0).ns(),
        &config(&pods, &node1, "btf_path = \"\"\n"),
    );
    daemon.wait_ready();
    let _web = PodProcess::start(
        lab.node(0).pod_ns(),
        &node1,
        &systemd_layout(WEB_UID),
        DEAD,
        8080,
    );
    let finding = daemon.wait_finding(
        "failing_tcp_destination",
        &format!("tcp {DEAD}:8080"),
        DEADLINE,
    );
    assert_eq!(finding.evidence("client"), ["unattributed"], "{finding:#?}");
    assert!(daemon.stop().success());
}

/// Pod names from the Kubernetes API: only this node's Pods are asked for (field selector
/// `spec.nodeName`), and the client is named from the recorded Pod the (fake) API server
/// serves.
#[test]
fn pods_are_named_from_the_api_with_this_nodes_pods_only() {
    if !require_root("pods_are_named_from_the_api_with_this_nodes_pods_only") {
        return;
    }
    let lab = Lab::new(3);
    let node1 = NodeCgroups::new();
    let dir = TempDir::new("wd-pods-api");
    let server = InNetns::start(lab.node(0).ns(), false);
    server.load_nodes(&lab.node_list());
    server.add_resource("/api/v1/pods", "PodList");
    let list: serde_json::Value = serde_json::from_str(POD_LIST).unwrap();
    for mut pod in list["items"].as_array().unwrap().clone() {
        pod["spec"]["nodeName"] = serde_json::json!(node_name(0));
        server.apply("/api/v1/pods", pod.clone());
        // A decoy on another node with the same UID, listed after it: served only if the
        // field selector were not asked for (the fake honours it as the API does).
        if pod["metadata"]["uid"] == WEB_UID {
            pod["metadata"]["name"] = serde_json::json!("web-decoy");
            pod["spec"]["nodeName"] = serde_json::json!(node_name(1));
            server.apply("/api/v1/pods", pod);
        }
    }
    let config = format!(
        "poll_interval = \"250ms\"\nnamespaces = \"node\"\n[detect]\nwindow = \"5s\"\n\
         [desired]\nsource = \"kubernetes\"\nkubeconfig = \"{}\"\nnode_name = \"{}\"\n\
         [pods]\nsource = \"kubernetes\"\n{}",
        server.kubeconfig(dir.path()).display(),
        node_name(0),
        node1.config()
    );
    let mut daemon = confined(lab.node(0).ns(), &config);
    daemon.wait_ready();
    let web_ns = second_pod(&lab, 0);
    let _web = PodProcess::start(&web_ns, &node1, &cgroupfs_layout(WEB_UID), DEAD, 8080);
    let finding = daemon.wait_finding(
        "failing_tcp_destination",
        &format!("tcp {DEAD}:8080"),
        DEADLINE,
    );
    assert_eq!(finding.evidence("client"), [WEB], "{finding:#?}");
    let selector = format!("fieldSelector=spec.nodeName%3D{}", node_name(0));
    let requests = server.requests();
    assert!(
        requests
            .iter()
            .filter(|r| r.contains("/api/v1/pods"))
            .all(|r| r.contains(&selector)),
        "{requests:#?}"
    );
    assert!(daemon.stop().success());
}

/// The recorded EndpointSlices: Service `default/web` lists 10.244.0.2 (the web pod),
/// [`GHOST`] (its replica `web-7f9c5d8b6-qk4zn`) and [`DEAD`] (a pod of node 3 gone);
/// `default/legacy-db` is a hand-written endpoint [`LEGACY`] (no targetRef).
const SLICES: &str = include_str!("../../../watchdog/tests/fixtures/pods/endpointslices.json");
const SLICES_PATH: &str = "/apis/discovery.k8s.io/v1/endpointslices";
const GHOST: &str = "10.244.0.9";
const LEGACY: &str = "10.244.0.50";
const REPLICA: &str = "web-7f9c5d8b6-qk4zn";

/// The recorded Pods, each on `node`, plus a second web replica at [`GHOST`] (the web
/// Pod's object with another name, UID and address).
fn pods_with_replica(node: &str) -> Vec<serde_json::Value> {
    let list: serde_json::Value = serde_json::from_str(POD_LIST).unwrap();
    let mut pods = list["items"].as_array().unwrap().clone();
    let mut replica = pods
        .iter()
        .find(|p| p["metadata"]["uid"] == WEB_UID)
        .unwrap()
        .clone();
    replica["metadata"]["name"] = serde_json::json!(REPLICA);
    replica["metadata"]["uid"] = serde_json::json!("5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9");
    replica["status"]["podIP"] = serde_json::json!(GHOST);
    replica["status"]["podIPs"] = serde_json::json!([{"ip": GHOST}]);
    pods.push(replica);
    for pod in &mut pods {
        pod["spec"]["nodeName"] = serde_json::json!(node);
    }
    pods
}

fn list_of(items: Vec<serde_json::Value>) -> serde_json::Value {
    serde_json::json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items})
}

/// Node 1's daemon (pod subnet 10.244.0.0/24 from the lab's Nodes) with Pods and
/// EndpointSlices from the fake API server (`api`) or from files: the hand-written
/// endpoint is a ghost from the start, the replica's endpoint only once its Pod is
/// deleted; endpoints of running pods and of another node's subnet never; a pod's
/// connects to the Service's dead endpoint on node 3 name the Service and the client.
fn ghost_endpoints(api: bool) {
    let lab = Lab::new(3);
    let node1 = NodeCgroups::new();
    let dir = TempDir::new("wd-ghost");
    let node = node_name(0);
    let pods = pods_with_replica(&node);
    let without_replica: Vec<_> = pods
        .iter()
        .filter(|p| p["metadata"]["name"] != REPLICA)
        .cloned()
        .collect();
    let pods_file = dir.path().join("pods.json");
    let server = api.then(|| InNetns::start(lab.node(0).ns(), false));
    let sources = match &server {
        Some(server) => {
            server.load_nodes(&lab.node_list());
            server.add_resource("/api/v1/pods", "PodList");
            for pod in &pods {
                server.apply("/api/v1/pods", pod.clone());
            }
            server.add_resource(SLICES_PATH, "EndpointSliceList");
            let slices: serde_json::Value = serde_json::from_str(SLICES).unwrap();
            for slice in slices["items"].as_array().unwrap() {
                server.apply(SLICES_PATH, slice.clone());
            }
            format!(
                "[desired]\nsource = \"kubernetes\"\nkubeconfig = \"{}\"\nnode_name = \"{node}\"\n\
                 [pods]\nsource = \"kubernetes\"\nendpoints = \"kubernetes\"\n",
                server.kubeconfig(dir.path()).display(),
            )
        }
        None => {
            let nodes = dir.path().join("nodes.json");
            write_node_list(&nodes, &lab.node_list());
            write_node_list(&pods_file, &list_of(pods.clone()));
            let slices = dir.path().join("slices.json");
            fs::write(&slices, SLICES).unwrap();
            format!(
                "[desired]\nsource = \"file\"\npath = \"{}\"\nnode_name = \"{node}\"\n\
                 [pods]\nsource = \"file\"\npath = \"{}\"\nendpoints = \"file\"\n\
                 endpoints_path = \"{}\"\n",
                nodes.display(),
                pods_file.display(),
                slices.display()
            )
        }
    };
    let config = format!(
        "poll_interval = \"250ms\"\nnamespaces = \"node\"\n[detect]\nwindow = \"5s\"\n{sources}{}",
        node1.config()
    );
    let mut daemon = confined(lab.node(0).ns(), &config);
    daemon.wait_ready();

    let legacy = daemon.wait_finding("ghost_endpoint", &format!("endpoint {LEGACY}"), DEADLINE);
    eprintln!("{legacy:#?}");
    assert_eq!(
        legacy.subject,
        format!("service default/legacy-db endpoint {LEGACY}")
    );
    assert_eq!(legacy.evidence("target"), ["none"]);
    assert_eq!(legacy.evidence("slice"), ["default/legacy-db-7tq2m"]);
    // Judged in the same cycles: the running replica's endpoint, the live pods' and the
    // one in node 3's subnet are no ghosts.
    let findings = daemon.findings();
    let ghosts: Vec<_> = findings
        .iter()
        .filter(|f| f.kind == "ghost_endpoint")
        .map(|f| f.subject.as_str())
        .collect();
    assert_eq!(ghosts, [legacy.subject.as_str()], "{findings:#?}");

    // The replica's Pod is deleted; its endpoint stays in the slice.
    match &server {
        Some(server) => server.delete("/api/v1/pods", &format!("default/{REPLICA}")),
        None => write_node_list(&pods_file, &list_of(without_replica)),
    }
    let ghost = daemon.wait_finding("ghost_endpoint", &format!("endpoint {GHOST}"), DEADLINE);
    eprintln!("{ghost:#?}");
    assert_eq!(
        ghost.subject,
        format!("service default/web endpoint {GHOST}")
    );
    assert_eq!(ghost.severity, "critical");
    assert_eq!(ghost.evidence("service"), ["default/web"]);
    assert_eq!(ghost.evidence("slice"), ["default/web-x8k2p"]);
    assert_eq!(
        ghost.evidence("target"),
        [format!("default/{REPLICA}").as_str()]
    );

    // A pod of this node connecting to the Service's endpoint on node 3 (no pod there).
    let web_ns = second_pod(&lab, 0);
    let _web = PodProcess::start(&web_ns, &node1, &cgroupfs_layout(WEB_UID), DEAD, 8080);
    let failing = daemon.wait_finding(
        "failing_tcp_destination",
        &format!("tcp {DEAD}:8080"),
        DEADLINE,
    );
    eprintln!("{failing:#?}");
    assert_eq!(failing.evidence("service"), ["default/web"], "{failing:#?}");
    assert_eq!(failing.evidence("client"), [WEB], "{failing:#?}");
    // The per-client metrics name the pod (one of at most pods.top_n + 1 clients).
    poll_until(
        DEADLINE,
        "the client pod's SYN retransmits on /metrics",
        || {
            (daemon.metrics().count(
                "watchdog_tcp_client_syn_retransmits_total",
                &[("client", WEB)],
            ) >= 2)
                .then_some(())
        },
    );
    // Node 3's subnet is node 3's daemon's to judge.
    assert!(
        daemon
            .findings()
            .iter()
            .all(|f| f.kind != "ghost_endpoint" || !f.subject.contains(DEAD)),
    );
    if let Some(server) = &server {
        let requests = server.requests();
        assert!(
            requests.iter().any(|r| r.contains(SLICES_PATH)),
            "{requests:#?}"
        );
    }
    assert!(daemon.stop().success());
}

#[test]
fn a_service_endpoint_at_a_deleted_pods_address_is_a_ghost_from_the_api() {
    if !require_root("a_service_endpoint_at_a_deleted_pods_address_is_a_ghost_from_the_api") {
        return;
    }
    ghost_endpoints(true);
}

#[test]
fn a_service_endpoint_at_a_deleted_pods_address_is_a_ghost_from_files() {
    if !require_root("a_service_endpoint_at_a_deleted_pods_address_is_a_ghost_from_files") {
        return;
    }
    ghost_endpoints(false);
}

/// Every cache from the API is bounded: with 100 000 endpoints in 1000 EndpointSlices
/// (what anyone who may create Services can make), the daemon keeps whole only the 100 in
/// this node's pod subnet and, to name Services, `pods.max_endpoints` (10 000) addresses;
/// the rest is counted, and its memory (peak included) stays within the DaemonSet's
/// memory limit (64 MiB; read from the manifest).
#[test]
fn a_hundred_thousand_endpoints_stay_within_the_daemonsets_memory_limit() {
    if !require_root("a_hundred_thousand_endpoints_stay_within_the_daemonsets_memory_limit") {
        return;
    }
    let limit_kib = watchdog_tests::memory::daemonset_memory_mib().1 * 1024;
    let ns = NetNs::new("wd-endpoints");
    let server = InNetns::start(&ns, false);
    let dir = TempDir::new("wd-endpoints");
    let node = "pi-austin-1";
    let mut own = serde_json::from_str::<serde_json::Value>(include_str!(
        "../../../watchdog/tests/fixtures/nodes/k3s-nodelist-api.json"
    ))
    .unwrap()["items"][0]
        .clone();
    own["metadata"]["name"] = serde_json::json!(node);
    own["spec"]["podCIDR"] = serde_json::json!("10.244.0.0/24");
    own["spec"]["podCIDRs"] = serde_json::json!(["10.244.0.0/24"]);
    server.apply("/api/v1/nodes", own);
    server.add_resource("/api/v1/pods", "PodList");
    server.add_resource(SLICES_PATH, "EndpointSliceList");
    for i in 0..1000usize {
        let endpoints: Vec<serde_json::Value> = (0..100usize)
            .map(|j| {
                // Slice 500 is this node's pods; the others are elsewhere in 10.0.0.0/8.
                let address = if i == 500 {
                    format!("10.244.0.{}", j + 1)
                } else {
                    format!("10.{}.{}.{}", 1 + i / 250, i % 250, j + 1)
                };
                serde_json::json!({"addresses": [address], "conditions": {"ready": true},
                                   "nodeName": if i == 500 { node } else { "elsewhere" }})
            })
            .collect();
        server.apply(
            SLICES_PATH,
            serde_json::json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": format!("svc-{i:04}-x1y2z"), "namespace": "default",
                             "labels": {"kubernetes.io/service-name": format!("svc-{i:04}")}},
                "addressType": "IPv4", "endpoints": endpoints,
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            }),
        );
    }
    let config = format!(
        "poll_interval = \"250ms\"\n[desired]\nsource = \"kubernetes\"\nkubeconfig = \"{}\"\n\
         node_name = \"{node}\"\n[pods]\nsource = \"kubernetes\"\nendpoints = \"kubernetes\"\n",
        server.kubeconfig(dir.path()).display()
    );
    let mut daemon = Daemon::start(&ns, &config);
    daemon.wait_ready();
    let metrics = poll_until(Duration::from_secs(60), "100 000 endpoints listed", || {
        let metrics = daemon.metrics();
        (metrics.value("watchdog_endpoints_tracked", &[("set", "named")]) == Some(10_000.0)
            && metrics.value("watchdog_endpoints_tracked", &[("set", "judged")]) == Some(100.0))
        .then_some(metrics)
    });
    assert!(
        metrics.value("watchdog_endpoints_untracked_total", &[("set", "named")]) >= Some(90_000.0),
        "{}",
        metrics.0
    );
    let status = fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap();
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{key} in {status}"))
    };
    let (rss, peak) = (kib("VmRSS:"), kib("VmHWM:"));
    eprintln!("100 000 endpoints: VmRSS {rss} KiB, VmHWM {peak} KiB");
    assert!(
        peak < limit_kib,
        "peak {peak} KiB over the DaemonSet's {limit_kib} KiB limit"
    );
    assert!(daemon.stop().success());
}
