//! The eBPF side, from userspace: load the embedded object, configure and attach each
//! probe, read its maps. Probes only count in the kernel; this module turns the maps into
//! plain readings ([`crate::model::counters`]) for the rest of the daemon.

mod error;
pub mod kfree_skb;
pub mod loader;
pub mod peers;
pub mod tc;
pub mod tcp;

use std::time::Duration;

use aya::{
    Ebpf,
    maps::{Map, MapError},
    programs::{Program, ProgramError},
};
use watchdog_common::names::{globals, maps};

pub use self::error::{ProbeError, chain};
use crate::{
    config::Config,
    model::{
        counters::Reading,
        status::{ProbeState, ProbeStatus},
    },
    sources::kernel::{
        btf::{Btf, BtfError},
        memory, procfs,
        tracefs::Tracefs,
    },
};

/// The eBPF object built by `build.rs` from `watchdog-ebpf`.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/watchdog-ebpf"));

/// What the daemon knows about the kernel it runs on, gathered once at start-up.
pub struct KernelEnv<'a> {
    /// tracefs, if found (tracepoint format files).
    pub tracefs: Option<&'a Tracefs>,
    /// Kernel BTF, if available (struct offsets).
    pub btf: Option<&'a Btf>,
    /// Only report this network namespace (inode number); `None` reports all.
    pub filter_netns: Option<u32>,
}

/// Struct offsets (from BTF) that lead from an skb or a socket to its network namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetnsOffsets {
    /// `offsetof(struct net, ns.inum)`.
    pub net_inum: u32,
    /// `offsetof(struct sk_buff, dev)`.
    pub skb_dev: u32,
    /// `offsetof(struct net_device, nd_net.net)`.
    pub dev_net: u32,
    /// `offsetof(struct sk_buff, sk)`, if known.
    pub skb_sk: Option<u32>,
    /// `offsetof(struct sock, __sk_common.skc_net.net)`, if known.
    pub sk_net: Option<u32>,
    /// `offsetof(struct sk_buff, head)` and `network_header`, if known: the way to a dropped
    /// packet's IP header.
    pub skb_head_network: Option<(u32, u32)>,
    /// `offsetof(struct net_device, ifindex)`, if known: the device a packet was dropped on.
    pub dev_ifindex: Option<u32>,
}

impl NetnsOffsets {
    /// Resolves the offsets (in one pass over the BTF for all); the socket path is
    /// optional.
    pub fn from_btf(btf: &Btf) -> Result<Self, BtfError> {
        let [
            net_inum,
            skb_dev,
            dev_net,
            skb_sk,
            sk_net,
            skb_head,
            skb_network,
            dev_ifindex,
        ]: [_; 8] = btf
            .member_offsets(&[
                ("net", &["ns", "inum"]),
                ("sk_buff", &["dev"]),
                ("net_device", &["nd_net", "net"]),
                ("sk_buff", &["sk"]),
                ("sock", &["__sk_common", "skc_net", "net"]),
                ("sk_buff", &["head"]),
                ("sk_buff", &["network_header"]),
                ("net_device", &["ifindex"]),
            ])?
            .try_into()
            .expect("eight queries, eight answers");
        Ok(Self {
            net_inum: net_inum?,
            skb_dev: skb_dev?,
            dev_net: dev_net?,
            skb_sk: skb_sk.ok(),
            sk_net: sk_net.ok(),
            skb_head_network: skb_head.and_then(|head| Ok((head, skb_network?))).ok(),
            dev_ifindex: dev_ifindex.ok(),
        })
    }
}

