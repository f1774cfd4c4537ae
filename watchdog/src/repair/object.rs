//! The kernel objects repair changes (FDB entries, neighbours, routes) as plain data: what
//! the planner puts in an operation, the journal writes as before/after, and the executor
//! turns into a netlink message. Each has an identity ([`Object::key`]: the kernel's own
//! notion of "the same entry") and renders as the `ip`/`bridge` command a person would
//! type.

use std::{fmt, net::IpAddr};

use serde::{Deserialize, Serialize};

use crate::{
    model::{
        desired::Mac,
        net::{FdbEntry, NeighState, Neighbour, NextHop, Prefix, Route, RouteKind, Snapshot},
    },
    overlay,
};

/// A bridge FDB entry on a VXLAN device (`bridge fdb … self`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fdb {
    /// The device's name.
    pub dev: String,
    /// The device's index.
    pub ifindex: u32,
    /// The MAC address.
    #[serde(with = "mac_text")]
    pub mac: Mac,
    /// The remote VTEP (NDA_DST).
    pub dst: Option<IpAddr>,
    /// NDA_VNI, when set.
    pub vni: Option<u32>,
    /// NDA_PORT, when set.
    pub port: Option<u16>,
    /// The NUD state bits (0x80 permanent).
    pub state: u16,
}

/// An ARP neighbour.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Neigh {
    /// The device's name.
    pub dev: String,
    /// The device's index.
    pub ifindex: u32,
    /// The neighbour's address.
    pub ip: IpAddr,
    /// Its link-layer address, if resolved.
    #[serde(with = "opt_mac_text")]
    pub mac: Option<Mac>,
    /// The NUD state bits.
    pub state: u16,
}

impl Neigh {
    /// No link-layer address and neither permanent (0x80) nor noarp (0x40): an entry the
    /// kernel is still (or failed) resolving.
    pub fn unresolved(&self) -> bool {
        self.mac.is_none() && self.state & (0x80 | 0x40) == 0
    }
}

/// One path of a multipath route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hop {
    /// The gateway.
    pub gateway: Option<IpAddr>,
    /// The device's index.
    pub oif: Option<u32>,
    /// The device's name.
    pub dev: Option<String>,
    /// `onlink`.
    pub onlink: bool,
}

/// A route, with every attribute the mirror keeps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteObj {
    /// The table (254 main).
    pub table: u32,
    /// The destination.
    #[serde(with = "prefix_text")]
    pub dst: Prefix,
    /// RTN_* type (1 unicast, 6 blackhole, …).
    pub kind: u8,
    /// The gateway.
    pub gateway: Option<IpAddr>,
    /// The output device's index.
    pub oif: Option<u32>,
    /// The output device's name.
    pub dev: Option<String>,
    /// `onlink`.
    pub onlink: bool,
    /// `src`.
    pub prefsrc: Option<IpAddr>,
    /// The metric.
    pub priority: u32,
    /// RTPROT_* (3 boot, 4 static, …).
    pub protocol: u8,
    /// RT_SCOPE_* (0 universe, 253 link, 254 host).
    pub scope: u8,
    /// The TOS selector.
    pub tos: u8,
    /// The paths of a multipath route.
    pub nexthops: Vec<Hop>,
}

/// A kernel object repair may change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Object {
    /// An FDB entry.
    Fdb(Fdb),
    /// A neighbour.
    Neighbour(Neigh),
    /// A route.
    Route(RouteObj),
}

/// What kind of object, for metrics labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    /// An FDB entry.
    Fdb,
    /// A neighbour.
    Neighbour,
    /// A route.
    Route,
}

impl ObjectKind {
    /// Every kind.
    pub const ALL: [ObjectKind; 3] = [ObjectKind::Fdb, ObjectKind::Neighbour, ObjectKind::Route];

    /// `fdb`, `neighbour`, `route`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ObjectKind::Fdb => "fdb",
            ObjectKind::Neighbour => "neighbour",
            ObjectKind::Route => "route",
        }
    }
}

fn table_name(table: u32) -> String {
    match table {
        254 => "main".into(),
        255 => "local".into(),
        253 => "default".into(),
        other => other.to_string(),
    }
}

