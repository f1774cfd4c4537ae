//! Active probes: the one source that sends packets. The pipeline names suspects (a VTEP
//! or a destination with packets out and nothing back) as [`ProbeRequest`]s; the daemon
//! hands them to the [`Prober`], which checks them within its limits (one probe per target
//! per `min_interval`, `max_per_second` in all) on tasks of its own; the results come back
//! as plain data ([`ProbeBook`]) in the next cycle's inputs. Detectors never call it.
//!
//! No privilege is needed: ICMP echo through an unprivileged ping socket where
//! `net.ipv4.ping_group_range` allows the daemon's group, else a UDP datagram to an unused
//! high port whose ICMP port unreachable is read with IP_RECVERR. Probes may be sized with
//! DF set (IP_PMTUDISC_PROBE) for path-MTU checks.

mod mtu;
pub mod run;
mod socket;

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::task::JoinSet;

pub use self::run::UDP_BASE_PORT;
use crate::{
    config::{MtuConfig, ProberConfig, prober::ProbeMethod},
    model::probe::{
        Method, MtuOutcome, MtuTarget, PathMtu, ProbeBook, ProbeKey, ProbeRequest, ProbeResult,
        ProbeStats, Purpose,
    },
};

/// How long a destination probe left unanswered waits on for a late ICMP error: a router
/// says "host unreachable" only when its neighbour resolution fails, three 1 s solicits
/// after the packet arrived. A definitive error names a dead destination at once; silence
/// waits for its window anyway (`detect.window`, longer than this).
pub const DESTINATION_LINGER: Duration = Duration::from_secs(3);

/// At most this many results are kept (the oldest go first).
const MAX_RESULTS: usize = 4096;

/// The prober: rate limits, the probes in flight, the latest results.
#[derive(Debug)]
pub struct Prober {
    settings: ProberConfig,
    /// How IPv4 and IPv6 targets are probed.
    methods: [Method; 2],
    shared: Arc<Mutex<Shared>>,
    /// When each recent target was last probed (per-target limit).
    last_start: HashMap<ProbeKey, Instant>,
    /// The global token bucket.
    tokens: f64,
    refilled: Instant,
    tasks: JoinSet<()>,
    /// `[mtu]`: path-MTU searches.
    mtu: MtuConfig,
    /// When each path-MTU target's last search started.
    mtu_started: HashMap<IpAddr, Instant>,
    /// The path-MTU packet budget (`mtu.max_pps`).
    mtu_bucket: Arc<Mutex<mtu::Bucket>>,
    /// Targets that were urgent (passive evidence) at the last call.
    mtu_urgent: BTreeSet<IpAddr>,
    /// Targets whose passive evidence appeared and that were not searched since.
    mtu_pending: BTreeSet<IpAddr>,
}

/// A target whose passive evidence just appeared is searched at once, unless its last
/// search started less than this long ago (then as soon as that much passed).
const URGENT_MIN_GAP: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Shared {
    book: ProbeBook,
    stats: ProbeStats,
    /// Path-MTU searches running, by target.
    mtu_in_flight: BTreeSet<IpAddr>,
}

/// What path-MTU searches cannot see without ping sockets (logged, and printed by `check`).
pub const UDP_MTU_LIMIT: &str = "path-MTU searches use UDP probes (no ping socket): a \
    black hole that drops only the large packets coming back (a UDP probe's answer is a \
    small ICMP error) is not seen; to see it, allow ping sockets for the daemon's group \
    once: sysctl -w net.ipv4.ping_group_range=\"0 2147483647\" (in /etc/sysctl.d/ to keep \
    it; systemd's default already does)";

impl Prober {
    /// A prober with `settings`; finds out whether ICMP echo is allowed here (`auto`).
    pub fn new(settings: &ProberConfig) -> Self {
        let method = |v6: bool| match settings.method {
            ProbeMethod::Udp => Method::UdpPort,
            ProbeMethod::Icmp => Method::IcmpEcho,
            ProbeMethod::Auto => match socket::ping_socket_allowed(v6) {
                Ok(()) => Method::IcmpEcho,
                Err(_) => Method::UdpPort,
            },
        };
        let methods = [method(false), method(true)];
        if settings.enabled {
            match (settings.method, methods[0]) {
                (ProbeMethod::Auto, Method::UdpPort) => tracing::info!(
                    "prober: UDP port probes (ICMP echo needs net.ipv4.ping_group_range to \
                     include group {}, the daemon's)",
                    // SAFETY: getegid has no preconditions.
                    unsafe { libc::getegid() }
                ),
                (_, method) => tracing::info!("prober: {}", method.as_str()),
            }
        } else {
            tracing::info!("prober: off (prober.enabled = false): silence never condemns");
        }
        Self {
            settings: settings.clone(),
            methods,
            shared: Arc::new(Mutex::new(Shared {
                book: ProbeBook::new(settings.enabled, settings.valid_for),
                stats: ProbeStats::default(),
                mtu_in_flight: BTreeSet::new(),
            })),
            last_start: HashMap::new(),
            tokens: f64::from(settings.max_per_second),
            refilled: Instant::now(),
            tasks: JoinSet::new(),
            mtu: MtuConfig {
                enabled: false,
                ..MtuConfig::default()
            },
            mtu_started: HashMap::new(),
            mtu_bucket: Arc::new(Mutex::new(mtu::Bucket::new(1))),
            mtu_urgent: BTreeSet::new(),
            mtu_pending: BTreeSet::new(),
        }
    }

