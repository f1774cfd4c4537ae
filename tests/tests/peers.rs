//! The TC peer probe counts traffic per remote address exactly, follows new interfaces,
//! and releases the links of interfaces that go (pod churn leaks nothing).

use std::{
    net::UdpSocket,
    process::Command,
    time::{Duration, Instant},
};

use watchdog_tests::{Daemon, NetNs, bpf_links_of, ip, open_fds, poll_until, require_root};

const PACKETS: &str = "watchdog_peer_packets_total";
const BYTES: &str = "watchdog_peer_bytes_total";

#[test]
fn counts_packets_and_bytes_per_peer_and_picks_up_new_interfaces() {
    if !require_root("counts_packets_and_bytes_per_peer_and_picks_up_new_interfaces") {
        return;
    }
    let node = NetNs::new("wd-peer");
    let remote = NetNs::new("wd-peer-remote");
    node.veth_to(&remote, ("wd0", "10.77.0.1/24"), ("wd1", "10.77.0.2/24"));

    let mut daemon = Daemon::start(&node, "[peers]\ninterfaces = [\"wd0\", \"wd9\"]\n");
    daemon.wait_ready();
    // A UDP echo in the remote namespace answers each datagram once.
    let echo: UdpSocket = remote.run(|| UdpSocket::bind("10.77.0.2:7000").unwrap());
    echo.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let responder = std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        for _ in 0..25 {
            let (len, from) = echo.recv_from(&mut buf).expect("echo receive");
            echo.send_to(&buf[..len], from).expect("echo send");
        }
    });
    node.run(|| {
        let socket = UdpSocket::bind("10.77.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 256];
        for _ in 0..25 {
            socket.send_to(&[0u8; 100], "10.77.0.2:7000").unwrap();
            socket.recv_from(&mut buf).expect("echo reply");
        }
    });
    responder.join().unwrap();

    let peer = [("interface", "wd0"), ("peer", "10.77.0.2")];
    let tx = [peer[0], peer[1], ("direction", "tx")];
    let rx = [peer[0], peer[1], ("direction", "rx")];
    let metrics = poll_until(Duration::from_secs(10), "25 packets each way", || {
        let metrics = daemon.metrics();
        (metrics.count(PACKETS, &tx) >= 25 && metrics.count(PACKETS, &rx) >= 25).then_some(metrics)
    });
    assert_eq!(metrics.count(PACKETS, &tx), 25, "{}", metrics.0);
    assert_eq!(metrics.count(PACKETS, &rx), 25, "{}", metrics.0);
    // 100 bytes of payload + 8 UDP + 20 IPv4 + 14 Ethernet, as TC sees the frame.
    assert_eq!(metrics.count(BYTES, &tx), 25 * 142, "{}", metrics.0);
    assert_eq!(metrics.count(BYTES, &rx), 25 * 142, "{}", metrics.0);

    // An interface named in the config that appears later is attached without a restart.
    ip(&[
        "-n",
        node.name(),
        "link",
        "add",
        "wd9",
        "type",
        "veth",
        "peer",
        "name",
        "wd9p",
    ]);
    poll_until(
        Duration::from_secs(10),
        "the probe on the new interface",
        || {
            daemon
                .log()
                .contains("peer traffic probe attached interface=wd9")
                .then_some(())
        },
    );
    let metrics = daemon.metrics();
    assert_eq!(
        metrics.value("watchdog_probe_up", &[("probe", "peers")]),
        Some(1.0)
    );
    assert!(daemon.stop().success());
}

/// Veth pairs per round of [`churn`]; both ends are in the daemon's namespace.
const PAIRS_PER_ROUND: usize = 10;
/// Rounds of [`churn`]: 200 pairs in all.
const ROUNDS: usize = 20;

