//! TC ingress/egress programs: traffic per (interface, remote address), with the last time
//! each direction was seen. The daemon keeps them attached to the watched interfaces,
//! picking up interfaces that appear later (a VXLAN device created after start-up).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::{Mutex, OnceLock},
    time::Duration,
};

use aya::{
    Ebpf,
    maps::{Array, MapData, MapError, PerCpuArray, PerCpuHashMap},
    programs::{
        SchedClassifier, TcAttachType,
        tc::{self, SchedClassifierLinkId, TcError},
    },
    sys::SyscallError,
};
use watchdog_common::{PEER_CACHE_SLOTS, PeerKey, PeerSlot, PeerStats, peer_stat};

/// The probe's name in metrics and logs.
pub const NAME: &str = "peers";
const EGRESS: &str = "peers_egress";
const INGRESS: &str = "peers_ingress";

/// Traffic with one remote address on one interface, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerSample {
    /// Packets and bytes sent/received.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// How long ago the last packet was sent (None: never).
    pub last_tx_ago: Option<Duration>,
    /// How long ago the last packet was received (None: never).
    pub last_rx_ago: Option<Duration>,
    /// `watchdog_common::encap` bits seen.
    pub encap: u32,
}

/// Every peer at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerSnapshot {
    /// Samples by (interface index, remote address).
    pub peers: BTreeMap<(u32, IpAddr), PeerSample>,
    /// New peers ever inserted into the LRU map, and peers so far only in the cache.
    pub inserts: u64,
    /// Packets not recorded because a new peer could not be inserted.
    pub insert_failed: u64,
}

/// The loaded TC programs and where they are attached.
pub struct Peers {
    /// Interfaces to watch; empty: every non-loopback interface.
    wanted: Vec<String>,
    attached: BTreeMap<String, (SchedClassifierLinkId, SchedClassifierLinkId)>,
    failed: BTreeMap<String, String>,
    /// `PEER_READING`, set while [`Peers::read`] runs.
    reading: Mutex<Array<MapData, u32>>,
}

impl Peers {
    /// Loads both programs; attaches nothing yet (see [`Peers::sync_interfaces`]).
    pub(super) fn load(ebpf: &mut Ebpf, wanted: Vec<String>) -> Result<Self, String> {
        for name in [EGRESS, INGRESS] {
            classifier(ebpf, name)?
                .load()
                .map_err(|err| format!("the kernel rejected {name}: {err:#}"))?;
        }
        let reading = ebpf
            .take_map("PEER_READING")
            .ok_or("the eBPF object has no PEER_READING map")?;
        let reading = Array::try_from(reading)
            .map_err(|err| format!("PEER_READING is not an array: {err}"))?;
        Ok(Self {
            wanted,
            attached: BTreeMap::new(),
            failed: BTreeMap::new(),
            reading: Mutex::new(reading),
        })
    }

    /// Attaches to watched interfaces that exist and are not attached yet, and forgets
    /// interfaces that are gone. Returns the names newly attached.
    pub fn sync_interfaces(&mut self, ebpf: &mut Ebpf) -> Vec<String> {
        let present = interfaces();
        let watched: BTreeSet<String> = present
            .into_iter()
            .filter(|name| {
                if self.wanted.is_empty() {
                    name != "lo"
                } else {
                    self.wanted.contains(name)
                }
            })
            .collect();
        // The kernel removed the attachments of interfaces that disappeared.
        self.attached.retain(|name, _| watched.contains(name));
        self.failed.retain(|name, _| watched.contains(name));
        let mut added = Vec::new();
        for name in watched {
            if self.attached.contains_key(&name) || self.failed.contains_key(&name) {
                continue;
            }
            match attach(ebpf, &name) {
                Ok(ids) => {
                    tracing::info!(interface = %name, "peer traffic probe attached");
                    self.attached.insert(name.clone(), ids);
                    added.push(name);
                }
                Err(why) => {
                    tracing::warn!(interface = %name, "cannot attach the peer traffic probe: {why}");
                    self.failed.insert(name, why);
                }
            }
        }
        added
    }

    /// Interfaces where attaching failed, with the reason.
    pub fn failed(&self) -> &BTreeMap<String, String> {
        &self.failed
    }

