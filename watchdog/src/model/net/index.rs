//! The route index (per table and family, per prefix length a hash map) and the lookups
//! on it: longest-prefix match in one table and the policy-routed decision.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
};

use super::{
    NextHop, Prefix, Route, RouteKind, Rule, RuleAction, Snapshot, TABLE_DEFAULT, TABLE_LOCAL,
    TABLE_MAIN,
    prefix::{bits, mask, max_len},
};

/// Routes of one family in one table, indexed for longest-prefix match: per prefix
/// length, a hash map from the masked destination to the routes with that destination.
/// A destination's routes are ordered by their [`Route::group`] key (TOS or source
/// prefix, then metric) and, within one key, kept in the kernel's order: the kernel keeps
/// several routes under one key (IPv4 `ip route append`/`prepend`, the connected routes
/// of one prefix on two devices, IPv6 routes of one metric through different devices),
/// and tells them apart by their paths.
#[derive(Clone, Debug, Default)]
pub(super) struct FamilyTable {
    pub(super) by_len: HashMap<u8, HashMap<u128, Vec<Route>>>,
    /// Prefix lengths present, for iterating longest first.
    pub(super) lens: BTreeSet<u8>,
    pub(super) count: usize,
}

/// Whether an IPv6 route may join an ECMP group (the kernel's `rt6_qualify_for_ecmp`): it
/// has a gateway and was not learned from a router advertisement (RTPROT_RA).
fn ecmp(route: &Route) -> bool {
    const RTPROT_RA: u8 = 9;
    route.protocol != RTPROT_RA
        && (route.gateway.is_some() || route.nexthops.iter().any(|hop| hop.gateway.is_some()))
}

/// The paths of a route as (gateway, device) pairs: one for a single-path route.
fn paths(route: &Route) -> Vec<(Option<IpAddr>, Option<u32>)> {
    if route.nexthops.is_empty() {
        vec![(route.gateway, route.oif)]
    } else {
        route
            .nexthops
            .iter()
            .map(|hop| (hop.gateway, hop.oif))
            .collect()
    }
}

/// Merges the paths of `extra` into the IPv6 ECMP route `route` (as the kernel links a
/// new sibling), keeping paths sorted as the mirror stores them.
fn merge_paths(route: &mut Route, extra: &Route) {
    if route.nexthops.is_empty() {
        route.nexthops.push(NextHop {
            gateway: route.gateway.take(),
            oif: route.oif.take(),
            onlink: std::mem::take(&mut route.onlink),
            dead: false,
        });
    }
    let added: Vec<NextHop> = if extra.nexthops.is_empty() {
        vec![NextHop {
            gateway: extra.gateway,
            oif: extra.oif,
            onlink: extra.onlink,
            dead: false,
        }]
    } else {
        extra.nexthops.clone()
    };
    for hop in added {
        if !route
            .nexthops
            .iter()
            .any(|h| (h.gateway, h.oif) == (hop.gateway, hop.oif))
        {
            route.nexthops.push(hop);
        }
    }
    sort_paths(route);
}

/// IPv6 multipath routes keep their paths sorted by (device, gateway): the kernel lists
/// them from whichever sibling it reports, so only the set is meaningful.
pub(crate) fn sort_paths(route: &mut Route) {
    if !route.dst.is_ipv4() {
        route.nexthops.sort_by_key(|hop| (hop.oif, hop.gateway));
    }
}

/// An IPv6 multipath route left with one path is a single-path route again, as the
/// kernel reports it.
fn collapse(route: &mut Route) {
    if route.nexthops.len() == 1 && !route.dst.is_ipv4() {
        let hop = route.nexthops.remove(0);
        route.gateway = hop.gateway;
        route.oif = hop.oif;
        route.onlink = hop.onlink;
    }
}

impl FamilyTable {
    /// The routes with `dst`'s destination, created empty if absent.
    fn slot_mut(&mut self, dst: &Prefix) -> &mut Vec<Route> {
        self.lens.insert(dst.len);
        self.by_len
            .entry(dst.len)
            .or_default()
            .entry(bits(&dst.network().addr))
            // Most destinations have one route: no room for four (Vec's first growth).
            .or_insert_with(|| Vec::with_capacity(1))
    }

