//! `skb:kfree_skb`: packets the kernel dropped, by the kernel's drop reason, per network
//! namespace.

use std::collections::BTreeMap;

use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray, PerCpuHashMap},
    programs::TracePoint,
};
use watchdog_common::{
    DropDestKey, DropFlowKey, DropKey, KfreeSkbConfig, REASON_UNKNOWN, add_to_set, drop_stat,
    names::{maps, programs},
};

use super::{KernelEnv, NetnsOffsets, ProbeError, map, program};
use crate::model::counters::{DropCounts, DropFlow};

/// The probe's name in metrics and logs.
pub const NAME: &str = "kfree_skb";
const EVENT: &str = "skb:kfree_skb";

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

/// Drop reasons whose packets are also counted per flow (device, addresses, protocol, UDP
/// port): the drops whose cause is named by what was dropped where. A firewall
/// (`NETFILTER_DROP`: which chain, for which traffic), reverse-path filtering
/// (`IP_RPFILTER`: which interface) and bad checksums (from which peer, on which device).
pub const FLOW_REASONS: &[&str] = &[
    "NETFILTER_DROP",
    "IP_RPFILTER",
    "IP_CSUM",
    "UDP_CSUM",
    "TCP_CSUM",
    "ICMP_CSUM",
    "SKB_CSUM",
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
    pub fn new(
        env: &KernelEnv<'_>,
        netns: Result<&NetnsOffsets, &ProbeError>,
    ) -> Result<Self, ProbeError> {
        let tracefs = env.tracefs.ok_or(ProbeError::NoTracefs(EVENT))?;
        let format = tracefs.format("skb", "kfree_skb")?;
        let skbaddr = format.field("skbaddr").ok_or(ProbeError::NoField {
            event: EVENT.into(),
            field: "skbaddr",
        })?;
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
                return Err(ProbeError::FieldSize {
                    event: EVENT,
                    field: "reason",
                    size: field.size,
                    expected: 4,
                });
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
                if let Some(ifindex) = offsets.dev_ifindex {
                    config.dev_ifindex_off = ifindex;
                }
                if let Some((head, network)) = offsets.skb_head_network {
                    config.skb_head_off = head;
                    config.skb_network_header_off = network;
                    for (value, name) in &reasons {
                        if ATTRIBUTED_REASONS.contains(&name.as_str()) {
                            add_to_set(&mut config.attribute_reasons, *value);
                        }
                        if FLOW_REASONS.contains(&name.as_str()) {
                            add_to_set(&mut config.flow_reasons, *value);
                        }
                    }
                }
                Attribution::PerNamespace
            }
            Err(why) => Attribution::Unavailable(super::chain(why)),
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

impl KfreeSkb {
    /// Loads and attaches the program.
    pub(super) fn attach(ebpf: &mut Ebpf, plan: Plan) -> Result<Self, ProbeError> {
        let program: &mut TracePoint = program(ebpf, programs::KFREE_SKB, "tracepoint")?;
        program.load().map_err(|source| ProbeError::Rejected {
            name: programs::KFREE_SKB,
            source,
        })?;
        program
            .attach("skb", "kfree_skb")
            .map_err(|source| ProbeError::Attach {
                program: programs::KFREE_SKB,
                target: EVENT.into(),
                source,
            })?;
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

    /// Reads the counters, naming each reason (values the kernel does not name are counted
    /// together under `UNKNOWN`).
    pub(super) fn read(&self, ebpf: &Ebpf) -> Result<DropCounts, ProbeError> {
        let drops: PerCpuHashMap<&MapData, DropKey, u64> = map(ebpf, maps::DROPS)?;
        let mut counts = DropCounts::default();
        for entry in drops.iter() {
            let (key, per_cpu) = entry.map_err(ProbeError::map(maps::DROPS))?;
            let name = self.reason_name(key.reason).to_owned();
            *counts.counts.entry((key.netns, name)).or_default() += per_cpu.iter().sum::<u64>();
        }
        let dests: PerCpuHashMap<&MapData, DropDestKey, u64> = map(ebpf, maps::DROP_DESTS)?;
        for entry in dests.iter() {
            let (key, per_cpu) = entry.map_err(ProbeError::map(maps::DROP_DESTS))?;
            let Some(addr) = super::key_address(key.family, key.addr) else {
                continue;
            };
            let name = self.reason_name(key.reason).to_owned();
            *counts
                .destinations
                .entry((key.netns, name, addr))
                .or_default() += per_cpu.iter().sum::<u64>();
        }
        let flows: PerCpuHashMap<&MapData, DropFlowKey, u64> = map(ebpf, maps::DROP_FLOWS)?;
        for entry in flows.iter() {
            let (key, per_cpu) = entry.map_err(ProbeError::map(maps::DROP_FLOWS))?;
            let (Some(src), Some(dst)) = (
                super::key_address(key.family, key.src),
                super::key_address(key.family, key.dst),
            ) else {
                continue;
            };
            let flow = DropFlow {
                netns: key.netns,
                reason: self.reason_name(key.reason).to_owned(),
                ifindex: key.ifindex,
                src,
                dst,
                protocol: key.protocol,
                dport: key.dport,
            };
            *counts.flows.entry(flow).or_default() += per_cpu.iter().sum::<u64>();
        }
        let stats: PerCpuArray<&MapData, u64> = map(ebpf, maps::DROP_STATS)?;
        let stat = |index| -> Result<u64, ProbeError> {
            Ok(stats
                .get(&index, 0)
                .map_err(ProbeError::map(maps::DROP_STATS))?
                .iter()
                .sum())
        };
        counts.map_full = stat(drop_stat::MAP_FULL)?;
        counts.other_netns = stat(drop_stat::OTHER_NETNS)?;
        counts.unattributed = stat(drop_stat::UNATTRIBUTED)?;
        Ok(counts)
    }
}
