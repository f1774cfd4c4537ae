//! TCP connect outcomes per destination: `sock:inet_sock_set_state` (SYN_SENT → ESTABLISHED
//! succeeded, SYN_SENT → CLOSE failed) and `tcp:tcp_retransmit_skb` (SYN retransmits show a
//! destination that does not answer).

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use aya::{
    Ebpf,
    maps::{MapData, MapError, PerCpuHashMap},
    programs::TracePoint,
};
use watchdog_common::{ConnectKey, ConnectStats, TcpConfig};

use super::{KernelEnv, NetnsOffsets, peers::monotonic_ns};

/// The probe's name in metrics and logs.
pub const NAME: &str = "tcp";

/// Offsets and state numbers for this kernel, worked out before loading.
pub struct Plan {
    /// Written into the programs' `.rodata`.
    pub config: TcpConfig,
}

impl Plan {
    /// Reads both tracepoints' format files; namespace offsets come from BTF when known.
    pub fn new(env: &KernelEnv<'_>, netns: Option<&NetnsOffsets>) -> Result<Self, String> {
        let tracefs = env
            .tracefs
            .ok_or("tracefs is not available, so the tracepoint formats cannot be read")?;
        let state = tracefs
            .format("sock", "inet_sock_set_state")
            .map_err(|err| err.to_string())?;
        let retrans = tracefs
            .format("tcp", "tcp_retransmit_skb")
            .map_err(|err| err.to_string())?;
        let offset = |format: &crate::sources::kernel::tracefs::TracepointFormat, name: &str| {
            format
                .field(name)
                .map(|field| field.offset)
                .ok_or_else(|| format!("tracepoint {} has no field {name}", format.name))
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

/// Outcomes towards one destination, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectSample {
    /// Connects started.
    pub attempts: u64,
    /// Connects established.
    pub established: u64,
    /// Connects failed.
    pub failed: u64,
    /// Segments retransmitted.
    pub retransmits: u64,
    /// SYNs retransmitted.
    pub syn_retransmits: u64,
    /// How long ago the last connect failed.
    pub last_failed_ago: Option<Duration>,
    /// How long ago the last connect succeeded.
    pub last_established_ago: Option<Duration>,
}

/// Every destination at one moment, by (namespace inode, address, port).
pub type ConnectSnapshot = BTreeMap<(u32, IpAddr, u16), ConnectSample>;

/// The attached TCP programs.
pub struct Tcp;

impl Tcp {
    /// Loads and attaches both programs.
    pub(super) fn attach(ebpf: &mut Ebpf) -> Result<Self, String> {
        for (program, category, event) in [
            ("inet_sock_set_state", "sock", "inet_sock_set_state"),
            ("tcp_retransmit_skb", "tcp", "tcp_retransmit_skb"),
        ] {
            let program: &mut TracePoint = ebpf
                .program_mut(program)
                .ok_or_else(|| format!("the eBPF object has no {program} program"))?
                .try_into()
                .map_err(|err| format!("{program} is not a tracepoint program: {err}"))?;
            program
                .load()
                .map_err(|err| format!("the kernel rejected {event}: {err:#}"))?;
            program
                .attach(category, event)
                .map_err(|err| format!("attaching to {category}:{event} failed: {err:#}"))?;
        }
        Ok(Self)
    }

    /// Reads the destination map.
    pub(super) fn read(&self, ebpf: &Ebpf) -> Result<ConnectSnapshot, MapError> {
        let map = ebpf.map("CONNECTS").ok_or(MapError::InvalidName {
            name: "CONNECTS".into(),
        })?;
        let connects: PerCpuHashMap<&MapData, ConnectKey, ConnectStats> =
            PerCpuHashMap::try_from(map)?;
        let now = monotonic_ns();
        let ago = |ns: u64| (ns != 0).then(|| Duration::from_nanos(now.saturating_sub(ns)));
        let mut snapshot = ConnectSnapshot::new();
        for entry in connects.iter() {
            let (key, per_cpu) = entry?;
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
            snapshot.insert(
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
        Ok(snapshot)
    }
}
