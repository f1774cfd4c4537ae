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

#[cfg(feature = "user")]
mod user {
    // SAFETY: both are #[repr(C)], contain only u32 fields and have no padding.
    unsafe impl aya::Pod for super::DropKey {}
    unsafe impl aya::Pod for super::KfreeSkbConfig {}
}

// Layout is part of the kernel/userspace contract: fail the build if it drifts.
const _: () = assert!(core::mem::size_of::<DropKey>() == 8);
const _: () = assert!(core::mem::size_of::<KfreeSkbConfig>() == 32);
