//! `skb:kfree_skb`: count every dropped packet by (network namespace, drop reason); for the
//! reasons userspace selects also by destination address, or by flow.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    macros::{map, tracepoint},
    maps::{LruPerCpuHashMap, PerCpuArray, PerCpuHashMap},
    programs::TracePointContext,
};
use aya_log_ebpf::warn;
use watchdog_common::{
    DROP_DEST_MAP_ENTRIES, DROP_FLOW_MAP_ENTRIES, DROP_MAP_ENTRIES, DropDestKey, DropFlowKey,
    DropKey, KfreeSkbConfig, NETNS_UNKNOWN, OFFSET_UNKNOWN, REASON_UNKNOWN, drop_stat,
    names::{globals, maps, programs},
};

use crate::percpu::{Updated, update};

named!(KFREE_SKB_CONFIG, globals::KFREE_SKB_CONFIG);
named!(DROPS, maps::DROPS);
named!(DROP_DESTS, maps::DROP_DESTS);
named!(DROP_STATS, maps::DROP_STATS);
named!(DROP_FLOWS, maps::DROP_FLOWS);
named!(kfree_skb, programs::KFREE_SKB);

/// Offsets and the namespace filter, written by the loader before verification.
#[unsafe(no_mangle)]
static KFREE_SKB_CONFIG: KfreeSkbConfig = KfreeSkbConfig::UNCONFIGURED;

#[map]
static DROPS: PerCpuHashMap<DropKey, u64> = PerCpuHashMap::with_max_entries(DROP_MAP_ENTRIES, 0);

/// Drops per destination address, for the route and neighbour reasons userspace selects.
#[map]
static DROP_DESTS: LruPerCpuHashMap<DropDestKey, u64> =
    LruPerCpuHashMap::with_max_entries(DROP_DEST_MAP_ENTRIES, 0);

/// Drops per flow, for the reasons userspace selects (netfilter, reverse path, checksums).
#[map]
static DROP_FLOWS: LruPerCpuHashMap<DropFlowKey, u64> =
    LruPerCpuHashMap::with_max_entries(DROP_FLOW_MAP_ENTRIES, 0);

#[map]
static DROP_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(drop_stat::COUNT, 0);

#[tracepoint]
pub fn kfree_skb(ctx: TracePointContext) -> u32 {
    // A failed read leaves nothing to count; the tracepoint's return value is ignored.
    let _ = try_kfree_skb(&ctx);
    0
}

#[inline(always)]
fn config() -> KfreeSkbConfig {
    // SAFETY: a read of our own .rodata global; volatile so the compiler cannot assume the
    // compile-time default (the loader rewrites it).
    unsafe { core::ptr::read_volatile(&KFREE_SKB_CONFIG) }
}

fn try_kfree_skb(ctx: &TracePointContext) -> Result<(), i32> {
    let cfg = config();
    let reason = if cfg.reason_off == OFFSET_UNKNOWN {
        REASON_UNKNOWN
    } else {
        // SAFETY: the offset comes from the tracepoint's own format file.
        unsafe { ctx.read_at::<u32>(cfg.reason_off as usize)? }
    };
    let skb = if cfg.skbaddr_off == OFFSET_UNKNOWN {
        0
    } else {
        // SAFETY: offset from the format file.
        unsafe { ctx.read_at::<u64>(cfg.skbaddr_off as usize) }.unwrap_or(0)
    };
    let dev = if skb != 0 && cfg.skb_dev_off != OFFSET_UNKNOWN {
        read_ptr(skb, cfg.skb_dev_off)
    } else {
        0
    };
    let netns = netns_of(skb, dev, &cfg);
    if cfg.filter_netns != 0 && netns != cfg.filter_netns {
        let stat = if netns == NETNS_UNKNOWN {
            drop_stat::UNATTRIBUTED
        } else {
            drop_stat::OTHER_NETNS
        };
        bump_stat(stat);
        return Ok(());
    }
    count(ctx, &DropKey { netns, reason });
    let destination = cfg.attributes(reason);
    let flow = cfg.flows(reason);
    if (destination || flow)
        && let Some(header) = ip_header(skb, &cfg)
    {
        if destination {
            count_destination(&header, netns, reason);
        }
        if flow {
            count_flow(&header, &cfg, dev, netns, reason);
        }
    }
    Ok(())
}

/// What the drop probe reads of a dropped packet's IP header.
struct Header {
    /// 4 or 6.
    family: u8,
    /// Source and destination address (IPv4: the first 4 bytes).
    src: [u8; 16],
    dst: [u8; 16],
    /// IP protocol (IPv6: the first next header).
    protocol: u8,
    /// Where the transport header starts (IPv4 options skipped; IPv6: right after the
    /// fixed header).
    transport: u64,
}

