//! Active probes as plain data: what the pipeline asks the prober to check
//! ([`ProbeRequest`]), what came back ([`ProbeResult`]), and the book of latest results the
//! next cycle's detectors read ([`ProbeBook`]). Silence in the counters alone never
//! condemns a peer: a probe that went unanswered does, and one that was answered vouches
//! for the peer for a while.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
    time::{Duration, Instant},
};

/// Why a probe is sent (the `purpose` label of `watchdog_probes_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Purpose {
    /// Is a VXLAN VTEP alive through the FDB entry that points at it?
    Vtep,
    /// Is a destination that sends nothing back alive?
    Destination,
    /// Does a packet of a given size with DF set get through (issue 12)?
    PathMtu,
}

impl Purpose {
    /// Every purpose, for exporting zeros.
    pub const ALL: [Purpose; 3] = [Purpose::Vtep, Purpose::Destination, Purpose::PathMtu];

    /// The label value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Purpose::Vtep => "vtep",
            Purpose::Destination => "destination",
            Purpose::PathMtu => "path_mtu",
        }
    }
}

/// One probe to send: plain data from the pipeline to the prober.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeRequest {
    /// The address probed, e.g. a remote node's `flannel.1` address (through the overlay).
    pub target: IpAddr,
    /// Why.
    pub purpose: Purpose,
    /// What the answer vouches for besides the target: for a VTEP, the FDB entry's
    /// underlay address the probe travels to. A result only counts while it is the same.
    pub path: Option<IpAddr>,
    /// Whole IP packet size in bytes, sent with DF (path MTU); `None`: a small probe.
    pub size: Option<u16>,
}

impl ProbeRequest {
    /// A small liveness probe.
    pub fn liveness(target: IpAddr, purpose: Purpose, path: Option<IpAddr>) -> Self {
        Self {
            target,
            purpose,
            path,
            size: None,
        }
    }

    /// The result's identity: target and size (a VTEP and a destination probe of the same
    /// address are the same probe).
    pub fn key(&self) -> ProbeKey {
        ProbeKey {
            target: self.target,
            size: self.size,
        }
    }
}

/// Which probe a result answers: target and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProbeKey {
    /// The address probed.
    pub target: IpAddr,
    /// The packet size, if sized.
    pub size: Option<u16>,
}

impl ProbeKey {
    /// A small liveness probe of `target`.
    pub fn liveness(target: IpAddr) -> Self {
        Self { target, size: None }
    }
}

/// How a probe asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    /// ICMP echo through an unprivileged ping socket: answered by an echo reply.
    IcmpEcho,
    /// A UDP datagram to an unused high port: answered by the target's ICMP port
    /// unreachable (read with IP_RECVERR).
    UdpPort,
}

impl Method {
    /// The name in evidence and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Method::IcmpEcho => "ICMP echo",
            Method::UdpPort => "UDP port probe",
        }
    }
}

/// What a probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The target answered (echo reply, port unreachable from the target itself, or a
    /// datagram from it).
    Answered {
        /// From sending the answered packet to the answer.
        rtt: Duration,
    },
    /// Nothing came back before the timeout.
    Unanswered,
    /// An ICMP error (or the local stack) said the target cannot be reached.
    Unreachable {
        /// Who said so (`None`: this host's own stack).
        from: Option<IpAddr>,
        /// What, e.g. `host unreachable` or `fragmentation needed (mtu 1400)`.
        what: String,
    },
    /// The probe could not be sent (a local error that says nothing about the target).
    Error(String),
}

