//! A reading of the kernel counters → the detectors' [`Sample`]: this node's namespaces.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::Instant,
};

use crate::{
    detect::Sample,
    model::{
        counters::Reading,
        pods::{ClientCounts, NamespaceView},
    },
};

/// What the daemon's own namespace is called in findings.
pub const OWN_CLIENT: &str = "node";
/// What connects no namespace could be read for (no kernel BTF) are called in findings.
pub const UNATTRIBUTED_CLIENT: &str = "unattributed";

/// Keeps of a reading only what this node's namespaces did: the daemon's own, the ones
/// `view` counts as this node's, and events no namespace could be read for (no kernel BTF:
/// nothing to tell them apart). The drops of the others are added to
/// `DropCounts::other_netns` (seen, not counted), as the kernel's own filter does with
/// `namespaces = "own"`. What the metrics publish and the detectors judge.
pub fn this_node(own_netns: u32, view: &NamespaceView, mut reading: Reading) -> Reading {
    let ours = |netns: u32| {
        netns == own_netns || netns == watchdog_common::NETNS_UNKNOWN || view.is_member(netns)
    };
    if let Some(drops) = reading.drops.as_mut() {
        let mut others = 0;
        drops.counts.retain(|(netns, _), count| {
            let keep = ours(*netns);
            if !keep {
                others += *count;
            }
            keep
        });
        drops.other_netns += others;
        drops.destinations.retain(|(netns, _, _), _| ours(*netns));
        drops.flows.retain(|flow, _| ours(flow.netns));
    }
    if let Some(connects) = reading.connects.as_mut() {
        connects.retain(|(netns, _, _), _| ours(*netns));
    }
    reading
}

/// Builds the detectors' view of a reading: the daemon's own namespace and the namespaces
/// `view` counts as this node's (reasons are already named). The peer reading moves into
/// the sample: it is the largest map, read every poll.
pub fn sample(own_netns: u32, view: &NamespaceView, reading: Reading) -> Sample {
    // With BTF the kernel already filtered (namespaces = "own") or attributed every event;
    // without it every event is NETNS_UNKNOWN and kept.
    let ours = |netns: u32| {
        netns == own_netns || netns == watchdog_common::NETNS_UNKNOWN || view.is_member(netns)
    };
    let mut sample = Sample {
        at: Some(Instant::now()),
        own_netns,
        stack: reading.stack,
        ..Sample::default()
    };
    if let Some(drops) = reading.drops {
        for ((netns, reason, addr), count) in drops.destinations {
            if ours(netns) {
                *sample.drop_destinations.entry((reason, addr)).or_default() += count;
            }
        }
        for (flow, count) in drops.flows {
            if ours(flow.netns) {
                if let Some(name) = namespace_name(own_netns, view, flow.netns) {
                    sample.client_names.insert(flow.netns, name);
                }
                sample.drop_flows.insert(flow, count);
            }
        }
    }
    sample.clocks.connects = reading.connects_clock;
    if let Some(peers) = reading.peers {
        sample.clocks.peers = peers.clock;
        sample.peers = peers.peers;
        sample.icmp_errors = peers.icmp_errors;
    }
    if let Some(connects) = reading.connects {
        for ((netns, addr, port), outcome) in connects {
            if !ours(netns) {
                continue;
            }
            let sum = sample.connects.entry((addr, port)).or_default();
            sum.attempts += outcome.attempts;
            sum.established += outcome.established;
            sum.failed += outcome.failed;
            sum.retransmits += outcome.retransmits;
            sum.syn_retransmits += outcome.syn_retransmits;
            sum.last_failed_ago = min_some(sum.last_failed_ago, outcome.last_failed_ago);
            sum.last_established_ago =
                min_some(sum.last_established_ago, outcome.last_established_ago);
            if let Some(name) = namespace_name(own_netns, view, netns) {
                sample.client_names.insert(netns, name);
            }
            sample
                .connect_clients
                .entry((addr, port))
                .or_default()
                .insert(netns, outcome);
        }
    }
    sample
}

/// What a namespace is called in findings: `node` (the daemon's own), `unattributed`, or
/// the pod's name when the view knows it (`None`: named by its inode later).
fn namespace_name(own_netns: u32, view: &NamespaceView, netns: u32) -> Option<String> {
    if netns == own_netns {
        Some(OWN_CLIENT.to_owned())
    } else if netns == watchdog_common::NETNS_UNKNOWN {
        Some(UNATTRIBUTED_CLIENT.to_owned())
    } else {
        view.names.get(&netns).cloned()
    }
}

/// TCP outcomes per client namespace, by name (`default/web-7f9…`, `node`,
/// `unattributed`, `netns:<inode>`), summed over every destination: what the per-client
/// metrics show.
pub fn client_totals(sample: &Sample) -> BTreeMap<String, ClientCounts> {
    let mut totals: BTreeMap<String, ClientCounts> = BTreeMap::new();
    for clients in sample.connect_clients.values() {
        for (netns, outcome) in clients {
            let name = sample
                .client_names
                .get(netns)
                .cloned()
                .unwrap_or_else(|| format!("netns:{netns}"));
            let total = totals.entry(name).or_default();
            total.attempts += outcome.attempts;
            total.failed += outcome.failed;
            total.syn_retransmits += outcome.syn_retransmits;
        }
    }
    totals
}

