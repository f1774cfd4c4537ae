//! `skb:kfree_skb`: packets the kernel dropped, by the kernel's drop reason, per network
//! namespace.

use std::{collections::BTreeMap, net::IpAddr};

use aya::{
    Ebpf,
    maps::{MapData, MapError, PerCpuArray, PerCpuHashMap},
    programs::TracePoint,
};
use watchdog_common::{DropDestKey, DropKey, KfreeSkbConfig, REASON_UNKNOWN, drop_stat};

use super::{KernelEnv, NetnsOffsets};

/// The probe's name in metrics and logs.
pub const NAME: &str = "kfree_skb";

/// Drop reasons whose packets are also counted per destination address: the route and
/// neighbour failures that name a ghost route or gateway.
/// `NOT_SPECIFIED` is included because forwarded packets that meet a blackhole,
/// unreachable or prohibit route are dropped with it.
pub const ATTRIBUTED_REASONS: &[&str] = &[
    "NOT_SPECIFIED",
    "IP_OUTNOROUTES",
    "IP_INNOROUTES",
    "IP_INADDRERRORS",
    "NEIGH_FAILED",
    "NEIGH_QUEUEFULL",
    "NEIGH_DEAD",
    "NEIGH_CREATEFAIL",
    "PKT_TOO_BIG",
    "NO_TX_TARGET",
    "IP_INVALID_DEST",
];

/// Label of drops whose reason the kernel does not report (or reports with a value its own
/// table does not name).
pub const UNKNOWN_REASON: &str = "UNKNOWN";

/// Everything the probe needs from this kernel, worked out before loading.
pub struct Plan {
    /// Written into the program's `.rodata`.
    pub config: KfreeSkbConfig,
    /// The kernel's `enum skb_drop_reason` names, from the format file.
    pub reasons: BTreeMap<u32, String>,
    /// Whether drops are attributed to network namespaces (needs BTF).
    pub attribution: Attribution,
}

/// Whether (and why not) drops carry their network namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attribution {
    /// Each drop is attributed to its namespace.
    PerNamespace,
    /// Every namespace's drops are counted together; the text says why.
    Unavailable(String),
}

impl Plan {
    /// Reads the tracepoint format and, with BTF, the struct offsets.
    pub fn new(env: &KernelEnv<'_>, netns: Result<&NetnsOffsets, &str>) -> Result<Self, String> {
        let tracefs = env
            .tracefs
            .ok_or("tracefs is not available, so the tracepoint format cannot be read")?;
        let format = tracefs
            .format("skb", "kfree_skb")
            .map_err(|err| err.to_string())?;
        let skbaddr = format
            .field("skbaddr")
            .ok_or("the kfree_skb tracepoint has no skbaddr field")?;
        let mut config = KfreeSkbConfig::UNCONFIGURED;
        config.skbaddr_off = skbaddr.offset;
        let mut reasons = BTreeMap::new();
        match format.field("reason") {
            Some(field) if field.size == 4 => {
                config.reason_off = field.offset;
                for (value, name) in format.symbolic_table("reason").unwrap_or_default() {
                    if let Ok(value) = u32::try_from(value) {
                        reasons.insert(value, name);
                    }
                }
            }
            Some(field) => {
                return Err(format!(
                    "the kfree_skb reason field has size {}, expected 4",
                    field.size
                ));
            }
            None => tracing::warn!(
                "this kernel's kfree_skb tracepoint has no drop reason (added in 5.17): \
                 every drop is counted as {UNKNOWN_REASON}"
            ),
        }
        let attribution = match netns {
            Ok(offsets) => {
                config.net_inum_off = offsets.net_inum;
                config.skb_dev_off = offsets.skb_dev;
                config.dev_net_off = offsets.dev_net;
                if let (Some(skb_sk), Some(sk_net)) = (offsets.skb_sk, offsets.sk_net) {
                    config.skb_sk_off = skb_sk;
                    config.sk_net_off = sk_net;
                }
                if let Some((head, network)) = offsets.skb_head_network {
                    config.skb_head_off = head;
                    config.skb_network_header_off = network;
                    for (value, name) in &reasons {
                        if *value < 256 && ATTRIBUTED_REASONS.contains(&name.as_str()) {
                            config.attribute_reasons[(*value / 64) as usize] |= 1 << (*value % 64);
                        }
                    }
                }
                Attribution::PerNamespace
            }
            Err(why) => Attribution::Unavailable(why.to_owned()),
        };
        if attribution == Attribution::PerNamespace {
            config.filter_netns = env.filter_netns.unwrap_or(0);
        }
        Ok(Self {
            config,
            reasons,
            attribution,
        })
    }
}

