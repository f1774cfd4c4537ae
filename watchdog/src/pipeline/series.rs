//! One map of the window's samples stored by change: the newest map is kept whole (by the
//! caller); here, per key, only the values it had at older samples where they differ from
//! the next one. A key that did not change over the window takes no room here at all.
//!
//! Ages ("how long ago") are measured from a clock reading that moves with every poll, so
//! an idle peer's ages change although nothing happened: values are compared and stored
//! with their ages shifted by that reading (`age + (u64::MAX - clock)`, constant while
//! nothing happens), and shifted back by the reading of the sample asked for. The shift is
//! exact for any clock (0 when unknown): only how much is shared depends on it.

use std::{collections::BTreeMap, iter::Peekable, time::Duration};

use crate::model::counters::{ConnectSample, PeerSample};

/// A value whose ages are measured from a sample's clock reading.
pub trait Aged: Clone + PartialEq {
    /// Moves every age by `by` nanoseconds (positive: older).
    fn shift_ages(&mut self, by: i128);

    /// The value with every age moved by `by` nanoseconds.
    fn shifted(&self, by: i128) -> Self {
        let mut value = self.clone();
        value.shift_ages(by);
        value
    }
}

impl Aged for u64 {
    fn shift_ages(&mut self, _: i128) {}
}

impl Aged for PeerSample {
    fn shift_ages(&mut self, by: i128) {
        shift_each([&mut self.last_tx_ago, &mut self.last_rx_ago], by);
    }
}

impl Aged for ConnectSample {
    fn shift_ages(&mut self, by: i128) {
        shift_each(
            [&mut self.last_failed_ago, &mut self.last_established_ago],
            by,
        );
    }
}

impl<K: Ord + Clone, V: Aged> Aged for BTreeMap<K, V> {
    fn shift_ages(&mut self, by: i128) {
        for value in self.values_mut() {
            value.shift_ages(by);
        }
    }
}

/// Moves each age that is there by `by` nanoseconds.
fn shift_each<const N: usize>(ages: [&mut Option<Duration>; N], by: i128) {
    for age in ages.into_iter().flatten() {
        *age = shift(*age, by);
    }
}

/// `age` moved by `by` nanoseconds, at least zero. A stored age is only moved back by what
/// it was moved forward; below zero only goes a newest value [`Series::at`] moves to an
/// older clock although it changed since, and replaces with what it was then.
fn shift(age: Duration, by: i128) -> Duration {
    if by == 0 {
        return age;
    }
    // as_nanos() < 2^96: no overflow in i128.
    let nanos = (age.as_nanos() as i128 + by).max(0) as u128;
    Duration::new(
        u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX),
        (nanos % 1_000_000_000) as u32,
    )
}

/// What an age is moved by to be stored: constant for a stamp while the clock moves.
fn stored_shift(clock: u64) -> i128 {
    i128::from(u64::MAX - clock)
}

/// One map's older values: per key, oldest first, (the last sample the value held at,
/// the value then with its ages shifted to be stored; `None`: the key was absent).
#[derive(Debug)]
pub struct Series<K, V> {
    changes: BTreeMap<K, Vec<(u64, Option<V>)>>,
}

