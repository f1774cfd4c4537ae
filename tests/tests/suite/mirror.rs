//! The network mirror loads a namespace's real state by netlink dump and follows every
//! change by notification.

use std::{
    collections::BTreeSet,
    net::{IpAddr, UdpSocket},
    time::Duration,
};

use watchdog::{
    model::net::{NeighState, Prefix, Resolution, RouteKind, Snapshot},
    sources::mirror::MirrorOptions,
};
use watchdog_tests::{NetNs, poll_until, require_root};

mod churn;

const WAIT: Duration = Duration::from_secs(15);

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn prefix(s: &str) -> Prefix {
    s.parse().expect("prefix")
}

const VTEP_MAC: [u8; 6] = [0x02, 0x42, 0x0a, 0xf4, 0x03, 0x00];

/// Waits until `check` holds on the mirror's snapshot.
fn until(mirror: &LiveMirror, what: &str, check: impl Fn(&Snapshot) -> bool) {
    poll_until(WAIT, what, || {
        mirror.mirror().with_snapshot(|s| check(s)).then_some(())
    });
}

/// The IPv4 routes of every table as (table, destination, type), as `ip` shows them.
fn kernel_ipv4_routes(ns: &NetNs) -> BTreeSet<(u32, String, String)> {
    let routes = ns.ip_json(&["-4", "route", "show", "table", "all"]);
    routes
        .as_array()
        .expect("route list")
        .iter()
        .map(|r| {
            let table = match r["table"].as_str() {
                Some("local") => 255,
                Some("default") => 253,
                Some(number) => number.parse().expect("table number"),
                None => 254,
            };
            let dst = match r["dst"].as_str().expect("dst") {
                "default" => "0.0.0.0/0".to_owned(),
                dst if dst.contains('/') => dst.to_owned(),
                host => format!("{host}/32"),
            };
            let kind = r["type"].as_str().unwrap_or("unicast").to_owned();
            (table, dst, kind)
        })
        .collect()
}

fn mirror_ipv4_routes(s: &Snapshot) -> BTreeSet<(u32, String, String)> {
    s.routes()
        .filter(|r| r.dst.is_ipv4())
        .map(|r| {
            let kind = match r.kind {
                RouteKind::Unicast => "unicast".to_owned(),
                kind => kind.word().unwrap_or("?").to_owned(),
            };
            (r.table, r.dst.to_string(), kind)
        })
        .collect()
}

/// Waits until the mirror's IPv4 routes equal the kernel's.
fn until_routes_match_kernel(ns: &NetNs, mirror: &LiveMirror, when: &str) {
    let mut last = (BTreeSet::new(), BTreeSet::new());
    let matched = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        poll_until(
            WAIT,
            "the mirror's IPv4 routes to equal the kernel's",
            || {
                let kernel = kernel_ipv4_routes(ns);
                let mirrored = mirror.mirror().with_snapshot(mirror_ipv4_routes);
                let equal = kernel == mirrored;
                last = (kernel, mirrored);
                equal.then_some(())
            },
        )
    }));
    if matched.is_err() {
        let (kernel, mirrored) = last;
        panic!(
            "{when}: routes differ\nonly in kernel: {:?}\nonly in mirror: {:?}",
            kernel.difference(&mirrored).collect::<Vec<_>>(),
            mirrored.difference(&kernel).collect::<Vec<_>>()
        );
    }
}

