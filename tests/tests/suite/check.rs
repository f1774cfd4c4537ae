//! `watchdog check` reads like a diagnosis: a real check in a lab node's namespace, on a
//! clean lab and on one whose FDB entry for a remote node points at a retired address
//! while traffic runs. Its stdout has the verdict first, then one block per finding, and no
//! ANSI codes unless stdout is a terminal (and `NO_COLOR` is unset); logs stay at `warn`
//! unless `-v`. `--json` keeps its schema (also covered by `scenarios.rs`).

use std::{
    net::UdpSocket,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use watchdog::{findings::Kind, sinks::text::next_step};
use watchdog_tests::{
    Daemon, TempDir, daemon_binary,
    lab::{
        Lab, MISSING_GATEWAY, RETIRED_VTEP, VXLAN_DEV,
        nodes::{node_name, write_node_list},
        vtep_mac,
    },
    repo::resolve_repository_url,
    require_root,
};

/// What one `watchdog check` printed.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// `watchdog check --window <window> <args…>` in `ns`, stdout and stderr pipes (not
/// terminals), `NODE_NAME=node-a`, RUST_LOG and NO_COLOR unset.
fn check(ns: &str, window: &str, args: &[&str]) -> Run {
    check_as("node-a", ns, window, args)
}

/// [`check`] as the Node named `node`.
fn check_as(node: &str, ns: &str, window: &str, args: &[&str]) -> Run {
    let output = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(daemon_binary())
        .args(["check", "--window", window])
        .args(args)
        .env("NODE_NAME", node)
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .output()
        .expect("run watchdog check");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The same on a pseudo-terminal (`script`), stdout and stderr merged, with `env` added.
fn check_on_a_terminal(ns: &str, env: &str) -> (Option<i32>, String) {
    let command = format!(
        "ip netns exec {ns} env -u RUST_LOG -u NO_COLOR NODE_NAME=node-a {env} {} check \
         --window 1s",
        daemon_binary().display()
    );
    let output = Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .output()
        .expect("run script (util-linux)");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).replace("\r\n", "\n"),
    )
}

/// SGR (colour) escape sequences in `text`: `ESC [ <digits;…> m`.
fn colour_codes(text: &str) -> usize {
    text.split('\x1b')
        .skip(1)
        .filter(|rest| {
            rest.strip_prefix('[').is_some_and(|rest| {
                let params = rest.trim_start_matches(|c: char| c.is_ascii_digit() || c == ';');
                params.starts_with('m')
            })
        })
        .count()
}

/// One finding's block, parsed back from the text.
#[derive(Debug)]
struct Block {
    severity: String,
    what: String,
    subject: String,
    /// (label, lines) in order.
    sections: Vec<(String, Vec<String>)>,
}

impl Block {
    fn section(&self, label: &str) -> &[String] {
        self.sections
            .iter()
            .find(|(l, _)| l == label)
            .map_or(&[][..], |(_, lines)| lines)
    }
}

