//! A Flannel-style multi-node lab: N "nodes" joined by an underlay bridge, each with a
//! `flannel.1` VXLAN device built the way Flannel's vxlan backend builds it, a `cni0`
//! bridge and one pod. Plus traffic generators and injectors that reproduce the incidents
//! of `DESIGN.md` so the daemon can be shown to name the guilty route or FDB entry.
//!
//! Addressing (node indices are 0-based, `i` in `0..nodes`):
//!
//! | what                         | value                                   |
//! |------------------------------|-----------------------------------------|
//! | underlay (`eth0` in node)    | `192.168.77.(10+i)/24`                  |
//! | VTEP MAC of `flannel.1`      | `02:fa:00:00:00:0i`                     |
//! | `flannel.1` address          | `10.244.i.0/32`, MTU 1450, VNI 1, 8472  |
//! | pod CIDR, `cni0` address     | `10.244.i.0/24`, `10.244.i.1/24`        |
//! | pod (`eth0` in pod)          | `10.244.i.2/24`, default via 10.244.i.1 |
//!
//! Every pod runs a responder thread: a UDP echo on [`ECHO_PORT`] and a TCP listener on
//! [`TCP_PORT`] that accepts and closes. Everything (threads first, then namespaces) is
//! torn down by `Drop`, also when a test panics.

use std::{
    fmt, fs,
    io::{self, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{NetNs, ip, poll_until};

/// Smallest lab [`Lab::new`] builds.
pub const MIN_NODES: usize = 2;
/// Largest lab [`Lab::new`] builds (the MAC and address scheme use one digit).
pub const MAX_NODES: usize = 6;
/// UDP port of the echo responder in every pod.
pub const ECHO_PORT: u16 = 7777;
/// TCP port every pod listens on (accepts and closes).
pub const TCP_PORT: u16 = 8080;
/// Flannel's VXLAN UDP port.
pub const VXLAN_PORT: u16 = 8472;
/// MTU of `flannel.1`, `cni0` and pod interfaces (1500 minus VXLAN overhead).
pub const OVERLAY_MTU: u32 = 1450;
/// The VXLAN device's name, as Flannel names it for VNI 1.
pub const VXLAN_DEV: &str = "flannel.1";
/// An underlay address no node owns: the "retired" VTEP of incident 1.
pub const RETIRED_VTEP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 99);
/// An underlay address no node owns, to use as a gateway that never answers (incident 7).
pub const MISSING_GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 98);
/// The MAC [`Lab::repoint_fdb`] pins for a retired VTEP: no port of the underlay has it.
pub const GHOST_MAC: &str = "02:de:ad:00:00:99";
/// Timeout of each attempt in [`Lab::tcp_connect_attempts`].
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);

/// Node `i`'s underlay address, `192.168.77.(10+i)`.
pub fn underlay_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 77, 10 + index_octet(i))
}

/// Node `i`'s VTEP MAC, `02:fa:00:00:00:0i`.
pub fn vtep_mac(i: usize) -> String {
    format!("02:fa:00:00:00:{:02x}", index_octet(i))
}

/// Node `i`'s `flannel.1` address, `10.244.i.0`.
pub fn overlay_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, index_octet(i), 0)
}

/// Node `i`'s pod CIDR, `10.244.i.0/24`.
pub fn pod_cidr(i: usize) -> String {
    format!("{}/24", overlay_ip(i))
}

/// Node `i`'s `cni0` address (the pod's gateway), `10.244.i.1`.
pub fn gateway_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, index_octet(i), 1)
}

/// The address of node `i`'s pod, `10.244.i.2`.
pub fn pod_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, index_octet(i), 2)
}

fn index_octet(i: usize) -> u8 {
    assert!(i < MAX_NODES, "node index {i} out of range 0..{MAX_NODES}");
    i as u8
}

/// One node: its namespace (underlay `eth0`, `flannel.1`, `cni0`) and its pod's namespace.
#[derive(Debug)]
pub struct Node {
    index: usize,
    // Drop order matters: the responder thread holds a reference to the pod namespace.
    responder: Background,
    pod: NetNs,
    ns: NetNs,
}

impl Node {
    /// The node's index in the lab (0-based).
    pub fn index(&self) -> usize {
        self.index
    }

