//! deploy/: manifests checked offline against Kubernetes schemas and against each other,
//! the shipped Prometheus rules checked by promtool and fired by a real Prometheus, the
//! metrics linted by promtool, and the Raspberry Pi binary run under qemu-user.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use watchdog_tests::{
    Daemon, NetNs, TempDir, daemon_binary,
    lab::Lab,
    poll_until,
    prometheus::Prometheus,
    repo::{BLOB_BASE, resolve_repository_url},
    require_root,
};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn base() -> PathBuf {
    deploy().join("kustomize/base")
}

/// Every document of a YAML file.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The resources the kustomization lists, as (file, document).
fn resources() -> Vec<(PathBuf, Value)> {
    let kustomization = &documents(&base().join("kustomization.yaml"))[0];
    kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| base().join(r.as_str().expect("resource path")))
        .flat_map(|path| {
            documents(&path)
                .into_iter()
                .map(move |doc| (path.clone(), doc))
        })
        .collect()
}

fn find<'a>(resources: &'a [(PathBuf, Value)], kind: &str) -> &'a Value {
    &resources
        .iter()
        .find(|(_, doc)| doc["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in the kustomization"))
        .1
}

fn run(command: &mut Command) -> (bool, String) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e} (cargo xtask setup installs it)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn manifests_pass_offline_kubernetes_schema_validation() {
    let files: Vec<PathBuf> = {
        let mut files: Vec<PathBuf> = resources().into_iter().map(|(path, _)| path).collect();
        files.dedup();
        files
    };
    let (ok, text) = run(Command::new("kubernetes-validate")
        .arg("--strict")
        .args(&files));
    assert!(ok, "{text}");
    assert!(text.contains("daemonset/watchdog"), "{text}");
    // The validator really rejects a wrong manifest.
    let dir = TempDir::new("watchdog-deploy");
    let broken = dir.path().join("daemonset.yaml");
    let daemonset = std::fs::read_to_string(base().join("daemonset.yaml")).unwrap();
    std::fs::write(&broken, daemonset.replace("hostNetwork:", "hostNetwrk:")).unwrap();
    let (ok, text) = run(Command::new("kubernetes-validate")
        .arg("--strict")
        .arg(&broken));
    assert!(!ok, "a misspelt field passed validation:\n{text}");
}