/// Parses a report and checks its shape: the verdict (counting the blocks and the critical
/// ones), a blank line before each block, a header `<severity>  <what>: <subject>`, then
/// labelled sections in the order evidence?, routes?, next, runbook, continuation lines
/// indented under the first.
fn parse(text: &str) -> (String, Vec<Block>) {
    let mut lines = text.lines();
    let verdict = lines.next().expect("a verdict line").to_owned();
    let mut blocks: Vec<Block> = Vec::new();
    let mut expect_header = false;
    for line in lines {
        if line.is_empty() {
            expect_header = true;
            continue;
        }
        if expect_header {
            expect_header = false;
            let (severity, rest) = line
                .split_once("  ")
                .unwrap_or_else(|| panic!("block header `{line}`:\n{text}"));
            assert!(
                ["critical", "warning "].contains(&format!("{severity:<8}").as_str()),
                "severity `{severity}` in `{line}`:\n{text}"
            );
            let (what, subject) = rest
                .trim_start()
                .split_once(": ")
                .unwrap_or_else(|| panic!("`what: subject` in `{line}`:\n{text}"));
            blocks.push(Block {
                severity: severity.trim().to_owned(),
                what: what.to_owned(),
                subject: subject.to_owned(),
                sections: Vec::new(),
            });
            continue;
        }
        let block = blocks
            .last_mut()
            .unwrap_or_else(|| panic!("`{line}` outside a block:\n{text}"));
        let body = line
            .strip_prefix("  ")
            .unwrap_or_else(|| panic!("`{line}` is not indented:\n{text}"));
        let (label, value) = (&body[..9], &body[10..]);
        let label = label.trim();
        if label.is_empty() {
            block
                .sections
                .last_mut()
                .unwrap_or_else(|| panic!("continuation without a label: `{line}`"))
                .1
                .push(value.to_owned());
        } else {
            block
                .sections
                .push((label.to_owned(), vec![value.to_owned()]));
        }
    }
    assert!(!expect_header, "a trailing blank line:\n{text}");
    let critical = blocks.iter().filter(|b| b.severity == "critical").count();
    let expected = match (blocks.len(), critical) {
        (0, _) => "node-a: healthy".to_owned(),
        (n, c) => format!(
            "node-a: {n} problem{} ({})",
            if n == 1 { "" } else { "s" },
            if c == 0 {
                "none critical".to_owned()
            } else {
                format!("{c} critical")
            }
        ),
    };
    assert_eq!(verdict, expected, "{text}");
    for block in &blocks {
        let labels: Vec<&str> = block.sections.iter().map(|(l, _)| l.as_str()).collect();
        let order = ["evidence", "routes", "next", "runbook"];
        assert!(
            labels.ends_with(&["next", "runbook"])
                && labels.windows(2).all(|w| {
                    order.iter().position(|o| *o == w[0]) < order.iter().position(|o| *o == w[1])
                }),
            "sections {labels:?} of {block:?}"
        );
        let [url] = block.section("runbook") else {
            panic!("one runbook line: {block:?}");
        };
        resolve_repository_url(url).unwrap_or_else(|e| panic!("{e}\n{text}"));
    }
    (verdict, blocks)
}

#[test]
fn check_on_a_clean_lab_says_healthy() {
    if !require_root("check_on_a_clean_lab_says_healthy") {
        return;
    }
    let lab = Lab::new(3);
    lab.check_pod_connectivity().expect("the lab works");
    let _stream = lab.udp_stream(0, 1, 20);
    let ns = lab.node(0).ns().name();

    let run = check(ns, "2s", &[]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout, "node-a: healthy\n", "{run:?}");
    parse(&run.stdout);
    // Not a terminal: no escape codes anywhere, no progress line, logs only at warn.
    assert!(
        !run.stdout.contains('\x1b') && !run.stderr.contains('\x1b'),
        "{run:?}"
    );
    assert!(!run.stderr.contains("observing traffic"), "{run:?}");
    assert!(!run.stderr.contains("INFO"), "{run:?}");

    let verbose = check(ns, "1s", &["-v"]);
    assert_eq!(verbose.code, Some(0), "{verbose:?}");
    assert_eq!(verbose.stdout, "node-a: healthy\n", "{verbose:?}");
    assert!(verbose.stderr.contains("INFO"), "{verbose:?}");

    // On a terminal: colour, the progress line on stderr; NO_COLOR takes the colour away.
    let (code, shown) = check_on_a_terminal(ns, "");
    assert_eq!(code, Some(0), "{shown:?}");
    assert!(
        shown.contains("node-a: \x1b[1;32mhealthy\x1b[0m\n"),
        "{shown:?}"
    );
    assert!(shown.contains("observing traffic"), "{shown:?}");
    let (code, shown) = check_on_a_terminal(ns, "NO_COLOR=1");
    assert_eq!(code, Some(0), "{shown:?}");
    assert!(shown.contains("node-a: healthy\n"), "{shown:?}");
    assert_eq!(colour_codes(&shown), 0, "{shown:?}");
}

