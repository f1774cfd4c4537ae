//! The container image, built by `cargo xtask image` and run the way the DaemonSet runs
//! it: in a lab node's network namespace (standing in for hostNetwork), with exactly the
//! DaemonSet's capabilities, mounts and read-only root, read from
//! `deploy/kustomize/base/daemonset.yaml` itself, under the seccomp profile each container
//! runtime would apply (`tests/fixtures/seccomp/`: the profiles the runtimes generate for
//! those capabilities). No `--privileged`. Also: the multi-arch archive `--save` writes,
//! imported by a real containerd (`ctr images import`) and loaded by podman; the manifest
//! list `--push` sends to a local registry; the arm64 image under qemu-user.
//!
//! Skip with `WATCHDOG_SKIP_IMAGE=1` (building both images takes a few minutes the first
//! time); not under CI, where a skip fails.

use std::{
    collections::BTreeSet,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output},
    sync::OnceLock,
    time::Duration,
};

use serde_json::Value;
use watchdog_tests::{
    Metrics, NetNs, TempDir, http_get, isolation, poll_until, require_root, skip_requested, traffic,
};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn skip(test: &str) -> bool {
    skip_requested("WATCHDOG_SKIP_IMAGE", test) || !require_root(test)
}

/// The manifest list this checkout's tests build: named after the checkout, so that
/// another checkout's tests on the same machine (one podman store) never retag it.
fn image_name() -> String {
    // FNV-1a of the checkout's path.
    let hash = root()
        .to_string_lossy()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("localhost/watchdog-test-{:08x}:{VERSION}", hash as u32)
}

/// What `cargo xtask image --save … --push …` produced, once per test process.
struct Built {
    /// The multi-arch OCI archive (`--save`).
    archive: PathBuf,
    /// The image index the local registry served after `--push`.
    pushed: Value,
}

/// Builds both images once per test process: `cargo xtask image` with `--save` into
/// `target/image-test/` and `--push` to a registry started for the occasion
/// (Debian's `docker-registry`, on 127.0.0.1, plain HTTP).
fn build() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let registry = Registry::start();
        let archive = root().join("target/image-test/watchdog.tar");
        let destination = format!("{}/watchdog:{VERSION}", registry.address);
        let status = watchdog_tests::cargo()
            .current_dir(root())
            .args(["xtask", "image", "--name", &image_name(), "--save"])
            .arg(&archive)
            .args(["--push", &destination, "--insecure"])
            .status()
            .expect("run cargo xtask image");
        assert!(status.success(), "cargo xtask image failed: {status}");
        let pushed = registry.index("watchdog", VERSION);
        Built { archive, pushed }
    })
}

/// A container registry (distribution 2.8, Debian's `docker-registry`) on a free local
/// port, its storage in a temporary directory; stopped on drop.
struct Registry {
    child: Child,
    address: SocketAddr,
    _dir: TempDir,
}

impl Registry {
    fn start() -> Self {
        let dir = TempDir::new("image-registry");
        let address = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {address}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry (cargo xtask setup installs it)");
        let registry = Self {
            child,
            address,
            _dir: dir,
        };
        poll_until(Duration::from_secs(20), "the registry to answer", || {
            http_get(address, "/v2/").filter(|(status, _)| *status == 200)
        });
        registry
    }

