//! Runs inside a kernel booted by `cargo xtask kernels` (a busybox initramfs, PID 1 is a
//! shell script): starts the daemon in the guest's own network namespace the way a
//! DaemonSet runs it on a node, drives known traffic through a veth pair and a
//! two-namespace VXLAN pair, and prints one line `WATCHDOG-GUEST-RESULT {json}` with what
//! it measured. It asserts nothing: the host test compares the numbers with the expected
//! ones, so one kernel's failure still reports everything else.

use std::{
    fs,
    net::{SocketAddr, UdpSocket},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use watchdog_common::names;
use watchdog_tests::{Metrics, NetNs, http_get, memory, traffic};

/// The daemon: `/watchdog` in the initramfs (`WATCHDOG_BIN` overrides it, to run this
/// helper on a host).
const DAEMON: &str = "/watchdog";
const LISTEN: &str = "127.0.0.1:9477";
/// NO_SOCKET drops sent to a closed loopback port.
const DROP_BURST: u32 = 37;
/// UDP datagrams echoed over the veth pair.
const ECHOES: u32 = 23;
/// How long the footprint's daemon (embedded default config) is observed once ready.
const FOOTPRINT_IDLE: Duration = Duration::from_secs(10);

fn main() {
    let mut result = json!({});
    let mut errors: Vec<String> = Vec::new();
    result["kernel"] = json!(read("/proc/sys/kernel/osrelease").trim());
    result["machine"] = json!(std::env::consts::ARCH);
    // SAFETY: sysconf has no preconditions.
    result["page_size"] = json!(unsafe { libc::sysconf(libc::_SC_PAGESIZE) });
    let binary = std::env::var("WATCHDOG_BIN").unwrap_or_else(|_| DAEMON.to_owned());

    // The footprint first: the embedded default config in a namespace of its own, its
    // start-up peak and its resident memory once idle (the host test holds them to their
    // budgets).
    // SAFETY: single-threaded here; the lab reads it to find the daemon.
    unsafe { std::env::set_var("WATCHDOG_BIN", &binary) };
    match std::panic::catch_unwind(|| memory::default(FOOTPRINT_IDLE)) {
        Ok(figures) => {
            result["footprint"] = figures.to_json();
            result["footprint"]["idle_s"] = json!(FOOTPRINT_IDLE.as_secs());
        }
        Err(_) => errors.push("footprint: the default daemon did not run (see above)".into()),
    }

    // Every namespace's drops, labelled: the burst runs in a namespace of its own, so its
    // count is exact even on 5.10, where every freed packet counts as UNKNOWN.
    let config = "listen = \"127.0.0.1:9477\"\npoll_interval = \"200ms\"\nnamespaces = \"all\"\n\
                  [detect]\nconfirm = 2\nvtep_window = \"1s\"\n";
    fs::write("/tmp/watchdog.toml", config).expect("write config");
    let log = fs::File::create("/tmp/watchdog.log").expect("create log");
    let started = Instant::now();
    let mut daemon = Command::new(binary)
        .args(["run", "--config", "/tmp/watchdog.toml"])
        .env("RUST_LOG", "info")
        .env("NODE_NAME", "guest")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup log"))
        .stderr(log)
        .spawn()
        .expect("start the daemon");
    let listen: SocketAddr = LISTEN.parse().expect("address");

    // Ready: /readyz answers 200.
    let ready = poll(Duration::from_secs(120), || {
        match http_get(listen, "/readyz") {
            Some((200, _)) => Some(Ok(())),
            _ => exited(&mut daemon).map(Err),
        }
    });
    match ready {
        Some(Ok(())) => result["ready_ms"] = json!(started.elapsed().as_millis() as u64),
        Some(Err(status)) => errors.push(format!("the daemon exited before ready: {status}")),
        None => errors.push(format!(
            "not ready after 120 s: {:?}",
            http_get(listen, "/readyz")
        )),
    }
    if result.get("ready_ms").is_some() {
        let metrics = scrape(listen);
        result["features"] = labelled(&metrics, "watchdog_kernel_feature", "feature");
        result["probe_up"] = labelled(&metrics, "watchdog_probe_up", "probe");
        result["probe_unsupported"] = labelled(&metrics, "watchdog_probe_unsupported", "probe");
        result["drops"] = scenario("drops", &mut errors, |e| drops(listen, e));
        result["peers"] = scenario("peers", &mut errors, |e| peers(listen, e));
        result["ghost_vtep"] = scenario("ghost_vtep", &mut errors, |e| ghost_vtep(listen, e));
        result["rss_kib"] = json!(rss_kib(daemon.id()));
        result["programs"] = programs(&mut errors);
    }

    // Clean shutdown: SIGTERM, exit 0, the log says it detached.
    let stopping = Instant::now();
    // SAFETY: kill(2) on our child's pid.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let status = poll(Duration::from_secs(20), || exited(&mut daemon));
    let log = read("/tmp/watchdog.log");
    result["shutdown"] = json!({
        "exit_code": status.and_then(|s| s.code()),
        "ms": stopping.elapsed().as_millis() as u64,
        "detached": log.contains("shutting down: detaching probes") && log.contains("stopped"),
    });
    if status.is_none() {
        errors.push("the daemon did not exit within 20 s of SIGTERM".into());
        let _ = daemon.kill();
    }
    result["log_tail"] = json!(tail(&log, 40));
    // The TCP tracepoints' layouts, for the unit tests' fixtures.
    for (key, event) in [
        ("format_tcp_retransmit_skb", "tcp/tcp_retransmit_skb"),
        ("format_inet_sock_set_state", "sock/inet_sock_set_state"),
    ] {
        result[key] = json!(read(&format!("/sys/kernel/tracing/events/{event}/format")));
    }
    result["errors"] = json!(errors);
    println!("WATCHDOG-GUEST-RESULT {result}");
    // The console is a serial port: wait until the line has left it, or the init's
    // poweroff (and the kernel's message about it) overtakes its last bytes.
    // SAFETY: tcdrain only waits on the file descriptor; a non-terminal just fails.
    unsafe { libc::tcdrain(libc::STDOUT_FILENO) };
}

/// The daemon's loaded eBPF programs and their sizes, read with bpf(2) the way `bpftool
/// prog show` does: per program name, instructions after the verifier's rewrites
/// (`xlated`), bytes of this machine's code (`jited`: 4 bytes per instruction on arm64)
/// and the verifier's processed-instruction count (`verified`, 5.16+; null before).
/// These are the per-architecture cost figures `cargo xtask bench tc` cannot time under
/// an emulated CPU.
fn programs(errors: &mut Vec<String>) -> Value {
    const PROG_GET_NEXT_ID: libc::c_long = 11;
    const PROG_GET_FD_BY_ID: libc::c_long = 13;
    const OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    /// `struct bpf_prog_info` offsets (include/uapi/linux/bpf.h).
    const JITED_LEN: usize = 16;
    const XLATED_LEN: usize = 20;
    const NAME: std::ops::Range<usize> = 64..80;
    const VERIFIED_INSNS: usize = 216;
    fn bpf(cmd: libc::c_long, attr: &mut [u32; 6]) -> libc::c_long {
        // SAFETY: `attr` is a zeroed `union bpf_attr` prefix as large as the size passed;
        // the kernel reads and writes only within it (and the info buffer it points at).
        unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), size_of::<[u32; 6]>()) }
    }
    let word = |info: &[u8], at: usize| u32::from_ne_bytes(info[at..at + 4].try_into().unwrap());
    let ours: Vec<String> = [
        names::programs::KFREE_SKB,
        names::programs::PEERS_EGRESS,
        names::programs::PEERS_INGRESS,
        names::programs::INET_SOCK_SET_STATE,
        names::programs::TCP_RETRANSMIT_SKB,
    ]
    .iter()
    // The kernel keeps the first 15 bytes of a program's name.
    .map(|name| name.chars().take(15).collect())
    .collect();
    let mut found = serde_json::Map::new();
    let mut id = 0u32;
    loop {
        let mut attr = [id, 0, 0, 0, 0, 0];
        if bpf(PROG_GET_NEXT_ID, &mut attr) < 0 {
            break; // ENOENT: no program after `id`.
        }
        id = attr[1];
        let fd = bpf(PROG_GET_FD_BY_ID, &mut [id, 0, 0, 0, 0, 0]);
        if fd < 0 {
            continue; // unloaded meanwhile
        }
        let mut info = [0u8; 256];
        let at = info.as_mut_ptr() as u64;
        let mut attr = [
            fd as u32,
            info.len() as u32,
            at as u32,
            (at >> 32) as u32,
            0,
            0,
        ];
        let read = bpf(OBJ_GET_INFO_BY_FD, &mut attr);
        // SAFETY: closing the fd PROG_GET_FD_BY_ID just gave us.
        unsafe { libc::close(fd as i32) };
        if read < 0 {
            errors.push(format!(
                "bpf(OBJ_GET_INFO_BY_FD) for program {id}: {}",
                std::io::Error::last_os_error()
            ));
            continue;
        }
        let kernel_len = attr[1] as usize;
        let name = String::from_utf8_lossy(&info[NAME])
            .trim_end_matches('\0')
            .to_owned();
        if !ours.contains(&name) {
            continue;
        }
        let verified = (kernel_len >= VERIFIED_INSNS + 4).then(|| word(&info, VERIFIED_INSNS));
        found.insert(
            name,
            json!({
                "xlated_insns": word(&info, XLATED_LEN) / 8,
                "jited_bytes": word(&info, JITED_LEN),
                "verified_insns": verified,
            }),
        );
    }
    Value::Object(found)
}