    /// Reads the peer map and the per-CPU cache slots, adding each slot's counts to its
    /// peer's: the totals are exact. While it reads, the programs flush no slot (see
    /// `watchdog-ebpf/src/peers.rs`).
    pub(super) fn read(&self, ebpf: &Ebpf) -> Result<PeerSnapshot, MapError> {
        let map = |name: &str| {
            ebpf.map(name).ok_or_else(|| MapError::InvalidName {
                name: name.to_owned(),
            })
        };
        let peers: PerCpuHashMap<&MapData, PeerKey, PeerStats> =
            PerCpuHashMap::try_from(map("PEERS")?)?;
        let cache: PerCpuArray<&MapData, PeerSlot> = PerCpuArray::try_from(map("PEER_CACHE")?)?;
        let mut sums: BTreeMap<(u32, IpAddr), PeerStats> = BTreeMap::new();
        let in_map = {
            let _frozen = self.freeze()?;
            // Keyed by peer first: iterating a hash map that changes underneath can return
            // a key twice.
            let mut entries = BTreeMap::new();
            for entry in peers.iter() {
                let (key, per_cpu) = entry?;
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
                for cached in cache.get(&slot, 0)?.iter() {
                    fold(&mut sums, &cached.key, &cached.stats);
                }
            }
            entries.len()
        };
        // Peers only in a cache slot are not in the map yet: count them as inserted, so
        // that inserts - entries stays the number of evictions.
        let cached_only = sums.len().saturating_sub(in_map) as u64;
        let now = monotonic_ns();
        let ago = |ns: u64| (ns != 0).then(|| Duration::from_nanos(now.saturating_sub(ns)));
        let mut snapshot = PeerSnapshot::default();
        for (peer, sum) in sums {
            snapshot.peers.insert(
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
        let stats: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map("PEER_STATS")?)?;
        snapshot.inserts = stats.get(&peer_stat::INSERTS, 0)?.iter().sum::<u64>() + cached_only;
        snapshot.insert_failed = stats.get(&peer_stat::INSERT_FAILED, 0)?.iter().sum();
        Ok(snapshot)
    }

    /// Sets `PEER_READING` and waits until every program run that could have missed it has
    /// finished (an RCU grace period: the TC programs run inside RCU read-side sections), so
    /// no slot changes its peer until the guard is dropped.
    fn freeze(&self) -> Result<Frozen<'_>, MapError> {
        let mut reading = self.reading.lock().unwrap_or_else(|e| e.into_inner());
        if !cache_supported() {
            // The loader left the cache off: the slots stay empty.
            return Ok(Frozen(reading));
        }
        reading.set(0, 1, 0)?;
        let mut frozen = Frozen(reading);
        if let Err(io_error) = membarrier(MEMBARRIER_CMD_GLOBAL) {
            // Unreachable when the query at load time succeeded; never read unsafely.
            let _ = frozen.0.set(0, 0, 0);
            return Err(SyscallError {
                call: "membarrier",
                io_error,
            }
            .into());
        }
        Ok(frozen)
    }
}

/// Clears `PEER_READING` when dropped.
struct Frozen<'a>(std::sync::MutexGuard<'a, Array<MapData, u32>>);

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        if let Err(err) = self.0.set(0, 0, 0) {
            tracing::error!("cannot clear PEER_READING, the peer cache stops flushing: {err}");
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

fn classifier<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut SchedClassifier, String> {
    ebpf.program_mut(name)
        .ok_or_else(|| format!("the eBPF object has no {name} program"))?
        .try_into()
        .map_err(|err| format!("{name} is not a TC program: {err}"))
}

/// TCX on 6.6 and later (aya picks it); before that a clsact qdisc through netlink.
fn attach(
    ebpf: &mut Ebpf,
    interface: &str,
) -> Result<(SchedClassifierLinkId, SchedClassifierLinkId), String> {
    if !super::tcx_available() {
        match tc::qdisc_add_clsact(interface) {
            Ok(()) | Err(TcError::AlreadyAttached) => {}
            Err(TcError::NetlinkError(err)) if err.to_string().contains("exists") => {}
            Err(err) => return Err(format!("adding the clsact qdisc failed: {err}")),
        }
    }
    let egress = classifier(ebpf, EGRESS)?
        .attach(interface, TcAttachType::Egress)
        .map_err(|err| format!("egress: {err:#}"))?;
    let ingress = match classifier(ebpf, INGRESS)?.attach(interface, TcAttachType::Ingress) {
        Ok(id) => id,
        Err(err) => {
            let _ = classifier(ebpf, EGRESS).map(|program| program.detach(egress));
            return Err(format!("ingress: {err:#}"));
        }
    };
    Ok((egress, ingress))
}

/// Names of this namespace's interfaces (if_nameindex asks the kernel of this thread's
/// network namespace, unlike /sys/class/net).
pub fn interfaces() -> Vec<String> {
    let mut names = Vec::new();
    // SAFETY: if_nameindex returns an array terminated by a zeroed entry, freed below.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return names;
        }
        let mut entry = list;
        while (*entry).if_index != 0 && !(*entry).if_name.is_null() {
            names.push(
                std::ffi::CStr::from_ptr((*entry).if_name)
                    .to_string_lossy()
                    .into_owned(),
            );
            entry = entry.add(1);
        }
        libc::if_freenameindex(list);
    }
    names
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// The name of interface `ifindex` in this namespace, or its number if it has none now.
pub fn interface_name(ifindex: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes as if_indextoname requires.
    let name = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if name.is_null() {
        return ifindex.to_string();
    }
    // SAFETY: on success buf holds a NUL-terminated name.
    unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}
