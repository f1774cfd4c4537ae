//! Types shared by the eBPF programs (`watchdog-ebpf`) and the daemon (`watchdog`).
//!
//! Every type here is `#[repr(C)]` with explicit padding so both sides agree on the layout
//! byte for byte; the `user` feature adds `aya::Pod` for the userspace side.
#![no_std]

/// Names of the maps, programs and globals in the eBPF object: the eBPF side checks its
/// items against them at compile time ([`same_name`]), the daemon asks for them by these
/// names, and a unit test of the daemon finds each one in the built object.
pub mod names {
    /// Maps.
    pub mod maps {
        /// Drops per (namespace, reason).
        pub const DROPS: &str = "DROPS";
        /// Drops per destination address.
        pub const DROP_DESTS: &str = "DROP_DESTS";
        /// What the drop probe could not record.
        pub const DROP_STATS: &str = "DROP_STATS";
        /// Drops per flow (namespace, reason, device, addresses, protocol, UDP port).
        pub const DROP_FLOWS: &str = "DROP_FLOWS";
        /// Traffic per (interface, remote address).
        pub const PEERS: &str = "PEERS";
        /// The per-CPU cache in front of `PEERS` ([`crate::PeerSlot`]).
        pub const PEER_CACHE: &str = "PEER_CACHE";
        /// Set by the reader while it reads `PEERS` and `PEER_CACHE`: no flushes then.
        pub const PEER_READING: &str = "PEER_READING";
        /// Peer map events.
        pub const PEER_STATS: &str = "PEER_STATS";
        /// Link-layer header length learned per interface (direct header reads).
        pub const LINK_HEADER: &str = "LINK_HEADER";
        /// Definitive ICMP errors received about each destination ([`crate::IcmpErrorKey`]).
        pub const ICMP_ERRORS: &str = "ICMP_ERRORS";
        /// TCP connect outcomes per destination.
        pub const CONNECTS: &str = "CONNECTS";
        /// The cgroup (v2 id) a process of each network namespace last connected from.
        pub const NETNS_CGROUPS: &str = "NETNS_CGROUPS";
        /// aya-log's ring buffer (defined by `aya-log-ebpf`, sized by the daemon).
        pub const AYA_LOGS: &str = "AYA_LOGS";
    }

    /// Programs (the function names).
    pub mod programs {
        /// `skb:kfree_skb` tracepoint.
        pub const KFREE_SKB: &str = "kfree_skb";
        /// TC egress classifier counting traffic per peer.
        pub const PEERS_EGRESS: &str = "peers_egress";
        /// TC ingress classifier counting traffic per peer.
        pub const PEERS_INGRESS: &str = "peers_ingress";
        /// `sock:inet_sock_set_state` tracepoint.
        pub const INET_SOCK_SET_STATE: &str = "inet_sock_set_state";
        /// `tcp:tcp_retransmit_skb` tracepoint.
        pub const TCP_RETRANSMIT_SKB: &str = "tcp_retransmit_skb";
    }

    /// Read-only globals the loader rewrites before verification.
    pub mod globals {
        /// [`crate::KfreeSkbConfig`].
        pub const KFREE_SKB_CONFIG: &str = "KFREE_SKB_CONFIG";
        /// [`crate::TcConfig`].
        pub const TC_CONFIG: &str = "TC_CONFIG";
        /// [`crate::TcpConfig`].
        pub const TCP_CONFIG: &str = "TCP_CONFIG";
    }
}

/// `a == b`, usable in constants: `const _: () = assert!(same_name(stringify!(DROPS),
/// names::maps::DROPS));` fails the eBPF build when an item and its shared name drift.
pub const fn same_name(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Most UDP ports `TcConfig` holds as WireGuard ports (`peers.wireguard_ports` in the
/// daemon's config).
pub const MAX_WIREGUARD_PORTS: usize = 4;

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
    /// `offsetof(struct sk_buff, head)`, or [`OFFSET_UNKNOWN`].
    pub skb_head_off: u32,
    /// `offsetof(struct sk_buff, network_header)` (a u16), or [`OFFSET_UNKNOWN`].
    pub skb_network_header_off: u32,
    /// Reasons (values below 256) whose drops are also counted per destination address.
    pub attribute_reasons: [u64; 4],
    /// Reasons (values below 256) whose drops are also counted per flow ([`DropFlowKey`]).
    pub flow_reasons: [u64; 4],
    /// `offsetof(struct net_device, ifindex)`, or [`OFFSET_UNKNOWN`].
    pub dev_ifindex_off: u32,
    /// Explicit padding; always zero.
    pub _pad: u32,
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
        skb_head_off: OFFSET_UNKNOWN,
        skb_network_header_off: OFFSET_UNKNOWN,
        attribute_reasons: [0; 4],
        flow_reasons: [0; 4],
        dev_ifindex_off: OFFSET_UNKNOWN,
        _pad: 0,
    };

    /// Whether drops with `reason` are attributed to their destination.
    pub fn attributes(&self, reason: u32) -> bool {
        in_set(&self.attribute_reasons, reason)
    }

    /// Whether drops with `reason` are counted per flow.
    pub fn flows(&self, reason: u32) -> bool {
        in_set(&self.flow_reasons, reason)
    }
}

