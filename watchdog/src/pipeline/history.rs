//! The window history: recent samples, the newest and the one the window's deltas start
//! from.

use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::detect::Sample;

/// Recent samples: the newest and the one the window's deltas start from.
#[derive(Debug)]
pub struct History {
    window: Duration,
    samples: VecDeque<Arc<Sample>>,
}

impl History {
    /// Keeps samples up to `window` old.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            samples: VecDeque::new(),
        }
    }

    /// Adds the newest sample and forgets those older than the window.
    pub fn push(&mut self, sample: Sample) {
        let now = sample.at.unwrap_or_else(Instant::now);
        self.samples.push_back(Arc::new(sample));
        while self.samples.len() > 1
            && self.samples[1]
                .at
                .is_some_and(|at| now.duration_since(at) >= self.window)
        {
            self.samples.pop_front();
        }
    }

    /// The newest sample.
    pub fn now(&self) -> Option<&Sample> {
        self.samples.back().map(Arc::as_ref)
    }

    /// The oldest sample within the window (the start of the deltas).
    pub fn baseline(&self) -> Option<&Sample> {
        self.samples.front().map(Arc::as_ref)
    }

    /// The newest sample about `age` older than the newest one (at least 90% of it, so
    /// poll jitter does not cost a whole cycle), else the oldest.
    pub fn before(&self, age: Duration) -> Option<&Sample> {
        let now = self.now()?.at?;
        self.samples
            .iter()
            .rev()
            .find(|sample| {
                sample
                    .at
                    .is_some_and(|at| now.duration_since(at) * 10 >= age * 9)
            })
            .or_else(|| self.samples.front())
            .map(Arc::as_ref)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keeps_a_window_of_samples() {
        let start = Instant::now();
        let mut history = History::new(Duration::from_secs(10));
        for second in 0..15 {
            history.push(Sample {
                at: Some(start + Duration::from_secs(second)),
                ..Sample::default()
            });
        }
        let newest = history.now().unwrap().at.unwrap();
        assert_eq!(
            newest - history.baseline().unwrap().at.unwrap(),
            Duration::from_secs(10)
        );
        let before = history.before(Duration::from_secs(2)).unwrap().at.unwrap();
        assert_eq!(newest - before, Duration::from_secs(2));
    }
}
