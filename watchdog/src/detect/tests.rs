//! Detector tests on hand-built snapshots of a Flannel node: no kernel, no root.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use super::*;
use crate::{
    findings::{Kind, Severity},
    model::counters::{ConnectSample, IcmpErrorSample, PeerSample},
    model::net::{
        Address, Link, NeighState, Neighbour, Prefix, Route, RouteKind, Snapshot, Update, Vxlan,
    },
    model::probe::{Method, Outcome, ProbeBook, ProbeKey, ProbeRequest, ProbeResult, Purpose},
    overlay::fixture::fdb,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn prefix(s: &str) -> Prefix {
    s.parse().unwrap()
}

fn link(index: u32, name: &str) -> Link {
    Link::named(index, name)
}

fn mac(last: u8) -> [u8; 6] {
    [0x02, 0xfa, 0, 0, 0, last]
}

const ETH0: u32 = 2;
const FLANNEL: u32 = 3;

/// Node 0 of a three-node Flannel overlay: eth0 192.168.77.10/24, flannel.1 over eth0,
/// and per remote node j (1, 2) a route, a permanent neighbour and an FDB entry.
fn flannel_node() -> Snapshot {
    let mut net = Snapshot::new();
    net.apply(Update::NewLink(link(ETH0, "eth0")));
    net.apply(Update::NewLink(Link {
        kind: Some("vxlan".into()),
        vxlan: Some(Vxlan {
            vni: 1,
            local: Some(ip("192.168.77.10")),
            port: 8472,
            underlay: Some(ETH0),
            learning: false,
        }),
        mtu: 1450,
        ..link(FLANNEL, "flannel.1")
    }));
    net.apply(Update::NewAddress(Address {
        ifindex: ETH0,
        prefix: prefix("192.168.77.10/24"),
    }));
    net.apply(Update::NewRoute(Route {
        oif: Some(ETH0),
        protocol: 2,
        scope: 253,
        ..Route::unicast(prefix("192.168.77.0/24"))
    }));
    for j in 1..=2u8 {
        net.apply(Update::NewRoute(Route {
            gateway: Some(ip(&format!("10.244.{j}.0"))),
            oif: Some(FLANNEL),
            onlink: true,
            ..Route::unicast(prefix(&format!("10.244.{j}.0/24")))
        }));
        net.apply(Update::NewNeighbour(Neighbour {
            ifindex: FLANNEL,
            ip: ip(&format!("10.244.{j}.0")),
            mac: Some(mac(j)),
            state: NeighState::PERMANENT,
        }));
        net.apply(Update::NewFdb(fdb(j, &format!("192.168.77.{}", 10 + j))));
    }
    net
}

fn peer(tx: u64, rx: u64) -> PeerSample {
    PeerSample {
        tx_packets: tx,
        rx_packets: rx,
        last_tx_ago: Some(Duration::from_millis(100)),
        last_rx_ago: (rx > 0).then(|| Duration::from_millis(90)),
        ..PeerSample::default()
    }
}

/// Two samples a full window apart.
fn samples(start: Instant) -> (Sample, Sample) {
    let then = Sample {
        at: Some(start),
        ..Sample::default()
    };
    let now = Sample {
        at: Some(start + Duration::from_secs(10)),
        ..Sample::default()
    };
    (then, now)
}

fn run(net: &Snapshot, then: &Sample, now: &Sample) -> Vec<Candidate> {
    run_probed(
        net,
        then,
        now,
        &ProbeBook::new(true, Duration::from_secs(5)),
    )
}

fn run_probed(net: &Snapshot, then: &Sample, now: &Sample, probes: &ProbeBook) -> Vec<Candidate> {
    let settings = DetectConfig::default();
    detect(&Inputs {
        net,
        now,
        then,
        recent: then,
        settings: &settings,
        probes,
    })
}

fn requests(net: &Snapshot, then: &Sample, now: &Sample, probes: &ProbeBook) -> Vec<ProbeRequest> {
    let settings = DetectConfig::default();
    probe_requests(&Inputs {
        net,
        now,
        then,
        recent: then,
        settings: &settings,
        probes,
    })
}

/// A book with one finished probe of `target` (through `path`), started `ago` before
/// `now`'s sample.
fn probed(now: &Sample, target: &str, path: Option<&str>, outcome: Outcome) -> ProbeBook {
    let at = now.at.unwrap();
    let started = at - Duration::from_millis(600);
    let result = ProbeResult {
        request: ProbeRequest::liveness(ip(target), Purpose::Vtep, path.map(ip)),
        method: Method::UdpPort,
        started,
        finished: started + Duration::from_millis(450),
        packets: 3,
        outcome,
    };
    let mut book = ProbeBook::new(true, Duration::from_secs(5));
    book.latest.insert(result.request.key(), result);
    book
}

/// A book whose probe of `target` got "host unreachable" from `from`.
fn host_unreachable(now: &Sample, target: &str, from: &str) -> ProbeBook {
    probed(
        now,
        target,
        None,
        Outcome::Unreachable {
            from: Some(ip(from)),
            what: "host unreachable".into(),
        },
    )
}

/// Asserts `candidates` is one blackholed destination named from the ICMP error `icmp`.
fn named_from_icmp(candidates: &[Candidate], icmp: &str) {
    assert_eq!(candidates.len(), 1, "{candidates:#?}");
    assert_eq!(candidates[0].kind, Kind::BlackholedDestination);
    assert_eq!(candidates[0].evidence("icmp"), Some(icmp));
}

fn healthy_traffic(then: &mut Sample, now: &mut Sample) {
    for j in 1..=2u8 {
        let vtep = ip(&format!("192.168.77.{}", 10 + j));
        let pod = ip(&format!("10.244.{j}.2"));
        then.peers.insert((ETH0, vtep), peer(100, 100));
        now.peers.insert((ETH0, vtep), peer(200, 200));
        then.peers.insert((FLANNEL, pod), peer(100, 100));
        now.peers.insert((FLANNEL, pod), peer(200, 200));
    }
}

#[test]
fn a_healthy_overlay_has_no_findings() {
    let net = flannel_node();
    let (mut then, mut now) = samples(Instant::now());
    healthy_traffic(&mut then, &mut now);
    assert_eq!(run(&net, &then, &now), vec![]);
}

#[test]
fn an_fdb_entry_repointed_at_a_silent_vtep_is_named_with_its_route() {
    let mut net = flannel_node();
    net.apply(Update::NewFdb(fdb(2, "192.168.77.99")));
    let (mut then, mut now) = samples(Instant::now());
    healthy_traffic(&mut then, &mut now);
    // The retired address gets VXLAN packets and never answers.
    then.peers.insert((ETH0, ip("192.168.77.99")), peer(40, 0));
    now.peers.insert((ETH0, ip("192.168.77.99")), peer(90, 0));
    // A probe through the overlay (node 2's flannel.1 address, so exactly this FDB
    // entry) went unanswered.
    let probes = probed(
        &now,
        "10.244.2.0",
        Some("192.168.77.99"),
        Outcome::Unanswered,
    );
    let candidates = run_probed(&net, &then, &now, &probes);
    let stale: Vec<_> = candidates
        .iter()
        .filter(|c| c.kind == Kind::StaleFdb)
        .collect();
    assert_eq!(stale.len(), 1, "{candidates:#?}");
    assert_eq!(
        stale[0].subject,
        "fdb 02:fa:00:00:00:02 dev flannel.1 dst 192.168.77.99"
    );
    assert_eq!(
        stale[0].evidence("route"),
        Some("10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink table main")
    );
    assert!(
        stale[0]
            .evidence("problem")
            .unwrap()
            .contains("50 packets sent to VTEP 192.168.77.99 on eth0 in the last 1s, none back")
    );
    assert_eq!(
        stale[0].evidence("probe"),
        Some("UDP port probe to 10.244.2.0: no answer to 3 packets in 450ms")
    );
    assert_eq!(stale[0].routes[0].prefix, "10.244.2.0/24");
    // Its underlay address is probed too (a dead VTEP and one that drops this node's
    // frames look alike through the overlay); unanswered as well, nothing changes, and
    // nothing is probed again while both failures are fresh.
    assert_eq!(
        requests(&net, &then, &now, &probes),
        vec![ProbeRequest::liveness(
            ip("192.168.77.99"),
            Purpose::Vtep,
            None
        )]
    );
    let mut both = probes.clone();
    both.latest
        .extend(probed(&now, "192.168.77.99", None, Outcome::Unanswered).latest);
    assert_eq!(run_probed(&net, &then, &now, &both), candidates);
    assert_eq!(requests(&net, &then, &now, &both), vec![]);
}

/// The remote node's VXLAN device got another MAC (systemd's MACAddressPolicy, flannel
/// #1795): this node's FDB entry and neighbour are right, its frames are dropped there.
/// Probes through the overlay fail, the VTEP's underlay address answers.
#[test]
fn a_vtep_that_answers_on_the_underlay_drops_our_frames_it_is_no_stale_fdb() {
    let net = flannel_node();
    let (mut then, mut now) = samples(Instant::now());
    then.peers
        .insert((ETH0, ip("192.168.77.11")), peer(100, 100));
    now.peers
        .insert((ETH0, ip("192.168.77.11")), peer(200, 200));
    then.peers.insert((ETH0, ip("192.168.77.12")), peer(40, 0));
    now.peers.insert((ETH0, ip("192.168.77.12")), peer(90, 0));
    let mut probes = probed(
        &now,
        "10.244.2.0",
        Some("192.168.77.12"),
        Outcome::Unanswered,
    );
    // The underlay probe still in flight: no verdict yet (no stale_fdb to take back).
    probes
        .in_flight
        .insert(ProbeKey::liveness(ip("192.168.77.12")));
    assert_eq!(run_probed(&net, &then, &now, &probes), vec![]);
    probes.in_flight.clear();
    let answered = Outcome::Answered {
        rtt: Duration::from_millis(1),
    };
    probes
        .latest
        .extend(probed(&now, "192.168.77.12", None, answered).latest);
    let candidates = run_probed(&net, &then, &now, &probes);
    assert_eq!(candidates.len(), 1, "{candidates:#?}");
    let c = &candidates[0];
    assert_eq!(c.kind, Kind::RemoteVtepDrops);
    assert_eq!(
        c.subject,
        "remote vtep 192.168.77.12 (fdb 02:fa:00:00:00:02 dev flannel.1)"
    );
    assert_eq!(
        c.evidence("sends"),
        Some(
            "VXLAN from 192.168.77.10 to 192.168.77.12:8472 VNI 1 with inner destination MAC \
             02:fa:00:00:00:02"
        )
    );
    assert_eq!(
        c.evidence("probe_underlay"),
        Some("UDP port probe to 192.168.77.12: answered in 1ms")
    );
    assert_eq!(
        c.evidence("route"),
        Some("10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink table main")
    );
}

/// The statsd case: a pod sends to a pod on another node, which listens and never
/// answers. The VTEP sees packets out and none back; that alone condemns nothing.
fn one_way_to_node_2(then: &mut Sample, now: &mut Sample) {
    then.peers
        .insert((ETH0, ip("192.168.77.11")), peer(100, 100));
    now.peers
        .insert((ETH0, ip("192.168.77.11")), peer(200, 200));
    then.peers.insert((ETH0, ip("192.168.77.12")), peer(40, 0));
    now.peers.insert((ETH0, ip("192.168.77.12")), peer(240, 0));
    then.peers.insert((FLANNEL, ip("10.244.2.2")), peer(40, 0));
    now.peers.insert((FLANNEL, ip("10.244.2.2")), peer(240, 0));
}

#[test]
fn silence_alone_condemns_nothing_it_asks_for_probes() {
    let net = flannel_node();
    let (mut then, mut now) = samples(Instant::now());
    one_way_to_node_2(&mut then, &mut now);
    let unprobed = ProbeBook::new(true, Duration::from_secs(5));
    assert_eq!(run_probed(&net, &then, &now, &unprobed), vec![]);
    // The VTEP through the overlay (the gateway whose neighbour has its MAC), the
    // destination directly; the healthy node 1 not at all.
    assert_eq!(
        requests(&net, &then, &now, &unprobed),
        vec![
            ProbeRequest::liveness(ip("10.244.2.0"), Purpose::Vtep, Some(ip("192.168.77.12"))),
            ProbeRequest::liveness(ip("192.168.77.12"), Purpose::Vtep, None),
            ProbeRequest::liveness(ip("10.244.2.2"), Purpose::Destination, None),
        ]
    );
    // Probing off: still nothing condemned, nothing asked.
    let off = ProbeBook::new(false, Duration::from_secs(5));
    assert_eq!(run_probed(&net, &then, &now, &off), vec![]);
    assert_eq!(requests(&net, &then, &now, &off), vec![]);
}

#[test]
fn a_silent_peer_that_answers_its_probe_is_alive() {
    let net = flannel_node();
    let (mut then, mut now) = samples(Instant::now());
    one_way_to_node_2(&mut then, &mut now);
    let answered = Outcome::Answered {
        rtt: Duration::from_millis(1),
    };
    let mut probes = probed(&now, "10.244.2.0", Some("192.168.77.12"), answered.clone());
    let pod = probed(&now, "10.244.2.2", None, answered);
    probes.latest.extend(pod.latest);
    assert_eq!(run_probed(&net, &then, &now, &probes), vec![]);
    assert_eq!(requests(&net, &then, &now, &probes), vec![]);
    // The answer vouched for the path through 192.168.77.12: once the entry points
    // elsewhere the VTEP is a suspect again.
    let mut moved = net.clone();
    moved.apply(Update::NewFdb(fdb(2, "192.168.77.99")));
    for sample in [&mut then, &mut now] {
        sample.peers.remove(&(ETH0, ip("192.168.77.12")));
    }
    then.peers.insert((ETH0, ip("192.168.77.99")), peer(40, 0));
    now.peers.insert((ETH0, ip("192.168.77.99")), peer(240, 0));
    assert_eq!(
        requests(&moved, &then, &now, &probes),
        vec![
            ProbeRequest::liveness(ip("10.244.2.0"), Purpose::Vtep, Some(ip("192.168.77.99"))),
            ProbeRequest::liveness(ip("192.168.77.99"), Purpose::Vtep, None),
        ]
    );
}

#[test]
fn traffic_from_the_vtep_on_another_interface_shows_it_alive() {
    let mut net = flannel_node();
    net.apply(Update::NewLink(link(9, "tailscale0")));
    let (mut then, mut now) = samples(Instant::now());
    one_way_to_node_2(&mut then, &mut now);
    // Node 2 talks to this node directly (kubelet, say) on another interface.
    then.peers.insert((9, ip("192.168.77.12")), peer(10, 10));
    now.peers.insert((9, ip("192.168.77.12")), peer(20, 20));
    let probes = probed(
        &now,
        "10.244.2.0",
        Some("192.168.77.12"),
        Outcome::Unanswered,
    );
    let candidates = run_probed(&net, &then, &now, &probes);
    assert!(
        candidates.iter().all(|c| c.kind != Kind::StaleFdb),
        "{candidates:#?}"
    );
}

#[test]
fn silence_is_not_judged_before_a_full_window() {
    let mut net = flannel_node();
    net.apply(Update::NewFdb(fdb(2, "192.168.77.99")));
    let start = Instant::now();
    let (then, mut now) = samples(start);
    now.at = Some(start + Duration::from_millis(500));
    let mut then = then;
    then.peers.insert((ETH0, ip("192.168.77.99")), peer(40, 0));
    now.peers.insert((ETH0, ip("192.168.77.99")), peer(90, 0));
    assert!(run(&net, &then, &now).is_empty());
}

#[test]
fn an_fdb_entry_off_the_underlay_or_unroutable_is_stale() {
    let mut net = flannel_node();
    net.apply(Update::NewFdb(fdb(1, "10.67.0.5")));
    let (then, now) = samples(Instant::now());
    let candidates = run(&net, &then, &now);
    assert_eq!(candidates.len(), 1, "{candidates:#?}");
    assert_eq!(candidates[0].kind, Kind::StaleFdb);
    assert_eq!(
        candidates[0].evidence("problem"),
        Some("no route to VTEP 10.67.0.5")
    );
}

#[test]
fn a_flushed_fdb_is_a_vtep_collapse_and_each_route_misses_its_entry() {
    let mut net = flannel_node();
    for j in 1..=2u8 {
        net.apply(Update::DelFdb(fdb(j, &format!("192.168.77.{}", 10 + j))));
    }
    let (then, now) = samples(Instant::now());
    let candidates = run(&net, &then, &now);
    let collapse: Vec<_> = candidates
        .iter()
        .filter(|c| c.kind == Kind::VtepCollapse)
        .collect();
    assert_eq!(collapse.len(), 1);
    assert_eq!(collapse[0].subject, "dev flannel.1");
    assert_eq!(collapse[0].evidence("fdb_entries"), Some("0"));
    assert_eq!(collapse[0].evidence("remote_node_routes"), Some("2"));
    let mut missing: Vec<_> = candidates
        .iter()
        .filter(|c| c.kind == Kind::StaleFdb)
        .map(|c| c.subject.as_str())
        .collect();
    missing.sort_unstable();
    assert_eq!(
        missing,
        [
            "fdb 02:fa:00:00:00:01 dev flannel.1 missing",
            "fdb 02:fa:00:00:00:02 dev flannel.1 missing"
        ]
    );
}

#[test]
fn a_gateway_that_never_answers_is_a_ghost_with_its_routes_and_drops() {
    let mut net = flannel_node();
    net.apply(Update::NewRoute(Route {
        gateway: Some(ip("192.168.77.98")),
        oif: Some(ETH0),
        ..Route::unicast(prefix("10.55.0.0/24"))
    }));
    net.apply(Update::NewNeighbour(Neighbour {
        ifindex: ETH0,
        ip: ip("192.168.77.98"),
        mac: None,
        state: NeighState::FAILED,
    }));
    let (mut then, mut now) = samples(Instant::now());
    then.drop_destinations
        .insert(("NEIGH_FAILED".into(), ip("10.55.0.5")), 2);
    now.drop_destinations
        .insert(("NEIGH_FAILED".into(), ip("10.55.0.5")), 9);
    let candidates = run(&net, &then, &now);
    assert_eq!(candidates.len(), 1, "{candidates:#?}");
    let ghost = &candidates[0];
    assert_eq!(ghost.kind, Kind::GhostGateway);
    assert_eq!(ghost.severity, Severity::Critical);
    assert_eq!(ghost.subject, "gateway 192.168.77.98 dev eth0");
    assert_eq!(ghost.evidence("neighbour_state"), Some("FAILED"));
    assert_eq!(ghost.evidence("neigh_drops_in_window"), Some("7"));
    assert_eq!(
        ghost.evidence("route"),
        Some("10.55.0.0/24 via 192.168.77.98 dev eth0 table main")
    );
}

#[test]
fn an_incomplete_gateway_is_a_warning_before_any_drop() {
    let mut net = flannel_node();
    net.apply(Update::NewRoute(Route {
        gateway: Some(ip("192.168.77.98")),
        oif: Some(ETH0),
        ..Route::unicast(prefix("10.55.0.0/24"))
    }));
    net.apply(Update::NewNeighbour(Neighbour {
        ifindex: ETH0,
        ip: ip("192.168.77.98"),
        mac: None,
        state: NeighState::INCOMPLETE,
    }));
    // Not a gateway: no route through it.
    net.apply(Update::NewNeighbour(Neighbour {
        ifindex: ETH0,
        ip: ip("192.168.77.50"),
        mac: None,
        state: NeighState::INCOMPLETE,
    }));
    let (then, now) = samples(Instant::now());
    let candidates = run(&net, &then, &now);
    assert_eq!(candidates.len(), 1, "{candidates:#?}");
    assert_eq!(candidates[0].subject, "gateway 192.168.77.98 dev eth0");
    assert_eq!(candidates[0].severity, Severity::Warning);
    assert_eq!(
        candidates[0].evidence("neighbour_state"),
        Some("INCOMPLETE")
    );
}

#[test]
fn routes_through_a_downed_link_are_dead() {
    let mut net = flannel_node();
    net.apply(Update::NewLink(Link {
        oper_up: false,
        ..link(ETH0, "eth0")
    }));
    let (then, now) = samples(Instant::now());
    let candidates = run(&net, &then, &now);
    let dead: Vec<_> = candidates
        .iter()
        .filter(|c| c.kind == Kind::DeadLinkRoute)
        .collect();
    assert_eq!(dead.len(), 1, "{candidates:#?}");
    assert_eq!(dead[0].subject, "route 192.168.77.0/24 dev eth0 table main");
    assert_eq!(
        dead[0].evidence("problem"),
        Some("device eth0 has no carrier")
    );
}

#[test]
fn a_blackhole_route_drawing_drops_is_named() {
    let mut net = flannel_node();
    net.apply(Update::NewRoute(Route {
        kind: RouteKind::Blackhole,
        ..Route::unicast(prefix("10.244.2.0/25"))
    }));
    let (then, mut now) = samples(Instant::now());
    now.drop_destinations
        .insert(("NOT_SPECIFIED".into(), ip("10.244.2.2")), 12);
    let candidates = run(&net, &then, &now);
    assert_eq!(candidates.len(), 1, "{candidates:#?}");
    assert_eq!(candidates[0].kind, Kind::RejectRouteTraffic);
    assert_eq!(
        candidates[0].subject,
        "route blackhole 10.244.2.0/25 table main"
    );
    assert_eq!(
        candidates[0].evidence("drops_in_window_NOT_SPECIFIED"),
        Some("12")
    );
}

#[test]
fn no_route_drops_are_grouped_by_prefix() {
    let net = flannel_node();
    let (then, mut now) = samples(Instant::now());
    now.drop_destinations
        .insert(("IP_INNOROUTES".into(), ip("10.9.9.1")), 3);
    now.drop_destinations
        .insert(("IP_INNOROUTES".into(), ip("10.9.9.7")), 4);
    let candidates = run(&net, &then, &now);
    assert_eq!(candidates.len(), 1, "{candidates:#?}");
    assert_eq!(candidates[0].subject, "no route to 10.9.9.0/24");
    assert_eq!(
        candidates[0].evidence("drops_in_window_IP_INNOROUTES"),
        Some("7")
    );
}

#[test]
fn a_destination_that_never_answers_is_blackholed_and_attributed() {
    let net = flannel_node();
    let (mut then, mut now) = samples(Instant::now());
    healthy_traffic(&mut then, &mut now);
    then.peers.insert((FLANNEL, ip("10.244.1.7")), peer(10, 0));
    now.peers.insert((FLANNEL, ip("10.244.1.7")), peer(30, 0));
    // Silence alone: a probe is asked for, nothing condemned.
    assert_eq!(run(&net, &then, &now), vec![]);
    // Its host said it is unreachable.
    let mut probes = host_unreachable(&now, "10.244.1.7", "10.244.1.1");
    let candidates = run_probed(&net, &then, &now, &probes);
    assert_eq!(candidates.len(), 1, "{candidates:#?}");
    assert_eq!(candidates[0].kind, Kind::BlackholedDestination);
    assert_eq!(
        candidates[0].subject,
        "destination 10.244.1.7 dev flannel.1"
    );
    assert_eq!(
        candidates[0].evidence("route"),
        Some("10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink table main")
    );
    assert_eq!(
        candidates[0].evidence("probe"),
        Some("UDP port probe to 10.244.1.7: host unreachable from 10.244.1.1")
    );
    assert_eq!(candidates[0].evidence("last_reply"), Some("never"));
    // A reply after the probe started: the failure is stale, probe again.
    now.peers
        .get_mut(&(ETH0, ip("192.168.77.11")))
        .unwrap()
        .last_rx_ago = Some(Duration::from_millis(10));
    now.peers.insert(
        (9, ip("10.244.1.7")),
        PeerSample {
            rx_packets: 1,
            last_rx_ago: Some(Duration::from_millis(10)),
            ..PeerSample::default()
        },
    );
    probes
        .latest
        .values_mut()
        .for_each(|r| r.outcome = Outcome::Unanswered);
    assert!(
        run_probed(&net, &then, &now, &probes)
            .iter()
            .all(|c| c.kind != Kind::BlackholedDestination)
    );
}

/// A definitive ICMP error to the probe names a dead destination at once; silence keeps
/// its window.
#[test]
fn a_definitive_icmp_error_names_a_destination_before_the_window_is_full() {
    let net = flannel_node();
    let start = Instant::now();
    // Two seconds into a window, a destination never seen before: 100 packets, none back.
    let then = Sample {
        at: Some(start),
        ..Sample::default()
    };
    let mut now = Sample {
        at: Some(start + Duration::from_secs(2)),
        ..Sample::default()
    };
    now.peers.insert((FLANNEL, ip("10.244.1.7")), peer(100, 0));
    let unanswered = probed(&now, "10.244.1.7", None, Outcome::Unanswered);
    assert_eq!(run_probed(&net, &then, &now, &unanswered), vec![]);
    let unreachable = host_unreachable(&now, "10.244.1.7", "10.244.1.0");
    let candidates = run_probed(&net, &then, &now, &unreachable);
    named_from_icmp(&candidates, "host unreachable from 10.244.1.0");
    // Not definitive: a port unreachable from a firewall on the way, or this host's own
    // stack (other findings name local causes).
    for outcome in [
        Outcome::Unreachable {
            from: Some(ip("10.244.1.0")),
            what: "port unreachable".into(),
        },
        Outcome::Unreachable {
            from: None,
            what: "no route to host".into(),
        },
    ] {
        let probes = probed(&now, "10.244.1.7", None, outcome);
        assert_eq!(run_probed(&net, &then, &now, &probes), vec![]);
    }
}

/// A destination that answered early in the window and then died (a pod that came back
/// and died again): a definitive ICMP error to a probe started after its last reply names
/// it at once, the replies before do not hold it back; silence still waits for a window
/// without any reply, and a reply after the probe started clears it.
#[test]
fn a_definitive_icmp_error_names_a_destination_that_answered_earlier_in_the_window() {
    let net = flannel_node();
    let (mut then, mut now) = samples(Instant::now());
    healthy_traffic(&mut then, &mut now);
    // 3 s ago it still answered (40 replies in the window); 60 packets since, none back.
    then.peers
        .insert((FLANNEL, ip("10.244.1.7")), peer(100, 100));
    now.peers.insert(
        (FLANNEL, ip("10.244.1.7")),
        PeerSample {
            rx_packets: 140,
            last_rx_ago: Some(Duration::from_secs(3)),
            ..peer(200, 0)
        },
    );
    // The probe started 600 ms ago, after the last reply.
    let unreachable = host_unreachable(&now, "10.244.1.7", "10.244.1.0");
    let candidates = run_probed(&net, &then, &now, &unreachable);
    named_from_icmp(&candidates, "host unreachable from 10.244.1.0");
    assert_eq!(candidates[0].evidence("packets_back_in_window"), Some("40"));
    assert_eq!(candidates[0].evidence("last_reply"), Some("3s ago"));
    // Silence alone: the replies in the window keep it unjudged.
    let unanswered = probed(&now, "10.244.1.7", None, Outcome::Unanswered);
    assert_eq!(run_probed(&net, &then, &now, &unanswered), vec![]);
    // Nothing sent since the last reply: the traffic never met the silence.
    let mut idle = now.clone();
    idle.peers
        .get_mut(&(FLANNEL, ip("10.244.1.7")))
        .unwrap()
        .last_tx_ago = Some(Duration::from_secs(4));
    assert_eq!(run_probed(&net, &then, &idle, &unreachable), vec![]);
    // A reply after the probe started: it lives, whatever the probe heard.
    let mut answered = now.clone();
    answered
        .peers
        .get_mut(&(FLANNEL, ip("10.244.1.7")))
        .unwrap()
        .last_rx_ago = Some(Duration::from_millis(100));
    assert_eq!(run_probed(&net, &then, &answered, &unreachable), vec![]);
}

/// A definitive ICMP error that came back for the traffic itself: a pod address that
/// answered a probe just before it died, two seconds into a window.
fn answered_then_dead() -> (Snapshot, Sample, Sample, ProbeBook) {
    let net = flannel_node();
    let start = Instant::now();
    let mut then = Sample {
        at: Some(start),
        ..Sample::default()
    };
    let mut now = Sample {
        at: Some(start + Duration::from_secs(2)),
        ..Sample::default()
    };
    then.peers
        .insert((FLANNEL, ip("10.244.1.7")), peer(100, 100));
    // Its last reply 1.9 s ago (the probe's answer); traffic since, nothing back.
    now.peers.insert(
        (FLANNEL, ip("10.244.1.7")),
        PeerSample {
            rx_packets: 120,
            last_rx_ago: Some(Duration::from_millis(1900)),
            ..peer(140, 0)
        },
    );
    // The probe was answered 1.9 s ago: it vouches for `valid_for` (5 s).
    let mut probes = probed(
        &now,
        "10.244.1.7",
        None,
        Outcome::Answered {
            rtt: Duration::from_millis(1),
        },
    );
    for result in probes.latest.values_mut() {
        result.started = now.at.unwrap() - Duration::from_millis(1901);
        result.finished = now.at.unwrap() - Duration::from_millis(1900);
    }
    // Node 1 said "host unreachable" for the traffic 500 ms ago.
    now.icmp_errors.insert(
        ip("10.244.1.7"),
        IcmpErrorSample {
            count: 3,
            last_ago: Some(Duration::from_millis(500)),
            from: ip("10.244.1.0"),
            what: "host unreachable".into(),
        },
    );
    (net, then, now, probes)
}

/// The traffic's own definitive ICMP error names a destination at once when it is the
/// latest word: newer than its last reply and than the probe's answer, which stops
/// vouching there.
#[test]
fn a_definitive_icmp_error_to_the_traffic_outweighs_an_earlier_probe_answer() {
    let (net, then, now, probes) = answered_then_dead();
    let candidates = run_probed(&net, &then, &now, &probes);
    named_from_icmp(
        &candidates,
        "host unreachable from 10.244.1.0 (to the traffic)",
    );
    assert_eq!(
        candidates[0].evidence("probe"),
        Some("UDP port probe to 10.244.1.7: answered in 1ms")
    );
    assert_eq!(candidates[0].evidence("packets_back_in_window"), Some("20"));
    // Without a probe at all: the same.
    let none = ProbeBook::new(true, Duration::from_secs(5));
    named_from_icmp(
        &run_probed(&net, &then, &now, &none),
        "host unreachable from 10.244.1.0 (to the traffic)",
    );
    // The probe's own definitive error keeps the probe's words.
    let unreachable = host_unreachable(&now, "10.244.1.7", "10.244.1.0");
    let mut dead = now.clone();
    dead.peers
        .get_mut(&(FLANNEL, ip("10.244.1.7")))
        .unwrap()
        .last_rx_ago = Some(Duration::from_secs(3));
    named_from_icmp(
        &run_probed(&net, &then, &dead, &unreachable),
        "host unreachable from 10.244.1.0",
    );
}

/// The traffic's ICMP error does not name a destination that answered since (a reply, or a
/// probe's answer), one whose error is older than the window, or one the traffic stopped
/// going to before its last reply.
#[test]
fn a_definitive_icmp_error_to_the_traffic_yields_to_newer_evidence() {
    let (net, then, now, probes) = answered_then_dead();
    let dst = (FLANNEL, ip("10.244.1.7"));
    // A reply after the error.
    let mut replied = now.clone();
    replied.peers.get_mut(&dst).unwrap().last_rx_ago = Some(Duration::from_millis(300));
    assert_eq!(run_probed(&net, &then, &replied, &probes), vec![]);
    // A probe answered after the error.
    let mut answered = probes.clone();
    for result in answered.latest.values_mut() {
        result.started = now.at.unwrap() - Duration::from_millis(250);
        result.finished = now.at.unwrap() - Duration::from_millis(200);
    }
    assert_eq!(run_probed(&net, &then, &now, &answered), vec![]);
    // The error is older than the window: it was counted already at its start.
    let mut old = then.clone();
    old.icmp_errors = now.icmp_errors.clone();
    assert_eq!(run_probed(&net, &old, &now, &probes), vec![]);
    // Nothing sent since the last reply.
    let mut idle = now.clone();
    idle.peers.get_mut(&dst).unwrap().last_tx_ago = Some(Duration::from_secs(2));
    assert_eq!(run_probed(&net, &then, &idle, &probes), vec![]);
}

/// Without a definitive ICMP error, silence keeps its window: a probe that went unanswered
/// names the destination only once a whole window passed with nothing back.
#[test]
fn silence_without_an_icmp_error_keeps_its_window() {
    let (net, then, mut now, _) = answered_then_dead();
    now.icmp_errors.clear();
    let dst = (FLANNEL, ip("10.244.1.7"));
    now.peers.get_mut(&dst).unwrap().last_rx_ago = Some(Duration::from_secs(3));
    let unanswered = probed(&now, "10.244.1.7", None, Outcome::Unanswered);
    assert_eq!(run_probed(&net, &then, &now, &unanswered), vec![]);
    // A full window later, nothing back during it.
    let (mut then, mut now) = samples(Instant::now());
    then.peers.insert(dst, peer(100, 100));
    now.peers.insert(
        dst,
        PeerSample {
            rx_packets: 100,
            last_rx_ago: Some(Duration::from_secs(12)),
            ..peer(300, 0)
        },
    );
    let unanswered = probed(&now, "10.244.1.7", None, Outcome::Unanswered);
    let candidates = run_probed(&net, &then, &now, &unanswered);
    assert_eq!(candidates.len(), 1, "{candidates:#?}");
    assert_eq!(candidates[0].evidence("icmp"), None);
}

#[test]
fn failing_tcp_destinations_need_failures_and_no_success() {
    let net = flannel_node();
    let (then, mut now) = samples(Instant::now());
    let failing = ConnectSample {
        attempts: 4,
        failed: 4,
        ..ConnectSample::default()
    };
    now.connects
        .insert((ip("10.244.1.9"), 8080), failing.clone());
    now.connects.insert(
        (ip("10.244.1.2"), 8080),
        ConnectSample {
            established: 1,
            ..failing
        },
    );
    let candidates = run(&net, &then, &now);
    assert_eq!(candidates.len(), 1, "{candidates:#?}");
    assert_eq!(candidates[0].subject, "tcp 10.244.1.9:8080");
}

/// Inputs over `now`/`then` (also `recent`) with `probes`, for the path-MTU detector.
fn mtu_run<T>(
    net: &Snapshot,
    then: &Sample,
    now: &Sample,
    probes: &ProbeBook,
    f: impl FnOnce(&Inputs<'_>) -> T,
) -> T {
    let settings = DetectConfig::default();
    f(&Inputs {
        net,
        now,
        then,
        recent: then,
        settings: &settings,
        probes,
    })
}

fn searched(target: &crate::model::probe::MtuTarget, outcome: MtuOutcome) -> ProbeBook {
    let mut book = ProbeBook::new(true, Duration::from_secs(5));
    book.mtu.insert(
        target.target,
        PathMtu {
            target: target.clone(),
            outcome,
            finished: Instant::now(),
            probes: 10,
            packets: 16,
        },
    );
    book
}

use crate::model::probe::{MtuOutcome, PathMtu};

#[test]
fn every_remote_vtep_is_a_path_mtu_target_through_the_overlay() {
    let net = flannel_node();
    let (then, now) = samples(Instant::now());
    let targets = mtu_run(&net, &then, &now, &ProbeBook::default(), mtu::mtu_targets);
    assert_eq!(targets.len(), 2);
    let t = &targets[0];
    assert_eq!(
        (t.target, t.vtep, t.device.as_str(), t.device_mtu),
        (ip("10.244.1.0"), ip("192.168.77.11"), "flannel.1", 1450)
    );
    assert!(t.through_overlay && !t.urgent);
    assert_eq!(
        (t.needed(), t.probe_size(), t.outer(1351)),
        (1500, 1450, 1401)
    );
    assert_eq!(mtu::vxlan_overhead(ip("fd00::1")), 70);
}

#[test]
fn large_packets_out_with_only_small_ones_back_make_a_target_urgent() {
    let net = flannel_node();
    let (mut then, mut now) = samples(Instant::now());
    let vtep = ip("192.168.77.11");
    then.peers.insert((ETH0, vtep), PeerSample::default());
    // 10 packets of 1400 bytes out, 10 of 100 back: urgent.
    now.peers.insert(
        (ETH0, vtep),
        PeerSample {
            tx_packets: 10,
            tx_bytes: 14_000,
            rx_packets: 10,
            rx_bytes: 1_000,
            ..PeerSample::default()
        },
    );
    let targets = mtu_run(&net, &then, &now, &ProbeBook::default(), mtu::mtu_targets);
    assert!(targets[0].urgent && !targets[1].urgent);
    // Large both ways (a healthy exchange of full-size packets): not urgent.
    now.peers.get_mut(&(ETH0, vtep)).unwrap().rx_bytes = 14_000;
    let targets = mtu_run(&net, &then, &now, &ProbeBook::default(), mtu::mtu_targets);
    assert!(!targets[0].urgent);
}

#[test]
fn a_black_hole_names_peer_device_sizes_and_the_fix_until_healed() {
    let net = flannel_node();
    let (then, now) = samples(Instant::now());
    let targets = mtu_run(&net, &then, &now, &ProbeBook::default(), mtu::mtu_targets);
    let hole = searched(&targets[0], MtuOutcome::BlackHole { carries: 1300 });
    let found = mtu_run(&net, &then, &now, &hole, detect);
    assert_eq!(found.len(), 1, "{found:#?}");
    let c = &found[0];
    assert_eq!(c.kind, Kind::MtuBlackHole);
    assert_eq!(c.severity, Severity::Critical);
    assert_eq!(c.subject, "path to vtep 192.168.77.11 dev flannel.1");
    assert_eq!(c.evidence("peer"), Some("192.168.77.11"));
    assert_eq!(c.evidence("device"), Some("flannel.1"));
    assert_eq!(c.evidence("path_carries"), Some("1300"));
    assert_eq!(c.evidence("device_needs"), Some("1500"));
    assert_eq!(
        c.evidence("fix"),
        Some("set flannel.1 mtu ≤ 1250, or raise the path's MTU to at least 1500")
    );
    // Healed, or a hop that says "fragmentation needed" (the kernel adapts): no finding.
    for outcome in [
        MtuOutcome::Fits,
        MtuOutcome::TooBig {
            mtu: 1400,
            from: Some(ip("192.168.77.1")),
        },
        MtuOutcome::PeerSilent,
    ] {
        let book = searched(&targets[0], outcome);
        assert_eq!(mtu_run(&net, &then, &now, &book, detect), vec![]);
    }
    // A hop said so and this node learned it, but pods are not told: a black hole for
    // them, with the sysctl named.
    let unforwarded = searched(&targets[0], MtuOutcome::Unforwarded { mtu: 1400 });
    let found = mtu_run(&net, &then, &now, &unforwarded, detect);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].evidence("path_carries"), Some("1400"));
    assert!(
        found[0]
            .evidence("problem")
            .unwrap()
            .contains("net.ipv4.ip_forward_use_pmtu = 0"),
        "{found:#?}"
    );
    assert_eq!(
        found[0].evidence("fix"),
        Some(
            "set flannel.1 mtu ≤ 1350, or raise the path's MTU to at least 1500 (or set \
             net.ipv4.ip_forward_use_pmtu = 1 so forwarded packets learn it)"
        )
    );
    // The device was lowered since the search: the old result no longer applies.
    let mut lowered = net.clone();
    let mut link = lowered.link(FLANNEL).unwrap().clone();
    link.mtu = 1250;
    lowered.apply(Update::NewLink(link));
    assert_eq!(mtu_run(&lowered, &then, &now, &hole, detect), vec![]);
}