#[test]
fn manifests_agree_with_each_other_and_the_daemon() {
    let resources = resources();
    let daemonset = find(&resources, "DaemonSet");
    let pod = &daemonset["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(
        pod["tolerations"][0]["operator"], "Exists",
        "runs on tainted nodes"
    );
    let security = &container["securityContext"];
    assert_eq!(security["privileged"], false);
    let added: Vec<&str> = security["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    // Exactly these (README, Capabilities): no SYS_PTRACE, no SYS_ADMIN.
    assert_eq!(added, ["BPF", "PERFMON", "NET_ADMIN"]);
    assert_eq!(security["capabilities"]["drop"][0], "ALL");
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert!(
        pod.get("hostPID").is_none(),
        "pods are named from cgroups, not processes: no hostPID"
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    // The probes on the health listener, not on the port every scrape and API client uses.
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "health");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "health");
    let health_port = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|port| port["name"] == "health")
        .expect("a health port")["containerPort"]
        .clone();
    // Exactly these mounts, each the host's path or the ConfigMap, read-only but for the
    // journal.
    let volumes = pod["volumes"].as_array().unwrap();
    let mut mounts: Vec<(String, String, bool)> = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let volume = volumes
                .iter()
                .find(|v| v["name"] == m["name"])
                .unwrap_or_else(|| panic!("no volume for {m}"));
            let source = volume["hostPath"]["path"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| {
                    volume["configMap"]["name"]
                        .as_str()
                        .map(|c| format!("configMap {c}"))
                })
                .unwrap_or_else(|| panic!("{volume}"));
            (
                m["mountPath"].as_str().unwrap().to_owned(),
                source,
                m["readOnly"] == true,
            )
        })
        .collect();
    mounts.sort();
    let expected = [
        ("/etc/watchdog", "configMap watchdog", true),
        ("/host/cgroup", "/sys/fs/cgroup", true),
        ("/sys/kernel/tracing", "/sys/kernel/tracing", true),
        ("/var/lib/watchdog", "/var/lib/watchdog", false),
    ]
    .map(|(path, source, ro)| (path.to_owned(), source.to_owned(), ro));
    assert_eq!(mounts, expected);
    assert_eq!(volumes.len(), expected.len(), "{volumes:?}");
    // The repair journal's directory is the node's (a hostPath), writable, and where the
    // default `repair.journal` lives.
    let journal_mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/var/lib/watchdog")
        .unwrap();
    assert_ne!(journal_mount["readOnly"], true);
    let journal_volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == journal_mount["name"])
        .expect("the journal's volume");
    assert_eq!(journal_volume["hostPath"]["path"], "/var/lib/watchdog");
    assert!(
        watchdog::config::Config::default()
            .repair
            .journal
            .starts_with("/var/lib/watchdog")
    );
    // Pod Security: privileged enforced, baseline warned about and audited.
    let labels = &find(&resources, "Namespace")["metadata"]["labels"];
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "privileged");
    assert_eq!(labels["pod-security.kubernetes.io/warn"], "baseline");
    assert_eq!(labels["pod-security.kubernetes.io/audit"], "baseline");
    // Names that must match across objects.
    let account = find(&resources, "ServiceAccount");
    assert_eq!(pod["serviceAccountName"], account["metadata"]["name"]);
    let binding = find(&resources, "ClusterRoleBinding");
    assert_eq!(binding["subjects"][0]["name"], account["metadata"]["name"]);
    let pod_labels = &daemonset["spec"]["template"]["metadata"]["labels"];
    let service = find(&resources, "Service");
    for (key, value) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(
            &pod_labels[key], value,
            "the Service selects the DaemonSet's pods"
        );
    }
    let monitor = find(&resources, "ServiceMonitor");
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &service["metadata"]["labels"][key], value,
            "the ServiceMonitor selects the Service"
        );
    }
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        service["spec"]["ports"][0]["name"]
    );
    // RBAC: read-only, Nodes, Pods and EndpointSlices only.
    let role = find(&resources, "ClusterRole");
    let rules = role["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 3);
    assert_eq!(rules[0]["resources"][0], "nodes");
    assert_eq!(rules[1]["resources"][0], "pods");
    assert_eq!(rules[2]["apiGroups"][0], "discovery.k8s.io");
    assert_eq!(rules[2]["resources"][0], "endpointslices");
    for rule in rules {
        for verb in rule["verbs"].as_array().unwrap() {
            assert!(["get", "list", "watch"].contains(&verb.as_str().unwrap()));
        }
    }
    // The ConfigMap's config is one the daemon accepts, and it serves on the node.
    let configmap = find(&resources, "ConfigMap");
    let dir = TempDir::new("watchdog-deploy");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, configmap["data"]["config.toml"].as_str().unwrap()).unwrap();
    let (ok, text) = run(Command::new(daemon_binary())
        .args(["config", "check"])
        .arg(&config));
    assert!(ok, "{text}");
    assert!(text.contains("0.0.0.0:9477"), "{text}");
    // Pods are named from the host's cgroup tree where the DaemonSet mounts it.
    let parsed = watchdog::config::Config::load(Some(&config)).unwrap();
    assert_eq!(parsed.pods.cgroup_root, Path::new("/host/cgroup"));
    assert_eq!(
        parsed
            .health_listen
            .map(|addr| serde_json::json!(addr.port())),
        Some(health_port)
    );
}

