//! The eBPF side, from userspace: load the embedded object, configure and attach each
//! probe, read its maps. Probes only count in the kernel; this module turns the maps into
//! plain snapshots for the rest of the daemon.

pub mod kfree_skb;
pub mod peers;
pub mod tcp;

use std::fmt;

use aya::{Ebpf, EbpfLoader};

use crate::{btf::Btf, tracefs::Tracefs};

/// The eBPF object built by `build.rs` from `watchdog-ebpf`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/watchdog"));

/// Errors that stop every probe (a single probe's failure is a [`ProbeState::Failed`]).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The kernel refused the object (maps or BTF): nothing can attach.
    #[error("loading the eBPF object failed: {0}")]
    Load(#[from] aya::EbpfError),
}

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
}

impl NetnsOffsets {
    /// Resolves the offsets; the socket path is optional.
    pub fn from_btf(btf: &Btf) -> Result<Self, crate::btf::BtfError> {
        Ok(Self {
            net_inum: btf.member_offset("net", &["ns", "inum"])?,
            skb_dev: btf.member_offset("sk_buff", &["dev"])?,
            dev_net: btf.member_offset("net_device", &["nd_net", "net"])?,
            skb_sk: btf.member_offset("sk_buff", &["sk"]).ok(),
            sk_net: btf
                .member_offset("sock", &["__sk_common", "skc_net", "net"])
                .ok(),
            skb_head_network: btf
                .member_offset("sk_buff", &["head"])
                .and_then(|head| Ok((head, btf.member_offset("sk_buff", &["network_header"])?)))
                .ok(),
        })
    }
}

/// Whether a probe is counting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeState {
    /// Attached and counting.
    Attached,
    /// Enabled, but it could not be set up or attached; the reason says why.
    Failed(String),
}

/// One probe's name and state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeStatus {
    /// The probe's name, e.g. `kfree_skb` (the `probe` label of `watchdog_probe_up`).
    pub name: &'static str,
    /// Its state.
    pub state: ProbeState,
}

impl fmt::Display for ProbeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            ProbeState::Attached => write!(f, "probe {} attached", self.name),
            ProbeState::Failed(why) => write!(f, "probe {} failed: {why}", self.name),
        }
    }
}

