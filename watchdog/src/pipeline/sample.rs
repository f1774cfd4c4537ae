//! A reading of the kernel counters → the detectors' [`Sample`]: this namespace only.

use std::{collections::BTreeSet, net::IpAddr, time::Instant};

use crate::{detect::Sample, model::counters::Reading};

/// Builds the detectors' view of a reading: this namespace only (reasons are already
/// named). The peer reading moves into the sample: it is the largest map, read every poll.
pub fn sample(own_netns: u32, reading: Reading) -> Sample {
    // With BTF the kernel already filtered (or labelled) namespaces; without it every
    // drop is NETNS_UNKNOWN and kept.
    let ours = |netns: u32| netns == own_netns || netns == watchdog_common::NETNS_UNKNOWN;
    let mut sample = Sample {
        at: Some(Instant::now()),
        ..Sample::default()
    };
    if let Some(drops) = reading.drops {
        for ((netns, reason, addr), count) in drops.destinations {
            if ours(netns) {
                *sample.drop_destinations.entry((reason, addr)).or_default() += count;
            }
        }
    }
    if let Some(peers) = reading.peers {
        sample.peers = peers.peers;
    }
    if let Some(connects) = reading.connects {
        for ((netns, addr, port), outcome) in connects {
            if ours(netns) {
                sample.connects.insert((addr, port), outcome);
            }
        }
    }
    sample
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
    }
    sample
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::counters::ConnectSample;

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
}