#[test]
fn mirror_loads_and_follows_the_namespace() {
    if !require_root("mirror_loads_and_follows_the_namespace") {
        return;
    }
    let node = NetNs::new("wd-mirror");
    let peer = NetNs::new("wd-mirror-peer");

    node.ip(&[
        "link",
        "add",
        "veth0",
        "type",
        "veth",
        "peer",
        "name",
        "veth1",
        "netns",
        peer.name(),
    ]);
    node.ip(&["addr", "add", "192.168.50.1/24", "dev", "veth0"]);
    node.ip(&["addr", "add", "fd00:50::1/64", "dev", "veth0", "nodad"]);
    node.ip(&["link", "set", "veth0", "mtu", "1450", "up"]);
    peer.ip(&["addr", "add", "192.168.50.2/24", "dev", "veth1"]);
    peer.ip(&["link", "set", "veth1", "up"]);
    node.ip(&["link", "add", "br0", "type", "bridge"]);
    node.ip(&["link", "set", "br0", "up"]);
    node.ip(&[
        "link",
        "add",
        "vx0",
        "type",
        "vxlan",
        "id",
        "42",
        "local",
        "192.168.50.1",
        "dev",
        "veth0",
        "dstport",
        "8472",
        "nolearning",
    ]);
    node.ip(&["addr", "add", "10.244.0.0/32", "dev", "vx0"]);
    node.ip(&["link", "set", "vx0", "up"]);
    node.ip(&[
        "route",
        "add",
        "10.244.3.0/24",
        "via",
        "10.244.3.0",
        "dev",
        "vx0",
        "onlink",
    ]);
    node.ip(&["route", "add", "10.20.0.0/16", "via", "192.168.50.2"]);
    node.ip(&[
        "route",
        "add",
        "10.30.0.0/16",
        "via",
        "192.168.50.2",
        "dev",
        "veth0",
        "table",
        "100",
    ]);
    node.ip(&["route", "add", "blackhole", "10.66.0.0/16"]);
    node.ip(&[
        "route",
        "add",
        "unreachable",
        "10.77.0.0/16",
        "table",
        "100",
    ]);
    node.ip(&[
        "-6",
        "route",
        "add",
        "fd00:99::/64",
        "via",
        "fd00:50::2",
        "dev",
        "veth0",
    ]);
    node.ip(&[
        "rule",
        "add",
        "from",
        "10.5.0.0/16",
        "lookup",
        "100",
        "priority",
        "1000",
    ]);
    node.ip(&[
        "neigh",
        "add",
        "192.168.50.9",
        "lladdr",
        "02:00:00:00:00:09",
        "dev",
        "veth0",
        "nud",
        "permanent",
    ]);
    node.bridge(&[
        "fdb",
        "append",
        "00:00:00:00:00:00",
        "dev",
        "vx0",
        "dst",
        "192.168.50.2",
    ]);
    node.bridge(&[
        "fdb",
        "append",
        "00:00:00:00:00:00",
        "dev",
        "vx0",
        "dst",
        "192.168.50.3",
    ]);
    node.bridge(&[
        "fdb",
        "add",
        "02:42:0a:f4:03:00",
        "dev",
        "vx0",
        "dst",
        "192.168.50.2",
        "self",
        "permanent",
    ]);

    let live = LiveMirror::start(&node);
    let mirror = live.mirror();
    let stats = mirror.stats();
    assert_eq!(stats.resyncs_initial, 1);
    assert_eq!(stats.resyncs_overrun, 0);

    // The initial load.
    let (veth0, vx0) = mirror.with_snapshot(|s| {
        let veth0 = s.link_by_name("veth0").expect("veth0").clone();
        assert_eq!(veth0.kind.as_deref(), Some("veth"));
        assert!(veth0.admin_up);
        assert_eq!(veth0.mtu, 1450);
        assert!(veth0.mac.is_some());
        let br0 = s.link_by_name("br0").expect("br0");
        assert_eq!(br0.kind.as_deref(), Some("bridge"));
        let vx0 = s.link_by_name("vx0").expect("vx0").clone();
        assert_eq!(vx0.kind.as_deref(), Some("vxlan"));
        let vxlan = vx0.vxlan.clone().expect("vxlan data");
        assert_eq!(vxlan.vni, 42);
        assert_eq!(vxlan.local, Some(ip("192.168.50.1")));
        assert_eq!(vxlan.port, 8472);
        assert_eq!(vxlan.underlay, Some(veth0.index));
        assert!(!vxlan.learning);
        assert!(s.link_by_name("lo").is_some());

        assert!(
            s.addresses()
                .any(|a| a.ifindex == veth0.index && a.prefix == prefix("192.168.50.1/24"))
        );
        assert!(
            s.addresses()
                .any(|a| a.ifindex == veth0.index && a.prefix == prefix("fd00:50::1/64"))
        );

        let overlay = s.lookup(ip("10.244.3.9")).expect("overlay route");
        assert_eq!(
            overlay.display(s).to_string(),
            "10.244.3.0/24 via 10.244.3.0 dev vx0 onlink table main"
        );
        assert!(overlay.onlink);
        let lan = s.lookup(ip("10.20.1.1")).expect("10.20/16");
        assert_eq!(
            (lan.gateway, lan.oif),
            (Some(ip("192.168.50.2")), Some(veth0.index))
        );
        let t100 = s.lookup_in_table(100, ip("10.30.1.1")).expect("table 100");
        assert_eq!(t100.table, 100);
        assert!(s.lookup(ip("10.30.1.1")).is_none(), "not in main");
        assert_eq!(
            s.lookup(ip("10.66.1.1")).expect("blackhole").kind,
            RouteKind::Blackhole
        );
        assert_eq!(
            s.lookup_in_table(100, ip("10.77.1.1"))
                .expect("unreachable")
                .kind,
            RouteKind::Unreachable
        );
        let v6 = s.lookup(ip("fd00:99::1")).expect("IPv6 route");
        assert_eq!(v6.gateway, Some(ip("fd00:50::2")));
        // The local table is mirrored too.
        assert!(
            s.routes_in_table(255)
                .any(|r| r.kind == RouteKind::Local && r.dst == prefix("192.168.50.1/32"))
        );

        let rule = s.rules().find(|r| r.priority == 1000).expect("rule 1000");
        assert_eq!((rule.src, rule.table), (Some(prefix("10.5.0.0/16")), 100));
        match s.lookup_with_rules(ip("10.30.1.1"), Some(ip("10.5.0.7"))) {
            Some(Resolution::Route { route, rule }) => {
                assert_eq!(route.table, 100);
                assert_eq!(rule.map(|r| r.priority), Some(1000));
            }
            other => panic!("{other:?}"),
        }
        match s.lookup_with_rules(ip("192.168.50.1"), None) {
            Some(Resolution::Route { route, .. }) => assert_eq!(route.kind, RouteKind::Local),
            other => panic!("{other:?}"),
        }

        let n = s
            .neighbour(veth0.index, &ip("192.168.50.9"))
            .expect("permanent neighbour");
        assert!(n.state.is_permanent());
        assert_eq!(n.mac, Some([2, 0, 0, 0, 0, 9]));

        let fdb: Vec<_> = s.fdb_of(vx0.index).cloned().collect();
        let defaults: BTreeSet<_> = fdb
            .iter()
            .filter(|e| e.mac == [0; 6])
            .filter_map(|e| e.dst)
            .collect();
        assert_eq!(
            defaults,
            [ip("192.168.50.2"), ip("192.168.50.3")].into(),
            "{fdb:?}"
        );
        let vtep = fdb
            .iter()
            .find(|e| e.mac == VTEP_MAC)
            .unwrap_or_else(|| panic!("per-MAC entry in {fdb:?}"));
        assert_eq!(vtep.dst, Some(ip("192.168.50.2")));
        assert!(vtep.state.is_permanent());
        (veth0, vx0)
    });
    until_routes_match_kernel(&node, &live, "after the initial load");

    let mut changes = mirror.subscribe();
    let generation = mirror.generation();

    // Route replace.
    node.ip(&["route", "replace", "10.20.0.0/16", "via", "192.168.50.3"]);
    until(&live, "10.20/16 via .3", |s| {
        s.lookup(ip("10.20.1.1"))
            .is_some_and(|r| r.gateway == Some(ip("192.168.50.3")))
    });
    assert!(mirror.generation() > generation);
    assert!(changes.has_changed().expect("mirror alive"));
    changes.mark_unchanged();

    // Route deletion in table 100.
    node.ip(&["route", "del", "10.30.0.0/16", "table", "100"]);
    until(&live, "table 100 without 10.30/16", |s| {
        s.lookup_in_table(100, ip("10.30.1.1")).is_none()
    });

    // Neighbour change.
    node.ip(&[
        "neigh",
        "replace",
        "192.168.50.9",
        "lladdr",
        "02:00:00:00:00:0a",
        "dev",
        "veth0",
        "nud",
        "permanent",
    ]);
    until(&live, "the neighbour's new MAC", |s| {
        s.neighbour(veth0.index, &ip("192.168.50.9"))
            .is_some_and(|n| n.mac == Some([2, 0, 0, 0, 0, 0x0a]))
    });

    // A neighbour that never answers goes INCOMPLETE, then FAILED (through the timer).
    node.run(|| {
        let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
        let _ = socket.send_to(b"anyone?", "192.168.50.77:9");
    });
    until(&live, "192.168.50.77 FAILED", |s| {
        s.neighbour(veth0.index, &ip("192.168.50.77"))
            .is_some_and(|n| n.state.is_failed())
    });
    assert_eq!(
        live.mirror().with_snapshot(|s| s
            .neighbour(veth0.index, &ip("192.168.50.77"))
            .map(|n| n.state)),
        Some(NeighState::FAILED)
    );

    // FDB: replace the VTEP of a MAC, delete one default destination.
    node.bridge(&[
        "fdb",
        "replace",
        "02:42:0a:f4:03:00",
        "dev",
        "vx0",
        "dst",
        "192.168.50.4",
        "self",
        "permanent",
    ]);
    until(&live, "the per-MAC FDB entry to point at .4", |s| {
        let dsts: Vec<_> = s
            .fdb_of(vx0.index)
            .filter(|e| e.mac == VTEP_MAC)
            .map(|e| e.dst)
            .collect();
        dsts == [Some(ip("192.168.50.4"))]
    });
    node.bridge(&[
        "fdb",
        "del",
        "00:00:00:00:00:00",
        "dev",
        "vx0",
        "dst",
        "192.168.50.3",
    ]);
    until(&live, "one default FDB destination left", |s| {
        let dsts: Vec<_> = s
            .fdb_of(vx0.index)
            .filter(|e| e.mac == [0; 6])
            .map(|e| e.dst)
            .collect();
        dsts == [Some(ip("192.168.50.2"))]
    });

    // Link down: the flag, and the routes the kernel flushes without a word.
    node.ip(&["link", "set", "br0", "down"]);
    until(&live, "br0 down", |s| {
        s.link_by_name("br0").is_some_and(|l| !l.admin_up)
    });
    node.ip(&["link", "set", "vx0", "down"]);
    until(&live, "vx0 down", |s| {
        s.link_by_name("vx0")
            .is_some_and(|l| !l.admin_up && !l.oper_up)
    });
    until_routes_match_kernel(&node, &live, "after vx0 went down");
    node.ip(&["link", "set", "vx0", "up"]);
    node.ip(&[
        "route",
        "add",
        "10.244.3.0/24",
        "via",
        "10.244.3.0",
        "dev",
        "vx0",
        "onlink",
    ]);
    until(&live, "the overlay route back", |s| {
        s.lookup(ip("10.244.3.1"))
            .is_some_and(|r| r.oif == Some(vx0.index))
    });

    // Deleting the VXLAN device takes its FDB, addresses and routes with it.
    node.ip(&["link", "del", "vx0"]);
    until(&live, "vx0 and everything on it gone", |s| {
        s.link(vx0.index).is_none()
            && s.link_by_name("vx0").is_none()
            && s.fdb_of(vx0.index).next().is_none()
            && s.addresses().all(|a| a.ifindex != vx0.index)
            && s.routes().all(|r| r.oifs().all(|oif| oif != vx0.index))
    });
    until_routes_match_kernel(&node, &live, "after vx0 was deleted");

    // The underlay goes down: the kernel silently drops its IPv4 routes and flushes its
    // neighbours, permanent ones included.
    node.ip(&["link", "set", "veth0", "down"]);
    until_routes_match_kernel(&node, &live, "after veth0 went down");
    until(&live, "no neighbours on veth0", |s| {
        s.neighbours().all(|n| n.ifindex != veth0.index)
    });
    let kernel_neighbours = node.ip_json(&["neigh", "show", "dev", "veth0"]);
    assert_eq!(kernel_neighbours.as_array().map(Vec::len), Some(0));

    // A new link appears.
    node.ip(&["link", "add", "br1", "type", "bridge"]);
    until(&live, "br1", |s| {
        s.link_by_name("br1")
            .is_some_and(|l| l.kind.as_deref() == Some("bridge"))
    });

    let stats = mirror.stats();
    assert_eq!(stats.resyncs_overrun, 0);
    assert!(stats.updates > 10, "{stats:?}");
    let counts = mirror.with_snapshot(Snapshot::counts);
    assert_eq!(stats.objects, counts);
}

