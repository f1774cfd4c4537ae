//! The TC peer probe counts traffic per remote address exactly, follows new interfaces,
//! and releases the links of interfaces that go (pod churn leaks nothing); its per-CPU
//! cache keeps totals exact when peers share a cache slot and while it is read.
//!
//! The tests that count exactly turn the prober off: it would probe their one-way peers
//! and its packets would be counted too.

use std::{
    net::{Ipv4Addr, UdpSocket},
    process::Command,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use watchdog_common::{PeerKey, names::maps, peer_cache_slot};
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

    let mut daemon = Daemon::start(
        &node,
        "[peers]\ninterfaces = [\"wd0\", \"wd9\"]\n[prober]\nenabled = false\n",
    );
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

/// A node with a veth to a remote namespace that owns two addresses, `a` and `b`, in the
/// same per-CPU cache slot of the node's interface (so every change between them flushes
/// the slot into the map), with static neighbour entries (no ARP on the counted path).
struct SharedSlot {
    node: NetNs,
    _remote: NetNs,
    a: Ipv4Addr,
    b: Ipv4Addr,
    /// The CPU every sender runs on.
    cpu: usize,
}

/// 100 bytes of payload + 8 UDP + 20 IPv4 + 14 Ethernet, as TC sees the frame.
const FRAME: u64 = 142;

impl SharedSlot {
    fn new() -> Self {
        let node = NetNs::new("wd-slot");
        let remote = NetNs::new("wd-slot-remote");
        node.veth_to(&remote, ("ws0", "10.78.0.1/16"), ("ws1", "10.78.0.2/16"));
        let ifindex = node.ip_json(&["link", "show", "ws0"])[0]["ifindex"]
            .as_u64()
            .expect("ifindex") as u32;
        let slot = |addr: Ipv4Addr| {
            let mut key = PeerKey {
                ifindex,
                family: 4,
                ..PeerKey::default()
            };
            key.addr[..4].copy_from_slice(&addr.octets());
            peer_cache_slot(key.words())
        };
        let a = Ipv4Addr::new(10, 78, 0, 2);
        let b = (256..65_000u32)
            .map(|n| Ipv4Addr::new(10, 78, (n >> 8) as u8, n as u8))
            .find(|b| slot(*b) == slot(a))
            .expect("an address in a's cache slot");
        remote.ip(&["addr", "add", &format!("{b}/16"), "dev", "ws1"]);
        let mac = remote.ip_json(&["link", "show", "ws1"])[0]["address"]
            .as_str()
            .expect("mac")
            .to_owned();
        for addr in [a, b] {
            node.ip(&[
                "neigh",
                "replace",
                &addr.to_string(),
                "lladdr",
                &mac,
                "dev",
                "ws0",
                "nud",
                "permanent",
            ]);
        }
        Self {
            node,
            _remote: remote,
            a,
            b,
            cpu: first_allowed_cpu(),
        }
    }

    /// Sends `sends` datagrams of 100 bytes from a thread on `self.cpu`, so every packet
    /// goes through that CPU's cache slot; `to(i)` picks the destination of the i-th.
    /// Counts what it sent to `a` and `b` in `sent`, each after the send returned.
    fn send(&self, sends: u64, to: impl Fn(u64) -> Ipv4Addr + Send, sent: &[AtomicU64; 2]) {
        let (a, b, cpu) = (self.a, self.b, self.cpu);
        self.node.run(move || {
            pin_to(cpu);
            let socket = UdpSocket::bind("10.78.0.1:0").expect("bind");
            for i in 0..sends {
                let dst = to(i);
                // Counted before it is sent: TC counts it inside send_to, and a reading
                // taken before this thread runs again must not exceed `sent`.
                if dst == a {
                    sent[0].fetch_add(1, Ordering::SeqCst);
                } else if dst == b {
                    sent[1].fetch_add(1, Ordering::SeqCst);
                }
                socket.send_to(&[0u8; 100], (dst, 7000)).expect("send");
            }
        })
    }

    fn sent(&self, metrics: &watchdog_tests::Metrics, to: Ipv4Addr) -> (u64, u64) {
        let peer = to.to_string();
        let labels = [
            ("interface", "ws0"),
            ("peer", peer.as_str()),
            ("direction", "tx"),
        ];
        (
            metrics.count(PACKETS, &labels),
            metrics.count(BYTES, &labels),
        )
    }
}

/// The lowest CPU this process may run on.
fn first_allowed_cpu() -> usize {
    // SAFETY: plain syscall on a zeroed cpu_set_t.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let rc = libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
        assert_eq!(
            rc,
            0,
            "sched_getaffinity: {}",
            std::io::Error::last_os_error()
        );
        (0..libc::CPU_SETSIZE as usize)
            .find(|&cpu| libc::CPU_ISSET(cpu, &set))
            .expect("an allowed CPU")
    }
}