#[test]
fn check_on_a_faulty_lab_names_the_ghost_vtep_and_what_to_do() {
    if !require_root("check_on_a_faulty_lab_names_the_ghost_vtep_and_what_to_do") {
        return;
    }
    let lab = Lab::new(3);
    lab.check_pod_connectivity().expect("the lab works");
    let _healthy = lab.udp_stream(0, 1, 20);
    let _victim = lab.udp_stream(0, 2, 20);
    lab.repoint_fdb(0, 2, RETIRED_VTEP);
    let ns = lab.node(0).ns().name();

    let run = check(ns, "3s", &[]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        !run.stdout.contains('\x1b') && !run.stderr.contains('\x1b'),
        "{run:?}"
    );
    assert!(!run.stderr.contains("INFO"), "{run:?}");
    eprintln!("{}", run.stdout);
    let (verdict, blocks) = parse(&run.stdout);
    assert!(verdict.contains("critical)"), "{verdict}");
    let subject = format!("fdb {} dev {VXLAN_DEV} dst {RETIRED_VTEP}", vtep_mac(2));
    let stale = blocks
        .iter()
        .find(|b| b.subject == subject)
        .unwrap_or_else(|| panic!("no block for {subject}:\n{}", run.stdout));
    assert_eq!(stale.severity, "critical");
    assert_eq!(stale.what, "stale VXLAN FDB entry");
    assert!(
        stale
            .section("evidence")
            .iter()
            .any(|e| e.starts_with("problem: ") && e.ends_with("in the last 3s, none back")),
        "{stale:?}"
    );
    assert_eq!(
        stale.section("routes"),
        ["10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink table main"]
    );
    assert_eq!(stale.section("next"), [next_step(Kind::StaleFdb)]);
    assert!(stale.section("runbook")[0].ends_with("/docs/runbooks/stale_fdb.md"));
    // The healthy remote is not blamed.
    assert!(
        blocks.iter().all(|b| !b.subject.contains(&vtep_mac(1))),
        "{}",
        run.stdout
    );

    // --json on the same fault: the schema of /api/v1/findings, the same finding.
    let json = check(ns, "3s", &["--json"]);
    assert_eq!(json.code, Some(1), "{json:?}");
    let report: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON report");
    assert_eq!(report["schema"], "watchdog.findings/v1");
    assert_eq!(report["node"], "node-a");
    let finding = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["subject"] == subject.as_str())
        .unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(finding["kind"], "stale_fdb");
    assert_eq!(finding["severity"], "critical");
    assert!(finding["first_seen"].is_string() && finding["routes"].is_array());
}

/// How many `check` runs in a row each verdict must survive.
const RUNS: usize = 10;

/// What a `check` must say about the lab: healthy (exit 0, no finding), or a finding of
/// `kind` naming `subject` (exit 1).
#[derive(Clone, Copy, Debug)]
enum Verdict<'a> {
    Healthy,
    Names { kind: &'a str, subject: &'a str },
}

/// The configs each verdict is checked with: the embedded default, and the shipped
/// ConfigMap's config (deploy/kustomize/base/configmap.yaml) with its API sources made
/// files: the desired state from the lab's NodeList (the lab has no API server), pod names
/// and endpoints off.
fn configs(lab: &Lab, dir: &TempDir) -> Vec<(&'static str, Vec<String>)> {
    let nodes = dir.path().join("nodes.json");
    write_node_list(&nodes, &lab.node_list());
    let shipped = shipped_config()
        .replace(
            "[desired]\nsource = \"kubernetes\"\n",
            &format!(
                "[desired]\nsource = \"file\"\npath = \"{}\"\n",
                nodes.display()
            ),
        )
        .replace(
            "[pods]\nsource = \"kubernetes\"\n",
            "[pods]\nsource = \"none\"\n",
        )
        .replace("endpoints = \"kubernetes\"\n", "endpoints = \"none\"\n");
    assert!(!shipped.contains("\"kubernetes\""), "{shipped}");
    let path = dir.path().join("configmap.toml");
    std::fs::write(&path, shipped).unwrap();
    vec![
        ("the embedded default config", vec![]),
        (
            "the shipped ConfigMap's config",
            vec!["--config".into(), path.display().to_string()],
        ),
    ]
}

/// `config.toml` of the shipped ConfigMap: the block scalar under `config.toml: |`,
/// unindented.
fn shipped_config() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/kustomize/base/configmap.yaml"
    );
    let yaml = std::fs::read_to_string(path).unwrap();
    let mut lines = yaml.lines().skip_while(|l| l.trim() != "config.toml: |");
    assert!(lines.next().is_some(), "no `config.toml: |` in {path}");
    let body: Vec<&str> = lines
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .collect();
    let mut config = String::new();
    for line in body {
        config.push_str(line.strip_prefix("    ").unwrap_or(line));
        config.push('\n');
    }
    config
}