/// Whether `reason` (below 256) is in the bit set `set`.
#[inline(always)]
pub const fn in_set(set: &[u64; 4], reason: u32) -> bool {
    reason < 256 && set[(reason / 64) as usize] & (1 << (reason % 64)) != 0
}

/// Adds `reason` (below 256; others are ignored) to the bit set `set`.
pub fn add_to_set(set: &mut [u64; 4], reason: u32) {
    if reason < 256 {
        set[(reason / 64) as usize] |= 1 << (reason % 64);
    }
}

/// Capacity of the per-flow drop LRU map.
pub const DROP_FLOW_MAP_ENTRIES: u32 = 1024;

/// Key of the `DROP_FLOWS` LRU map: drops of one reason of one flow, for the reasons whose
/// cause is named by what was dropped where (a firewall, reverse-path filtering, a bad
/// checksum): the device it was dropped on, its addresses, its protocol and, for UDP, its
/// destination port (the VXLAN port tells overlay traffic). TCP ports are left out so a port
/// scan is one flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DropFlowKey {
    /// IPv4 (first 4 bytes) or IPv6 source of the dropped packet.
    pub src: [u8; 16],
    /// IPv4 (first 4 bytes) or IPv6 destination of the dropped packet.
    pub dst: [u8; 16],
    /// Network namespace inode.
    pub netns: u32,
    /// Drop reason value.
    pub reason: u32,
    /// `skb->dev->ifindex` at the drop (the device it arrived on, or leaves by); 0: none.
    pub ifindex: u32,
    /// UDP destination port (host order); 0 for other protocols.
    pub dport: u16,
    /// 4 or 6.
    pub family: u8,
    /// The IP protocol (IPv6: the first next header).
    pub protocol: u8,
}

/// Capacity of the per-destination drop LRU map.
pub const DROP_DEST_MAP_ENTRIES: u32 = 4096;

/// Key of the `DROP_DESTS` LRU map: drops of one reason towards one destination address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DropDestKey {
    /// IPv4 (first 4 bytes) or IPv6 destination of the dropped packet.
    pub addr: [u8; 16],
    /// Network namespace inode.
    pub netns: u32,
    /// Drop reason value.
    pub reason: u32,
    /// 4 or 6.
    pub family: u8,
    /// Explicit padding; always zero.
    pub _pad: [u8; 7],
}

/// Capacity of the per-peer traffic LRU map (least recently seen peers are evicted).
pub const PEER_MAP_ENTRIES: u32 = 8192;

/// Key of the `PEERS` LRU map: one remote address as seen on one interface.
///
/// Aligned to 8 so the programs can handle it as three 64-bit words ([`PeerKey::words`]).
#[repr(C, align(8))]
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

impl PeerKey {
    /// The key as the programs see it: three little-endian 64-bit words (the BPF target is
    /// little-endian), the address in the first two, `ifindex | family << 32` in the third.
    pub fn words(&self) -> [u64; 3] {
        let a = self.addr;
        [
            u64::from_le_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]),
            u64::from_le_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]),
            u64::from(self.ifindex) | u64::from(self.family) << 32,
        ]
    }
}

/// Slots of the per-CPU peer cache (`PEER_CACHE`), a power of two.
pub const PEER_CACHE_SLOTS: u32 = 256;