    /// Also searches the overlay peers' path MTU, per `settings` (`[mtu]`).
    pub fn with_mtu(mut self, settings: &MtuConfig) -> Self {
        self.mtu = settings.clone();
        self.mtu_bucket = Arc::new(Mutex::new(mtu::Bucket::new(settings.max_pps)));
        if settings.enabled && self.settings.enabled {
            tracing::info!(
                "path-MTU probes: every {:?}, at most {} packets/s ({})",
                settings.interval,
                settings.max_pps,
                self.methods[0].as_str()
            );
            if self.methods[0] == Method::UdpPort {
                tracing::warn!("{UDP_MTU_LIMIT}");
            }
        }
        self
    }

    /// Starts the path-MTU searches that are due among `targets` (every overlay peer, as
    /// of the last cycle): one never searched or whose device, VTEP or size changed at
    /// once; the others every `mtu.interval`, and every `mtu.interval / 6` when urgent
    /// (passive evidence) or in a black hole. Passive evidence that appears starts a
    /// search at once (at most one a second per target), so a black hole is named
    /// within seconds of large packets starting whatever the interval. Targets no longer
    /// named are forgotten.
    pub fn submit_mtu(&mut self, targets: Vec<MtuTarget>) {
        while self.tasks.try_join_next().is_some() {}
        // `prober.enabled = false` means nothing is probed, path MTUs included.
        if !self.mtu.enabled || !self.settings.enabled {
            return;
        }
        let now = Instant::now();
        let (interval, recheck) = (self.mtu.interval, self.mtu.recheck());
        let mut shared = self.shared.lock().expect("prober lock");
        let current: BTreeSet<IpAddr> = targets.iter().map(|t| t.target).collect();
        shared.book.mtu.retain(|target, _| current.contains(target));
        let vteps: BTreeSet<(IpAddr, String)> =
            targets.iter().map(|t| (t.vtep, t.device.clone())).collect();
        shared.stats.path_mtu.retain(|key, _| vteps.contains(key));
        self.mtu_started
            .retain(|target, _| current.contains(target));
        // Passive evidence appearing (not merely lasting) asks for a search now.
        let urgent: BTreeSet<IpAddr> = targets
            .iter()
            .filter(|t| t.urgent)
            .map(|t| t.target)
            .collect();
        self.mtu_pending
            .extend(urgent.difference(&self.mtu_urgent).copied());
        self.mtu_pending.retain(|target| current.contains(target));
        self.mtu_urgent = urgent;
        for target in targets {
            if shared.mtu_in_flight.contains(&target.target) {
                continue;
            }
            let previous = shared.book.mtu.get(&target.target);
            let due = match self.mtu_started.get(&target.target) {
                None => true,
                Some(started) => {
                    let since = now.saturating_duration_since(*started);
                    let hole = previous.is_some_and(|p| {
                        matches!(
                            p.outcome,
                            MtuOutcome::BlackHole { .. } | MtuOutcome::Unforwarded { .. }
                        )
                    });
                    previous.is_none_or(|p| !p.applies_to(&target))
                        || since >= interval
                        || ((target.urgent || hole) && since >= recheck)
                        || (self.mtu_pending.contains(&target.target) && since >= URGENT_MIN_GAP)
                }
            };
            if !due {
                continue;
            }
            self.mtu_started.insert(target.target, now);
            self.mtu_pending.remove(&target.target);
            shared.mtu_in_flight.insert(target.target);
            let guard = InFlight {
                shared: self.shared.clone(),
                key: Slot::Mtu(target.target),
            };
            let searcher = mtu::Searcher {
                method: self.methods[usize::from(target.target.is_ipv6())],
                timeout: self.settings.timeout,
                tries: self.settings.tries,
                bucket: self.mtu_bucket.clone(),
                shared: self.shared.clone(),
            };
            self.tasks.spawn(async move {
                let _guard = guard;
                let result = searcher.search(target).await;
                tracing::debug!("path MTU: {result:?}");
                searcher
                    .shared
                    .lock()
                    .expect("prober lock")
                    .record_mtu(result);
            });
        }
    }

    /// How IPv4 targets are probed.
    pub fn method(&self) -> Method {
        self.methods[0]
    }

