//! Destinations that swallow traffic: packets out and nothing back, or TCP connects that
//! keep failing.

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use super::{
    Inputs,
    silence::{self, Replies},
    vxlan,
};
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
/// one-way traffic to a live listener is not a blackhole. A definitive ICMP error to the
/// probe (host or network unreachable, administratively prohibited, from a host on the
/// way) names it at once, without waiting for a full window and whatever came back
/// before the probe: a destination that answered and then died is as dead as one that
/// never answered (the verdict already holds only if nothing came back since the probe
/// started, and the traffic must have kept going after the last reply). VTEPs of VXLAN
/// devices (and the overlay addresses they are probed at) are left to the FDB detector.
pub fn blackholed_destinations(inputs: &Inputs<'_>) -> Vec<Candidate> {
    let full_window = inputs.full_window();
    let excluded = silence::not_destinations(inputs, &vxlan::vteps(inputs));
    let replies = silence::replies(inputs.now, inputs.then);
    let mut candidates = Vec::new();
    for (&(ifindex, dst), now) in &inputs.now.peers {
        if !silence::is_destination(&excluded, dst) {
            continue;
        }
        let then = inputs.then.peers.get(&(ifindex, dst));
        let sent = growth(now.tx_packets, then.map_or(0, |then| then.tx_packets));
        let replies = replies.get(&dst);
        let back = replies.map_or(0, |replies| replies.back);
        if sent < inputs.settings.min_packets {
            continue;
        }
        let Verdict::Dead(probe) = inputs.probe_verdict(dst, None, replies) else {
            continue;
        };
        let definitive = probe.outcome.definitive();
        let judged = if definitive.is_some() {
            sent_after_last_reply(now.last_tx_ago, replies)
        } else {
            // Silence keeps its window: nothing back during all of it, and a peer known
            // since its start.
            back == 0 && full_window && then.is_some_and(|t| t.tx_packets > 0)
        };
        if !judged {
            continue;
        }
        let mut candidate = Candidate::new(
            Kind::BlackholedDestination,
            format!("destination {dst} dev {}", inputs.dev(ifindex)),
            Severity::Critical,
        )
        .with("packets_sent_in_window", sent)
        .with("packets_back_in_window", back)
        .with(
            "last_reply",
            replies.and_then(|r| r.last_rx_ago).map_or_else(
                || "never".to_owned(),
                |ago| format!("{}s ago", ago.as_secs()),
            ),
        )
        .with("probe", probe);
        if let Some((from, what)) = definitive {
            candidate = candidate.with("icmp", format!("{what} from {from}"));
        }
        candidates.push(attribute(inputs, candidate, dst));
    }
    candidates
}

/// Whether a packet left for a peer after the last reply from it (`None`: never): the
/// traffic met the silence, not only the probe.
fn sent_after_last_reply(last_tx_ago: Option<Duration>, replies: Option<&Replies>) -> bool {
    let Some(tx) = last_tx_ago else {
        return false;
    };
    replies.and_then(|r| r.last_rx_ago).is_none_or(|rx| rx > tx)
}

/// The most clients a finding names; the rest are counted (`+3 more`).
const MAX_CLIENTS_NAMED: usize = 5;

/// A TCP destination with at least `min_failed_connects` failures or `min_syn_retransmits`
/// retransmitted SYNs in the window and no connect established. Names the client
/// namespaces (pods) whose connects went unanswered.
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
        let settings = inputs.settings;
        if established > 0
            || (failed < settings.min_failed_connects
                && syn_retransmits < settings.min_syn_retransmits)
        {
            continue;
        }
        let mut candidate = Candidate::new(
            Kind::FailingTcpDestination,
            format!("tcp {}", std::net::SocketAddr::new(dst, port)),
            Severity::Critical,
        )
        .with("failed_connects_in_window", failed)
        .with("established_in_window", 0)
        .with("syn_retransmits_in_window", syn_retransmits);
        if let Some(clients) = clients(inputs, dst, port) {
            candidate = candidate.with("client", clients);
        }
        candidates.push(attribute(inputs, candidate, dst));
    }
    candidates
}

/// The client namespaces whose connects to `dst:port` failed or retransmitted SYNs in the
/// window, by name, sorted; at most [`MAX_CLIENTS_NAMED`] named.
fn clients(inputs: &Inputs<'_>, dst: IpAddr, port: u16) -> Option<String> {
    let now = inputs.now.connect_clients.get(&(dst, port))?;
    let then = inputs.then.connect_clients.get(&(dst, port));
    let mut names: Vec<String> = now
        .iter()
        .filter(|(netns, sample)| {
            let before = then
                .and_then(|then| then.get(netns))
                .cloned()
                .unwrap_or_default();
            growth(sample.failed, before.failed)
                + growth(sample.syn_retransmits, before.syn_retransmits)
                > 0
        })
        .map(|(netns, _)| client_name(&inputs.now.client_names, *netns))
        .collect();
    if names.is_empty() {
        return None;
    }
    names.sort();
    names.dedup();
    let more = names.len().saturating_sub(MAX_CLIENTS_NAMED);
    names.truncate(MAX_CLIENTS_NAMED);
    let mut text = names.join(",");
    if more > 0 {
        text.push_str(&format!(",+{more} more"));
    }
    Some(text)
}

/// A namespace's name: the one the pipeline found, else its inode.
fn client_name(names: &BTreeMap<u32, String>, netns: u32) -> String {
    names
        .get(&netns)
        .cloned()
        .unwrap_or_else(|| format!("netns:{netns}"))
}