/// Runs `check --window 5s --json` [`RUNS`] times in a row with each of [`configs`] in
/// node 0's namespace (as `node-0`) and asserts every verdict; prints the tally.
fn every_run_says(lab: &Lab, what: &str, verdict: Verdict<'_>) {
    let dir = TempDir::new("check-runs");
    let mut wrong = Vec::new();
    for (config, args) in configs(lab, &dir) {
        let mut right = 0;
        for run in 1..=RUNS {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (code, findings) = check_json(lab, "5s", &args);
            let ok = match verdict {
                Verdict::Healthy => code == Some(0) && findings.is_empty(),
                Verdict::Names { kind, subject } => {
                    code == Some(1) && findings.iter().any(|(k, s)| k == kind && s == subject)
                }
            };
            if ok {
                right += 1;
            } else {
                wrong.push(format!(
                    "{what}, {config}, run {run}: exit {code:?}: {findings:?}"
                ));
            }
        }
        eprintln!("check on {what} with {config}: {right}/{RUNS} right");
    }
    assert!(wrong.is_empty(), "{verdict:?}:\n{}", wrong.join("\n"));
}

#[test]
fn check_names_a_ghost_vtep_every_time() {
    if !require_root("check_names_a_ghost_vtep_every_time") {
        return;
    }
    let lab = Lab::new(3);
    lab.check_pod_connectivity().expect("the lab works");
    let _healthy = lab.udp_stream(0, 1, 20);
    // Five packets a second through the ghost VTEP (the fastest a non-root `ping` sends):
    // the daemon names it within seconds; `check` once missed it whenever the window
    // started before the first packet was counted.
    let _victim = lab.udp_stream(0, 2, 5);
    lab.repoint_fdb(0, 2, RETIRED_VTEP);
    let subject = format!("fdb {} dev {VXLAN_DEV} dst {RETIRED_VTEP}", vtep_mac(2));
    every_run_says(
        &lab,
        "a ghost VTEP",
        Verdict::Names {
            kind: "stale_fdb",
            subject: &subject,
        },
    );
}

#[test]
fn check_names_a_ghost_gateway_every_time() {
    if !require_root("check_names_a_ghost_gateway_every_time") {
        return;
    }
    let lab = Lab::new(3);
    lab.check_pod_connectivity().expect("the lab works");
    let _healthy = lab.udp_stream(0, 1, 20);
    lab.route_via_missing_gateway(0, "10.55.0.0/24", MISSING_GATEWAY);
    // Pod 0 keeps sending towards the stale route (forwarded by node 0).
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            lab.node(0).pod_ns().run(|| {
                let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let _ = socket.send_to(b"stale", "10.55.0.5:9");
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        });
        let subject = format!("gateway {MISSING_GATEWAY} dev eth0");
        let verdicts = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            every_run_says(
                &lab,
                "a ghost gateway",
                Verdict::Names {
                    kind: "ghost_gateway",
                    subject: &subject,
                },
            )
        }));
        stop.store(true, Ordering::Relaxed);
        if let Err(panic) = verdicts {
            std::panic::resume_unwind(panic);
        }
    });
}

#[test]
fn check_says_healthy_every_time_on_a_healthy_lab() {
    if !require_root("check_says_healthy_every_time_on_a_healthy_lab") {
        return;
    }
    let lab = Lab::new(3);
    lab.check_pod_connectivity().expect("the lab works");
    let _one = lab.udp_stream(0, 1, 20);
    let _two = lab.udp_stream(0, 2, 20);
    every_run_says(&lab, "a healthy lab", Verdict::Healthy);
}

/// [`check_json`] with `--config <config>`.
fn check_findings(
    lab: &Lab,
    window: &str,
    config: &std::path::Path,
) -> (Option<i32>, Vec<(String, String)>) {
    let config = config.display().to_string();
    check_json(lab, window, &["--config", &config])
}

/// `check --window <window> --json <args…>` in node 0's namespace as `node-0`: the exit
/// code and the findings' (kind, subject).
fn check_json(lab: &Lab, window: &str, args: &[&str]) -> (Option<i32>, Vec<(String, String)>) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let run = check_as(&node_name(0), lab.node(0).ns().name(), window, &all);
    let report: serde_json::Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|err| panic!("{err}: {run:?}"));
    let findings = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_owned(),
                f["subject"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (run.code, findings)
}