    /// Starts probes for `requests`, within the limits: a target already in flight is
    /// left alone, one probed less than `min_interval` ago or beyond `max_per_second` is
    /// skipped (counted). Must run inside the tokio runtime.
    pub fn submit(&mut self, requests: Vec<ProbeRequest>) {
        while self.tasks.try_join_next().is_some() {}
        if !self.settings.enabled {
            return;
        }
        let now = Instant::now();
        let rate = f64::from(self.settings.max_per_second);
        self.tokens =
            (self.tokens + now.duration_since(self.refilled).as_secs_f64() * rate).min(rate);
        self.refilled = now;
        let min_interval = self.settings.min_interval;
        self.last_start
            .retain(|_, at| now.duration_since(*at) < min_interval);
        let mut shared = self.shared.lock().expect("prober lock");
        for request in requests {
            let key = request.key();
            if shared.book.in_flight.contains(&key) {
                continue;
            }
            if self.last_start.contains_key(&key) || self.tokens < 1.0 {
                *shared
                    .stats
                    .probes
                    .entry((request.purpose, "skipped"))
                    .or_default() += 1;
                continue;
            }
            self.tokens -= 1.0;
            self.last_start.insert(key, now);
            shared.book.in_flight.insert(key);
            let guard = InFlight {
                shared: self.shared.clone(),
                key: Slot::Probe(key),
            };
            let method = self.methods[usize::from(request.target.is_ipv6())];
            let (timeout, tries) = (self.settings.timeout, self.settings.tries);
            let linger = if request.purpose == Purpose::Destination {
                DESTINATION_LINGER
            } else {
                Duration::ZERO
            };
            let results = self.shared.clone();
            self.tasks.spawn(async move {
                let _guard = guard;
                let ran = run::probe_lingering(&request, method, timeout, tries, linger).await;
                let result = ProbeResult {
                    request,
                    method,
                    started: ran.started,
                    finished: Instant::now(),
                    packets: ran.packets,
                    outcome: ran.outcome,
                };
                tracing::debug!("probe: {result}");
                results.lock().expect("prober lock").record(result);
            });
        }
        shared.prune(now);
    }

    /// The latest results (a copy for one cycle).
    pub fn book(&self) -> ProbeBook {
        self.shared.lock().expect("prober lock").book.clone()
    }

    /// The counters, for the metrics.
    pub fn stats(&self) -> ProbeStats {
        self.shared.lock().expect("prober lock").stats.clone()
    }

    /// Waits until no probe is in flight, or `limit` passed.
    pub async fn settle(&mut self, limit: Duration) {
        let _ = tokio::time::timeout(limit, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
    }
}

/// What a probe task holds in flight.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Probe(ProbeKey),
    Mtu(IpAddr),
}

/// Frees a task's slot in flight on every way out of it: recorded, cancelled (the runtime
/// shutting down drops it) or panicked (then the lock may be poisoned; the data stays
/// usable). Without it a panicking probe would keep its target "in flight" forever, and
/// the target would never be probed again.
#[derive(Debug)]
struct InFlight {
    shared: Arc<Mutex<Shared>>,
    key: Slot,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut shared = self
            .shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match self.key {
            Slot::Probe(key) => {
                shared.book.in_flight.remove(&key);
            }
            Slot::Mtu(target) => {
                shared.mtu_in_flight.remove(&target);
            }
        }
    }
}

impl Shared {
    /// Records a finished search (its [`InFlight`] guard frees the slot after).
    fn record_mtu(&mut self, result: PathMtu) {
        let key = (result.target.vtep, result.target.device.clone());
        match result.path_mtu() {
            Some(mtu) => {
                self.stats.path_mtu.insert(key, mtu);
            }
            None => {
                self.stats.path_mtu.remove(&key);
            }
        }
        self.book.mtu.insert(result.target.target, result);
    }

    /// Records a finished probe (its [`InFlight`] guard frees the slot after).
    fn record(&mut self, result: ProbeResult) {
        let key = result.request.key();
        let purpose = result.request.purpose;
        *self
            .stats
            .probes
            .entry((purpose, result.outcome.label()))
            .or_default() += 1;
        *self.stats.packets.entry(purpose).or_default() += u64::from(result.packets);
        self.book.latest.insert(key, result);
    }

    /// Forgets results long expired, and the oldest beyond [`MAX_RESULTS`].
    fn prune(&mut self, now: Instant) {
        let keep = self.book.valid_for * 2;
        self.book
            .latest
            .retain(|_, result| now.saturating_duration_since(result.finished) < keep);
        if self.book.latest.len() > MAX_RESULTS {
            let mut finished: Vec<Instant> =
                self.book.latest.values().map(|r| r.finished).collect();
            finished.sort_unstable();
            let cut = finished[self.book.latest.len() - MAX_RESULTS];
            self.book.latest.retain(|_, result| result.finished >= cut);
        }
    }
}

#[cfg(test)]
mod tests;