#[test]
fn prometheus_rules_pass_promtool_and_match_the_prometheusrule() {
    let rules = deploy().join("prometheus/rules.yml");
    let (ok, text) = run(Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules));
    assert!(ok, "{text}");
    assert!(text.contains("SUCCESS: 14 rules found"), "{text}");
    let resources = resources();
    let embedded = &find(&resources, "PrometheusRule")["spec"]["groups"];
    assert_eq!(embedded, &documents(&rules)[0]["groups"]);
}

/// The rule logic of the cluster's verdict, by promtool's unit tests
/// (`deploy/prometheus/tests/cluster.test.yml`).
#[test]
fn the_cluster_rules_pass_their_promtool_unit_tests() {
    let (ok, text) = run(Command::new("promtool")
        .args(["test", "rules"])
        .arg(deploy().join("prometheus/tests/cluster.test.yml")));
    assert!(ok && text.contains("SUCCESS"), "{text}");
}

/// The shipped inhibit rules, in an otherwise minimal alertmanager.yml, pass amtool.
#[test]
fn the_alertmanager_inhibit_example_passes_amtool() {
    let dir = TempDir::new("watchdog-inhibit");
    let config = dir.path().join("alertmanager.yml");
    let inhibit = std::fs::read_to_string(deploy().join("alertmanager/inhibit.yml")).unwrap();
    std::fs::write(
        &config,
        format!("route:\n  receiver: \"null\"\nreceivers:\n  - name: \"null\"\n{inhibit}"),
    )
    .unwrap();
    let (ok, text) = run(Command::new("amtool").args(["check-config"]).arg(&config));
    assert!(ok && text.contains("2 inhibit rules"), "{text}");
}

#[test]
fn a_real_scrape_passes_promtool_check_metrics() {
    if !require_root("a_real_scrape_passes_promtool_check_metrics") {
        return;
    }
    let ns = NetNs::new("wd-promtool");
    let mut daemon = Daemon::start(&ns, "");
    daemon.wait_ready();
    let (status, body) = daemon.get("/metrics").unwrap();
    assert_eq!(status, 200);
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    std::io::Write::write_all(promtool.stdin.as_mut().unwrap(), body.as_bytes()).unwrap();
    let output = promtool.wait_with_output().unwrap();
    let lint = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && lint.trim().is_empty(),
        "{lint}\n{body}"
    );
}

