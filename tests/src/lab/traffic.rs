//! Traffic through the lab: echo round trips, background UDP streams, TCP connect
//! attempts.

use std::{
    fmt, io,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use super::{CONNECT_TIMEOUT, ECHO_PORT, Lab, Node, netns::Background, pod_ip};
use crate::poll_until;

impl Lab {
    // ---------------------------------------------------------------- connectivity

    /// One UDP request/echo round trip from pod `from` to pod `to` (through `flannel.1`),
    /// retrying every 200 ms until `timeout`. Returns the round-trip time.
    pub fn probe(&self, from: usize, to: usize, timeout: Duration) -> Result<Duration, String> {
        let target = SocketAddrV4::new(pod_ip(to), ECHO_PORT);
        self.node(from).pod.run(|| echo_round_trip(target, timeout))
    }

    /// Proves every pod reaches every other pod with a UDP round trip through VXLAN.
    pub fn check_pod_connectivity(&self) -> Result<(), ConnectivityError> {
        self.check_pod_connectivity_except(&[])
    }

    /// As [`Lab::check_pod_connectivity`], skipping the ordered pairs `(from, to)` in
    /// `expected_broken` (and pairs involving removed nodes).
    pub fn check_pod_connectivity_except(
        &self,
        expected_broken: &[(usize, usize)],
    ) -> Result<(), ConnectivityError> {
        const PAIR_TIMEOUT: Duration = Duration::from_secs(3);
        let live: Vec<usize> = self.nodes().map(Node::index).collect();
        let pairs: Vec<(usize, usize)> = live
            .iter()
            .flat_map(|&from| live.iter().map(move |&to| (from, to)))
            .filter(|&(from, to)| from != to && !expected_broken.contains(&(from, to)))
            .collect();
        // One thread per source pod, pairs from one source in sequence.
        let failures: Vec<PairFailure> = std::thread::scope(|scope| {
            let workers: Vec<_> = live
                .iter()
                .map(|&from| {
                    let targets: Vec<usize> = pairs
                        .iter()
                        .filter(|pair| pair.0 == from)
                        .map(|pair| pair.1)
                        .collect();
                    scope.spawn(move || {
                        targets
                            .into_iter()
                            .filter_map(|to| {
                                self.probe(from, to, PAIR_TIMEOUT)
                                    .err()
                                    .map(|reason| PairFailure { from, to, reason })
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|worker| worker.join().expect("probe thread panicked"))
                .collect()
        });
        if failures.is_empty() {
            Ok(())
        } else {
            Err(ConnectivityError {
                checked: pairs.len(),
                failures,
            })
        }
    }

    // ---------------------------------------------------------------- traffic

    /// Starts a background UDP stream from pod `from` to pod `to`'s echo responder at
    /// `rate_per_sec` datagrams a second, counting sends and echoed replies. It runs until
    /// [`UdpStream::stop`] or drop. Pod `to` may be removed while it runs.
    pub fn udp_stream(&self, from: usize, to: usize, rate_per_sec: u32) -> UdpStream {
        assert!(rate_per_sec > 0, "a UDP stream needs a rate above 0");
        let target = SocketAddr::V4(SocketAddrV4::new(pod_ip(to), ECHO_PORT));
        let interval = Duration::from_secs(1) / rate_per_sec;
        let counters = Arc::new(StreamCounters::default());
        let shared = Arc::clone(&counters);
        let background = Background::spawn(
            &self.node(from).pod,
            format!("udp stream pod {from} -> pod {to}"),
            || UdpSocket::bind("0.0.0.0:0"),
            move |socket, stop| stream_loop(&socket, target, interval, &shared, stop),
        );
        UdpStream {
            from,
            to,
            counters,
            background,
        }
    }

    /// Tries `n` TCP connects from pod `from` to `to_ip:port`, each with
    /// [`CONNECT_TIMEOUT`], and counts the outcomes (incident 6, ghost endpoints: connects
    /// to an address nothing owns hang in SYN_SENT and time out).
    pub fn tcp_connect_attempts(
        &self,
        from: usize,
        to_ip: Ipv4Addr,
        port: u16,
        n: u32,
    ) -> ConnectReport {
        let target = SocketAddr::V4(SocketAddrV4::new(to_ip, port));
        self.node(from).pod.run(|| {
            let mut report = ConnectReport::default();
            for _ in 0..n {
                match TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) {
                    Ok(_) => report.succeeded += 1,
                    Err(error) => {
                        match error.kind() {
                            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                                report.timed_out += 1
                            }
                            io::ErrorKind::ConnectionRefused => report.refused += 1,
                            _ => report.other += 1,
                        }
                        report.last_error = Some(error.to_string());
                    }
                }
            }
            report
        })
    }
}

/// A pod pair that failed a round trip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairFailure {
    /// Source node/pod index.
    pub from: usize,
    /// Destination node/pod index.
    pub to: usize,
    /// What went wrong.
    pub reason: String,
}

/// Pod pairs that could not complete a UDP round trip.
#[derive(Clone, Debug)]
pub struct ConnectivityError {
    /// How many ordered pairs were checked.
    pub checked: usize,
    /// The pairs that failed.
    pub failures: Vec<PairFailure>,
}

impl fmt::Display for ConnectivityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} pod pairs failed:",
            self.failures.len(),
            self.checked
        )?;
        for failure in &self.failures {
            write!(
                f,
                "\n  pod {} ({}) -> pod {} ({}): {}",
                failure.from,
                pod_ip(failure.from),
                failure.to,
                pod_ip(failure.to),
                failure.reason
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ConnectivityError {}

/// Outcome counts of [`Lab::tcp_connect_attempts`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectReport {
    /// Connects that completed.
    pub succeeded: u32,
    /// Connects that hung past [`CONNECT_TIMEOUT`] (SYN_SENT: a ghost endpoint).
    pub timed_out: u32,
    /// Connects answered with RST.
    pub refused: u32,
    /// Any other error (e.g. ICMP unreachable).
    pub other: u32,
    /// The last error seen.
    pub last_error: Option<String>,
}

impl ConnectReport {
    /// All failed connects.
    pub fn failed(&self) -> u32 {
        self.timed_out + self.refused + self.other
    }
}

// -------------------------------------------------------------------- UDP stream

#[derive(Debug, Default)]
struct StreamCounters {
    sent: AtomicU64,
    replies: AtomicU64,
    send_errors: AtomicU64,
    sent_at_last_reply: AtomicU64,
}

/// A snapshot of a [`UdpStream`]'s counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Datagrams sent.
    pub sent: u64,
    /// Echoed datagrams received back.
    pub replies: u64,
    /// Sends the local stack refused (e.g. network unreachable).
    pub send_errors: u64,
    /// Datagrams sent since the last reply arrived: grows while traffic goes into the void.
    pub unanswered_run: u64,
}

/// A background UDP stream from one pod to another pod's echo responder (see
/// [`Lab::udp_stream`]). Stops on drop.
#[derive(Debug)]
pub struct UdpStream {
    from: usize,
    to: usize,
    counters: Arc<StreamCounters>,
    background: Background,
}

impl UdpStream {
    /// The counters now.
    pub fn stats(&self) -> StreamStats {
        let sent = self.counters.sent.load(Ordering::Relaxed);
        StreamStats {
            sent,
            replies: self.counters.replies.load(Ordering::Relaxed),
            send_errors: self.counters.send_errors.load(Ordering::Relaxed),
            unanswered_run: sent
                .saturating_sub(self.counters.sent_at_last_reply.load(Ordering::Relaxed)),
        }
    }

    /// Waits (polling, up to `timeout`) until `more` replies arrived after this call.
    pub fn wait_replies(&self, more: u64, timeout: Duration) -> StreamStats {
        let target = self.stats().replies + more;
        poll_until(
            timeout,
            &format!(
                "{more} more echo replies on pod {} -> pod {}",
                self.from, self.to
            ),
            || {
                let stats = self.stats();
                (stats.replies >= target).then_some(stats)
            },
        )
    }

    /// Waits (polling, up to `timeout`) until `unanswered` datagrams in a row got no reply.
    pub fn wait_blackout(&self, unanswered: u64, timeout: Duration) -> StreamStats {
        poll_until(
            timeout,
            &format!(
                "{unanswered} unanswered datagrams in a row on pod {} -> pod {}",
                self.from, self.to
            ),
            || {
                let stats = self.stats();
                (stats.unanswered_run >= unanswered).then_some(stats)
            },
        )
    }

    /// Stops the stream and returns the final counters.
    pub fn stop(self) -> StreamStats {
        let Self {
            counters,
            background,
            ..
        } = self;
        drop(background);
        let sent = counters.sent.load(Ordering::Relaxed);
        StreamStats {
            sent,
            replies: counters.replies.load(Ordering::Relaxed),
            send_errors: counters.send_errors.load(Ordering::Relaxed),
            unanswered_run: sent
                .saturating_sub(counters.sent_at_last_reply.load(Ordering::Relaxed)),
        }
    }
}

fn stream_loop(
    socket: &UdpSocket,
    target: SocketAddr,
    interval: Duration,
    counters: &StreamCounters,
    stop: &AtomicBool,
) {
    let mut next_send = Instant::now();
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= next_send {
            let seq = counters.sent.load(Ordering::Relaxed);
            let payload = format!("wdl-stream {seq}");
            match socket.send_to(payload.as_bytes(), target) {
                Ok(_) => {
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    counters.send_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            next_send += interval;
            if next_send < now {
                // Fell behind (slow machine): do not burst to catch up.
                next_send = now + interval;
            }
        }
        // The receive timeout paces the sender; the stop flag is seen within 50 ms.
        let wait = next_send
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(1), Duration::from_millis(50));
        let _ = socket.set_read_timeout(Some(wait));
        if let Ok((len, peer)) = socket.recv_from(&mut buf)
            && peer == target
            && buf[..len].starts_with(b"wdl-stream ")
        {
            counters.replies.fetch_add(1, Ordering::Relaxed);
            counters
                .sent_at_last_reply
                .store(counters.sent.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }
}

fn echo_round_trip(target: SocketAddrV4, timeout: Duration) -> Result<Duration, String> {
    static NONCE: AtomicU64 = AtomicU64::new(0);
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("bind: {e}"))?;
    let payload = format!(
        "wdl-probe {} {}",
        std::process::id(),
        NONCE.fetch_add(1, Ordering::Relaxed)
    );
    let start = Instant::now();
    let deadline = start + timeout;
    let mut next_send = start;
    let mut last_error = None;
    let mut buf = [0u8; 128];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(match last_error {
                Some(error) => format!("no UDP echo within {timeout:?} (last error: {error})"),
                None => format!("no UDP echo within {timeout:?}"),
            });
        }
        if now >= next_send {
            if let Err(error) = socket.send_to(payload.as_bytes(), target) {
                last_error = Some(error.to_string());
            }
            next_send = now + Duration::from_millis(200);
        }
        let wait = next_send
            .min(deadline)
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        socket
            .set_read_timeout(Some(wait))
            .map_err(|e| format!("set timeout: {e}"))?;
        match socket.recv_from(&mut buf) {
            Ok((len, SocketAddr::V4(peer)))
                if peer == target && buf[..len] == *payload.as_bytes() =>
            {
                return Ok(start.elapsed());
            }
            Ok(_) => {}
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(error) => last_error = Some(error.to_string()),
        }
    }
}

