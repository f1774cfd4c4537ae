//! The container image, built by `cargo xtask image` and run with podman the way the
//! DaemonSet runs it: in a lab node's network namespace (standing in for hostNetwork),
//! with exactly the DaemonSet's capabilities, mounts, read-only root and seccomp profile,
//! read from `deploy/kustomize/base/daemonset.yaml` itself. No `--privileged`.
//!
//! Skip with `WATCHDOG_SKIP_IMAGE=1` (building both images takes a few minutes the first
//! time); not under CI, where a skip fails.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{Mutex, OnceLock},
    time::Duration,
};

use serde_json::Value;
use watchdog_tests::{
    Metrics, NetNs, TempDir, http_get, poll_until, require_root, skip_requested, traffic,
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

/// Builds both images once per test process.
fn build_images() {
    static BUILT: OnceLock<()> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    BUILT.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(root())
            .args(["xtask", "image"])
            .status()
            .expect("run cargo xtask image");
        assert!(status.success(), "cargo xtask image failed: {status}");
    });
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

/// What the DaemonSet's container gets, as podman arguments.
struct PodSpec {
    caps: Vec<String>,
    read_only: bool,
    no_new_privileges: bool,
    seccomp: Option<PathBuf>,
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
        Some("Localhost") => {
            let name = security["seccompProfile"]["localhostProfile"]
                .as_str()
                .unwrap();
            let file = Path::new(name).file_name().unwrap();
            Some(root().join("deploy/seccomp").join(file))
        }
        Some("Unconfined") => None,
        other => panic!("seccompProfile {other:?}"),
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
    /// The amd64 image in `ns` with the DaemonSet's spec; `seccomp` overrides its profile.
    fn start(ns: &NetNs, spec: &PodSpec, seccomp: Option<&str>) -> Self {
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
        let profile = match (seccomp, &spec.seccomp) {
            (Some(given), _) => given.to_owned(),
            (None, Some(path)) => path.display().to_string(),
            (None, None) => "unconfined".to_owned(),
        };
        command
            .arg("--security-opt")
            .arg(format!("seccomp={profile}"));
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
            .arg(format!("localhost/watchdog:{VERSION}-amd64"))
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

#[test]
fn the_amd64_image_runs_with_exactly_the_daemonsets_privileges() {
    if skip("the_amd64_image_runs_with_exactly_the_daemonsets_privileges") {
        return;
    }
    build_images();
    let spec = daemonset();
    assert!(
        spec.seccomp.is_some(),
        "the DaemonSet declares a Localhost profile"
    );
    let node = NetNs::new("wd-img");
    let remote = NetNs::new("wd-img-vtep");
    let container = Container::start(&node, &spec, None);
    let listen = "127.0.0.1:9477".parse().unwrap();
    let get = |path: &str| node.run(|| http_get(listen, path));
    let ready = poll_until(Duration::from_secs(60), "the container to be ready", || {
        if let Some(code) = container.exit_code() {
            panic!("the container exited ({code}):\n{}", container.logs());
        }
        get("/readyz").filter(|(status, _)| *status == 200)
    });
    assert_eq!(ready.1, "ready\n", "{}", container.logs());

    // Counting: an exact burst of NO_SOCKET drops in the node's namespace.
    node.run(|| traffic::udp_to_closed_port(19, false));
    let metrics = poll_until(Duration::from_secs(20), "19 NO_SOCKET drops", || {
        let metrics = Metrics(get("/metrics")?.1);
        (metrics.count("watchdog_kernel_drops_total", &[("reason", "NO_SOCKET")]) >= 19)
            .then_some(metrics)
    });
    assert_eq!(
        metrics.count("watchdog_kernel_drops_total", &[("reason", "NO_SOCKET")]),
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

#[test]
fn under_the_runtime_default_seccomp_profile_the_daemon_cannot_load() {
    if skip("under_the_runtime_default_seccomp_profile_the_daemon_cannot_load") {
        return;
    }
    build_images();
    let spec = daemonset();
    let node = NetNs::new("wd-img-default");
    // podman's built-in default: the RuntimeDefault a kubelet with --seccomp-default applies.
    let container = Container::start(&node, &spec, Some("/usr/share/containers/seccomp.json"));
    let code = poll_until(Duration::from_secs(60), "the daemon to give up", || {
        container.exit_code()
    });
    let logs = container.logs();
    assert_ne!(code, 0, "{logs}");
    assert!(logs.contains("Operation not permitted"), "{logs}");
}

#[test]
fn the_arm64_image_starts_under_qemu_user() {
    if skip("the_arm64_image_starts_under_qemu_user") {
        return;
    }
    build_images();
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
        .arg(format!("localhost/watchdog:{VERSION}-arm64"))
        .args(["/usr/local/bin/watchdog", "--version"])
        .output()
        .expect("run podman");
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    assert!(out.contains(VERSION), "{out}");
    let arch = podman()
        .args(["image", "inspect", "--format", "{{.Architecture}}"])
        .arg(format!("localhost/watchdog:{VERSION}-arm64"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&arch.stdout).trim(), "arm64");
}
