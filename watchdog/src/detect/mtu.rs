//! Path-MTU black holes: a remote VTEP whose path carries fewer bytes than the VXLAN
//! device sends. Small packets (pings, handshakes) pass, full-size ones vanish without an
//! ICMP "fragmentation needed", and no kernel counter on this node shows it. The evidence
//! is active: the prober's path-MTU searches ([`PathMtu`]) of the [`MtuTarget`]s named
//! here; passive evidence (large packets out to a VTEP, only small ones back) marks a
//! target urgent so it is searched at once rather than at the next `mtu.interval`.

use std::net::IpAddr;

use super::{Inputs, vxlan};
use crate::{
    findings::{Candidate, Kind, Severity},
    model::{
        counters::growth,
        probe::{MtuOutcome, MtuTarget, PathMtu},
    },
};

/// Outer headers of a VXLAN packet: Ethernet 14 + VXLAN 8 + UDP 8 + IP 20 (IPv4) / 40 (IPv6).
pub fn vxlan_overhead(underlay: IpAddr) -> u32 {
    match underlay {
        IpAddr::V4(_) => 50,
        IpAddr::V6(_) => 70,
    }
}

/// Every remote VTEP of every VXLAN device as a path-MTU target, urgent when the
/// counters since `recent` show large packets out and only small ones back.
pub fn mtu_targets(inputs: &Inputs<'_>) -> Vec<MtuTarget> {
    let mut targets: Vec<MtuTarget> = Vec::new();
    for vtep in vxlan::vteps(inputs) {
        if vtep.link.mtu == 0 || targets.iter().any(|t| t.target == vtep.target) {
            continue;
        }
        let mut target = MtuTarget {
            target: vtep.target,
            vtep: vtep.dst,
            device: vtep.link.name.clone(),
            device_mtu: vtep.link.mtu,
            overhead: vxlan_overhead(vtep.dst),
            through_overlay: vtep.target != vtep.dst,
            urgent: false,
        };
        target.urgent = large_out_small_back(inputs, &vtep.underlay, vtep.dst, target.needed());
        targets.push(target);
    }
    targets
}

/// Passive evidence: since `recent`, packets to `dst` on its underlay devices averaged at
/// least half the size the path must carry, and what came back averaged under half of
/// that (or nothing came back). Bulk uploads look the same: the probe then settles it
/// with one packet.
fn large_out_small_back(inputs: &Inputs<'_>, underlay: &[u32], dst: IpAddr, needed: u32) -> bool {
    let (mut tx_packets, mut tx_bytes, mut rx_packets, mut rx_bytes) = (0u64, 0u64, 0u64, 0u64);
    for (&(ifindex, peer), now) in &inputs.now.peers {
        if peer != dst {
            continue;
        }
        let then = inputs.recent.peers.get(&(ifindex, peer));
        if underlay.contains(&ifindex) {
            tx_packets += growth(now.tx_packets, then.map_or(0, |t| t.tx_packets));
            tx_bytes += growth(now.tx_bytes, then.map_or(0, |t| t.tx_bytes));
        }
        rx_packets += growth(now.rx_packets, then.map_or(0, |t| t.rx_packets));
        rx_bytes += growth(now.rx_bytes, then.map_or(0, |t| t.rx_bytes));
    }
    if tx_packets == 0 {
        return false;
    }
    let tx_avg = tx_bytes / tx_packets;
    let large = u64::from(needed / 2);
    tx_avg >= large && (rx_packets == 0 || rx_bytes / rx_packets < tx_avg / 2)
}

/// A finding for every current target whose latest search found a black hole.
pub fn black_holes(inputs: &Inputs<'_>) -> Vec<Candidate> {
    let mut candidates = Vec::new();
    for target in mtu_targets(inputs) {
        let Some(result) = inputs.probes.mtu.get(&target.target) else {
            continue;
        };
        if !result.applies_to(&target) {
            continue;
        }
        match result.outcome {
            MtuOutcome::BlackHole { carries } => {
                candidates.push(candidate(&target, result, carries, None));
            }
            MtuOutcome::Unforwarded { mtu } => {
                candidates.push(candidate(&target, result, mtu, Some(mtu)));
            }
            _ => {}
        }
    }
    candidates
}

/// The finding: the peer, the device, what the path carries, what the device needs, the fix.
/// `learned`: a hop said so and this host learned it, but forwarded packets are not told.
fn candidate(
    target: &MtuTarget,
    result: &PathMtu,
    carries: u32,
    learned: Option<u32>,
) -> Candidate {
    let needed = target.needed();
    let fits = carries.saturating_sub(target.overhead);
    let mut candidate = Candidate::new(
        Kind::MtuBlackHole,
        format!("path to vtep {} dev {}", target.vtep, target.device),
        Severity::Critical,
    )
    .with("peer", target.vtep)
    .with("device", &target.device)
    .with("device_mtu", target.device_mtu)
    .with("path_carries", carries)
    .with("device_needs", needed)
    .with(
        "problem",
        match learned {
            None => format!(
                "DF probes of {} bytes to {} vanish (no ICMP comes back) while smaller ones \
                 are answered: the path carries {carries} bytes, {} needs {needed} ({} + {} \
                 bytes of outer headers)",
                target.probe_size(),
                target.target,
                target.device,
                target.device_mtu,
                target.overhead
            ),
            Some(mtu) => format!(
                "a hop said \"fragmentation needed\" for packets to {}: this node learned \
                 the path carries {mtu} bytes, but forwarded packets (pods') are not told \
                 (net.ipv4.ip_forward_use_pmtu = 0) and vanish; {} needs {needed} ({} + {} \
                 bytes of outer headers)",
                target.vtep, target.device, target.device_mtu, target.overhead
            ),
        },
    )
    .with(
        "fix",
        match learned {
            None => format!(
                "set {} mtu ≤ {fits}, or raise the path's MTU to at least {needed}",
                target.device
            ),
            Some(_) => format!(
                "set {} mtu ≤ {fits}, or raise the path's MTU to at least {needed} (or set \
                 net.ipv4.ip_forward_use_pmtu = 1 so forwarded packets learn it)",
                target.device
            ),
        },
    )
    .with("probes", result.probes);
    if target.through_overlay {
        candidate = candidate.with("probed", target.target);
    }
    candidate
}