#[test]
fn unanswered_syns_name_the_failing_destination_and_its_clients() {
    let net = flannel_node();
    let (then, mut now) = samples(Instant::now());
    let dst = (ip("10.244.1.9"), 8080);
    // Two connects, each with its SYN retransmitted once: no connect timed out yet.
    let retrying = ConnectSample {
        attempts: 2,
        syn_retransmits: 2,
        ..ConnectSample::default()
    };
    now.connects.insert(dst, retrying.clone());
    now.connect_clients.insert(
        dst,
        [(7, retrying.clone()), (8, ConnectSample::default())].into(),
    );
    now.client_names
        .insert(7, "default/web-7f9c5d8b6-x2x7q".into());
    let candidates = run(&net, &then, &now);
    assert_eq!(candidates.len(), 1, "{candidates:#?}");
    let evidence = &candidates[0].evidence;
    let client = evidence.iter().find(|e| e.name == "client");
    assert_eq!(
        client.map(|e| e.value.as_str()),
        Some("default/web-7f9c5d8b6-x2x7q"),
        "{evidence:?}"
    );
    // One SYN retransmitted is not enough; an unnamed namespace is named by inode.
    let once = ConnectSample {
        syn_retransmits: 1,
        ..ConnectSample::default()
    };
    now.connects.insert(dst, once.clone());
    assert!(run(&net, &then, &now).is_empty());
    now.connects.insert(dst, retrying.clone());
    now.client_names.clear();
    let candidates = run(&net, &then, &now);
    let client = candidates[0].evidence.iter().find(|e| e.name == "client");
    assert_eq!(client.map(|e| e.value.as_str()), Some("netns:7"));
}
