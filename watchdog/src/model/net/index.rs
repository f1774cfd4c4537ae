//! The route index (per table and family, per prefix length a hash map) and the lookups
//! on it: longest-prefix match in one table and the policy-routed decision.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
};

use super::{
    Prefix, Route, RouteKind, Rule, RuleAction, Snapshot, TABLE_DEFAULT, TABLE_LOCAL, TABLE_MAIN,
    prefix::{bits, mask, max_len},
};

/// Routes of one family in one table, indexed for longest-prefix match: per prefix
/// length, a hash map from the masked destination to the routes with that destination
/// (several when metrics or TOS differ), ordered by (tos, priority).
#[derive(Clone, Debug, Default)]
pub(super) struct FamilyTable {
    pub(super) by_len: HashMap<u8, HashMap<u128, Vec<Route>>>,
    /// Prefix lengths present, for iterating longest first.
    pub(super) lens: BTreeSet<u8>,
    pub(super) count: usize,
}

impl FamilyTable {
    pub(super) fn insert(&mut self, route: Route) {
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

    pub(super) fn remove(&mut self, dst: &Prefix, tos: u8, priority: u32) -> Option<Route> {
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
    /// with the same destination, the lowest metric wins (TOS 0 routes only).
    pub(super) fn lookup(&self, dst: &IpAddr, accept: impl Fn(&Route) -> bool) -> Option<&Route> {
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
