//! Destinations that swallow traffic: packets out and nothing back, or TCP connects that
//! keep failing.

use std::net::IpAddr;

use super::{Inputs, is_unicast_host};
use crate::{
    findings::{Candidate, Kind, Severity},
    model::{counters::growth, net::Resolution},
};

/// Adds the route (and policy rule) that carries traffic to `dst`.
fn attribute(inputs: &Inputs<'_>, mut candidate: Candidate, dst: IpAddr) -> Candidate {
    match inputs.route_for(dst) {
        Some(Resolution::Route { route, rule }) => {
            candidate = candidate.with("route", inputs.describe(route));
            if let Some(rule) = rule
                && rule.priority != 0
            {
                candidate = candidate.with("rule", format!("priority {}", rule.priority));
            }
            candidate.routes.push(inputs.route_ref(route));
        }
        Some(Resolution::Rejected { rule }) => {
            candidate = candidate.with("rule", format!("priority {} rejects", rule.priority));
        }
        None => candidate = candidate.with("route", "none"),
    }
    candidate
}

/// A remote address that got at least `min_packets` during a full window and sent
/// nothing back. VTEPs of VXLAN devices are left to the FDB detector.
pub fn blackholed_destinations(inputs: &Inputs<'_>) -> Vec<Candidate> {
    if !inputs.full_window() {
        return Vec::new();
    }
    let vteps: Vec<IpAddr> = inputs.net.fdb().filter_map(|entry| entry.dst).collect();
    let mut candidates = Vec::new();
    for (&(ifindex, dst), now) in &inputs.now.peers {
        if !is_unicast_host(&dst) || inputs.is_local(&dst) || vteps.contains(&dst) {
            continue;
        }
        let Some(then) = inputs.then.peers.get(&(ifindex, dst)) else {
            continue;
        };
        let sent = growth(now.tx_packets, then.tx_packets);
        let back = growth(now.rx_packets, then.rx_packets);
        if then.tx_packets == 0 || sent < inputs.settings.min_packets || back != 0 {
            continue;
        }
        let candidate = Candidate::new(
            Kind::BlackholedDestination,
            format!("destination {dst} dev {}", inputs.dev(ifindex)),
            Severity::Critical,
        )
        .with("packets_sent_in_window", sent)
        .with("packets_back_in_window", 0)
        .with(
            "last_reply",
            now.last_rx_ago.map_or_else(
                || "never".to_owned(),
                |ago| format!("{}s ago", ago.as_secs()),
            ),
        );
        candidates.push(attribute(inputs, candidate, dst));
    }
    candidates
}

/// A TCP destination with at least `min_failed_connects` failures (or unanswered SYN
/// retransmits) in the window and no connect established.
pub fn failing_tcp_destinations(inputs: &Inputs<'_>) -> Vec<Candidate> {
    let mut candidates = Vec::new();
    for (&(dst, port), now) in &inputs.now.connects {
        let then = inputs
            .then
            .connects
            .get(&(dst, port))
            .cloned()
            .unwrap_or_default();
        let failed = growth(now.failed, then.failed);
        let established = growth(now.established, then.established);
        let syn_retransmits = growth(now.syn_retransmits, then.syn_retransmits);
        let minimum = inputs.settings.min_failed_connects;
        if established > 0 || (failed < minimum && syn_retransmits < minimum) {
            continue;
        }
        let candidate = Candidate::new(
            Kind::FailingTcpDestination,
            format!("tcp {}", std::net::SocketAddr::new(dst, port)),
            Severity::Critical,
        )
        .with("failed_connects_in_window", failed)
        .with("established_in_window", 0)
        .with("syn_retransmits_in_window", syn_retransmits);
        candidates.push(attribute(inputs, candidate, dst));
    }
    candidates
}