/// The port [`Lab::one_way_udp`] sends to (statsd's).
pub const ONE_WAY_PORT: u16 = 8125;

/// A one-way UDP flow (statsd-like): a sender in one pod, a listener in another that
/// reads and never answers (see [`Lab::one_way_udp`]). Stops on drop.
#[derive(Debug)]
pub struct OneWayUdp {
    sent: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    // Dropped in this order: the sender first, then the listener.
    _sender: Background,
    _listener: Background,
}

impl OneWayUdp {
    /// `(sent, received)` so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.received.load(Ordering::Relaxed),
        )
    }

    /// Waits (polling, up to `timeout`) until the listener received `more` datagrams
    /// after this call.
    pub fn wait_received(&self, more: u64, timeout: Duration) -> (u64, u64) {
        let target = self.counts().1 + more;
        poll_until(
            timeout,
            &format!("{more} one-way datagrams received"),
            || {
                let counts = self.counts();
                (counts.1 >= target).then_some(counts)
            },
        )
    }
}

impl Lab {
    /// Starts a statsd-like flow: pod `from` sends `app.requests:1|c` to pod `to`'s
    /// [`ONE_WAY_PORT`] every `interval`; a listener there reads every datagram and
    /// never answers. Nothing comes back on this flow, ever.
    pub fn one_way_udp(&self, from: usize, to: usize, interval: Duration) -> OneWayUdp {
        let received = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&received);
        let listener = Background::spawn(
            &self.node(to).pod,
            format!("one-way UDP listener pod {to}"),
            || {
                let socket = UdpSocket::bind(("0.0.0.0", ONE_WAY_PORT))?;
                socket.set_read_timeout(Some(Duration::from_millis(50)))?;
                Ok(socket)
            },
            move |socket, stop| {
                let mut buf = [0u8; 512];
                while !stop.load(Ordering::Relaxed) {
                    if socket.recv_from(&mut buf).is_ok() {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                }
            },
        );
        let sent = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&sent);
        let target = SocketAddr::V4(SocketAddrV4::new(pod_ip(to), ONE_WAY_PORT));
        let sender = Background::spawn(
            &self.node(from).pod,
            format!("one-way UDP sender pod {from} -> pod {to}"),
            || UdpSocket::bind("0.0.0.0:0"),
            move |socket, stop| {
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    if socket.send_to(b"app.requests:1|c", target).is_ok() {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    next += interval;
                    let now = Instant::now();
                    if next < now {
                        next = now + interval;
                    }
                    std::thread::sleep(next - now);
                }
            },
        );
        OneWayUdp {
            sent,
            received,
            _sender: sender,
            _listener: listener,
        }
    }
}

