//! One detection cycle: kernel counters → sample → window history → detectors (with the
//! network mirror) → findings tracker. Data flows one way; sinks read the result.

use std::{
    sync::{Arc, RwLock},
    time::{Instant, SystemTime},
};

use crate::{
    config::DetectConfig,
    detect::{self, History, Inputs, Sample},
    findings::{Change, Finding, Tracker},
    model::net::Snapshot,
    sources::probes::{
        kfree_skb::{DropSnapshot, KfreeSkb},
        peers::PeerSnapshot,
        tcp::ConnectSnapshot,
    },
};

/// Builds the detectors' view of the kernel counters: this namespace only, reasons named.
pub fn sample(
    own_netns: u32,
    kfree: Option<(&KfreeSkb, &DropSnapshot)>,
    peers: Option<PeerSnapshot>,
    connects: Option<&ConnectSnapshot>,
) -> Sample {
    // With BTF the kernel already filtered (or labelled) namespaces; without it every
    // drop is NETNS_UNKNOWN and kept.
    let ours = |netns: u32| netns == own_netns || netns == watchdog_common::NETNS_UNKNOWN;
    let mut sample = Sample {
        at: Some(Instant::now()),
        ..Sample::default()
    };
    if let Some((probe, drops)) = kfree {
        for (&(netns, reason, addr), &count) in &drops.destinations {
            if ours(netns) {
                *sample
                    .drop_destinations
                    .entry((probe.reason_name(reason).to_owned(), addr))
                    .or_default() += count;
            }
        }
    }
    if let Some(peers) = peers {
        sample.peers = peers.peers;
    }
    if let Some(connects) = connects {
        for (&(netns, addr, port), outcome) in connects {
            if ours(netns) {
                sample.connects.insert((addr, port), outcome.clone());
            }
        }
    }
    sample
}

/// The findings the sinks read (API, metrics), replaced after each cycle.
pub type SharedFindings = Arc<RwLock<Vec<Finding>>>;

/// Detection state carried from cycle to cycle.
pub struct Pipeline {
    settings: DetectConfig,
    history: History,
    tracker: Tracker,
}

impl Pipeline {
    /// A pipeline with empty history.
    pub fn new(settings: DetectConfig) -> Self {
        Self {
            history: History::new(settings.window),
            tracker: Tracker::new(settings.confirm, settings.clear_after),
            settings,
        }
    }

    /// Adds `sample`, runs the detectors over the window, and returns what changed.
    pub fn cycle(&mut self, net: &Snapshot, sample: Sample, now: SystemTime) -> Vec<Change> {
        self.history.push(sample);
        let (Some(newest), Some(baseline), Some(recent)) = (
            self.history.now(),
            self.history.baseline(),
            self.history.before(self.settings.vtep_window),
        ) else {
            return Vec::new();
        };
        let candidates = detect::detect(&Inputs {
            net,
            now: newest,
            then: baseline,
            recent,
            settings: &self.settings,
        });
        self.tracker.update(now, candidates)
    }

    /// The active findings.
    pub fn active(&self) -> Vec<Finding> {
        self.tracker.active()
    }
}