    /// The node's network namespace (where the daemon would run).
    pub fn ns(&self) -> &NetNs {
        &self.ns
    }

    /// The namespace of the node's pod.
    pub fn pod_ns(&self) -> &NetNs {
        &self.pod
    }

    /// The node's underlay address on `eth0`.
    pub fn underlay_ip(&self) -> Ipv4Addr {
        underlay_ip(self.index)
    }

    /// The MAC address of the node's `flannel.1`.
    pub fn vtep_mac(&self) -> String {
        vtep_mac(self.index)
    }

    /// The node's `flannel.1` address, `10.244.i.0`.
    pub fn overlay_ip(&self) -> Ipv4Addr {
        overlay_ip(self.index)
    }

    /// The node's pod CIDR, `10.244.i.0/24`.
    pub fn pod_cidr(&self) -> String {
        pod_cidr(self.index)
    }

    /// The `cni0` address, `10.244.i.1`.
    pub fn gateway_ip(&self) -> Ipv4Addr {
        gateway_ip(self.index)
    }

    /// The pod's address, `10.244.i.2`.
    pub fn pod_ip(&self) -> Ipv4Addr {
        pod_ip(self.index)
    }
}

/// A lab of Flannel VXLAN nodes on one underlay bridge. Dropping it removes everything.
#[derive(Debug)]
pub struct Lab {
    // Dropped first: node threads and namespaces, then the underlay.
    nodes: Vec<Option<Node>>,
    underlay: NetNs,
}

impl Lab {
    /// Builds a lab of `nodes` nodes (2..=6), all pods reachable from each other.
    ///
    /// Panics (after tearing down what it built) if a step fails.
    pub fn new(nodes: usize) -> Self {
        assert!(
            (MIN_NODES..=MAX_NODES).contains(&nodes),
            "a lab has {MIN_NODES}..={MAX_NODES} nodes, not {nodes}"
        );
        let underlay = NetNs::new("wdl-ul");
        batch(
            "ip",
            Some(&underlay),
            &[
                "link add br-ul type bridge".into(),
                "link set br-ul up".into(),
            ],
        );

        // Namespaces first, so a failure below drops them all.
        let mut namespaces = Vec::with_capacity(nodes);
        for i in 0..nodes {
            let ns = NetNs::new(&format!("wdl-n{i}"));
            let pod = NetNs::new(&format!("wdl-p{i}"));
            ns.run(|| {
                write_sysctl("net/ipv4/ip_forward", "1");
                write_sysctl("net/ipv4/conf/all/rp_filter", "0");
                write_sysctl("net/ipv4/conf/default/rp_filter", "0");
                // IPv6 router and neighbour solicitations would only add noise.
                write_sysctl("net/ipv6/conf/default/disable_ipv6", "1");
            });
            pod.run(|| write_sysctl("net/ipv6/conf/default/disable_ipv6", "1"));
            namespaces.push((ns, pod));
        }

        // Both veth pairs of every node, created directly in their namespaces.
        let mut root = Vec::new();
        for (i, (ns, pod)) in namespaces.iter().enumerate() {
            root.push(format!(
                "link add name eth0 netns {} type veth peer name n{i} netns {}",
                ns.name(),
                underlay.name()
            ));
            root.push(format!(
                "link add name veth0 netns {} type veth peer name eth0 netns {}",
                ns.name(),
                pod.name()
            ));
        }
        batch("ip", None, &root);
        let ports: Vec<String> = (0..nodes)
            .flat_map(|i| {
                [
                    format!("link set n{i} master br-ul"),
                    format!("link set n{i} up"),
                ]
            })
            .collect();
        batch("ip", Some(&underlay), &ports);

        let mut built = Vec::with_capacity(nodes);
        for (i, (ns, pod)) in namespaces.into_iter().enumerate() {
            let remotes: Vec<usize> = (0..nodes).filter(|&j| j != i).collect();
            let mut commands = vec![
                "link set eth0 up".to_owned(),
                format!("addr add {}/24 dev eth0", underlay_ip(i)),
                format!(
                    "link add {VXLAN_DEV} type vxlan id 1 local {} dev eth0 dstport {VXLAN_PORT} nolearning",
                    underlay_ip(i)
                ),
                format!(
                    "link set {VXLAN_DEV} address {} mtu {OVERLAY_MTU}",
                    vtep_mac(i)
                ),
                format!("addr add {}/32 dev {VXLAN_DEV}", overlay_ip(i)),
                format!("link set {VXLAN_DEV} up"),
                "link add cni0 type bridge".to_owned(),
                format!("link set veth0 mtu {OVERLAY_MTU} master cni0 up"),
                format!("addr add {}/24 dev cni0", gateway_ip(i)),
                format!("link set cni0 mtu {OVERLAY_MTU} up"),
            ];
            for &j in &remotes {
                commands.push(format!(
                    "neigh replace {} lladdr {} dev {VXLAN_DEV} nud permanent",
                    overlay_ip(j),
                    vtep_mac(j)
                ));
                commands.push(format!(
                    "route replace {} via {} dev {VXLAN_DEV} onlink",
                    pod_cidr(j),
                    overlay_ip(j)
                ));
            }
            batch("ip", Some(&ns), &commands);
            let fdb: Vec<String> = remotes
                .iter()
                .map(|&j| {
                    format!(
                        "fdb append {} dev {VXLAN_DEV} dst {}",
                        vtep_mac(j),
                        underlay_ip(j)
                    )
                })
                .collect();
            batch("bridge", Some(&ns), &fdb);
            batch(
                "ip",
                Some(&pod),
                &[
                    format!("link set eth0 mtu {OVERLAY_MTU} up"),
                    format!("addr add {}/24 dev eth0", pod_ip(i)),
                    format!("route add default via {}", gateway_ip(i)),
                ],
            );
            let responder = responder(&pod, i);
            built.push(Some(Node {
                index: i,
                responder,
                pod,
                ns,
            }));
        }
        Self {
            nodes: built,
            underlay,
        }
    }

