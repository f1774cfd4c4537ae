//! The mirror's data model: plain data, no netlink types, cheap to read and easy to build
//! in unit tests.
//!
//! A [`Snapshot`] holds links, addresses, routes (every table), policy rules, neighbours
//! and the bridge FDB of one network namespace. [`Snapshot::apply`] applies one
//! [`Update`] the way the kernel changes its own state, including the changes the kernel
//! makes without telling anyone (IPv4 routes and neighbours flushed when a link goes
//! administratively down or disappears).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

/// The main routing table (`RT_TABLE_MAIN`).
pub const TABLE_MAIN: u32 = 254;
/// The local routing table (`RT_TABLE_LOCAL`).
pub const TABLE_LOCAL: u32 = 255;
/// The default routing table (`RT_TABLE_DEFAULT`).
pub const TABLE_DEFAULT: u32 = 253;

/// An IP prefix: an address and a prefix length. The address is kept as given (an
/// interface address keeps its host bits); comparisons with [`Prefix::contains`] mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length: 0–32 for IPv4, 0–128 for IPv6.
    pub len: u8,
}

/// Why a prefix could not be parsed or built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrefixError {
    /// The address part is not an IP address.
    #[error("`{0}` is not an IP address; write a prefix like 10.244.3.0/24 or fd00::/64")]
    Address(String),
    /// The length is not a number or too long for the family.
    #[error("prefix length `{0}` is invalid; use 0–32 for IPv4 and 0–128 for IPv6")]
    Length(String),
}

impl Prefix {
    /// A prefix, checking the length against the address family.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, PrefixError> {
        if len > max_len(&addr) {
            return Err(PrefixError::Length(len.to_string()));
        }
        Ok(Self { addr, len })
    }

    /// The host prefix (/32 or /128) of `addr`.
    pub fn host(addr: IpAddr) -> Self {
        Self {
            addr,
            len: max_len(&addr),
        }
    }

    /// The default prefix (0.0.0.0/0 or ::/0) of `addr`'s family.
    pub fn default_for(addr: &IpAddr) -> Self {
        let addr = match addr {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        Self { addr, len: 0 }
    }

    /// True for an IPv4 prefix.
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// The prefix with its host bits cleared (10.0.0.1/24 → 10.0.0.0/24).
    pub fn network(&self) -> Self {
        let bits = bits(&self.addr) & mask(self.len, max_len(&self.addr));
        Self {
            addr: from_bits(bits, self.addr.is_ipv4()),
            len: self.len,
        }
    }

    /// True if `ip` (same family) lies inside the prefix.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        let m = mask(self.len, max_len(ip));
        bits(ip) & m == bits(&self.addr) & m
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    /// Parses `10.244.3.0/24`, `fd00::/64`, or a bare address as a host prefix.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = match s.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| PrefixError::Address(addr.to_owned()))?;
        match len {
            None => Ok(Self::host(addr)),
            Some(len) => {
                let len: u8 = len
                    .trim()
                    .parse()
                    .map_err(|_| PrefixError::Length(len.to_owned()))?;
                Self::new(addr, len)
            }
        }
    }
}

fn max_len(addr: &IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

/// The address as an integer (IPv4 in the low 32 bits).
fn bits(addr: &IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(*a)),
        IpAddr::V6(a) => u128::from(*a),
    }
}

fn from_bits(bits: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(bits as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(bits))
    }
}

/// The network mask of `len` bits in an address of `width` bits, as an integer.
fn mask(len: u8, width: u8) -> u128 {
    let full = if width == 32 {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    };
    full & !full.checked_shr(u32::from(len.min(width))).unwrap_or(0)
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A VXLAN device's configuration (IFLA_INFO_DATA of kind `vxlan`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vxlan {
    /// The VXLAN network identifier.
    pub vni: u32,
    /// The local (source) VTEP address, if set.
    pub local: Option<IpAddr>,
    /// The UDP destination port (8472 for Flannel, 4789 IANA).
    pub port: u16,
    /// The underlay device (IFLA_VXLAN_LINK, `dev` in `ip link add … type vxlan`).
    pub underlay: Option<u32>,
    /// Whether the device learns remote MACs from received packets.
    pub learning: bool,
}

/// A network interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// The interface index.
    pub index: u32,
    /// The interface name.
    pub name: String,
    /// The kind from IFLA_LINKINFO (`vxlan`, `bridge`, `veth`, `wireguard`, …); `None` for
    /// physical devices and loopback.
    pub kind: Option<String>,
    /// Administratively up (IFF_UP).
    pub admin_up: bool,
    /// Operationally up: carrier present (IFF_LOWER_UP) and operstate not down.
    pub oper_up: bool,
    /// The MTU.
    pub mtu: u32,
    /// The master device (bridge, bond, VRF), if enslaved.
    pub master: Option<u32>,
    /// The hardware address, when it is an Ethernet one.
    pub mac: Option<[u8; 6]>,
    /// The VXLAN configuration for kind `vxlan`.
    pub vxlan: Option<Vxlan>,
}