/// Keeps the calling thread on `cpu`.
fn pin_to(cpu: usize) {
    // SAFETY: plain syscall on a zeroed cpu_set_t.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(
            rc,
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[test]
fn totals_stay_exact_across_a_cache_flush() {
    if !require_root("totals_stay_exact_across_a_cache_flush") {
        return;
    }
    let lab = SharedSlot::new();
    let mut daemon = Daemon::start(
        &lab.node,
        "[peers]\ninterfaces = [\"ws0\"]\n[prober]\nenabled = false\n",
    );
    daemon.wait_ready();
    let (a, b) = (lab.a, lab.b);
    let exactly = |what: &str, to: Ipv4Addr, packets: u64| {
        poll_until(Duration::from_secs(10), what, || {
            let metrics = daemon.metrics();
            let (sent, bytes) = lab.sent(&metrics, to);
            (sent >= packets).then_some((sent, bytes))
        })
    };

    let sent = [AtomicU64::new(0), AtomicU64::new(0)];
    // 7 packets to a: they stay in the cache slot, and the reader adds them in.
    lab.send(7, |_| a, &sent);
    assert_eq!(exactly("7 packets to a", a, 7), (7, 7 * FRAME));
    // 1 to b, which shares the slot: a's 7 move to the map, b's packet takes the slot.
    lab.send(1, |_| b, &sent);
    assert_eq!(exactly("1 packet to b", b, 1), (1, FRAME));
    assert_eq!(lab.sent(&daemon.metrics(), a), (7, 7 * FRAME));
    // 5 more to a: b's packet moves to the map, a's map entry and new slot add up.
    lab.send(5, |_| a, &sent);
    assert_eq!(exactly("12 packets to a", a, 12), (12, 12 * FRAME));
    let metrics = daemon.metrics();
    assert_eq!(lab.sent(&metrics, b), (1, FRAME), "{}", metrics.0);
    assert!(daemon.stop().success());
}

#[test]
fn alternating_peers_in_one_slot_count_exactly_while_read() {
    if !require_root("alternating_peers_in_one_slot_count_exactly_while_read") {
        return;
    }
    let lab = SharedSlot::new();
    // Read as often as the daemon allows, so readings overlap the traffic.
    let mut daemon = Daemon::start(
        &lab.node,
        "poll_interval = \"100ms\"\n[peers]\ninterfaces = [\"ws0\"]\n[prober]\nenabled = false\n",
    );
    daemon.wait_ready();
    let (a, b) = (lab.a, lab.b);
    // a, b, a, b, …: every packet flushes the other peer out of the slot. Readings
    // taken meanwhile never go down, and never exceed what was sent when they were taken.
    let sent = [AtomicU64::new(0), AtomicU64::new(0)];
    let watching = AtomicBool::new(true);
    let readings = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let mut readings = Vec::new();
            while watching.load(Ordering::SeqCst) {
                let metrics = daemon.metrics();
                let bound = [
                    sent[0].load(Ordering::SeqCst),
                    sent[1].load(Ordering::SeqCst),
                ];
                readings.push((lab.sent(&metrics, a), lab.sent(&metrics, b), bound));
                std::thread::sleep(Duration::from_millis(20));
            }
            readings
        });
        for batch in 1..=10 {
            lab.send(4_000, |i| if i % 2 == 0 { a } else { b }, &sent);
            // A reading with this batch's last packet still in the slot.
            poll_until(Duration::from_secs(10), "the batch counted", || {
                let metrics = daemon.metrics();
                (lab.sent(&metrics, a).0 >= batch * 2_000
                    && lab.sent(&metrics, b).0 >= batch * 2_000)
                    .then_some(())
            });
        }
        watching.store(false, Ordering::SeqCst);
        watcher.join().expect("watcher")
    });
    let sent = [
        sent[0].load(Ordering::SeqCst),
        sent[1].load(Ordering::SeqCst),
    ];
    assert_eq!(sent, [20_000, 20_000]);
    let metrics = poll_until(Duration::from_secs(10), "every packet counted", || {
        let metrics = daemon.metrics();
        (lab.sent(&metrics, a).0 >= sent[0] && lab.sent(&metrics, b).0 >= sent[1])
            .then_some(metrics)
    });
    assert_eq!(
        lab.sent(&metrics, a),
        (sent[0], sent[0] * FRAME),
        "{}",
        metrics.0
    );
    assert_eq!(
        lab.sent(&metrics, b),
        (sent[1], sent[1] * FRAME),
        "{}",
        metrics.0
    );
    for pair in readings.windows(2) {
        let ((a0, b0, _), (a1, b1, _)) = (pair[0], pair[1]);
        assert!(
            a1.0 >= a0.0 && a1.1 >= a0.1 && b1.0 >= b0.0 && b1.1 >= b0.1,
            "a reading went down: {pair:?}"
        );
    }
    for ((a_packets, a_bytes), (b_packets, b_bytes), bound) in &readings {
        assert!(
            *a_packets <= bound[0] && *b_packets <= bound[1],
            "more than was sent: {readings:?}"
        );
        assert!(
            *a_bytes <= bound[0] * FRAME && *b_bytes <= bound[1] * FRAME,
            "more than was sent: {readings:?}"
        );
    }
    assert!(daemon.stop().success());
}