#[test]
fn prometheus_fires_the_shipped_rule_on_an_injected_ghost() {
    if !require_root("prometheus_fires_the_shipped_rule_on_an_injected_ghost") {
        return;
    }
    let lab = Lab::new(3);
    let node = lab.node(0).ns();
    let mut daemon = Daemon::start(node, "");
    daemon.wait_ready();
    // The shipped rules, with `for:` shortened so the test takes seconds.
    let rules = std::fs::read_to_string(deploy().join("prometheus/rules.yml")).unwrap();
    let rules = rules
        .replace("for: 1m", "for: 0s")
        .replace("for: 10m", "for: 0s");
    let prometheus = Prometheus::start(
        node,
        &Prometheus::scrape_config("watchdog", "127.0.0.1:9477", "node: node-0", &["rules.yml"]),
        &[("rules.yml", &rules)],
    );
    let api = |path: &str| prometheus.api(path);
    // Prometheus scrapes the daemon before anything is wrong.
    prometheus.wait_scraped("watchdog");
    let firing = |result: &serde_json::Value| {
        result["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|alert| {
                alert["labels"]["alertname"] == "WatchdogCriticalFinding"
                    && alert["labels"]["kind"] == "vtep_collapse"
                    && alert["labels"]["node"] == "node-0"
                    && alert["state"] == "firing"
            })
    };
    assert!(
        !firing(&api("/api/v1/alerts").expect("alerts API")),
        "firing before the ghost"
    );
    lab.flush_fdb(0);
    let alerts = poll_until(
        Duration::from_secs(60),
        "WatchdogCriticalFinding to fire",
        || api("/api/v1/alerts").filter(firing),
    );
    // Its runbook_url names the kind's runbook, which exists.
    let alert = alerts["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|alert| alert["labels"]["kind"] == "vtep_collapse")
        .unwrap();
    let url = alert["annotations"]["runbook_url"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(
        url,
        format!("{BLOB_BASE}docs/runbooks/vtep_collapse.md"),
        "{alert}"
    );
    resolve_repository_url(url).unwrap();
}

#[test]
fn the_aarch64_binary_runs_under_qemu_user() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = "aarch64-unknown-linux-gnu";
    // The README's Raspberry Pi build command.
    let (ok, text) = run(watchdog_tests::cargo()
        .current_dir(&root)
        .args(["xtask", "build", "--target", target]));
    assert!(
        ok,
        "cargo xtask build --target {target} failed:
{text}"
    );
    let binary = root.join("target").join(target).join("release/watchdog");
    let qemu = |args: &[&str]| {
        run(Command::new("qemu-aarch64-static")
            .args(["-L", "/usr/aarch64-linux-gnu"])
            .arg(&binary)
            .args(args))
    };
    let (ok, text) = qemu(&["--version"]);
    assert!(ok, "{text}");
    assert_eq!(text.trim(), concat!("watchdog ", env!("CARGO_PKG_VERSION")));
    let (ok, text) = qemu(&["--help"]);
    assert!(ok && text.contains("check"), "{text}");
    let dir = TempDir::new("watchdog-qemu");
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "listen = \"0.0.0.0:9477\"\n").unwrap();
    let (ok, text) = qemu(&["config", "check", good.to_str().unwrap()]);
    assert!(ok && text.contains("valid"), "{text}");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "listen = 9477\n").unwrap();
    let (ok, text) = qemu(&["config", "check", bad.to_str().unwrap()]);
    assert!(!ok && text.contains("listen"), "{text}");
}

