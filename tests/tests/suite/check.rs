//! `watchdog check` reads like a diagnosis: a real check in a lab node's namespace, on a
//! clean lab and on one whose FDB entry for a remote node points at a retired address
//! while traffic runs. Its stdout has the verdict first, then one block per finding, and no
//! ANSI codes unless stdout is a terminal (and `NO_COLOR` is unset); logs stay at `warn`
//! unless `-v`. `--json` keeps its schema (also covered by `scenarios.rs`).

use std::process::Command;

use watchdog::{findings::Kind, sinks::text::next_step};
use watchdog_tests::{
    daemon_binary,
    lab::{Lab, RETIRED_VTEP, VXLAN_DEV, vtep_mac},
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
    let output = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(daemon_binary())
        .args(["check", "--window", window])
        .args(args)
        .env("NODE_NAME", "node-a")
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