impl<K, V> Default for Series<K, V> {
    fn default() -> Self {
        Self {
            changes: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone, V: Aged> Series<K, V> {
    /// Records what changed from `old` (sample `seq`, its ages measured at `old_clock`) to
    /// the map of the next sample, `new` (at `new_clock`).
    pub fn record(
        &mut self,
        seq: u64,
        (old, old_clock): (&BTreeMap<K, V>, u64),
        (new, new_clock): (&BTreeMap<K, V>, u64),
    ) {
        let (old_shift, new_shift) = (stored_shift(old_clock), stored_shift(new_clock));
        for (key, before, after) in merge(old.iter(), new.iter()) {
            let held = match (before, after) {
                (Some(before), Some(after)) => {
                    if old_clock == new_clock {
                        if before == after {
                            continue;
                        }
                        Some(before.shifted(old_shift))
                    } else {
                        let before = before.shifted(old_shift);
                        if before == after.shifted(new_shift) {
                            continue;
                        }
                        Some(before)
                    }
                }
                (Some(before), None) => Some(before.shifted(old_shift)),
                (None, _) => None,
            };
            self.changes
                .entry(key.clone())
                .or_insert_with(|| Vec::with_capacity(1))
                .push((seq, held));
        }
    }

    /// Forgets what only samples before `first` needed.
    pub fn forget_before(&mut self, first: u64) {
        self.changes.retain(|_, changes| {
            let old = changes.partition_point(|(seq, _)| *seq < first);
            changes.drain(..old);
            !changes.is_empty()
        });
    }

    /// The map as of sample `seq` (its ages measured at `clock`), given the newest one
    /// (at `newest_clock`): the newest, its ages moved to `clock` (what an unchanged value
    /// was then), with the values that changed since put back.
    pub fn at(
        &self,
        seq: u64,
        clock: u64,
        (newest, newest_clock): (&BTreeMap<K, V>, u64),
    ) -> BTreeMap<K, V> {
        let mut map = newest.clone();
        let unchanged = i128::from(clock) - i128::from(newest_clock);
        if unchanged != 0 {
            map.shift_ages(unchanged);
        }
        let back = -stored_shift(clock);
        for (key, changes) in &self.changes {
            let Some((_, held)) = changes.get(changes.partition_point(|(at, _)| *at < seq)) else {
                continue;
            };
            match (held, map.get_mut(key)) {
                (Some(held), Some(value)) => *value = held.shifted(back),
                (Some(held), None) => {
                    map.insert(key.clone(), held.shifted(back));
                }
                (None, Some(_)) => {
                    map.remove(key);
                }
                (None, None) => {}
            }
        }
        map
    }

    /// How many older values are stored.
    pub fn stored(&self) -> usize {
        self.changes.values().map(Vec::len).sum()
    }
}

/// Two maps' entries side by side, by key.
fn merge<'a, K: Ord + 'a, A, B>(
    a: impl Iterator<Item = (&'a K, A)>,
    b: impl Iterator<Item = (&'a K, B)>,
) -> impl Iterator<Item = (&'a K, Option<A>, Option<B>)> {
    Merge {
        a: a.peekable(),
        b: b.peekable(),
    }
}

struct Merge<A: Iterator, B: Iterator> {
    a: Peekable<A>,
    b: Peekable<B>,
}

impl<'a, K: Ord + 'a, X, Y, A, B> Iterator for Merge<A, B>
where
    A: Iterator<Item = (&'a K, X)>,
    B: Iterator<Item = (&'a K, Y)>,
{
    type Item = (&'a K, Option<X>, Option<Y>);

    fn next(&mut self) -> Option<Self::Item> {
        let order = match (self.a.peek(), self.b.peek()) {
            (Some((a, _)), Some((b, _))) => a.cmp(b),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => return None,
        };
        Some(match order {
            std::cmp::Ordering::Less => {
                let (key, a) = self.a.next()?;
                (key, Some(a), None)
            }
            std::cmp::Ordering::Greater => {
                let (key, b) = self.b.next()?;
                (key, None, Some(b))
            }
            std::cmp::Ordering::Equal => {
                let (key, a) = self.a.next()?;
                let (_, b) = self.b.next()?;
                (key, Some(a), Some(b))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_age_moved_forward_and_back_is_the_same() {
        let age = Duration::new(12, 345_678_901);
        for clock in [0, 1, 5_000_000_000, u64::MAX - 1, u64::MAX] {
            let stored = shift(age, stored_shift(clock));
            assert_eq!(shift(stored, -stored_shift(clock)), age, "clock {clock}");
        }
    }
}
