//! The command line: clear errors for bad input, readiness, a clean shutdown and restart.

use std::{net::TcpListener, process::Command, time::Duration};

use watchdog_tests::{
    Daemon, NetNs, TempDir, bpf_programs_of, daemon_binary, poll_until, require_root, run_watchdog,
};

fn run_with_config(name: &str, text: &str) -> (i32, String) {
    let dir = TempDir::new("watchdog-cli");
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    let (code, _, stderr) = run_watchdog(&["run", "--config", path.to_str().unwrap()]);
    (code, stderr)
}

#[test]
fn version_and_help_document_the_options() {
    let (code, stdout, _) = run_watchdog(&["--version"]);
    assert_eq!(
        (code, stdout.trim()),
        (0, concat!("watchdog ", env!("CARGO_PKG_VERSION")))
    );
    let (code, stdout, _) = run_watchdog(&["run", "--help"]);
    assert_eq!(code, 0);
    for option in [
        "--config <FILE>",
        "--listen <ADDR:PORT>",
        "127.0.0.1:9477",
        "CAP_BPF",
    ] {
        assert!(
            stdout.contains(option),
            "run --help lacks {option}:\n{stdout}"
        );
    }
    let (code, stdout, _) = run_watchdog(&["config", "default"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("listen = \"127.0.0.1:9477\""), "{stdout}");
}

#[test]
fn bad_config_is_one_clear_error_and_nothing_attached() {
    let (code, stderr) = run_with_config("c.toml", "listen = 5\n");
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("c.toml") && stderr.contains("listen"),
        "{stderr}"
    );
    assert!(!stderr.contains("attached"), "{stderr}");

    let (code, stderr) = run_with_config("c.toml", "[probes]\nkfree_skbs = true\n");
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("unknown field `kfree_skbs`"), "{stderr}");
    assert!(stderr.contains("expected one of `kfree_skb`"), "{stderr}");

    let (code, stderr) = run_with_config("c.yaml", "namespaces: mine\n");
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("namespaces") && stderr.contains("`own`"),
        "{stderr}"
    );

    let (code, _, stderr) = run_watchdog(&["run", "--config", "/nonexistent/watchdog.toml"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("cannot read config file /nonexistent/watchdog.toml"),
        "{stderr}"
    );
}

