//! The soak: a healthy lab under a realistic mix (ping, TCP bulk, one-way UDP,
//! request/response UDP, a pod restarting every few seconds, a host firewall dropping a
//! port scan of the node) raises nothing, and the daemon's fds and memory stay flat. `cargo xtask bench soak` runs the same for 10 min.

use std::time::Duration;

use watchdog_tests::{require_root, soak};

/// Default settings: the healthy mix must not trip the defaults.
#[test]
fn a_healthy_mix_for_two_minutes_raises_nothing_and_leaks_nothing() {
    if !require_root("a_healthy_mix_for_two_minutes_raises_nothing_and_leaks_nothing") {
        return;
    }
    let report = soak::run(soak::Settings::Given(""), Duration::from_secs(120));
    eprintln!("soak: {report:#?}");
    assert!(report.findings.is_empty(), "{report:#?}");
    assert!(report.checks > 200, "{report:#?}");
    assert!(report.restarts >= 15, "{report:#?}");
    // The mix really ran: traffic got through every way.
    assert!(report.echoes.0 > 2000, "{report:#?}");
    assert!(report.one_way.0 > 6000, "{report:#?}");
    assert!(report.bulk_bytes > 10_000_000, "{report:#?}");
    // The host firewall dropped the scan, and the daemon counted its drops.
    assert!(report.scanned > 1000, "{report:#?}");
    assert!(report.netfilter_drops > 1000, "{report:#?}");
    // Flat: no fd per restart, memory within allocator noise.
    assert!(report.fds.1 <= report.fds.0 + 2, "{report:#?}");
    assert!(
        report.rss_kib.1 <= report.rss_kib.0 + report.rss_kib.0 / 4 + 2048,
        "{report:#?}"
    );
}
