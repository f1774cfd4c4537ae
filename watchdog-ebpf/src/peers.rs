//! TC ingress/egress: packets and bytes per remote address and interface, and when each
//! was last seen, in a bounded LRU map. On the underlay the outer header is counted, so
//! the peer of encapsulated traffic (VXLAN, Geneve, WireGuard) is the tunnel endpoint.
//!
//! The hot path is a per-CPU cache in front of the LRU map: a packet to a peer already in
//! its cache slot only adds to the slot (no hash map lookup). A packet of another peer
//! hashing to the same slot first adds the slot's counts to `PEERS` (a flush). Userspace
//! reads both and adds them up. Before it reads, it sets `PEER_READING` and waits for an
//! RCU grace period (TC programs run inside RCU read-side sections), so every program run
//! that could have missed the flag is over; until it clears the flag, programs leave the
//! slots' peers in place (a packet that would flush goes to `PEERS` directly), and a
//! reading never sees counts on their way from a slot to the map.
//!
//! On ingress, a definitive ICMP error (host or network unreachable, administratively
//! prohibited) is also recorded under the destination its embedded original header names,
//! in `ICMP_ERRORS`: the traffic's own errors name a dead destination without a probe. Other
//! packets pay one compare of the IP protocol for it.
//!
//! Headers are read straight from the packet where the interface's link-layer header
//! length is known (`LINK_HEADER`); it is learned from packets read through
//! `bpf_skb_load_bytes_relative`, which works on any device and stays the fallback.

use core::{ffi::c_void, mem::MaybeUninit};

use aya_ebpf::{
    bindings::{BPF_NOEXIST, TC_ACT_UNSPEC, bpf_hdr_start_off::BPF_HDR_START_NET},
    helpers::{
        bpf_ktime_get_ns,
        generated::{bpf_ktime_get_coarse_ns, bpf_skb_load_bytes_relative},
    },
    macros::{classifier, map},
    maps::{Array, LruHashMap, LruPerCpuHashMap, PerCpuArray},
    programs::TcContext,
};
use watchdog_common::{
    ICMP_ERROR_ENTRIES, IcmpErrorKey, IcmpErrorStats, PEER_CACHE_SLOTS, PEER_MAP_ENTRIES, PeerKey,
    PeerSlot, PeerStats, TcConfig, encap,
    names::{globals, maps, programs},
    peer_cache_slot, peer_stat,
};

named!(TC_CONFIG, globals::TC_CONFIG);
named!(PEERS, maps::PEERS);
named!(PEER_CACHE, maps::PEER_CACHE);
named!(PEER_READING, maps::PEER_READING);
named!(PEER_STATS, maps::PEER_STATS);
named!(LINK_HEADER, maps::LINK_HEADER);
named!(ICMP_ERRORS, maps::ICMP_ERRORS);
named!(peers_egress, programs::PEERS_EGRESS);
named!(peers_ingress, programs::PEERS_INGRESS);

#[unsafe(no_mangle)]
static TC_CONFIG: TcConfig = TcConfig::DEFAULT;

/// Per-CPU values: no atomics on the hot path; userspace sums counters and takes the
/// latest timestamps across CPUs.
#[map]
static PEERS: LruPerCpuHashMap<PeerKey, PeerStats> =
    LruPerCpuHashMap::with_max_entries(PEER_MAP_ENTRIES, 0);

/// The per-CPU cache in front of `PEERS` (slot: [`peer_cache_slot`] of the key).
#[map]
static PEER_CACHE: PerCpuArray<PeerSlot> = PerCpuArray::with_max_entries(PEER_CACHE_SLOTS, 0);

/// Non-zero while userspace reads `PEERS` and `PEER_CACHE`: no flushes then.
#[map]
static PEER_READING: Array<u32> = Array::with_max_entries(1, 0);

#[map]
static PEER_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(peer_stat::COUNT, 0);

/// Link-layer header length per interface (slot: ifindex modulo the size), learned by
/// the programs: `ifindex << 32 | length`, 0 or 14 bytes (IP devices such as WireGuard
/// have none). Where it is known, headers are read from the packet directly instead of
/// through `bpf_skb_load_bytes_relative`.
#[map]
static LINK_HEADER: Array<u64> = Array::with_max_entries(LINK_HEADER_SLOTS, 0);