impl Outcome {
    /// The `outcome` label of `watchdog_probes_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Answered { .. } => "answered",
            Outcome::Unanswered => "unanswered",
            Outcome::Unreachable { .. } => "unreachable",
            Outcome::Error(_) => "error",
        }
    }

    /// Every label, in order (plus `skipped`, counted for requests the rate limits refused).
    pub const LABELS: [&'static str; 5] =
        ["answered", "unanswered", "unreachable", "error", "skipped"];

    /// True when the target did not answer or is unreachable: evidence against it.
    pub fn condemns(&self) -> bool {
        matches!(self, Outcome::Unanswered | Outcome::Unreachable { .. })
    }

    /// A definitive ICMP error, with who sent it: a host on the way says the target
    /// cannot be reached (host or network unreachable, administratively prohibited), not
    /// merely that nothing answered. Enough to name a destination without waiting out a
    /// window of silence.
    pub fn definitive(&self) -> Option<(IpAddr, &str)> {
        match self {
            Outcome::Unreachable {
                from: Some(from),
                what,
            } if DEFINITIVE.contains(&what.as_str()) => Some((*from, what)),
            _ => None,
        }
    }
}

/// The ICMP errors [`Outcome::definitive`] accepts, in the prober's words.
const DEFINITIVE: &[&str] = &[
    "network unreachable",
    "host unreachable",
    "administratively prohibited",
    "no route to destination",
    "address unreachable",
];

/// An ICMP error in words (the prober's and the traffic's, so [`Outcome::definitive`] and
/// the detectors agree): `v6` for ICMPv6, `info` the MTU of a "too big".
pub fn icmp_error(v6: bool, kind: u8, code: u8, info: u32) -> String {
    match (v6, kind, code) {
        (false, 3, 0) => "network unreachable".into(),
        (false, 3, 1) => "host unreachable".into(),
        (false, 3, 2) => "protocol unreachable".into(),
        (false, 3, 3) => "port unreachable".into(),
        (false, 3, 4) => format!("fragmentation needed (mtu {info})"),
        (false, 3, 9 | 10 | 13) => "administratively prohibited".into(),
        (false, 3, code) => format!("destination unreachable (code {code})"),
        (false, 11, _) => "time exceeded".into(),
        (true, 1, 0) => "no route to destination".into(),
        (true, 1, 1) => "administratively prohibited".into(),
        (true, 1, 3) => "address unreachable".into(),
        (true, 1, 4) => "port unreachable".into(),
        (true, 1, code) => format!("destination unreachable (code {code})"),
        (true, 2, _) => format!("packet too big (mtu {info})"),
        (true, 3, _) => "time exceeded".into(),
        (_, kind, code) => format!("ICMP type {kind} code {code}"),
    }
}

/// One finished probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeResult {
    /// What was asked.
    pub request: ProbeRequest,
    /// How it was asked.
    pub method: Method,
    /// When the first packet left.
    pub started: Instant,
    /// When the answer came or the probe gave up.
    pub finished: Instant,
    /// Packets sent.
    pub packets: u32,
    /// What came back.
    pub outcome: Outcome,
}

impl fmt::Display for ProbeResult {
    /// `ICMP echo to 10.244.2.0: no answer to 3 packets in 450ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} to {}", self.method.as_str(), self.request.target)?;
        if let Some(size) = self.request.size {
            write!(f, " ({size} bytes, DF)")?;
        }
        let took = self.finished.saturating_duration_since(self.started);
        match &self.outcome {
            Outcome::Answered { rtt } => write!(f, ": answered in {}ms", rtt.as_millis()),
            Outcome::Unanswered => write!(
                f,
                ": no answer to {} packet{} in {}ms",
                self.packets,
                if self.packets == 1 { "" } else { "s" },
                took.as_millis()
            ),
            Outcome::Unreachable {
                from: Some(from),
                what,
            } => write!(f, ": {what} from {from}"),
            Outcome::Unreachable { from: None, what } => write!(f, ": {what} (local)"),
            Outcome::Error(why) => write!(f, ": not sent: {why}"),
        }
    }
}