/// The `PEER_CACHE` slot of a key given as [`PeerKey::words`]: a multiplicative hash, so
/// peers of one interface spread over the slots. Shared by the programs and the tests that
/// need two peers in one slot.
#[inline(always)]
pub const fn peer_cache_slot(words: [u64; 3]) -> u32 {
    let mixed = words[0] ^ words[1] ^ words[2];
    let mixed = (mixed ^ (mixed >> 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (mixed >> (64 - PEER_CACHE_SLOTS.trailing_zeros())) as u32
}

/// One slot of the per-CPU peer cache: traffic of `key` on this CPU not yet added to the
/// `PEERS` map. Consecutive packets to the same peer only touch the slot; a packet of
/// another peer that hashes to the slot first adds the slot's counts to `PEERS` (a flush).
/// Userspace adds slot counts to the map's when reading, so totals stay exact.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerSlot {
    /// The peer; all zero when the slot is empty.
    pub key: PeerKey,
    /// Its traffic since the slot was taken.
    pub stats: PeerStats,
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
    /// CLOCK_MONOTONIC nanoseconds of the last packet sent (at jiffy resolution on 5.11+
    /// kernels); 0 if none.
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

/// Capacity of the `ICMP_ERRORS` LRU map: destinations with a recent definitive ICMP error.
pub const ICMP_ERROR_ENTRIES: u32 = 1024;

/// Key of the `ICMP_ERRORS` LRU map: the destination of the packet a definitive ICMP error
/// (host or network unreachable, administratively prohibited) came back for, as the
/// error's embedded original header names it. Aligned to 8 so the programs can build it as
/// three 64-bit words, as [`PeerKey`].
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IcmpErrorKey {
    /// IPv4 (first 4 bytes, rest zero) or IPv6 address, network byte order.
    pub addr: [u8; 16],
    /// 4 or 6.
    pub family: u8,
    /// Explicit padding; always zero.
    pub _pad: [u8; 7],
}

/// The definitive ICMP errors received about one destination (TC ingress; one shared
/// value, updated without atomics on a cold path: the count is approximate under races).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IcmpErrorStats {
    /// Errors received.
    pub count: u64,
    /// When the last one arrived, on the clock of [`PeerStats::last_rx_ns`].
    pub last_ns: u64,
    /// Who sent the last one (the error's own source), as the key's address.
    pub from: [u8; 16],
    /// The last one's ICMP type (3 for ICMPv4, 1 for ICMPv6).
    pub icmp_type: u8,
    /// The last one's ICMP code.
    pub code: u8,
    /// Explicit padding; always zero.
    pub _pad: [u8; 6],
}

/// Configuration of the TC programs, written into `.rodata` by the loader.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcConfig {
    /// UDP ports treated as WireGuard (0 = unused).
    pub wireguard_ports: [u16; MAX_WIREGUARD_PORTS],
    /// 1: stamp last-seen times with `bpf_ktime_get_coarse_ns` (kernels 5.11+).
    pub coarse_clock: u32,
    /// 1: count through the per-CPU `PEER_CACHE` (needs a reader that can wait for running
    /// programs, `membarrier(MEMBARRIER_CMD_GLOBAL)`); 0: every packet goes to `PEERS`.
    pub peer_cache: u32,
}

impl TcConfig {
    /// WireGuard's and Tailscale's default ports, the precise clock, no cache.
    pub const DEFAULT: Self = Self {
        wireguard_ports: [51820, 41641, 0, 0],
        coarse_clock: 0,
        peer_cache: 0,
    };
}

/// Capacity of the per-destination TCP connect outcome LRU map.
pub const CONNECT_MAP_ENTRIES: u32 = 4096;

/// Capacity of the `NETNS_CGROUPS` LRU map (namespace inode → cgroup v2 id): more than
/// `pods.max_namespaces`' default, a few hundred KiB of kernel memory.
pub const NETNS_CGROUP_ENTRIES: u32 = 4096;

/// Key of the `CONNECTS` LRU map: one TCP destination (address and port) in one namespace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectKey {
    /// IPv4 (first 4 bytes) or IPv6 destination address.
    pub addr: [u8; 16],
    /// Network namespace inode ([`NETNS_UNKNOWN`] when not attributed).
    pub netns: u32,
    /// Destination port (host order).
    pub port: u16,
    /// 4 or 6.
    pub family: u8,
    /// Explicit padding; always zero.
    pub _pad: u8,
}