/// The port [`Lab::tcp_bulk`] sends to.
pub const BULK_PORT: u16 = 5001;

/// A paced TCP bulk transfer between two pods (see [`Lab::tcp_bulk`]). Stops on drop.
#[derive(Debug)]
pub struct TcpBulk {
    received: Arc<AtomicU64>,
    _sender: Background,
    _listener: Background,
}

impl TcpBulk {
    /// Bytes the listener has read so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Lab {
    /// Starts a TCP bulk transfer from pod `from` to a reader in pod `to` on
    /// [`BULK_PORT`]: 64 KiB every 25 ms (about 2.6 MB/s, paced so a small machine keeps
    /// up), one long connection, reconnecting if it breaks.
    pub fn tcp_bulk(&self, from: usize, to: usize) -> TcpBulk {
        use std::io::{Read as _, Write as _};
        use std::net::TcpListener;
        let received = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&received);
        let listener = Background::spawn(
            &self.node(to).pod,
            format!("TCP bulk reader pod {to}"),
            || {
                let listener = TcpListener::bind(("0.0.0.0", BULK_PORT))?;
                listener.set_nonblocking(true)?;
                Ok(listener)
            },
            move |listener, stop| {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((mut conn, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.set_read_timeout(Some(Duration::from_millis(50)));
                    while !stop.load(Ordering::Relaxed) {
                        match conn.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => {
                                counter.fetch_add(n as u64, Ordering::Relaxed);
                            }
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                                ) => {}
                            Err(_) => break,
                        }
                    }
                }
            },
        );
        let target = SocketAddr::V4(SocketAddrV4::new(pod_ip(to), BULK_PORT));
        let sender = Background::spawn(
            &self.node(from).pod,
            format!("TCP bulk sender pod {from} -> pod {to}"),
            || Ok(()),
            move |(), stop| {
                let chunk = vec![0x5au8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut conn) = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) else {
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    };
                    let _ = conn.set_write_timeout(Some(Duration::from_millis(200)));
                    while !stop.load(Ordering::Relaxed) {
                        if conn.write_all(&chunk).is_err() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(25));
                    }
                }
            },
        );
        TcpBulk {
            received,
            _sender: sender,
            _listener: listener,
        }
    }
}

