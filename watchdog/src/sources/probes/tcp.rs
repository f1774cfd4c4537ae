//! TCP connect outcomes per destination: `sock:inet_sock_set_state` (SYN_SENT → ESTABLISHED
//! succeeded, SYN_SENT → CLOSE failed) and `tcp:tcp_retransmit_skb` (SYN retransmits show a
//! destination that does not answer).

use aya::{
    Ebpf,
    maps::{MapData, PerCpuHashMap},
    programs::TracePoint,
};
use watchdog_common::{
    ConnectKey, ConnectStats, TcpConfig,
    names::{maps, programs},
};

use super::{KernelEnv, NetnsOffsets, ProbeError, ago, map, program};
use crate::{
    model::counters::{ConnectCounts, ConnectSample},
    sources::kernel::tracefs::TracepointFormat,
};

/// The probe's name in metrics and logs.
pub const NAME: &str = "tcp";

/// Offsets and state numbers for this kernel, worked out before loading.
pub struct Plan {
    /// Written into the programs' `.rodata`.
    pub config: TcpConfig,
}

impl Plan {
    /// Reads both tracepoints' format files; namespace offsets come from BTF when known.
    pub fn new(env: &KernelEnv<'_>, netns: Option<&NetnsOffsets>) -> Result<Self, ProbeError> {
        let tracefs = env
            .tracefs
            .ok_or(ProbeError::NoTracefs("sock:inet_sock_set_state"))?;
        let state = tracefs.format("sock", "inet_sock_set_state")?;
        let retrans = tracefs.format("tcp", "tcp_retransmit_skb")?;
        let offset = |format: &TracepointFormat, field: &'static str| {
            format
                .field(field)
                .map(|found| found.offset)
                .ok_or_else(|| ProbeError::NoField {
                    event: format.name.clone(),
                    field,
                })
        };
        let mut config = TcpConfig::UNCONFIGURED;
        config.state_skaddr_off = offset(&state, "skaddr")?;
        config.state_old_off = offset(&state, "oldstate")?;
        config.state_new_off = offset(&state, "newstate")?;
        config.state_dport_off = offset(&state, "dport")?;
        config.state_family_off = offset(&state, "family")?;
        config.state_protocol_off = offset(&state, "protocol")?;
        config.state_daddr_off = offset(&state, "daddr")?;
        config.state_daddr_v6_off = offset(&state, "daddr_v6")?;
        config.retrans_skaddr_off = offset(&retrans, "skaddr")?;
        config.retrans_state_off = offset(&retrans, "state")?;
        config.retrans_dport_off = offset(&retrans, "dport")?;
        config.retrans_family_off = offset(&retrans, "family")?;
        config.retrans_daddr_off = offset(&retrans, "daddr")?;
        config.retrans_daddr_v6_off = offset(&retrans, "daddr_v6")?;
        // The state numbers as this kernel prints them (the defaults are tcp_states.h's).
        if let Some(table) = state.symbolic_table("newstate") {
            for (value, name) in table {
                let slot = match name.as_str() {
                    "TCP_ESTABLISHED" => &mut config.tcp_established,
                    "TCP_SYN_SENT" => &mut config.tcp_syn_sent,
                    "TCP_CLOSE" => &mut config.tcp_close,
                    _ => continue,
                };
                *slot = value as u32;
            }
        }
        if let Some(netns) = netns
            && let Some(sk_net) = netns.sk_net
        {
            config.sk_net_off = sk_net;
            config.net_inum_off = netns.net_inum;
            config.filter_netns = env.filter_netns.unwrap_or(0);
        }
        Ok(Self { config })
    }
}

/// The attached TCP programs.
pub struct Tcp;

impl Tcp {
    /// Loads and attaches both programs.
    pub(super) fn attach(ebpf: &mut Ebpf) -> Result<Self, ProbeError> {
        for (name, category, event) in [
            (programs::INET_SOCK_SET_STATE, "sock", "inet_sock_set_state"),
            (programs::TCP_RETRANSMIT_SKB, "tcp", "tcp_retransmit_skb"),
        ] {
            let program: &mut TracePoint = program(ebpf, name, "tracepoint")?;
            program
                .load()
                .map_err(|source| ProbeError::Rejected { name, source })?;
            program
                .attach(category, event)
                .map_err(|source| ProbeError::Attach {
                    program: name,
                    target: format!("{category}:{event}"),
                    source,
                })?;
        }
        Ok(Self)
    }

    /// Reads the destination map.
    pub(super) fn read(&self, ebpf: &Ebpf) -> Result<ConnectCounts, ProbeError> {
        let connects: PerCpuHashMap<&MapData, ConnectKey, ConnectStats> =
            map(ebpf, maps::CONNECTS)?;
        let ago = ago();
        let mut counts = ConnectCounts::new();
        for entry in connects.iter() {
            let (key, per_cpu) = entry.map_err(ProbeError::map(maps::CONNECTS))?;
            let Some(addr) = super::key_address(key.family, key.addr) else {
                continue;
            };
            let mut sum = ConnectStats::default();
            for stats in per_cpu.iter() {
                sum.attempts += stats.attempts;
                sum.established += stats.established;
                sum.failed += stats.failed;
                sum.retransmits += stats.retransmits;
                sum.syn_retransmits += stats.syn_retransmits;
                sum.last_failed_ns = sum.last_failed_ns.max(stats.last_failed_ns);
                sum.last_established_ns = sum.last_established_ns.max(stats.last_established_ns);
            }
            counts.insert(
                (key.netns, addr, key.port),
                ConnectSample {
                    attempts: sum.attempts,
                    established: sum.established,
                    failed: sum.failed,
                    retransmits: sum.retransmits,
                    syn_retransmits: sum.syn_retransmits,
                    last_failed_ago: ago(sum.last_failed_ns),
                    last_established_ago: ago(sum.last_established_ns),
                },
            );
        }
        Ok(counts)
    }
}
