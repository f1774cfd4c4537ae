//! The prober on loopback (no root needed): a closed port answers a UDP probe, a socket
//! that swallows datagrams leaves it unanswered, and the limits hold.

use std::{
    net::{IpAddr, UdpSocket},
    time::Duration,
};

use super::*;
use crate::model::probe::{Outcome, Purpose};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn settings(method: ProbeMethod) -> ProberConfig {
    ProberConfig {
        method,
        timeout: Duration::from_millis(300),
        ..ProberConfig::default()
    }
}

async fn probe_once(prober: &mut Prober, target: IpAddr) -> ProbeResult {
    prober.submit(vec![ProbeRequest::liveness(
        target,
        Purpose::Destination,
        None,
    )]);
    prober.settle(Duration::from_secs(5)).await;
    prober
        .book()
        .latest
        .get(&ProbeKey::liveness(target))
        .cloned()
        .expect("a result")
}

#[tokio::test]
async fn a_closed_port_answers_a_udp_probe() {
    let mut prober = Prober::new(&settings(ProbeMethod::Udp));
    for target in ["127.0.0.1", "::1"] {
        let result = probe_once(&mut prober, ip(target)).await;
        assert!(
            matches!(result.outcome, Outcome::Answered { .. }),
            "{result}"
        );
        assert_eq!(result.packets, 1, "{result}");
        assert_eq!(result.method, Method::UdpPort);
    }
    let stats = prober.stats();
    assert_eq!(stats.probes[&(Purpose::Destination, "answered")], 2);
    assert_eq!(stats.packets[&Purpose::Destination], 2);
    assert!(prober.book().in_flight.is_empty());
}

#[tokio::test]
async fn a_listener_that_never_answers_leaves_a_udp_probe_unanswered() {
    // Every port a probe may use, bound and never read: no port unreachable comes back.
    let target = ip("127.0.0.7");
    let _sockets: Vec<UdpSocket> = (0..100)
        .map(|n| UdpSocket::bind((target, UDP_BASE_PORT + n)).expect("bind a probe port"))
        .collect();
    let mut prober = Prober::new(&settings(ProbeMethod::Udp));
    let result = probe_once(&mut prober, target).await;
    assert_eq!(result.outcome, Outcome::Unanswered, "{result}");
    assert_eq!(result.packets, 3, "{result}");
    let took = result.finished - result.started;
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(
        result.to_string().contains("no answer to 3 packets"),
        "{result}"
    );
}

/// Whether `net.ipv4.ping_group_range` of this thread's network namespace covers one of
/// this process's groups: then the kernel lets it open ping sockets. Read from the sysctl,
/// not found out by opening one (that is the code under test).
fn ping_group_allowed() -> bool {
    let path = "/proc/sys/net/ipv4/ping_group_range";
    let range = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let bounds: Vec<libc::gid_t> = range
        .split_whitespace()
        .map(|gid| {
            gid.parse()
                .unwrap_or_else(|e| panic!("{path}: {range:?}: {e}"))
        })
        .collect();
    let [low, high] = bounds[..] else {
        panic!("{path}: {range:?}")
    };
    // SAFETY: getegid has no preconditions.
    let mut groups = vec![unsafe { libc::getegid() }; 65];
    // SAFETY: getgroups writes at most 64 ids, and groups[1..] holds 64.
    let n = unsafe { libc::getgroups(64, groups[1..].as_mut_ptr()) };
    groups.truncate(1 + usize::try_from(n).unwrap_or(0));
    groups.iter().any(|gid| (low..=high).contains(gid))
}

/// Moves this thread (only) into a new network namespace with loopback up and ping
/// sockets allowed for every group, as the lab does for the daemon's namespace. Needs
/// root; the namespace goes when the test's thread ends.
fn enter_a_namespace_that_allows_ping() -> std::io::Result<()> {
    // SAFETY: plain syscall; it changes this thread's network namespace only.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    std::fs::write("/proc/sys/net/ipv4/ping_group_range", "0 2147483647")?;
    // A child forked from this thread starts in its namespace.
    let up = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()?;
    if !up.success() {
        return Err(std::io::Error::other(format!("ip link set lo up: {up}")));
    }
    Ok(())
}

#[tokio::test]
async fn icmp_echo_is_answered_where_ping_sockets_are_allowed() {
    // The runtime of a tokio::test runs on this thread, so the prober's sockets are
    // opened in the namespace this thread is in.
    if !ping_group_allowed() {
        if let Err(error) = enter_a_namespace_that_allows_ping() {
            crate::sources::kernel::skip(
                "icmp_echo_is_answered_where_ping_sockets_are_allowed",
                &format!(
                    "net.ipv4.ping_group_range leaves this group out, and a network \
                     namespace that allows it cannot be made ({error}; needs root)"
                ),
            );
            return;
        }
        assert!(
            ping_group_allowed(),
            "ping_group_range set in the new namespace"
        );
    }
    let mut prober = Prober::new(&settings(ProbeMethod::Icmp));
    let result = probe_once(&mut prober, ip("127.0.0.1")).await;
    assert!(
        matches!(result.outcome, Outcome::Answered { .. }),
        "{result}"
    );
}