#[test]
fn bad_listen_address_is_a_usage_error() {
    let (code, _, stderr) = run_watchdog(&["run", "--listen", "localhost"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--listen <ADDR:PORT>"), "{stderr}");
    assert!(stderr.contains("invalid socket address"), "{stderr}");
}

#[test]
fn port_in_use_is_a_clear_error_before_anything_attaches() {
    if !require_root("port_in_use_is_a_clear_error_before_anything_attaches") {
        return;
    }
    let ns = NetNs::new("wd-port");
    let _taken: TcpListener = ns.run(|| TcpListener::bind("127.0.0.1:9477").unwrap());
    let mut daemon = Daemon::start(&ns, "");
    let status = poll_until(Duration::from_secs(20), "the daemon to exit", || {
        daemon.try_exit()
    });
    assert_eq!(status.code(), Some(1));
    let log = daemon.log();
    assert!(log.contains("cannot listen on 127.0.0.1:9477"), "{log}");
    assert!(log.contains("is another watchdog running?"), "{log}");
    assert!(!log.contains("attached"), "{log}");
}

#[test]
fn without_capabilities_names_the_missing_ones() {
    if !require_root("without_capabilities_names_the_missing_ones") {
        return;
    }
    let output = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(daemon_binary())
        .args(["run", "--listen", "127.0.0.1:0"])
        .output()
        .expect("run setpriv");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("missing capabilities: CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn readyz_is_503_with_the_reason_when_a_probe_cannot_attach() {
    if !require_root("readyz_is_503_with_the_reason_when_a_probe_cannot_attach") {
        return;
    }
    let ns = NetNs::new("wd-unready");
    let mut daemon = Daemon::start(&ns, "tracefs_path = \"/nonexistent/tracing\"\n");
    daemon.wait_serving();
    // Until the probes are set up /readyz says so; then it names the failed probe.
    let (status, body) = poll_until(Duration::from_secs(20), "/readyz to name the probe", || {
        daemon
            .get("/readyz")
            .filter(|(_, body)| body.contains("probe kfree_skb failed"))
    });
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("tracefs"), "{body}");
    assert_eq!(daemon.get("/healthz"), Some((200, "ok\n".into())));
    let metrics = daemon.metrics();
    assert_eq!(
        metrics.value("watchdog_probe_up", &[("probe", "kfree_skb")]),
        Some(0.0)
    );
}

/// Configured interfaces that do not exist: not ready (the body and the log name them)
/// until one appears, and again once it is gone.
#[test]
fn readyz_is_503_while_none_of_the_configured_interfaces_exists() {
    if !require_root("readyz_is_503_while_none_of_the_configured_interfaces_exists") {
        return;
    }
    let ns = NetNs::new("wd-noiface");
    let mut daemon = Daemon::start(
        &ns,
        "poll_interval = \"100ms\"\n[peers]\ninterfaces = [\"nosuch0\", \"late0\"]\n",
    );
    daemon.wait_serving();
    let missing = "none of the configured interfaces exists: nosuch0, late0";
    let not_ready = |daemon: &Daemon, when: &str| {
        let (status, body) = poll_until(Duration::from_secs(20), when, || {
            daemon
                .get("/readyz")
                .filter(|(_, body)| body.contains(missing))
        });
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("probe peers failed"), "{body}");
    };
    not_ready(&daemon, "/readyz to name the missing interfaces");
    assert!(daemon.log().contains(missing), "{}", daemon.log());
    assert_eq!(
        daemon
            .metrics()
            .value("watchdog_probe_up", &[("probe", "peers")]),
        Some(0.0)
    );
    // One appears (a pod's veth): ready.
    ns.ip(&[
        "link", "add", "late0", "type", "veth", "peer", "name", "late0p",
    ]);
    daemon.wait_ready();
    assert_eq!(daemon.get("/readyz"), Some((200, "ready\n".into())));
    assert!(
        daemon
            .log()
            .contains("peer traffic probe attached interface=late0"),
        "{}",
        daemon.log()
    );
    // And goes: not ready again.
    ns.ip(&["link", "del", "late0"]);
    not_ready(&daemon, "/readyz to name the missing interfaces again");
    assert!(daemon.stop().success());
}

#[test]
fn a_probe_the_kernel_cannot_run_is_reported_but_the_daemon_is_ready() {
    if !require_root("a_probe_the_kernel_cannot_run_is_reported_but_the_daemon_is_ready") {
        return;
    }
    // A tracefs whose kernel "lacks" tcp:tcp_retransmit_skb: the tcp probe reads its formats
    // there and finds only sock:inet_sock_set_state (a copy of the real one). kfree_skb is
    // off: its attach would need the real tracefs, which `ip netns exec` hides.
    let fake = TempDir::new("tracefs-no-tcp");
    let dir = fake.path().join("events/sock/inet_sock_set_state");
    std::fs::create_dir_all(&dir).unwrap();
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../watchdog/tests/fixtures/tracefs/inet_sock_set_state-6.18.format"
    );
    std::fs::copy(fixture, dir.join("format")).unwrap();
    let ns = NetNs::new("wd-unsupported");
    let config = format!(
        "tracefs_path = \"{}\"\n[probes]\nkfree_skb = false\n",
        fake.path().display()
    );
    let mut daemon = Daemon::start(&ns, &config);
    daemon.wait_ready();
    let metrics = daemon.metrics();
    assert_eq!(
        metrics.value("watchdog_probe_up", &[("probe", "tcp")]),
        Some(0.0)
    );
    assert_eq!(
        metrics.value("watchdog_probe_unsupported", &[("probe", "tcp")]),
        Some(1.0)
    );
    assert_eq!(
        metrics.value("watchdog_probe_up", &[("probe", "peers")]),
        Some(1.0)
    );
    assert_eq!(
        metrics.value("watchdog_probe_unsupported", &[("probe", "peers")]),
        Some(0.0)
    );
    let log = daemon.log();
    assert!(
        log.contains("probe tcp unsupported by this kernel: cannot read tracepoint format"),
        "{log}"
    );
    assert!(
        log.contains("probes: peers=pending tcp=unsupported"),
        "{log}"
    );
    assert!(daemon.stop().success());
}