    /// Drops `dst`'s slot (and its length) if it has no route left.
    fn tidy(&mut self, dst: &Prefix) {
        let Some(map) = self.by_len.get_mut(&dst.len) else {
            return;
        };
        let key = bits(&dst.network().addr);
        if map.get(&key).is_some_and(Vec::is_empty) {
            map.remove(&key);
        }
        if map.is_empty() {
            self.by_len.remove(&dst.len);
            self.lens.remove(&dst.len);
        }
    }

    /// Recounts after an in-place change of `dst`'s slot.
    fn changed(&mut self, dst: &Prefix, before: usize) {
        let after = self
            .by_len
            .get(&dst.len)
            .and_then(|map| map.get(&bits(&dst.network().addr)))
            .map_or(0, Vec::len);
        self.count = self.count + after - before;
        self.tidy(dst);
    }

    fn slot_len(&self, dst: &Prefix) -> usize {
        self.by_len
            .get(&dst.len)
            .and_then(|map| map.get(&bits(&dst.network().addr)))
            .map_or(0, Vec::len)
    }

    /// RTM_NEWROUTE with NLM_F_REPLACE: `route` takes the place of the first route with
    /// its key (IPv6: the first of the same ECMP kind if there is one, and an ECMP
    /// route goes with its siblings); added when there is none.
    pub(super) fn replace(&mut self, route: Route) {
        let dst = route.dst;
        let before = self.slot_len(&dst);
        let slot = self.slot_mut(&dst);
        let group = group_range(slot, &route);
        if route.dst.is_ipv4() {
            if group.is_empty() {
                slot.insert(group.start, route);
            } else {
                slot[group.start] = route;
            }
        } else {
            // The first route of the same ECMP kind, else the first route of the key.
            let kind = ecmp(&route);
            let target = group
                .clone()
                .find(|&i| ecmp(&slot[i]) == kind)
                .or((!group.is_empty()).then_some(group.start));
            match target {
                Some(first) => {
                    let siblings = ecmp(&slot[first]);
                    slot[first] = route;
                    if siblings {
                        // The replaced route's siblings go with it.
                        let mut i = group.end;
                        while i > first + 1 {
                            i -= 1;
                            if ecmp(&slot[i]) {
                                slot.remove(i);
                            }
                        }
                    }
                }
                None => slot.insert(group.end, route),
            }
        }
        self.changed(&dst, before);
    }

    /// RTM_NEWROUTE without NLM_F_REPLACE (and every route of a dump): IPv4 puts `route`
    /// after the routes with its key when `append` (NLM_F_APPEND, `ip route append`, the
    /// kernel's own connected routes), before them otherwise (`ip route prepend`). IPv6
    /// puts it after them, and an ECMP route joins the group's ECMP route as a sibling
    /// (the kernel then reports the whole group, every sibling listed). A route already
    /// there (a notification that raced a dump) changes nothing.
    pub(super) fn add(&mut self, route: Route, append: bool) {
        let dst = route.dst;
        let before = self.slot_len(&dst);
        let slot = self.slot_mut(&dst);
        let group = group_range(slot, &route);
        if route.dst.is_ipv4() {
            if !slot[group.clone()].iter().any(|r| r.same_as(&route)) {
                slot.insert(if append { group.end } else { group.start }, route);
            }
        } else if ecmp(&route) {
            match group.clone().find(|&i| ecmp(&slot[i])) {
                Some(first) if !route.nexthops.is_empty() => {
                    // The notification lists the whole group.
                    slot[first] = route;
                    let mut i = group.end;
                    while i > first + 1 {
                        i -= 1;
                        if ecmp(&slot[i]) {
                            slot.remove(i);
                        }
                    }
                }
                Some(first) => merge_paths(&mut slot[first], &route),
                None => slot.insert(group.end, route),
            }
        } else if !slot[group.clone()].iter().any(|r| r.same_as(&route)) {
            slot.insert(group.end, route);
        }
        self.changed(&dst, before);
    }

