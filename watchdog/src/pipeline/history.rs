//! The window history: recent samples, the newest and the one the window's deltas start
//! from. The newest sample is kept whole; the older ones by change ([`Series`]): per map
//! key only the values that differ from the next sample's, so a key that stayed the same
//! over the window (an idle peer, a dead pod's address in the kernel's LRU maps) is stored
//! once, not once per poll. The detectors' `then` and `recent` are rebuilt when a cycle
//! asks.

use std::{
    collections::{BTreeMap, VecDeque},
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use super::series::Series;
use crate::{
    detect::{Clocks, Sample},
    model::{
        counters::{ConnectSample, DropFlow, IcmpErrorSample, PeerSample},
        stack::Stack,
    },
};

/// Recent samples: the newest and the one the window's deltas start from.
#[derive(Debug)]
pub struct History {
    window: Duration,
    /// The per-sample fields of the samples in the window, oldest first (sample `first`).
    frames: VecDeque<Frame>,
    /// The number of the oldest sample in the window.
    first: u64,
    /// The newest sample, whole.
    newest: Option<Arc<Sample>>,
    // The maps as large as the kernel's (thousands of entries) are stored by change; each
    // series is code of its own, so the small ones are copied with their frame.
    drop_destinations: Series<(String, IpAddr), u64>,
    peers: Series<(u32, IpAddr), PeerSample>,
    connects: Series<(IpAddr, u16), ConnectSample>,
    connect_clients: Series<(IpAddr, u16), BTreeMap<u32, ConnectSample>>,
}

/// What a sample has besides its large maps: its own fields and copies of the small maps
/// (at most `DROP_FLOW_MAP_ENTRIES` and `ICMP_ERROR_ENTRIES` entries, one name per
/// client namespace).
#[derive(Debug)]
struct Frame {
    at: Option<Instant>,
    own_netns: u32,
    stack: Stack,
    clocks: Clocks,
    drop_flows: BTreeMap<DropFlow, u64>,
    icmp_errors: BTreeMap<IpAddr, IcmpErrorSample>,
    client_names: BTreeMap<u32, String>,
}

/// The three samples a cycle judges.
#[derive(Debug)]
pub struct Window {
    /// The newest.
    pub now: Arc<Sample>,
    /// The oldest within the window (the start of the deltas).
    pub then: Arc<Sample>,
    /// About `vtep_window` before the newest (see [`History::before`]).
    pub recent: Arc<Sample>,
}

impl History {
    /// Keeps samples up to `window` old.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            frames: VecDeque::new(),
            first: 0,
            newest: None,
            drop_destinations: Series::default(),
            peers: Series::default(),
            connects: Series::default(),
            connect_clients: Series::default(),
        }
    }

    /// Adds the newest sample and forgets those older than the window.
    pub fn push(&mut self, sample: Sample) {
        let now = sample.at.unwrap_or_else(Instant::now);
        if let Some(old) = self.newest.take() {
            self.record(self.first + self.frames.len() as u64 - 1, &old, &sample);
        }
        self.frames.push_back(Frame {
            at: sample.at,
            own_netns: sample.own_netns,
            stack: sample.stack.clone(),
            clocks: sample.clocks,
            drop_flows: sample.drop_flows.clone(),
            icmp_errors: sample.icmp_errors.clone(),
            client_names: sample.client_names.clone(),
        });
        self.newest = Some(Arc::new(sample));
        while self.frames.len() > 1
            && self.frames[1]
                .at
                .is_some_and(|at| now.duration_since(at) >= self.window)
        {
            self.frames.pop_front();
            self.first += 1;
        }
        self.forget_before(self.first);
    }

    /// Stores what changed from sample `seq` (`old`) to the next one (`new`).
    fn record(&mut self, seq: u64, old: &Sample, new: &Sample) {
        let (was, is) = (old.clocks, new.clocks);
        self.drop_destinations.record(
            seq,
            (&old.drop_destinations, 0),
            (&new.drop_destinations, 0),
        );
        self.peers
            .record(seq, (&old.peers, was.peers), (&new.peers, is.peers));
        self.connects.record(
            seq,
            (&old.connects, was.connects),
            (&new.connects, is.connects),
        );
        self.connect_clients.record(
            seq,
            (&old.connect_clients, was.connects),
            (&new.connect_clients, is.connects),
        );
    }

    fn forget_before(&mut self, first: u64) {
        self.drop_destinations.forget_before(first);
        self.peers.forget_before(first);
        self.connects.forget_before(first);
        self.connect_clients.forget_before(first);
    }

    /// The newest sample.
    pub fn now(&self) -> Option<&Sample> {
        self.newest.as_deref()
    }

    /// The oldest sample within the window (the start of the deltas).
    pub fn baseline(&self) -> Option<Arc<Sample>> {
        (!self.frames.is_empty()).then(|| self.sample(self.first))
    }

    /// The newest sample about `age` older than the newest one (at least 90% of it, so
    /// poll jitter does not cost a whole cycle), else the oldest.
    pub fn before(&self, age: Duration) -> Option<Arc<Sample>> {
        self.before_seq(age).map(|seq| self.sample(seq))
    }

    /// The newest, the baseline and the sample `vtep_window` before the newest, each
    /// rebuilt once.
    pub fn window(&self, vtep_window: Duration) -> Option<Window> {
        let now = self.newest.clone()?;
        let recent_seq = self.before_seq(vtep_window)?;
        let recent = self.sample(recent_seq);
        let then = if recent_seq == self.first {
            recent.clone()
        } else {
            self.sample(self.first)
        };
        Some(Window { now, then, recent })
    }

    /// How many older values the history stores besides the newest sample.
    pub fn stored(&self) -> usize {
        self.drop_destinations.stored()
            + self.peers.stored()
            + self.connects.stored()
            + self.connect_clients.stored()
    }

    /// The number of the sample [`History::before`] picks.
    fn before_seq(&self, age: Duration) -> Option<u64> {
        let now = self.newest.as_ref()?.at?;
        let index = self
            .frames
            .iter()
            .rposition(|frame| {
                frame
                    .at
                    .is_some_and(|at| now.duration_since(at) * 10 >= age * 9)
            })
            .unwrap_or(0);
        Some(self.first + index as u64)
    }

    /// Sample `seq` of the window, rebuilt from the newest and the changes since.
    fn sample(&self, seq: u64) -> Arc<Sample> {
        let newest = self
            .newest
            .as_ref()
            .expect("a sample of a window that has one");
        let index = (seq - self.first) as usize;
        if index + 1 == self.frames.len() {
            return newest.clone();
        }
        let frame = &self.frames[index];
        let (clocks, last) = (frame.clocks, newest.clocks);
        Arc::new(Sample {
            at: frame.at,
            own_netns: frame.own_netns,
            stack: frame.stack.clone(),
            clocks,
            drop_destinations: self
                .drop_destinations
                .at(seq, 0, (&newest.drop_destinations, 0)),
            drop_flows: frame.drop_flows.clone(),
            peers: self
                .peers
                .at(seq, clocks.peers, (&newest.peers, last.peers)),
            icmp_errors: frame.icmp_errors.clone(),
            connects: self
                .connects
                .at(seq, clocks.connects, (&newest.connects, last.connects)),
            connect_clients: self.connect_clients.at(
                seq,
                clocks.connects,
                (&newest.connect_clients, last.connects),
            ),
            client_names: frame.client_names.clone(),
        })
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

    /// The history as it was: every sample of the window kept whole. The reference the
    /// stored-by-change history must agree with.
    struct Copies {
        window: Duration,
        samples: VecDeque<Sample>,
    }

    impl Copies {
        fn push(&mut self, sample: Sample) {
            let now = sample.at.unwrap_or_else(Instant::now);
            self.samples.push_back(sample);
            while self.samples.len() > 1
                && self.samples[1]
                    .at
                    .is_some_and(|at| now.duration_since(at) >= self.window)
            {
                self.samples.pop_front();
            }
        }

        fn before(&self, age: Duration) -> Option<&Sample> {
            let now = self.samples.back()?.at?;
            self.samples
                .iter()
                .rev()
                .find(|sample| {
                    sample
                        .at
                        .is_some_and(|at| now.duration_since(at) * 10 >= age * 9)
                })
                .or_else(|| self.samples.front())
        }
    }

    /// What the kernel keeps per key: counters and the stamp (CLOCK_MONOTONIC) of the
    /// last event, turned into an age as of the reading's clock like the probes do.
    #[derive(Clone, Copy, Default)]
    struct Entry {
        count: u64,
        last: u64,
    }

    fn age(clock: u64, stamp: u64) -> Option<Duration> {
        (stamp != 0).then(|| Duration::from_nanos(clock.saturating_sub(stamp)))
    }

    /// Keys appear, change, stay idle, disappear and come back.
    fn step(rng: &mut fastrand::Rng, entries: &mut BTreeMap<u8, Entry>, clock: u64) {
        for key in 0..24u8 {
            match rng.u64(..10) {
                0 => {
                    entries.remove(&key);
                }
                1..=3 => {
                    let entry = entries.entry(key).or_default();
                    entry.count += 1 + rng.u64(..3);
                    // Sometimes stamped after the reading's clock (saturates to 0).
                    entry.last = clock + rng.u64(..3) * 1_000 - 1_000;
                }
                _ => {}
            }
        }
    }

    fn sample(at: Option<Instant>, clocks: Clocks, entries: &BTreeMap<u8, Entry>) -> Sample {
        let addr = |key: u8| IpAddr::from([10, 244, 1, key]);
        let mut sample = Sample {
            at,
            clocks,
            own_netns: 7,
            ..Sample::default()
        };
        for (&key, entry) in entries {
            let (peers, connects) = (clocks.peers, clocks.connects);
            sample.peers.insert(
                (u32::from(key % 3), addr(key)),
                PeerSample {
                    tx_packets: entry.count,
                    rx_packets: entry.count / 2,
                    last_tx_ago: age(peers, entry.last),
                    last_rx_ago: age(peers, entry.last / 2),
                    ..PeerSample::default()
                },
            );
            if key % 2 == 0 {
                sample.icmp_errors.insert(
                    addr(key),
                    IcmpErrorSample {
                        count: entry.count,
                        last_ago: age(peers, entry.last),
                        from: addr(1),
                        what: "host unreachable".into(),
                    },
                );
                sample
                    .drop_destinations
                    .insert(("NEIGH_FAILED".into(), addr(key)), entry.count);
            }
            if key % 3 == 0 {
                let outcome = ConnectSample {
                    attempts: entry.count,
                    failed: entry.count / 3,
                    last_failed_ago: age(connects, entry.last),
                    ..ConnectSample::default()
                };
                sample.connects.insert((addr(key), 80), outcome.clone());
                sample
                    .connect_clients
                    .entry((addr(key), 80))
                    .or_default()
                    .insert(u32::from(key), outcome);
                sample
                    .client_names
                    .insert(u32::from(key), format!("pod-{key}"));
            }
            if key % 4 == 0 {
                sample.drop_flows.insert(
                    DropFlow {
                        netns: 7,
                        reason: "NETFILTER_DROP".into(),
                        ifindex: 2,
                        src: addr(key),
                        dst: addr(2),
                        protocol: 17,
                        dport: 8472,
                    },
                    entry.count,
                );
            }
        }
        sample
    }

    #[test]
    fn the_window_is_exactly_what_every_copy_kept() {
        for seed in 1..=4u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let window = Duration::from_secs(10);
            let mut history = History::new(window);
            let mut copies = Copies {
                window,
                samples: VecDeque::new(),
            };
            let start = Instant::now();
            let (mut elapsed, mut clock) = (Duration::ZERO, 5_000_000_000u64);
            let mut entries = BTreeMap::new();
            for poll in 0..400 {
                let jitter = rng.u64(..200_000_000);
                elapsed += Duration::from_nanos(400_000_000 + jitter);
                clock += 400_000_000 + jitter + rng.u64(..1_000);
                step(&mut rng, &mut entries, clock);
                // Now and then a sample without a time or without clocks.
                let at = (rng.u64(..50) != 0).then_some(start + elapsed);
                let clocks = match rng.u64(..20) {
                    0 => Clocks::default(),
                    _ => Clocks {
                        peers: clock,
                        connects: clock + 7,
                    },
                };
                let new = sample(at, clocks, &entries);
                history.push(new.clone());
                copies.push(new);
                assert_eq!(
                    history.now(),
                    copies.samples.back(),
                    "seed {seed} poll {poll}"
                );
                assert_eq!(
                    history.baseline().as_deref(),
                    copies.samples.front(),
                    "seed {seed} poll {poll}: baseline"
                );
                for vtep in [0, 1_000, 2_000, 5_000, 20_000] {
                    let vtep = Duration::from_millis(vtep);
                    let expected = copies.before(vtep);
                    assert_eq!(
                        history.before(vtep).as_deref(),
                        expected,
                        "seed {seed} poll {poll}: before {vtep:?}"
                    );
                    let rebuilt = history.window(vtep);
                    assert_eq!(rebuilt.is_some(), expected.is_some());
                    if let Some(rebuilt) = rebuilt {
                        assert_eq!(Some(&*rebuilt.then), copies.samples.front());
                        assert_eq!(Some(&*rebuilt.recent), expected);
                        assert_eq!(Some(&*rebuilt.now), copies.samples.back());
                    }
                }
            }
        }
    }

    #[test]
    fn an_unchanged_key_is_stored_once() {
        let start = Instant::now();
        let mut history = History::new(Duration::from_secs(10));
        let idle: BTreeMap<u8, Entry> = (0..200u8)
            .map(|key| {
                (
                    key,
                    Entry {
                        count: u64::from(key) + 1,
                        last: 1_000_000_000 + u64::from(key),
                    },
                )
            })
            .collect();
        for poll in 0..60u64 {
            let clock = 5_000_000_000 + poll * 500_000_123;
            let clocks = Clocks {
                peers: clock,
                connects: clock,
            };
            let mut new = sample(
                Some(start + Duration::from_millis(500 * poll)),
                clocks,
                &idle,
            );
            // One peer that sends every poll.
            new.peers.insert(
                (9, IpAddr::from([10, 0, 0, 1])),
                PeerSample {
                    tx_packets: poll + 1,
                    last_tx_ago: Some(Duration::ZERO),
                    ..PeerSample::default()
                },
            );
            history.push(new);
        }
        // Every idle entry only in the newest sample (its ages moved with the clock); the
        // busy peer once per older sample of the window (21 samples: 20 older).
        assert_eq!(history.stored(), 20);
        let baseline = history.baseline().unwrap();
        let newest = history.now().unwrap();
        let elapsed = newest.clocks.peers - baseline.clocks.peers;
        let key = (0, IpAddr::from([10, 244, 1, 0]));
        assert_eq!(
            newest.peers[&key].last_tx_ago.unwrap() - baseline.peers[&key].last_tx_ago.unwrap(),
            Duration::from_nanos(elapsed),
            "an idle peer's age as of each sample"
        );
    }
}