#[test]
fn mirror_reloads_after_an_overrun() {
    if !require_root("mirror_reloads_after_an_overrun") {
        return;
    }
    let node = NetNs::new("wd-mirror-overrun");
    node.ip(&[
        "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
    ]);
    node.ip(&["addr", "add", "10.200.0.1/16", "dev", "veth0"]);
    node.ip(&["link", "set", "veth0", "up"]);
    node.ip(&["link", "set", "veth1", "up"]);
    let live = LiveMirror::start_with(
        &node,
        MirrorOptions {
            receive_buffer: 16 * 1024,
        },
    );
    let mut batch = String::new();
    for i in 0..3000u32 {
        batch.push_str(&format!(
            "route add 20.{}.{}.0/24 via 10.200.0.2\n",
            i >> 8,
            i & 0xff
        ));
    }
    // Holding the read lock stalls the mirror's writer, and with it the runtime thread
    // that reads the socket: the burst overruns the small buffer.
    live.mirror().with_snapshot(|_| {
        node.ip_batch(&batch);
    });
    until(&live, "all 3000 routes after a reload", |s| {
        s.routes_in_table(254)
            .filter(|r| r.gateway == Some(ip("10.200.0.2")))
            .count()
            == 3000
    });
    let stats = live.mirror().stats();
    assert!(stats.resyncs_overrun >= 1, "{stats:?}");
    until_routes_match_kernel(&node, &live, "after the reload");
    // And it keeps following.
    node.ip(&["route", "del", "20.0.0.0/24"]);
    until(&live, "20.0.0.0/24 deleted", |s| {
        s.lookup(ip("20.0.0.1")).is_none()
    });
}

