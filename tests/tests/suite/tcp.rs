//! The TCP probe counts connect outcomes per destination exactly.

use std::{
    net::{TcpListener, TcpStream},
    time::Duration,
};

use watchdog_tests::{Daemon, NetNs, poll_until, require_root};

const CONNECTS: &str = "watchdog_tcp_connects_total";

#[test]
fn counts_established_refused_and_unanswered_connects_per_destination() {
    if !require_root("counts_established_refused_and_unanswered_connects_per_destination") {
        return;
    }
    let node = NetNs::new("wd-tcp");
    let remote = NetNs::new("wd-tcp-remote");
    node.veth_to(&remote, ("wt0", "10.78.0.1/24"), ("wt1", "10.78.0.2/24"));
    let listener: TcpListener = remote.run(|| TcpListener::bind("10.78.0.2:7100").unwrap());

    let mut daemon = Daemon::start(&node, "");
    daemon.wait_ready();
    node.run(|| {
        for _ in 0..3 {
            TcpStream::connect("10.78.0.2:7100").expect("connect to the listener");
        }
        for _ in 0..4 {
            TcpStream::connect("10.78.0.2:7101").expect_err("nothing listens on 7101");
        }
        // Nobody has 10.78.0.3: the SYN is retransmitted until the connect gives up.
        TcpStream::connect_timeout(
            &"10.78.0.3:80".parse().unwrap(),
            Duration::from_millis(2500),
        )
        .expect_err("10.78.0.3 does not exist");
    });
    drop(listener);

    let outcome = |peer: &'static str, port: &'static str, outcome: &'static str| {
        [("peer", peer), ("port", port), ("outcome", outcome)]
    };
    let metrics = poll_until(Duration::from_secs(10), "the connect outcomes", || {
        let metrics = daemon.metrics();
        (metrics.count(CONNECTS, &outcome("10.78.0.2", "7100", "established")) >= 3
            && metrics.count(CONNECTS, &outcome("10.78.0.2", "7101", "failed")) >= 4
            && metrics.count(CONNECTS, &outcome("10.78.0.3", "80", "failed")) >= 1)
            .then_some(metrics)
    });
    let count = |labels: [(&str, &str); 3]| metrics.count(CONNECTS, &labels);
    assert_eq!(
        count(outcome("10.78.0.2", "7100", "attempted")),
        3,
        "{}",
        metrics.0
    );
    assert_eq!(count(outcome("10.78.0.2", "7100", "established")), 3);
    // Every outcome of a destination is exported once it is: 0 is a value read.
    assert_eq!(
        metrics.series(CONNECTS, &outcome("10.78.0.2", "7100", "failed")),
        0
    );
    assert_eq!(count(outcome("10.78.0.2", "7101", "attempted")), 4);
    assert_eq!(count(outcome("10.78.0.2", "7101", "failed")), 4);
    assert_eq!(count(outcome("10.78.0.3", "80", "failed")), 1);
    let syn = metrics.count(
        "watchdog_tcp_syn_retransmits_total",
        &[("peer", "10.78.0.3"), ("port", "80")],
    );
    assert!(syn >= 1, "no SYN retransmit counted:\n{}", metrics.0);
    assert!(daemon.stop().success());
}