/// A port scan of a node (see [`Lab::port_scan`]). Stops on drop.
#[derive(Debug)]
pub struct PortScan {
    attempts: Arc<AtomicU64>,
    _scanner: Background,
}

impl PortScan {
    /// Connects tried so far.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }
}

impl Lab {
    /// A host firewall on node `i`: its INPUT hook drops TCP to `ports` arriving on the
    /// underlay (`eth0`), counted (table `inet host`).
    pub fn firewall_node_ports(&self, i: usize, ports: std::ops::Range<u16>) {
        let ruleset = format!(
            "table inet host {{\n chain input {{ type filter hook input priority 0; policy accept;\n  \
             iifname \"eth0\" tcp dport {}-{} counter drop\n }}\n}}\n",
            ports.start,
            ports.end - 1
        );
        self.node(i)
            .ns()
            .nft(&ruleset)
            .unwrap_or_else(|err| panic!("node {i}'s host firewall: {err}"));
    }

    /// Scans node `to`'s underlay address from node `from`'s namespace: TCP connects to
    /// ports `ports`, one after the other, each given up after 2 ms, over and over. With a
    /// host firewall on node `to` dropping them, each connect is a netfilter drop of
    /// traffic to the node itself.
    pub fn port_scan(&self, from: usize, to: usize, ports: std::ops::Range<u16>) -> PortScan {
        let attempts = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&attempts);
        let target = self.node(to).underlay_ip();
        let scanner = Background::spawn(
            self.node(from).ns(),
            format!("port scan node {from} -> node {to}"),
            || Ok(()),
            move |(), stop| {
                while !stop.load(Ordering::Relaxed) {
                    for port in ports.clone() {
                        let _ = TcpStream::connect_timeout(
                            &(target, port).into(),
                            Duration::from_millis(2),
                        );
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                }
            },
        );
        PortScan {
            attempts,
            _scanner: scanner,
        }
    }
}
