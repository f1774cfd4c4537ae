//! Silence, and what confirms it. Packets out and nothing back is only a suspicion:
//! overlay traffic does not always flow both ways (statsd, syslog, tracing agents send and
//! never hear back). A silent peer is condemned only when a probe of it went unanswered;
//! a suspect without a fresh probe result is named in a [`ProbeRequest`] for the prober,
//! whose result comes back in a later cycle's [`crate::model::probe::ProbeBook`].

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    time::{Duration, Instant},
};

use super::{Inputs, Sample, is_unicast_host, vxlan};
use crate::model::{
    counters::growth,
    probe::{ProbeKey, ProbeRequest, Purpose, Verdict},
};

/// What came back from one address, on any interface.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Replies {
    /// Packets received from it between the two samples.
    pub back: u64,
    /// How long ago the last one arrived, as of the newer sample (`None`: never).
    pub last_rx_ago: Option<Duration>,
}

/// Replies per address between `base` and `now`, over every interface: any traffic from a
/// peer on any interface shows it is alive.
pub(super) fn replies(now: &Sample, base: &Sample) -> HashMap<IpAddr, Replies> {
    let mut replies: HashMap<IpAddr, Replies> = HashMap::new();
    for (key @ (_, addr), sample) in &now.peers {
        let before = base.peers.get(key).map_or(0, |then| then.rx_packets);
        let entry = replies.entry(*addr).or_default();
        entry.back += growth(sample.rx_packets, before);
        entry.last_rx_ago = match (entry.last_rx_ago, sample.last_rx_ago) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    replies
}

/// Traffic sent to one address on some interfaces between two samples.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Sent {
    /// Packets sent.
    pub packets: u64,
    /// Whether the address was already counted at the older sample (a peer new to the
    /// map has no history to judge).
    pub known: bool,
    /// How long ago the last one left (`None`: never).
    pub last_tx_ago: Option<Duration>,
    /// The interface most of them left on.
    pub dev: Option<u32>,
}

/// What was sent to `addr` on the interfaces `on` accepts between `base` and `now`.
pub(super) fn sent(now: &Sample, base: &Sample, addr: IpAddr, on: impl Fn(u32) -> bool) -> Sent {
    let mut sent = Sent::default();
    let mut most = 0;
    for (&(ifindex, peer), sample) in &now.peers {
        if peer != addr || !on(ifindex) {
            continue;
        }
        let then = base.peers.get(&(ifindex, peer));
        let packets = growth(sample.tx_packets, then.map_or(0, |then| then.tx_packets));
        sent.known |= then.is_some_and(|then| then.tx_packets > 0);
        sent.packets += packets;
        if packets >= most {
            most = packets;
            sent.dev = Some(ifindex);
        }
        sent.last_tx_ago = match (sent.last_tx_ago, sample.last_tx_ago) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    sent
}

impl Inputs<'_> {
    /// When the last reply from a peer arrived, as an instant (`None`: never, or unknown).
    fn last_rx_at(&self, replies: Option<&Replies>) -> Option<Instant> {
        let ago = replies?.last_rx_ago?;
        self.now.at?.checked_sub(ago)
    }

    /// What the latest probe of `target` says about a peer whose replies are `replies`.
    pub(super) fn probe_verdict(
        &self,
        target: IpAddr,
        path: Option<IpAddr>,
        replies: Option<&Replies>,
    ) -> Verdict<'_> {
        let Some(now) = self.now.at else {
            return Verdict::Unknown;
        };
        self.probes.verdict(
            ProbeKey::liveness(target),
            path,
            self.last_rx_at(replies),
            now,
        )
    }

    /// A suspect: it keeps getting packets (`min_packets` since `base`, the last one
    /// within `vtep_window`) and nothing came back since well before the last one left.
    fn suspect(&self, sent: &Sent, replies: Option<&Replies>) -> bool {
        let Some(last_tx) = sent.last_tx_ago else {
            return false;
        };
        let gap = (self.settings.vtep_window / 5).max(Duration::from_millis(50));
        sent.packets >= self.settings.min_packets
            && last_tx < self.settings.vtep_window
            && replies
                .and_then(|r| r.last_rx_ago)
                .is_none_or(|rx| rx > last_tx + gap)
    }

    /// A probe request for a suspect whose probe result does not settle it.
    fn request_if_needed(
        &self,
        target: IpAddr,
        purpose: Purpose,
        path: Option<IpAddr>,
        replies: Option<&Replies>,
    ) -> Option<ProbeRequest> {
        let now = self.now.at?;
        self.probes
            .needs_probe(
                ProbeKey::liveness(target),
                path,
                self.last_rx_at(replies),
                now,
            )
            .then(|| ProbeRequest::liveness(target, purpose, path))
    }
}