fn protocol_name(protocol: u8) -> String {
    match protocol {
        2 => "kernel".into(),
        3 => "boot".into(),
        4 => "static".into(),
        other => other.to_string(),
    }
}

fn scope_name(scope: u8) -> Option<&'static str> {
    match scope {
        0 => None,
        200 => Some("site"),
        253 => Some("link"),
        254 => Some("host"),
        255 => Some("nowhere"),
        _ => Some("?"),
    }
}

fn nud_word(state: u16) -> &'static str {
    let state = NeighState(state);
    if state.is_permanent() {
        "permanent"
    } else if state.0 & NeighState::NOARP.0 != 0 {
        "noarp"
    } else if state.0 & NeighState::STALE.0 != 0 {
        "stale"
    } else if state.0 & NeighState::REACHABLE.0 != 0 {
        "reachable"
    } else if state.is_failed() {
        "failed"
    } else if state.is_incomplete() {
        "incomplete"
    } else {
        "none"
    }
}

impl Object {
    /// An object of the overlay comparison, its devices named from `net`.
    pub fn of(net: &Snapshot, object: &overlay::Object) -> Self {
        match object {
            overlay::Object::Fdb(entry) => Object::Fdb(fdb_object(net, entry)),
            overlay::Object::Neighbour(neighbour) => {
                Object::Neighbour(neigh_object(net, neighbour))
            }
            overlay::Object::Route(route) => Object::Route(route_object(net, route)),
        }
    }

    /// The object's identity: what the kernel replaces in place (`fdb <mac> dev <dev>`,
    /// `neigh <ip> dev <dev>`, `route <dst> table <t>` with metric and TOS when set).
    pub fn key(&self) -> String {
        match self {
            Object::Fdb(f) => format!("fdb {} dev {}", f.mac, f.dev),
            Object::Neighbour(n) => format!("neigh {} dev {}", n.ip, n.dev),
            Object::Route(r) => {
                let mut key = format!("route {} table {}", r.dst, table_name(r.table));
                if r.priority != 0 {
                    key.push_str(&format!(" metric {}", r.priority));
                }
                if r.tos != 0 {
                    key.push_str(&format!(" tos {}", r.tos));
                }
                key
            }
        }
    }

    /// What kind of object.
    pub fn kind(&self) -> ObjectKind {
        match self {
            Object::Fdb(_) => ObjectKind::Fdb,
            Object::Neighbour(_) => ObjectKind::Neighbour,
            Object::Route(_) => ObjectKind::Route,
        }
    }

    /// The object as `ip`/`bridge` would take it after `add`/`replace`:
    /// `02:fa:… dev flannel.1 dst 192.168.77.11 self permanent`,
    /// `10.244.1.0 lladdr 02:fa:… dev flannel.1 nud permanent`,
    /// `10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink proto boot table main`.
    pub fn spec(&self) -> String {
        match self {
            Object::Fdb(f) => {
                let mut text = format!("{} dev {}", f.mac, f.dev);
                if let Some(dst) = f.dst {
                    text.push_str(&format!(" dst {dst}"));
                }
                if let Some(vni) = f.vni {
                    text.push_str(&format!(" vni {vni}"));
                }
                if let Some(port) = f.port {
                    text.push_str(&format!(" port {port}"));
                }
                let state = NeighState(f.state);
                let word = if state.is_permanent() {
                    "permanent"
                } else if state.0 & NeighState::NOARP.0 != 0 {
                    "static"
                } else {
                    "dynamic"
                };
                text.push_str(&format!(" self {word}"));
                text
            }
            Object::Neighbour(n) => {
                let mut text = n.ip.to_string();
                if let Some(mac) = n.mac {
                    text.push_str(&format!(" lladdr {mac}"));
                }
                text.push_str(&format!(" dev {} nud {}", n.dev, nud_word(n.state)));
                text
            }
            Object::Route(r) => {
                let mut text = String::new();
                match RouteKind::from_u8(r.kind) {
                    RouteKind::Unicast => {}
                    RouteKind::Other(n) => text.push_str(&format!("type {n} ")),
                    kind => {
                        if let Some(word) = kind.word() {
                            text.push_str(word);
                            text.push(' ');
                        }
                    }
                }
                text.push_str(&r.dst.to_string());
                if r.tos != 0 {
                    text.push_str(&format!(" tos {:#x}", r.tos));
                }
                if let Some(gw) = r.gateway {
                    text.push_str(&format!(" via {gw}"));
                }
                if let Some(dev) = &r.dev {
                    text.push_str(&format!(" dev {dev}"));
                }
                if r.onlink {
                    text.push_str(" onlink");
                }
                for hop in &r.nexthops {
                    text.push_str(" nexthop");
                    if let Some(gw) = hop.gateway {
                        text.push_str(&format!(" via {gw}"));
                    }
                    if let Some(dev) = &hop.dev {
                        text.push_str(&format!(" dev {dev}"));
                    }
                    if hop.onlink {
                        text.push_str(" onlink");
                    }
                }
                if let Some(src) = r.prefsrc {
                    text.push_str(&format!(" src {src}"));
                }
                text.push_str(&format!(" proto {}", protocol_name(r.protocol)));
                if let Some(scope) = scope_name(r.scope) {
                    if scope == "?" {
                        text.push_str(&format!(" scope {}", r.scope));
                    } else {
                        text.push_str(&format!(" scope {scope}"));
                    }
                }
                if r.priority != 0 {
                    text.push_str(&format!(" metric {}", r.priority));
                }
                text.push_str(&format!(" table {}", table_name(r.table)));
                text
            }
        }
    }

