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
    model::{
        counters::{IcmpErrorSample, growth},
        net::Resolution,
        probe::Verdict,
    },
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
/// one-way traffic to a live listener is not a blackhole. A definitive ICMP error (host or
/// network unreachable, administratively prohibited, from a host on the way) names it at
/// once, without waiting for a full window and whatever came back before: to the probe,
/// or to the traffic itself when it is newer than the last reply and than the probe's
/// last answer (the latest evidence wins: an answer vouches only until a host on the way
/// says otherwise). A destination that answered and then died is as dead as one that
/// never answered (the traffic must have kept going after the last reply). VTEPs of VXLAN
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
        let verdict = inputs.probe_verdict(dst, None, replies);
        let icmp = match verdict {
            Verdict::Dead(probe) => probe
                .outcome
                .definitive()
                .map(|(from, what)| format!("{what} from {from}")),
            _ => None,
        }
        .or_else(|| {
            traffic_error(inputs, dst, replies, verdict)
                .map(|error| format!("{} from {} (to the traffic)", error.what, error.from))
        });
        let judged = match (&icmp, verdict) {
            (Some(_), _) => sent_after_last_reply(now.last_tx_ago, replies),
            // Silence keeps its window: nothing back during all of it, and a peer known
            // since its start.
            (None, Verdict::Dead(_)) => {
                back == 0 && full_window && then.is_some_and(|t| t.tx_packets > 0)
            }
            (None, _) => false,
        };
        if !judged {
            continue;
        }
        let probe = match verdict {
            Verdict::Dead(probe) | Verdict::Alive(probe) => probe.to_string(),
            Verdict::Unknown => "none fresh".to_owned(),
        };
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
        if let Some(icmp) = icmp {
            candidate = candidate.with("icmp", icmp);
        }
        candidates.push(attribute(inputs, candidate, dst));
    }
    candidates
}

/// The definitive ICMP error that came back for traffic to `dst` in the window, if it is
/// the latest word on it: newer than its last reply and than the answer of a probe that
/// still vouches for it.
fn traffic_error<'a>(
    inputs: &Inputs<'a>,
    dst: IpAddr,
    replies: Option<&Replies>,
    verdict: Verdict<'_>,
) -> Option<&'a IcmpErrorSample> {
    let error = inputs.now.icmp_errors.get(&dst)?;
    let before = inputs.then.icmp_errors.get(&dst).map_or(0, |e| e.count);
    if growth(error.count, before) == 0 {
        return None; // none in the window
    }
    let ago = error.last_ago?;
    if replies
        .and_then(|r| r.last_rx_ago)
        .is_some_and(|rx| rx <= ago)
    {
        return None; // it replied since
    }
    if let Verdict::Alive(answer) = verdict {
        let at = inputs.now.at?.checked_sub(ago)?;
        if at <= answer.finished {
            return None; // the answer came after it
        }
    }
    Some(error)
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
