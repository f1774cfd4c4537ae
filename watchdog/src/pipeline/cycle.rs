//! One detection cycle: the new sample into the window history, the detectors over the
//! window (with the network mirror and the prober's latest results), the findings tracker;
//! and the suspects the prober should check before the next cycle.

use std::time::SystemTime;

use super::History;
use crate::{
    config::DetectConfig,
    detect::{self, Inputs, Sample},
    findings::{Change, Finding, Tracker},
    model::{
        net::Snapshot,
        probe::{ProbeBook, ProbeRequest},
    },
};

/// Detection state carried from cycle to cycle.
pub struct Pipeline {
    settings: DetectConfig,
    history: History,
    tracker: Tracker,
    /// The prober's results as of the coming cycle.
    probes: ProbeBook,
    /// The suspects the last cycle named.
    requests: Vec<ProbeRequest>,
}

impl Pipeline {
    /// A pipeline with empty history.
    pub fn new(settings: DetectConfig) -> Self {
        Self {
            history: History::new(settings.window),
            tracker: Tracker::new(settings.confirm, settings.clear_after),
            settings,
            probes: ProbeBook::default(),
            requests: Vec::new(),
        }
    }

    /// The prober's latest results, for the next cycle.
    pub fn set_probes(&mut self, probes: ProbeBook) {
        self.probes = probes;
    }

    /// The suspects the last cycle named, for the prober (taken once).
    pub fn take_probe_requests(&mut self) -> Vec<ProbeRequest> {
        std::mem::take(&mut self.requests)
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
        let inputs = Inputs {
            net,
            now: newest,
            then: baseline,
            recent,
            settings: &self.settings,
            probes: &self.probes,
        };
        let candidates = detect::detect(&inputs);
        self.requests = detect::probe_requests(&inputs);
        self.tracker.update(now, candidates)
    }

    /// The active findings.
    pub fn active(&self) -> Vec<Finding> {
        self.tracker.active()
    }
}