    /// RTM_DELROUTE: IPv4 removes the route the notification describes; IPv6 removes
    /// each of its paths, whether the mirror holds it as a route of its own or as a
    /// path of an ECMP route (the kernel deletes siblings one by one, or a whole group
    /// in one notification).
    pub(super) fn remove(&mut self, route: &Route) {
        let dst = route.dst;
        let before = self.slot_len(&dst);
        if before == 0 {
            return;
        }
        let slot = self.slot_mut(&dst);
        let group = group_range(slot, route);
        if route.dst.is_ipv4() {
            if let Some(i) = group.clone().find(|&i| slot[i].same_as(route)) {
                slot.remove(i);
            }
        } else if let Some(i) = group.clone().find(|&i| slot[i].same_as(route)) {
            slot.remove(i);
        } else {
            for path in paths(route) {
                let group = group_range(slot, route);
                let Some(i) = group.clone().find(|&i| paths(&slot[i]).contains(&path)) else {
                    continue;
                };
                if slot[i].nexthops.is_empty() {
                    slot.remove(i);
                } else {
                    slot[i]
                        .nexthops
                        .retain(|hop| (hop.gateway, hop.oif) != path);
                    collapse(&mut slot[i]);
                }
            }
        }
        self.changed(&dst, before);
    }

    /// Marks the paths of multipath routes through `oif` dead (or alive again), then
    /// drops the routes whose every path is dead, as the kernel flushes them.
    pub(super) fn set_dead(&mut self, oif: u32, dead: bool) {
        for map in self.by_len.values_mut() {
            for slot in map.values_mut() {
                for route in slot.iter_mut() {
                    for hop in &mut route.nexthops {
                        if hop.oif == Some(oif) {
                            hop.dead = dead;
                        }
                    }
                }
            }
        }
        if dead {
            self.retain(|route| {
                route.nexthops.is_empty() || route.nexthops.iter().any(|hop| !hop.dead)
            });
        }
    }

    /// What a device's unregistration does to IPv6 routes: each route (or ECMP sibling)
    /// through it goes, the other siblings stay.
    pub(super) fn remove_paths_via(&mut self, oif: u32) {
        self.retain(|route| {
            let mut oifs = route.oifs().peekable();
            !(oifs.peek().is_some() && oifs.all(|o| o == oif))
        });
        for map in self.by_len.values_mut() {
            for slot in map.values_mut() {
                for route in slot.iter_mut() {
                    if route.nexthops.iter().any(|hop| hop.oif == Some(oif)) {
                        route.nexthops.retain(|hop| hop.oif != Some(oif));
                        collapse(route);
                    }
                }
            }
        }
    }

    pub(super) fn retain(&mut self, mut keep: impl FnMut(&Route) -> bool) {
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

    pub(super) fn iter(&self) -> impl Iterator<Item = &Route> {
        self.by_len.values().flat_map(|m| m.values().flatten())
    }

    /// The longest-prefix match for `dst` among routes `accept` allows; among routes
    /// with the same destination, the lowest metric wins, then the kernel's order (TOS 0
    /// routes without a source prefix only).
    pub(super) fn lookup(&self, dst: &IpAddr, accept: impl Fn(&Route) -> bool) -> Option<&Route> {
        let width = max_len(dst);
        let addr = bits(dst);
        for len in self.lens.iter().rev() {
            let Some(map) = self.by_len.get(len) else {
                continue;
            };
            if let Some(slot) = map.get(&(addr & mask(*len, width)))
                && let Some(route) = slot
                    .iter()
                    .find(|r| r.tos == 0 && r.src.is_none() && accept(r))
            {
                return Some(route);
            }
        }
        None
    }
}

/// The positions in `slot` of the routes with `route`'s key.
fn group_range(slot: &[Route], route: &Route) -> std::ops::Range<usize> {
    let key = route.group();
    let start = slot.partition_point(|r| r.group() < key);
    let end = start + slot[start..].partition_point(|r| r.group() == key);
    start..end
}

#[derive(Clone, Debug, Default)]
pub(super) struct RouteTable {
    pub(super) v4: FamilyTable,
    pub(super) v6: FamilyTable,
}

impl RouteTable {
    pub(super) fn family(&self, v4: bool) -> &FamilyTable {
        if v4 { &self.v4 } else { &self.v6 }
    }

    pub(super) fn family_mut(&mut self, v4: bool) -> &mut FamilyTable {
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

impl Snapshot {
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
}
