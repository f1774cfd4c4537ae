//! The journal's JSON for an [`Object`]: `{"type": "fdb" | "neighbour" | "route", …}` with
//! devices by index and by name, MACs and prefixes as text, numbers for the kernel's
//! enums (RTN_*, RTPROT_*, RT_SCOPE_*, NUD_*). Written before every change and read back
//! at start and by `repair undo`, so it stays the same from release to release.
//!
//! It holds what repair's objects can have: no VLAN or bridge master for an FDB entry, no
//! source prefix for a route (IPv4), no `dead` flag for a path.

use std::net::IpAddr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Named, Object};
use crate::model::{
    desired::Mac,
    net::{FdbEntry, NeighState, Neighbour, NextHop, Prefix, Route, RouteKind},
};

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Wire {
    Fdb(Fdb),
    Neighbour(Neigh),
    Route(RouteWire),
}

#[derive(Serialize, Deserialize)]
struct Fdb {
    dev: String,
    ifindex: u32,
    #[serde(with = "mac_text")]
    mac: Mac,
    dst: Option<IpAddr>,
    vni: Option<u32>,
    port: Option<u16>,
    state: u16,
}

#[derive(Serialize, Deserialize)]
struct Neigh {
    dev: String,
    ifindex: u32,
    ip: IpAddr,
    #[serde(with = "opt_mac_text")]
    mac: Option<Mac>,
    state: u16,
}

#[derive(Serialize, Deserialize)]
struct Hop {
    gateway: Option<IpAddr>,
    oif: Option<u32>,
    dev: Option<String>,
    onlink: bool,
}

#[derive(Serialize, Deserialize)]
struct RouteWire {
    table: u32,
    #[serde(with = "prefix_text")]
    dst: Prefix,
    kind: u8,
    gateway: Option<IpAddr>,
    oif: Option<u32>,
    dev: Option<String>,
    onlink: bool,
    prefsrc: Option<IpAddr>,
    priority: u32,
    protocol: u8,
    scope: u8,
    tos: u8,
    nexthops: Vec<Hop>,
}

impl From<&Object> for Wire {
    fn from(object: &Object) -> Self {
        match object {
            Object::Fdb(f) => Wire::Fdb(Fdb {
                dev: f.dev(f.ifindex),
                ifindex: f.ifindex,
                mac: Mac(f.mac),
                dst: f.dst,
                vni: f.vni,
                port: f.port,
                state: f.state.0,
            }),
            Object::Neighbour(n) => Wire::Neighbour(Neigh {
                dev: n.dev(n.ifindex),
                ifindex: n.ifindex,
                ip: n.ip,
                mac: n.mac.map(Mac),
                state: n.state.0,
            }),
            Object::Route(r) => Wire::Route(RouteWire {
                table: r.table,
                dst: r.dst,
                kind: r.kind.number(),
                gateway: r.gateway,
                oif: r.oif,
                dev: r.dev_name(r.oif),
                onlink: r.onlink,
                prefsrc: r.prefsrc,
                priority: r.priority,
                protocol: r.protocol,
                scope: r.scope,
                tos: r.tos,
                nexthops: r
                    .nexthops
                    .iter()
                    .map(|hop| Hop {
                        gateway: hop.gateway,
                        oif: hop.oif,
                        dev: r.dev_name(hop.oif),
                        onlink: hop.onlink,
                    })
                    .collect(),
            }),
        }
    }
}

impl From<Wire> for Object {
    fn from(wire: Wire) -> Self {
        match wire {
            Wire::Fdb(f) => Object::Fdb(Named::new(
                FdbEntry {
                    ifindex: f.ifindex,
                    mac: f.mac.0,
                    dst: f.dst,
                    vlan: None,
                    vni: f.vni,
                    port: f.port,
                    state: NeighState(f.state),
                    master: None,
                },
                [(f.ifindex, f.dev)],
            )),
            Wire::Neighbour(n) => Object::Neighbour(Named::new(
                Neighbour {
                    ifindex: n.ifindex,
                    ip: n.ip,
                    mac: n.mac.map(|m| m.0),
                    state: NeighState(n.state),
                },
                [(n.ifindex, n.dev)],
            )),
            Wire::Route(r) => {
                let mut devs = Vec::new();
                if let (Some(oif), Some(dev)) = (r.oif, r.dev) {
                    devs.push((oif, dev));
                }
                let nexthops = r
                    .nexthops
                    .into_iter()
                    .map(|hop| {
                        if let (Some(oif), Some(dev)) = (hop.oif, hop.dev) {
                            devs.push((oif, dev));
                        }
                        NextHop {
                            gateway: hop.gateway,
                            oif: hop.oif,
                            onlink: hop.onlink,
                            dead: false,
                        }
                    })
                    .collect();
                let route = Route {
                    table: r.table,
                    dst: r.dst,
                    src: None,
                    kind: RouteKind::from_u8(r.kind),
                    gateway: r.gateway,
                    oif: r.oif,
                    onlink: r.onlink,
                    prefsrc: r.prefsrc,
                    priority: r.priority,
                    protocol: r.protocol,
                    scope: r.scope,
                    tos: r.tos,
                    nexthops,
                };
                Object::Route(Named::new(route, devs))
            }
        }
    }
}

impl Serialize for Object {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Wire::from(self).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Wire::deserialize(d).map(Object::from)
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