const LINK_HEADER_SLOTS: u32 = 1024;

/// Definitive ICMP errors by the destination they were about (ingress only). One shared
/// value per destination: errors are rare, and a racing update only loses a count.
#[map]
static ICMP_ERRORS: LruHashMap<IcmpErrorKey, IcmpErrorStats> =
    LruHashMap::with_max_entries(ICMP_ERROR_ENTRIES, 0);
const ETH_HLEN: usize = 14;

/// `skb->protocol` values as the context holds them (network byte order in the low bits).
const ETH_P_IP: u32 = 0x0800u16.to_be() as u32;
const ETH_P_IPV6: u32 = 0x86DDu16.to_be() as u32;
const IPPROTO_UDP: u32 = 17;
const IPPROTO_ICMP: u32 = 1;
const IPPROTO_ICMPV6: u64 = 58;

/// ICMPv4 destination unreachable (type 3) codes that say the destination cannot be
/// reached: network (0) and host (1) unreachable, network (9) and host (10)
/// administratively prohibited, communication administratively prohibited (13).
const ICMP_DEFINITIVE: u32 = 1 << 0 | 1 << 1 | 1 << 9 | 1 << 10 | 1 << 13;
/// ICMPv6 destination unreachable (type 1) codes: no route (0), administratively
/// prohibited (1), address unreachable (3).
const ICMPV6_DEFINITIVE: u32 = 1 << 0 | 1 << 1 | 1 << 3;

/// A key as three 64-bit words (see [`PeerKey::words`]).
type Key = [u64; 3];

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

/// Loads `len` bytes at `offset` from the network header (whatever the link layer is) into
/// `out`; false if the packet is shorter.
#[inline(always)]
fn load_net(ctx: &TcContext, offset: u32, out: *mut c_void, len: u32) -> bool {
    // SAFETY: the helper writes at most `len` bytes into out (and zeroes them on failure);
    // callers pass buffers of at least `len` bytes.
    let rc = unsafe {
        bpf_skb_load_bytes_relative(
            ctx.skb.skb as *const c_void,
            offset,
            out,
            len,
            BPF_HDR_START_NET,
        )
    };
    rc == 0
}

#[inline(always)]
fn config() -> &'static TcConfig {
    &TC_CONFIG
}

/// A field of our own .rodata global, rewritten by the loader: volatile so the compiler
/// cannot assume the compile-time default (the verifier still sees the loaded value).
macro_rules! setting {
    ($field:ident) => {
        // SAFETY: an aligned read of a field of a static.
        unsafe { core::ptr::read_volatile(&raw const config().$field) }
    };
}

/// The time for last-seen stamps: the coarse (jiffies) clock where the kernel has it
/// (5.11+, chosen by the loader), a few times cheaper than the precise one.
#[inline(always)]
fn now() -> u64 {
    if setting!(coarse_clock) != 0 {
        // SAFETY: no preconditions; the loader only sets coarse_clock where it exists.
        unsafe { bpf_ktime_get_coarse_ns() }
    } else {
        // SAFETY: no preconditions.
        unsafe { bpf_ktime_get_ns() }
    }
}

/// Encapsulation bits of a UDP datagram whose first header word (source and destination
/// port, network byte order) is `ports`, as loaded little-endian.
#[inline(always)]
fn encap_of(ports: u32) -> u32 {
    let src = ports as u16;
    let dst = (ports >> 16) as u16;
    let mut bits = 0;
    for port in [src, dst] {
        if port == 8472u16.to_be() || port == 4789u16.to_be() {
            bits |= encap::VXLAN;
        } else if port == 6081u16.to_be() {
            bits |= encap::GENEVE;
        }
    }
    let wireguard: [u16; 4] = setting!(wireguard_ports);
    for port in wireguard {
        let port = port.to_be();
        if port != 0 && (port == src || port == dst) {
            bits |= encap::WIREGUARD;
        }
    }
    bits
}

#[inline(always)]
fn observe(ctx: &TcContext, egress: bool) {
    let skb = ctx.skb.skb;
    // SAFETY: the context pointer is valid for the program's run.
    let (protocol, ifindex, len) = unsafe { ((*skb).protocol, (*skb).ifindex, (*skb).len) };
    let parsed = match protocol {
        ETH_P_IP => ipv4(ctx, egress, ifindex),
        ETH_P_IPV6 => ipv6(ctx, egress, ifindex),
        _ => return,
    };
    let Some((key, udp_ports)) = parsed else {
        return;
    };
    record(&key, u64::from(len), egress, udp_ports.map_or(0, encap_of));
}

