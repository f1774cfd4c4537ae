//! [`Snapshot::apply`]: one [`Update`] applied the way the kernel changes its own state,
//! including what the kernel changes without announcing it.

use super::{Address, Link, Route, RouteKind, Snapshot, Update};

impl Snapshot {
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
