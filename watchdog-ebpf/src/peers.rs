//! TC ingress/egress: packets and bytes per remote address and interface, and when each
//! was last seen, in a bounded LRU map. On the underlay the outer header is counted, so
//! the peer of encapsulated traffic (VXLAN, Geneve, WireGuard) is the tunnel endpoint.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_NOEXIST, TC_ACT_UNSPEC, bpf_hdr_start_off::BPF_HDR_START_NET},
    helpers::{
        bpf_ktime_get_ns,
        generated::{bpf_ktime_get_coarse_ns, bpf_skb_load_bytes_relative},
    },
    macros::{classifier, map},
    maps::{LruPerCpuHashMap, PerCpuArray},
    programs::TcContext,
};
use watchdog_common::{PEER_MAP_ENTRIES, PeerKey, PeerStats, TcConfig, encap, peer_stat};

#[unsafe(no_mangle)]
static TC_CONFIG: TcConfig = TcConfig::DEFAULT;

/// Per-CPU values: no atomics on the hot path; userspace sums counters and takes the
/// latest timestamps across CPUs.
#[map]
static PEERS: LruPerCpuHashMap<PeerKey, PeerStats> =
    LruPerCpuHashMap::with_max_entries(PEER_MAP_ENTRIES, 0);

#[map]
static PEER_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(peer_stat::COUNT, 0);

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const IPPROTO_UDP: u8 = 17;

/// Counts without ever changing the packet's fate (TC_ACT_UNSPEC = TCX_NEXT).
#[classifier]
pub fn peers_egress(ctx: TcContext) -> i32 {
    observe(&ctx, true);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn peers_ingress(ctx: TcContext) -> i32 {
    observe(&ctx, false);
    TC_ACT_UNSPEC
}

/// Loads `N` bytes at `offset` from the network header (whatever the link layer is).
#[inline(always)]
fn load_net<const N: usize>(ctx: &TcContext, offset: u32) -> Option<[u8; N]> {
    let mut buf = [0u8; N];
    // SAFETY: the helper writes at most N bytes into buf.
    let rc = unsafe {
        bpf_skb_load_bytes_relative(
            ctx.skb.skb as *const c_void,
            offset,
            buf.as_mut_ptr() as *mut c_void,
            N as u32,
            BPF_HDR_START_NET,
        )
    };
    (rc == 0).then_some(buf)
}

/// The time for last-seen stamps: the coarse (jiffies) clock where the kernel has it
/// (5.11+, chosen by the loader), a few times cheaper than the precise one.
#[inline(always)]
fn now(config: &TcConfig) -> u64 {
    if config.coarse_clock != 0 {
        // SAFETY: no preconditions; the loader only sets coarse_clock where it exists.
        unsafe { bpf_ktime_get_coarse_ns() }
    } else {
        // SAFETY: no preconditions.
        unsafe { bpf_ktime_get_ns() }
    }
}

#[inline(always)]
fn config() -> TcConfig {
    // SAFETY: read of our own .rodata global, rewritten by the loader.
    unsafe { core::ptr::read_volatile(&TC_CONFIG) }
}

#[inline(always)]
fn encap_of(config: &TcConfig, src_port: u16, dst_port: u16) -> u32 {
    let mut bits = 0;
    for port in [src_port, dst_port] {
        bits |= match port {
            8472 | 4789 => encap::VXLAN,
            6081 => encap::GENEVE,
            _ => 0,
        };
    }
    for port in config.wireguard_ports {
        if port != 0 && (port == src_port || port == dst_port) {
            bits |= encap::WIREGUARD;
        }
    }
    bits
}

#[inline(always)]
fn observe(ctx: &TcContext, egress: bool) {
    let config = config();
    // skb->protocol is big-endian in the low 16 bits.
    let protocol = u16::from_be(ctx.skb.protocol() as u16);
    // SAFETY: the context pointer is valid for the program's run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let mut key = PeerKey {
        addr: [0; 16],
        ifindex,
        family: 0,
        _pad: [0; 3],
    };
    let mut encap_bits = 0;
    match protocol {
        ETH_P_IP => {
            // One helper call for the IP header and, for a 20-byte header, the UDP ports.
            let (header, ports) = match load_net::<24>(ctx, 0) {
                Some(bytes) => (bytes, true),
                None => match load_net::<20>(ctx, 0) {
                    Some(short) => {
                        let mut bytes = [0u8; 24];
                        bytes[..20].copy_from_slice(&short);
                        (bytes, false)
                    }
                    None => return,
                },
            };
            let at = if egress { 16 } else { 12 };
            key.family = 4;
            key.addr[..4].copy_from_slice(&header[at..at + 4]);
            // Fragments after the first carry no UDP header.
            let first_fragment = header[6] & 0x1f == 0 && header[7] == 0;
            if header[9] == IPPROTO_UDP && first_fragment {
                let header_len = u32::from(header[0] & 0x0f) * 4;
                let udp = if header_len == 20 && ports {
                    Some([header[20], header[21], header[22], header[23]])
                } else {
                    load_net::<4>(ctx, header_len)
                };
                if let Some(udp) = udp {
                    encap_bits = encap_of(
                        &config,
                        u16::from_be_bytes([udp[0], udp[1]]),
                        u16::from_be_bytes([udp[2], udp[3]]),
                    );
                }
            }
        }
        ETH_P_IPV6 => {
            let Some(header) = load_net::<40>(ctx, 0) else {
                return;
            };
            let at = if egress { 24 } else { 8 };
            key.family = 6;
            key.addr.copy_from_slice(&header[at..at + 16]);
            if header[6] == IPPROTO_UDP
                && let Some(udp) = load_net::<4>(ctx, 40)
            {
                encap_bits = encap_of(
                    &config,
                    u16::from_be_bytes([udp[0], udp[1]]),
                    u16::from_be_bytes([udp[2], udp[3]]),
                );
            }
        }
        _ => return,
    }
    record(&key, ctx.skb.len() as u64, egress, encap_bits, now(&config));
}