/// Loads a `T` from packet data at address `at`, which the caller checked against
/// `data_end`.
///
/// Header fields in packets are often not aligned (an IPv4 address after a 14-byte
/// Ethernet header); `read_unaligned` would split every load into single bytes on BPF. A
/// full-width load is what C programs do and what the verifier accepts for packet data on
/// CPUs that handle unaligned access (x86-64, arm64: the kernel's
/// HAVE_EFFICIENT_UNALIGNED_ACCESS); the JIT emits one instruction.
///
/// # Safety
/// `at..at + size_of::<T>()` must be inside the packet's linear data.
#[inline(always)]
unsafe fn packet<T: Copy>(at: usize) -> T {
    // SAFETY: in bounds per the caller; see above for alignment.
    unsafe { core::ptr::read(at as *const T) }
}

/// The network header in the packet's linear data, with at least `need` bytes, where the
/// interface's link-layer header length is known and the packet agrees with it.
#[inline(always)]
fn direct(ctx: &TcContext, ifindex: u32, protocol: u32, need: usize) -> Option<*const u8> {
    let known = *LINK_HEADER.get(ifindex % LINK_HEADER_SLOTS)?;
    if (known >> 32) as u32 != ifindex {
        return None;
    }
    let (data, end) = (ctx.data(), ctx.data_end());
    if known as u32 == ETH_HLEN as u32 {
        if data + ETH_HLEN + need > end {
            return None;
        }
        // SAFETY: within the bounds checked above.
        let ethertype: u16 = unsafe { packet(data + 12) };
        (u32::from(ethertype) == protocol).then_some((data + ETH_HLEN) as *const u8)
    } else {
        if data + need > end {
            return None;
        }
        let version = if protocol == ETH_P_IP { 4 } else { 6 };
        // SAFETY: within the bounds checked above.
        (unsafe { packet::<u8>(data) } >> 4 == version).then_some(data as *const u8)
    }
}

/// Learns the interface's link-layer header length from a packet whose network header
/// was loaded through the helper: `expected` are the `N` words at `at` in the network
/// header; the length is learned when exactly one of 0 and 14 finds them in the packet.
#[inline(always)]
fn learn<const N: usize>(ctx: &TcContext, ifindex: u32, at: usize, expected: &[u64; N]) {
    let (data, end) = (ctx.data(), ctx.data_end());
    let mut found = None;
    for length in [0, ETH_HLEN] {
        let start = data + length + at;
        if start + N * 8 > end {
            return;
        }
        let mut same = true;
        for (i, word) in expected.iter().enumerate() {
            // SAFETY: within the bounds checked above.
            same &= unsafe { packet::<u64>(start + i * 8) } == *word;
        }
        if same {
            if found.is_some() {
                return; // both: this packet cannot tell
            }
            found = Some(length);
        }
    }
    let Some(length) = found else {
        return;
    };
    let entry = u64::from(ifindex) << 32 | length as u64;
    if let Some(slot) = LINK_HEADER.get_ptr_mut(ifindex % LINK_HEADER_SLOTS)
        // SAFETY: a map value; a racing writer stores the same kind of word.
        && unsafe { *slot } != entry
    {
        unsafe { *slot = entry };
    }
}