    /// The command that adds (`add`) or replaces (`replace`) it.
    pub fn set_command(&self, verb: &str) -> String {
        match self {
            Object::Fdb(_) => format!("bridge fdb {verb} {}", self.spec()),
            Object::Neighbour(_) => format!("ip neigh {verb} {}", self.spec()),
            Object::Route(_) => format!("ip route {verb} {}", self.spec()),
        }
    }

    /// The command that deletes it.
    pub fn del_command(&self) -> String {
        match self {
            Object::Fdb(f) => {
                let mut text = format!("bridge fdb del {} dev {}", f.mac, f.dev);
                if let Some(dst) = f.dst {
                    text.push_str(&format!(" dst {dst}"));
                }
                text.push_str(" self");
                text
            }
            Object::Neighbour(n) => format!("ip neigh del {} dev {}", n.ip, n.dev),
            Object::Route(_) => format!("ip route del {}", self.spec()),
        }
    }

    /// The object as the mirror would hold it now: `Some(true)` exactly this object,
    /// `Some(false)` an object with the same identity that differs, `None` nothing with
    /// that identity.
    ///
    /// Two unresolved neighbours (no link-layer address, neither permanent nor noarp:
    /// `incomplete`, `failed`, `probe`, `none`) count as the same: the kernel moves such an
    /// entry between those states by itself while traffic tries to resolve it, and that
    /// is not another writer.
    pub fn in_snapshot(&self, net: &Snapshot) -> Option<bool> {
        let current = current(net, self)?;
        Some(match (&current, self) {
            (Object::Neighbour(a), Object::Neighbour(b)) if a.unresolved() && b.unresolved() => {
                a.dev == b.dev && a.ifindex == b.ifindex && a.ip == b.ip
            }
            _ => current == *self,
        })
    }

    /// True if a route for `dst` (IPv4) would go through this object's subnet: for
    /// routes, the destination; for neighbours and FDB entries nothing.
    pub fn route_dst(&self) -> Option<Prefix> {
        match self {
            Object::Route(r) => Some(r.dst),
            _ => None,
        }
    }
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spec())
    }
}

/// The object in `net` with the same identity as `like`, as an [`Object`].
pub fn current(net: &Snapshot, like: &Object) -> Option<Object> {
    match like {
        Object::Fdb(f) => net
            .fdb_of(f.ifindex)
            .find(|e| e.mac == f.mac.0 && e.vlan.is_none() && e.master.is_none())
            .map(|e| Object::Fdb(fdb_object(net, e))),
        Object::Neighbour(n) => net
            .neighbour(n.ifindex, &n.ip)
            .map(|e| Object::Neighbour(neigh_object(net, e))),
        Object::Route(r) => net
            .routes_in_table(r.table)
            .find(|route| route.dst == r.dst && route.tos == r.tos && route.priority == r.priority)
            .map(|route| Object::Route(route_object(net, route))),
    }
}