/// A TUN device `name` in the thread's namespace: IP packets with no link-layer header,
/// like WireGuard's. The returned file writes packets into it (received on the device).
fn tun(name: &str) -> std::fs::File {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .expect("open /dev/net/tun");
    // SAFETY: ifreq is plain data; the ioctl reads the name and flags.
    unsafe {
        let mut request: libc::ifreq = std::mem::zeroed();
        for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
            *slot = byte as libc::c_char;
        }
        request.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        let rc = libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            libc::TUNSETIFF,
            &request,
        );
        assert_eq!(rc, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
    }
    file
}

/// An IPv4 UDP datagram from `src` to `dst`:7000 with 100 bytes of payload (128 bytes).
fn udp_packet(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut packet = vec![0x45, 0, 0, 128, 0, 0, 0x40, 0, 64, 17, 0, 0];
    packet.extend(src.octets());
    packet.extend(dst.octets());
    let sum = packet
        .chunks(2)
        .map(|word| u32::from(u16::from_be_bytes([word[0], word[1]])))
        .sum::<u32>();
    let sum = (sum & 0xffff) + (sum >> 16);
    packet[10..12].copy_from_slice(&(!((sum & 0xffff) + (sum >> 16)) as u16).to_be_bytes());
    packet.extend(40000u16.to_be_bytes());
    packet.extend(7000u16.to_be_bytes());
    packet.extend(108u16.to_be_bytes());
    packet.extend([0, 0]);
    packet.extend([0u8; 100]);
    packet
}

/// `LINK_HEADER` of the daemon with process id `pid`: interface index → learned length.
fn learned_link_headers(pid: u32) -> std::collections::BTreeMap<u64, u64> {
    let bpftool = |args: &[&str]| -> serde_json::Value {
        let output = Command::new("bpftool")
            .arg("-j")
            .args(args)
            .output()
            .expect("run bpftool (cargo xtask setup installs it)");
        assert!(output.status.success(), "bpftool {args:?}");
        serde_json::from_slice(&output.stdout).expect("bpftool prints JSON")
    };
    let ids: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .expect("the daemon's fdinfo")
        .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("map_id:"))
                .map(|id| id.trim().to_owned())
        })
        .collect();
    let id = ids
        .iter()
        .find(|id| bpftool(&["map", "show", "id", id])["name"] == maps::LINK_HEADER)
        .expect("the daemon holds LINK_HEADER");
    let bytes = |value: &serde_json::Value| -> Vec<u8> {
        value
            .as_array()
            .expect("bytes")
            .iter()
            .map(|byte| {
                u8::from_str_radix(byte.as_str().expect("hex").trim_start_matches("0x"), 16)
                    .expect("hex byte")
            })
            .collect()
    };
    bpftool(&["map", "dump", "id", id])
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|entry| {
            let value = bytes(&entry["value"]);
            let word = u64::from_le_bytes(value.try_into().ok()?);
            (word != 0).then_some((word >> 32, word & 0xffff_ffff))
        })
        .collect()
}