/// An interface address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    /// The interface it is on.
    pub ifindex: u32,
    /// The address with its prefix length (e.g. 10.0.0.1/24, host bits kept).
    pub prefix: Prefix,
}

/// A route's type (RTN_*).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// A normal route (RTN_UNICAST).
    Unicast,
    /// A local address (RTN_LOCAL).
    Local,
    /// A broadcast address (RTN_BROADCAST).
    Broadcast,
    /// Silently discard (RTN_BLACKHOLE).
    Blackhole,
    /// Discard with ICMP unreachable (RTN_UNREACHABLE).
    Unreachable,
    /// Discard with ICMP prohibited (RTN_PROHIBIT).
    Prohibit,
    /// Continue with the next policy rule (RTN_THROW).
    Throw,
    /// Any other type, by number.
    Other(u8),
}

impl RouteKind {
    /// The kernel's number for the type.
    pub fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Unicast,
            2 => Self::Local,
            3 => Self::Broadcast,
            6 => Self::Blackhole,
            7 => Self::Unreachable,
            8 => Self::Prohibit,
            9 => Self::Throw,
            other => Self::Other(other),
        }
    }

    /// The word `ip route` prints before the prefix (empty for unicast).
    pub fn word(&self) -> Option<&'static str> {
        match self {
            Self::Unicast => None,
            Self::Local => Some("local"),
            Self::Broadcast => Some("broadcast"),
            Self::Blackhole => Some("blackhole"),
            Self::Unreachable => Some("unreachable"),
            Self::Prohibit => Some("prohibit"),
            Self::Throw => Some("throw"),
            Self::Other(_) => Some("type"),
        }
    }

    /// True for the types that end a lookup by discarding the packet.
    pub fn is_reject(&self) -> bool {
        matches!(self, Self::Blackhole | Self::Unreachable | Self::Prohibit)
    }
}

/// One path of a multipath route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextHop {
    /// The gateway, if any.
    pub gateway: Option<IpAddr>,
    /// The output interface.
    pub oif: Option<u32>,
    /// `onlink`: the gateway is assumed on-link, whatever the addresses say.
    pub onlink: bool,
}

/// A route in any table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The table (RTA_TABLE, full 32 bits): 254 main, 255 local, …
    pub table: u32,
    /// The destination prefix (0.0.0.0/0 for `default`).
    pub dst: Prefix,
    /// The route type.
    pub kind: RouteKind,
    /// The gateway of a single-path route.
    pub gateway: Option<IpAddr>,
    /// The output interface of a single-path route.
    pub oif: Option<u32>,
    /// `onlink` on a single-path route.
    pub onlink: bool,
    /// The preferred source address (`src`).
    pub prefsrc: Option<IpAddr>,
    /// The metric (`metric`/`priority`); lower wins.
    pub priority: u32,
    /// Who installed it (RTPROT_*: 2 kernel, 3 boot, 4 static, …).
    pub protocol: u8,
    /// The scope (RT_SCOPE_*: 0 universe, 253 link, 254 host).
    pub scope: u8,
    /// The TOS selector (IPv4).
    pub tos: u8,
    /// The paths of a multipath route (empty for a single-path route).
    pub nexthops: Vec<NextHop>,
}

impl Route {
    /// A unicast route in the main table with everything else empty; a starting point
    /// for building routes in tests and detectors.
    pub fn unicast(dst: Prefix) -> Self {
        Self {
            table: TABLE_MAIN,
            dst,
            kind: RouteKind::Unicast,
            gateway: None,
            oif: None,
            onlink: false,
            prefsrc: None,
            priority: 0,
            protocol: 3,
            scope: 0,
            tos: 0,
            nexthops: Vec::new(),
        }
    }

    /// Every interface the route sends through (its own and its next hops').
    pub fn oifs(&self) -> impl Iterator<Item = u32> + '_ {
        self.oif
            .into_iter()
            .chain(self.nexthops.iter().filter_map(|hop| hop.oif))
    }

    /// Formats the route like `ip route`, naming devices from `snapshot`:
    /// `10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink table main`.
    pub fn display<'a>(&'a self, snapshot: &'a Snapshot) -> RouteDisplay<'a> {
        RouteDisplay {
            route: self,
            snapshot: Some(snapshot),
        }
    }
}

