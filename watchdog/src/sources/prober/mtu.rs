//! Path-MTU searches: per overlay peer, a DF probe the size the VXLAN device needs; when
//! it goes unanswered while a small probe is answered, a binary search for the largest
//! size that passes (to [`RESOLUTION`] bytes). The probes are the prober's own (ping socket
//! or UDP with IP_RECVERR, IP_PMTUDISC_PROBE so the cached route MTU never shrinks them);
//! every packet takes a token of a bucket refilled at `mtu.max_pps`.

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{Shared, run, socket};
use crate::model::probe::{Method, MtuOutcome, MtuTarget, Outcome, PathMtu, ProbeRequest, Purpose};

/// A search stops once the largest size that passed and the smallest that failed are this
/// close (bytes).
pub const RESOLUTION: u32 = 8;

/// The remote's ICMP port unreachables are rate limited (one a second per source after a
/// burst of 6, `net.ipv4.icmp_ratelimit`): once the burst is spent, UDP steps that get an
/// answer are spaced this far apart, or the limit would pass for a black hole. Echo
/// replies are not limited.
const UDP_STEP_SPACING: Duration = Duration::from_millis(1100);

/// The port unreachables a UDP search counts on the remote sending back to back: 4 of its
/// burst of 6, leaving room for the prober's other probes of that peer.
const UDP_BURST: f64 = 4.0;

/// What a UDP search assumes is left of the remote's ICMP rate limit: a token bucket of
/// [`UDP_BURST`] refilled one per [`UDP_STEP_SPACING`]; a step the remote answered
/// takes one, a step that vanished none (it never reached the remote).
#[derive(Debug)]
struct RemoteBudget {
    tokens: f64,
    at: Instant,
}

impl RemoteBudget {
    fn new(now: Instant) -> Self {
        Self {
            tokens: UDP_BURST,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let earned =
            now.saturating_duration_since(self.at).as_secs_f64() / UDP_STEP_SPACING.as_secs_f64();
        self.tokens = (self.tokens + earned).min(UDP_BURST);
        self.at = now;
    }

    /// How long to wait before the next step may expect an answer.
    fn wait(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            UDP_STEP_SPACING.mul_f64(1.0 - self.tokens)
        }
    }

    /// A step the remote answered.
    fn spend(&mut self, now: Instant) {
        self.refill(now);
        self.tokens -= 1.0;
    }
}

/// The global packet budget: a token bucket of `max_pps` tokens refilled at `max_pps` a
/// second.
#[derive(Debug)]
pub(super) struct Bucket {
    rate: f64,
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    pub(super) fn new(max_pps: u32) -> Self {
        let rate = f64::from(max_pps.max(1));
        Self {
            rate,
            tokens: rate,
            refilled: Instant::now(),
        }
    }

    /// Takes `n` tokens, or says how long until they are there.
    fn take(&mut self, n: u32) -> Result<(), Duration> {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.refilled).as_secs_f64() * self.rate)
            .min(self.rate.max(f64::from(n)));
        self.refilled = now;
        let n = f64::from(n);
        if self.tokens >= n {
            self.tokens -= n;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((n - self.tokens) / self.rate))
        }
    }

    fn give_back(&mut self, n: u32) {
        self.tokens = (self.tokens + f64::from(n)).min(self.rate);
    }
}

/// How one search probes.
pub(super) struct Searcher {
    pub method: Method,
    pub timeout: Duration,
    pub tries: u32,
    pub bucket: Arc<Mutex<Bucket>>,
    pub shared: Arc<Mutex<Shared>>,
}