/// The key of an IPv4 packet and, for the first fragment of a UDP datagram, its ports.
#[inline(always)]
fn ipv4(ctx: &TcContext, egress: bool, ifindex: u32) -> Option<(Key, Option<u32>)> {
    let (first, second, third, src, dst, after) =
        if let Some(header) = direct(ctx, ifindex, ETH_P_IP, 24) {
            // SAFETY: direct() checked 24 bytes.
            let word = |i: usize| unsafe { packet::<u32>(header as usize + i * 4) };
            (word(0), word(1), word(2), word(3), word(4), Some(word(5)))
        } else {
            // The IP header and, for a 20-byte header, the UDP ports: one helper call.
            let mut header = MaybeUninit::<[u32; 6]>::uninit();
            let buf = header.as_mut_ptr() as *mut c_void;
            let after = load_net(ctx, 0, buf, 24);
            if !after && !load_net(ctx, 0, buf, 20) {
                return None;
            }
            let words = header.as_ptr() as *const u32;
            // SAFETY: the first 20 bytes were loaded, all 24 if `after`.
            let (src, dst) = unsafe { (*words.add(3), *words.add(4)) };
            learn(ctx, ifindex, 12, &[u64::from(src) | u64::from(dst) << 32]);
            unsafe {
                (
                    *words,
                    *words.add(1),
                    *words.add(2),
                    src,
                    dst,
                    after.then(|| *words.add(5)),
                )
            }
        };
    let key = [
        u64::from(if egress { dst } else { src }),
        0,
        u64::from(ifindex) | 4 << 32,
    ];
    // Fragments after the first carry no UDP header: offset bits of bytes 6-7.
    let first_fragment = (second >> 16) & 0xff1f == 0;
    let protocol = (third >> 8) & 0xff;
    if protocol != IPPROTO_UDP || !first_fragment {
        if !egress && protocol == IPPROTO_ICMP && first_fragment {
            icmp_error_v4(ctx, (first & 0x0f) * 4, src);
        }
        return Some((key, None));
    }
    let header_len = (first & 0x0f) * 4;
    let ports = match after {
        Some(ports) if header_len == 20 => Some(ports),
        _ => {
            let mut ports = MaybeUninit::<u32>::uninit();
            // SAFETY: loaded if the helper succeeded.
            load_net(ctx, header_len, ports.as_mut_ptr() as *mut c_void, 4)
                .then(|| unsafe { ports.assume_init() })
        }
    };
    Some((key, ports))
}

/// The key of an IPv6 packet and, for a UDP datagram right after the fixed header, its
/// ports.
#[inline(always)]
fn ipv6(ctx: &TcContext, egress: bool, ifindex: u32) -> Option<(Key, Option<u32>)> {
    let at = if egress { 3 } else { 1 };
    let (first, key, after) = if let Some(header) = direct(ctx, ifindex, ETH_P_IPV6, 44) {
        // SAFETY: direct() checked 44 bytes.
        let word = |i: usize| unsafe { packet::<u64>(header as usize + i * 8) };
        // SAFETY: as above.
        let after = unsafe { packet::<u32>(header as usize + 40) };
        let key = [word(at), word(at + 1), u64::from(ifindex) | 6 << 32];
        (word(0), key, Some(after))
    } else {
        let mut header = MaybeUninit::<[u64; 5]>::uninit();
        if !load_net(ctx, 0, header.as_mut_ptr() as *mut c_void, 40) {
            return None;
        }
        // SAFETY: loaded.
        let header = unsafe { header.assume_init() };
        learn(
            ctx,
            ifindex,
            8,
            &[header[1], header[2], header[3], header[4]],
        );
        let key = [header[at], header[at + 1], u64::from(ifindex) | 6 << 32];
        (header[0], key, None)
    };
    let next = (first >> 48) & 0xff;
    if next != u64::from(IPPROTO_UDP) {
        if !egress && next == IPPROTO_ICMPV6 {
            // Ingress: the key is the source.
            icmp_error_v6(ctx, [key[0], key[1]]);
        }
        return Some((key, None));
    }
    let ports = after.or_else(|| {
        let mut ports = MaybeUninit::<u32>::uninit();
        // SAFETY: loaded if the helper succeeded.
        load_net(ctx, 40, ports.as_mut_ptr() as *mut c_void, 4)
            .then(|| unsafe { ports.assume_init() })
    });
    Some((key, ports))
}

/// Records an ICMPv4 error from `from` whose ICMP header is `at` bytes into the packet, if
/// it is a definitive destination unreachable (cold: only ICMP packets come here).
#[inline(always)]
fn icmp_error_v4(ctx: &TcContext, at: u32, from: u32) {
    // Type, code, checksum, unused; then the original IP header, its destination 16 bytes in.
    let mut buf = MaybeUninit::<[u32; 7]>::uninit();
    if !load_net(ctx, at, buf.as_mut_ptr() as *mut c_void, 28) {
        return;
    }
    // SAFETY: loaded.
    let words = unsafe { buf.assume_init() };
    let (icmp_type, code) = (words[0] & 0xff, (words[0] >> 8) & 0xff);
    if icmp_type != 3 || code >= 32 || (ICMP_DEFINITIVE >> code) & 1 == 0 {
        return;
    }
    if (words[2] & 0xff) >> 4 != 4 {
        return; // not an IPv4 header inside
    }
    let dst = [u64::from(words[6]), 0];
    record_icmp_error(dst, 4, [u64::from(from), 0], icmp_type | code << 8);
}