/// The loaded eBPF object and its attached probes. Dropping it detaches everything.
pub struct Probes {
    ebpf: Ebpf,
    /// Set up when `kfree_skb` is enabled and its format could be read.
    kfree_skb: Option<kfree_skb::KfreeSkb>,
    /// Set up when `peers` is enabled and its programs loaded.
    peers: Option<peers::Peers>,
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
    /// them. A probe that cannot be set up is reported as failed; the others still run.
    pub fn start(config: &crate::config::Config, env: &KernelEnv<'_>) -> Result<Self, ProbeError> {
        let enabled = &config.probes;
        let mut status = Vec::new();
        let netns = match env.btf {
            None => Err("no kernel BTF".to_owned()),
            Some(btf) => {
                NetnsOffsets::from_btf(btf).map_err(|err| format!("BTF lacks an offset: {err}"))
            }
        };
        let kfree_plan = enabled
            .kfree_skb
            .then(|| kfree_skb::Plan::new(env, netns.as_ref().map_err(String::as_str)));
        let tcp_plan = enabled
            .tcp
            .then(|| tcp::Plan::new(env, netns.as_ref().ok()));
        let kfree_config = match &kfree_plan {
            Some(Ok(plan)) => plan.config,
            _ => watchdog_common::KfreeSkbConfig::UNCONFIGURED,
        };
        let mut loader = EbpfLoader::new();
        // Our programs are classic tracepoints: they need no BTF relocation, and must load
        // on kernels without BTF too.
        loader.btf(None);
        loader.override_global("KFREE_SKB_CONFIG", &kfree_config, true);
        let mut tc_config = watchdog_common::TcConfig {
            wireguard_ports: [0; 4],
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
        loader.override_global("TC_CONFIG", &tc_config, true);
        let tcp_config = match &tcp_plan {
            Some(Ok(plan)) => plan.config,
            _ => watchdog_common::TcpConfig::UNCONFIGURED,
        };
        loader.override_global("TCP_CONFIG", &tcp_config, true);
        loader.map_max_entries("AYA_LOGS", log_ring_bytes(crate::procfs::page_size()));
        let mut ebpf = loader.load(EBPF_OBJECT)?;
        let logger = start_ebpf_logger(&mut ebpf);

        let mut kfree = None;
        match kfree_plan {
            None => {}
            Some(Err(why)) => status.push(failed(kfree_skb::NAME, why)),
            Some(Ok(plan)) => match kfree_skb::KfreeSkb::attach(&mut ebpf, plan) {
                Ok(probe) => {
                    status.push(ProbeStatus {
                        name: kfree_skb::NAME,
                        state: ProbeState::Attached,
                    });
                    kfree = Some(probe);
                }
                Err(why) => status.push(failed(kfree_skb::NAME, why)),
            },
        }
        let mut peers = None;
        if enabled.peers {
            match peers::Peers::load(&mut ebpf, config.peers.interfaces.clone()) {
                Ok(mut probe) => {
                    probe.sync_interfaces(&mut ebpf);
                    status.push(peers_status(&probe));
                    peers = Some(probe);
                }
                Err(why) => status.push(failed(peers::NAME, why)),
            }
        }
        let mut tcp_probe = None;
        match tcp_plan {
            None => {}
            Some(Err(why)) => status.push(failed(tcp::NAME, why)),
            Some(Ok(_)) => match tcp::Tcp::attach(&mut ebpf) {
                Ok(probe) => {
                    status.push(ProbeStatus {
                        name: tcp::NAME,
                        state: ProbeState::Attached,
                    });
                    tcp_probe = Some(probe);
                }
                Err(why) => status.push(failed(tcp::NAME, why)),
            },
        }
        for probe in &status {
            match probe.state {
                ProbeState::Attached => tracing::info!("{probe}"),
                ProbeState::Failed(_) => tracing::error!("{probe}"),
            }
        }
        let features = features(env, &kfree_config, netns.is_ok());
        let report: Vec<String> = features
            .iter()
            .map(|(name, on)| format!("{name}={}", if *on { "yes" } else { "no" }))
            .collect();
        tracing::info!("kernel features: {}", report.join(" "));
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
            peers,
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

    /// Attaches the peer probe to interfaces that appeared; updates its status.
    pub fn sync_interfaces(&mut self) {
        let Some(probe) = self.peers.as_mut() else {
            return;
        };
        let before = probe.failed().len();
        let added = probe.sync_interfaces(&mut self.ebpf);
        if !added.is_empty() || probe.failed().len() != before {
            let fresh = peers_status(probe);
            if let Some(slot) = self.status.iter_mut().find(|s| s.name == peers::NAME) {
                *slot = fresh;
            }
        }
    }

    /// Reads the peer map (None if the probe is not loaded).
    pub fn read_peers(&self) -> Option<Result<peers::PeerSnapshot, aya::maps::MapError>> {
        self.peers.as_ref().map(|probe| probe.read(&self.ebpf))
    }

    /// Reads the TCP destination map (None if the probe is not attached).
    pub fn read_connects(&self) -> Option<Result<tcp::ConnectSnapshot, aya::maps::MapError>> {
        self.tcp.as_ref().map(|probe| probe.read(&self.ebpf))
    }

    /// Reads the drop counters (None if the probe is not attached).
    pub fn read_drops(&self) -> Option<Result<kfree_skb::DropSnapshot, aya::maps::MapError>> {
        self.kfree_skb.as_ref().map(|probe| probe.read(&self.ebpf))
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

/// Bytes of the aya-log ring buffer: its compiled 128 KiB, or one page where pages are
/// larger (a ring buffer must be a power-of-two number of pages).
fn log_ring_bytes(page_size: u64) -> u32 {
    let bytes = page_size.max(128 * 1024).next_power_of_two();
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// The start-up feature report.
fn features(
    env: &KernelEnv<'_>,
    kfree: &watchdog_common::KfreeSkbConfig,
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
    ]
}

/// The peer probe is up when it is attached everywhere it should be.
fn peers_status(probe: &peers::Peers) -> ProbeStatus {
    if probe.failed().is_empty() {
        ProbeStatus {
            name: peers::NAME,
            state: ProbeState::Attached,
        }
    } else {
        let list: Vec<String> = probe
            .failed()
            .iter()
            .map(|(interface, why)| format!("{interface}: {why}"))
            .collect();
        failed(peers::NAME, format!("not attached on {}", list.join("; ")))
    }
}

fn failed(name: &'static str, why: impl fmt::Display) -> ProbeStatus {
    ProbeStatus {
        name,
        state: ProbeState::Failed(why.to_string()),
    }
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
    #[test]
    fn log_ring_is_whole_pages() {
        assert_eq!(super::log_ring_bytes(4096), 128 * 1024);
        assert_eq!(super::log_ring_bytes(16 * 1024), 128 * 1024);
        assert_eq!(super::log_ring_bytes(256 * 1024), 256 * 1024);
    }
}