#[test]
fn reads_headers_directly_on_ethernet_and_ip_devices() {
    if !require_root("reads_headers_directly_on_ethernet_and_ip_devices") {
        return;
    }
    let node = NetNs::new("wd-l3");
    let remote = NetNs::new("wd-l3-remote");
    node.veth_to(&remote, ("wl0", "10.79.0.1/24"), ("wl1", "10.79.0.2/24"));
    node.ip(&["addr", "add", "fd79::1/64", "dev", "wl0", "nodad"]);
    remote.ip(&["addr", "add", "fd79::2/64", "dev", "wl1", "nodad"]);
    let mac = remote.ip_json(&["link", "show", "wl1"])[0]["address"]
        .as_str()
        .expect("mac")
        .to_owned();
    node.ip(&[
        "neigh",
        "replace",
        "fd79::2",
        "lladdr",
        &mac,
        "dev",
        "wl0",
        "nud",
        "permanent",
    ]);
    let device = node.run(|| tun("wt0"));
    node.ip(&["addr", "add", "10.80.0.1/24", "dev", "wt0"]);
    node.ip(&["addr", "add", "fd80::1/64", "dev", "wt0", "nodad"]);
    node.ip(&["link", "set", "wt0", "up"]);
    let ifindex = |name: &str| node.ip_json(&["link", "show", name])[0]["ifindex"].as_u64();
    let (veth, tun_index) = (ifindex("wl0").expect("wl0"), ifindex("wt0").expect("wt0"));

    let mut daemon = Daemon::start(
        &node,
        "[peers]\ninterfaces = [\"wl0\", \"wt0\"]\n[prober]\nenabled = false\n",
    );
    daemon.wait_ready();
    // Every datagram is received (no ICMP errors, nor neighbour discovery for them).
    let sinks = [
        node.run(|| UdpSocket::bind("10.80.0.1:7000").expect("bind")),
        remote.run(|| UdpSocket::bind("10.79.0.2:7000").expect("bind")),
        remote.run(|| UdpSocket::bind("[fd79::2]:7000").expect("bind")),
    ];
    node.run(|| {
        let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
        let socket6 = UdpSocket::bind("[::]:0").expect("bind");
        for _ in 0..20 {
            socket.send_to(&[0u8; 100], "10.79.0.2:7000").expect("send");
            socket.send_to(&[0u8; 100], "10.80.0.2:7000").expect("send");
            socket6
                .send_to(&[0u8; 100], "[fd79::2]:7000")
                .expect("send");
            socket6
                .send_to(&[0u8; 100], "[fd80::2]:7000")
                .expect("send");
        }
    });
    let packet = udp_packet(Ipv4Addr::new(10, 80, 0, 2), Ipv4Addr::new(10, 80, 0, 1));
    for _ in 0..15 {
        std::io::Write::write_all(&mut &device, &packet).expect("write into the tun device");
    }

    let on = |interface: &'static str, peer: &'static str, direction: &'static str| {
        [
            ("interface", interface),
            ("peer", peer),
            ("direction", direction),
        ]
    };
    let metrics = poll_until(Duration::from_secs(10), "the traffic counted", || {
        let metrics = daemon.metrics();
        (metrics.count(PACKETS, &on("wl0", "10.79.0.2", "tx")) >= 20
            && metrics.count(PACKETS, &on("wt0", "10.80.0.2", "tx")) >= 20
            && metrics.count(PACKETS, &on("wt0", "10.80.0.2", "rx")) >= 15
            && metrics.count(PACKETS, &on("wl0", "fd79::2", "tx")) >= 20
            && metrics.count(PACKETS, &on("wt0", "fd80::2", "tx")) >= 20)
            .then_some(metrics)
    });
    // Ethernet: 14 + 20 (40) + 8 + 100 bytes; the TUN device carries the IP packet alone.
    for (labels, packets, bytes) in [
        (on("wl0", "10.79.0.2", "tx"), 20, 20 * FRAME),
        (on("wt0", "10.80.0.2", "tx"), 20, 20 * 128),
        (on("wt0", "10.80.0.2", "rx"), 15, 15 * 128),
        (on("wl0", "fd79::2", "tx"), 20, 20 * 162),
        (on("wt0", "fd80::2", "tx"), 20, 20 * 148),
    ] {
        assert_eq!(metrics.count(PACKETS, &labels), packets, "{}", metrics.0);
        assert_eq!(metrics.count(BYTES, &labels), bytes, "{}", metrics.0);
    }
    // The programs learned each device's link-layer header, so they read headers directly.
    let learned = learned_link_headers(daemon.pid());
    assert_eq!(learned.get(&veth), Some(&14), "{learned:?}");
    assert_eq!(learned.get(&tun_index), Some(&0), "{learned:?}");
    drop(sinks);
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
    // Room for a few links only: 12 new interfaces need 24. Depending on how many fds are
    // left when the last attach fails (0 or 1: each interface takes 2), the lookup of the
    // next interface's index or aya's attach is what runs out; both must say so.
    out_of_fds("wd-nofd", 6);
}

#[test]
fn no_fd_left_for_the_interface_lookup_is_the_reason_given() {
    if !require_root("no_fd_left_for_the_interface_lookup_is_the_reason_given") {
        return;
    }
    // Not one fd left: `if_nametoindex` (it needs a socket) fails before any attach. It
    // used to be taken for "the interface is gone" and the interfaces silently skipped.
    out_of_fds("wd-nofd0", 0);
}

/// Starts a daemon, leaves it `room` fds under RLIMIT_NOFILE, adds 6 veth pairs, and
/// checks that the log, `/readyz` and `watchdog_probe_up` give the fd limit as the reason.
fn out_of_fds(name: &str, room: usize) {
    let ns = NetNs::new(name);
    let mut daemon = Daemon::start(&ns, "poll_interval = \"100ms\"\n");
    daemon.wait_ready();
    let pid = daemon.pid();
    let limit = open_fds(pid) + room;
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