    /// How many nodes the lab was built with (removed ones included).
    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// Node `i`. Panics if `i` is out of range or was removed by [`Lab::remove_node`].
    pub fn node(&self, i: usize) -> &Node {
        self.nodes
            .get(i)
            .unwrap_or_else(|| panic!("the lab has {} nodes, no node {i}", self.nodes.len()))
            .as_ref()
            .unwrap_or_else(|| panic!("node {i} was removed by remove_node"))
    }

    /// The nodes not removed, in index order.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().flatten()
    }

    /// Whether node `i` was removed by [`Lab::remove_node`].
    pub fn is_removed(&self, i: usize) -> bool {
        self.nodes.get(i).is_some_and(Option::is_none)
    }

    /// The namespace holding the underlay bridge `br-ul` (ports `n0`, `n1`, …).
    pub fn underlay(&self) -> &NetNs {
        &self.underlay
    }

    /// Names of every namespace the lab currently owns (underlay, nodes, pods).
    pub fn namespace_names(&self) -> Vec<String> {
        std::iter::once(self.underlay.name().to_owned())
            .chain(
                self.nodes()
                    .flat_map(|node| [node.ns.name().to_owned(), node.pod.name().to_owned()]),
            )
            .collect()
    }

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

    // ---------------------------------------------------------------- inspection

    /// `flannel.1`'s FDB on node `i` (`bridge fdb show dev flannel.1`).
    pub fn fdb(&self, i: usize) -> Vec<FdbEntry> {
        ip_tool(
            "bridge",
            Some(&self.node(i).ns),
            &["fdb", "show", "dev", VXLAN_DEV],
        )
        .lines()
        .filter_map(FdbEntry::parse)
        .collect()
    }

    /// The state (`PERMANENT`, `REACHABLE`, `INCOMPLETE`, `FAILED`, …) of the neighbour
    /// `addr` on `dev` in node `i`, if there is an entry.
    pub fn neighbour_state(&self, i: usize, dev: &str, addr: Ipv4Addr) -> Option<String> {
        let text = ip_tool(
            "ip",
            Some(&self.node(i).ns),
            &["neigh", "show", &addr.to_string(), "dev", dev],
        );
        text.lines()
            .find_map(|line| line.split_whitespace().last().map(str::to_owned))
    }

    /// Node `i`'s IPv4 main routing table (`ip route show`).
    pub fn routes(&self, i: usize) -> String {
        ip_tool("ip", Some(&self.node(i).ns), &["route", "show"])
    }

    /// Packet counters of `dev` in node `i` (`ip -s -j link show dev <dev>`).
    pub fn link_stats(&self, i: usize, dev: &str) -> LinkStats {
        let text = ip_tool(
            "ip",
            Some(&self.node(i).ns),
            &["-s", "-j", "link", "show", "dev", dev],
        );
        let json: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("ip -s -j link show dev {dev}: {e}: {text}"));
        let stats = &json[0]["stats64"];
        let count = |dir: &str, key: &str| stats[dir][key].as_u64().unwrap_or(0);
        LinkStats {
            rx_packets: count("rx", "packets"),
            rx_dropped: count("rx", "dropped"),
            tx_packets: count("tx", "packets"),
            tx_dropped: count("tx", "dropped"),
            tx_errors: count("tx", "errors"),
        }
    }

    /// Runs `ip args…` inside node `i`'s namespace, panicking on failure.
    pub fn ip_in(&self, i: usize, args: &[&str]) {
        let mut full = vec!["-n", self.node(i).ns.name()];
        full.extend_from_slice(args);
        ip(&full);
    }

    // ---------------------------------------------------------------- injectors

    /// Incident 1, ghost VTEP: replaces node `node`'s FDB entry for `remote`'s VTEP MAC so
    /// it points at `new_dst` (normally [`RETIRED_VTEP`]).
    ///
    /// When `new_dst` is an underlay address no live node owns, node `node` also gets a
    /// permanent neighbour entry for it with [`GHOST_MAC`], which no underlay port has:
    /// VXLAN packets then leave the node and vanish in the underlay, with no local drop,
    /// exactly as in the incident (without it, ARP for the address would fail and the
    /// node would count `NEIGH_FAILED` drops, which the real incident never showed).
    pub fn repoint_fdb(&self, node: usize, remote: usize, new_dst: Ipv4Addr) {
        let ns = &self.node(node).ns;
        batch(
            "bridge",
            Some(ns),
            &[format!(
                "fdb replace {} dev {VXLAN_DEV} dst {new_dst} self permanent",
                vtep_mac(remote)
            )],
        );
        let on_underlay = new_dst.octets()[..3] == [192, 168, 77];
        let owned = self.nodes().any(|n| n.underlay_ip() == new_dst);
        if on_underlay && !owned {
            batch(
                "ip",
                Some(ns),
                &[format!(
                    "neigh replace {new_dst} lladdr {GHOST_MAC} dev eth0 nud permanent"
                )],
            );
        }
        let entries = self.fdb(node);
        let mac = vtep_mac(remote);
        assert!(
            entries
                .iter()
                .any(|e| e.mac == mac && e.dst == Some(new_dst))
                && !entries
                    .iter()
                    .any(|e| e.mac == mac && e.dst != Some(new_dst)),
            "repointing {mac} to {new_dst} on node {node} left: {entries:?}"
        );
    }

    /// Incident 7 (and 4), stale gateway: `ip route replace <prefix> via <gw> dev eth0
    /// onlink` on node `node`. Use a `gw` nobody owns (e.g. [`MISSING_GATEWAY`]): ARP for
    /// it never resolves, the neighbour goes INCOMPLETE → FAILED, and the node drops the
    /// traffic with `NEIGH_FAILED`.
    pub fn route_via_missing_gateway(&self, node: usize, prefix: &str, gw: Ipv4Addr) {
        self.ip_in(
            node,
            &[
                "route",
                "replace",
                prefix,
                "via",
                &gw.to_string(),
                "dev",
                "eth0",
                "onlink",
            ],
        );
    }

    /// Sets `dev` administratively down in node `node`. For `flannel.1` or `eth0` the
    /// kernel then removes the routes through it and the node answers with ICMP
    /// unreachable (it has no default route).
    pub fn down_link(&self, node: usize, dev: &str) {
        self.ip_in(node, &["link", "set", "dev", dev, "down"]);
    }

    /// Route via a downed link: takes the underlay side of node `node`'s `eth0` down, so
    /// `eth0` loses carrier while staying admin-up. The routes through it stay (marked
    /// `linkdown`) and keep drawing traffic, which the node can no longer send.
    pub fn cut_carrier(&self, node: usize) {
        let port = format!("n{}", self.node(node).index);
        ip(&[
            "-n",
            self.underlay.name(),
            "link",
            "set",
            "dev",
            &port,
            "down",
        ]);
    }

    /// Adds (or replaces) `blackhole <prefix>` on node `node`: a more specific blackhole
    /// draws the traffic of a pod CIDR route and discards it.
    pub fn blackhole_route(&self, node: usize, prefix: &str) {
        self.ip_in(node, &["route", "replace", "blackhole", prefix]);
    }

    /// The decommissioned node: deletes node `j`'s namespaces (node and pod, with their
    /// veths) while every other node keeps its route, neighbour and FDB entry for `j`.
    /// Traffic to pod `j` then goes to an underlay address nothing answers (ARP for it
    /// fails on the senders' `eth0`).
    ///
    /// Stop [`UdpStream`]s *from* pod `j` first: their threads hold the pod namespace
    /// alive (unnamed) until they stop. Streams *to* pod `j` may keep running.
    pub fn remove_node(&mut self, j: usize) {
        let node = self.nodes[j]
            .take()
            .unwrap_or_else(|| panic!("node {j} was already removed"));
        drop(node);
    }

    /// Incident 2, VTEP collapse: flushes `flannel.1`'s FDB on node `node`. Routes and
    /// neighbours stay, so traffic to every remote pod reaches `flannel.1`, which finds no
    /// FDB entry and drops it.
    pub fn flush_fdb(&self, node: usize) {
        let ns = &self.node(node).ns;
        ip_tool("bridge", Some(ns), &["fdb", "flush", "dev", VXLAN_DEV]);
        // Whatever the flush kept (older iproute2 keeps permanent entries), delete.
        let leftovers: Vec<String> = self
            .fdb(node)
            .into_iter()
            .map(|e| match e.dst {
                Some(dst) => format!("fdb del {} dev {VXLAN_DEV} dst {dst}", e.mac),
                None => format!("fdb del {} dev {VXLAN_DEV}", e.mac),
            })
            .collect();
        if !leftovers.is_empty() {
            batch("bridge", Some(ns), &leftovers);
        }
        let left = self.fdb(node);
        assert!(left.is_empty(), "flushing node {node}'s FDB left {left:?}");
    }

    /// Heals [`Lab::flush_fdb`]: appends node `node`'s FDB entry for every other live node
    /// again, as Flannel would.
    pub fn restore_fdb(&self, node: usize) {
        let ns = &self.node(node).ns;
        let entries: Vec<String> = (0..self.size())
            .filter(|&j| j != node && !self.is_removed(j))
            .map(|j| {
                format!(
                    "fdb append {} dev {VXLAN_DEV} dst {}",
                    vtep_mac(j),
                    underlay_ip(j)
                )
            })
            .collect();
        batch("bridge", Some(ns), &entries);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Threads and node namespaces first (each Node joins its thread before its
        // namespaces go), then the underlay. Signal every thread first so their
        // receive timeouts run out together.
        for node in self.nodes.iter().flatten() {
            node.responder.stop.store(true, Ordering::Relaxed);
        }
        self.nodes.clear();
    }
}

