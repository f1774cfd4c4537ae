//! One detection cycle: the new sample into the window history, the detectors over the
//! window (with the network mirror), the findings tracker.

use std::time::SystemTime;

use super::History;
use crate::{
    config::DetectConfig,
    detect::{self, Inputs, Sample},
    findings::{Change, Finding, Tracker},
    model::net::Snapshot,
};

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
