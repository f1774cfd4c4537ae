//! The mirror's data model: plain data, no netlink types, cheap to read and easy to build
//! in unit tests.
//!
//! A [`Snapshot`] holds links, addresses, routes (every table), policy rules, neighbours
//! and the bridge FDB of one network namespace. [`Snapshot::apply`] applies one
//! [`Update`] the way the kernel changes its own state, including the changes the kernel
//! makes without telling anyone (IPv4 routes and neighbours flushed when a link goes
//! administratively down or disappears).

mod address;
mod apply;
mod fdb;
mod index;
mod link;
mod neighbour;
mod prefix;
mod route;
mod rule;

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

pub use self::{
    address::Address,
    fdb::FdbEntry,
    index::Resolution,
    link::{Link, Vxlan, format_mac},
    neighbour::{NeighState, Neighbour},
    prefix::{Prefix, PrefixError, is_link_local_v6},
    route::{
        NextHop, Route, RouteDisplay, RouteKind, TABLE_DEFAULT, TABLE_LOCAL, TABLE_MAIN, table_name,
    },
    rule::{Rule, RuleAction},
};
use self::{fdb::FdbTable, index::RouteTable, prefix::bits};

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
    /// A route replaced the first route with its key, or was added if there was none
    /// (RTM_NEWROUTE with NLM_F_REPLACE, `ip route replace`). The key is the table,
    /// destination, TOS and metric (IPv6: source prefix and metric, and whether the
    /// route can join an ECMP group).
    NewRoute(Route),
    /// A route was added next to the routes with its key (RTM_NEWROUTE without
    /// NLM_F_REPLACE, and each route of a dump): after them when `append`
    /// (NLM_F_APPEND; dumps come in the kernel's order), before them otherwise
    /// (`ip route prepend`). IPv6 always appends, and an IPv6 route with a gateway joins
    /// the ECMP route of its key as a sibling.
    AddRoute {
        /// The route.
        route: Route,
        /// After the routes with its key, rather than before.
        append: bool,
    },
    /// A route was removed (RTM_DELROUTE): the route the notification describes (IPv6:
    /// each of its paths).
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

/// One object of the kinds the overlay is made of and repair changes: an FDB entry, a
/// neighbour or a route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Object {
    /// A bridge FDB entry.
    Fdb(FdbEntry),
    /// An ARP/NDP neighbour.
    Neighbour(Neighbour),
    /// A route.
    Route(Route),
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
    fdb: FdbTable,
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

    /// The first route in `table` with destination `dst`, metric `priority`, TOS 0 and
    /// no source prefix (the kernel may hold more under that key, on other devices).
    pub fn route(&self, table: u32, dst: &Prefix, priority: u32) -> Option<&Route> {
        self.routes_to(table, dst)
            .find(|r| r.tos == 0 && r.src.is_none() && r.priority == priority)
    }

    /// Every route in `table` with destination `dst`, ordered by TOS (IPv6: source
    /// prefix) and metric, then in the kernel's order.
    pub fn routes_to(&self, table: u32, dst: &Prefix) -> impl Iterator<Item = &Route> {
        self.tables
            .get(&table)
            .map(|t| t.family(dst.is_ipv4()))
            .and_then(|t| t.by_len.get(&dst.len))
            .and_then(|map| map.get(&bits(&dst.network().addr)))
            .into_iter()
            .flatten()
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
        self.fdb.of(ifindex)
    }

    /// The FDB entries of one device for one MAC (one per VLAN, source VNI and
    /// destination).
    pub fn fdb_with_mac<'a>(
        &'a self,
        ifindex: u32,
        mac: &[u8; 6],
    ) -> impl Iterator<Item = &'a FdbEntry> + 'a {
        self.fdb.with_mac(ifindex, *mac)
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
}

#[cfg(test)]
mod tests;