/// The DaemonSet runs under the container runtime's default seccomp profile (what that
/// allows is tested in image.rs, with the profiles the runtimes generate); the
/// localhost-seccomp overlay points it at the narrow profile, which it ships as a
/// Security Profiles Operator SeccompProfile rendered from `deploy/seccomp/watchdog.json`.
#[test]
fn the_daemonset_uses_the_runtime_default_and_the_overlay_the_narrow_profile() {
    let resources = resources();
    let daemonset = find(&resources, "DaemonSet");
    let container = &daemonset["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["securityContext"]["seccompProfile"],
        serde_json::json!({"type": "RuntimeDefault"})
    );

    let overlay = deploy().join("kustomize/localhost-seccomp");
    let kustomization = &documents(&overlay.join("kustomization.yaml"))[0];
    assert_eq!(
        kustomization["resources"],
        serde_json::json!(["../base", "seccompprofile.yaml"])
    );
    let patch_file = kustomization["patches"][0]["path"].as_str().unwrap();
    let patch = &documents(&overlay.join(patch_file))[0];
    assert_eq!(patch["kind"], "DaemonSet");
    assert_eq!(patch["metadata"]["name"], daemonset["metadata"]["name"]);
    let patched = &patch["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(patched["name"], container["name"]);
    let profile_ref = &patched["securityContext"]["seccompProfile"];
    assert_eq!(profile_ref["type"], "Localhost");

    let operator = &documents(&overlay.join("seccompprofile.yaml"))[0];
    assert_eq!(
        operator["apiVersion"],
        "security-profiles-operator.x-k8s.io/v1beta1"
    );
    assert_eq!(operator["kind"], "SeccompProfile");
    // The operator (v0.9.0 and later: cluster-scoped) writes it to operator/<name>.json.
    assert_eq!(
        profile_ref["localhostProfile"],
        format!(
            "operator/{}.json",
            operator["metadata"]["name"].as_str().unwrap()
        )
    );
    let text = std::fs::read_to_string(deploy().join("seccomp/watchdog.json")).unwrap();
    let profile: serde_json::Value = serde_json::from_str(&text).unwrap();
    for key in ["defaultAction", "architectures", "syscalls"] {
        assert_eq!(
            operator["spec"][key], profile[key],
            "{key}: run `cargo xtask seccomp` after editing deploy/seccomp/watchdog.json"
        );
    }
    // Narrow: everything not named is refused, and the daemon's two privileged calls are
    // named (the kernel still checks CAP_BPF and CAP_PERFMON).
    assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(
        profile["architectures"],
        serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"])
    );
    let allowed: Vec<&str> = profile["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|rule| rule["action"] == "SCMP_ACT_ALLOW")
        .flat_map(|rule| rule["names"].as_array().unwrap())
        .map(|name| name.as_str().unwrap())
        .collect();
    for needed in ["bpf", "perf_event_open"] {
        assert!(allowed.contains(&needed), "{needed} is not allowed");
    }
    for refused in [
        "mount",
        "ptrace",
        "kexec_load",
        "init_module",
        "setns",
        "unshare",
    ] {
        assert!(!allowed.contains(&refused), "{refused} is allowed");
    }
}

/// The DaemonSet's added capabilities, as the manifest names them (`BPF`, …).
fn daemonset_capabilities(daemonset: &Value) -> Vec<String> {
    daemonset["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|cap| cap.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_before_5_11_overlay_adds_sys_resource_and_nothing_else() {
    let (ok, text) = run(Command::new("kubectl")
        .arg("kustomize")
        .arg(deploy().join("kustomize/before-5.11")));
    assert!(ok, "{text}");
    let built: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    let overlay = built.iter().find(|doc| doc["kind"] == "DaemonSet").unwrap();
    let resources = resources();
    let mut expected = daemonset_capabilities(find(&resources, "DaemonSet"));
    expected.push("SYS_RESOURCE".into());
    assert_eq!(daemonset_capabilities(overlay), expected);
}

/// The systemd unit: accepted by `systemd-analyze verify` without a warning (an unknown
/// key or system call is only a warning there), and as tight as the DaemonSet: the
/// same capabilities (SYS_RESOURCE replaced by LimitMEMLOCK), no SYS_ADMIN, a system call
/// filter, the file system read-only but for the journal's directory.
#[test]
fn the_systemd_unit_verifies_and_is_as_tight_as_the_daemonset() {
    let unit = std::fs::read_to_string(deploy().join("systemd/watchdog.service")).unwrap();
    let values = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|line| line.strip_prefix(&format!("{key}=")))
            .flat_map(|value| value.split_whitespace().map(str::to_owned))
            .collect()
    };
    let resources = resources();
    let wanted: Vec<String> = daemonset_capabilities(find(&resources, "DaemonSet"))
        .iter()
        .map(|cap| format!("CAP_{cap}"))
        .collect();
    assert_eq!(values("CapabilityBoundingSet"), wanted);
    assert_eq!(values("AmbientCapabilities"), wanted);
    assert!(!unit.contains("CAP_SYS_ADMIN") && !unit.contains("CAP_SYS_PTRACE"));
    assert_eq!(values("LimitMEMLOCK"), ["infinity"]);
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelModules", "yes"),
        ("RestrictNamespaces", "yes"),
        ("SystemCallArchitectures", "native"),
        ("StateDirectory", "watchdog"),
    ] {
        assert_eq!(values(key), [value], "{key}");
    }
    let filter = values("SystemCallFilter");
    assert_eq!(filter[0], "@system-service", "{filter:?}");
    assert!(
        values("ReadWritePaths").is_empty(),
        "only the StateDirectory is writable"
    );
    assert!(
        watchdog::config::Config::default()
            .repair
            .journal
            .starts_with("/var/lib/watchdog")
    );
    // systemd-analyze checks the command exists: point it at the built daemon.
    let dir = TempDir::new("watchdog-unit");
    let copy = dir.path().join("watchdog.service");
    std::fs::write(
        &copy,
        unit.replace(
            "/usr/local/bin/watchdog",
            &daemon_binary().display().to_string(),
        ),
    )
    .unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze (systemd) runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.trim().is_empty(), "warnings: {stderr}");
}