#[test]
fn a_reload_after_an_overrun_does_not_bring_back_what_was_deleted() {
    if !require_root("a_reload_after_an_overrun_does_not_bring_back_what_was_deleted") {
        return;
    }
    let node = NetNs::new("wd-mirror-ghost");
    node.ip(&[
        "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
    ]);
    node.ip(&["addr", "add", "10.201.0.1/16", "dev", "veth0"]);
    node.ip(&["link", "set", "veth0", "up"]);
    node.ip(&["link", "set", "veth1", "up"]);
    let live = LiveMirror::start_with(
        &node,
        MirrorOptions {
            receive_buffer: 16 * 1024,
        },
    );
    let mut burst = String::new();
    for i in 0..3000u32 {
        burst.push_str(&format!(
            "route add 21.{}.{}.0/24 via 10.201.0.2\n",
            i >> 8,
            i & 0xff
        ));
    }
    // Holding the read lock stalls the mirror (its writer blocks on the first change, and
    // with it the only runtime thread, which reads the socket). `ghost0` (a veth pair) is
    // created and its RTM_NEWLINKs queued in the socket; the burst overruns the buffer; the
    // RTM_DELLINKs of the pair are lost. The kernel reports the overrun before the queued
    // messages, so applying them after the reload would bring `ghost0` back for good.
    live.mirror().with_snapshot(|_| {
        node.ip(&["route", "add", "21.255.255.0/24", "via", "10.201.0.2"]);
        node.ip(&[
            "link", "add", "ghost0", "type", "veth", "peer", "name", "ghost1",
        ]);
        node.ip_batch(&burst);
        node.ip(&["link", "del", "ghost0"]);
    });
    until(&live, "a reload after the overrun", |_| {
        live.mirror().stats().resyncs_overrun >= 1
    });
    until_routes_match_kernel(&node, &live, "after the reload");
    until(&live, "no ghost0", |s| {
        s.links().all(|l| l.name != "ghost0")
    });
    // The kernel's links, exactly.
    let fresh = node.run(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(watchdog::sources::mirror::dump())
            .expect("dump")
    });
    let names = |s: &Snapshot| s.links().map(|l| l.name.clone()).collect::<BTreeSet<_>>();
    until(&live, "the kernel's links", |s| names(s) == names(&fresh));
    // And it keeps following the new subscription.
    node.ip(&[
        "link", "add", "after0", "type", "veth", "peer", "name", "after1",
    ]);
    until(&live, "after0", |s| s.links().any(|l| l.name == "after0"));
}

