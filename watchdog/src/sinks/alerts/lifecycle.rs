//! The alert lifecycle: dedup by finding identity (kind, subject), repeat a firing alert
//! every `repeat_interval`, send `resolved` once; and grouping of alerts within
//! `group_window` into one message.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant, SystemTime},
};

use super::event::Alert;
use crate::findings::{Change, Finding, Kind};

/// Dedup and repetition: which findings have been announced as firing, and when last.
#[derive(Debug)]
pub struct Lifecycle {
    repeat_interval: Duration,
    firing: BTreeMap<(Kind, String), Instant>,
}

impl Lifecycle {
    /// Nothing announced yet.
    pub fn new(repeat_interval: Duration) -> Self {
        Self {
            repeat_interval,
            firing: BTreeMap::new(),
        }
    }

    /// The alerts one detection cycle produces: `firing` once per fired finding, again
    /// every `repeat_interval` while it stays active, `resolved` once when it clears.
    pub fn cycle(
        &mut self,
        now: Instant,
        wall: SystemTime,
        changes: &[Change],
        active: &[Finding],
    ) -> Vec<Alert> {
        let mut alerts = Vec::new();
        for change in changes {
            match change {
                Change::Fired(finding) => {
                    if let std::collections::btree_map::Entry::Vacant(entry) =
                        self.firing.entry(key(finding))
                    {
                        entry.insert(now);
                        alerts.push(Alert::firing(finding, false));
                    }
                }
                Change::Resolved(finding) => {
                    if self.firing.remove(&key(finding)).is_some() {
                        alerts.push(Alert::resolved(finding, wall));
                    }
                }
            }
        }
        for finding in active {
            match self.firing.get_mut(&key(finding)) {
                Some(last) if now.duration_since(*last) >= self.repeat_interval => {
                    *last = now;
                    alerts.push(Alert::firing(finding, true));
                }
                Some(_) => {}
                None => {
                    // Active but never announced (e.g. fired before alerts were started).
                    self.firing.insert(key(finding), now);
                    alerts.push(Alert::firing(finding, false));
                }
            }
        }
        alerts
    }
}

fn key(finding: &Finding) -> (Kind, String) {
    (finding.candidate.kind, finding.candidate.subject.clone())
}

/// Collects alerts for `group_window`, then releases them as one batch.
#[derive(Debug)]
pub struct Grouper {
    window: Duration,
    pending: Vec<Alert>,
    since: Option<Instant>,
}

impl Grouper {
    /// `window` zero: every alert is its own batch, released at once.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            pending: Vec::new(),
            since: None,
        }
    }

    /// Adds `alerts` and returns the batches due at `now`.
    pub fn push(&mut self, now: Instant, alerts: Vec<Alert>) -> Vec<Vec<Alert>> {
        if self.window.is_zero() {
            return alerts.into_iter().map(|alert| vec![alert]).collect();
        }
        if !alerts.is_empty() && self.since.is_none() {
            self.since = Some(now);
        }
        self.pending.extend(alerts);
        match self.since {
            Some(since) if now.duration_since(since) >= self.window => {
                self.since = None;
                vec![std::mem::take(&mut self.pending)]
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::alerts::{
        event::State,
        tests::{at, finding, named},
    };

    fn states(alerts: &[Alert]) -> Vec<(State, bool, &str)> {
        alerts
            .iter()
            .map(|a| (a.state, a.repeat, a.subject.as_str()))
            .collect()
    }

    #[test]
    fn lifecycle_dedups_repeats_and_resolves_once() {
        let start = Instant::now();
        let s = |secs: u64| start + Duration::from_secs(secs);
        let mut life = Lifecycle::new(Duration::from_secs(60));
        let f = finding();
        let fired = life.cycle(
            s(0),
            at(0),
            &[Change::Fired(f.clone())],
            std::slice::from_ref(&f),
        );
        assert_eq!(states(&fired), [(State::Firing, false, "dev flannel.1")]);
        // A duplicate Fired (same identity) and cycles within the interval: nothing.
        assert!(
            life.cycle(
                s(1),
                at(1),
                &[Change::Fired(f.clone())],
                std::slice::from_ref(&f)
            )
            .is_empty()
        );
        assert!(
            life.cycle(s(59), at(59), &[], std::slice::from_ref(&f))
                .is_empty()
        );
        // Still active after the interval: repeated once per interval.
        let repeat = life.cycle(s(60), at(60), &[], std::slice::from_ref(&f));
        assert_eq!(states(&repeat), [(State::Firing, true, "dev flannel.1")]);
        assert!(
            life.cycle(s(61), at(61), &[], std::slice::from_ref(&f))
                .is_empty()
        );
        // Resolved once; a second Resolved for the same identity is ignored.
        let resolved = life.cycle(s(70), at(70), &[Change::Resolved(f.clone())], &[]);
        assert_eq!(
            states(&resolved),
            [(State::Resolved, false, "dev flannel.1")]
        );
        assert_eq!(resolved[0].resolved_at, Some(at(70)));
        assert!(
            life.cycle(s(71), at(71), &[Change::Resolved(f.clone())], &[])
                .is_empty()
        );
        // Fires again later: a new alert.
        let again = life.cycle(s(80), at(80), &[Change::Fired(f.clone())], &[f]);
        assert_eq!(states(&again), [(State::Firing, false, "dev flannel.1")]);
    }

    #[test]
    fn grouping_window_batches_alerts() {
        let start = Instant::now();
        let ms = |n: u64| start + Duration::from_millis(n);
        let a = Alert::firing(&named("a"), false);
        let b = Alert::firing(&named("b"), false);
        let mut none = Grouper::new(Duration::ZERO);
        assert_eq!(none.push(ms(0), vec![a.clone(), b.clone()]).len(), 2);
        let mut group = Grouper::new(Duration::from_millis(500));
        assert!(group.push(ms(0), vec![a.clone()]).is_empty());
        assert!(group.push(ms(250), vec![b.clone()]).is_empty());
        let batches = group.push(ms(500), vec![]);
        assert_eq!(batches, vec![vec![a.clone(), b]]);
        // Nothing pending: nothing released; the window restarts with the next alert.
        assert!(group.push(ms(2000), vec![]).is_empty());
        assert!(group.push(ms(2100), vec![a.clone()]).is_empty());
        assert_eq!(group.push(ms(2600), vec![]), vec![vec![a]]);
    }
}
