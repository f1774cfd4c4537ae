//! Types shared by the eBPF programs (`watchdog-ebpf`) and the daemon (`watchdog`).
//!
//! Every type here is `#[repr(C)]` with explicit padding so both sides agree on the layout
//! byte for byte; the `user` feature adds `aya::Pod` for the userspace side.
#![no_std]

/// Marks an offset that could not be resolved (no BTF, or the kernel lacks the field).
pub const OFFSET_UNKNOWN: u32 = u32::MAX;

/// `reason` value recorded when the kernel's `kfree_skb` tracepoint has no `reason` field
/// (kernels before 5.17). Userspace reports it as `UNKNOWN`.
pub const REASON_UNKNOWN: u32 = u32::MAX;

/// Network namespace recorded when the drop could not be attributed (no BTF offsets, or the
/// skb had neither a device nor a socket).
pub const NETNS_UNKNOWN: u32 = 0;

/// Capacity of the per-(namespace, reason) drop counter map.
pub const DROP_MAP_ENTRIES: u32 = 4096;

/// Key of the `DROPS` per-CPU hash map: one counter per (network namespace, drop reason).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DropKey {
    /// Inode number of the network namespace (`/proc/<pid>/ns/net`), or [`NETNS_UNKNOWN`].
    pub netns: u32,
    /// The kernel's `enum skb_drop_reason` value, or [`REASON_UNKNOWN`].
    pub reason: u32,
}

/// Indexes of the `DROP_STATS` per-CPU array: what the drop probe could not record.
pub mod drop_stat {
    /// A drop whose (namespace, reason) key did not fit in the full `DROPS` map.
    pub const MAP_FULL: u32 = 0;
    /// A drop filtered out because it happened in another network namespace.
    pub const OTHER_NETNS: u32 = 1;
    /// A drop filtered out because its namespace could not be read (no device, no socket).
    pub const UNATTRIBUTED: u32 = 2;
    /// Number of slots.
    pub const COUNT: u32 = 3;
}

/// Configuration of the `kfree_skb` program, written into its `.rodata` by the loader
/// before the program is verified (so the verifier prunes dead branches).
///
/// All offsets come from userspace: the tracepoint field offsets from tracefs format
/// files, the struct member offsets from kernel BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KfreeSkbConfig {
    /// Offset of `skbaddr` in the tracepoint record.
    pub skbaddr_off: u32,
    /// Offset of `reason` in the tracepoint record, or [`OFFSET_UNKNOWN`].
    pub reason_off: u32,
    /// `offsetof(struct sk_buff, dev)`, or [`OFFSET_UNKNOWN`].
    pub skb_dev_off: u32,
    /// `offsetof(struct sk_buff, sk)`, or [`OFFSET_UNKNOWN`].
    pub skb_sk_off: u32,
    /// `offsetof(struct net_device, nd_net)`, or [`OFFSET_UNKNOWN`].
    pub dev_net_off: u32,
    /// `offsetof(struct sock, __sk_common.skc_net)`, or [`OFFSET_UNKNOWN`].
    pub sk_net_off: u32,
    /// `offsetof(struct net, ns.inum)`, or [`OFFSET_UNKNOWN`].
    pub net_inum_off: u32,
    /// Only count drops in this namespace (inode number); 0 counts every namespace.
    pub filter_netns: u32,
}

impl KfreeSkbConfig {
    /// A configuration that counts every drop under `UNKNOWN` namespace and reason.
    pub const UNCONFIGURED: Self = Self {
        skbaddr_off: OFFSET_UNKNOWN,
        reason_off: OFFSET_UNKNOWN,
        skb_dev_off: OFFSET_UNKNOWN,
        skb_sk_off: OFFSET_UNKNOWN,
        dev_net_off: OFFSET_UNKNOWN,
        sk_net_off: OFFSET_UNKNOWN,
        net_inum_off: OFFSET_UNKNOWN,
        filter_netns: 0,
    };
}

/// Capacity of the per-peer traffic LRU map (least recently seen peers are evicted).
pub const PEER_MAP_ENTRIES: u32 = 8192;

/// Key of the `PEERS` LRU map: one remote address as seen on one interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey {
    /// IPv4 (first 4 bytes, rest zero) or IPv6 address, network byte order.
    pub addr: [u8; 16],
    /// Interface the traffic was seen on.
    pub ifindex: u32,
    /// 4 or 6.
    pub family: u8,
    /// Explicit padding; always zero.
    pub _pad: [u8; 3],
}

/// Traffic with one peer on one CPU (the `PEERS` map is per-CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Packets sent to the peer.
    pub tx_packets: u64,
    /// Bytes sent to the peer.
    pub tx_bytes: u64,
    /// Packets received from the peer.
    pub rx_packets: u64,
    /// Bytes received from the peer.
    pub rx_bytes: u64,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of the last packet sent; 0 if none.
    pub last_tx_ns: u64,
    /// Same for the last packet received.
    pub last_rx_ns: u64,
    /// [`encap`] bits seen in this peer's traffic.
    pub encap: u32,
    /// Explicit padding; always zero.
    pub _pad: u32,
}

/// Encapsulations recognised by UDP port on the underlay; the peer is then a tunnel
/// endpoint.
pub mod encap {
    /// VXLAN (UDP 8472, Linux/Flannel default, or 4789, IANA).
    pub const VXLAN: u32 = 1;
    /// Geneve (UDP 6081).
    pub const GENEVE: u32 = 2;
    /// WireGuard (UDP port configured, 51820 and Tailscale's 41641 by default).
    pub const WIREGUARD: u32 = 4;
}

/// Indexes of the `PEER_STATS` per-CPU array.
pub mod peer_stat {
    /// New peers inserted (evictions = inserts - entries).
    pub const INSERTS: u32 = 0;
    /// Packets not recorded because the insert failed.
    pub const INSERT_FAILED: u32 = 1;
    /// Number of slots.
    pub const COUNT: u32 = 2;
}

/// Configuration of the TC programs, written into `.rodata` by the loader.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcConfig {
    /// UDP ports treated as WireGuard (0 = unused).
    pub wireguard_ports: [u16; 4],
}

impl TcConfig {
    /// WireGuard's and Tailscale's default ports.
    pub const DEFAULT: Self = Self {
        wireguard_ports: [51820, 41641, 0, 0],
    };
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: #[repr(C)], plain integers, explicit padding fields.
    unsafe impl aya::Pod for super::PeerKey {}
    unsafe impl aya::Pod for super::PeerStats {}
    unsafe impl aya::Pod for super::TcConfig {}
    // SAFETY: both are #[repr(C)], contain only u32 fields and have no padding.
    unsafe impl aya::Pod for super::DropKey {}
    unsafe impl aya::Pod for super::KfreeSkbConfig {}
}

// Layout is part of the kernel/userspace contract: fail the build if it drifts.
const _: () = assert!(core::mem::size_of::<DropKey>() == 8);
const _: () = assert!(core::mem::size_of::<KfreeSkbConfig>() == 32);
const _: () = assert!(core::mem::size_of::<PeerKey>() == 24);
const _: () = assert!(core::mem::size_of::<PeerStats>() == 56);
const _: () = assert!(core::mem::size_of::<TcConfig>() == 8);