/// Records an ICMPv6 error from `from` right after the fixed header, if it is a definitive
/// destination unreachable.
#[inline(always)]
fn icmp_error_v6(ctx: &TcContext, from: [u64; 2]) {
    // Type, code, checksum, unused; then the original IPv6 header, its destination 24 in.
    let mut buf = MaybeUninit::<[u64; 6]>::uninit();
    if !load_net(ctx, 40, buf.as_mut_ptr() as *mut c_void, 48) {
        return;
    }
    // SAFETY: loaded.
    let words = unsafe { buf.assume_init() };
    let (icmp_type, code) = ((words[0] & 0xff) as u32, ((words[0] >> 8) & 0xff) as u32);
    if icmp_type != 1 || code >= 32 || (ICMPV6_DEFINITIVE >> code) & 1 == 0 {
        return;
    }
    if (words[1] & 0xff) >> 4 != 6 {
        return; // not an IPv6 header inside
    }
    record_icmp_error([words[4], words[5]], 6, from, icmp_type | code << 8);
}

/// Adds one error about `dst` (two words, as in a [`PeerKey`]) to `ICMP_ERRORS`; `what`
/// is its type and code (`type | code << 8`).
#[inline(always)]
fn record_icmp_error(dst: [u64; 2], family: u64, from: [u64; 2], what: u32) {
    let key: [u64; 3] = [dst[0], dst[1], family];
    // SAFETY: IcmpErrorKey is three 64-bit words (repr(C), align 8, size 24): the address,
    // then the family in the low byte.
    let key = unsafe { &*(&key as *const [u64; 3] as *const IcmpErrorKey) };
    let now = now();
    let what = u64::from(what);
    if let Some(entry) = ICMP_ERRORS.get_ptr_mut(key) {
        // IcmpErrorStats as five words: count, last_ns, from (two), type | code << 8.
        let words = entry as *mut [u64; 5];
        // SAFETY: a live map value of 40 bytes, align 8.
        unsafe {
            (*words)[0] += 1;
            (*words)[1] = now;
            (*words)[2] = from[0];
            (*words)[3] = from[1];
            (*words)[4] = what;
        }
        return;
    }
    let value: [u64; 5] = [1, now, from[0], from[1], what];
    // SAFETY: as above.
    let value = unsafe { &*(&value as *const [u64; 5] as *const IcmpErrorStats) };
    let _ = ICMP_ERRORS.insert(key, value, 0);
}

/// Counts one packet of `bytes` to or from `key`.
#[inline(always)]
fn record(key: &Key, bytes: u64, egress: bool, encap_bits: u32) {
    let now = now();
    if setting!(peer_cache) == 0 {
        merge_packet(key, bytes, egress, encap_bits, now);
        return;
    }
    let Some(slot) = PEER_CACHE.get_ptr_mut(peer_cache_slot(*key)) else {
        return;
    };
    // SAFETY: this CPU's slot; no other program runs on this CPU while we do.
    unsafe {
        let cached = slot as *mut Key;
        if (*cached)[0] == key[0] && (*cached)[1] == key[1] && (*cached)[2] == key[2] {
            add_packet(&raw mut (*slot).stats, bytes, egress, encap_bits, now);
            return;
        }
        if reading() {
            // Leave the slot's peer where userspace is reading it.
            merge_packet(key, bytes, egress, encap_bits, now);
            return;
        }
        // The slot holds another peer (or none): move its counts to the map, take it over.
        if (*cached)[2] != 0 {
            merge(&*cached, &(*slot).stats);
        }
        *cached = *key;
        fill(&raw mut (*slot).stats, bytes, egress, encap_bits, now);
    }
}

#[inline(always)]
fn reading() -> bool {
    PEER_READING.get(0).is_some_and(|flag| *flag != 0)
}