impl fmt::Display for Route {
    /// Like [`Route::display`], with devices as `#<ifindex>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        RouteDisplay {
            route: self,
            snapshot: None,
        }
        .fmt(f)
    }
}

/// A route formatted like `ip route` (see [`Route::display`]).
#[derive(Debug)]
pub struct RouteDisplay<'a> {
    route: &'a Route,
    snapshot: Option<&'a Snapshot>,
}

impl RouteDisplay<'_> {
    fn dev(&self, f: &mut fmt::Formatter<'_>, index: u32) -> fmt::Result {
        match self.snapshot.and_then(|s| s.link(index)) {
            Some(link) => write!(f, " dev {}", link.name),
            None => write!(f, " dev #{index}"),
        }
    }
}

impl fmt::Display for RouteDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.route;
        match r.kind {
            RouteKind::Other(n) => write!(f, "type {n} ")?,
            kind => {
                if let Some(word) = kind.word() {
                    write!(f, "{word} ")?;
                }
            }
        }
        if r.dst.len == 0 {
            f.write_str("default")?;
        } else {
            write!(f, "{}", r.dst)?;
        }
        if let Some(gateway) = r.gateway {
            write!(f, " via {gateway}")?;
        }
        if let Some(oif) = r.oif {
            self.dev(f, oif)?;
        }
        if r.onlink {
            f.write_str(" onlink")?;
        }
        if let Some(src) = r.prefsrc {
            write!(f, " src {src}")?;
        }
        if r.priority != 0 {
            write!(f, " metric {}", r.priority)?;
        }
        match r.table {
            TABLE_MAIN => f.write_str(" table main")?,
            TABLE_LOCAL => f.write_str(" table local")?,
            TABLE_DEFAULT => f.write_str(" table default")?,
            table => write!(f, " table {table}")?,
        }
        for hop in &r.nexthops {
            f.write_str(" nexthop")?;
            if let Some(gateway) = hop.gateway {
                write!(f, " via {gateway}")?;
            }
            if let Some(oif) = hop.oif {
                self.dev(f, oif)?;
            }
            if hop.onlink {
                f.write_str(" onlink")?;
            }
        }
        Ok(())
    }
}

/// What a policy rule does when it matches (FR_ACT_*).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleAction {
    /// Look the destination up in `table`.
    ToTable,
    /// Jump to the first rule at or after priority `goto`.
    Goto,
    /// Do nothing.
    Nop,
    /// Discard silently.
    Blackhole,
    /// Discard with ICMP unreachable.
    Unreachable,
    /// Discard with ICMP prohibited.
    Prohibit,
    /// Any other action, by number.
    Other(u8),
}

/// A policy routing rule (`ip rule`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The address family: `libc::AF_INET` (2) or `libc::AF_INET6` (10).
    pub family: u8,
    /// The priority; rules are tried lowest first.
    pub priority: u32,
    /// The table for [`RuleAction::ToTable`].
    pub table: u32,
    /// The action.
    pub action: RuleAction,
    /// `from` selector.
    pub src: Option<Prefix>,
    /// `to` selector.
    pub dst: Option<Prefix>,
    /// `iif` selector.
    pub iif: Option<String>,
    /// `oif` selector.
    pub oif: Option<String>,
    /// `fwmark` selector value.
    pub fwmark: Option<u32>,
    /// `fwmark` selector mask (all ones when only a mark is given).
    pub fwmask: Option<u32>,
    /// The target priority of a `goto` rule.
    pub goto: Option<u32>,
    /// `suppress_prefixlength`: a route found with a prefix this short or shorter is
    /// ignored (wg-quick's `table main suppress_prefixlength 0`).
    pub suppress_prefixlen: Option<u32>,
    /// `not`: the selectors are inverted.
    pub invert: bool,
    /// `l3mdev`: the table comes from the VRF device.
    pub l3mdev: bool,
}

impl Rule {
    /// A rule of `family` at `priority` that looks up `table`, without selectors.
    pub fn to_table(family: u8, priority: u32, table: u32) -> Self {
        Self {
            family,
            priority,
            table,
            action: RuleAction::ToTable,
            src: None,
            dst: None,
            iif: None,
            oif: None,
            fwmark: None,
            fwmask: None,
            goto: None,
            suppress_prefixlen: None,
            invert: false,
            l3mdev: false,
        }
    }