/// `n` drops of a known reason on loopback in a namespace of their own: NO_SOCKET where
/// the kernel names reasons (5.17+), UNKNOWN before. Reports that namespace's count.
fn drops(listen: SocketAddr, errors: &mut Vec<String>) -> Value {
    let ns = NetNs::new("drops");
    let inode = ns.inode().to_string();
    let reason = if scrape(listen).value(
        "watchdog_kernel_feature",
        &[("feature", "kfree_skb_reason")],
    ) == Some(1.0)
    {
        "NO_SOCKET"
    } else {
        "UNKNOWN"
    };
    let count = |metrics: &Metrics| {
        metrics.count(
            "watchdog_kernel_drops_total",
            &[("reason", reason), ("netns", inode.as_str())],
        )
    };
    let before = count(&scrape(listen));
    ns.run(|| traffic::udp_to_closed_port(DROP_BURST, false));
    let after = settle(
        listen,
        |metrics| count(metrics),
        before + u64::from(DROP_BURST),
    );
    if after < before + u64::from(DROP_BURST) {
        errors.push(format!(
            "drops: {reason} rose by {} of {DROP_BURST}",
            after - before
        ));
    }
    json!({"reason": reason, "sent": DROP_BURST, "counted": after - before})
}

/// Datagrams echoed over a veth pair to another namespace: exact per-peer packet counts
/// each way on the daemon's side of the pair.
fn peers(listen: SocketAddr, errors: &mut Vec<String>) -> Value {
    let remote = NetNs::new("peer");
    ip(&[
        "link", "add", "wdv0", "type", "veth", "peer", "name", "wdv1",
    ]);
    ip(&["link", "set", "wdv1", "netns", remote.name()]);
    ip(&["addr", "add", "10.77.0.1/24", "dev", "wdv0"]);
    ip(&["link", "set", "wdv0", "up"]);
    remote.ip(&["addr", "add", "10.77.0.2/24", "dev", "wdv1"]);
    remote.ip(&["link", "set", "wdv1", "up"]);
    // The probe attaches to new interfaces within a poll or two.
    let attached = poll(Duration::from_secs(30), || {
        read("/tmp/watchdog.log")
            .contains("interface=wdv0")
            .then_some(())
    });
    if attached.is_none() {
        errors.push("peers: the probe never attached to wdv0".into());
    }
    let echo: UdpSocket = remote.run(|| UdpSocket::bind("10.77.0.2:7000").expect("bind echo"));
    echo.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let responder = std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        for _ in 0..ECHOES {
            let Ok((len, from)) = echo.recv_from(&mut buf) else {
                return;
            };
            let _ = echo.send_to(&buf[..len], from);
        }
    });
    let socket = UdpSocket::bind("10.77.0.1:0").expect("bind");
    socket.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut buf = [0u8; 256];
    let mut answered = 0;
    for _ in 0..ECHOES {
        socket.send_to(&[0u8; 100], "10.77.0.2:7000").expect("send");
        if socket.recv_from(&mut buf).is_ok() {
            answered += 1;
        }
    }
    let _ = responder.join();
    let series = |direction: &'static str| {
        move |metrics: &Metrics| {
            metrics.count(
                "watchdog_peer_packets_total",
                &[
                    ("interface", "wdv0"),
                    ("peer", "10.77.0.2"),
                    ("direction", direction),
                ],
            )
        }
    };
    let tx = settle(listen, series("tx"), u64::from(ECHOES));
    let rx = settle(listen, series("rx"), u64::from(ECHOES));
    if answered != ECHOES {
        errors.push(format!("peers: {answered} of {ECHOES} echoes answered"));
    }
    // TCP: the remote's answers to us vanish (a blackhole route back), so a connect
    // retransmits its SYN and fails: counted per destination by the tcp probe (on 5.10
    // through the v4-mapped address, its retransmit tracepoint having no family).
    remote.ip(&["route", "add", "blackhole", "10.77.0.1/32"]);
    let target: SocketAddr = "10.77.0.2:7001".parse().expect("address");
    let connected = std::net::TcpStream::connect_timeout(&target, Duration::from_millis(2500));
    let tcp = |metrics: &Metrics, name: &str, outcome: Option<&str>| {
        let mut labels = vec![("peer", "10.77.0.2"), ("port", "7001")];
        labels.extend(outcome.map(|o| ("outcome", o)));
        metrics.count(name, &labels)
    };
    let _ = poll(Duration::from_secs(20), || {
        let metrics = scrape(listen);
        (tcp(&metrics, "watchdog_tcp_connects_total", Some("failed")) >= 1).then_some(())
    });
    let metrics = scrape(listen);
    let connects = json!({
        "connected": connected.is_ok(),
        "attempted": tcp(&metrics, "watchdog_tcp_connects_total", Some("attempted")),
        "failed": tcp(&metrics, "watchdog_tcp_connects_total", Some("failed")),
        "syn_retransmits": tcp(&metrics, "watchdog_tcp_syn_retransmits_total", None),
    });
    ip(&["link", "del", "wdv0"]);
    json!({"sent": ECHOES, "answered": answered, "tx": tx, "rx": rx, "tcp": connects})
}