#[tokio::test]
async fn probes_stay_within_their_limits() {
    let mut prober = Prober::new(&ProberConfig {
        method: ProbeMethod::Udp,
        max_per_second: 1,
        timeout: Duration::from_millis(100),
        ..ProberConfig::default()
    });
    let request = |target: &str| ProbeRequest::liveness(ip(target), Purpose::Vtep, None);
    // The same target twice in one batch: one probe.
    prober.submit(vec![request("127.0.0.1"), request("127.0.0.1")]);
    assert_eq!(prober.book().in_flight.len(), 1);
    prober.settle(Duration::from_secs(5)).await;
    // Again within min_interval: skipped. Three more targets: the one token a second is
    // spent (unless this machine stalled for a whole second).
    prober.submit(vec![
        request("127.0.0.1"),
        request("127.0.0.2"),
        request("127.0.0.3"),
        request("127.0.0.4"),
    ]);
    prober.settle(Duration::from_secs(5)).await;
    let stats = prober.stats();
    assert_eq!(stats.probes[&(Purpose::Vtep, "answered")], 1, "{stats:?}");
    assert_eq!(stats.probes[&(Purpose::Vtep, "skipped")], 4, "{stats:?}");
}

#[tokio::test]
async fn a_disabled_prober_sends_nothing() {
    let mut prober = Prober::new(&ProberConfig {
        enabled: false,
        ..ProberConfig::default()
    });
    prober.submit(vec![ProbeRequest::liveness(
        ip("127.0.0.1"),
        Purpose::Vtep,
        None,
    )]);
    assert!(prober.book().in_flight.is_empty());
    assert!(!prober.book().enabled);
    assert_eq!(prober.stats(), ProbeStats::default());
}

#[tokio::test]
async fn a_probe_task_that_panics_frees_its_slot() {
    let mut prober = Prober::new(&settings(ProbeMethod::Udp));
    let key = ProbeKey::liveness(ip("127.0.0.9"));
    let target = ip("10.244.1.0");
    for slot in [Slot::Probe(key), Slot::Mtu(target)] {
        {
            let mut shared = prober.shared.lock().unwrap();
            shared.book.in_flight.insert(key);
            shared.mtu_in_flight.insert(target);
        }
        let guard = InFlight {
            shared: prober.shared.clone(),
            key: slot,
        };
        let shared = prober.shared.clone();
        prober.tasks.spawn(async move {
            let _guard = guard;
            // Panic while holding the lock: the guard must cope with the poison.
            let _held = shared.lock().unwrap();
            panic!("a probe task panics");
        });
        let joined = prober.tasks.join_next().await.expect("the task");
        assert!(joined.unwrap_err().is_panic());
        let shared = prober
            .shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match slot {
            Slot::Probe(_) => assert!(shared.book.in_flight.is_empty()),
            Slot::Mtu(_) => assert!(shared.mtu_in_flight.is_empty()),
        }
        drop(shared);
        prober.shared.clear_poison();
        prober.shared.lock().unwrap().book.in_flight.clear();
    }
}

#[tokio::test]
async fn passive_evidence_appearing_starts_a_search_at_once_lasting_does_not() {
    let mut prober = Prober::new(&settings(ProbeMethod::Udp)).with_mtu(&MtuConfig {
        interval: Duration::from_secs(600),
        ..MtuConfig::default()
    });
    // Loopback, probed directly at 1500 bytes: the port unreachable answers, it fits.
    let target = |urgent| MtuTarget {
        target: ip("127.0.0.1"),
        vtep: ip("127.0.0.1"),
        device: "lo".into(),
        device_mtu: 1450,
        overhead: 50,
        through_overlay: false,
        urgent,
    };
    let searches = |prober: &Prober| prober.stats().mtu_probes;
    prober.submit_mtu(vec![target(false)]);
    prober.settle(Duration::from_secs(5)).await;
    assert_eq!(searches(&prober), 1, "the first search");
    assert_eq!(
        prober.book().mtu[&ip("127.0.0.1")].outcome,
        MtuOutcome::Fits
    );
    // Nothing new: the next search is an interval (600 s) away.
    prober.submit_mtu(vec![target(false)]);
    prober.settle(Duration::from_secs(5)).await;
    assert_eq!(searches(&prober), 1);
    // Evidence appears less than URGENT_MIN_GAP after the last search: kept pending.
    prober.submit_mtu(vec![target(true)]);
    assert!(prober.mtu_pending.contains(&ip("127.0.0.1")));
    // Once the gap passed, searched at once (the recheck, 100 s, is far away).
    tokio::time::sleep(URGENT_MIN_GAP).await;
    prober.submit_mtu(vec![target(true)]);
    prober.settle(Duration::from_secs(5)).await;
    assert_eq!(searches(&prober), 2, "the passive trigger");
    assert!(prober.mtu_pending.is_empty());
    // Evidence that lasts starts nothing more until the recheck.
    tokio::time::sleep(URGENT_MIN_GAP).await;
    prober.submit_mtu(vec![target(true)]);
    prober.settle(Duration::from_secs(5)).await;
    assert_eq!(searches(&prober), 2);
}