/// The mtls overlay: the base's config with the `[http]` TLS keys added, naming files in
/// the Secret the DaemonSet mounts read-only; the ServiceMonitor scrapes https with a
/// client certificate; nothing else changes (capabilities, probes on the plain health
/// port). The scrape itself over mTLS by a real Prometheus: http.rs.
#[test]
fn the_mtls_overlay_requires_client_certificates_and_the_servicemonitor_presents_one() {
    let (ok, text) = run(Command::new("kubectl")
        .arg("kustomize")
        .arg(deploy().join("kustomize/mtls")));
    assert!(ok, "{text}");
    let built: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    let of = |kind: &str| built.iter().find(|doc| doc["kind"] == kind).unwrap();
    let resources = resources();

    let base_config = find(&resources, "ConfigMap")["data"]["config.toml"]
        .as_str()
        .unwrap();
    let config = of("ConfigMap")["data"]["config.toml"].as_str().unwrap();
    let added = config
        .strip_prefix(base_config)
        .expect("the overlay's config.toml starts with the base's, unchanged");
    let dir = TempDir::new("watchdog-deploy-mtls");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let parsed = watchdog::config::Config::load(Some(&path)).unwrap();
    let http = &parsed.http;
    for file in [
        &http.tls_cert_file,
        &http.tls_key_file,
        &http.client_ca_file,
    ] {
        assert!(
            file.starts_with("/etc/watchdog-tls"),
            "{file:?} outside the Secret's mount; added:\n{added}"
        );
    }

    let daemonset = of("DaemonSet");
    let pod = &daemonset["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/etc/watchdog-tls")
        .expect("the TLS Secret mounted");
    assert_eq!(mount["readOnly"], true);
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert_eq!(volume["secret"]["secretName"], "watchdog-tls");
    let base_set = find(&resources, "DaemonSet");
    assert_eq!(
        daemonset_capabilities(daemonset),
        daemonset_capabilities(base_set)
    );
    assert_eq!(
        pod["volumes"].as_array().unwrap().len(),
        base_set["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .len()
            + 1
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "health");

    let endpoint = &of("ServiceMonitor")["spec"]["endpoints"][0];
    assert_eq!(endpoint["scheme"], "https");
    let tls = &endpoint["tlsConfig"];
    assert_eq!(tls["serverName"], "watchdog");
    for secret in [
        &tls["ca"]["secret"],
        &tls["cert"]["secret"],
        &tls["keySecret"],
    ] {
        assert_eq!(secret["name"], "watchdog-scrape-tls", "{tls}");
    }
    assert_eq!(
        [
            &tls["ca"]["secret"]["key"],
            &tls["cert"]["secret"]["key"],
            &tls["keySecret"]["key"]
        ],
        ["ca.crt", "tls.crt", "tls.key"]
    );
}

/// Every figure before "MiB" in `text` (e.g. "25 MiB", "19.5 MiB"), as written.
fn mib_figures(text: &str) -> std::collections::BTreeSet<String> {
    let mut figures = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find(" MiB") {
        let number: String = rest[..at]
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if !number.is_empty() {
            figures.insert(number);
        }
        rest = &rest[at + 4..];
    }
    figures
}

/// The DaemonSet's memory request and limit come from the memory bench's record
/// (deploy/bench-memory.json, `cargo xtask bench memory --record`): the record's request is
/// what its rows give, the manifest's is within RECORD_DRIFT of it and above the steady
/// state, its limit at least the record's floor; docs/deploy.md and the manifest's comment
/// quote exactly these figures, and the other places that name the limit name the
/// manifest's. (CI's `bench memory --quick` fails when a fresh run grew past the record.)
#[test]
fn the_daemonsets_memory_comes_from_the_memory_bench() {
    use watchdog_tests::memory::{
        Figures, NODES_BUDGET_COUNT, PODS_BUDGET_COUNT, RECORD, RECORD_DRIFT, daemonset_memory_mib,
        limit_floor_mib, request_mib, steady_kib,
    };
    let root = watchdog_tests::repo::root();
    let text = std::fs::read_to_string(root.join(RECORD)).unwrap_or_else(|e| {
        panic!("{RECORD}: {e}: run `cargo xtask bench memory --on host --record`")
    });
    let record: Value = serde_json::from_str(&text).expect(RECORD);
    let rerecord = "re-run `cargo xtask bench memory --on host --record`";
    assert_eq!(
        record["settings"]["nodes"], NODES_BUDGET_COUNT,
        "{rerecord}"
    );
    assert_eq!(record["settings"]["pods"], PODS_BUDGET_COUNT, "{rerecord}");
    let row = |name: &str| {
        Figures::from_json(&record["rows"][name])
            .unwrap_or_else(|| panic!("{RECORD}: no row {name}: {rerecord}"))
    };
    let steady = steady_kib(&row("default"), &row("nodes"), &row("pods"));
    let peak = record["rows"]
        .as_object()
        .expect("rows")
        .values()
        .filter_map(|r| r["peak_kib"].as_u64())
        .max()
        .expect("peaks");
    assert_eq!(
        record["steady_kib"], steady,
        "{RECORD}: edited by hand? {rerecord}"
    );
    assert_eq!(
        record["peak_kib"], peak,
        "{RECORD}: edited by hand? {rerecord}"
    );
    assert_eq!(record["request_mib"], request_mib(steady), "{rerecord}");
    assert_eq!(
        record["limit_floor_mib"],
        limit_floor_mib(peak),
        "{rerecord}"
    );

    let (request, limit) = daemonset_memory_mib();
    let wanted = request_mib(steady);
    let drift = (wanted as f64 * RECORD_DRIFT).ceil() as u64;
    assert!(
        request.abs_diff(wanted) <= drift && request * 1024 > steady,
        "daemonset.yaml requests {request}Mi; {RECORD} gives {wanted}Mi (1.25 x the steady \
         state {steady} KiB; at most {drift}Mi apart): set requests.memory: {wanted}Mi"
    );
    assert!(
        limit >= limit_floor_mib(peak) && limit >= request,
        "daemonset.yaml limits {limit}Mi; {RECORD} wants at least {}Mi (2 x the highest peak \
         {peak} KiB)",
        limit_floor_mib(peak)
    );

    // The quotes: every MiB figure of the two texts is one of these, and each is quoted.
    let one = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
    let quoted: std::collections::BTreeSet<String> = [
        request.to_string(),
        limit.to_string(),
        one(steady),
        one(peak),
    ]
    .into();
    for path in ["docs/deploy.md", "deploy/kustomize/base/daemonset.yaml"] {
        let text = std::fs::read_to_string(root.join(path)).unwrap();
        let text = text.replace("Mi\n", " MiB\n");
        assert_eq!(
            mib_figures(&text),
            quoted,
            "{path}: the memory figures it quotes must be the DaemonSet's request and limit \
             and {RECORD}'s steady state and highest peak (MiB, one decimal)"
        );
    }
    for (path, phrase) in [
        ("docs/pods.md", format!("DaemonSet's {limit} MiB limit")),
        (
            "deploy/grafana/watchdog.json",
            format!("the DaemonSet's limit is {limit} MiB"),
        ),
    ] {
        let text = std::fs::read_to_string(root.join(path)).unwrap();
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(text.contains(&phrase), "{path}: should say \"{phrase}\"");
    }
}
