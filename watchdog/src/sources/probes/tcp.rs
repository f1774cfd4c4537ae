//! TCP connect outcomes per destination: `sock:inet_sock_set_state` (SYN_SENT → ESTABLISHED
//! succeeded, SYN_SENT → CLOSE failed) and `tcp:tcp_retransmit_skb` (SYN retransmits show a
//! destination that does not answer).

use aya::{
    Ebpf,
    maps::{HashMap, MapData, PerCpuHashMap},
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
        config.retrans_daddr_off = offset(&retrans, "daddr")?;
        config.retrans_daddr_v6_off = offset(&retrans, "daddr_v6")?;
        // 5.10 has no `family` here: the program then reads it off the v4-mapped daddr_v6.
        config.retrans_family_off = retrans
            .field("family")
            .map_or(watchdog_common::OFFSET_UNKNOWN, |field| field.offset);
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

    /// Reads the destination map, with the clock reading (CLOCK_MONOTONIC, ns) its ages are
    /// measured from.
    pub(super) fn read(&self, ebpf: &Ebpf) -> Result<(u64, ConnectCounts), ProbeError> {
        let connects: PerCpuHashMap<&MapData, ConnectKey, ConnectStats> =
            map(ebpf, maps::CONNECTS)?;
        let (clock, ago) = ago();
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
        Ok((clock, counts))
    }

    /// Reads which cgroup each network namespace last connected from.
    pub(super) fn read_cgroups(
        ebpf: &Ebpf,
    ) -> Result<std::collections::BTreeMap<u32, u64>, ProbeError> {
        let cgroups: HashMap<&MapData, u32, u64> = map(ebpf, maps::NETNS_CGROUPS)?;
        cgroups
            .iter()
            .map(|entry| entry.map_err(ProbeError::map(maps::NETNS_CGROUPS)))
            .collect()
    }
}
#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use watchdog_common::OFFSET_UNKNOWN;

    use super::*;
    use crate::sources::kernel::tracefs::Tracefs;

    /// A tracefs directory holding the given fixtures as `events/<group>/<event>/format`.
    struct FakeTracefs(PathBuf);

    impl FakeTracefs {
        fn new(name: &str, formats: &[(&str, &str, &str)]) -> Self {
            let root = std::env::temp_dir().join(format!("tcp-plan-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(root.join("events")).unwrap();
            let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tracefs");
            for (group, event, fixture) in formats {
                let dir = root.join("events").join(group).join(event);
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::copy(fixtures.join(fixture), dir.join("format")).unwrap();
            }
            Self(root)
        }
    }

    impl Drop for FakeTracefs {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn plan(tracefs: Option<&Tracefs>) -> Result<Plan, ProbeError> {
        let env = KernelEnv {
            tracefs,
            btf: None,
            filter_netns: None,
        };
        Plan::new(&env, None)
    }

    #[test]
    fn retransmits_on_6_18_use_the_family_field() {
        let fake = FakeTracefs::new(
            "6.18",
            &[
                (
                    "sock",
                    "inet_sock_set_state",
                    "inet_sock_set_state-6.18.format",
                ),
                (
                    "tcp",
                    "tcp_retransmit_skb",
                    "tcp_retransmit_skb-6.18.format",
                ),
            ],
        );
        let tracefs = Tracefs::at(&fake.0).unwrap();
        let config = plan(Some(&tracefs)).unwrap().config;
        assert_eq!(config.retrans_family_off, 32);
        assert_eq!(config.retrans_daddr_off, 38);
        assert_eq!(config.retrans_daddr_v6_off, 58);
    }

    #[test]
    fn retransmits_on_5_10_have_no_family_and_fall_back_to_the_mapped_address() {
        let fake = FakeTracefs::new(
            "5.10",
            &[
                (
                    "sock",
                    "inet_sock_set_state",
                    "inet_sock_set_state-5.10.format",
                ),
                (
                    "tcp",
                    "tcp_retransmit_skb",
                    "tcp_retransmit_skb-5.10.format",
                ),
            ],
        );
        let tracefs = Tracefs::at(&fake.0).unwrap();
        let config = plan(Some(&tracefs)).unwrap().config;
        assert_eq!(config.retrans_family_off, OFFSET_UNKNOWN);
        assert_eq!(config.retrans_daddr_v6_off, 56);
        assert_ne!(config.state_family_off, OFFSET_UNKNOWN);
        assert_eq!(
            (
                config.tcp_established,
                config.tcp_syn_sent,
                config.tcp_close
            ),
            (1, 2, 7)
        );
    }

    #[test]
    fn a_kernel_without_the_tracepoints_makes_the_probe_unsupported_not_failed() {
        let fake = FakeTracefs::new(
            "none",
            &[(
                "sock",
                "inet_sock_set_state",
                "inet_sock_set_state-6.18.format",
            )],
        );
        let tracefs = Tracefs::at(&fake.0).unwrap();
        match plan(Some(&tracefs)) {
            Err(err) if err.kernel_lacks_it() => {
                let why = super::super::error::chain(&err);
                assert!(why.contains("tcp_retransmit_skb"), "{why}")
            }
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("planned without tcp_retransmit_skb"),
        }
        // Without tracefs nothing can be read: a failure (a mount is missing), not a
        // property of the kernel.
        assert!(matches!(plan(None), Err(ProbeError::NoTracefs(_))));
    }
}