fn dev_name(net: &Snapshot, index: u32) -> String {
    net.link(index)
        .map_or_else(|| format!("#{index}"), |link| link.name.clone())
}

/// An FDB entry of the mirror as an [`Fdb`].
pub fn fdb_object(net: &Snapshot, entry: &FdbEntry) -> Fdb {
    Fdb {
        dev: dev_name(net, entry.ifindex),
        ifindex: entry.ifindex,
        mac: Mac(entry.mac),
        dst: entry.dst,
        vni: entry.vni,
        port: entry.port,
        state: entry.state.0,
    }
}

/// A neighbour of the mirror as a [`Neigh`].
pub fn neigh_object(net: &Snapshot, neighbour: &Neighbour) -> Neigh {
    Neigh {
        dev: dev_name(net, neighbour.ifindex),
        ifindex: neighbour.ifindex,
        ip: neighbour.ip,
        mac: neighbour.mac.map(Mac),
        state: neighbour.state.0,
    }
}

fn kind_number(kind: RouteKind) -> u8 {
    match kind {
        RouteKind::Unicast => 1,
        RouteKind::Local => 2,
        RouteKind::Broadcast => 3,
        RouteKind::Blackhole => 6,
        RouteKind::Unreachable => 7,
        RouteKind::Prohibit => 8,
        RouteKind::Throw => 9,
        RouteKind::Other(n) => n,
    }
}

/// A route of the mirror as a [`RouteObj`].
pub fn route_object(net: &Snapshot, route: &Route) -> RouteObj {
    RouteObj {
        table: route.table,
        dst: route.dst,
        kind: kind_number(route.kind),
        gateway: route.gateway,
        oif: route.oif,
        dev: route.oif.map(|oif| dev_name(net, oif)),
        onlink: route.onlink,
        prefsrc: route.prefsrc,
        priority: route.priority,
        protocol: route.protocol,
        scope: route.scope,
        tos: route.tos,
        nexthops: route
            .nexthops
            .iter()
            .map(|hop| Hop {
                gateway: hop.gateway,
                oif: hop.oif,
                dev: hop.oif.map(|oif| dev_name(net, oif)),
                onlink: hop.onlink,
            })
            .collect(),
    }
}

impl Fdb {
    /// The entry as the model holds it.
    pub fn to_model(&self) -> FdbEntry {
        FdbEntry {
            ifindex: self.ifindex,
            mac: self.mac.0,
            dst: self.dst,
            vlan: None,
            vni: self.vni,
            port: self.port,
            state: NeighState(self.state),
            master: None,
        }
    }
}

impl Neigh {
    /// The neighbour as the model holds it.
    pub fn to_model(&self) -> Neighbour {
        Neighbour {
            ifindex: self.ifindex,
            ip: self.ip,
            mac: self.mac.map(|m| m.0),
            state: NeighState(self.state),
        }
    }
}

impl RouteObj {
    /// The route as the model holds it.
    pub fn to_model(&self) -> Route {
        Route {
            table: self.table,
            dst: self.dst,
            kind: RouteKind::from_u8(self.kind),
            gateway: self.gateway,
            oif: self.oif,
            onlink: self.onlink,
            prefsrc: self.prefsrc,
            priority: self.priority,
            protocol: self.protocol,
            scope: self.scope,
            tos: self.tos,
            // Source-specific routes are IPv6 only; the overlay's routes have none.
            src: None,
            nexthops: self
                .nexthops
                .iter()
                .map(|hop| NextHop {
                    gateway: hop.gateway,
                    oif: hop.oif,
                    onlink: hop.onlink,
                    dead: false,
                })
                .collect(),
        }
    }
}

mod mac_text {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::model::desired::Mac;

    pub fn serialize<S: Serializer>(mac: &Mac, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(mac)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        let text = String::deserialize(d)?;
        Mac::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("bad MAC `{text}`")))
    }
}

mod opt_mac_text {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::model::desired::Mac;

    pub fn serialize<S: Serializer>(mac: &Option<Mac>, s: S) -> Result<S::Ok, S::Error> {
        match mac {
            Some(mac) => s.collect_str(mac),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Mac>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) => Mac::parse(&text)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("bad MAC `{text}`"))),
        }
    }
}

mod prefix_text {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::model::net::Prefix;

