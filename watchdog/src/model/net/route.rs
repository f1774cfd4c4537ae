//! Routes of every table (RTM_NEWROUTE) and their `ip route` formatting.

use std::{fmt, net::IpAddr};

use super::{Prefix, Snapshot};

/// The main routing table (`RT_TABLE_MAIN`).
pub const TABLE_MAIN: u32 = 254;
/// The local routing table (`RT_TABLE_LOCAL`).
pub const TABLE_LOCAL: u32 = 255;
/// The default routing table (`RT_TABLE_DEFAULT`).
pub const TABLE_DEFAULT: u32 = 253;

/// A table's name as `ip route` prints it: `main`, `local`, `default`, else the number.
pub fn table_name(table: u32) -> String {
    match table {
        TABLE_MAIN => "main".into(),
        TABLE_LOCAL => "local".into(),
        TABLE_DEFAULT => "default".into(),
        other => other.to_string(),
    }
}

/// A protocol (RTPROT_*) as `ip route` names it.
fn protocol_name(protocol: u8) -> String {
    match protocol {
        2 => "kernel".into(),
        3 => "boot".into(),
        4 => "static".into(),
        other => other.to_string(),
    }
}

/// A scope (RT_SCOPE_*) as `ip route` takes it; none for `universe`.
fn scope_word(scope: u8) -> Option<String> {
    match scope {
        0 => None,
        200 => Some("site".into()),
        253 => Some("link".into()),
        254 => Some("host".into()),
        255 => Some("nowhere".into()),
        other => Some(other.to_string()),
    }
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

    /// The kernel's number for the type (RTN_*).
    pub fn number(&self) -> u8 {
        match self {
            Self::Unicast => 1,
            Self::Local => 2,
            Self::Broadcast => 3,
            Self::Blackhole => 6,
            Self::Unreachable => 7,
            Self::Prohibit => 8,
            Self::Throw => 9,
            Self::Other(n) => *n,
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
    /// `dead` (RTNH_F_DEAD): the path's device is down (or, for IPv4, lost its last
    /// address); the kernel skips it, and flushes the route once every path is dead.
    pub dead: bool,
}

impl NextHop {
    /// A live path through `oif`, via `gateway` if given.
    pub fn new(gateway: Option<IpAddr>, oif: Option<u32>) -> Self {
        Self {
            gateway,
            oif,
            onlink: false,
            dead: false,
        }
    }
}

/// A route in any table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The table (RTA_TABLE, full 32 bits): 254 main, 255 local, …
    pub table: u32,
    /// The destination prefix (0.0.0.0/0 for `default`).
    pub dst: Prefix,
    /// The source prefix of an IPv6 source-specific route (`from`, RTA_SRC); `None` for
    /// every other route.
    pub src: Option<Prefix>,
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
            src: None,
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

    /// The routes the kernel keeps side by side in one table under the same destination
    /// are told apart first by this key: TOS and metric for IPv4, source prefix and
    /// metric for IPv6. Routes with equal keys are alternatives (`ip route append`, the
    /// connected routes of one prefix on two devices), kept in the kernel's order.
    pub(super) fn group(&self) -> (u8, u32, Option<Prefix>) {
        (self.tos, self.priority, self.src)
    }

    /// The route as the same kernel object: equal in everything but the paths' `dead`
    /// flags, which the kernel changes without announcing it.
    pub(super) fn same_as(&self, other: &Route) -> bool {
        let hops_match = self.nexthops.len() == other.nexthops.len()
            && self
                .nexthops
                .iter()
                .zip(&other.nexthops)
                .all(|(a, b)| (a.gateway, a.oif, a.onlink) == (b.gateway, b.oif, b.onlink));
        hops_match
            && (
                self.table,
                self.dst,
                self.src,
                self.kind,
                self.gateway,
                self.oif,
            ) == (
                other.table,
                other.dst,
                other.src,
                other.kind,
                other.gateway,
                other.oif,
            )
            && (
                self.onlink,
                self.prefsrc,
                self.priority,
                self.protocol,
                self.scope,
                self.tos,
            ) == (
                other.onlink,
                other.prefsrc,
                other.priority,
                other.protocol,
                other.scope,
                other.tos,
            )
    }

    /// The route as `ip route add|replace|del` takes it, every attribute spelled out and
    /// devices named by `dev`: `10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink proto
    /// boot table main`, `blackhole 10.244.1.0/24 proto static metric 100 table main`.
    pub fn command(&self, dev: impl Fn(u32) -> String) -> String {
        let mut text = String::new();
        match self.kind {
            RouteKind::Unicast => {}
            RouteKind::Other(n) => text.push_str(&format!("type {n} ")),
            kind => {
                if let Some(word) = kind.word() {
                    text.push_str(word);
                    text.push(' ');
                }
            }
        }
        text.push_str(&self.dst.to_string());
        if let Some(src) = self.src {
            text.push_str(&format!(" from {src}"));
        }
        if self.tos != 0 {
            text.push_str(&format!(" tos {:#x}", self.tos));
        }
        if let Some(gw) = self.gateway {
            text.push_str(&format!(" via {gw}"));
        }
        if let Some(oif) = self.oif {
            text.push_str(&format!(" dev {}", dev(oif)));
        }
        if self.onlink {
            text.push_str(" onlink");
        }
        for hop in &self.nexthops {
            text.push_str(" nexthop");
            if let Some(gw) = hop.gateway {
                text.push_str(&format!(" via {gw}"));
            }
            if let Some(oif) = hop.oif {
                text.push_str(&format!(" dev {}", dev(oif)));
            }
            if hop.onlink {
                text.push_str(" onlink");
            }
        }
        if let Some(src) = self.prefsrc {
            text.push_str(&format!(" src {src}"));
        }
        text.push_str(&format!(" proto {}", protocol_name(self.protocol)));
        if let Some(scope) = scope_word(self.scope) {
            text.push_str(&format!(" scope {scope}"));
        }
        if self.priority != 0 {
            text.push_str(&format!(" metric {}", self.priority));
        }
        text.push_str(&format!(" table {}", table_name(self.table)));
        text
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
        if let Some(src) = r.src {
            write!(f, " from {src}")?;
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
        write!(f, " table {}", table_name(r.table))?;
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
            if hop.dead {
                f.write_str(" dead")?;
            }
        }
        Ok(())
    }
}