/// The more recent of two "how long ago"s.
fn min_some<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Drops the TCP outcomes towards `own` destinations (the daemon's own alert sinks): a
/// sink that cannot be reached is the alert delivery's failure, counted and alerted on by
/// `watchdog_alerts_*` (WatchdogAlertDeliveryFailing), not a finding about this node's
/// network raised by the daemon's own connections.
pub fn without_destinations(mut sample: Sample, own: &BTreeSet<(IpAddr, u16)>) -> Sample {
    if !own.is_empty() {
        sample
            .connects
            .retain(|destination, _| !own.contains(destination));
        sample
            .connect_clients
            .retain(|destination, _| !own.contains(destination));
    }
    sample
}

/// Keeps only the peers on interfaces that still exist (`exists`: the network mirror knows
/// the index). A deleted interface's peers stay in the kernel's LRU peer map until newer
/// peers evict them (up to its 8192 entries), and the window history holds a copy of the
/// sample every poll: with pods coming and going (a veth each), those copies of peers no
/// detector can judge any more made the daemon's heap grow by ~16 KB per pod that went.
pub fn on_existing_interfaces(mut sample: Sample, exists: impl Fn(u32) -> bool) -> Sample {
    sample.peers.retain(|(index, _), _| exists(*index));
    sample
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::counters::ConnectSample;

    fn reading() -> Reading {
        let failing = ConnectSample {
            attempts: 2,
            syn_retransmits: 2,
            ..ConnectSample::default()
        };
        let dst: IpAddr = "10.244.2.99".parse().unwrap();
        let mut connects = crate::model::counters::ConnectCounts::new();
        for netns in [OWN, POD, OTHER, watchdog_common::NETNS_UNKNOWN] {
            connects.insert((netns, dst, 8080), failing.clone());
        }
        Reading {
            connects: Some(connects),
            ..Reading::default()
        }
    }

    const OWN: u32 = 4026531840;
    const POD: u32 = 4026532001;
    const OTHER: u32 = 4026532002;

    #[test]
    fn only_the_namespaces_of_the_view_are_kept_and_named() {
        let dst = ("10.244.2.99".parse().unwrap(), 8080);
        let own = sample(OWN, &NamespaceView::own_only(), reading());
        assert_eq!(
            own.connects[&dst].syn_retransmits, 4,
            "own and unattributed"
        );
        let view = NamespaceView {
            members: Some(BTreeSet::from([POD])),
            names: [(POD, "default/web".to_owned())].into(),
        };
        let node = sample(OWN, &view, reading());
        assert_eq!(node.connects[&dst].syn_retransmits, 6);
        let clients: Vec<_> = node.connect_clients[&dst].keys().copied().collect();
        assert_eq!(clients, [watchdog_common::NETNS_UNKNOWN, OWN, POD]);
        assert_eq!(node.client_names[&POD], "default/web");
        assert_eq!(node.client_names[&OWN], OWN_CLIENT);
        let totals = client_totals(&node);
        assert_eq!(
            totals.keys().collect::<Vec<_>>(),
            ["default/web", "node", "unattributed"]
        );
        assert_eq!(totals["default/web"].syn_retransmits, 2);
        let all = NamespaceView {
            members: None,
            names: Default::default(),
        };
        let all = sample(OWN, &all, reading());
        assert_eq!(all.connects[&dst].syn_retransmits, 8);
        assert!(
            !all.client_names.contains_key(&OTHER),
            "named by inode later"
        );
    }

    #[test]
    fn the_daemons_own_sinks_are_left_out() {
        let sink = ("127.0.0.1".parse().unwrap(), 9);
        let other = ("127.0.0.1".parse().unwrap(), 10);
        let mut sample = Sample::default();
        sample.connects.insert(sink, ConnectSample::default());
        sample.connects.insert(other, ConnectSample::default());
        let kept = without_destinations(sample, &BTreeSet::from([sink]));
        assert_eq!(kept.connects.keys().collect::<Vec<_>>(), [&other]);
    }

    #[test]
    fn the_peers_of_deleted_interfaces_are_left_out() {
        let addr: IpAddr = "10.211.0.1".parse().unwrap();
        let mut sample = Sample::default();
        for index in [2, 7, 9] {
            sample
                .peers
                .insert((index, addr), crate::model::counters::PeerSample::default());
        }
        let kept = on_existing_interfaces(sample, |index| index != 7);
        assert_eq!(
            kept.peers
                .keys()
                .map(|(index, _)| *index)
                .collect::<Vec<_>>(),
            [2, 9]
        );
    }
}