    /// Whether the rule matches a locally originated packet (mark 0, no bound oif,
    /// iif `lo`) from `src` (unspecified when `None`) to `dst`.
    fn matches_local(&self, dst: &IpAddr, src: Option<&IpAddr>) -> bool {
        let unspecified = Prefix::default_for(dst).addr;
        let src = src.unwrap_or(&unspecified);
        let selectors = self.src.is_none_or(|p| p.contains(src))
            && self.dst.is_none_or(|p| p.contains(dst))
            && self.iif.as_deref().is_none_or(|iif| iif == "lo")
            && self.oif.is_none()
            && !self.l3mdev
            && self
                .fwmark
                .is_none_or(|mark| mark & self.fwmask.unwrap_or(u32::MAX) == 0);
        selectors != self.invert
    }
}

/// A neighbour (ARP/NDP) or FDB entry state: the NUD_* bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct NeighState(pub u16);

impl NeighState {
    /// NUD_INCOMPLETE: resolution in progress.
    pub const INCOMPLETE: Self = Self(0x01);
    /// NUD_REACHABLE: confirmed recently.
    pub const REACHABLE: Self = Self(0x02);
    /// NUD_STALE: valid but unconfirmed.
    pub const STALE: Self = Self(0x04);
    /// NUD_DELAY: waiting before probing.
    pub const DELAY: Self = Self(0x08);
    /// NUD_PROBE: probing.
    pub const PROBE: Self = Self(0x10);
    /// NUD_FAILED: resolution failed.
    pub const FAILED: Self = Self(0x20);
    /// NUD_NOARP: no resolution needed.
    pub const NOARP: Self = Self(0x40);
    /// NUD_PERMANENT: static entry.
    pub const PERMANENT: Self = Self(0x80);

    const NAMES: [(u16, &'static str); 8] = [
        (0x01, "INCOMPLETE"),
        (0x02, "REACHABLE"),
        (0x04, "STALE"),
        (0x08, "DELAY"),
        (0x10, "PROBE"),
        (0x20, "FAILED"),
        (0x40, "NOARP"),
        (0x80, "PERMANENT"),
    ];

    fn has(&self, bit: Self) -> bool {
        self.0 & bit.0 != 0
    }

    /// Resolution failed (NUD_FAILED).
    pub fn is_failed(&self) -> bool {
        self.has(Self::FAILED)
    }

    /// Resolution in progress, no answer yet (NUD_INCOMPLETE).
    pub fn is_incomplete(&self) -> bool {
        self.has(Self::INCOMPLETE)
    }

    /// A static entry (NUD_PERMANENT).
    pub fn is_permanent(&self) -> bool {
        self.has(Self::PERMANENT)
    }

    /// A usable learned entry: REACHABLE, STALE, DELAY or PROBE.
    pub fn is_reachable_or_stale(&self) -> bool {
        self.0 & (Self::REACHABLE.0 | Self::STALE.0 | Self::DELAY.0 | Self::PROBE.0) != 0
    }
}

impl fmt::Display for NeighState {
    /// The words `ip neigh` prints, space-separated; `NONE` for no bits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("NONE");
        }
        let mut first = true;
        for (bit, name) in Self::NAMES {
            if self.0 & bit != 0 {
                if !first {
                    f.write_str(" ")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        let unknown = self.0 & !0xff;
        if unknown != 0 {
            if !first {
                f.write_str(" ")?;
            }
            write!(f, "{unknown:#x}")?;
        }
        Ok(())
    }
}

/// An ARP (IPv4) or NDP (IPv6) neighbour entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    /// The interface.
    pub ifindex: u32,
    /// The neighbour's IP address.
    pub ip: IpAddr,
    /// Its link-layer address, once resolved.
    pub mac: Option<[u8; 6]>,
    /// The NUD state.
    pub state: NeighState,
}

/// A bridge forwarding database entry (`bridge fdb`), on a bridge, a bridge port or a
/// VXLAN device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdbEntry {
    /// The device the entry belongs to (e.g. `flannel.1`).
    pub ifindex: u32,
    /// The MAC address (00:00:00:00:00:00 for a VXLAN default destination).
    pub mac: [u8; 6],
    /// NDA_DST: on a VXLAN device, the remote VTEP.
    pub dst: Option<IpAddr>,
    /// The VLAN on a bridge.
    pub vlan: Option<u16>,
    /// NDA_VNI, when it differs from the device's.
    pub vni: Option<u32>,
    /// NDA_PORT, when it differs from the device's.
    pub port: Option<u16>,
    /// The NUD state (PERMANENT for static entries, REACHABLE/STALE for learned ones).
    pub state: NeighState,
    /// The bridge (NDA_MASTER), for entries on bridge ports.
    pub master: Option<u32>,
}