    /// The image index (manifest list) `repository:tag` names, as the registry serves it.
    fn index(&self, repository: &str, tag: &str) -> Value {
        let mut stream = TcpStream::connect(self.address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET /v2/{repository}/manifests/{tag} HTTP/1.0\r\nHost: {}\r\n\
             Accept: application/vnd.oci.image.index.v1+json\r\n\
             Accept: application/vnd.docker.distribution.manifest.list.v2+json\r\n\r\n",
            self.address
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{response}"
        );
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The architectures an image index lists.
fn architectures(index: &Value) -> BTreeSet<String> {
    index["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("no manifests: {index}"))
        .iter()
        .map(|m| {
            assert_eq!(m["platform"]["os"], "linux", "{m}");
            m["platform"]["architecture"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn both() -> BTreeSet<String> {
    ["amd64", "arm64"].map(String::from).into()
}
/// `--ulimit` arguments within what this machine allows (podman's defaults exceed it and
/// runc then fails to set them): this process's own open-file limit, 4096 processes.
fn ulimits() -> Vec<String> {
    let limit = |resource| {
        let mut value = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into a valid struct.
        assert_eq!(unsafe { libc::getrlimit(resource, &mut value) }, 0);
        format!("{}:{}", value.rlim_cur, value.rlim_max)
    };
    vec![
        "--ulimit".into(),
        format!("nofile={}", limit(libc::RLIMIT_NOFILE)),
        "--ulimit".into(),
        "nproc=4096:4096".into(),
    ]
}

/// `podman` with the options this machine needs (no systemd: cgroupfs; runc).
fn podman() -> Command {
    let mut command = Command::new("podman");
    command.args([
        "--runtime",
        "runc",
        "--cgroup-manager",
        "cgroupfs",
        "--events-backend",
        "file",
    ]);
    command
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The DaemonSet's `seccompProfile`.
#[derive(Debug, PartialEq)]
enum Seccomp {
    /// Whatever the container runtime applies by default: one of the fixtures.
    RuntimeDefault,
    /// A profile file of `deploy/seccomp/`.
    Localhost(PathBuf),
}

/// What the DaemonSet's container gets, as podman arguments.
struct PodSpec {
    caps: Vec<String>,
    read_only: bool,
    no_new_privileges: bool,
    seccomp: Seccomp,
    /// (host path, container path, read-only), hostPath volumes only.
    host_mounts: Vec<(String, String, bool)>,
    /// Stand-ins for `DirectoryOrCreate` hostPaths this host lacks (the repair journal's
    /// directory): the kubelet would create them on the node; the test does not write into
    /// this host's `/var/lib`, so it mounts a temporary directory instead.
    _created: Vec<TempDir>,
    config: String,
    config_mount: String,
}

fn daemonset() -> PodSpec {
    let base = root().join("deploy/kustomize/base");
    let daemonset: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(base.join("daemonset.yaml")).unwrap())
            .unwrap();
    let configmap: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(base.join("configmap.yaml")).unwrap())
            .unwrap();
    let pod = &daemonset["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["privileged"], false);
    assert_eq!(security["capabilities"]["drop"][0], "ALL");
    let caps = security["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    let seccomp = match security["seccompProfile"]["type"].as_str() {
        Some("RuntimeDefault") => Seccomp::RuntimeDefault,
        Some("Localhost") => {
            let name = security["seccompProfile"]["localhostProfile"]
                .as_str()
                .unwrap();
            let file = Path::new(name).file_name().unwrap();
            Seccomp::Localhost(root().join("deploy/seccomp").join(file))
        }
        other => panic!("seccompProfile {other:?}: the DaemonSet is never Unconfined"),
    };
    let volumes = pod["volumes"].as_array().unwrap();
    let mut host_mounts = Vec::new();
    let mut created = Vec::new();
    let mut config_mount = String::new();
    for mount in container["volumeMounts"].as_array().unwrap() {
        let name = mount["name"].as_str().unwrap();
        let path = mount["mountPath"].as_str().unwrap().to_owned();
        let read_only = mount["readOnly"].as_bool().unwrap_or(false);
        let volume = volumes.iter().find(|v| v["name"] == name).unwrap();
        if let Some(host) = volume["hostPath"]["path"].as_str() {
            if volume["hostPath"]["type"] == "DirectoryOrCreate" && !Path::new(host).exists() {
                let dir = TempDir::new(&format!("image-{name}"));
                host_mounts.push((dir.path().display().to_string(), path, read_only));
                created.push(dir);
                continue;
            }
            host_mounts.push((host.to_owned(), path, read_only));
        } else {
            assert!(volume["configMap"].is_object(), "volume {name}");
            config_mount = path;
        }
    }
    PodSpec {
        caps,
        read_only: security["readOnlyRootFilesystem"] == true,
        no_new_privileges: security["allowPrivilegeEscalation"] == false,
        seccomp,
        host_mounts,
        _created: created,
        config: without_api_server(configmap["data"]["config.toml"].as_str().unwrap()),
        config_mount,
    }
}

/// The ConfigMap's config with the desired state, pod names and endpoints off: the container's namespace has no
/// Kubernetes API server and no service account, and the daemon refuses to start on
/// `desired.source = "kubernetes"` without them (tests/tests/desired.rs and overlay.rs test
/// that source against the fake API server).
fn without_api_server(config: &str) -> String {
    let kubernetes = "[desired]\nsource = \"kubernetes\"\n";
    assert!(
        config.contains(kubernetes),
        "the ConfigMap's [desired] changed:\n{config}"
    );
    let pods = "[pods]\nsource = \"kubernetes\"\n";
    assert!(
        config.contains(pods),
        "the ConfigMap's [pods] changed:\n{config}"
    );
    let endpoints = "endpoints = \"kubernetes\"\n";
    assert!(
        config.contains(endpoints),
        "the ConfigMap's pods.endpoints changed:\n{config}"
    );
    config
        .replace(kubernetes, "[desired]\nsource = \"none\"\n")
        .replace(pods, "[pods]\nsource = \"none\"\n")
        .replace(endpoints, "endpoints = \"none\"\n")
}

/// A container started with `podman run -d`; removed on drop.
struct Container {
    name: String,
    _config: TempDir,
}

impl Container {
    /// `image` (the amd64 one) in `ns` with the DaemonSet's spec, under the seccomp
    /// profile `seccomp` (a file).
    fn start(ns: &NetNs, spec: &PodSpec, image: &str, seccomp: &Path) -> Self {
        let config = TempDir::new("image-config");
        std::fs::write(config.path().join("config.toml"), &spec.config).unwrap();
        let name = format!("wd-{}", ns.name());
        let mut command = podman();
        command
            .args([
                "run",
                "--detach",
                "--name",
                &name,
                "--log-driver",
                "k8s-file",
            ])
            .arg(format!("--network=ns:{}", ns.path().display()))
            .args(["--cap-drop", "ALL"])
            .args(ulimits())
            .args(["--env", "NODE_NAME=image-node", "--env", "RUST_LOG=info"])
            .args(["--user", "0"]);
        for cap in &spec.caps {
            command.args(["--cap-add", cap]);
        }
        if spec.read_only {
            command.arg("--read-only");
        }
        if spec.no_new_privileges {
            command.args(["--security-opt", "no-new-privileges"]);
        }
        command
            .arg("--security-opt")
            .arg(format!("seccomp={}", seccomp.display()));
        for (host, path, read_only) in &spec.host_mounts {
            let mode = if *read_only { ":ro" } else { "" };
            command.arg("--volume").arg(format!("{host}:{path}{mode}"));
        }
        command.arg("--volume").arg(format!(
            "{}:{}:ro",
            config.path().display(),
            spec.config_mount
        ));
        command
            .arg(image)
            .args(["run", "--config"])
            .arg(format!("{}/config.toml", spec.config_mount));
        let output = command.output().expect("run podman");
        if !output.status.success() {
            // A container that was created but did not start is left behind otherwise.
            let _ = podman().args(["rm", "--force", &name]).output();
            panic!("podman run: {}", text(&output));
        }
        Self {
            name,
            _config: config,
        }
    }

    fn logs(&self) -> String {
        text(&podman().args(["logs", &self.name]).output().unwrap())
    }

    /// The exit code once the container has stopped.
    fn exit_code(&self) -> Option<i64> {
        let output = podman()
            .args([
                "inspect",
                "--format",
                "{{.State.Running}} {{.State.ExitCode}}",
                &self.name,
            ])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&output.stdout).into_owned();
        let (running, code) = out.trim().split_once(' ')?;
        (running == "false").then(|| code.parse().ok()).flatten()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman()
            .args(["rm", "--force", "--time", "2", &self.name])
            .output();
    }
}

/// A runtime's default profile for the DaemonSet's capabilities (`tests/fixtures/seccomp`).
struct Fixture {
    file: PathBuf,
    runtime: String,
    /// "ready", or what the daemon reports when it cannot run under the profile.
    daemon: String,
}

fn fixtures_dir() -> PathBuf {
    root().join("tests/fixtures/seccomp")
}

/// The fixtures, after checking that they were generated for exactly the DaemonSet's
/// capabilities (runtimes build their default profile from the container's capabilities).
fn fixtures(spec: &PodSpec) -> Vec<Fixture> {
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures_dir().join("index.json")).unwrap())
            .unwrap();
    let generated_for: BTreeSet<&str> = index["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let daemonset: BTreeSet<String> = spec.caps.iter().map(|c| format!("CAP_{c}")).collect();
    assert_eq!(
        generated_for,
        daemonset.iter().map(String::as_str).collect(),
        "the DaemonSet's capabilities changed: regenerate tests/fixtures/seccomp (its README says how)"
    );
    index["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| Fixture {
            file: fixtures_dir().join(p["file"].as_str().unwrap()),
            runtime: p["runtime"].as_str().unwrap().to_owned(),
            daemon: p["daemon"].as_str().unwrap().to_owned(),
        })
        .collect()
}

/// The profile the DaemonSet's pods get where the DaemonSet says RuntimeDefault: the
/// default runtime of k3s and most clusters, containerd (≥ 1.6.9).
fn containerd_fixture() -> PathBuf {
    fixtures_dir().join("containerd-1.6.20-amd64.json")
}

fn amd64(image: &str) -> String {
    format!("{image}-amd64")
}

#[test]
fn the_amd64_image_runs_with_exactly_the_daemonsets_privileges() {
    if skip("the_amd64_image_runs_with_exactly_the_daemonsets_privileges") {
        return;
    }
    build();
    let spec = daemonset();
    let profile = match &spec.seccomp {
        Seccomp::RuntimeDefault => containerd_fixture(),
        Seccomp::Localhost(path) => path.clone(),
    };
    through_the_lab(&spec, &profile);
}

/// The overlay for runtimes whose default is not enough (`deploy/kustomize/localhost-seccomp`):
/// the narrow recorded profile lets the daemon do all it does in the lab.
#[test]
fn the_amd64_image_runs_under_the_narrow_profile_of_the_overlay() {
    if skip("the_amd64_image_runs_under_the_narrow_profile_of_the_overlay") {
        return;
    }
    build();
    let spec = daemonset();
    through_the_lab(&spec, &root().join("deploy/seccomp/watchdog.json"));
}

/// The image in a lab node with the DaemonSet's spec under `profile`: ready, drops counted
/// exactly, a ghost VTEP named, exit 0 on SIGTERM.
fn through_the_lab(spec: &PodSpec, profile: &Path) {
    // Alone: both containers get the whole machine's cgroup tree (the DaemonSet's mount of
    // the host's), and the test's scrapes connect from inside each container's namespace,
    // so each daemon takes the other's namespace for this node's and counts its burst (38
    // IP_NOPROTO for 19). One kernel is one node on a real cluster; two nodes on one
    // machine need a cgroup tree each, as causes:: gives its two daemons.
    let _alone = isolation::alone();
    let node = NetNs::new("wd-img");
    let remote = NetNs::new("wd-img-vtep");
    let container = Container::start(&node, spec, &amd64(&image_name()), profile);
    let listen = "127.0.0.1:9477".parse().unwrap();
    let get = |path: &str| node.run(|| http_get(listen, path));
    let ready = poll_until(Duration::from_secs(60), "the container to be ready", || {
        if let Some(code) = container.exit_code() {
            panic!("the container exited ({code}):\n{}", container.logs());
        }
        get("/readyz").filter(|(status, _)| *status == 200)
    });
    assert_eq!(ready.1, "ready\n", "{}", container.logs());
    // Counting: an exact burst of IP_NOPROTO drops in the node's namespace (a reason the
    // test's own HTTP requests cannot add to, unlike NO_SOCKET: a scrape's connection
    // torn down by the server can leave a late segment without a socket).
    node.run(|| traffic::ip_unknown_protocol(19));
    let metrics = poll_until(Duration::from_secs(20), "19 IP_NOPROTO drops", || {
        let metrics = Metrics(get("/metrics")?.1);
        (metrics.count("watchdog_kernel_drops_total", &[("reason", "IP_NOPROTO")]) >= 19)
            .then_some(metrics)
    });
    assert_eq!(
        metrics.count("watchdog_kernel_drops_total", &[("reason", "IP_NOPROTO")]),
        19,
        "{}",
        metrics.0
    );
    for probe in ["kfree_skb", "peers", "tcp"] {
        assert_eq!(
            metrics.value("watchdog_probe_up", &[("probe", probe)]),
            Some(1.0)
        );
    }

    // A ghost VTEP on a VXLAN pair between the node and another namespace.
    node.veth_to(&remote, ("wdu0", "10.98.0.1/24"), ("wdu1", "10.98.0.2/24"));
    node.ip(&[
        "link",
        "add",
        "wdx",
        "type",
        "vxlan",
        "id",
        "42",
        "local",
        "10.98.0.1",
        "dev",
        "wdu0",
        "dstport",
        "8472",
        "nolearning",
    ]);
    node.ip(&["link", "set", "wdx", "up"]);
    remote.ip(&[
        "link",
        "add",
        "wdx",
        "type",
        "vxlan",
        "id",
        "42",
        "local",
        "10.98.0.2",
        "dev",
        "wdu1",
        "dstport",
        "8472",
        "nolearning",
    ]);
    remote.ip(&["link", "set", "wdx", "up"]);
    node.bridge(&[
        "fdb",
        "append",
        "02:fa:00:00:00:99",
        "dev",
        "wdx",
        "dst",
        "10.55.0.99",
    ]);
    let ghost = "fdb 02:fa:00:00:00:99 dev wdx dst 10.55.0.99";
    poll_until(
        Duration::from_secs(30),
        "the ghost VTEP to be named",
        || {
            let (_, body) = get("/api/v1/findings")?;
            body.contains(ghost).then_some(())
        },
    );

    // Clean shutdown: SIGTERM from podman stop, exit 0.
    let output = podman()
        .args(["stop", "--time", "10", &container.name])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let code = poll_until(Duration::from_secs(15), "the container to stop", || {
        container.exit_code()
    });
    let logs = container.logs();
    assert_eq!(code, 0, "{logs}");
    assert!(logs.contains("shutting down: detaching probes"), "{logs}");
}

/// Each supported runtime's default profile, generated for the DaemonSet's capabilities,
/// does to the daemon what `tests/fixtures/seccomp/index.json` (and the README) says:
/// ready under containerd ≥ 1.6.9 and containers/common ≥ 0.68, stopped by a denied
/// `bpf` (containers/common < 0.60) or `perf_event_open` (0.60–0.67) otherwise.
#[test]
fn each_runtimes_default_profile_does_what_the_readme_says() {
    if skip("each_runtimes_default_profile_does_what_the_readme_says") {
        return;
    }
    build();
    let spec = daemonset();
    let fixtures = fixtures(&spec);
    assert!(fixtures.iter().any(|f| f.daemon == "ready"));
    assert!(fixtures.iter().any(|f| f.daemon != "ready"));
    let listen = "127.0.0.1:9477".parse().unwrap();
    for fixture in fixtures {
        let node = NetNs::new("wd-img-rt");
        let container = Container::start(&node, &spec, &amd64(&image_name()), &fixture.file);
        // Ready, exited, or up and saying why it is not ready.
        let outcome = poll_until(
            Duration::from_secs(60),
            &format!("the daemon under {}", fixture.runtime),
            || {
                if container.exit_code().is_some() {
                    return Some(container.logs());
                }
                match node.run(|| http_get(listen, "/readyz"))? {
                    (200, _) => Some("ready".to_owned()),
                    (_, body) if body.contains("failed") => Some(body),
                    _ => None,
                }
            },
        );
        if fixture.daemon == "ready" {
            assert_eq!(
                outcome,
                "ready",
                "{}: {}",
                fixture.runtime,
                container.logs()
            );
        } else {
            assert!(
                outcome.contains(&fixture.daemon),
                "{}: expected {:?}, got {outcome}",
                fixture.runtime,
                fixture.daemon
            );
        }
    }
}

/// A containerd (Debian's, 1.6.20) started for the test on its own socket, root and
/// state, without its CRI plugin; stopped on drop.
struct Containerd {
    child: Child,
    socket: PathBuf,
    dir: TempDir,
}

impl Containerd {
    fn start() -> Self {
        let dir = TempDir::new("image-containerd");
        let socket = dir.path().join("containerd.sock");
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{root}/root\"\nstate = \"{root}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{socket}\"\n[ttrpc]\n  address = \"{socket}.ttrpc\"\n\
                 [debug]\n  address = \"\"\n",
                root = dir.path().display(),
                socket = socket.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd (cargo xtask setup installs it)");
        let containerd = Self { child, socket, dir };
        poll_until(Duration::from_secs(30), "containerd to serve", || {
            containerd
                .ctr()
                .arg("version")
                .output()
                .ok()
                .filter(|o| o.status.success())
        });
        containerd
    }

    /// `ctr` on this containerd, in the namespace the kubelet's CRI uses.
    fn ctr(&self) -> Command {
        let mut command = Command::new("ctr");
        command
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", "k8s.io"]);
        command
    }

    /// Runs `ctr args`, panicking with its output unless it succeeds.
    fn run(&self, args: &[&str]) -> String {
        let output = self.ctr().args(args).output().unwrap();
        let out = text(&output);
        assert!(output.status.success(), "ctr {args:?}: {out}");
        out
    }

    /// The OCI spec containerd generates for container `id`.
    fn spec(&self, id: &str) -> Value {
        let info: Value = serde_json::from_str(&self.run(&["containers", "info", id])).unwrap();
        info["Spec"].clone()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("umount")
            .arg("--recursive")
            .arg("--quiet")
            .arg(self.dir.path())
            .status();
    }
}

/// The node without a registry: a real containerd imports the saved archive the way
/// `k3s ctr images import` does (the same `ctr`), names it as the DaemonSet does, lists
/// both architectures, generates for the DaemonSet's capabilities exactly the
/// RuntimeDefault profile of the fixture, and runs the image under that default with the
/// DaemonSet's capabilities, read-only root and mounts: ready, and stops on SIGTERM.
#[test]
fn containerd_imports_the_saved_archive_and_runs_it_under_its_own_runtime_default() {
    if skip("containerd_imports_the_saved_archive_and_runs_it_under_its_own_runtime_default") {
        return;
    }
    let built = build();
    let spec = daemonset();
    let containerd = Containerd::start();
    let name = image_name();
    let out = containerd.run(&["images", "import", built.archive.to_str().unwrap()]);
    assert!(out.contains(&name), "{out}");
    let listed = containerd.run(&["images", "list"]);
    let row = listed
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} not imported:\n{listed}"));
    assert!(row.contains("linux/amd64,linux/arm64"), "{row}");

    // The capabilities: ctr's defaults dropped one by one, the DaemonSet's added.
    let id = format!("wd-ctr-{}", std::process::id());
    containerd.run(&["containers", "create", &name, &id]);
    let defaults: Vec<String> = containerd.spec(&id)["process"]["capabilities"]["bounding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    containerd.run(&["containers", "delete", &id]);
    let wanted: Vec<String> = spec.caps.iter().map(|c| format!("CAP_{c}")).collect();
    let caps = |wanted: &[String]| -> Vec<String> {
        let mut args = Vec::new();
        for cap in &defaults {
            args.extend(["--cap-drop".to_owned(), cap.clone()]);
        }
        for cap in wanted {
            args.extend(["--cap-add".to_owned(), cap.clone()]);
        }
        args
    };

    // containerd's RuntimeDefault for exactly those capabilities is the fixture.
    let mut create = vec!["containers".to_owned(), "create".into(), "--seccomp".into()];
    create.extend(caps(&wanted));
    create.extend([name.clone(), id.clone()]);
    containerd.run(&create.iter().map(String::as_str).collect::<Vec<_>>());
    let generated = containerd.spec(&id);
    containerd.run(&["containers", "delete", &id]);
    let mut bounding: Vec<&str> = generated["process"]["capabilities"]["bounding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    bounding.sort_unstable();
    let mut expected: Vec<&str> = wanted.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(bounding, expected);
    let fixture: Value =
        serde_json::from_str(&std::fs::read_to_string(containerd_fixture()).unwrap()).unwrap();
    if generated["linux"]["seccomp"] != fixture {
        let fresh = root().join("target/image-test/containerd-generated.json");
        std::fs::write(
            &fresh,
            serde_json::to_string_pretty(&generated["linux"]["seccomp"]).unwrap(),
        )
        .unwrap();
        panic!(
            "containerd's RuntimeDefault for the DaemonSet's capabilities differs from {}: \
             it generated {} (tests/fixtures/seccomp/README.md)",
            containerd_fixture().display(),
            fresh.display()
        );
    }

    // Run it so, with exactly those capabilities.
    let node = NetNs::new("wd-img-ctr");
    let config = TempDir::new("image-ctr-config");
    std::fs::write(config.path().join("config.toml"), &spec.config).unwrap();
    let log = config.path().join("daemon.log");
    let mut run = vec!["run".to_owned(), "--detach".into(), "--seccomp".into()];
    run.extend(caps(&wanted));
    if spec.read_only {
        run.push("--read-only".into());
    }
    assert!(
        spec.no_new_privileges,
        "ctr sets no_new_privileges unless --allow-new-privs"
    );
    run.push("--with-ns".into());
    run.push(format!("network:{}", node.path().display()));
    let mut mounts = spec.host_mounts.clone();
    mounts.push((
        config.path().display().to_string(),
        spec.config_mount.clone(),
        true,
    ));
    for (host, path, read_only) in &mounts {
        let mode = if *read_only { "ro" } else { "rw" };
        run.push("--mount".into());
        run.push(format!(
            "type=bind,src={host},dst={path},options=rbind:{mode}"
        ));
    }
    run.extend(["--env".into(), "NODE_NAME=image-node".into()]);
    run.extend(["--env".into(), "RUST_LOG=info".into()]);
    run.push(format!("--log-uri=file://{}", log.display()));
    run.extend([name.clone(), id.clone()]);
    run.extend([
        "/usr/local/bin/watchdog".into(),
        "run".into(),
        "--config".into(),
        format!("{}/config.toml", spec.config_mount),
    ]);
    containerd.run(&run.iter().map(String::as_str).collect::<Vec<_>>());
    let stopped = || -> Option<String> {
        let tasks = containerd.run(&["tasks", "list"]);
        let row = tasks.lines().find(|l| l.starts_with(&id))?.to_owned();
        row.contains("STOPPED").then_some(row)
    };
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let listen = "127.0.0.1:9477".parse().unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        poll_until(Duration::from_secs(60), "the task to be ready", || {
            if let Some(row) = stopped() {
                panic!("the task stopped ({row}):\n{}", logs());
            }
            node.run(|| http_get(listen, "/readyz"))
                .filter(|(status, _)| *status == 200)
        });
        containerd.run(&["tasks", "kill", "--signal", "SIGTERM", &id]);
        poll_until(Duration::from_secs(15), "the task to stop", stopped);
        assert!(
            logs().contains("shutting down: detaching probes"),
            "{}",
            logs()
        );
    }));
    // Whatever happened: no task, no container left behind (`tasks delete --force` kills).
    let _ = containerd
        .ctr()
        .args(["tasks", "delete", "--force", &id])
        .output();
    let _ = containerd
        .ctr()
        .args(["containers", "delete", &id])
        .output();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// The saved archive is an OCI image layout whose index names the image as the
/// DaemonSet does and lists both architectures; podman loads it (into a store of its own).
#[test]
fn podman_loads_the_saved_archive_which_lists_both_architectures() {
    if skip("podman_loads_the_saved_archive_which_lists_both_architectures") {
        return;
    }
    let built = build();
    let name = image_name();
    let member = |path: &str| -> String {
        let output = Command::new("tar")
            .arg("-xOf")
            .arg(&built.archive)
            .arg(path)
            .output()
            .unwrap();
        assert!(output.status.success(), "{path}: {}", text(&output));
        String::from_utf8(output.stdout).unwrap()
    };
    assert!(member("oci-layout").contains("imageLayoutVersion"));
    let top: Value = serde_json::from_str(&member("index.json")).unwrap();
    let entry = top["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == name.as_str())
        .unwrap_or_else(|| panic!("no {name} in {top}"));
    let digest = entry["digest"].as_str().unwrap().replace(':', "/");
    let index: Value = serde_json::from_str(&member(&format!("blobs/{digest}"))).unwrap();
    assert_eq!(architectures(&index), both(), "{index}");

    let store = TempDir::new("image-load");
    let podman_in_store = || {
        let mut command = podman();
        command
            .arg("--root")
            .arg(store.path().join("root"))
            .arg("--runroot")
            .arg(store.path().join("run"))
            .args(["--storage-driver", "vfs"]);
        command
    };
    let output = podman_in_store()
        .arg("load")
        .arg("--input")
        .arg(&built.archive)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let output = podman_in_store()
        .args([
            "image",
            "inspect",
            "--format",
            "{{.Architecture}} {{.RepoTags}}",
        ])
        .arg(&name)
        .output()
        .unwrap();
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    assert!(out.starts_with("amd64 "), "{out}");
    assert!(out.contains(&name), "{out}");
}

/// `--push` sent the manifest list and both images to the (local) registry.
#[test]
fn the_pushed_manifest_list_names_both_architectures() {
    if skip("the_pushed_manifest_list_names_both_architectures") {
        return;
    }
    let pushed = &build().pushed;
    assert_eq!(architectures(pushed), both(), "{pushed}");
}

#[test]
fn the_arm64_image_starts_under_qemu_user() {
    if skip("the_arm64_image_starts_under_qemu_user") {
        return;
    }
    build();
    let output = podman()
        .args([
            "run",
            "--rm",
            "--platform",
            "linux/arm64",
            "--network",
            "none",
        ])
        .args(ulimits())
        // This machine registers no binfmt handler (and the test does not change the
        // kernel's): qemu-user, a static x86_64 binary, is mounted in and starts the
        // image's own arm64 binary with the image's own loader and libraries.
        .args(["--volume", "/usr/bin/qemu-aarch64-static:/qemu-aarch64:ro"])
        .args(["--entrypoint", "/qemu-aarch64"])
        .arg(format!("{}-arm64", image_name()))
        .args(["/usr/local/bin/watchdog", "--version"])
        .output()
        .expect("run podman");
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    assert!(out.contains(VERSION), "{out}");
    let arch = podman()
        .args(["image", "inspect", "--format", "{{.Architecture}}"])
        .arg(format!("{}-arm64", image_name()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&arch.stdout).trim(), "arm64");
}