/// The peers to probe this cycle: every VTEP and destination that is a suspect (packets
/// out, nothing back since) and has no fresh probe result that settles it. VTEPs are
/// probed through the overlay (the remote node's VXLAN address, so the probe takes exactly
/// that FDB entry) when a remote-node route leads there, and at their underlay address.
pub fn probe_requests(inputs: &Inputs<'_>) -> Vec<ProbeRequest> {
    if !inputs.probes.enabled {
        return Vec::new();
    }
    let mut requests = Vec::new();
    let recent = replies(inputs.now, inputs.recent);
    let vteps = vxlan::vteps(inputs);
    for vtep in &vteps {
        let sent = sent(inputs.now, inputs.recent, vtep.dst, |i| {
            vtep.underlay.contains(&i)
        });
        let replies = recent.get(&vtep.dst);
        if !inputs.suspect(&sent, replies) {
            continue;
        }
        if let Some(request) =
            inputs.request_if_needed(vtep.target, Purpose::Vtep, Some(vtep.dst), replies)
        {
            requests.push(request);
        }
        // Probed through the overlay: its underlay address too (at once, unless the overlay
        // answered), so a failure through the overlay tells a dead VTEP from one that
        // drops this node's frames.
        if vtep.target != vtep.dst
            && !matches!(
                inputs.probe_verdict(vtep.target, Some(vtep.dst), replies),
                Verdict::Alive(_)
            )
            && let Some(request) = inputs.request_if_needed(vtep.dst, Purpose::Vtep, None, replies)
        {
            requests.push(request);
        }
    }
    let window = replies(inputs.now, inputs.then);
    let excluded = not_destinations(inputs, &vteps);
    // Destinations seen on several interfaces are probed once (VTEP targets are excluded).
    let mut requested = HashSet::new();
    for (&(ifindex, dst), now) in &inputs.now.peers {
        if !is_destination(&excluded, dst) {
            continue;
        }
        let then = inputs.then.peers.get(&(ifindex, dst));
        let sent = Sent {
            packets: growth(now.tx_packets, then.map_or(0, |then| then.tx_packets)),
            known: then.is_some_and(|then| then.tx_packets > 0),
            last_tx_ago: now.last_tx_ago,
            dev: Some(ifindex),
        };
        let replies = window.get(&dst);
        if inputs.suspect(&sent, replies)
            && !requested.contains(&dst)
            && let Some(request) =
                inputs.request_if_needed(dst, Purpose::Destination, None, replies)
        {
            requested.insert(dst);
            requests.push(request);
        }
    }
    requests
}

/// Addresses the destination detector does not judge: this host's own, and those it
/// leaves to the FDB detector (every VTEP, that is FDB destination, and the overlay
/// address each remote VTEP is probed at). Sorted, for [`is_destination`].
pub(super) fn not_destinations(inputs: &Inputs<'_>, vteps: &[vxlan::Vtep]) -> Vec<IpAddr> {
    let mut excluded: Vec<IpAddr> = inputs.net.fdb().filter_map(|entry| entry.dst).collect();
    excluded.extend(vteps.iter().map(|vtep| vtep.target));
    excluded.extend(inputs.net.addresses().map(|a| a.prefix.addr));
    excluded.sort_unstable();
    excluded.dedup();
    excluded
}

/// An address the destination detector judges: one remote host, not in `excluded`
/// ([`not_destinations`], which holds this host's addresses).
pub(super) fn is_destination(excluded: &[IpAddr], dst: IpAddr) -> bool {
    is_unicast_host(&dst) && excluded.binary_search(&dst).is_err()
}