/// A VXLAN pair between the guest's namespace (where the daemon runs) and another one
/// over a veth underlay, plus one FDB entry pointing at a VTEP with no route: the ghost.
fn ghost_vtep(listen: SocketAddr, errors: &mut Vec<String>) -> Value {
    let remote = NetNs::new("vtep");
    ip(&[
        "link", "add", "wdu0", "type", "veth", "peer", "name", "wdu1",
    ]);
    ip(&["link", "set", "wdu1", "netns", remote.name()]);
    ip(&["addr", "add", "10.98.0.1/24", "dev", "wdu0"]);
    ip(&["link", "set", "wdu0", "up"]);
    remote.ip(&["addr", "add", "10.98.0.2/24", "dev", "wdu1"]);
    remote.ip(&["link", "set", "wdu1", "up"]);
    let vxlan = |ns: Option<&NetNs>, local: &str, mac: &str, addr: &str, underlay: &str| {
        let mut prefix: Vec<&str> = Vec::new();
        if let Some(ns) = ns {
            prefix.extend(["-n", ns.name()]);
        }
        let run = |args: &[&str]| ip(&[prefix.as_slice(), args].concat());
        run(&[
            "link",
            "add",
            "wdx",
            "address",
            mac,
            "type",
            "vxlan",
            "id",
            "42",
            "local",
            local,
            "dev",
            underlay,
            "dstport",
            "8472",
            "nolearning",
        ]);
        run(&["addr", "add", addr, "dev", "wdx"]);
        run(&["link", "set", "wdx", "up"]);
    };
    vxlan(
        None,
        "10.98.0.1",
        "02:fa:00:00:00:01",
        "10.96.0.1/24",
        "wdu0",
    );
    vxlan(
        Some(&remote),
        "10.98.0.2",
        "02:fa:00:00:00:02",
        "10.96.0.2/24",
        "wdu1",
    );
    // Each side's FDB and neighbour entries for the other, as Flannel writes them.
    bridge(
        None,
        &[
            "fdb",
            "append",
            "02:fa:00:00:00:02",
            "dev",
            "wdx",
            "dst",
            "10.98.0.2",
        ],
    );
    ip(&[
        "neigh",
        "replace",
        "10.96.0.2",
        "lladdr",
        "02:fa:00:00:00:02",
        "dev",
        "wdx",
        "nud",
        "permanent",
    ]);
    bridge(
        Some(&remote),
        &[
            "fdb",
            "append",
            "02:fa:00:00:00:01",
            "dev",
            "wdx",
            "dst",
            "10.98.0.1",
        ],
    );
    remote.ip(&[
        "neigh",
        "replace",
        "10.96.0.1",
        "lladdr",
        "02:fa:00:00:00:01",
        "dev",
        "wdx",
        "nud",
        "permanent",
    ]);
    // The ghost: a VTEP nothing routes to.
    const GHOST: &str = "fdb 02:fa:00:00:00:99 dev wdx dst 10.55.0.99";
    bridge(
        None,
        &[
            "fdb",
            "append",
            "02:fa:00:00:00:99",
            "dev",
            "wdx",
            "dst",
            "10.55.0.99",
        ],
    );
    // The healthy pair carries traffic both ways.
    let pinged = Command::new("ping")
        .args(["-c", "3", "-W", "5", "10.96.0.2"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !pinged {
        errors.push("vxlan: ping over the VXLAN pair failed".into());
    }
    let started = Instant::now();
    let findings = poll(Duration::from_secs(60), || {
        let findings = findings(listen)?;
        findings
            .iter()
            .any(|(kind, subject)| kind == "stale_fdb" && subject == GHOST)
            .then_some(findings)
    });
    let named = findings.is_some();
    if !named {
        errors.push(format!(
            "vxlan: {GHOST} not named within 60 s; findings: {:?}",
            self::findings(listen)
        ));
    }
    let mirror = labelled(&scrape(listen), "watchdog_mirror_objects", "kind");
    let healthy_named = findings
        .unwrap_or_default()
        .iter()
        .any(|(_, subject)| subject.contains("dst 10.98.0.2"));
    let diagnostics = if named {
        (String::new(), String::new())
    } else {
        (
            command_output("bridge", &["fdb", "show", "dev", "wdx"]),
            command_output("ip", &["-d", "link", "show", "wdx"]),
        )
    };
    ip(&["link", "del", "wdx"]);
    ip(&["link", "del", "wdu0"]);
    json!({
        "subject": GHOST,
        "named": named,
        "after_ms": started.elapsed().as_millis() as u64,
        "healthy_vtep_named": healthy_named,
        "overlay_ping": pinged,
        "mirror_objects": mirror,
        "fdb": diagnostics.0,
        "link": diagnostics.1,
    })
}

/// The active findings as (kind, subject).
fn findings(listen: SocketAddr) -> Option<Vec<(String, String)>> {
    let (_, body) = http_get(listen, "/api/v1/findings")?;
    let report: Value = serde_json::from_str(&body).ok()?;
    Some(
        report["findings"]
            .as_array()?
            .iter()
            .map(|f| {
                (
                    f["kind"].as_str().unwrap_or_default().to_owned(),
                    f["subject"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect(),
    )
}

/// Polls a counter until it reaches `expected`, then keeps reading for two more polls
/// (so an over-count shows), returning the last value.
fn settle(listen: SocketAddr, value: impl Fn(&Metrics) -> u64, expected: u64) -> u64 {
    let _ = poll(Duration::from_secs(20), || {
        (value(&scrape(listen)) >= expected).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    value(&scrape(listen))
}

fn scrape(listen: SocketAddr) -> Metrics {
    Metrics(
        http_get(listen, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default(),
    )
}

/// `{label value: sample value}` of every series of `name`.
fn labelled(metrics: &Metrics, name: &str, label: &str) -> Value {
    let mut map = serde_json::Map::new();
    let prefix = format!("{name}{{{label}=\"");
    for line in metrics.0.lines() {
        if let Some(rest) = line.strip_prefix(&prefix)
            && let Some((key, value)) = rest.split_once("\"} ")
        {
            map.insert(key.to_owned(), json!(value.parse::<f64>().unwrap_or(-1.0)));
        }
    }
    Value::Object(map)
}

fn rss_kib(pid: u32) -> u64 {
    read(&format!("/proc/{pid}/status"))
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn exited(child: &mut Child) -> Option<std::process::ExitStatus> {
    child.try_wait().ok().flatten()
}

/// Polls `f` every 50 ms until it returns `Some` or `timeout` passes.
fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = f() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ip(args: &[&str]) {
    watchdog_tests::ip(args);
}

/// `bridge [-n ns] args`, without `ip netns exec` (no mount namespace games in the guest).
fn bridge(ns: Option<&NetNs>, args: &[&str]) {
    let mut command = Command::new("bridge");
    if let Some(ns) = ns {
        command.args(["-n", ns.name()]);
    }
    let output = command.args(args).output().expect("run bridge");
    assert!(
        output.status.success(),
        "bridge {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs one scenario; a panic (a failed `ip` command) becomes an error, not a lost report.
fn scenario(
    name: &str,
    errors: &mut Vec<String>,
    f: impl FnOnce(&mut Vec<String>) -> Value,
) -> Value {
    let mut inner = Vec::new();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut inner)));
    errors.append(&mut inner);
    outcome.unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        errors.push(format!("{name}: {why}"));
        Value::Null
    })
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default()
}

fn read(path: &str) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

fn tail(text: &str, lines: usize) -> Vec<&str> {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].to_vec()
}