/// The attached probe.
pub struct KfreeSkb {
    reasons: BTreeMap<u32, String>,
    attribution: Attribution,
}

/// The drop counters at one moment, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropSnapshot {
    /// Drops per (network namespace inode, reason value).
    pub counts: BTreeMap<DropKey, u64>,
    /// Drops per (network namespace inode, reason value, destination address), for the
    /// [`ATTRIBUTED_REASONS`].
    pub destinations: BTreeMap<(u32, u32, IpAddr), u64>,
    /// Drops not counted because the key map was full.
    pub map_full: u64,
    /// Drops in other namespaces, skipped by the namespace filter.
    pub other_netns: u64,
    /// Drops skipped by the namespace filter because their namespace could not be read.
    pub unattributed: u64,
}

impl KfreeSkb {
    /// Loads and attaches the program.
    pub(super) fn attach(ebpf: &mut Ebpf, plan: Plan) -> Result<Self, String> {
        let program: &mut TracePoint = ebpf
            .program_mut(NAME)
            .ok_or("the eBPF object has no kfree_skb program")?
            .try_into()
            .map_err(|err| format!("kfree_skb is not a tracepoint program: {err}"))?;
        program
            .load()
            .map_err(|err| format!("the kernel rejected the kfree_skb program: {err:#}"))?;
        program
            .attach("skb", "kfree_skb")
            .map_err(|err| format!("attaching to skb:kfree_skb failed: {err:#}"))?;
        if let Attribution::Unavailable(why) = &plan.attribution {
            tracing::warn!(
                "drops cannot be attributed to network namespaces ({why}): drops from every \
                 namespace on this kernel are counted together"
            );
        }
        Ok(Self {
            reasons: plan.reasons,
            attribution: plan.attribution,
        })
    }

    /// The kernel's name for a drop reason value, or `UNKNOWN`.
    pub fn reason_name(&self, reason: u32) -> &str {
        if reason == REASON_UNKNOWN {
            return UNKNOWN_REASON;
        }
        self.reasons
            .get(&reason)
            .map_or(UNKNOWN_REASON, String::as_str)
    }

    /// Whether drops are attributed to namespaces.
    pub fn attribution(&self) -> &Attribution {
        &self.attribution
    }

    /// Reads the counters.
    pub(super) fn read(&self, ebpf: &Ebpf) -> Result<DropSnapshot, MapError> {
        let drops: PerCpuHashMap<&MapData, DropKey, u64> =
            PerCpuHashMap::try_from(ebpf.map("DROPS").ok_or(MapError::InvalidName {
                name: "DROPS".into(),
            })?)?;
        let mut snapshot = DropSnapshot::default();
        for entry in drops.iter() {
            let (key, per_cpu) = entry?;
            *snapshot.counts.entry(key).or_default() += per_cpu.iter().sum::<u64>();
        }
        let dests: PerCpuHashMap<&MapData, DropDestKey, u64> =
            PerCpuHashMap::try_from(ebpf.map("DROP_DESTS").ok_or(MapError::InvalidName {
                name: "DROP_DESTS".into(),
            })?)?;
        for entry in dests.iter() {
            let (key, per_cpu) = entry?;
            let Some(addr) = super::key_address(key.family, key.addr) else {
                continue;
            };
            *snapshot
                .destinations
                .entry((key.netns, key.reason, addr))
                .or_default() += per_cpu.iter().sum::<u64>();
        }
        let stats: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(ebpf.map("DROP_STATS").ok_or(MapError::InvalidName {
                name: "DROP_STATS".into(),
            })?)?;
        let stat = |index| -> Result<u64, MapError> { Ok(stats.get(&index, 0)?.iter().sum()) };
        snapshot.map_full = stat(drop_stat::MAP_FULL)?;
        snapshot.other_netns = stat(drop_stat::OTHER_NETNS)?;
        snapshot.unattributed = stat(drop_stat::UNATTRIBUTED)?;
        Ok(snapshot)
    }
}