/// What the latest probe says about a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// No fresh probe that applies: silence proves nothing yet.
    Unknown,
    /// A fresh probe was answered after the last reply the counters saw.
    Alive(&'a ProbeResult),
    /// A fresh probe got no answer (or an unreachable), and nothing came back since it
    /// started.
    Dead(&'a ProbeResult),
}

/// Replies counted by the TC programs are stamped by the kernel, probe results by the
/// prober: a reply this much after an answer is the answer itself.
const SAME_MOMENT: Duration = Duration::from_millis(100);

/// The prober's latest results, as the detectors see them (a copy per cycle).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbeBook {
    /// False when probing is off: silence then never condemns.
    pub enabled: bool,
    /// How long a result counts (`prober.valid_for`).
    pub valid_for: Duration,
    /// The latest finished probe per key.
    pub latest: BTreeMap<ProbeKey, ProbeResult>,
    /// Probes sent and not finished yet.
    pub in_flight: BTreeSet<ProbeKey>,
    /// The latest path-MTU search per target (the address probed).
    pub mtu: BTreeMap<IpAddr, PathMtu>,
}

impl ProbeBook {
    /// An empty book.
    pub fn new(enabled: bool, valid_for: Duration) -> Self {
        Self {
            enabled,
            valid_for,
            ..Self::default()
        }
    }

    /// What the latest probe of `key` says, for a peer whose last reply the counters saw
    /// at `last_rx` (`None`: never), reached over `path`, as of `now`.
    ///
    /// A result counts for `valid_for` after it finished and only for the same `path`
    /// (an FDB entry repointed since needs a new probe). An answer vouches for the peer
    /// only until the peer replies to traffic again (its own replies are then the fresher
    /// evidence, and a silence after them is a new one); a failure condemns only if
    /// nothing came back since the probe started.
    pub fn verdict(
        &self,
        key: ProbeKey,
        path: Option<IpAddr>,
        last_rx: Option<Instant>,
        now: Instant,
    ) -> Verdict<'_> {
        let Some(result) = self.latest.get(&key) else {
            return Verdict::Unknown;
        };
        if result.request.path != path
            || now.saturating_duration_since(result.finished) >= self.valid_for
        {
            return Verdict::Unknown;
        }
        match &result.outcome {
            Outcome::Answered { .. } => {
                if last_rx.is_none_or(|rx| rx <= result.finished + SAME_MOMENT) {
                    Verdict::Alive(result)
                } else {
                    Verdict::Unknown
                }
            }
            outcome if outcome.condemns() => {
                if last_rx.is_none_or(|rx| rx < result.started) {
                    Verdict::Dead(result)
                } else {
                    Verdict::Unknown
                }
            }
            _ => Verdict::Unknown,
        }
    }

    /// Whether a suspect peer should be probed now: probing is on, no probe of it is in
    /// flight, and no fresh result settles it (a failure is repeated once half its
    /// validity has passed, so a peer that stays dead stays condemned).
    pub fn needs_probe(
        &self,
        key: ProbeKey,
        path: Option<IpAddr>,
        last_rx: Option<Instant>,
        now: Instant,
    ) -> bool {
        if !self.enabled || self.in_flight.contains(&key) {
            return false;
        }
        match self.verdict(key, path, last_rx, now) {
            Verdict::Unknown => true,
            Verdict::Alive(_) => false,
            Verdict::Dead(result) => {
                now.saturating_duration_since(result.finished) >= self.valid_for / 2
            }
        }
    }
}

/// Counters of the prober, for the metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbeStats {
    /// Probes by (purpose, outcome label); `skipped` for requests the rate limits refused.
    pub probes: BTreeMap<(Purpose, &'static str), u64>,
    /// Packets sent by purpose.
    pub packets: BTreeMap<Purpose, u64>,
    /// Path-MTU probes sent (each a sized or small DF probe of a search).
    pub mtu_probes: u64,
    /// The last path MTU measured, in bytes of the outer packet, by (peer, interface):
    /// the VTEP's underlay address and the VXLAN device.
    pub path_mtu: BTreeMap<(IpAddr, String), u32>,
}