    pub fn serialize<S: Serializer>(prefix: &Prefix, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(prefix)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Prefix, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map_err(|err| serde::de::Error::custom(format!("`{text}`: {err}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route() -> RouteObj {
        RouteObj {
            table: 254,
            dst: "10.244.1.0/24".parse().unwrap(),
            kind: 1,
            gateway: Some("10.244.1.0".parse().unwrap()),
            oif: Some(3),
            dev: Some("flannel.1".into()),
            onlink: true,
            prefsrc: None,
            priority: 0,
            protocol: 3,
            scope: 0,
            tos: 0,
            nexthops: vec![],
        }
    }

    #[test]
    fn only_entries_without_a_mac_that_are_not_configured_are_unresolved() {
        let neigh = |mac: Option<&str>, state| Neigh {
            dev: "flannel.1".into(),
            ifindex: 3,
            ip: "10.244.1.0".parse().unwrap(),
            mac: mac.and_then(Mac::parse),
            state,
        };
        // incomplete, failed, probe, none
        for state in [0x01, 0x20, 0x10, 0x00] {
            assert!(neigh(None, state).unresolved(), "{state:#x}");
        }
        assert!(!neigh(None, 0x80).unresolved(), "permanent");
        assert!(!neigh(None, 0x40).unresolved(), "noarp");
        assert!(
            !neigh(Some("02:fa:00:00:00:01"), 0x04).unresolved(),
            "stale"
        );
    }

    #[test]
    fn commands_are_what_a_person_types() {
        let fdb = Object::Fdb(Fdb {
            dev: "flannel.1".into(),
            ifindex: 3,
            mac: Mac::parse("02:fa:00:00:00:01").unwrap(),
            dst: Some("192.168.77.11".parse().unwrap()),
            vni: None,
            port: None,
            state: 0x80,
        });
        assert_eq!(
            fdb.set_command("replace"),
            "bridge fdb replace 02:fa:00:00:00:01 dev flannel.1 dst 192.168.77.11 self permanent"
        );
        assert_eq!(
            fdb.del_command(),
            "bridge fdb del 02:fa:00:00:00:01 dev flannel.1 dst 192.168.77.11 self"
        );
        assert_eq!(fdb.key(), "fdb 02:fa:00:00:00:01 dev flannel.1");
        let neigh = Object::Neighbour(Neigh {
            dev: "flannel.1".into(),
            ifindex: 3,
            ip: "10.244.1.0".parse().unwrap(),
            mac: Mac::parse("02:fa:00:00:00:01"),
            state: 0x80,
        });
        assert_eq!(
            neigh.set_command("add"),
            "ip neigh add 10.244.1.0 lladdr 02:fa:00:00:00:01 dev flannel.1 nud permanent"
        );
        assert_eq!(neigh.del_command(), "ip neigh del 10.244.1.0 dev flannel.1");
        let r = Object::Route(route());
        assert_eq!(
            r.set_command("replace"),
            "ip route replace 10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink proto boot \
             table main"
        );
        assert_eq!(r.key(), "route 10.244.1.0/24 table main");
        let blackhole = Object::Route(RouteObj {
            kind: 6,
            gateway: None,
            oif: None,
            dev: None,
            onlink: false,
            priority: 100,
            protocol: 4,
            ..route()
        });
        assert_eq!(
            blackhole.set_command("replace"),
            "ip route replace blackhole 10.244.1.0/24 proto static metric 100 table main"
        );
        assert_eq!(blackhole.key(), "route 10.244.1.0/24 table main metric 100");
    }

    #[test]
    fn objects_round_trip_through_json() {
        for object in [
            Object::Route(route()),
            Object::Neighbour(Neigh {
                dev: "flannel.1".into(),
                ifindex: 3,
                ip: "10.244.1.0".parse().unwrap(),
                mac: None,
                state: 0x20,
            }),
        ] {
            let text = serde_json::to_string(&object).unwrap();
            assert_eq!(serde_json::from_str::<Object>(&text).unwrap(), object);
        }
        let text = serde_json::to_string(&Object::Route(route())).unwrap();
        assert!(text.starts_with("{\"type\":\"route\""), "{text}");
        assert!(text.contains("\"dst\":\"10.244.1.0/24\""), "{text}");
    }
}