// -------------------------------------------------------------------- results

/// One `flannel.1` FDB entry as `bridge fdb show` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdbEntry {
    /// The remote VTEP's MAC.
    pub mac: String,
    /// The underlay address the entry sends to.
    pub dst: Option<Ipv4Addr>,
    /// The remaining words, e.g. `self permanent`.
    pub flags: String,
}

impl FdbEntry {
    fn parse(line: &str) -> Option<Self> {
        let mut words = line.split_whitespace();
        let mac = words.next()?.to_owned();
        let mut dst = None;
        let mut flags = Vec::new();
        while let Some(word) = words.next() {
            match word {
                "dst" => dst = words.next().and_then(|a| a.parse().ok()),
                "dev" => {
                    words.next();
                }
                other => flags.push(other),
            }
        }
        Some(Self {
            mac,
            dst,
            flags: flags.join(" "),
        })
    }
}

/// Interface packet counters, see [`Lab::link_stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Packets received.
    pub rx_packets: u64,
    /// Packets dropped on receive.
    pub rx_dropped: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Packets dropped on transmit (e.g. `flannel.1` with no FDB entry).
    pub tx_dropped: u64,
    /// Transmit errors (e.g. no route to the remote VTEP).
    pub tx_errors: u64,
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

// -------------------------------------------------------------------- background threads