impl FdbEntry {
    /// The key the entry is stored under. Unicast MACs on a VXLAN device have a single
    /// remote that `bridge fdb replace` changes in place (the kernel then only announces
    /// the new destination), so the destination is part of the key only for the all-zero
    /// and multicast MACs, which may have several (`bridge fdb append`).
    fn key(&self) -> FdbKey {
        let multi = self.mac == [0; 6] || self.mac[0] & 1 == 1;
        (
            self.ifindex,
            self.mac,
            self.vlan,
            self.master,
            if multi { self.dst } else { None },
        )
    }
}

/// (device, MAC, VLAN, master — a bridge port's `master` entry and its `self` entry
/// differ — and, for multi-destination MACs, the destination).
type FdbKey = (u32, [u8; 6], Option<u16>, Option<u32>, Option<IpAddr>);

/// One change to apply to a [`Snapshot`], as the kernel announces it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Update {
    /// A link appeared or changed (RTM_NEWLINK).
    NewLink(Link),
    /// A link disappeared (RTM_DELLINK), by index.
    DelLink(u32),
    /// An address was added (RTM_NEWADDR).
    NewAddress(Address),
    /// An address was removed (RTM_DELADDR).
    DelAddress(Address),
    /// A route was added or replaced (RTM_NEWROUTE).
    NewRoute(Route),
    /// A route was removed (RTM_DELROUTE).
    DelRoute(Route),
    /// A rule was added (RTM_NEWRULE).
    NewRule(Rule),
    /// A rule was removed (RTM_DELRULE).
    DelRule(Rule),
    /// A neighbour was added or changed (RTM_NEWNEIGH).
    NewNeighbour(Neighbour),
    /// A neighbour was removed (RTM_DELNEIGH).
    DelNeighbour(Neighbour),
    /// An FDB entry was added or changed (RTM_NEWNEIGH, AF_BRIDGE).
    NewFdb(FdbEntry),
    /// An FDB entry was removed (RTM_DELNEIGH, AF_BRIDGE).
    DelFdb(FdbEntry),
}

/// How many objects of each kind a snapshot holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObjectCounts {
    /// Links.
    pub links: usize,
    /// Addresses.
    pub addresses: usize,
    /// Routes, every table.
    pub routes: usize,
    /// Policy rules.
    pub rules: usize,
    /// ARP/NDP neighbours.
    pub neighbours: usize,
    /// Bridge FDB entries.
    pub fdb: usize,
}

/// Routes of one family in one table, indexed for longest-prefix match: per prefix
/// length, a hash map from the masked destination to the routes with that destination
/// (several when metrics or TOS differ), ordered by (tos, priority).
#[derive(Clone, Debug, Default)]
struct FamilyTable {
    by_len: HashMap<u8, HashMap<u128, Vec<Route>>>,
    /// Prefix lengths present, for iterating longest first.
    lens: BTreeSet<u8>,
    count: usize,
}

impl FamilyTable {
    fn insert(&mut self, route: Route) {
        let dst = bits(&route.dst.network().addr);
        let slot = self
            .by_len
            .entry(route.dst.len)
            .or_default()
            .entry(dst)
            // Most destinations have one route: no room for four (Vec's first growth).
            .or_insert_with(|| Vec::with_capacity(1));
        self.lens.insert(route.dst.len);
        let key = (route.tos, route.priority);
        match slot.binary_search_by_key(&key, |r| (r.tos, r.priority)) {
            Ok(i) => slot[i] = route,
            Err(i) => {
                slot.insert(i, route);
                self.count += 1;
            }
        }
    }

    fn remove(&mut self, dst: &Prefix, tos: u8, priority: u32) -> Option<Route> {
        let map = self.by_len.get_mut(&dst.len)?;
        let key = bits(&dst.network().addr);
        let slot = map.get_mut(&key)?;
        let i = slot
            .binary_search_by_key(&(tos, priority), |r| (r.tos, r.priority))
            .ok()?;
        let route = slot.remove(i);
        self.count -= 1;
        if slot.is_empty() {
            map.remove(&key);
            if map.is_empty() {
                self.by_len.remove(&dst.len);
                self.lens.remove(&dst.len);
            }
        }
        Some(route)
    }

    fn retain(&mut self, mut keep: impl FnMut(&Route) -> bool) {
        for map in self.by_len.values_mut() {
            for slot in map.values_mut() {
                let before = slot.len();
                slot.retain(&mut keep);
                self.count -= before - slot.len();
            }
            map.retain(|_, slot| !slot.is_empty());
        }
        self.by_len.retain(|_, map| !map.is_empty());
        self.lens = self.by_len.keys().copied().collect();
    }

