//! One probe: up to `tries` packets spread over the first part of `timeout`, the first
//! answer ends it. ICMP echo is answered by an echo reply; a UDP datagram to an unused
//! high port by the target's own ICMP port unreachable. Any other ICMP error (host or
//! network unreachable, administratively prohibited, too big) makes the target
//! unreachable.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use tokio::io::{Interest, unix::AsyncFd};

use super::socket::{ProbeSocket, QueuedError};
use crate::model::probe::{Method, Outcome, ProbeRequest, icmp_error};

/// The first of the high UDP ports probes go to (traceroute's range: nothing listens).
pub const UDP_BASE_PORT: u16 = 33434;
/// How many ports above [`UDP_BASE_PORT`] probes use, one per packet in turn.
const UDP_PORTS: u16 = 100;
/// What probe packets carry (padded to the requested size).
const PAYLOAD: &[u8] = b"watchdog probe";
/// The payload of a small probe, in bytes.
pub const PAYLOAD_LEN: u32 = PAYLOAD.len() as u32;

/// What one probe did: its outcome, when its first packet left, how many it sent.
#[derive(Debug)]
pub struct Ran {
    /// What came back.
    pub outcome: Outcome,
    /// When the first packet left.
    pub started: Instant,
    /// Packets sent.
    pub packets: u32,
}

/// Runs one probe to completion: `tries` packets over `timeout`.
pub async fn probe(request: &ProbeRequest, method: Method, timeout: Duration, tries: u32) -> Ran {
    probe_lingering(request, method, timeout, tries, Duration::ZERO).await
}

