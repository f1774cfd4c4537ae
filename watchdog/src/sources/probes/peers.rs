//! TC ingress/egress programs: traffic per (interface, remote address), with the last time
//! each direction was seen. Where they are attached is [`super::tc`]'s job; this reads the
//! map and the per-CPU cache in front of it.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{Mutex, MutexGuard, OnceLock},
};

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap},
};
use watchdog_common::{
    IcmpErrorKey, IcmpErrorStats, PEER_CACHE_SLOTS, PeerKey, PeerSlot, PeerStats, names::maps,
    peer_stat,
};

use super::{ProbeError, ago, map};
use crate::model::{
    counters::{IcmpErrorSample, PeerCounts, PeerSample},
    probe::icmp_error,
};

/// The probe's name in metrics and logs.
pub const NAME: &str = "peers";

/// Reads the peer maps. Owns `PEER_READING`, taken out of the object at load time: the
/// flag it sets while reading, so the programs flush no cache slot meanwhile.
pub struct Reader {
    reading: Mutex<Array<MapData, u32>>,
}

impl Reader {
    /// Takes `PEER_READING` out of the loaded object.
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, ProbeError> {
        let reading = ebpf
            .take_map(maps::PEER_READING)
            .ok_or(ProbeError::NoMap(maps::PEER_READING))?;
        let reading = Array::try_from(reading).map_err(ProbeError::map(maps::PEER_READING))?;
        Ok(Self {
            reading: Mutex::new(reading),
        })
    }

    /// Reads the peer map and the per-CPU cache slots, summed over CPUs, adding each slot's
    /// counts to its peer's: the totals are exact. While it reads, the programs flush no
    /// slot (see `watchdog-ebpf/src/peers.rs`).
    pub(super) fn read(&self, ebpf: &Ebpf) -> Result<PeerCounts, ProbeError> {
        let peers: PerCpuHashMap<&MapData, PeerKey, PeerStats> = map(ebpf, maps::PEERS)?;
        let cache: PerCpuArray<&MapData, PeerSlot> = map(ebpf, maps::PEER_CACHE)?;
        let mut sums: BTreeMap<(u32, IpAddr), PeerStats> = BTreeMap::new();
        let in_map = {
            let _frozen = self.freeze()?;
            // Keyed by peer first: iterating a hash map that changes underneath can return
            // a key twice.
            let mut entries = BTreeMap::new();
            for entry in peers.iter() {
                let (key, per_cpu) = entry.map_err(ProbeError::map(maps::PEERS))?;
                let mut sum = PeerStats::default();
                for stats in per_cpu.iter() {
                    add(&mut sum, stats);
                }
                entries.insert(key, sum);
            }
            for (key, sum) in &entries {
                fold(&mut sums, key, sum);
            }
            for slot in 0..PEER_CACHE_SLOTS {
                let per_cpu = cache
                    .get(&slot, 0)
                    .map_err(ProbeError::map(maps::PEER_CACHE))?;
                for cached in per_cpu.iter() {
                    fold(&mut sums, &cached.key, &cached.stats);
                }
            }
            entries.len()
        };
        // Peers only in a cache slot are not in the map yet: count them as inserted, so
        // that inserts - entries stays the number of evictions.
        let cached_only = sums.len().saturating_sub(in_map) as u64;
        let (clock, ago) = ago();
        let mut counts = PeerCounts {
            clock,
            ..PeerCounts::default()
        };
        for (peer, sum) in sums {
            counts.peers.insert(
                peer,
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
        counts.icmp_errors = icmp_errors(ebpf, &ago)?;
        counts.inserts = stat(peer_stat::INSERTS)? + cached_only;
        counts.insert_failed = stat(peer_stat::INSERT_FAILED)?;
        Ok(counts)
    }

    /// Sets `PEER_READING` and waits until every program run that could have missed it has
    /// finished (an RCU grace period: the TC programs run inside RCU read-side sections), so
    /// no slot changes its peer until the guard is dropped.
    fn freeze(&self) -> Result<Frozen<'_>, ProbeError> {
        let mut reading = self.reading.lock().unwrap_or_else(|e| e.into_inner());
        if !cache_supported() {
            // The loader left the cache off: the slots stay empty.
            return Ok(Frozen(reading));
        }
        reading
            .set(0, 1, 0)
            .map_err(ProbeError::map(maps::PEER_READING))?;
        let mut frozen = Frozen(reading);
        if let Err(source) = membarrier(MEMBARRIER_CMD_GLOBAL) {
            // Unreachable when the query at load time succeeded; never read unsafely.
            let _ = frozen.0.set(0, 0, 0);
            return Err(ProbeError::Membarrier(source));
        }
        Ok(frozen)
    }
}

/// The definitive ICMP errors the ingress program recorded, by the destination they were
/// about.
fn icmp_errors(
    ebpf: &Ebpf,
    ago: &impl Fn(u64) -> Option<std::time::Duration>,
) -> Result<BTreeMap<IpAddr, IcmpErrorSample>, ProbeError> {
    let errors: HashMap<&MapData, IcmpErrorKey, IcmpErrorStats> = map(ebpf, maps::ICMP_ERRORS)?;
    let mut samples = BTreeMap::new();
    for entry in errors.iter() {
        let (key, stats) = entry.map_err(ProbeError::map(maps::ICMP_ERRORS))?;
        let (Some(dst), Some(from)) = (
            super::key_address(key.family, key.addr),
            super::key_address(key.family, stats.from),
        ) else {
            continue;
        };
        samples.insert(
            dst,
            IcmpErrorSample {
                count: stats.count,
                last_ago: ago(stats.last_ns),
                from,
                what: icmp_error(key.family == 6, stats.icmp_type, stats.code, 0),
            },
        );
    }
    Ok(samples)
}

/// Clears `PEER_READING` when dropped.
struct Frozen<'a>(MutexGuard<'a, Array<MapData, u32>>);

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        if let Err(err) = self.0.set(0, 0, 0) {
            let err = ProbeError::map(maps::PEER_READING)(err);
            tracing::error!(
                "cannot clear the peer cache's reading flag, the cache stops flushing: {}",
                super::chain(&err)
            );
        }
    }
}