/// TCP outcomes towards one destination on one CPU (the map is per-CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectStats {
    /// Connects started (CLOSE → SYN_SENT).
    pub attempts: u64,
    /// Connects that succeeded (SYN_SENT → ESTABLISHED).
    pub established: u64,
    /// Connects that failed (SYN_SENT → CLOSE: refused, timed out, unreachable).
    pub failed: u64,
    /// Segments retransmitted to the destination, any state.
    pub retransmits: u64,
    /// SYNs retransmitted (state SYN_SENT): the destination does not answer.
    pub syn_retransmits: u64,
    /// `bpf_ktime_get_ns()` of the last failure; 0 if none.
    pub last_failed_ns: u64,
    /// `bpf_ktime_get_ns()` of the last success; 0 if none.
    pub last_established_ns: u64,
}

/// Configuration of the TCP programs: tracepoint field offsets from the format files and
/// the namespace path from BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpConfig {
    /// `inet_sock_set_state`: offset of `skaddr`.
    pub state_skaddr_off: u32,
    /// `inet_sock_set_state`: offset of `oldstate`.
    pub state_old_off: u32,
    /// `inet_sock_set_state`: offset of `newstate`.
    pub state_new_off: u32,
    /// `inet_sock_set_state`: offset of `dport`.
    pub state_dport_off: u32,
    /// `inet_sock_set_state`: offset of `family`.
    pub state_family_off: u32,
    /// `inet_sock_set_state`: offset of `protocol`.
    pub state_protocol_off: u32,
    /// `inet_sock_set_state`: offset of `daddr`.
    pub state_daddr_off: u32,
    /// `inet_sock_set_state`: offset of `daddr_v6`.
    pub state_daddr_v6_off: u32,
    /// `tcp_retransmit_skb`: offset of `skaddr`.
    pub retrans_skaddr_off: u32,
    /// `tcp_retransmit_skb`: offset of `state`.
    pub retrans_state_off: u32,
    /// `tcp_retransmit_skb`: offset of `dport`.
    pub retrans_dport_off: u32,
    /// `tcp_retransmit_skb`: offset of `family`, or [`OFFSET_UNKNOWN`] where the kernel has
    /// none (5.10): the family is then read off `daddr_v6` (v4-mapped for IPv4 sockets).
    pub retrans_family_off: u32,
    /// `tcp_retransmit_skb`: offset of `daddr`.
    pub retrans_daddr_off: u32,
    /// `tcp_retransmit_skb`: offset of `daddr_v6`.
    pub retrans_daddr_v6_off: u32,
    /// `offsetof(struct sock, __sk_common.skc_net)`, or [`OFFSET_UNKNOWN`].
    pub sk_net_off: u32,
    /// `offsetof(struct net, ns.inum)`, or [`OFFSET_UNKNOWN`].
    pub net_inum_off: u32,
    /// Only count this namespace; 0 counts all.
    pub filter_netns: u32,
    /// TCP state numbers, from the format file's table.
    pub tcp_established: u32,
    /// See `tcp_established`.
    pub tcp_syn_sent: u32,
    /// See `tcp_established`.
    pub tcp_close: u32,
}

impl TcpConfig {
    /// Nothing resolved: the programs count nothing.
    pub const UNCONFIGURED: Self = Self {
        state_skaddr_off: OFFSET_UNKNOWN,
        state_old_off: OFFSET_UNKNOWN,
        state_new_off: OFFSET_UNKNOWN,
        state_dport_off: OFFSET_UNKNOWN,
        state_family_off: OFFSET_UNKNOWN,
        state_protocol_off: OFFSET_UNKNOWN,
        state_daddr_off: OFFSET_UNKNOWN,
        state_daddr_v6_off: OFFSET_UNKNOWN,
        retrans_skaddr_off: OFFSET_UNKNOWN,
        retrans_state_off: OFFSET_UNKNOWN,
        retrans_dport_off: OFFSET_UNKNOWN,
        retrans_family_off: OFFSET_UNKNOWN,
        retrans_daddr_off: OFFSET_UNKNOWN,
        retrans_daddr_v6_off: OFFSET_UNKNOWN,
        sk_net_off: OFFSET_UNKNOWN,
        net_inum_off: OFFSET_UNKNOWN,
        filter_netns: 0,
        tcp_established: 1,
        tcp_syn_sent: 2,
        tcp_close: 7,
    };
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: #[repr(C)], plain integers, explicit padding fields.
    unsafe impl aya::Pod for super::PeerKey {}
    unsafe impl aya::Pod for super::PeerStats {}
    unsafe impl aya::Pod for super::PeerSlot {}
    unsafe impl aya::Pod for super::TcConfig {}
    unsafe impl aya::Pod for super::IcmpErrorKey {}
    unsafe impl aya::Pod for super::IcmpErrorStats {}
    unsafe impl aya::Pod for super::ConnectKey {}
    unsafe impl aya::Pod for super::ConnectStats {}
    unsafe impl aya::Pod for super::TcpConfig {}
    unsafe impl aya::Pod for super::DropDestKey {}
    unsafe impl aya::Pod for super::DropFlowKey {}
    // SAFETY: #[repr(C)], only integer fields, no padding (explicit `_pad`).
    unsafe impl aya::Pod for super::DropKey {}
    unsafe impl aya::Pod for super::KfreeSkbConfig {}
}

