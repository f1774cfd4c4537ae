//! Kernel counter readings as plain data: what the probes read from their maps, summed over
//! CPUs, with drop reasons already named. Cumulative since the probes were attached; the
//! detectors and the metrics take what they need from them.

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

/// What a cumulative counter grew by from `then` to `now`: 0 when it went backwards (an
/// LRU entry evicted and created again). The one way the stages take counter deltas.
pub fn growth(now: u64, then: u64) -> u64 {
    now.saturating_sub(then)
}

/// The drop counters (`skb:kfree_skb`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropCounts {
    /// Drops per (network namespace inode, reason name); reasons the kernel does not name
    /// are counted together under `UNKNOWN`.
    pub counts: BTreeMap<(u32, String), u64>,
    /// Drops per (network namespace inode, reason name, destination address), for the route
    /// and neighbour reasons.
    pub destinations: BTreeMap<(u32, String, IpAddr), u64>,
    /// Drops per flow, for the reasons whose cause is named by what was dropped where
    /// (netfilter, reverse-path filtering, checksums).
    pub flows: BTreeMap<DropFlow, u64>,
    /// Drops not counted because the key map was full.
    pub map_full: u64,
    /// Drops in other namespaces, skipped by the namespace filter.
    pub other_netns: u64,
    /// Drops skipped by the namespace filter because their namespace could not be read.
    pub unattributed: u64,
}

/// One flow of dropped packets: where (namespace, device), why, and what (addresses,
/// protocol, UDP destination port).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DropFlow {
    /// Network namespace inode.
    pub netns: u32,
    /// The kernel's drop reason name.
    pub reason: String,
    /// The device the packet was dropped on (arrived on, or was leaving by); 0: none.
    pub ifindex: u32,
    /// The packet's source address.
    pub src: IpAddr,
    /// The packet's destination address.
    pub dst: IpAddr,
    /// The IP protocol number (6 TCP, 17 UDP, 1 ICMP, …).
    pub protocol: u8,
    /// The UDP destination port; 0 for other protocols.
    pub dport: u16,
}

impl DropFlow {
    /// `10.244.1.2 → 10.244.2.2 udp/8472`.
    pub fn describe(&self) -> String {
        let proto = match self.protocol {
            1 | 58 => "icmp".to_owned(),
            6 => "tcp".to_owned(),
            17 if self.dport != 0 => format!("udp/{}", self.dport),
            17 => "udp".to_owned(),
            other => format!("proto {other}"),
        };
        format!("{} → {} {proto}", self.src, self.dst)
    }
}

/// Traffic with one remote address on one interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerSample {
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// How long ago the last packet was sent (None: never).
    pub last_tx_ago: Option<Duration>,
    /// How long ago the last packet was received (None: never).
    pub last_rx_ago: Option<Duration>,
    /// `watchdog_common::encap` bits seen.
    pub encap: u32,
}

/// Definitive ICMP errors (host or network unreachable, administratively prohibited) that
/// came back for traffic to one destination, as the TC ingress program saw them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IcmpErrorSample {
    /// Errors received (cumulative while the destination stays in the map).
    pub count: u64,
    /// How long ago the last one arrived, on the clock of [`PeerSample::last_rx_ago`].
    pub last_ago: Option<Duration>,
    /// Who sent the last one (a router or the destination's node).
    pub from: IpAddr,
    /// The last one in words, as the prober says it (`host unreachable`).
    pub what: String,
}

/// The per-peer traffic counters (TC programs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerCounts {
    /// Samples by (interface index, remote address).
    pub peers: BTreeMap<(u32, IpAddr), PeerSample>,
    /// Definitive ICMP errors by the destination they were about.
    pub icmp_errors: BTreeMap<IpAddr, IcmpErrorSample>,
    /// New peers ever inserted into the LRU map.
    pub inserts: u64,
    /// Packets not recorded because a new peer could not be inserted.
    pub insert_failed: u64,
    /// The clock reading (CLOCK_MONOTONIC, ns; 0: unknown) the peers' and the ICMP errors'
    /// ages are measured from: an idle peer's age grows with it, its `clock - age` stays.
    pub clock: u64,
}

/// TCP connect outcomes towards one destination.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectSample {
    /// Connects started.
    pub attempts: u64,
    /// Connects established.
    pub established: u64,
    /// Connects failed.
    pub failed: u64,
    /// Segments retransmitted.
    pub retransmits: u64,
    /// SYNs retransmitted.
    pub syn_retransmits: u64,
    /// How long ago the last connect failed.
    pub last_failed_ago: Option<Duration>,
    /// How long ago the last connect succeeded.
    pub last_established_ago: Option<Duration>,
}

/// Every TCP destination, by (network namespace inode, address, port).
pub type ConnectCounts = BTreeMap<(u32, IpAddr, u16), ConnectSample>;

/// One read of every probe's maps: `None` where the probe is not running or its read
/// failed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reading {
    /// The drop counters.
    pub drops: Option<DropCounts>,
    /// The per-peer traffic.
    pub peers: Option<PeerCounts>,
    /// The TCP outcomes.
    pub connects: Option<ConnectCounts>,
    /// The clock reading (CLOCK_MONOTONIC, ns; 0: unknown) the TCP outcomes' ages are
    /// measured from.
    pub connects_clock: u64,
    /// Network namespace (inode) → the cgroup (v2 id) a process of it last started a TCP
    /// connect from, as the kernel recorded it (the TCP probe; empty without it).
    pub netns_cgroups: std::collections::BTreeMap<u32, u64>,
    /// Map reads that failed in this reading (each also logged).
    pub failed_reads: u64,
    /// The kernel's filtering and offload configuration the pipeline asked about (what
    /// explains netfilter, reverse-path and checksum drops).
    pub stack: crate::model::stack::Stack,
}

impl Reading {
    /// Every network namespace (inode) the TCP and drop maps hold, each with the cgroup a
    /// process of it last connected from, when the kernel recorded one.
    pub fn namespaces(&self) -> crate::model::pods::SeenNamespaces {
        let mut seen = crate::model::pods::SeenNamespaces::new();
        let mut netns: Vec<u32> = Vec::new();
        if let Some(connects) = &self.connects {
            netns.extend(connects.keys().map(|(netns, _, _)| *netns));
        }
        if let Some(drops) = &self.drops {
            netns.extend(drops.destinations.keys().map(|(netns, _, _)| *netns));
            netns.extend(drops.flows.keys().map(|flow| flow.netns));
            netns.extend(drops.counts.keys().map(|(netns, _)| *netns));
        }
        for netns in netns {
            seen.insert(netns, self.netns_cgroups.get(&netns).copied());
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::growth;

    #[test]
    fn growth_never_goes_negative() {
        assert_eq!(growth(10, 4), 6);
        assert_eq!(growth(4, 10), 0);
    }
}