/// The recorded EndpointSlices: Service `default/web` lists its pod 10.244.0.2, a replica
/// 10.244.0.9 and a pod of node 2; `default/legacy-db` a hand-written 10.244.0.50.
const SLICES: &str = include_str!("../../../watchdog/tests/fixtures/pods/endpointslices.json");
/// The recorded Pods (the web pod at 10.244.0.2, no replica).
const POD_LIST: &str = include_str!("../../../watchdog/tests/fixtures/pods/podlist.json");

#[test]
fn check_reports_a_ghost_endpoint_as_the_daemon_does() {
    if !require_root("check_reports_a_ghost_endpoint_as_the_daemon_does") {
        return;
    }
    let lab = Lab::new(3);
    let dir = TempDir::new("check-ghost");
    let nodes = dir.path().join("nodes.json");
    write_node_list(&nodes, &lab.node_list());
    // The recorded Pods, on node-0 (whose pod subnet is 10.244.0.0/24).
    let mut pods: serde_json::Value = serde_json::from_str(POD_LIST).unwrap();
    for pod in pods["items"].as_array_mut().unwrap() {
        pod["spec"]["nodeName"] = serde_json::json!(node_name(0));
    }
    let pods_file = dir.path().join("pods.json");
    write_node_list(&pods_file, &pods);
    let slices = dir.path().join("slices.json");
    std::fs::write(&slices, SLICES).unwrap();
    let config = dir.path().join("config.toml");
    let text = format!(
        "namespaces = \"node\"\n[desired]\nsource = \"file\"\npath = \"{}\"\nnode_name = \"node-0\"\n\
         [pods]\nsource = \"file\"\npath = \"{}\"\nendpoints = \"file\"\nendpoints_path = \"{}\"\n",
        nodes.display(),
        pods_file.display(),
        slices.display()
    );
    std::fs::write(&config, &text).unwrap();
    let expected = [
        "service default/legacy-db endpoint 10.244.0.50",
        "service default/web endpoint 10.244.0.9",
    ];

    let (code, findings) = check_findings(&lab, "5s", &config);
    let ghosts: Vec<&str> = findings
        .iter()
        .filter(|(kind, _)| kind == "ghost_endpoint")
        .map(|(_, subject)| subject.as_str())
        .collect();
    assert_eq!(code, Some(1), "{findings:?}");
    assert_eq!(ghosts, expected, "{findings:?}");

    // The daemon on the same files names the same ghosts.
    let mut daemon = Daemon::start(lab.node(0).ns(), &format!("{text}\n"));
    daemon.wait_ready();
    for subject in expected {
        daemon.wait_finding("ghost_endpoint", subject, Duration::from_secs(30));
    }
    let mut named: Vec<String> = daemon
        .findings()
        .into_iter()
        .filter(|f| f.kind == "ghost_endpoint")
        .map(|f| f.subject)
        .collect();
    named.sort();
    assert_eq!(named, expected);
    assert!(daemon.stop().success());
}

#[test]
fn flannel_1_missing_beside_flannel_v6_1_is_one_finding_the_device_is_missing() {
    if !require_root("flannel_1_missing_beside_flannel_v6_1_is_one_finding_the_device_is_missing") {
        return;
    }
    let lab = Lab::new(3);
    let dir = TempDir::new("check-v6");
    let nodes = dir.path().join("nodes.json");
    write_node_list(&nodes, &lab.node_list());
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[desired]\nsource = \"file\"\npath = \"{}\"\n",
            nodes.display()
        ),
    )
    .unwrap();
    // No flannel.1 (Flannel started before the IPv4 underlay was there), and dual-stack
    // Flannel's IPv6 device with the same VNI (the lab's namespaces have IPv6 off: it has
    // no local address, and the kernel takes it only once flannel.1 is gone).
    lab.ip_in(0, &["link", "del", VXLAN_DEV]);
    lab.ip_in(
        0,
        &[
            "link",
            "add",
            "flannel-v6.1",
            "type",
            "vxlan",
            "id",
            "1",
            "dev",
            "eth0",
            "dstport",
            "8472",
            "nolearning",
        ],
    );
    lab.ip_in(0, &["link", "set", "flannel-v6.1", "up"]);
    let (code, findings) = check_findings(&lab, "2s", &config);
    let drifts: Vec<&str> = findings
        .iter()
        .filter(|(kind, _)| kind == "overlay_drift")
        .map(|(_, subject)| subject.as_str())
        .collect();
    assert_eq!(code, Some(1), "{findings:?}");
    assert_eq!(drifts, ["dev flannel.1"], "{findings:?}");
}