// Layout is part of the kernel/userspace contract: fail the build if it drifts.
const _: () = assert!(core::mem::size_of::<DropKey>() == 8);
const _: () = assert!(core::mem::size_of::<KfreeSkbConfig>() == 112);
const _: () = assert!(core::mem::size_of::<DropFlowKey>() == 48);
const _: () = assert!(core::mem::size_of::<DropDestKey>() == 32);
const _: () = assert!(core::mem::size_of::<PeerKey>() == 24);
const _: () = assert!(core::mem::size_of::<PeerStats>() == 56);
const _: () = assert!(core::mem::size_of::<PeerSlot>() == 80);
const _: () = assert!(PEER_CACHE_SLOTS.is_power_of_two());
const _: () = assert!(core::mem::size_of::<TcConfig>() == 16);
const _: () = assert!(core::mem::size_of::<IcmpErrorKey>() == 24);
const _: () = assert!(core::mem::size_of::<IcmpErrorStats>() == 40);
const _: () = assert!(core::mem::size_of::<ConnectKey>() == 24);
const _: () = assert!(core::mem::size_of::<ConnectStats>() == 56);
const _: () = assert!(core::mem::size_of::<TcpConfig>() == 80);

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    /// The programs handle a key as three native (little-endian) words of its memory.
    #[cfg(target_endian = "little")]
    #[test]
    fn key_words_are_the_keys_memory() {
        let key = PeerKey {
            addr: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11],
            ifindex: 0x0102_0304,
            family: 6,
            _pad: [0; 3],
        };
        // SAFETY: PeerKey is 24 bytes of plain integers with explicit padding.
        let memory: [u64; 3] = unsafe { core::mem::transmute(key) };
        assert_eq!(key.words(), memory);
        assert_eq!(key.words()[2], 0x0102_0304 | 6 << 32);
    }

    /// The ingress program builds an ICMP error's key as three words (the address, then
    /// the family) and its value as five (count, time, sender, `type | code << 8`).
    #[cfg(target_endian = "little")]
    #[test]
    fn icmp_error_words_are_their_memory() {
        let words: [u64; 3] = [u64::from(u32::from_le_bytes([10, 244, 2, 77])), 0, 4];
        // SAFETY: IcmpErrorKey is 24 bytes of plain integers with explicit padding.
        let key: IcmpErrorKey = unsafe { core::mem::transmute(words) };
        assert_eq!(key.addr[..4], [10, 244, 2, 77]);
        assert_eq!(key.family, 4);
        let from = u64::from(u32::from_le_bytes([10, 244, 2, 0]));
        let words: [u64; 5] = [3, 42, from, 0, 3 | 1 << 8];
        // SAFETY: IcmpErrorStats is 40 bytes of plain integers with explicit padding.
        let stats: IcmpErrorStats = unsafe { core::mem::transmute(words) };
        assert_eq!((stats.count, stats.last_ns), (3, 42));
        assert_eq!(stats.from[..4], [10, 244, 2, 0]);
        assert_eq!((stats.icmp_type, stats.code), (3, 1));
    }

    #[test]
    fn cache_slots_are_in_range_and_spread() {
        let mut used = std::collections::BTreeSet::new();
        for host in 0..=255u8 {
            let mut key = PeerKey {
                ifindex: 3,
                family: 4,
                ..PeerKey::default()
            };
            key.addr[..4].copy_from_slice(&[10, 244, 1, host]);
            let slot = peer_cache_slot(key.words());
            assert!(slot < PEER_CACHE_SLOTS);
            used.insert(slot);
        }
        // 256 neighbouring addresses land in most of the 256 slots.
        assert!(used.len() > 128, "{} slots used", used.len());
    }
}