    fn iter(&self) -> impl Iterator<Item = &Route> {
        self.by_len.values().flat_map(|m| m.values().flatten())
    }

    /// The longest-prefix match for `dst` among routes `accept` allows; among routes
    /// with the same destination, the lowest metric wins (TOS 0 routes only).
    fn lookup(&self, dst: &IpAddr, accept: impl Fn(&Route) -> bool) -> Option<&Route> {
        let width = max_len(dst);
        let addr = bits(dst);
        for len in self.lens.iter().rev() {
            let Some(map) = self.by_len.get(len) else {
                continue;
            };
            if let Some(slot) = map.get(&(addr & mask(*len, width)))
                && let Some(route) = slot.iter().find(|r| r.tos == 0 && accept(r))
            {
                return Some(route);
            }
        }
        None
    }
}

#[derive(Clone, Debug, Default)]
struct RouteTable {
    v4: FamilyTable,
    v6: FamilyTable,
}

impl RouteTable {
    fn family(&self, v4: bool) -> &FamilyTable {
        if v4 { &self.v4 } else { &self.v6 }
    }

    fn family_mut(&mut self, v4: bool) -> &mut FamilyTable {
        if v4 { &mut self.v4 } else { &mut self.v6 }
    }
}

/// The result of a policy-routed lookup ([`Snapshot::lookup_with_rules`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution<'a> {
    /// A route decided: it forwards, delivers locally, or (blackhole, unreachable,
    /// prohibit) discards. `rule` is the rule that led to its table (`None` when the
    /// snapshot holds no rules of the family and the kernel's default rules were used).
    Route {
        /// The route.
        route: &'a Route,
        /// The rule whose table held it.
        rule: Option<&'a Rule>,
    },
    /// A rule discarded the packet (blackhole, unreachable or prohibit action).
    Rejected {
        /// The rule.
        rule: &'a Rule,
    },
}

/// The network state of one namespace. Single updates cost O(log n) or O(1); see the
/// module documentation.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    links: BTreeMap<u32, Link>,
    link_names: HashMap<String, u32>,
    addresses: BTreeMap<(u32, IpAddr, u8), Address>,
    tables: BTreeMap<u32, RouteTable>,
    rules: Vec<Rule>,
    neighbours: BTreeMap<(u32, IpAddr), Neighbour>,
    fdb: BTreeMap<FdbKey, FdbEntry>,
}

impl Snapshot {
    /// An empty snapshot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every link, by index.
    pub fn links(&self) -> impl Iterator<Item = &Link> {
        self.links.values()
    }

    /// The link with `index`.
    pub fn link(&self, index: u32) -> Option<&Link> {
        self.links.get(&index)
    }

    /// The link named `name`.
    pub fn link_by_name(&self, name: &str) -> Option<&Link> {
        self.link_names.get(name).and_then(|i| self.links.get(i))
    }

    /// Every address, by interface.
    pub fn addresses(&self) -> impl Iterator<Item = &Address> {
        self.addresses.values()
    }

