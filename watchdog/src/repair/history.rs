//! What repair remembers about each object between cycles: its changes in the last
//! hour, rollbacks in a row (backoff), conflicts with another writer, whether a change
//! is being verified, and since when a leftover has been seen (for `delete_after`).

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use crate::config::repair::RepairConfig;

/// What repair remembers about one object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectHistory {
    /// When it was changed (changes and rollbacks) in the last hour.
    pub changes: Vec<Instant>,
    /// Rollbacks in a row.
    pub failures: u32,
    /// Being verified: not planned again meanwhile.
    pub busy: bool,
    /// Another writer put it back: left alone, with the reason.
    pub conflict: Option<String>,
    /// When a change to it was last verified.
    pub verified: Option<Instant>,
}

/// Per-object history: changes, failures, conflicts, and since when each leftover object
/// has been deletable. Plain data the engine keeps between cycles.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    objects: BTreeMap<String, ObjectHistory>,
    deletable_since: BTreeMap<String, Instant>,
}

const HOUR: Duration = Duration::from_secs(3600);

impl History {
    /// The history of `key`.
    pub fn get(&self, key: &str) -> Option<&ObjectHistory> {
        self.objects.get(key)
    }

    fn entry(&mut self, key: &str) -> &mut ObjectHistory {
        self.objects.entry(key.to_owned()).or_default()
    }

    /// `key` was changed (or rolled back) at `now`.
    pub fn record_change(&mut self, key: &str, now: Instant) {
        let entry = self.entry(key);
        entry
            .changes
            .retain(|at| now.saturating_duration_since(*at) < HOUR);
        entry.changes.push(now);
    }

    /// A change to `key` was rolled back: it backs off.
    pub fn record_failure(&mut self, key: &str) {
        self.entry(key).failures += 1;
    }

    /// A change to `key` was verified at `now`.
    pub fn record_success(&mut self, key: &str, now: Instant) {
        let entry = self.entry(key);
        entry.failures = 0;
        entry.verified = Some(now);
    }

    /// True when a change to `key` was verified less than `window` before `now`: if it
    /// needs repair again already, another writer put it back.
    pub fn verified_within(&self, key: &str, now: Instant, window: Duration) -> bool {
        self.objects
            .get(key)
            .and_then(|h| h.verified)
            .is_some_and(|at| now.saturating_duration_since(at) < window)
    }

    /// `key` is (or no longer is) being verified.
    pub fn set_busy(&mut self, key: &str, busy: bool) {
        self.entry(key).busy = busy;
    }

    /// Another writer owns `key` now: leave it alone.
    pub fn record_conflict(&mut self, key: &str, why: String) {
        self.entry(key).conflict = Some(why);
    }

    /// Forgets objects with nothing left to remember: not being verified, not in
    /// conflict, not changed in the last hour (keys of Nodes that left, of VTEP MACs
    /// that changed, would otherwise pile up over the daemon's uptime).
    pub fn prune(&mut self, now: Instant) {
        self.objects.retain(|_, h| {
            h.busy
                || h.conflict.is_some()
                || h.changes
                    .iter()
                    .any(|at| now.saturating_duration_since(*at) < HOUR)
        });
    }

    /// How many objects it remembers.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether it remembers none.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Nothing is being verified any more (the executor stopped).
    pub fn clear_busy(&mut self) {
        for entry in self.objects.values_mut() {
            entry.busy = false;
        }
    }

    /// The conflicts still held, by key.
    pub fn conflicts(&self) -> impl Iterator<Item = (&str, &str)> {
        self.objects
            .iter()
            .filter_map(|(k, h)| h.conflict.as_deref().map(|why| (k.as_str(), why)))
    }

    /// Forgets the conflict on `key` (the kernel agrees with the Nodes again).
    pub fn clear_conflict(&mut self, key: &str) {
        if let Some(entry) = self.objects.get_mut(key) {
            entry.conflict = None;
        }
    }

    /// The leftover objects seen now: remembered since their first sighting, forgotten
    /// when a plan no longer has them.
    pub fn observe_deletable(&mut self, keys: &[String], now: Instant) {
        let seen: BTreeSet<&String> = keys.iter().collect();
        self.deletable_since.retain(|k, _| seen.contains(k));
        for key in keys {
            self.deletable_since.entry(key.clone()).or_insert(now);
        }
    }

    /// Since when `key` has been deletable, if it has.
    pub fn deletable_since(&self, key: &str) -> Option<Instant> {
        self.deletable_since.get(key).copied()
    }

    /// Why `key` may not be changed now, if it may not.
    pub fn hold_reason(&self, key: &str, now: Instant, settings: &RepairConfig) -> Option<String> {
        let entry = self.objects.get(key)?;
        if let Some(why) = &entry.conflict {
            return Some(format!("in conflict, left alone: {why}"));
        }
        if entry.busy {
            return Some("a change to it is being verified".into());
        }
        let recent: Vec<&Instant> = entry
            .changes
            .iter()
            .filter(|at| now.saturating_duration_since(**at) < HOUR)
            .collect();
        if recent.len() >= settings.max_per_hour as usize {
            return Some(format!(
                "changed {} times in the last hour (repair.max_per_hour = {})",
                recent.len(),
                settings.max_per_hour
            ));
        }
        if entry.failures > 0
            && let Some(last) = recent.last()
        {
            let wait = backoff(entry.failures, settings.verify_window);
            let since = now.saturating_duration_since(**last);
            if since < wait {
                return Some(format!(
                    "backing off after {} rollback(s): next attempt in {}s",
                    entry.failures,
                    (wait - since).as_secs().max(1)
                ));
            }
        }
        None
    }
}

/// How long an object waits after `failures` rollbacks in a row: 6 verify windows (1 min
/// at the default), doubling, at most an hour.
pub fn backoff(failures: u32, verify_window: Duration) -> Duration {
    let base = verify_window * 6;
    let factor = 1u32 << failures.saturating_sub(1).min(10);
    (base * factor).min(HOUR)
}