/// A peer whose path must carry the overlay's largest packets: a remote VTEP of a VXLAN
/// device, probed through the overlay (at its VXLAN address) or at its underlay address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MtuTarget {
    /// The address probed: the remote node's VXLAN address (through the overlay), else the
    /// VTEP's underlay address.
    pub target: IpAddr,
    /// The VTEP's underlay address (the FDB entry's destination).
    pub vtep: IpAddr,
    /// The VXLAN device whose traffic takes this path, e.g. `flannel.1`.
    pub device: String,
    /// The device's MTU.
    pub device_mtu: u32,
    /// Outer headers the device adds: 50 bytes over IPv4, 70 over IPv6.
    pub overhead: u32,
    /// True when `target` is reached through the overlay: a probe of `n` bytes then
    /// travels the path as `n + overhead` bytes; else as `n`.
    pub through_overlay: bool,
    /// Passive evidence (large packets out, none that size back) asks for a search now.
    pub urgent: bool,
}

impl MtuTarget {
    /// The outer packet size the path must carry: device MTU + overhead.
    pub fn needed(&self) -> u32 {
        self.device_mtu + self.overhead
    }

    /// The size of a probe that fills the device: the device MTU through the overlay, the
    /// outer size at the underlay address.
    pub fn probe_size(&self) -> u32 {
        if self.through_overlay {
            self.device_mtu
        } else {
            self.needed()
        }
    }

    /// The outer packet size a probe of `size` bytes travels as.
    pub fn outer(&self, size: u32) -> u32 {
        if self.through_overlay {
            size + self.overhead
        } else {
            size
        }
    }
}

/// What a path-MTU search found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MtuOutcome {
    /// A probe the size the device needs got through.
    Fits,
    /// Full-size probes vanish while small ones are answered: the path silently carries
    /// only `carries` bytes (outer), within the search's resolution below the truth.
    BlackHole {
        /// The largest outer packet that got through.
        carries: u32,
    },
    /// A hop said "fragmentation needed" / "packet too big": the kernel's own PMTU
    /// discovery works on this path; not a black hole.
    TooBig {
        /// The MTU the hop reported (outer bytes).
        mtu: u32,
        /// Who said it.
        from: Option<IpAddr>,
    },
    /// A hop said "fragmentation needed" and this host's kernel learned `mtu` (outer
    /// bytes), but it does not tell the packets it forwards (IPv4 with
    /// `net.ipv4.ip_forward_use_pmtu = 0`, the default, and a VXLAN device that is no
    /// bridge port): local traffic adapts, pods' full-size packets vanish. A black hole
    /// for the pods.
    Unforwarded {
        /// The MTU the kernel learned (outer bytes).
        mtu: u32,
    },
    /// Even a small probe went unanswered: the peer is down (other detectors' business).
    PeerSilent,
    /// The search could not run (a local error).
    Error(String),
}

/// One finished path-MTU search.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathMtu {
    /// What was searched.
    pub target: MtuTarget,
    /// What it found.
    pub outcome: MtuOutcome,
    /// When it finished.
    pub finished: Instant,
    /// Probes sent.
    pub probes: u32,
    /// Packets sent.
    pub packets: u32,
}

impl PathMtu {
    /// The path MTU to report (outer bytes): what it carries, at least what the device
    /// needs when full-size probes pass; `None` when unknown.
    pub fn path_mtu(&self) -> Option<u32> {
        match &self.outcome {
            MtuOutcome::Fits => Some(self.target.needed()),
            MtuOutcome::BlackHole { carries } => Some(*carries),
            MtuOutcome::TooBig { mtu, .. } | MtuOutcome::Unforwarded { mtu } => Some(*mtu),
            MtuOutcome::PeerSilent | MtuOutcome::Error(_) => None,
        }
    }