    /// Every route in every table (tables in ascending order, routes unordered within).
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.tables
            .values()
            .flat_map(|t| t.v4.iter().chain(t.v6.iter()))
    }

    /// The routes of one table.
    pub fn routes_in_table(&self, table: u32) -> impl Iterator<Item = &Route> {
        self.tables
            .get(&table)
            .into_iter()
            .flat_map(|t| t.v4.iter().chain(t.v6.iter()))
    }

    /// The route in `table` with destination `dst`, metric `priority` and TOS 0.
    pub fn route(&self, table: u32, dst: &Prefix, priority: u32) -> Option<&Route> {
        let t = self.tables.get(&table)?.family(dst.is_ipv4());
        let slot = t.by_len.get(&dst.len)?.get(&bits(&dst.network().addr))?;
        slot.iter().find(|r| r.tos == 0 && r.priority == priority)
    }

    /// Policy rules in priority order.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter()
    }

    /// Every ARP/NDP neighbour, by (interface, address).
    pub fn neighbours(&self) -> impl Iterator<Item = &Neighbour> {
        self.neighbours.values()
    }

    /// The neighbour `ip` on interface `ifindex`.
    pub fn neighbour(&self, ifindex: u32, ip: &IpAddr) -> Option<&Neighbour> {
        self.neighbours.get(&(ifindex, *ip))
    }

    /// Every bridge FDB entry, by interface.
    pub fn fdb(&self) -> impl Iterator<Item = &FdbEntry> {
        self.fdb.values()
    }

    /// The FDB entries of one device (`bridge fdb show dev <name>`).
    pub fn fdb_of(&self, ifindex: u32) -> impl Iterator<Item = &FdbEntry> {
        self.fdb
            .range((ifindex, [0; 6], None, None, None)..)
            .take_while(move |(k, _)| k.0 == ifindex)
            .map(|(_, e)| e)
    }

    /// How many objects of each kind the snapshot holds.
    pub fn counts(&self) -> ObjectCounts {
        ObjectCounts {
            links: self.links.len(),
            addresses: self.addresses.len(),
            routes: self.tables.values().map(|t| t.v4.count + t.v6.count).sum(),
            rules: self.rules.len(),
            neighbours: self.neighbours.len(),
            fdb: self.fdb.len(),
        }
    }

    /// Longest-prefix match for `dst` in the main table among unicast, blackhole,
    /// unreachable and prohibit routes; the lowest metric wins among equal prefixes.
    pub fn lookup(&self, dst: IpAddr) -> Option<&Route> {
        self.lookup_in_table(TABLE_MAIN, dst)
    }

    /// As [`Snapshot::lookup`], in `table`.
    pub fn lookup_in_table(&self, table: u32, dst: IpAddr) -> Option<&Route> {
        self.tables
            .get(&table)?
            .family(dst.is_ipv4())
            .lookup(&dst, |r| {
                matches!(
                    r.kind,
                    RouteKind::Unicast
                        | RouteKind::Blackhole
                        | RouteKind::Unreachable
                        | RouteKind::Prohibit
                )
            })
    }

    /// The kernel's decision for a locally originated packet from `src` (unspecified
    /// when `None`) to `dst`: policy rules in priority order, then longest-prefix match
    /// in each rule's table. Every route type counts (a `local` route means local
    /// delivery), `throw` continues with the next rule, and `suppress_prefixlength`,
    /// `not` and `goto` are honoured.
    ///
    /// Local origin means firewall mark 0, no bound output interface and input
    /// interface `lo`: rules with an `oif` or `l3mdev` selector never match, an `iif`
    /// selector matches only `lo`, and a `fwmark` rule only if its mask clears every
    /// bit of the mark. With no rules of the family in the snapshot, the kernel's
    /// defaults apply (local, main, default).
    pub fn lookup_with_rules(&self, dst: IpAddr, src: Option<IpAddr>) -> Option<Resolution<'_>> {
        let family = if dst.is_ipv4() {
            libc::AF_INET as u8
        } else {
            libc::AF_INET6 as u8
        };
        let rules: Vec<&Rule> = self.rules.iter().filter(|r| r.family == family).collect();
        if rules.is_empty() {
            return [TABLE_LOCAL, TABLE_MAIN, TABLE_DEFAULT]
                .into_iter()
                .find_map(|table| self.table_lookup(table, &dst))
                .map(|route| Resolution::Route { route, rule: None });
        }
        let mut i = 0;
        while i < rules.len() {
            let rule = rules[i];
            i += 1;
            if !rule.matches_local(&dst, src.as_ref()) {
                continue;
            }
            match rule.action {
                RuleAction::ToTable => {
                    let Some(route) = self.table_lookup(rule.table, &dst) else {
                        continue;
                    };
                    if rule
                        .suppress_prefixlen
                        .is_some_and(|len| u32::from(route.dst.len) <= len)
                    {
                        continue;
                    }
                    return Some(Resolution::Route {
                        route,
                        rule: Some(rule),
                    });
                }
                RuleAction::Goto => {
                    if let Some(target) = rule.goto {
                        // Only forward jumps, as the kernel enforces.
                        i = rules
                            .iter()
                            .position(|r| r.priority >= target && r.priority > rule.priority)
                            .unwrap_or(rules.len());
                    }
                }
                RuleAction::Blackhole | RuleAction::Unreachable | RuleAction::Prohibit => {
                    return Some(Resolution::Rejected { rule });
                }
                RuleAction::Nop | RuleAction::Other(_) => {}
            }
        }
        None
    }

    /// LPM in one table for rule lookups: every type but `throw` ends the lookup.
    fn table_lookup(&self, table: u32, dst: &IpAddr) -> Option<&Route> {
        let route = self
            .tables
            .get(&table)?
            .family(dst.is_ipv4())
            .lookup(dst, |_| true)?;
        (route.kind != RouteKind::Throw).then_some(route)
    }

    /// Applies one change the way the kernel makes it.
    pub fn apply(&mut self, update: Update) {
        match update {
            Update::NewLink(link) => self.new_link(link),
            Update::DelLink(index) => self.del_link(index),
            Update::NewAddress(address) => {
                let key = (address.ifindex, address.prefix.addr, address.prefix.len);
                self.addresses.insert(key, address);
            }
            Update::DelAddress(address) => self.del_address(&address),
            Update::NewRoute(route) => {
                let v4 = route.dst.is_ipv4();
                self.tables
                    .entry(route.table)
                    .or_default()
                    .family_mut(v4)
                    .insert(route);
            }
            Update::DelRoute(route) => {
                if let Some(table) = self.tables.get_mut(&route.table) {
                    table.family_mut(route.dst.is_ipv4()).remove(
                        &route.dst,
                        route.tos,
                        route.priority,
                    );
                    if table.v4.count == 0 && table.v6.count == 0 {
                        self.tables.remove(&route.table);
                    }
                }
            }
            Update::NewRule(rule) => {
                if !self.rules.contains(&rule) {
                    // After every rule of the same priority, as the kernel appends.
                    let at = self.rules.partition_point(|r| r.priority <= rule.priority);
                    self.rules.insert(at, rule);
                }
            }
            Update::DelRule(rule) => {
                if let Some(i) = self.rules.iter().position(|r| *r == rule) {
                    self.rules.remove(i);
                }
            }
            Update::NewNeighbour(n) => {
                self.neighbours.insert((n.ifindex, n.ip), n);
            }
            Update::DelNeighbour(n) => {
                self.neighbours.remove(&(n.ifindex, n.ip));
            }
            Update::NewFdb(entry) => {
                // Older kernels (5.10 and 6.1 seen, not 6.18) follow a VXLAN driver's own
                // notification (with NDA_DST) by rtnetlink's generic one, only the MAC: it
                // changes nothing.
                let echo = entry.dst.is_none()
                    && self
                        .fdb
                        .get(&entry.key())
                        .is_some_and(|old| old.dst.is_some());
                if !echo {
                    self.fdb.insert(entry.key(), entry);
                }
            }
            Update::DelFdb(entry) => {
                self.fdb.remove(&entry.key());
            }
        }
    }

    fn new_link(&mut self, link: Link) {
        let was_up = self.links.get(&link.index).map(|old| old.admin_up);
        if let Some(old) = self.links.get(&link.index)
            && old.name != link.name
        {
            self.link_names.remove(&old.name);
        }
        let (index, admin_up) = (link.index, link.admin_up);
        self.link_names.insert(link.name.clone(), index);
        self.links.insert(index, link);
        if was_up == Some(true) && !admin_up {
            // The kernel flushes the device's IPv4 routes (but its local addresses' routes
            // in table local) and all its neighbours when it goes down, without
            // announcing the IPv4 route deletions.
            self.flush_link_state(index, false);
        }
    }

    fn del_link(&mut self, index: u32) {
        if let Some(link) = self.links.remove(&index) {
            self.link_names.remove(&link.name);
        }
        self.flush_link_state(index, true);
        self.addresses.retain(|(i, _, _), _| *i != index);
        self.fdb.retain(|(i, ..), _| *i != index);
        // IPv6 route deletions are announced, but a dead device cannot route either way.
        for table in self.tables.values_mut() {
            table.v6.retain(|r| !sends_only_via(r, index));
        }
        self.tables.retain(|_, t| t.v4.count + t.v6.count > 0);
    }

    /// What a device going down (or away, `gone`) takes with it: IPv4 routes whose
    /// every path uses it (local routes only when it is gone), and its neighbours.
    fn flush_link_state(&mut self, index: u32, gone: bool) {
        for table in self.tables.values_mut() {
            table
                .v4
                .retain(|r| !sends_only_via(r, index) || (!gone && r.kind == RouteKind::Local));
        }
        self.tables.retain(|_, t| t.v4.count + t.v6.count > 0);
        self.neighbours.retain(|(i, _), _| *i != index);
    }

    fn del_address(&mut self, address: &Address) {
        let key = (address.ifindex, address.prefix.addr, address.prefix.len);
        self.addresses.remove(&key);
        // When an IPv4 address leaves the namespace, the kernel silently flushes the
        // routes that used it as their preferred source.
        let ip = address.prefix.addr;
        if ip.is_ipv4() && !self.addresses.values().any(|a| a.prefix.addr == ip) {
            for table in self.tables.values_mut() {
                table.v4.retain(|r| r.prefsrc != Some(ip));
            }
            self.tables.retain(|_, t| t.v4.count + t.v6.count > 0);
        }
    }
}

/// True if every path of `route` leaves through interface `index`.
fn sends_only_via(route: &Route, index: u32) -> bool {
    let mut oifs = route.oifs().peekable();
    oifs.peek().is_some() && oifs.all(|oif| oif == index)
}

#[cfg(test)]
mod tests;