#[inline(always)]
fn record(key: &PeerKey, bytes: u64, egress: bool, encap_bits: u32, now: u64) {
    if let Some(stats) = PEERS.get_ptr_mut(key) {
        // SAFETY: this CPU's value; nothing else writes it while the program runs.
        unsafe { update(stats, bytes, egress, encap_bits, now) };
        return;
    }
    let mut fresh = PeerStats::default();
    if egress {
        fresh.tx_packets = 1;
        fresh.tx_bytes = bytes;
        fresh.last_tx_ns = now;
    } else {
        fresh.rx_packets = 1;
        fresh.rx_bytes = bytes;
        fresh.last_rx_ns = now;
    }
    fresh.encap = encap_bits;
    if PEERS.insert(key, &fresh, BPF_NOEXIST as u64).is_ok() {
        bump(peer_stat::INSERTS);
        return;
    }
    // Another CPU inserted the peer first (which zeroes this CPU's slot): count into it.
    match PEERS.get_ptr_mut(key) {
        // SAFETY: as above.
        Some(stats) => unsafe { update(stats, bytes, egress, encap_bits, now) },
        None => bump(peer_stat::INSERT_FAILED),
    }
}

/// # Safety
/// `stats` must point at a live map value.
#[inline(always)]
unsafe fn update(stats: *mut PeerStats, bytes: u64, egress: bool, encap_bits: u32, now: u64) {
    unsafe {
        let (packets, octets, last) = if egress {
            (
                &raw mut (*stats).tx_packets,
                &raw mut (*stats).tx_bytes,
                &raw mut (*stats).last_tx_ns,
            )
        } else {
            (
                &raw mut (*stats).rx_packets,
                &raw mut (*stats).rx_bytes,
                &raw mut (*stats).last_rx_ns,
            )
        };
        *packets += 1;
        *octets += bytes;
        *last = now;
        if encap_bits != 0 && (*stats).encap & encap_bits != encap_bits {
            (*stats).encap |= encap_bits;
        }
    }
}

#[inline(always)]
fn bump(index: u32) {
    if let Some(value) = PEER_STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot.
        unsafe { *value += 1 };
    }
}