/// Merges one packet into `PEERS` directly (no cache, or a reading in progress).
#[inline(always)]
fn merge_packet(key: &Key, bytes: u64, egress: bool, encap_bits: u32, now: u64) {
    let mut stats = MaybeUninit::<PeerStats>::uninit();
    // SAFETY: fill writes every field.
    unsafe {
        fill(stats.as_mut_ptr(), bytes, egress, encap_bits, now);
        merge(key, &*stats.as_ptr());
    }
}

/// Sets `stats` to the counts of one packet. Volatile stores: LLVM would otherwise merge
/// the zeroes into a call to a byte-by-byte `memset` function.
///
/// # Safety
/// `stats` must be valid for writes.
#[inline(always)]
unsafe fn fill(stats: *mut PeerStats, bytes: u64, egress: bool, encap_bits: u32, now: u64) {
    // SAFETY: valid per the caller.
    unsafe {
        let tx = &raw mut (*stats).tx_packets;
        let rx = &raw mut (*stats).rx_packets;
        let (this, other) = if egress { (tx, rx) } else { (rx, tx) };
        // Packets, then bytes a word later; the last-seen times are further on.
        this.write_volatile(1);
        this.add(1).write_volatile(bytes);
        other.write_volatile(0);
        other.add(1).write_volatile(0);
        let (this, other) = if egress {
            (&raw mut (*stats).last_tx_ns, &raw mut (*stats).last_rx_ns)
        } else {
            (&raw mut (*stats).last_rx_ns, &raw mut (*stats).last_tx_ns)
        };
        this.write_volatile(now);
        other.write_volatile(0);
        (&raw mut (*stats).encap).write_volatile(encap_bits);
        (&raw mut (*stats)._pad).write_volatile(0);
    }
}

/// # Safety
/// `stats` must point at this CPU's live slot or map value.
#[inline(always)]
unsafe fn add_packet(stats: *mut PeerStats, bytes: u64, egress: bool, encap_bits: u32, now: u64) {
    unsafe {
        if egress {
            (*stats).tx_packets += 1;
            (*stats).tx_bytes += bytes;
            (*stats).last_tx_ns = now;
        } else {
            (*stats).rx_packets += 1;
            (*stats).rx_bytes += bytes;
            (*stats).last_rx_ns = now;
        }
        if ((*stats).encap | encap_bits) != (*stats).encap {
            (*stats).encap |= encap_bits;
        }
    }
}

/// Adds `stats` to `key`'s entry in `PEERS`, inserting it if new. Off the hot path: one
/// BPF function instead of a copy at every caller.
#[inline(never)]
fn merge(key: &Key, stats: &PeerStats) {
    // SAFETY: PeerKey is three 64-bit words (repr(C), align 8, size 24).
    let key = unsafe { &*(key as *const Key as *const PeerKey) };
    if let Some(entry) = PEERS.get_ptr_mut(key) {
        // SAFETY: this CPU's value; nothing else writes it while the program runs.
        unsafe { add(entry, stats) };
        return;
    }
    if PEERS.insert(key, stats, BPF_NOEXIST as u64).is_ok() {
        bump(peer_stat::INSERTS, 1);
        return;
    }
    // Another CPU inserted the peer first (which zeroes this CPU's value): count into it.
    match PEERS.get_ptr_mut(key) {
        // SAFETY: as above.
        Some(entry) => unsafe { add(entry, stats) },
        None => bump(
            peer_stat::INSERT_FAILED,
            stats.tx_packets + stats.rx_packets,
        ),
    }
}

/// # Safety
/// `entry` must point at this CPU's live map value.
#[inline(always)]
unsafe fn add(entry: *mut PeerStats, stats: &PeerStats) {
    unsafe {
        (*entry).tx_packets += stats.tx_packets;
        (*entry).tx_bytes += stats.tx_bytes;
        (*entry).rx_packets += stats.rx_packets;
        (*entry).rx_bytes += stats.rx_bytes;
        if stats.last_tx_ns > (*entry).last_tx_ns {
            (*entry).last_tx_ns = stats.last_tx_ns;
        }
        if stats.last_rx_ns > (*entry).last_rx_ns {
            (*entry).last_rx_ns = stats.last_rx_ns;
        }
        (*entry).encap |= stats.encap;
    }
}

#[inline(always)]
fn bump(index: u32, by: u64) {
    if let Some(value) = PEER_STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot.
        unsafe { *value += by };
    }
}