fn program_exists(id: u64) -> bool {
    Command::new("bpftool")
        .args(["prog", "show", "id", &id.to_string()])
        .output()
        .is_ok_and(|output| output.status.success())
}

#[test]
fn sigterm_detaches_everything_and_a_restart_works() {
    if !require_root("sigterm_detaches_everything_and_a_restart_works") {
        return;
    }
    let pinned_before = std::fs::read_dir("/sys/fs/bpf")
        .map(|d| d.count())
        .unwrap_or(0);
    let ns = NetNs::new("wd-restart");
    let mut daemon = Daemon::start(&ns, "");
    daemon.wait_ready();
    let programs = bpf_programs_of(daemon.pid());
    assert!(
        !programs.is_empty(),
        "bpftool shows no program held by the daemon"
    );
    let log_path_daemon = daemon.log();
    let status = daemon.stop();
    assert!(status.success(), "exit {status}\n{log_path_daemon}");
    for id in &programs {
        assert!(
            !program_exists(*id),
            "program {id} still loaded after SIGTERM"
        );
    }
    let pinned_after = std::fs::read_dir("/sys/fs/bpf")
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(
        pinned_before, pinned_after,
        "something was pinned in /sys/fs/bpf"
    );

    let mut again = Daemon::start(&ns, "");
    again.wait_ready();
    let log = again.log();
    assert!(log.contains("probe kfree_skb attached"), "{log}");
    assert!(again.stop().success());
}

#[test]
fn config_check_judges_as_run_does_and_never_prints_a_secret() {
    let dir = TempDir::new("watchdog-cli-secret");
    let key = "hmac-5f2c81d0-NOT-A-URL-SECRET";
    let key_file = dir.path().join("wrong.key");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    let token_file = dir.path().join("url");
    std::fs::write(&token_file, "https://hooks.example/services/TOKEN-SECRET\n").unwrap();
    let unset = format!("WATCHDOG_TEST_UNSET_{}", std::process::id());
    let sink = |source: String| {
        format!("[[alerts.sinks]]\nname = \"hook\"\ntype = \"webhook\"\n{source}\n")
    };
    let cases = [
        // The HMAC key put where the URL belongs: refused, and never echoed.
        (
            "not-a-url.toml",
            sink(format!("url_file = {:?}", key_file)),
            1,
        ),
        // An unset variable: `run` refuses it, so must `config check`.
        ("unset.toml", sink(format!("url_env = \"{unset}\"")), 1),
        // A good URL with a token: valid, the token not printed.
        ("good.toml", sink(format!("url_file = {:?}", token_file)), 0),
    ];
    for (name, text, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, &text).unwrap();
        let path = path.to_str().unwrap();
        let (check, check_out, check_err) = run_watchdog(&["config", "check", path]);
        let (run, _, run_err) = if expected == 0 {
            // `run` would go on to attach: only `check` is judged here.
            (0, String::new(), String::new())
        } else {
            run_watchdog(&["run", "--config", path])
        };
        assert_eq!(
            (check, run),
            (expected, expected),
            "{name}: check {check_err}; run {run_err}"
        );
        for output in [&check_out, &check_err, &run_err] {
            assert!(
                !output.contains("SECRET") && !output.contains("hmac-5f2c"),
                "{name} printed a secret:\n{output}"
            );
        }
        if expected == 1 {
            let reason = check_err.lines().last().unwrap_or_default();
            let reason = reason.trim_start_matches("error: ");
            assert!(
                reason.starts_with("alerts.sinks[0].url_")
                    && run_err.lines().last().unwrap_or_default().ends_with(reason),
                "{name}: check and run give the same reason:\n{check_err}\n{run_err}"
            );
        }
    }
}