    /// True when the search answers the same question `target` asks now: same address,
    /// VTEP, device and size needed.
    pub fn applies_to(&self, target: &MtuTarget) -> bool {
        self.target.target == target.target
            && self.target.vtep == target.vtep
            && self.target.device == target.device
            && self.target.needed() == target.needed()
            && self.target.through_overlay == target.through_overlay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn result(start: Instant, outcome: Outcome, path: Option<IpAddr>) -> ProbeResult {
        ProbeResult {
            request: ProbeRequest::liveness(ip("10.244.2.0"), Purpose::Vtep, path),
            method: Method::IcmpEcho,
            started: start,
            finished: start + Duration::from_millis(450),
            packets: 3,
            outcome,
        }
    }

    fn book(result: ProbeResult) -> ProbeBook {
        let mut book = ProbeBook::new(true, Duration::from_secs(5));
        book.latest.insert(result.request.key(), result);
        book
    }

    #[test]
    fn an_answer_vouches_until_it_expires_the_path_changes_or_the_peer_replies_again() {
        let t0 = Instant::now();
        let key = ProbeKey::liveness(ip("10.244.2.0"));
        let path = Some(ip("192.168.77.12"));
        let book = book(result(
            t0,
            Outcome::Answered {
                rtt: Duration::from_millis(1),
            },
            path,
        ));
        let at = |ms| t0 + Duration::from_millis(ms);
        assert!(matches!(
            book.verdict(key, path, None, at(1000)),
            Verdict::Alive(_)
        ));
        // The probe's own reply, seen by the TC programs just before the prober.
        assert!(matches!(
            book.verdict(key, path, Some(at(449)), at(1000)),
            Verdict::Alive(_)
        ));
        assert!(!book.needs_probe(key, path, None, at(1000)));
        // Expired.
        assert_eq!(book.verdict(key, path, None, at(5450)), Verdict::Unknown);
        assert!(book.needs_probe(key, path, None, at(5450)));
        // The FDB entry now points elsewhere.
        let moved = Some(ip("192.168.77.99"));
        assert_eq!(book.verdict(key, moved, None, at(1000)), Verdict::Unknown);
        // The peer replied to traffic after the probe: a later silence is a new one.
        assert_eq!(
            book.verdict(key, path, Some(at(800)), at(1000)),
            Verdict::Unknown
        );
    }

    #[test]
    fn a_failure_condemns_only_if_nothing_came_back_since_it_started() {
        let t0 = Instant::now();
        let key = ProbeKey::liveness(ip("10.244.2.0"));
        let at = |ms| t0 + Duration::from_millis(ms);
        let book = book(result(t0, Outcome::Unanswered, None));
        assert!(matches!(
            book.verdict(key, None, Some(at(0) - Duration::from_millis(300)), at(500)),
            Verdict::Dead(_)
        ));
        assert!(matches!(
            book.verdict(key, None, None, at(500)),
            Verdict::Dead(_)
        ));
        assert_eq!(
            book.verdict(key, None, Some(at(100)), at(500)),
            Verdict::Unknown
        );
        // Repeated once half its validity has passed, so it stays fresh.
        assert!(!book.needs_probe(key, None, None, at(1000)));
        assert!(book.needs_probe(key, None, None, at(3000)));
        // An error of our own says nothing about the target.
        let book2 = self::book(result(t0, Outcome::Error("ENOBUFS".into()), None));
        assert_eq!(book2.verdict(key, None, None, at(500)), Verdict::Unknown);
    }

    #[test]
    fn nothing_is_probed_twice_at_once_or_when_probing_is_off() {
        let key = ProbeKey::liveness(ip("10.0.0.1"));
        let now = Instant::now();
        let mut book = ProbeBook::new(true, Duration::from_secs(5));
        assert!(book.needs_probe(key, None, None, now));
        book.in_flight.insert(key);
        assert!(!book.needs_probe(key, None, None, now));
        assert!(!ProbeBook::new(false, Duration::from_secs(5)).needs_probe(key, None, None, now));
    }

    #[test]
    fn results_read_as_evidence() {
        let t0 = Instant::now();
        let mut unanswered = result(t0, Outcome::Unanswered, None);
        assert_eq!(
            unanswered.to_string(),
            "ICMP echo to 10.244.2.0: no answer to 3 packets in 450ms"
        );
        unanswered.method = Method::UdpPort;
        unanswered.outcome = Outcome::Unreachable {
            from: Some(ip("192.168.77.10")),
            what: "host unreachable".into(),
        };
        assert_eq!(
            unanswered.to_string(),
            "UDP port probe to 10.244.2.0: host unreachable from 192.168.77.10"
        );
    }
}