/// 200 veth pairs created and deleted in the daemon's namespace, 10 at a time, each round
/// waiting until the daemon attached to all 20 new interfaces: afterwards its BPF links are
/// back at their start count and its open fds at (or below) theirs, it is ready, and the
/// peer probe is up.
/// With `fd_headroom`, the daemon's NOFILE limit is set to its start fds plus that much
/// (room for one round, not for a leak).
fn churn(prefix: &str, fd_headroom: Option<usize>) {
    let ns = NetNs::new(prefix);
    let mut daemon = Daemon::start(&ns, "poll_interval = \"100ms\"\n");
    daemon.wait_ready();
    let pid = daemon.pid();
    let start_fds = open_fds(pid);
    let start_links = bpf_links_of(pid);
    if let Some(headroom) = fd_headroom {
        set_nofile(pid, start_fds + headroom);
    }
    for round in 0..ROUNDS {
        let names: Vec<(String, String)> = (0..PAIRS_PER_ROUND)
            .map(|i| (format!("ch{round}x{i}a"), format!("ch{round}x{i}b")))
            .collect();
        let add: Vec<String> = names
            .iter()
            .map(|(a, b)| format!("link add {a} type veth peer name {b}"))
            .collect();
        ns.ip_batch(&add.join("\n"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = daemon.log();
            let missing: Vec<&String> = names
                .iter()
                .flat_map(|(a, b)| [a, b])
                .filter(|name| {
                    !log.contains(&format!("peer traffic probe attached interface={name}"))
                })
                .collect();
            if missing.is_empty() {
                break;
            }
            let failure = log
                .lines()
                .find(|line| line.contains("cannot attach the peer traffic probe"));
            assert!(
                failure.is_none() && Instant::now() < deadline,
                "round {round}: not attached on {missing:?} (start {start_fds} fds, now {}); \
                 {}\n{}",
                open_fds(pid),
                failure.unwrap_or("timed out"),
                tail(&log)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let del: Vec<String> = names.iter().map(|(a, _)| format!("link del {a}")).collect();
        ns.ip_batch(&del.join("\n"));
    }
    // Back to the start values once the mirror saw the deletions (poll, with a deadline).
    // The start count may include a connection of the readiness check still closing, so
    // the fds must come back to it or below.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = (open_fds(pid), bpf_links_of(pid));
        if now.0 <= start_fds && now.1 == start_links {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after {} veth pairs came and went: (open fds, BPF links) = {now:?}, at the \
             start {:?}\n{}",
            ROUNDS * PAIRS_PER_ROUND,
            (start_fds, start_links),
            tail(&daemon.log())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(daemon.get("/readyz"), Some((200, "ready\n".into())));
    assert_eq!(
        daemon
            .metrics()
            .value("watchdog_probe_up", &[("probe", "peers")]),
        Some(1.0)
    );
    assert!(daemon.stop().success());
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[test]
fn interface_churn_releases_every_link() {
    if !require_root("interface_churn_releases_every_link") {
        return;
    }
    churn("wd-churn", None);
}

#[test]
fn interface_churn_works_under_a_low_fd_limit() {
    if !require_root("interface_churn_works_under_a_low_fd_limit") {
        return;
    }
    // One round needs 40 link fds; 64 leaves room for a few sockets, not for a leak.
    churn("wd-churn-fd", Some(64));
}

/// Sets process `pid`'s soft RLIMIT_NOFILE to `limit` (the hard limit stays, so it can be
/// raised again without CAP_SYS_RESOURCE).
fn set_nofile(pid: u32, limit: usize) {
    let status = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={limit}:")])
        .status()
        .expect("run prlimit");
    assert!(status.success(), "prlimit --pid {pid} --nofile={limit}:");
}

#[test]
fn running_out_of_fds_is_the_reason_given() {
    if !require_root("running_out_of_fds_is_the_reason_given") {
        return;
    }
    let ns = NetNs::new("wd-nofd");
    let mut daemon = Daemon::start(&ns, "poll_interval = \"100ms\"\n");
    daemon.wait_ready();
    let pid = daemon.pid();
    // Room for a few links only: 12 new interfaces need 24.
    let limit = open_fds(pid) + 6;
    set_nofile(pid, limit);
    let add: Vec<String> = (0..6)
        .map(|i| format!("link add fd{i}a type veth peer name fd{i}b"))
        .collect();
    ns.ip_batch(&add.join("\n"));
    let reason = format!("failed: out of file descriptors (all {limit} of RLIMIT_NOFILE are open");
    poll_until(
        Duration::from_secs(20),
        "the log to name the fd limit",
        || daemon.log().contains(&reason).then_some(()),
    );
    // Give the HTTP server room to answer again; failed interfaces are not retried, so the
    // probe's status keeps the reason.
    set_nofile(pid, 1024);
    let (status, body) = daemon.get("/readyz").expect("GET /readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("probe peers failed"), "{body}");
    assert!(body.contains(&reason), "{body}");
    assert_eq!(
        daemon
            .metrics()
            .value("watchdog_probe_up", &[("probe", "peers")]),
        Some(0.0)
    );
}
