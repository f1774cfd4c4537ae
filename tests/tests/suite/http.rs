//! The HTTP server under a connection flood: a cap, timeouts, bounded memory.

use std::{
    io::Read as _,
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use watchdog_tests::{Daemon, NetNs, poll_until, require_root, run_in};

/// No probes: the server alone is under test.
const NO_PROBES: &str = "[probes]\nkfree_skb = false\npeers = false\ntcp = false\n";

/// Opens `count` TCP connections to the daemon (inside its namespace) that send nothing.
fn idle_connections(ns: &NetNs, count: usize) -> Vec<TcpStream> {
    let addr: SocketAddr = "127.0.0.1:9477".parse().unwrap();
    run_in(&ns.path(), || {
        (0..count)
            .map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect"))
            .collect()
    })
}

fn metric(daemon: &Daemon, name: &str) -> Option<f64> {
    let (status, body) = daemon.get("/metrics")?;
    (status == 200).then(|| watchdog_tests::Metrics(body).value(name, &[]))?
}

#[test]
fn a_flood_of_idle_connections_is_capped_timed_out_and_its_memory_returned() {
    if !require_root("a_flood_of_idle_connections_is_capped_timed_out_and_its_memory_returned") {
        return;
    }
    let ns = NetNs::new("wd-http");
    let config = format!(
        "{NO_PROBES}[http]\nmax_connections = 32\nheader_timeout = \"2s\"\nidle_timeout = \"30s\"\n"
    );
    let mut daemon = Daemon::start(&ns, &config);
    daemon.wait_serving();

    let flood = idle_connections(&ns, 2000);
    // The 32 held ones time out after 2 s; every other one was closed at once, so the
    // server still answers (within the 2 s header timeout of the slots it holds; the
    // deadline only allows for a busy machine). Its memory meanwhile is a bench figure.
    poll_until(Duration::from_secs(30), "/metrics during the flood", || {
        metric(&daemon, "watchdog_http_connections_rejected_total")
    });
    // Every flood connection was either refused on accept or held and then timed out
    // (a slot freed by a timeout takes a later one while the flood is still opening).
    let (status, body) = daemon.get("/metrics").expect("scrape");
    assert_eq!(status, 200);
    let metrics = watchdog_tests::Metrics(body);
    let rejected = metrics
        .value("watchdog_http_connections_rejected_total", &[])
        .unwrap();
    let timed_out = metrics
        .value(
            "watchdog_http_connections_timed_out_total",
            &[("timeout", "header")],
        )
        .unwrap();
    assert!(rejected >= 1000.0, "rejected {rejected}");
    assert!(
        rejected + timed_out >= 2000.0 - 32.0,
        "rejected {rejected}, timed out {timed_out}"
    );
    drop(flood);
    // Only the scrape itself is open.
    poll_until(Duration::from_secs(10), "connections back to 1", || {
        (metric(&daemon, "watchdog_http_connections")? <= 1.0).then_some(())
    });
    assert!(daemon.try_exit().is_none(), "{}", daemon.log());
}

#[test]
fn a_slow_header_is_closed_by_the_server_within_the_timeout() {
    if !require_root("a_slow_header_is_closed_by_the_server_within_the_timeout") {
        return;
    }
    let ns = NetNs::new("wd-slowhdr");
    let config = format!("{NO_PROBES}[http]\nheader_timeout = \"1s\"\nidle_timeout = \"30s\"\n");
    let mut daemon = Daemon::start(&ns, &config);
    daemon.wait_serving();
    let mut slow = idle_connections(&ns, 1).remove(0);
    let opened = Instant::now();
    // Slowloris: a request line, then one header byte at a time, never the blank line.
    use std::io::Write as _;
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 512];
    // A server that restarted the timeout on every byte would never close it: the deadline
    // is many timeouts long, for a busy machine; when it closes is a bench figure.
    let closed = loop {
        assert!(
            opened.elapsed() < Duration::from_secs(30),
            "still open after 30 s with header_timeout = 1s"
        );
        match slow.read(&mut buf) {
            Ok(_) => break opened.elapsed(),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break opened.elapsed(),
            Err(_) => {
                // Timed out reading: trickle another byte (the peer may have closed).
                let _ = slow.write_all(b"X");
            }
        }
    };
    assert!(
        closed >= Duration::from_millis(900),
        "closed after {closed:?}"
    );
    let timed_out = poll_until(
        Duration::from_secs(30),
        "the header timeout counted",
        || {
            let (_, body) = daemon.get("/metrics")?;
            watchdog_tests::Metrics(body)
                .value(
                    "watchdog_http_connections_timed_out_total",
                    &[("timeout", "header")],
                )
                .filter(|n| *n >= 1.0)
        },
    );
    assert_eq!(timed_out, 1.0);
    assert!(daemon.try_exit().is_none(), "{}", daemon.log());
}

/// Liveness on its own listener (`health_listen`, the DaemonSet's probes): with every
/// slot of the API's listener held by silent connections, and more silent connections
/// on the health listener than it keeps, each probe is still answered.
#[test]
fn a_flood_of_idle_connections_never_fails_liveness() {
    if !require_root("a_flood_of_idle_connections_never_fails_liveness") {
        return;
    }
    let ns = NetNs::new("wd-health");
    let config = format!(
        "health_listen = \"127.0.0.1:9478\"\n{NO_PROBES}[http]\nmax_connections = 8\n\
         header_timeout = \"60s\"\nidle_timeout = \"60s\"\n"
    );
    let mut daemon = Daemon::start(&ns, &config);
    daemon.wait_serving();
    let health: SocketAddr = "127.0.0.1:9478".parse().unwrap();
    let _held = idle_connections(&ns, 100);
    let _held_too: Vec<TcpStream> = run_in(&ns.path(), || {
        (0..100)
            .map(|_| TcpStream::connect_timeout(&health, Duration::from_secs(5)).expect("connect"))
            .collect()
    });
    for _ in 0..5 {
        let answer = run_in(&ns.path(), || watchdog_tests::http_get(health, "/healthz"));
        assert_eq!(answer, Some((200, "ok\n".to_owned())), "{}", daemon.log());
    }
    // Only health there.
    let answer = run_in(&ns.path(), || {
        watchdog_tests::http_get(health, "/api/v1/findings")
    });
    assert_eq!(answer.map(|(status, _)| status), Some(404));
    assert!(daemon.try_exit().is_none(), "{}", daemon.log());
}
