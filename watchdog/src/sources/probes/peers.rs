//! TC ingress/egress programs: traffic per (interface, remote address), with the last time
//! each direction was seen. Where they are attached is [`super::tc`]'s job; this reads the
//! map.

use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray, PerCpuHashMap},
};
use watchdog_common::{PeerKey, PeerStats, names::maps, peer_stat};

use super::{ProbeError, ago, map};
use crate::model::counters::{PeerCounts, PeerSample};

/// The probe's name in metrics and logs.
pub const NAME: &str = "peers";

/// Reads the peer map, summed over CPUs.
pub(super) fn read(ebpf: &Ebpf) -> Result<PeerCounts, ProbeError> {
    let peers: PerCpuHashMap<&MapData, PeerKey, PeerStats> = map(ebpf, maps::PEERS)?;
    let ago = ago();
    let mut counts = PeerCounts::default();
    for entry in peers.iter() {
        let (key, per_cpu) = entry.map_err(ProbeError::map(maps::PEERS))?;
        let Some(addr) = super::key_address(key.family, key.addr) else {
            continue;
        };
        let mut sum = PeerStats::default();
        for stats in per_cpu.iter() {
            sum.tx_packets += stats.tx_packets;
            sum.tx_bytes += stats.tx_bytes;
            sum.rx_packets += stats.rx_packets;
            sum.rx_bytes += stats.rx_bytes;
            sum.last_tx_ns = sum.last_tx_ns.max(stats.last_tx_ns);
            sum.last_rx_ns = sum.last_rx_ns.max(stats.last_rx_ns);
            sum.encap |= stats.encap;
        }
        counts.peers.insert(
            (key.ifindex, addr),
            PeerSample {
                tx_packets: sum.tx_packets,
                tx_bytes: sum.tx_bytes,
                rx_packets: sum.rx_packets,
                rx_bytes: sum.rx_bytes,
                last_tx_ago: ago(sum.last_tx_ns),
                last_rx_ago: ago(sum.last_rx_ns),
                encap: sum.encap,
            },
        );
    }
    let stats: PerCpuArray<&MapData, u64> = map(ebpf, maps::PEER_STATS)?;
    let stat = |index| -> Result<u64, ProbeError> {
        Ok(stats
            .get(&index, 0)
            .map_err(ProbeError::map(maps::PEER_STATS))?
            .iter()
            .sum())
    };
    counts.inserts = stat(peer_stat::INSERTS)?;
    counts.insert_failed = stat(peer_stat::INSERT_FAILED)?;
    Ok(counts)
}
