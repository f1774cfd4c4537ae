//! A reading of the kernel counters → the detectors' [`Sample`]: this namespace only.

use std::time::Instant;

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