/// As [`probe`], then, when nothing came back, up to `linger` more for a late answer or
/// ICMP error (a router answers "host unreachable" only once its own neighbour resolution
/// failed, seconds later).
pub async fn probe_lingering(
    request: &ProbeRequest,
    method: Method,
    timeout: Duration,
    tries: u32,
    linger: Duration,
) -> Ran {
    let started = Instant::now();
    let mut ran = Ran {
        outcome: Outcome::Unanswered,
        started,
        packets: 0,
    };
    let v6 = request.target.is_ipv6();
    let socket = match ProbeSocket::open(method, v6).and_then(|socket| {
        // SAFETY: the socket owns its fd, which stays open and the same while the AsyncFd
        // owns the socket.
        unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE | Interest::ERROR) }
            .map_err(io::Error::from)
    }) {
        Ok(socket) => socket,
        Err(err) => {
            ran.outcome =
                Outcome::Error(format!("cannot open a {} socket: {err}", method.as_str()));
            return ran;
        }
    };
    let tries = tries.max(1);
    let spacing = timeout / tries;
    let deadline = started + timeout + linger;
    let payload = payload(request.size, v6);
    // Port (UDP) or sequence number (echo) of each packet sent, and when.
    let mut sent: Vec<(u16, Instant)> = Vec::with_capacity(tries as usize);
    let first_port = next_port_base();
    let mut buf = [0u8; 2048];
    loop {
        let now = Instant::now();
        if (sent.len() as u32) < tries && now >= started + spacing * sent.len() as u32 {
            let n = sent.len() as u16;
            let (tag, to, packet) = match method {
                Method::IcmpEcho => {
                    let seq = n + 1;
                    (
                        seq,
                        SocketAddr::new(request.target, 0),
                        echo(v6, seq, &payload),
                    )
                }
                Method::UdpPort => {
                    let port = UDP_BASE_PORT + (first_port + n) % UDP_PORTS;
                    (port, SocketAddr::new(request.target, port), payload.clone())
                }
            };
            match socket.get_ref().send_to(&packet, to) {
                Ok(()) => {}
                Err(err) => match err.raw_os_error() {
                    // No buffer space right now: the packet is lost, like one on the wire.
                    Some(libc::EAGAIN | libc::ENOBUFS) => {}
                    // No route, no neighbour, too big for the local MTU, or an output
                    // firewall rule (EPERM): this host cannot reach the target.
                    Some(
                        libc::EHOSTUNREACH
                        | libc::ENETUNREACH
                        | libc::EMSGSIZE
                        | libc::EHOSTDOWN
                        | libc::ENETDOWN
                        | libc::EPERM,
                    ) => {
                        ran.packets += 1;
                        ran.outcome = Outcome::Unreachable {
                            from: None,
                            what: local_error(&err),
                        };
                        return ran;
                    }
                    _ => {
                        ran.outcome = Outcome::Error(format!("send: {err}"));
                        return ran;
                    }
                },
            }
            ran.packets += 1;
            sent.push((tag, Instant::now()));
        }
        // Answers first, then errors.
        loop {
            match socket.get_ref().recv_from(&mut buf) {
                Ok((len, from)) => {
                    if let Some(rtt) = answer(method, v6, request.target, &buf[..len], from, &sent)
                    {
                        ran.outcome = Outcome::Answered { rtt };
                        return ran;
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                // Errors reported through recv are also on the error queue: read them there.
                Err(_) => break,
            }
        }
        loop {
            match socket.get_ref().recv_error() {
                Ok(Some(error)) => {
                    if let Some(outcome) = judge_error(method, v6, request.target, &error, &sent) {
                        ran.outcome = outcome;
                        return ran;
                    }
                }
                Ok(None) => break,
                Err(err) => {
                    ran.outcome = Outcome::Error(format!("reading the error queue: {err}"));
                    return ran;
                }
            }
        }
        let now = Instant::now();
        if now >= deadline {
            ran.outcome = Outcome::Unanswered;
            return ran;
        }
        let next_send = if (sent.len() as u32) < tries {
            started + spacing * sent.len() as u32
        } else {
            deadline
        };
        let wake = tokio::time::Instant::from_std(next_send.min(deadline));
        tokio::select! {
            ready = socket.ready(Interest::READABLE | Interest::ERROR) => match ready {
                Ok(mut guard) => guard.clear_ready(),
                // The reactor cannot watch the socket: waiting would spin to the deadline.
                Err(err) => {
                    ran.outcome = Outcome::Error(format!("waiting for the socket: {err}"));
                    return ran;
                }
            },
            () = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// The payload for a probe of `size` bytes on the wire (IP header included), at least
/// [`PAYLOAD`].
fn payload(size: Option<u16>, v6: bool) -> Vec<u8> {
    let headers = if v6 { 40 + 8 } else { 20 + 8 };
    let len = size.map_or(PAYLOAD.len(), |size| {
        usize::from(size).saturating_sub(headers).max(PAYLOAD.len())
    });
    let mut payload = PAYLOAD.to_vec();
    payload.resize(len, 0);
    payload
}

/// An ICMP echo request (the ping socket fills in the identifier and the checksum).
fn echo(v6: bool, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![if v6 { 128 } else { 8 }, 0, 0, 0, 0, 0];
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(payload);
    packet
}

/// Spreads probes over the UDP port range, so one unexpected listener cannot answer them
/// all.
fn next_port_base() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    (NEXT.fetch_add(7, Ordering::Relaxed) % u32::from(UDP_PORTS)) as u16
}

/// The round trip, if `packet` (from `from`) answers one of ours.
fn answer(
    method: Method,
    v6: bool,
    target: IpAddr,
    packet: &[u8],
    from: Option<SocketAddr>,
    sent: &[(u16, Instant)],
) -> Option<Duration> {
    if from.is_some_and(|from| from.ip() != target) {
        return None;
    }
    let at = match method {
        Method::IcmpEcho => {
            let reply = if v6 { 129 } else { 0 };
            if packet.len() < 8 || packet[0] != reply {
                return None;
            }
            let seq = u16::from_be_bytes([packet[6], packet[7]]);
            sent.iter().find(|(tag, _)| *tag == seq)?.1
        }
        // Anything the target sends back to our port (something listened after all).
        Method::UdpPort => sent.first()?.1,
    };
    Some(at.elapsed())
}

/// The outcome an error of the error queue decides, if any.
fn judge_error(
    method: Method,
    v6: bool,
    target: IpAddr,
    error: &QueuedError,
    sent: &[(u16, Instant)],
) -> Option<Outcome> {
    if let Some(destination) = error.destination
        && destination.ip() != target
    {
        return None;
    }
    if !error.icmp {
        if error.errno == 0 {
            return None;
        }
        let err = io::Error::from_raw_os_error(error.errno);
        return Some(Outcome::Unreachable {
            from: None,
            what: if error.errno == libc::EMSGSIZE {
                format!("larger than the path MTU {}", error.info)
            } else {
                local_error(&err)
            },
        });
    }
    let port_unreachable = if v6 {
        error.icmp_type == 1 && error.icmp_code == 4
    } else {
        error.icmp_type == 3 && error.icmp_code == 3
    };
    if method == Method::UdpPort && port_unreachable && error.offender == Some(target) {
        let port = error.destination.map(|d| d.port());
        let at = sent
            .iter()
            .find(|(tag, _)| Some(*tag) == port)
            .or(sent.first())
            .map(|(_, at)| *at)?;
        return Some(Outcome::Answered { rtt: at.elapsed() });
    }
    Some(Outcome::Unreachable {
        from: error.offender,
        what: icmp_error(v6, error.icmp_type, error.icmp_code, error.info),
    })
}

/// A local error in words, without the `(os error N)` suffix.
fn local_error(err: &io::Error) -> String {
    let text = err.to_string();
    match text.split_once(" (os error") {
        Some((words, _)) => words.to_lowercase(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_fill_the_requested_size() {
        assert_eq!(payload(None, false), PAYLOAD);
        assert_eq!(payload(Some(1400), false).len(), 1400 - 28);
        assert_eq!(payload(Some(1400), true).len(), 1400 - 48);
        assert_eq!(payload(Some(10), false), PAYLOAD);
        let request = echo(false, 3, b"x");
        assert_eq!(request, [8, 0, 0, 0, 0, 0, 0, 3, b'x']);
    }

    #[test]
    fn only_the_target_port_unreachable_answers_a_udp_probe() {
        let target: IpAddr = "10.244.2.0".parse().unwrap();
        let sent = [(33434u16, Instant::now())];
        let error = |offender: &str, kind, code| QueuedError {
            errno: libc::ECONNREFUSED,
            icmp: true,
            icmp_type: kind,
            icmp_code: code,
            info: 0,
            offender: Some(offender.parse().unwrap()),
            destination: Some(SocketAddr::new(target, 33434)),
        };
        assert!(matches!(
            judge_error(
                Method::UdpPort,
                false,
                target,
                &error("10.244.2.0", 3, 3),
                &sent
            ),
            Some(Outcome::Answered { .. })
        ));
        assert_eq!(
            judge_error(
                Method::UdpPort,
                false,
                target,
                &error("10.244.0.1", 3, 1),
                &sent
            ),
            Some(Outcome::Unreachable {
                from: Some("10.244.0.1".parse().unwrap()),
                what: "host unreachable".into()
            })
        );
        // A port unreachable on the target's behalf (a firewall's REJECT) is not the target.
        assert!(matches!(
            judge_error(
                Method::UdpPort,
                false,
                target,
                &error("10.244.0.1", 3, 3),
                &sent
            ),
            Some(Outcome::Unreachable { .. })
        ));
        assert_eq!(
            icmp_error(false, 3, 4, 1400),
            "fragmentation needed (mtu 1400)"
        );
    }
}