/// A thread living in a network namespace, stopped and joined on drop (before the
/// namespace goes: the thread holds a reference to it).
#[derive(Debug)]
struct Background {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Background {
    /// Spawns a thread in `ns` that runs `setup` (binding sockets), reports its outcome
    /// (this call panics with `what` if it failed), then runs `work` until asked to stop.
    fn spawn<S>(
        ns: &NetNs,
        what: String,
        setup: impl FnOnce() -> io::Result<S> + Send + 'static,
        work: impl FnOnce(S, &AtomicBool) + Send + 'static,
    ) -> Self {
        let path = ns.path();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let (ready_tx, ready_rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("wdl-background".into())
            .spawn(move || {
                let state = match enter_netns(&path).and_then(|()| setup()) {
                    Ok(state) => state,
                    Err(error) => {
                        let _ = ready_tx.send(Err(error));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                work(state, &flag);
            })
            .expect("spawn a lab thread");
        let mut background = Self {
            stop,
            handle: Some(handle),
        };
        match ready_rx.recv() {
            Ok(Ok(())) => background,
            Ok(Err(error)) => {
                background.join();
                panic!("{what} in {}: {error}", ns.name())
            }
            Err(_) => {
                background.join();
                panic!("{what} in {}: the thread died during setup", ns.name())
            }
        }
    }

    fn join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.join();
    }
}

/// The pod's responder: UDP echo on [`ECHO_PORT`], TCP accept-and-close on [`TCP_PORT`].
fn responder(pod: &NetNs, index: usize) -> Background {
    Background::spawn(
        pod,
        format!("the responder of pod {index}"),
        || {
            let udp = UdpSocket::bind(("0.0.0.0", ECHO_PORT))?;
            udp.set_read_timeout(Some(Duration::from_millis(50)))?;
            let tcp = TcpListener::bind(("0.0.0.0", TCP_PORT))?;
            tcp.set_nonblocking(true)?;
            Ok((udp, tcp))
        },
        |(udp, tcp), stop| {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((len, peer)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(&buf[..len], peer);
                }
                while let Ok((connection, _)) = tcp.accept() {
                    drop(connection);
                }
            }
        },
    )
}

fn enter_netns(path: &Path) -> io::Result<()> {
    let file = fs::File::open(path)?;
    // SAFETY: a valid namespace fd; setns only affects the calling thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// -------------------------------------------------------------------- commands

/// Writes a sysctl of the calling thread's network namespace (`net/ipv4/ip_forward`).
fn write_sysctl(key: &str, value: &str) {
    let path = Path::new("/proc/sys").join(key);
    fs::write(&path, value).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Runs `tool -n <ns> -batch -` (or in the root namespace) with `commands` on stdin.
fn batch(tool: &str, ns: Option<&NetNs>, commands: &[String]) {
    let mut command = Command::new(tool);
    if let Some(ns) = ns {
        command.args(["-n", ns.name()]);
    }
    let mut child = command
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    let script = commands.join("\n") + "\n";
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .unwrap_or_else(|e| panic!("write to {tool}: {e}"));
    let result = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait for {tool}: {e}"));
    assert!(
        result.status.success(),
        "{tool} -batch in {}: {}\nscript:\n{script}",
        ns.map_or("the root namespace", NetNs::name),
        String::from_utf8_lossy(&result.stderr)
    );
}

/// Runs `tool [-n ns] args…`, panicking on failure; returns stdout.
fn ip_tool(tool: &str, ns: Option<&NetNs>, args: &[&str]) -> String {
    let mut command = Command::new(tool);
    if let Some(ns) = ns {
        command.args(["-n", ns.name()]);
    }
    let result = command
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    assert!(
        result.status.success(),
        "{tool} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&result.stderr)
    );
    String::from_utf8_lossy(&result.stdout).into_owned()
}
