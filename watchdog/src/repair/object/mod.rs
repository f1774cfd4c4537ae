//! The kernel objects repair changes (FDB entries, neighbours, routes): the model's own
//! types (`model::net`) with the names of their devices, as the planner puts them in an
//! operation, the journal writes them ([`wire`]: the journal's JSON) and the executor
//! sends them (encoded by the `netlink` room). Each has an identity ([`Object::key`]: the
//! kernel's own notion of "the same entry") and renders as the `ip`/`bridge` command a
//! person would type (the model's text).

mod wire;

#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, fmt, ops::Deref};

use crate::model::net::{
    self, FdbEntry, Neighbour, Prefix, Route, Snapshot, format_mac, table_name,
};

/// A model object with the names of the devices it names (its device; a route's output
/// devices), as they were called when it was read: the commands people read and the
/// journal name devices, the kernel indexes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Named<T> {
    object: T,
    devs: BTreeMap<u32, String>,
}

impl<T> Named<T> {
    /// `object` with its devices named `devs` (index, name).
    pub fn new(object: T, devs: impl IntoIterator<Item = (u32, String)>) -> Self {
        Self {
            object,
            devs: devs.into_iter().collect(),
        }
    }

    /// The object as the model holds it.
    pub fn model(&self) -> &T {
        &self.object
    }

    /// The name of device `index`, or `#<index>`.
    pub fn dev(&self, index: u32) -> String {
        self.devs
            .get(&index)
            .cloned()
            .unwrap_or_else(|| format!("#{index}"))
    }

    /// The name of device `index`, if known.
    pub(super) fn dev_name(&self, index: Option<u32>) -> Option<String> {
        index.and_then(|index| self.devs.get(&index).cloned())
    }
}

impl<T> Deref for Named<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.object
    }
}

/// A kernel object repair may change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Object {
    /// An FDB entry.
    Fdb(Named<FdbEntry>),
    /// A neighbour.
    Neighbour(Named<Neighbour>),
    /// A route.
    Route(Named<Route>),
}

/// What kind of object, for metrics labels.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
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

fn dev_name(net: &Snapshot, index: u32) -> String {
    net.link(index)
        .map_or_else(|| format!("#{index}"), |link| link.name.clone())
}

impl Object {
    /// A model object, its devices named from `net`.
    pub fn of(net: &Snapshot, object: &net::Object) -> Self {
        let named = |indexes: Vec<u32>| indexes.into_iter().map(|i| (i, dev_name(net, i)));
        match object {
            net::Object::Fdb(entry) => {
                Object::Fdb(Named::new(entry.clone(), named(vec![entry.ifindex])))
            }
            net::Object::Neighbour(neighbour) => Object::Neighbour(Named::new(
                neighbour.clone(),
                named(vec![neighbour.ifindex]),
            )),
            net::Object::Route(route) => {
                Object::Route(Named::new(route.clone(), named(route.oifs().collect())))
            }
        }
    }

    /// The object as the model holds it.
    pub fn model(&self) -> net::Object {
        match self {
            Object::Fdb(f) => net::Object::Fdb(f.model().clone()),
            Object::Neighbour(n) => net::Object::Neighbour(n.model().clone()),
            Object::Route(r) => net::Object::Route(r.model().clone()),
        }
    }

    /// The object's identity: what the kernel replaces in place (`fdb <mac> dev <dev>`,
    /// `neigh <ip> dev <dev>`, `route <dst> table <t>` with metric and TOS when set).
    pub fn key(&self) -> String {
        match self {
            Object::Fdb(f) => format!("fdb {} dev {}", format_mac(&f.mac), f.dev(f.ifindex)),
            Object::Neighbour(n) => format!("neigh {} dev {}", n.ip, n.dev(n.ifindex)),
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
            Object::Fdb(f) => f.command(&f.dev(f.ifindex)),
            Object::Neighbour(n) => n.command(&n.dev(n.ifindex)),
            Object::Route(r) => r.command(|index| r.dev(index)),
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
                let mut text = format!(
                    "bridge fdb del {} dev {}",
                    format_mac(&f.mac),
                    f.dev(f.ifindex)
                );
                if let Some(dst) = f.dst {
                    text.push_str(&format!(" dst {dst}"));
                }
                text.push_str(" self");
                text
            }
            Object::Neighbour(n) => format!("ip neigh del {} dev {}", n.ip, n.dev(n.ifindex)),
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
            (Object::Neighbour(a), Object::Neighbour(b))
                if a.is_unresolved() && b.is_unresolved() =>
            {
                a.dev(a.ifindex) == b.dev(b.ifindex) && a.ifindex == b.ifindex && a.ip == b.ip
            }
            _ => current == *self,
        })
    }

    /// For a route, its destination; for neighbours and FDB entries nothing.
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

/// The object in `net` with the same identity as `like`, its devices named from `net`.
pub fn current(net: &Snapshot, like: &Object) -> Option<Object> {
    let found = match like {
        Object::Fdb(f) => net
            .fdb_of(f.ifindex)
            .find(|e| e.mac == f.mac && e.vlan.is_none() && e.master.is_none())
            .cloned()
            .map(net::Object::Fdb),
        Object::Neighbour(n) => net
            .neighbour(n.ifindex, &n.ip)
            .cloned()
            .map(net::Object::Neighbour),
        Object::Route(r) => net
            .routes_in_table(r.table)
            .find(|route| route.dst == r.dst && route.tos == r.tos && route.priority == r.priority)
            .cloned()
            .map(net::Object::Route),
    }?;
    Some(Object::of(net, &found))
}

#[cfg(test)]
impl Object {
    /// A permanent FDB entry for `mac` on `flannel.1` (index 3) towards `dst`, for tests.
    pub(crate) fn test_fdb(mac: &str, dst: &str) -> Self {
        let mac = crate::model::desired::Mac::parse(mac).expect("a MAC");
        Object::Fdb(Named::new(
            FdbEntry {
                ifindex: 3,
                mac: mac.0,
                dst: Some(dst.parse().expect("an address")),
                vlan: None,
                vni: None,
                port: None,
                state: net::NeighState::PERMANENT,
                master: None,
            },
            [(3, "flannel.1".to_owned())],
        ))
    }
}