/// The loaded eBPF object and its attached probes. Dropping it detaches everything.
pub struct Probes {
    ebpf: Ebpf,
    /// Set up when `kfree_skb` is enabled and its format could be read.
    kfree_skb: Option<kfree_skb::KfreeSkb>,
    /// Set up when `peers` is enabled and its programs loaded.
    tc: Option<tc::Attachments>,
    /// The peer maps' reader, set up with `tc`.
    peers: Option<peers::Reader>,
    /// Set up when `tcp` is enabled and attached.
    tcp: Option<tcp::Tcp>,
    status: Vec<ProbeStatus>,
    features: Vec<(&'static str, bool)>,
    logger: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Probes {
    fn drop(&mut self) {
        if let Some(logger) = self.logger.take() {
            logger.abort();
        }
    }
}

impl Probes {
    /// Loads the object with each enabled probe configured for this kernel, then attaches
    /// the tracepoints; the TC programs are loaded and attached by
    /// [`Probes::sync_interfaces`]. A probe that cannot be set up is reported as failed;
    /// the others still run.
    pub fn start(config: &Config, env: &KernelEnv<'_>) -> Result<Self, ProbeError> {
        let enabled = &config.probes;
        let mut status = Vec::new();
        let netns = match env.btf {
            None => Err(ProbeError::NoBtf),
            Some(btf) => NetnsOffsets::from_btf(btf).map_err(ProbeError::from),
        };
        memory::log_step("the kernel BTF's offsets");
        let kfree_plan = enabled
            .kfree_skb
            .then(|| kfree_skb::Plan::new(env, netns.as_ref()));
        let tcp_plan = enabled
            .tcp
            .then(|| tcp::Plan::new(env, netns.as_ref().ok()));
        let kfree_config = match &kfree_plan {
            Some(Ok(plan)) => plan.config,
            _ => watchdog_common::KfreeSkbConfig::UNCONFIGURED,
        };
        // Our programs are classic tracepoints and TC programs: they need no BTF relocation,
        // and must load on kernels without BTF too.
        let mut loader = loader::without_kernel_btf();
        loader.btf(None);
        loader.override_global(globals::KFREE_SKB_CONFIG, &kfree_config, true);
        let mut tc_config = watchdog_common::TcConfig {
            wireguard_ports: [0; watchdog_common::MAX_WIREGUARD_PORTS],
            coarse_clock: u32::from(coarse_clock_available()),
            peer_cache: u32::from(peers::cache_supported()),
        };
        for (slot, port) in tc_config
            .wireguard_ports
            .iter_mut()
            .zip(&config.peers.wireguard_ports)
        {
            *slot = *port;
        }
        loader.override_global(globals::TC_CONFIG, &tc_config, true);
        let tcp_config = match &tcp_plan {
            Some(Ok(plan)) => plan.config,
            _ => watchdog_common::TcpConfig::UNCONFIGURED,
        };
        loader.override_global(globals::TCP_CONFIG, &tcp_config, true);
        loader.map_max_entries(maps::AYA_LOGS, log_ring_bytes(procfs::page_size()));
        let mut ebpf = loader.load(EBPF_OBJECT)?;
        memory::log_step("the eBPF object (parsed, maps created)");
        let logger = start_ebpf_logger(&mut ebpf);

        let mut kfree = None;
        match kfree_plan
            .map(|plan| plan.and_then(|plan| kfree_skb::KfreeSkb::attach(&mut ebpf, plan)))
        {
            None => {}
            Some(Ok(probe)) => {
                status.push(attached(kfree_skb::NAME));
                kfree = Some(probe);
            }
            Some(Err(err)) => status.push(failed(kfree_skb::NAME, &err)),
        }
        let mut tc = None;
        let mut peer_reader = None;
        if enabled.peers {
            let loaded = tc::Attachments::load(&mut ebpf, config.peers.interfaces.clone())
                .and_then(|attachments| Ok((attachments, peers::Reader::take(&mut ebpf)?)));
            match loaded {
                Ok((attachments, reader)) => {
                    // Attached to the interfaces by `sync_interfaces`.
                    status.push(ProbeStatus {
                        name: peers::NAME,
                        state: ProbeState::Failed("not attached to the interfaces yet".into()),
                    });
                    tc = Some(attachments);
                    peer_reader = Some(reader);
                }
                Err(err) => status.push(failed(peers::NAME, &err)),
            }
        }
        let mut tcp_probe = None;
        match tcp_plan.map(|plan| plan.and_then(|_| tcp::Tcp::attach(&mut ebpf))) {
            None => {}
            Some(Ok(probe)) => {
                status.push(attached(tcp::NAME));
                tcp_probe = Some(probe);
            }
            Some(Err(err)) if err.kernel_lacks_it() => status.push(ProbeStatus {
                name: tcp::NAME,
                state: ProbeState::Unsupported(chain(&err)),
            }),
            Some(Err(err)) => status.push(failed(tcp::NAME, &err)),
        }
        for probe in &status {
            match probe.state {
                _ if probe.name == peers::NAME && self_pending(probe) => {}
                ProbeState::Attached => tracing::info!("{probe}"),
                ProbeState::Unsupported(_) => tracing::warn!("{probe}; running without it"),
                ProbeState::Failed(_) => tracing::error!("{probe}"),
            }
        }
        let features = features(env, &kfree_config, &tcp_config, netns.is_ok());
        let report: Vec<String> = features
            .iter()
            .map(|(name, on)| format!("{name}={}", if *on { "yes" } else { "no" }))
            .collect();
        let probes: Vec<String> = status
            .iter()
            .map(|probe| {
                let state = match probe.state {
                    // Attached once the mirror has listed the interfaces.
                    _ if probe.name == peers::NAME && self_pending(probe) => "pending",
                    ProbeState::Attached => "attached",
                    ProbeState::Unsupported(_) => "unsupported",
                    ProbeState::Failed(_) => "failed",
                };
                format!("{}={state}", probe.name)
            })
            .collect();
        tracing::info!(
            "kernel features: {}; probes: {}",
            report.join(" "),
            probes.join(" ")
        );
        if env.btf.is_none() {
            tracing::warn!(
                "without kernel BTF: drops of every network namespace are counted together, \
                 drop destinations are not attributed (ghost gateways are then found from \
                 neighbour state only), TCP outcomes are not filtered by namespace; routes, \
                 FDB, links and per-peer traffic are unaffected"
            );
        }
        Ok(Self {
            ebpf,
            kfree_skb: kfree,
            tc,
            peers: peer_reader,
            tcp: tcp_probe,
            status,
            features,
            logger,
        })
    }

    /// What this kernel offers and the probes use, for the start-up report and
    /// `watchdog_kernel_feature`.
    pub fn features(&self) -> &[(&'static str, bool)] {
        &self.features
    }

    /// Every enabled probe's state.
    pub fn status(&self) -> &[ProbeStatus] {
        &self.status
    }

    /// The drop counter probe, if attached.
    pub fn kfree_skb(&self) -> Option<&kfree_skb::KfreeSkb> {
        self.kfree_skb.as_ref()
    }

    /// Makes the peer probe's attachments match `links` (index, name), the interfaces the
    /// network mirror knows (`None`: the mirror does not run), and updates its status.
    pub fn sync_interfaces(&mut self, links: Option<&[(u32, String)]>) {
        let Some(tc) = self.tc.as_mut() else {
            return;
        };
        let state = match links {
            None => ProbeState::Failed(chain(&ProbeError::NoInterfaces)),
            Some(links) => {
                tc.sync(&mut self.ebpf, links);
                let failures: Vec<String> = tc
                    .failed()
                    .map(|(interface, why)| format!("{interface}: {why}"))
                    .collect();
                if !failures.is_empty() {
                    ProbeState::Failed(format!("not attached on {}", failures.join("; ")))
                } else if let Some(wanted) = tc.none_watched() {
                    // Counting nothing is no working probe: not ready until one of the
                    // configured interfaces appears (and is attached).
                    ProbeState::Failed(chain(&ProbeError::NoneWatched(wanted.to_vec())))
                } else {
                    ProbeState::Attached
                }
            }
        };
        if let Some(slot) = self.status.iter_mut().find(|s| s.name == peers::NAME)
            && slot.state != state
        {
            slot.state = state;
            match &slot.state {
                ProbeState::Attached => tracing::info!("{slot}"),
                ProbeState::Unsupported(_) => tracing::warn!("{slot}"),
                ProbeState::Failed(_) => tracing::error!("{slot}"),
            }
        }
    }

    /// Reads every running probe's maps. A failed read is logged and counted in
    /// [`Reading::failed_reads`]; the other maps are still read.
    pub fn read(&self) -> Reading {
        let mut reading = Reading::default();
        reading.drops = self.kfree_skb.as_ref().and_then(|probe| {
            read_or_count(&mut reading.failed_reads, "drop", probe.read(&self.ebpf))
        });
        reading.peers = self.peers.as_ref().and_then(|reader| {
            read_or_count(&mut reading.failed_reads, "peer", reader.read(&self.ebpf))
        });
        if let Some((clock, connects)) = self.tcp.as_ref().and_then(|probe| {
            read_or_count(&mut reading.failed_reads, "TCP", probe.read(&self.ebpf))
        }) {
            reading.connects = Some(connects);
            reading.connects_clock = clock;
        }
        if self.tcp.is_some() {
            reading.netns_cgroups = read_or_count(
                &mut reading.failed_reads,
                "namespace cgroup",
                tcp::Tcp::read_cgroups(&self.ebpf),
            )
            .unwrap_or_default();
        }
        reading
    }
}

/// A map reading's value; a failed read is logged and counted in `failed`.
fn read_or_count<T>(failed: &mut u64, what: &str, read: Result<T, ProbeError>) -> Option<T> {
    match read {
        Ok(value) => Some(value),
        Err(err) => {
            tracing::warn!("reading the {what} counters failed: {}", chain(&err));
            *failed += 1;
            None
        }
    }
}

/// Program `name` of the object as type `T` (`"tracepoint"`, `"TC"` in errors).
fn program<'a, T>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
    expected: &'static str,
) -> Result<&'a mut T, ProbeError>
where
    &'a mut T: TryFrom<&'a mut Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(ProbeError::NoProgram(name))?
        .try_into()
        .map_err(|source| ProbeError::ProgramType {
            name,
            expected,
            source,
        })
}

/// Map `name` of the object as type `T` (a per-CPU hash map, array, …).
fn map<'a, T>(ebpf: &'a Ebpf, name: &'static str) -> Result<T, ProbeError>
where
    T: TryFrom<&'a Map, Error = MapError>,
{
    let found = ebpf.map(name).ok_or(ProbeError::NoMap(name))?;
    T::try_from(found).map_err(ProbeError::map(name))
}

/// Turns `bpf_ktime_get_ns` stamps into ages, as of now (0: never); with that now, the
/// clock reading the ages are measured from.
fn ago() -> (u64, impl Fn(u64) -> Option<Duration>) {
    let now = monotonic_ns();
    (now, move |ns: u64| {
        (ns != 0).then(|| Duration::from_nanos(now.saturating_sub(ns)))
    })
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

/// The peer probe before its first [`Probes::sync_interfaces`]: loaded, not attached.
fn self_pending(status: &ProbeStatus) -> bool {
    status.state == ProbeState::Failed("not attached to the interfaces yet".into())
}

fn attached(name: &'static str) -> ProbeStatus {
    ProbeStatus {
        name,
        state: ProbeState::Attached,
    }
}

fn failed(name: &'static str, err: &ProbeError) -> ProbeStatus {
    ProbeStatus {
        name,
        state: ProbeState::Failed(chain(err)),
    }
}

/// The address in a map key: `family` 4 (first 4 bytes of `addr`) or 6.
pub fn key_address(family: u8, addr: [u8; 16]) -> Option<std::net::IpAddr> {
    match family {
        4 => Some(std::net::IpAddr::from([addr[0], addr[1], addr[2], addr[3]])),
        6 => Some(std::net::IpAddr::from(addr)),
        _ => None,
    }
}

/// TCX (TC attachments as BPF links) exists from kernel 6.6; before it, clsact + netlink.
pub fn tcx_available() -> bool {
    use aya::util::KernelVersion;
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
}

/// `bpf_ktime_get_coarse_ns` exists from kernel 5.11.
fn coarse_clock_available() -> bool {
    use aya::util::KernelVersion;
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(5, 11, 0))
}

/// Bytes of the aya-log ring buffer: one page (a ring buffer is a power-of-two number of
/// pages, and its pages are mapped twice into the daemon, where they count as resident).
/// The programs log one line, once per CPU (a drop map full), in a record of 256 bytes.
fn log_ring_bytes(page_size: u64) -> u32 {
    let bytes = page_size.max(4096).next_power_of_two();
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// The start-up feature report.
fn features(
    env: &KernelEnv<'_>,
    kfree: &watchdog_common::KfreeSkbConfig,
    tcp: &watchdog_common::TcpConfig,
    netns: bool,
) -> Vec<(&'static str, bool)> {
    let tcx = tcx_available();
    let unknown = watchdog_common::OFFSET_UNKNOWN;
    vec![
        ("btf", env.btf.is_some()),
        ("tracefs", env.tracefs.is_some()),
        ("tcx", tcx),
        ("kfree_skb_reason", kfree.reason_off != unknown),
        ("netns_attribution", netns),
        ("drop_destinations", kfree.skb_head_off != unknown),
        (
            "drop_flows",
            kfree.skb_head_off != unknown && kfree.dev_ifindex_off != unknown,
        ),
        // Without it (5.10) the family of a retransmit comes from its v4-mapped address.
        ("tcp_retransmit_family", tcp.retrans_family_off != unknown),
    ]
}

/// Forwards aya-log records from the eBPF programs into `log`, which tracing picks up.
fn start_ebpf_logger(ebpf: &mut Ebpf) -> Option<tokio::task::JoinHandle<()>> {
    let logger = aya_log::EbpfLogger::init(ebpf)
        .inspect_err(|err| tracing::warn!("eBPF logs will not be shown: {err}"))
        .ok()?;
    let handle = tokio::runtime::Handle::try_current().ok()?;
    Some(handle.spawn(async move {
        // SAFETY: the logger owns its ring buffer's fd, which stays open and unchanged for as
        // long as the logger (owned by the AsyncFd) lives.
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
        };
        let Ok(mut fd) = registered else {
            tracing::warn!("eBPF logs will not be shown: cannot poll the log ring buffer");
            return;
        };
        while let Ok(mut guard) = fd.readable_mut().await {
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    }))
}

#[cfg(test)]
mod tests {
    use watchdog_common::names::{maps, programs};

    /// Every program and map userspace asks for is in the embedded object, with the type
    /// it is used as: a renamed eBPF item fails here, without root, before any kernel test.
    #[test]
    fn the_object_has_every_program_and_map_userspace_uses() {
        let object = aya_obj::Object::parse(super::EBPF_OBJECT).expect("the object parses");
        let tracepoints = [
            programs::KFREE_SKB,
            programs::INET_SOCK_SET_STATE,
            programs::TCP_RETRANSMIT_SKB,
        ];
        let classifiers = [programs::PEERS_EGRESS, programs::PEERS_INGRESS];
        for name in tracepoints {
            let program = object.programs.get(name).unwrap_or_else(|| {
                panic!(
                    "no program {name}; the object has {:?}",
                    object.programs.keys()
                )
            });
            assert!(
                matches!(program.section, aya_obj::ProgramSection::TracePoint),
                "{name}: {:?}",
                program.section
            );
        }
        for name in classifiers {
            let program = object.programs.get(name).expect(name);
            assert!(
                matches!(program.section, aya_obj::ProgramSection::SchedClassifier),
                "{name}: {:?}",
                program.section
            );
        }
        for name in [
            maps::DROPS,
            maps::DROP_DESTS,
            maps::DROP_STATS,
            maps::DROP_FLOWS,
            maps::PEERS,
            maps::PEER_CACHE,
            maps::PEER_READING,
            maps::PEER_STATS,
            maps::LINK_HEADER,
            maps::ICMP_ERRORS,
            maps::CONNECTS,
            maps::NETNS_CGROUPS,
            maps::AYA_LOGS,
        ] {
            assert!(
                object.maps.contains_key(name),
                "no map {name}; the object has {:?}",
                object.maps.keys()
            );
        }
    }

    /// The embedded object carries the BTF aya relocates with and none of the DWARF it was
    /// written from (build.rs strips it: four fifths of the object).
    #[test]
    fn the_object_has_btf_and_no_dwarf() {
        let object = aya_obj::Object::parse(super::EBPF_OBJECT).expect("the object parses");
        assert!(object.btf.is_some() && object.btf_ext.is_some());
        let named = |name: &[u8]| {
            super::EBPF_OBJECT
                .windows(name.len())
                .any(|window| window == name)
        };
        assert!(!named(b".debug_info") && !named(b".debug_line"));
        assert!(
            super::EBPF_OBJECT.len() < 200 * 1024,
            "{}",
            super::EBPF_OBJECT.len()
        );
    }

    #[test]
    fn log_ring_is_whole_pages() {
        assert_eq!(super::log_ring_bytes(4096), 4096);
        assert_eq!(super::log_ring_bytes(16 * 1024), 16 * 1024);
        assert_eq!(super::log_ring_bytes(64 * 1024), 64 * 1024);
    }
}