/// Sends one broadcast Ethernet frame with source MAC `src` out of `dev` (an AF_PACKET
/// socket; call inside the namespace). A bridge port behind `dev` learns `src` from it.
fn send_frame(dev: &str, src: [u8; 6]) {
    let name = std::ffi::CString::new(dev).expect("device name");
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert_ne!(ifindex, 0, "no device {dev}");
    // SAFETY: plain socket(2); the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    assert!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    let mut frame = [0u8; 60];
    frame[..6].copy_from_slice(&[0xff; 6]);
    frame[6..12].copy_from_slice(&src);
    frame[12..14].copy_from_slice(&0x88b5u16.to_be_bytes()); // local experimental
    // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_ifindex = ifindex as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    // SAFETY: a valid fd, buffer and address of the given lengths.
    let sent = unsafe {
        libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&raw const to).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    let error = std::io::Error::last_os_error();
    // SAFETY: the fd opened above.
    unsafe { libc::close(fd) };
    assert_eq!(sent, frame.len() as isize, "send on {dev}: {error}");
}

/// A bridge keeps one entry per MAC: when a learned MAC shows up behind another port the
/// kernel moves the entry and announces only the new port (no RTM_DELNEIGH for the old
/// one). The mirror must not keep the old port's entry.
#[test]
fn mirror_follows_a_learned_bridge_entry_moving_between_ports() {
    if !require_root("mirror_follows_a_learned_bridge_entry_moving_between_ports") {
        return;
    }
    const MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 0x01];
    let node = NetNs::new("wd-mirror-fdbmove");
    node.ip(&["link", "add", "br0", "type", "bridge"]);
    node.ip(&["link", "set", "br0", "up"]);
    for (host, port) in [("ha", "hap"), ("hb", "hbp")] {
        node.ip(&["link", "add", host, "type", "veth", "peer", "name", port]);
        node.ip(&["link", "set", port, "master", "br0"]);
        node.ip(&["link", "set", port, "up"]);
        node.ip(&["link", "set", host, "up"]);
    }
    let live = LiveMirror::start(&node);
    let index = |name: &str| {
        live.mirror()
            .with_snapshot(|s| s.link_by_name(name).map(|l| l.index))
            .unwrap_or_else(|| panic!("{name} in the mirror"))
    };
    let (br0, hap, hbp) = (index("br0"), index("hap"), index("hbp"));
    // (port, master) of the entries for MAC: in the mirror, and as `bridge fdb` shows.
    let mirrored = || {
        live.mirror().with_snapshot(|s| {
            s.fdb()
                .filter(|e| e.mac == MAC)
                .map(|e| (e.ifindex, e.master))
                .collect::<Vec<_>>()
        })
    };
    let kernel = || {
        let output = std::process::Command::new("ip")
            .args(["netns", "exec", node.name(), "bridge", "-j", "fdb", "show"])
            .output()
            .expect("bridge -j fdb show");
        let entries: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("bridge -j prints JSON");
        let mut out: Vec<(u32, Option<u32>)> = entries
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["mac"] == "02:aa:00:00:00:01")
            .map(|e| {
                let port = e["ifname"].as_str().expect("ifname");
                let master = e["master"].as_str().map(index);
                (index(port), master)
            })
            .collect();
        out.sort_unstable();
        out
    };
    for (dev, port) in [("ha", hap), ("hb", hbp), ("ha", hap)] {
        node.run(|| send_frame(dev, MAC));
        poll_until(
            WAIT,
            &format!("{MAC:x?} learned on {dev}'s port only"),
            || {
                let (m, k) = (mirrored(), kernel());
                (m == [(port, Some(br0))] && k == m).then_some(())
            },
        );
    }
    // Deleted where it is now: gone from the mirror too.
    node.bridge(&["fdb", "del", "02:aa:00:00:00:01", "dev", "hap", "master"]);
    until(&live, "the learned entry deleted", |s| {
        s.fdb().all(|e| e.mac != MAC)
    });
    assert_eq!(kernel(), []);
    assert_eq!(live.mirror().stats().resyncs_overrun, 0);
}