#[test]
fn sighup_is_logged_and_the_daemon_keeps_running() {
    if !require_root("sighup_is_logged_and_the_daemon_keeps_running") {
        return;
    }
    let ns = NetNs::new("wd-hup");
    let mut daemon = Daemon::start(&ns, "");
    daemon.wait_ready();
    // SIGHUP's default action ends a process silently.
    // SAFETY: kill(2) on the daemon this test started.
    assert_eq!(unsafe { libc::kill(daemon.pid() as i32, libc::SIGHUP) }, 0);
    poll_until(Duration::from_secs(10), "the SIGHUP log line", || {
        daemon.log().contains("SIGHUP received").then_some(())
    });
    assert!(daemon.try_exit().is_none(), "{}", daemon.log());
    let (status, _) = daemon.get("/healthz").expect("still serving");
    assert_eq!(status, 200);
    assert!(daemon.stop().success());
}

#[test]
fn check_window_out_of_range_is_a_usage_error_naming_value_and_range() {
    for bad in ["0s", "100000h"] {
        let (code, _, stderr) = run_watchdog(&["check", "--window", bad]);
        assert_eq!(code, 2, "{stderr}");
        assert!(
            stderr.contains(&format!("`{bad}` is out of range; use 1s to 24h")),
            "{stderr}"
        );
    }
}

#[test]
fn config_files_that_are_not_small_regular_files_are_refused_at_once() {
    let dir = TempDir::new("watchdog-cli-read");
    let fifo = dir.path().join("fifo.toml");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // A FIFO without a writer and /dev/zero: a plain reader blocks or grows forever.
    for (path, what) in [
        (fifo.to_str().unwrap(), "is a FIFO"),
        ("/dev/zero", "is a character device"),
    ] {
        for args in [vec!["config", "check", path], vec!["run", "--config", path]] {
            let (code, _, stderr) = run_watchdog(&args);
            assert_eq!(code, 1, "{args:?}: {stderr}");
            assert!(stderr.contains(what), "{args:?}: {stderr}");
        }
    }
    let (code, stderr) = run_with_config("c.toml", "[peers]\ninterfaces = [\"a b\"]\n");
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("`peers.interfaces` names \"a b\""),
        "{stderr}"
    );
}

#[test]
fn repair_undo_and_journal_document_their_exit_codes_and_need_a_change_to_undo() {
    let (code, stdout, _) = run_watchdog(&["repair", "undo", "--help"]);
    assert_eq!(code, 0);
    for text in [
        "[ID]",
        "--last",
        "--config <FILE>",
        "Exit code 0: restored; 1: refused",
    ] {
        assert!(
            stdout.contains(text),
            "repair undo --help lacks {text}:\n{stdout}"
        );
    }
    let (code, stdout, _) = run_watchdog(&["repair", "journal", "--help"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("--json"), "{stdout}");
    // Neither an id nor --last: a usage error.
    let (code, _, stderr) = run_watchdog(&["repair", "undo"]);
    assert_eq!(code, 2, "{stderr}");
    let (code, _, stderr) = run_watchdog(&["repair", "undo", "3", "--last"]);
    assert_eq!(code, 2, "{stderr}");
    // An empty journal: nothing printed, and nothing to undo (refused, exit 1).
    let dir = TempDir::new("watchdog-cli-journal");
    let config = dir.path().join("watchdog.toml");
    let journal = dir.path().join("journal.jsonl");
    std::fs::write(
        &config,
        format!("[repair]\njournal = \"{}\"\n", journal.display()),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let (code, stdout, stderr) = run_watchdog(&["repair", "journal", "--config", config]);
    assert_eq!((code, stdout.as_str()), (0, ""), "{stderr}");
    let (code, _, stderr) = run_watchdog(&["repair", "undo", "--last", "--config", config]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("refused: nothing to undo"), "{stderr}");
}