/// The packet's IP header, read through `skb->head + skb->network_header`.
#[inline(always)]
fn ip_header(skb: u64, cfg: &KfreeSkbConfig) -> Option<Header> {
    if skb == 0
        || cfg.skb_head_off == OFFSET_UNKNOWN
        || cfg.skb_network_header_off == OFFSET_UNKNOWN
    {
        return None;
    }
    let head = read_ptr(skb, cfg.skb_head_off);
    // SAFETY: bpf_probe_read_kernel tolerates any address.
    let network =
        unsafe { bpf_probe_read_kernel((skb + cfg.skb_network_header_off as u64) as *const u16) }
            .ok()?;
    if head == 0 || network == u16::MAX {
        return None;
    }
    let at = head + network as u64;
    // SAFETY: as above.
    let first = unsafe { bpf_probe_read_kernel(at as *const u8) }.ok()?;
    let mut header = Header {
        family: 0,
        src: [0; 16],
        dst: [0; 16],
        protocol: 0,
        transport: 0,
    };
    match first >> 4 {
        4 => {
            // SAFETY: as above.
            let ip = unsafe { bpf_probe_read_kernel(at as *const [u8; 20]) }.ok()?;
            header.family = 4;
            header.protocol = ip[9];
            header.src[..4].copy_from_slice(&ip[12..16]);
            header.dst[..4].copy_from_slice(&ip[16..20]);
            header.transport = at + u64::from(ip[0] & 0x0f) * 4;
        }
        6 => {
            // SAFETY: as above.
            let ip = unsafe { bpf_probe_read_kernel(at as *const [u8; 40]) }.ok()?;
            header.family = 6;
            header.protocol = ip[6];
            header.src.copy_from_slice(&ip[8..24]);
            header.dst.copy_from_slice(&ip[24..40]);
            header.transport = at + 40;
        }
        _ => return None,
    }
    Some(header)
}

/// Counts the drop under the destination address of the packet's IP header.
#[inline(always)]
fn count_destination(header: &Header, netns: u32, reason: u32) {
    let key = DropDestKey {
        addr: header.dst,
        netns,
        reason,
        family: header.family,
        _pad: [0; 7],
    };
    // A full LRU map evicts, so an insert only fails in a race already retried.
    let _ = update(&DROP_DESTS, &key, |count: &mut u64| *count += 1);
}

/// IP protocol number of UDP.
const IPPROTO_UDP: u8 = 17;

/// Counts the drop under its flow: device, addresses, protocol, UDP destination port.
#[inline(always)]
fn count_flow(header: &Header, cfg: &KfreeSkbConfig, dev: u64, netns: u32, reason: u32) {
    let ifindex = if dev != 0 && cfg.dev_ifindex_off != OFFSET_UNKNOWN {
        // SAFETY: bpf_probe_read_kernel tolerates any address.
        unsafe { bpf_probe_read_kernel((dev + cfg.dev_ifindex_off as u64) as *const u32) }
            .unwrap_or(0)
    } else {
        0
    };
    let dport = if header.protocol == IPPROTO_UDP {
        // SAFETY: as above; the UDP destination port is the header's second field.
        unsafe { bpf_probe_read_kernel((header.transport + 2) as *const [u8; 2]) }
            .map_or(0, u16::from_be_bytes)
    } else {
        0
    };
    let key = DropFlowKey {
        src: header.src,
        dst: header.dst,
        netns,
        reason,
        ifindex,
        dport,
        family: header.family,
        protocol: header.protocol,
    };
    // A full LRU map evicts, so an insert only fails in a race already retried.
    let _ = update(&DROP_FLOWS, &key, |count: &mut u64| *count += 1);
}

/// The inode number of the skb's network namespace: through `skb->dev` (`dev`), else
/// `skb->sk`.
#[inline(always)]
fn netns_of(skb: u64, dev: u64, cfg: &KfreeSkbConfig) -> u32 {
    if skb == 0 || cfg.net_inum_off == OFFSET_UNKNOWN {
        return NETNS_UNKNOWN;
    }
    let mut net = 0;
    if dev != 0 && cfg.dev_net_off != OFFSET_UNKNOWN {
        net = read_ptr(dev, cfg.dev_net_off);
    }
    if net == 0 && cfg.skb_sk_off != OFFSET_UNKNOWN && cfg.sk_net_off != OFFSET_UNKNOWN {
        let sk = read_ptr(skb, cfg.skb_sk_off);
        if sk != 0 {
            net = read_ptr(sk, cfg.sk_net_off);
        }
    }
    if net == 0 {
        return NETNS_UNKNOWN;
    }
    // SAFETY: bpf_probe_read_kernel tolerates any address; a bad one returns an error.
    unsafe { bpf_probe_read_kernel((net + cfg.net_inum_off as u64) as *const u32) }
        .unwrap_or(NETNS_UNKNOWN)
}

/// Reads the pointer at `base + off` in kernel memory; 0 when unreadable.
#[inline(always)]
fn read_ptr(base: u64, off: u32) -> u64 {
    // SAFETY: bpf_probe_read_kernel tolerates any address; a bad one returns an error.
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const u64) }.unwrap_or(0)
}

#[inline(always)]
fn count(ctx: &TracePointContext, key: &DropKey) {
    if update(&DROPS, key, |count: &mut u64| *count += 1) == Updated::Full
        && bump_stat(drop_stat::MAP_FULL) == 1
    {
        warn!(
            ctx,
            "drop counter map full ({} keys): further (netns, reason) pairs are counted as map_full",
            DROP_MAP_ENTRIES
        );
    }
}

/// Adds one to a `DROP_STATS` slot and returns the new per-CPU value.
#[inline(always)]
fn bump_stat(index: u32) -> u64 {
    match DROP_STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        Some(value) => unsafe {
            *value += 1;
            *value
        },
        None => 0,
    }
}