/// Adds counts of `key` (a map entry or a cache slot) to its sum.
fn fold(sums: &mut BTreeMap<(u32, IpAddr), PeerStats>, key: &PeerKey, stats: &PeerStats) {
    let Some(addr) = super::key_address(key.family, key.addr) else {
        return; // an empty cache slot
    };
    add(sums.entry((key.ifindex, addr)).or_default(), stats);
}

/// Adds counters, keeps the later last-seen times and every encapsulation bit.
fn add(sum: &mut PeerStats, stats: &PeerStats) {
    sum.tx_packets += stats.tx_packets;
    sum.tx_bytes += stats.tx_bytes;
    sum.rx_packets += stats.rx_packets;
    sum.rx_bytes += stats.rx_bytes;
    sum.last_tx_ns = sum.last_tx_ns.max(stats.last_tx_ns);
    sum.last_rx_ns = sum.last_rx_ns.max(stats.last_rx_ns);
    sum.encap |= stats.encap;
}

const MEMBARRIER_CMD_QUERY: libc::c_int = 0;
const MEMBARRIER_CMD_GLOBAL: libc::c_int = 1;

fn membarrier(cmd: libc::c_int) -> std::io::Result<libc::c_long> {
    // SAFETY: membarrier takes two integers and touches no memory of ours.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0, 0) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Whether the peer cache can be used: the reader must be able to wait for running
/// programs (`MEMBARRIER_CMD_GLOBAL`: not on `nohz_full` kernels or without
/// CONFIG_MEMBARRIER). The loader sets `TcConfig::peer_cache` from it.
pub fn cache_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        membarrier(MEMBARRIER_CMD_QUERY)
            .is_ok_and(|commands| commands & libc::c_long::from(MEMBARRIER_CMD_GLOBAL) != 0)
    })
}