impl Searcher {
    /// One probe of `size` bytes (`None`: small) within the budget; counted.
    async fn step(&self, target: &MtuTarget, size: Option<u32>, spent: &mut (u32, u32)) -> Outcome {
        let tries = self.tries.max(1);
        loop {
            let wait = self.bucket.lock().expect("mtu bucket lock").take(tries);
            match wait {
                Ok(()) => break,
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
        let request = ProbeRequest {
            target: target.target,
            purpose: Purpose::PathMtu,
            path: Some(target.vtep),
            size: size.map(|s| u16::try_from(s).unwrap_or(u16::MAX)),
        };
        let ran = run::probe(&request, self.method, self.timeout, tries).await;
        self.bucket
            .lock()
            .expect("mtu bucket lock")
            .give_back(tries.saturating_sub(ran.packets));
        spent.0 += 1;
        spent.1 += ran.packets;
        let mut shared = self.shared.lock().expect("prober lock");
        *shared
            .stats
            .probes
            .entry((Purpose::PathMtu, ran.outcome.label()))
            .or_default() += 1;
        *shared.stats.packets.entry(Purpose::PathMtu).or_default() += u64::from(ran.packets);
        shared.stats.mtu_probes += 1;
        drop(shared);
        tracing::debug!(
            target = %target.target,
            size = ?size,
            outcome = ran.outcome.label(),
            "path-MTU probe"
        );
        ran.outcome
    }

    /// The whole search for `target`.
    pub(super) async fn search(&self, target: MtuTarget) -> PathMtu {
        let mut spent = (0, 0);
        let outcome = self.find(&target, &mut spent).await;
        PathMtu {
            target,
            outcome,
            finished: Instant::now(),
            probes: spent.0,
            packets: spent.1,
        }
    }

    async fn find(&self, target: &MtuTarget, spent: &mut (u32, u32)) -> MtuOutcome {
        let full = target.probe_size();
        match classify(target, self.step(target, Some(full), spent).await) {
            Step::Passed => return MtuOutcome::Fits,
            Step::Stop(outcome) => return outcome,
            Step::Vanished => {
                if let Some(outcome) = learned(target, full, kernel_route_mtu) {
                    return forwarded(target, outcome, forward_use_pmtu);
                }
            }
        }
        let mut budget = RemoteBudget::new(Instant::now());
        self.pace(&mut budget).await;
        if !matches!(
            self.paced_step(target, None, spent, &mut budget).await,
            Outcome::Answered { .. }
        ) {
            return MtuOutcome::PeerSilent;
        }
        // The small probe's size passed; the full one did not.
        let headers = if target.target.is_ipv6() { 48 } else { 28 };
        let mut lo = headers + run::PAYLOAD_LEN;
        let mut hi = full;
        while hi - lo > RESOLUTION {
            let mid = lo + (hi - lo) / 2;
            self.pace(&mut budget).await;
            match classify(
                target,
                self.paced_step(target, Some(mid), spent, &mut budget).await,
            ) {
                Step::Passed => lo = mid,
                Step::Vanished => {
                    if let Some(outcome) = learned(target, mid, kernel_route_mtu) {
                        return forwarded(target, outcome, forward_use_pmtu);
                    }
                    hi = mid;
                }
                Step::Stop(outcome) => return outcome,
            }
        }
        MtuOutcome::BlackHole {
            carries: target.outer(lo),
        }
    }

    /// UDP probes wait out the remote's ICMP rate limit once its burst is spent.
    async fn pace(&self, budget: &mut RemoteBudget) {
        if self.method == Method::UdpPort {
            let wait = budget.wait(Instant::now());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// [`Searcher::step`], an answer taken from the remote's budget.
    async fn paced_step(
        &self,
        target: &MtuTarget,
        size: Option<u32>,
        spent: &mut (u32, u32),
        budget: &mut RemoteBudget,
    ) -> Outcome {
        let outcome = self.step(target, size, spent).await;
        if matches!(outcome, Outcome::Answered { .. }) {
            budget.spend(Instant::now());
        }
        outcome
    }
}

/// What one step says.
enum Step {
    Passed,
    Vanished,
    Stop(MtuOutcome),
}

fn classify(target: &MtuTarget, outcome: Outcome) -> Step {
    match outcome {
        Outcome::Answered { .. } => Step::Passed,
        Outcome::Unanswered => Step::Vanished,
        Outcome::Unreachable { from, what } => match reported_mtu(&what) {
            // A hop (or this host's stack) said how much fits: PMTU discovery works here.
            // Through the overlay the MTU is the inner one.
            Some(mtu) => Step::Stop(MtuOutcome::TooBig {
                mtu: if from == Some(target.target) || from.is_none() {
                    target.outer(mtu)
                } else {
                    mtu
                },
                from,
            }),
            None => Step::Stop(MtuOutcome::PeerSilent),
        },
        Outcome::Error(why) => Step::Stop(MtuOutcome::Error(why)),
    }
}

/// The path MTU the kernel knows towards `to`, `None` when it cannot say.
fn kernel_route_mtu(to: IpAddr) -> Option<u32> {
    socket::route_mtu(to)
        .inspect_err(|err| tracing::debug!("path MTU towards {to}: {err}"))
        .ok()
}

/// After a probe of `size` bytes vanished: whether a "fragmentation needed"/"packet too
/// big" reached this host's kernel anyway, so the path is not a black hole. A hop that
/// sends one about the VXLAN device's outer packet answers the device's socket, not the
/// probe's: the kernel records the MTU on its route to the VTEP (a PMTU exception), and
/// the device then lowers the route MTU of the inner destination. The probe itself
/// (`IP_PMTUDISC_PROBE`) ignores both and its packets go on being dropped, but ordinary
/// traffic (DF pings, TCP) learns the size and adapts. `route_mtu` reads what the kernel
/// knows (`IP_MTU` of a connected socket); a silent hop leaves both at the devices' MTUs.
fn learned(
    target: &MtuTarget,
    size: u32,
    route_mtu: impl Fn(IpAddr) -> Option<u32>,
) -> Option<MtuOutcome> {
    if let Some(mtu) = route_mtu(target.vtep)
        && mtu < target.outer(size)
    {
        return Some(MtuOutcome::TooBig { mtu, from: None });
    }
    if target.through_overlay
        && let Some(mtu) = route_mtu(target.target)
        && mtu < size
    {
        return Some(MtuOutcome::TooBig {
            mtu: target.outer(mtu),
            from: None,
        });
    }
    None
}

/// `net.ipv4.ip_forward_use_pmtu` of this namespace: whether forwarded IPv4 packets
/// obey the path MTUs the kernel learned (`None`: unreadable).
fn forward_use_pmtu() -> Option<bool> {
    crate::sources::kernel::procfs::read_sysctl("net/ipv4/ip_forward_use_pmtu")
        .map(|value| value.trim() != "0")
}

/// What a learned MTU means for the pods: the kernel tells forwarded IPv4 packets only
/// with `ip_forward_use_pmtu` on (else they go on vanishing: [`MtuOutcome::Unforwarded`]).
/// (IPv6 forwarding has no such switch: untested, left as it is.)
fn forwarded(
    target: &MtuTarget,
    outcome: MtuOutcome,
    use_pmtu: impl Fn() -> Option<bool>,
) -> MtuOutcome {
    match outcome {
        MtuOutcome::TooBig { mtu, from: None }
            if target.target.is_ipv4() && use_pmtu() == Some(false) =>
        {
            MtuOutcome::Unforwarded { mtu }
        }
        outcome => outcome,
    }
}

/// The MTU of a "fragmentation needed (mtu N)", "packet too big (mtu N)" or local
/// "larger than the path MTU N".
fn reported_mtu(what: &str) -> Option<u32> {
    let lower = what.to_lowercase();
    let at = lower.find("mtu ")? + 4;
    let digits: String = lower[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok().filter(|&mtu| mtu > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_mtus_are_read_from_the_outcome() {
        assert_eq!(reported_mtu("fragmentation needed (mtu 1400)"), Some(1400));
        assert_eq!(reported_mtu("packet too big (mtu 1280)"), Some(1280));
        assert_eq!(reported_mtu("larger than the path MTU 1450"), Some(1450));
        assert_eq!(reported_mtu("host unreachable"), None);
    }

    fn overlay_target() -> MtuTarget {
        MtuTarget {
            target: "10.244.1.0".parse().unwrap(),
            vtep: "192.168.77.11".parse().unwrap(),
            device: "flannel.1".into(),
            device_mtu: 1450,
            overhead: 50,
            through_overlay: true,
            urgent: false,
        }
    }

    #[test]
    fn a_mtu_the_kernel_learned_means_no_black_hole() {
        let target = overlay_target();
        let routes = |vtep: u32, inner: u32| {
            move |to: IpAddr| Some(if to == target.vtep { vtep } else { inner })
        };
        // Nothing learned (a silent hop): the devices' MTUs, the search goes on.
        assert_eq!(learned(&target, 1450, routes(1500, 1450)), None);
        assert_eq!(learned(&target, 1450, |_| None), None);
        // A router's "fragmentation needed" about the outer packet: the VTEP's route.
        assert_eq!(
            learned(&target, 1450, routes(1400, 1450)),
            Some(MtuOutcome::TooBig {
                mtu: 1400,
                from: None
            })
        );
        // The VXLAN device lowered the inner route after it (outer bytes reported).
        assert_eq!(
            learned(&target, 1450, routes(1500, 1350)),
            Some(MtuOutcome::TooBig {
                mtu: 1400,
                from: None
            })
        );
        // A step below what the kernel knows vanished: that is not explained by it.
        assert_eq!(learned(&target, 1300, routes(1400, 1350)), None);
        // Probing the VTEP directly: only its route counts, in outer bytes.
        let direct = MtuTarget {
            target: target.vtep,
            through_overlay: false,
            ..target.clone()
        };
        assert_eq!(
            learned(&direct, 1500, routes(1400, 1400)),
            Some(MtuOutcome::TooBig {
                mtu: 1400,
                from: None
            })
        );
        assert_eq!(learned(&direct, 1400, routes(1400, 1400)), None);
    }

    #[test]
    fn a_learned_mtu_forwarded_packets_are_not_told_of_is_unforwarded() {
        let target = overlay_target();
        let learned = MtuOutcome::TooBig {
            mtu: 1400,
            from: None,
        };
        assert_eq!(
            forwarded(&target, learned.clone(), || Some(false)),
            MtuOutcome::Unforwarded { mtu: 1400 }
        );
        for use_pmtu in [Some(true), None] {
            assert_eq!(forwarded(&target, learned.clone(), || use_pmtu), learned);
        }
        // An ICMP the probe itself received is left as it is.
        let told = MtuOutcome::TooBig {
            mtu: 1400,
            from: Some(target.target),
        };
        assert_eq!(forwarded(&target, told.clone(), || Some(false)), told);
    }

    #[test]
    fn udp_steps_go_back_to_back_until_the_remotes_burst_is_spent() {
        let start = Instant::now();
        let mut budget = RemoteBudget::new(start);
        for _ in 0..4 {
            assert_eq!(budget.wait(start), Duration::ZERO);
            budget.spend(start);
        }
        // The burst spent: the next answer is a spacing away, less what was earned since.
        assert_eq!(budget.wait(start), UDP_STEP_SPACING);
        let later = start + UDP_STEP_SPACING / 2;
        let wait = budget.wait(later);
        assert!(wait > Duration::ZERO && wait <= UDP_STEP_SPACING / 2 + Duration::from_millis(1));
        // Time refills it, never beyond the burst.
        let much_later = start + UDP_STEP_SPACING * 100;
        assert_eq!(budget.wait(much_later), Duration::ZERO);
        for _ in 0..4 {
            budget.spend(much_later);
        }
        assert!(budget.wait(much_later) > Duration::ZERO);
    }

    #[test]
    fn the_bucket_never_gives_more_than_its_rate() {
        let mut bucket = Bucket::new(4);
        assert_eq!(bucket.take(3), Ok(()));
        assert!(bucket.take(3).is_err());
        bucket.give_back(2);
        assert_eq!(bucket.take(3), Ok(()));
        // Never more than the rate is stored, however much is given back.
        bucket.give_back(100);
        assert_eq!(bucket.take(4), Ok(()));
        assert!(bucket.take(1).is_err());
    }
}
