//! Destinations that swallow traffic: packets out and nothing back, or TCP connects that
//! keep failing.

use std::net::IpAddr;

use super::{Inputs, silence, vxlan};
use crate::{
    findings::{Candidate, Kind, Severity},
    model::{counters::growth, net::Resolution, probe::Verdict},
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

/// A remote address that got at least `min_packets` during a full window, sent nothing
/// back on any interface, and did not answer a probe (no answer, or host unreachable):
/// one-way traffic to a live listener is not a blackhole. VTEPs of VXLAN devices (and the
/// overlay addresses they are probed at) are left to the FDB detector.
pub fn blackholed_destinations(inputs: &Inputs<'_>) -> Vec<Candidate> {
    if !inputs.full_window() {
        return Vec::new();
    }
    let excluded = silence::not_destinations(inputs, &vxlan::vteps(inputs));
    let replies = silence::replies(inputs.now, inputs.then);
    let mut candidates = Vec::new();
    for (&(ifindex, dst), now) in &inputs.now.peers {
        if !silence::is_destination(&excluded, dst) {
            continue;
        }
        let Some(then) = inputs.then.peers.get(&(ifindex, dst)) else {
            continue;
        };
        let sent = growth(now.tx_packets, then.tx_packets);
        let replies = replies.get(&dst);
        let back = replies.map_or(0, |replies| replies.back);
        if then.tx_packets == 0 || sent < inputs.settings.min_packets || back != 0 {
            continue;
        }
        let Verdict::Dead(probe) = inputs.probe_verdict(dst, None, replies) else {
            continue;
        };
        let candidate = Candidate::new(
            Kind::BlackholedDestination,
            format!("destination {dst} dev {}", inputs.dev(ifindex)),
            Severity::Critical,
        )
        .with("packets_sent_in_window", sent)
        .with("packets_back_in_window", 0)
        .with(
            "last_reply",
            replies.and_then(|r| r.last_rx_ago).map_or_else(
                || "never".to_owned(),
                |ago| format!("{}s ago", ago.as_secs()),
            ),
        )
        .with("probe", probe);
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