/// The network mirror running on its own thread (a current-thread tokio runtime) inside
/// a namespace; stopped and joined on drop.
#[derive(Debug)]
struct LiveMirror {
    mirror: watchdog::sources::mirror::Mirror,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LiveMirror {
    /// Starts the mirror in `ns` and waits for its initial load.
    fn start(ns: &NetNs) -> Self {
        Self::start_with(ns, watchdog::sources::mirror::MirrorOptions::default())
    }

    /// As [`LiveMirror::start`], with `options`.
    fn start_with(ns: &NetNs, options: watchdog::sources::mirror::MirrorOptions) -> Self {
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = ns.spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(async move {
                match watchdog::sources::mirror::Mirror::start_with(options).await {
                    Ok((mirror, task)) => {
                        let _ = started_tx.send(Ok(mirror));
                        tokio::select! {
                            _ = stopped => {}
                            result = task => eprintln!("the mirror's task ended: {result:?}"),
                        }
                    }
                    Err(error) => {
                        let _ = started_tx.send(Err(error.to_string()));
                    }
                }
            });
        });
        let mirror = started_rx
            .recv()
            .expect("the mirror thread died")
            .unwrap_or_else(|error| panic!("the mirror did not start: {error}"));
        Self {
            mirror,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The mirror.
    fn mirror(&self) -> &watchdog::sources::mirror::Mirror {
        &self.mirror
    }
}

impl Drop for LiveMirror {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
