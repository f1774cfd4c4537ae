//! TCP connect outcomes and retransmissions per destination, from `sock:inet_sock_set_state`
//! and `tcp:tcp_retransmit_skb`. Counts only; the destinations live in a bounded LRU map.

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{map, tracepoint},
    maps::{LruHashMap, LruPerCpuHashMap},
    programs::TracePointContext,
};
use watchdog_common::{
    CONNECT_MAP_ENTRIES, ConnectKey, ConnectStats, NETNS_CGROUP_ENTRIES, NETNS_UNKNOWN,
    OFFSET_UNKNOWN, TcpConfig,
    names::{globals, maps, programs},
};

use crate::percpu::update;

named!(TCP_CONFIG, globals::TCP_CONFIG);
named!(CONNECTS, maps::CONNECTS);
named!(NETNS_CGROUPS, maps::NETNS_CGROUPS);
named!(inet_sock_set_state, programs::INET_SOCK_SET_STATE);
named!(tcp_retransmit_skb, programs::TCP_RETRANSMIT_SKB);

#[unsafe(no_mangle)]
static TCP_CONFIG: TcpConfig = TcpConfig::UNCONFIGURED;

#[map]
static CONNECTS: LruPerCpuHashMap<ConnectKey, ConnectStats> =
    LruPerCpuHashMap::with_max_entries(CONNECT_MAP_ENTRIES, 0);

/// Network namespace inode → the cgroup (v2 id) a process of it last started a connect
/// from. Shared by every CPU (one write per connect, only when it changes).
#[map]
static NETNS_CGROUPS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(NETNS_CGROUP_ENTRIES, 0);

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u16 = 6;

#[inline(always)]
fn config() -> TcpConfig {
    // SAFETY: our own .rodata global, rewritten by the loader.
    unsafe { core::ptr::read_volatile(&TCP_CONFIG) }
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let _ = try_set_state(&ctx);
    0
}

#[tracepoint]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    let _ = try_retransmit(&ctx);
    0
}

/// Reads a field at a format-file offset.
#[inline(always)]
fn field<T>(ctx: &TracePointContext, offset: u32) -> Result<T, i32> {
    // SAFETY: offsets come from the tracepoint's format file.
    unsafe { ctx.read_at::<T>(offset as usize) }
}

fn try_set_state(ctx: &TracePointContext) -> Result<(), i32> {
    let cfg = config();
    if cfg.state_new_off == OFFSET_UNKNOWN {
        return Ok(());
    }
    if field::<u16>(ctx, cfg.state_protocol_off)? != IPPROTO_TCP {
        return Ok(());
    }
    let old = field::<i32>(ctx, cfg.state_old_off)? as u32;
    let new = field::<i32>(ctx, cfg.state_new_off)? as u32;
    let outcome = if old == cfg.tcp_close && new == cfg.tcp_syn_sent {
        Outcome::Attempt
    } else if old == cfg.tcp_syn_sent && new == cfg.tcp_established {
        Outcome::Established
    } else if old == cfg.tcp_syn_sent && new == cfg.tcp_close {
        Outcome::Failed
    } else {
        return Ok(());
    };
    let Some(key) = key_of(
        ctx,
        &cfg,
        cfg.state_skaddr_off,
        cfg.state_family_off,
        cfg.state_dport_off,
        cfg.state_daddr_off,
        cfg.state_daddr_v6_off,
    )?
    else {
        return Ok(());
    };
    if matches!(outcome, Outcome::Attempt) && key.netns != NETNS_UNKNOWN {
        remember_cgroup(key.netns);
    }
    record(&key, outcome);
    Ok(())
}

/// Records the current task's cgroup for `netns` (a connect starts in the caller's
/// context). Written only when it differs: a lookup is cheaper than an LRU update.
#[inline(always)]
fn remember_cgroup(netns: u32) {
    // SAFETY: no preconditions; 0 where cgroups are not built in.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    if cgroup == 0 {
        return;
    }
    // SAFETY: the value is copied out at once.
    let known = unsafe { NETNS_CGROUPS.get(&netns) }.copied();
    if known != Some(cgroup) {
        let _ = NETNS_CGROUPS.insert(&netns, &cgroup, 0);
    }
}

