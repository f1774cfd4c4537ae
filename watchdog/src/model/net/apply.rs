//! [`Snapshot::apply`]: one [`Update`] applied the way the kernel changes its own state,
//! including what the kernel changes without announcing it.

use super::{Address, Link, RouteKind, Snapshot, TABLE_MAIN, Update};

impl Snapshot {
    /// Applies one change the way the kernel makes it.
    pub fn apply(&mut self, update: Update) {
        match update {
            Update::NewLink(link) => self.new_link(link),
            Update::DelLink(index) => self.del_link(index),
            Update::NewAddress(address) => self.new_address(address),
            Update::DelAddress(address) => self.del_address(&address),
            Update::NewRoute(route) => {
                let v4 = route.dst.is_ipv4();
                self.tables
                    .entry(route.table)
                    .or_default()
                    .family_mut(v4)
                    .replace(route);
            }
            Update::AddRoute { route, append } => {
                let v4 = route.dst.is_ipv4();
                self.tables
                    .entry(route.table)
                    .or_default()
                    .family_mut(v4)
                    .add(route, append);
            }
            Update::DelRoute(route) => {
                if let Some(table) = self.tables.get_mut(&route.table) {
                    table.family_mut(route.dst.is_ipv4()).remove(&route);
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
                    // A bridge entry moved to another port is announced on that port
                    // only: the insert drops the bridge's entry on the old one.
                    self.fdb.insert(entry);
                }
            }
            Update::DelFdb(entry) => {
                self.fdb.remove(&entry);
            }
        }
    }

    fn new_link(&mut self, link: Link) {
        let was_up = self.links.get(&link.index).map(|old| old.admin_up);
        let old_master = self.links.get(&link.index).and_then(|old| old.master);
        if old_master.is_some() && old_master != link.master {
            // A port leaving its bridge takes the bridge's entries for it along.
            self.fdb
                .retain(|&(i, ..), e| !(i == link.index && e.master == old_master));
        }
        if let Some(old) = self.links.get(&link.index)
            && old.name != link.name
        {
            self.link_names.remove(&old.name);
        }
        let (index, admin_up) = (link.index, link.admin_up);
        self.link_names.insert(link.name.clone(), index);
        self.links.insert(index, link);
        match (was_up, admin_up) {
            (Some(true), false) => {
                // The kernel flushes the device's IPv4 routes (but its local addresses'
                // routes in table local) and all its neighbours when it goes down, and
                // marks the device's paths of multipath routes dead (both families),
                // without announcing any of it.
                self.flush_ipv4_via(index, false);
                self.set_paths_dead(index, true, Family::V6);
                self.neighbours.retain(|(i, _), _| *i != index);
            }
            (Some(false), true) => self.set_paths_dead(index, false, Family::Both),
            _ => {}
        }
    }

    fn del_link(&mut self, index: u32) {
        if let Some(link) = self.links.remove(&index) {
            self.link_names.remove(&link.name);
        }
        self.neighbours.retain(|(i, _), _| *i != index);
        self.addresses.retain(|(i, _, _), _| *i != index);
        // A bridge going away takes its ports' entries with it, unannounced.
        self.fdb
            .retain(|&(i, ..), e| i != index && e.master != Some(index));
        for table in self.tables.values_mut() {
            // IPv4: every route with a path through the device, multipath or not.
            table.v4.retain(|r| r.oifs().all(|oif| oif != index));
            // IPv6 deletions are announced, but a dead device cannot route either way:
            // its routes and ECMP siblings go.
            table.v6.remove_paths_via(index);
        }
        self.drop_empty_tables();
    }

    /// What an IPv4 device going down (or losing its last address, `forced`) does to
    /// IPv4 routes: single-path routes through it go (local ones only when `forced`),
    /// its paths of multipath routes die, and routes left without a live path go.
    fn flush_ipv4_via(&mut self, index: u32, forced: bool) {
        for table in self.tables.values_mut() {
            table.v4.retain(|r| {
                !(r.nexthops.is_empty()
                    && r.oif == Some(index)
                    && (forced || r.kind != RouteKind::Local))
            });
            table.v4.set_dead(index, true);
        }
        self.drop_empty_tables();
    }

    /// Marks the paths of multipath routes of `family` through `index` dead (dropping
    /// routes left without a live path) or alive again.
    fn set_paths_dead(&mut self, index: u32, dead: bool, family: Family) {
        for table in self.tables.values_mut() {
            if family != Family::V6 {
                table.v4.set_dead(index, dead);
            }
            if family != Family::V4 {
                table.v6.set_dead(index, dead);
            }
        }
        self.drop_empty_tables();
    }

    fn drop_empty_tables(&mut self) {
        self.tables.retain(|_, t| t.v4.count + t.v6.count > 0);
    }

    fn new_address(&mut self, address: Address) {
        let (ifindex, ip) = (address.ifindex, address.prefix.addr);
        let key = (ifindex, ip, address.prefix.len);
        self.addresses.insert(key, address);
        // An IPv4 address on an up device brings its dead IPv4 paths back.
        if ip.is_ipv4() && self.links.get(&ifindex).is_some_and(|l| l.admin_up) {
            self.set_paths_dead(ifindex, false, Family::V4);
        }
    }

    fn del_address(&mut self, address: &Address) {
        let key = (address.ifindex, address.prefix.addr, address.prefix.len);
        self.addresses.remove(&key);
        let ip = address.prefix.addr;
        if !ip.is_ipv4() {
            return;
        }
        // When an IPv4 address leaves the namespace, the kernel silently flushes the
        // routes of table main that used it as their preferred source.
        if !self.addresses.values().any(|a| a.prefix.addr == ip)
            && let Some(main) = self.tables.get_mut(&TABLE_MAIN)
        {
            main.v4.retain(|r| r.prefsrc != Some(ip));
            self.drop_empty_tables();
        }
        // The device's last IPv4 address: the kernel disables IPv4 on it, flushing its
        // IPv4 routes (local ones too) and ARP entries without a word.
        let last = !self
            .addresses
            .keys()
            .any(|(i, a, _)| *i == address.ifindex && a.is_ipv4());
        if last {
            self.flush_ipv4_via(address.ifindex, true);
            self.neighbours
                .retain(|(i, n), _| !(*i == address.ifindex && n.is_ipv4()));
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
    Both,
}
