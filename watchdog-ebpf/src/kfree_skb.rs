//! `skb:kfree_skb`: count every dropped packet by (network namespace, drop reason).

use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    macros::{map, tracepoint},
    maps::{LruPerCpuHashMap, PerCpuArray, PerCpuHashMap},
    programs::TracePointContext,
};
use aya_log_ebpf::warn;
use watchdog_common::{
    DROP_DEST_MAP_ENTRIES, DROP_MAP_ENTRIES, DropDestKey, DropKey, KfreeSkbConfig, NETNS_UNKNOWN,
    OFFSET_UNKNOWN, REASON_UNKNOWN, drop_stat,
    names::{globals, maps, programs},
};

use crate::percpu::{Updated, update};

named!(KFREE_SKB_CONFIG, globals::KFREE_SKB_CONFIG);
named!(DROPS, maps::DROPS);
named!(DROP_DESTS, maps::DROP_DESTS);
named!(DROP_STATS, maps::DROP_STATS);
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
    let netns = netns_of(ctx, &cfg);
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
    if cfg.attributes(reason) {
        count_destination(ctx, &cfg, netns, reason);
    }
    Ok(())
}

/// Counts the drop under the destination address of the packet's IP header.
#[inline(always)]
fn count_destination(ctx: &TracePointContext, cfg: &KfreeSkbConfig, netns: u32, reason: u32) {
    if cfg.skb_head_off == OFFSET_UNKNOWN || cfg.skb_network_header_off == OFFSET_UNKNOWN {
        return;
    }
    // SAFETY: offset from the format file.
    let Ok(skb) = (unsafe { ctx.read_at::<u64>(cfg.skbaddr_off as usize) }) else {
        return;
    };
    let head = read_ptr(skb, cfg.skb_head_off);
    // SAFETY: bpf_probe_read_kernel tolerates any address.
    let Ok(network) =
        (unsafe { bpf_probe_read_kernel((skb + cfg.skb_network_header_off as u64) as *const u16) })
    else {
        return;
    };
    if head == 0 || network == u16::MAX {
        return;
    }
    let header = head + network as u64;
    // SAFETY: as above.
    let Ok(first) = (unsafe { bpf_probe_read_kernel(header as *const u8) }) else {
        return;
    };
    let mut key = DropDestKey {
        addr: [0; 16],
        netns,
        reason,
        family: 0,
        _pad: [0; 7],
    };
    match first >> 4 {
        4 => {
            // SAFETY: as above.
            let Ok(addr) = (unsafe { bpf_probe_read_kernel((header + 16) as *const [u8; 4]) })
            else {
                return;
            };
            key.family = 4;
            key.addr[..4].copy_from_slice(&addr);
        }
        6 => {
            // SAFETY: as above.
            let Ok(addr) = (unsafe { bpf_probe_read_kernel((header + 24) as *const [u8; 16]) })
            else {
                return;
            };
            key.family = 6;
            key.addr = addr;
        }
        _ => return,
    }
    // A full LRU map evicts, so an insert only fails in a race already retried.
    let _ = update(&DROP_DESTS, &key, |count: &mut u64| *count += 1);
}

/// The inode number of the skb's network namespace: through `skb->dev`, else `skb->sk`.
#[inline(always)]
fn netns_of(ctx: &TracePointContext, cfg: &KfreeSkbConfig) -> u32 {
    if cfg.net_inum_off == OFFSET_UNKNOWN || cfg.skbaddr_off == OFFSET_UNKNOWN {
        return NETNS_UNKNOWN;
    }
    // SAFETY: offset from the format file.
    let Ok(skb) = (unsafe { ctx.read_at::<u64>(cfg.skbaddr_off as usize) }) else {
        return NETNS_UNKNOWN;
    };
    let mut net = 0;
    if cfg.skb_dev_off != OFFSET_UNKNOWN && cfg.dev_net_off != OFFSET_UNKNOWN {
        let dev = read_ptr(skb, cfg.skb_dev_off);
        if dev != 0 {
            net = read_ptr(dev, cfg.dev_net_off);
        }
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