fn try_retransmit(ctx: &TracePointContext) -> Result<(), i32> {
    let cfg = config();
    if cfg.retrans_state_off == OFFSET_UNKNOWN {
        return Ok(());
    }
    let state = field::<i32>(ctx, cfg.retrans_state_off)? as u32;
    let Some(key) = key_of(
        ctx,
        &cfg,
        cfg.retrans_skaddr_off,
        cfg.retrans_family_off,
        cfg.retrans_dport_off,
        cfg.retrans_daddr_off,
        cfg.retrans_daddr_v6_off,
    )?
    else {
        return Ok(());
    };
    let outcome = if state == cfg.tcp_syn_sent {
        Outcome::SynRetransmit
    } else {
        Outcome::Retransmit
    };
    record(&key, outcome);
    Ok(())
}

/// The destination key, or `None` if the socket is in another namespace than the filter.
#[inline(always)]
fn key_of(
    ctx: &TracePointContext,
    cfg: &TcpConfig,
    skaddr_off: u32,
    family_off: u32,
    dport_off: u32,
    daddr_off: u32,
    daddr_v6_off: u32,
) -> Result<Option<ConnectKey>, i32> {
    let netns = netns_of(ctx, cfg, skaddr_off);
    if cfg.filter_netns != 0 && netns != cfg.filter_netns {
        return Ok(None);
    }
    let mut key = ConnectKey {
        addr: [0; 16],
        netns,
        port: field::<u16>(ctx, dport_off)?,
        family: 0,
        _pad: 0,
    };
    if family_off == OFFSET_UNKNOWN {
        // Older kernels (5.10) have no `family` in tcp_retransmit_skb; they store an IPv4
        // socket's addresses v4-mapped (::ffff:a.b.c.d) in `daddr_v6`. Compared as words:
        // a byte-slice comparison would need memcmp.
        let words: [u32; 4] = field(ctx, daddr_v6_off)?;
        if words[0] == 0 && words[1] == 0 && words[2] == u32::from_ne_bytes([0, 0, 0xff, 0xff]) {
            key.family = 4;
            key.addr[..4].copy_from_slice(&words[3].to_ne_bytes());
        } else {
            key.family = 6;
            key.addr = field(ctx, daddr_v6_off)?;
        }
        return Ok(Some(key));
    }
    match field::<u16>(ctx, family_off)? {
        AF_INET => {
            key.family = 4;
            let addr: [u8; 4] = field(ctx, daddr_off)?;
            key.addr[..4].copy_from_slice(&addr);
        }
        AF_INET6 => {
            key.family = 6;
            key.addr = field(ctx, daddr_v6_off)?;
        }
        _ => return Ok(None),
    }
    Ok(Some(key))
}

#[inline(always)]
fn netns_of(ctx: &TracePointContext, cfg: &TcpConfig, skaddr_off: u32) -> u32 {
    if cfg.sk_net_off == OFFSET_UNKNOWN || cfg.net_inum_off == OFFSET_UNKNOWN {
        return NETNS_UNKNOWN;
    }
    let Ok(sk) = field::<u64>(ctx, skaddr_off) else {
        return NETNS_UNKNOWN;
    };
    // SAFETY: bpf_probe_read_kernel tolerates any address.
    let net =
        unsafe { bpf_probe_read_kernel((sk + cfg.sk_net_off as u64) as *const u64) }.unwrap_or(0);
    if net == 0 {
        return NETNS_UNKNOWN;
    }
    // SAFETY: as above.
    unsafe { bpf_probe_read_kernel((net + cfg.net_inum_off as u64) as *const u32) }
        .unwrap_or(NETNS_UNKNOWN)
}

#[derive(Clone, Copy)]
enum Outcome {
    Attempt,
    Established,
    Failed,
    Retransmit,
    SynRetransmit,
}

#[inline(always)]
fn apply(stats: &mut ConnectStats, outcome: Outcome, now: u64) {
    match outcome {
        Outcome::Attempt => stats.attempts += 1,
        Outcome::Established => {
            stats.established += 1;
            stats.last_established_ns = now;
        }
        Outcome::Failed => {
            stats.failed += 1;
            stats.last_failed_ns = now;
        }
        Outcome::Retransmit => stats.retransmits += 1,
        Outcome::SynRetransmit => {
            stats.retransmits += 1;
            stats.syn_retransmits += 1;
        }
    }
}

#[inline(always)]
fn record(key: &ConnectKey, outcome: Outcome) {
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // A full LRU map evicts, so an insert only fails in a race already retried.
    let _ = update(&CONNECTS, key, |stats: &mut ConnectStats| {
        apply(stats, outcome, now)
    });
}
