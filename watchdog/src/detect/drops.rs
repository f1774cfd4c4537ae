//! Drops whose kernel reason names the part of the stack that dropped them: a firewall
//! (`NETFILTER_DROP`), reverse-path filtering (`IP_RPFILTER`), a bad checksum (`IP_CSUM`,
//! `UDP_CSUM`, `TCP_CSUM`, `ICMP_CSUM`, `SKB_CSUM`). Only this node's pod and overlay
//! traffic counts: a packet from or to a pod network (a route through the VXLAN device, a
//! bridge or a veth), VXLAN packets (the device's UDP port), or any packet dropped inside a
//! pod's namespace. A host firewall dropping a port scan of the node is nobody's business
//! here.
//!
//! Each finding names the object to change: the chain whose policy or the rule whose
//! counter moved with the drops (from two readings of the nftables ruleset), the
//! interface and its `rp_filter` values, the peer and device of bad checksums with the
//! device's offloads. What the pipeline should read for that is [`stack_request`].

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use super::Inputs;
use crate::{
    findings::{Candidate, Kind, Severity},
    model::{
        counters::{DropFlow, growth},
        net::{Prefix, Resolution},
        stack::{Chain, Counter, Hook, Netfilter, NetfilterReadings, Rule, StackRequest, Table},
    },
};

/// The reason of a firewall drop.
pub const NETFILTER: &str = "NETFILTER_DROP";
/// The reason of a reverse-path drop.
pub const RPFILTER: &str = "IP_RPFILTER";
/// The reasons of bad checksums.
pub const CHECKSUM: &[&str] = &["IP_CSUM", "UDP_CSUM", "TCP_CSUM", "ICMP_CSUM", "SKB_CSUM"];

/// The most flows a finding lists; the rest are counted.
const MAX_FLOWS: usize = 5;

/// What makes a flow this node's pod or overlay traffic.
struct Scope {
    /// Pod networks: routes through a VXLAN device, or on a bridge or veth without a
    /// gateway (the node's own pod subnet, per-pod routes).
    pods: Vec<Prefix>,
    /// UDP ports of the VXLAN devices.
    vxlan_ports: BTreeSet<u16>,
    /// This host's addresses.
    local: BTreeSet<IpAddr>,
    /// The daemon's own namespace.
    own_netns: u32,
}

impl Scope {
    fn new(inputs: &Inputs<'_>) -> Self {
        let kind_of = |ifindex: u32| {
            inputs
                .net
                .link(ifindex)
                .and_then(|link| link.kind.as_deref())
        };
        // The underlay: the VXLAN devices' lower devices and their local addresses. A
        // node's uplink may be a veth too (a VM, a lab): its subnet is no pod network.
        let vxlans: Vec<_> = inputs
            .net
            .links()
            .filter_map(|link| link.vxlan.as_ref())
            .collect();
        let underlay_devices: BTreeSet<u32> = vxlans.iter().filter_map(|v| v.underlay).collect();
        let vtep_locals: Vec<IpAddr> = vxlans.iter().filter_map(|v| v.local).collect();
        let mut pods = Vec::new();
        for route in inputs.net.routes() {
            if route.dst.len == 0 || route.kind.is_reject() {
                continue;
            }
            if route.oifs().any(|oif| underlay_devices.contains(&oif))
                || vtep_locals.iter().any(|local| route.dst.contains(local))
            {
                continue;
            }
            let pod_route = route.oifs().any(|oif| match kind_of(oif) {
                Some("vxlan") => true,
                Some("bridge" | "veth") => route.gateway.is_none(),
                _ => false,
            });
            if pod_route {
                pods.push(route.dst);
            }
        }
        Self {
            pods,
            vxlan_ports: inputs
                .net
                .links()
                .filter_map(|link| link.vxlan.as_ref().map(|vxlan| vxlan.port))
                .collect(),
            local: inputs.net.addresses().map(|a| a.prefix.addr).collect(),
            own_netns: inputs.now.own_netns,
        }
    }

    fn is_pod(&self, addr: &IpAddr) -> bool {
        self.pods.iter().any(|prefix| prefix.contains(addr))
    }

    /// What the flow is, if it is this node's business: `pod traffic`, `overlay traffic`.
    fn concerns(&self, flow: &DropFlow) -> Option<&'static str> {
        if flow.protocol == 17 && self.vxlan_ports.contains(&flow.dport) {
            Some("overlay traffic")
        } else if self.is_pod(&flow.src) || self.is_pod(&flow.dst) || !self.own(flow.netns) {
            Some("pod traffic")
        } else {
            None
        }
    }

    /// Whether a drop happened in the daemon's own namespace (the only one whose
    /// configuration it reads). Without namespace attribution every drop counts as its.
    fn own(&self, netns: u32) -> bool {
        netns == self.own_netns || netns == watchdog_common::NETNS_UNKNOWN || self.own_netns == 0
    }

    /// The netfilter hook a flow of the daemon's namespace was dropped at, from its
    /// addresses: to this host (input), from it (output), through it (forward).
    fn hook(&self, flow: &DropFlow) -> Hook {
        if self.local.contains(&flow.dst) || is_multicast_or_broadcast(&flow.dst) {
            Hook::Input
        } else if self.local.contains(&flow.src) {
            Hook::Output
        } else {
            Hook::Forward
        }
    }
}

fn is_multicast_or_broadcast(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => v4.is_multicast() || v4.is_broadcast() || v4.octets()[3] == 255,
        IpAddr::V6(v6) => v6.is_multicast(),
    }
}

impl Inputs<'_> {
    /// Drops per flow within the window, of `reasons`, that concern this node; non-zero
    /// only.
    fn flow_deltas<'a>(
        &'a self,
        scope: &'a Scope,
        reasons: &'a [&'a str],
    ) -> impl Iterator<Item = (&'a DropFlow, u64, &'static str)> + 'a {
        self.now.drop_flows.iter().filter_map(move |(flow, now)| {
            if !reasons.contains(&flow.reason.as_str()) {
                return None;
            }
            let then = self.then.drop_flows.get(flow).copied().unwrap_or(0);
            let delta = growth(*now, then);
            let concerns = scope.concerns(flow)?;
            (delta > 0).then_some((flow, delta, concerns))
        })
    }

    /// A namespace's name: the pod, `node`, or `netns:<inode>`.
    fn namespace(&self, netns: u32) -> String {
        self.now
            .client_names
            .get(&netns)
            .cloned()
            .unwrap_or_else(|| format!("netns:{netns}"))
    }

    /// The device of a flow of the daemon's namespace, by name.
    fn flow_dev(&self, flow: &DropFlow) -> Option<String> {
        (flow.ifindex != 0).then(|| self.dev(flow.ifindex))
    }
}

/// Drops of one group of flows.
#[derive(Default)]
struct Group<'a> {
    total: u64,
    flows: Vec<(&'a DropFlow, u64)>,
    concerns: BTreeSet<&'static str>,
}

impl<'a> Group<'a> {
    fn add(&mut self, flow: &'a DropFlow, delta: u64, concerns: &'static str) {
        self.total += delta;
        self.flows.push((flow, delta));
        self.concerns.insert(concerns);
    }

    /// The busiest flows first.
    fn sorted(mut self) -> Self {
        self.flows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        self
    }

    /// `pod traffic 10.244.1.2 → 10.244.2.2` (and how many more flows).
    fn summary(&self) -> String {
        let concerns: Vec<&str> = self.concerns.iter().copied().collect();
        let first = self
            .flows
            .first()
            .map(|(flow, _)| format!("{} → {}", flow.src, flow.dst))
            .unwrap_or_default();
        let more = match self.flows.len() {
            0 | 1 => String::new(),
            n => format!(" (and {} more flows)", n - 1),
        };
        format!("{} {first}{more}", concerns.join(" and "))
    }

    /// Adds `flow` evidence (up to [`MAX_FLOWS`]) and the drop count.
    fn evidence(&self, inputs: &Inputs<'_>, mut candidate: Candidate) -> Candidate {
        candidate = candidate.with("drops_in_window", self.total);
        for (flow, count) in self.flows.iter().take(MAX_FLOWS) {
            let dev = inputs
                .flow_dev(flow)
                .filter(|_| inputs.now.own_netns == flow.netns || inputs.now.own_netns == 0)
                .map(|dev| format!(" dev {dev}"))
                .unwrap_or_default();
            candidate = candidate.with(
                "flow",
                format!(
                    "{}{dev}: {count} dropped ({})",
                    flow.describe(),
                    flow.reason
                ),
            );
        }
        if self.flows.len() > MAX_FLOWS {
            candidate = candidate.with(
                "more_flows",
                format!("{} more", self.flows.len() - MAX_FLOWS),
            );
        }
        let mut clients: Vec<String> = self
            .flows
            .iter()
            .filter(|(flow, _)| flow.netns != inputs.now.own_netns)
            .map(|(flow, _)| inputs.namespace(flow.netns))
            .collect();
        clients.sort();
        clients.dedup();
        if !clients.is_empty() {
            candidate = candidate.with("client", clients.join(","));
        }
        candidate
    }
}

/// Whether the drops of a group are sustained: `min_drops` within the window.
fn sustained(inputs: &Inputs<'_>, group: &Group<'_>) -> bool {
    group.total >= inputs.settings.min_drops
}

// ---------------------------------------------------------------- netfilter

/// Firewall drops of this node's pod or overlay traffic, named by the chain whose policy or
/// the rule whose counter moved with them (two readings of the ruleset), per hook.
pub fn firewall_drops(inputs: &Inputs<'_>) -> Vec<Candidate> {
    let scope = Scope::new(inputs);
    // (hook, IPv6, the pod's namespace for drops inside a pod) → flows.
    let mut groups: BTreeMap<(Option<Hook>, bool, Option<u32>), Group<'_>> = BTreeMap::new();
    for (flow, delta, concerns) in inputs.flow_deltas(&scope, &[NETFILTER]) {
        let key = if scope.own(flow.netns) {
            (Some(scope.hook(flow)), flow.dst.is_ipv6(), None)
        } else {
            (None, flow.dst.is_ipv6(), Some(flow.netns))
        };
        groups.entry(key).or_default().add(flow, delta, concerns);
    }
    let mut candidates = Vec::new();
    for ((hook, v6, pod), group) in groups {
        let group = group.sorted();
        if !sustained(inputs, &group) {
            continue;
        }
        match (hook, pod) {
            (Some(hook), _) => {
                candidates.extend(in_own_namespace(inputs, &scope, hook, v6, &group))
            }
            (None, Some(netns)) => {
                let name = inputs.namespace(netns);
                let candidate = Candidate::new(
                    Kind::FirewallDrop,
                    format!("netfilter in {name}"),
                    Severity::Critical,
                )
                .with(
                    "problem",
                    format!(
                        "a firewall inside {name}'s network namespace drops {}; its rules \
                         are not read (`nsenter -n -t <pid> nft list ruleset`)",
                        group.summary()
                    ),
                );
                candidates.push(group.evidence(inputs, candidate));
            }
            (None, None) => {}
        }
    }
    candidates
}

/// The hooks a packet dropped at `hook` passed on its way (a prerouting or postrouting
/// chain may have dropped it too).
fn hooks_on_the_way(hook: Hook) -> &'static [Hook] {
    match hook {
        Hook::Forward => &[
            Hook::Ingress,
            Hook::Prerouting,
            Hook::Forward,
            Hook::Postrouting,
            Hook::Egress,
        ],
        Hook::Input => &[Hook::Ingress, Hook::Prerouting, Hook::Input],
        Hook::Output => &[Hook::Output, Hook::Postrouting, Hook::Egress],
        _ => &[],
    }
}

/// What dropped the packets, by the counters that moved.
enum Culprit<'a> {
    /// A base chain's drop policy.
    Policy {
        table: &'a Table,
        chain: &'a Chain,
        moved: u64,
    },
    /// A rule whose verdict drops or rejects.
    Rule {
        table: &'a Table,
        chain: &'a Chain,
        rule: &'a Rule,
        moved: u64,
    },
}

/// How much a counter grew from `baseline` (absent: from zero).
fn moved(latest: Option<Counter>, baseline: Option<Counter>) -> u64 {
    match (latest, baseline) {
        (Some(now), then) => growth(now.packets, then.map_or(0, |c| c.packets)),
        (None, _) => 0,
    }
}

/// The chains of `table` a packet at one of `hooks` can reach: the base chains there and
/// every chain they jump or go to.
fn reachable<'a>(table: &'a Table, hooks: &[Hook]) -> Vec<&'a Chain> {
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut queue: Vec<&Chain> = table
        .chains
        .iter()
        .filter(|chain| chain.base.as_ref().is_some_and(|b| hooks.contains(&b.hook)))
        .collect();
    let mut found = Vec::new();
    while let Some(chain) = queue.pop() {
        if !seen.insert(&chain.name) {
            continue;
        }
        found.push(chain);
        for rule in &chain.rules {
            if let Some(
                crate::model::stack::Verdict::Jump(target)
                | crate::model::stack::Verdict::Goto(target),
            ) = &rule.verdict
                && let Some(next) = table.chains.iter().find(|c| &c.name == target)
            {
                queue.push(next);
            }
        }
    }
    found
}

/// The tables whose IP hooks see packets of the family of `v6` (and `netdev` ones).
fn tables_for(netfilter: &Netfilter, v6: bool) -> impl Iterator<Item = &Table> {
    netfilter.tables.iter().flatten().filter(move |table| {
        table.family.sees(v6) || table.family == crate::model::stack::Family::Netdev
    })
}

fn culprits<'a>(readings: &'a NetfilterReadings, hook: Hook, v6: bool) -> Vec<Culprit<'a>> {
    let hooks = hooks_on_the_way(hook);
    let baseline = &readings.baseline;
    let before = |table: &Table, chain: &Chain| -> Option<&'a Chain> {
        baseline
            .tables
            .as_ref()
            .ok()?
            .iter()
            .find(|t| t.family == table.family && t.name == table.name)?
            .chains
            .iter()
            .find(|c| c.name == chain.name)
    };
    let mut found = Vec::new();
    for table in tables_for(&readings.latest, v6) {
        for chain in reachable(table, hooks) {
            let then = before(table, chain);
            if chain.base.as_ref().is_some_and(|base| base.policy_drop) {
                let moved = moved(chain.counter, then.and_then(|c| c.counter));
                if moved > 0 {
                    found.push(Culprit::Policy {
                        table,
                        chain,
                        moved,
                    });
                }
            }
            for rule in &chain.rules {
                if !rule.verdict.as_ref().is_some_and(|v| v.drops()) {
                    continue;
                }
                let earlier = then
                    .and_then(|c| c.rules.iter().find(|r| r.handle == rule.handle))
                    .and_then(|r| r.counter);
                let moved = moved(rule.counter, earlier);
                if moved > 0 {
                    found.push(Culprit::Rule {
                        table,
                        chain,
                        rule,
                        moved,
                    });
                }
            }
        }
    }
    found
}

/// Whether the table is iptables-nft's (`ip filter` with upper-case chains): its fix is
/// an `iptables` command.
fn iptables_style(table: &Table, chain: &Chain) -> bool {
    matches!(
        table.name.as_str(),
        "filter" | "nat" | "mangle" | "raw" | "security"
    ) && chain.name.chars().any(|c| c.is_ascii_uppercase())
}

/// "(Docker?)" when the table has Docker's chains.
fn docker_hint(table: &Table) -> &'static str {
    if table.chains.iter().any(|c| c.name.starts_with("DOCKER")) {
        " (Docker?)"
    } else {
        ""
    }
}

/// The pod networks a group's flows come from or go to, for the fix.
fn pod_networks(scope: &Scope, group: &Group<'_>) -> Vec<Prefix> {
    let mut nets: Vec<Prefix> = group
        .flows
        .iter()
        .flat_map(|(flow, _)| [flow.src, flow.dst])
        .filter_map(|addr| {
            scope
                .pods
                .iter()
                .filter(|p| p.contains(&addr))
                .max_by_key(|p| p.len)
                .copied()
        })
        .collect();
    nets.sort();
    nets.dedup();
    nets
}

fn in_own_namespace(
    inputs: &Inputs<'_>,
    scope: &Scope,
    hook: Hook,
    v6: bool,
    group: &Group<'_>,
) -> Vec<Candidate> {
    let readings = inputs.now.stack.netfilter.as_ref();
    // Wait for a second reading (about a second) before naming a chain: only counters
    // that moved say which one it is.
    if let Some(readings) = readings
        && readings.latest.tables.is_ok()
        && readings.latest.at == readings.baseline.at
    {
        return Vec::new();
    }
    let found = readings.map(|r| culprits(r, hook, v6)).unwrap_or_default();
    let iptables = if v6 { "ip6tables" } else { "iptables" };
    let mut candidates = Vec::new();
    for culprit in &found {
        let candidate = match culprit {
            Culprit::Policy {
                table,
                chain,
                moved,
            } => {
                let base = chain.base.as_ref().expect("a policy is a base chain's");
                let fix = if iptables_style(table, chain) {
                    let accepts: Vec<String> = pod_networks(scope, group)
                        .iter()
                        .take(2)
                        .map(|net| {
                            format!(
                                "`{iptables} -I {chain} -s {net} -j ACCEPT` and `-d {net}`",
                                chain = chain.name
                            )
                        })
                        .collect();
                    let accepts = if accepts.is_empty() {
                        "a rule for the pod networks".to_owned()
                    } else {
                        accepts.join(", ")
                    };
                    format!(
                        "accept the pod traffic before the policy: {accepts}; or \
                         `{iptables} -P {} ACCEPT`",
                        chain.name
                    )
                } else {
                    format!(
                        "accept the pod traffic in the chain (`nft insert rule {} {} … accept`) \
                         or `nft chain {} {} '{{ policy accept; }}'`",
                        table.id(),
                        chain.name,
                        table.id(),
                        chain.name
                    )
                };
                Candidate::new(
                    Kind::FirewallDrop,
                    format!("chain {} {} policy drop", table.id(), chain.name),
                    Severity::Critical,
                )
                .with(
                    "problem",
                    format!(
                        "{} policy drop{} drops {}",
                        chain.name,
                        docker_hint(table),
                        group.summary()
                    ),
                )
                .with("hook", base.hook.as_str())
                .with("table", table.id())
                .with("chain", &chain.name)
                .with("policy", "drop")
                .with("policy_counter_moved", moved)
                .with("fix", fix)
            }
            Culprit::Rule {
                table,
                chain,
                rule,
                moved,
            } => {
                let fix = if iptables_style(table, chain) {
                    format!(
                        "delete or narrow the rule (`{iptables} -L {} -v -n --line-numbers` \
                         shows it), or accept the pod traffic before it",
                        chain.name
                    )
                } else {
                    format!(
                        "`nft delete rule {} {} handle {}`, or narrow it so it no longer \
                         matches pod traffic",
                        table.id(),
                        chain.name,
                        rule.handle
                    )
                };
                let mut candidate = Candidate::new(
                    Kind::FirewallDrop,
                    format!("rule {} {} handle {}", table.id(), chain.name, rule.handle),
                    Severity::Critical,
                )
                .with(
                    "problem",
                    format!(
                        "a rule of {}{} drops {}",
                        chain.name,
                        docker_hint(table),
                        group.summary()
                    ),
                )
                .with("hook", hook.as_str())
                .with("table", table.id())
                .with("chain", &chain.name)
                .with("rule", &rule.text)
                .with("rule_counter_moved", moved);
                if let Some(comment) = &rule.comment {
                    candidate = candidate.with("comment", comment);
                }
                candidate.with("fix", fix)
            }
        };
        candidates.push(group.evidence(inputs, candidate));
    }
    if !candidates.is_empty() {
        return candidates;
    }
    // No counter moved: say what is known.
    let mut candidate = Candidate::new(
        Kind::FirewallDrop,
        format!("netfilter {} hook", hook.as_str()),
        Severity::Critical,
    )
    .with(
        "problem",
        format!(
            "netfilter drops {} at the {} hook",
            group.summary(),
            hook.as_str()
        ),
    )
    .with("hook", hook.as_str());
    match readings {
        None => {
            candidate = candidate.with(
                "ruleset",
                "not read (probes.explain_drops = false): `nft list ruleset`",
            );
        }
        Some(readings) => {
            let latest = &readings.latest;
            match &latest.tables {
                Err(why) => candidate = candidate.with("ruleset", why),
                Ok(_) => {
                    let hooks = hooks_on_the_way(hook);
                    let mut uncounted = Vec::new();
                    for table in tables_for(latest, v6) {
                        for chain in reachable(table, hooks) {
                            if chain.base.as_ref().is_some_and(|b| b.policy_drop)
                                && chain.counter.is_none()
                            {
                                uncounted.push(format!(
                                    "chain {} {} policy drop (no counter)",
                                    table.id(),
                                    chain.name
                                ));
                            }
                            for rule in &chain.rules {
                                if rule.verdict.as_ref().is_some_and(|v| v.drops())
                                    && rule.counter.is_none()
                                {
                                    uncounted.push(format!(
                                        "rule {} {} handle {}: {} (no counter)",
                                        table.id(),
                                        chain.name,
                                        rule.handle,
                                        rule.text
                                    ));
                                }
                            }
                        }
                    }
                    if uncounted.is_empty() {
                        candidate = candidate.with(
                            "ruleset",
                            "no nftables chain or rule on the way counted these drops",
                        );
                    }
                    for line in uncounted.into_iter().take(MAX_FLOWS) {
                        candidate = candidate.with("suspect", line);
                    }
                }
            }
            if !latest.legacy.is_empty() {
                candidate = candidate.with(
                    "iptables_legacy",
                    format!(
                        "tables {} exist: their rules are not read (`iptables-legacy -L -v -n`)",
                        latest.legacy.join(", ")
                    ),
                );
            }
        }
    }
    vec![group.evidence(inputs, candidate)]
}

// ---------------------------------------------------------------- rp_filter

/// Reverse-path drops of this node's pod or overlay traffic, per interface they arrived on,
/// with the interface's `rp_filter` values and the route back to the sources.
pub fn rp_filter_drops(inputs: &Inputs<'_>) -> Vec<Candidate> {
    let scope = Scope::new(inputs);
    let mut groups: BTreeMap<(u32, u32), Group<'_>> = BTreeMap::new();
    for (flow, delta, concerns) in inputs.flow_deltas(&scope, &[RPFILTER]) {
        groups
            .entry((flow.netns, flow.ifindex))
            .or_default()
            .add(flow, delta, concerns);
    }
    let mut candidates = Vec::new();
    for ((netns, ifindex), group) in groups {
        let group = group.sorted();
        if !sustained(inputs, &group) {
            continue;
        }
        if !scope.own(netns) {
            let name = inputs.namespace(netns);
            let candidate = Candidate::new(
                Kind::RpFilterDrop,
                format!("rp_filter in {name}"),
                Severity::Critical,
            )
            .with(
                "problem",
                format!(
                    "reverse-path filtering inside {name}'s network namespace drops {}",
                    group.summary()
                ),
            );
            candidates.push(group.evidence(inputs, candidate));
            continue;
        }
        let dev = inputs.dev(ifindex);
        let mut candidate = Candidate::new(
            Kind::RpFilterDrop,
            format!("rp_filter dev {dev}"),
            Severity::Critical,
        );
        // The route back to the busiest source: not through `dev` (asymmetric routing).
        let back = group
            .flows
            .first()
            .map(|(flow, _)| match inputs.route_for(flow.src) {
                Some(Resolution::Route { route, .. }) => {
                    let via: Vec<String> = route.oifs().map(|oif| inputs.dev(oif)).collect();
                    format!(
                        "the route back to {} leaves via {} ({})",
                        flow.src,
                        if via.is_empty() {
                            "no device".to_owned()
                        } else {
                            via.join(",")
                        },
                        inputs.describe(route)
                    )
                }
                Some(Resolution::Rejected { rule }) => {
                    format!(
                        "the route back to {} is rejected by rule {}",
                        flow.src, rule.priority
                    )
                }
                None => format!("there is no route back to {}", flow.src),
            });
        candidate = candidate.with(
            "problem",
            format!(
                "reverse-path filtering on {dev} drops {}{}",
                group.summary(),
                back.as_ref().map(|b| format!(": {b}")).unwrap_or_default()
            ),
        );
        if let Some(back) = back {
            candidate = candidate.with("route_back", back);
        }
        match &inputs.now.stack.rp_filter {
            Some(values) => {
                let value = |name: &str| {
                    values
                        .values
                        .get(name)
                        .map_or_else(|| "?".to_owned(), |v| v.to_string())
                };
                let mode = match values.effective(&dev) {
                    Some(0) => "off",
                    Some(1) => "strict",
                    Some(2) => "loose",
                    _ => "unknown",
                };
                candidate = candidate
                    .with(
                        "rp_filter",
                        format!(
                            "net.ipv4.conf.all.rp_filter={} net.ipv4.conf.{dev}.rp_filter={} \
                             (the larger applies: {mode})",
                            value("all"),
                            value(&dev)
                        ),
                    )
                    .with(
                        "fix",
                        format!(
                            "loose mode on {dev}: `echo 2 > /proc/sys/net/ipv4/conf/{dev}/rp_filter` \
                             and, if all is 1, `echo 2 > /proc/sys/net/ipv4/conf/all/rp_filter` \
                             (persist in /etc/sysctl.d); or make the route back leave via {dev}"
                        ),
                    );
            }
            None => {
                candidate = candidate.with(
                    "rp_filter",
                    format!("not read yet: `sysctl net.ipv4.conf.all.rp_filter net.ipv4.conf.{dev}.rp_filter`"),
                );
            }
        }
        candidates.push(group.evidence(inputs, candidate));
    }
    candidates
}

// ---------------------------------------------------------------- checksums

/// Bad-checksum drops of this node's pod or overlay traffic, per sending peer and the
/// device they arrived on, with the device's checksum offloads.
pub fn checksum_drops(inputs: &Inputs<'_>) -> Vec<Candidate> {
    let scope = Scope::new(inputs);
    let mut groups: BTreeMap<(u32, u32, IpAddr), Group<'_>> = BTreeMap::new();
    for (flow, delta, concerns) in inputs.flow_deltas(&scope, CHECKSUM) {
        groups
            .entry((flow.netns, flow.ifindex, flow.src))
            .or_default()
            .add(flow, delta, concerns);
    }
    let mut candidates = Vec::new();
    for ((netns, ifindex, peer), group) in groups {
        let group = group.sorted();
        if !sustained(inputs, &group) {
            continue;
        }
        let own = scope.own(netns);
        let dev = if own {
            inputs.dev(ifindex)
        } else {
            format!("#{ifindex} in {}", inputs.namespace(netns))
        };
        let mut reasons: BTreeMap<&str, u64> = BTreeMap::new();
        for (flow, count) in &group.flows {
            *reasons.entry(flow.reason.as_str()).or_default() += count;
        }
        let reasons: Vec<String> = reasons.iter().map(|(r, n)| format!("{r} {n}")).collect();
        let vxlan = group.concerns.contains("overlay traffic");
        let what = if vxlan {
            "VXLAN packets with a bad outer UDP checksum"
        } else {
            "packets with bad checksums"
        };
        let mut candidate = Candidate::new(
            Kind::ChecksumDrop,
            format!("checksum drops from {peer} dev {dev}"),
            Severity::Critical,
        )
        .with(
            "problem",
            format!("{peer} sends {what}; {dev} drops {}", group.summary()),
        )
        .with("reasons", reasons.join(", "));
        if own {
            for device in offload_devices(inputs, ifindex) {
                let shown = match inputs
                    .now
                    .stack
                    .offloads
                    .as_ref()
                    .and_then(|all| all.get(&device))
                {
                    Some(offloads) => match &offloads.features {
                        Ok(features) => features
                            .iter()
                            .filter(|(name, _)| {
                                *name == "rx-checksum" || name.starts_with("tx-checksum-ip")
                            })
                            .map(|(name, on)| format!("{name} {}", if *on { "on" } else { "off" }))
                            .collect::<Vec<_>>()
                            .join(", "),
                        Err(why) => why.clone(),
                    },
                    None => format!("not read yet: `ethtool -k {device}`"),
                };
                candidate = candidate.with("offloads", format!("{device}: {shown}"));
            }
        }
        let fix = if vxlan {
            format!(
                "on the sender ({peer}): turn off the VXLAN device's checksum offload \
                 (`ethtool -K flannel.1 tx-checksum-ip-generic off`, flannel#1279) and check \
                 its NIC and driver; here `ethtool -k {dev}` shows what this side validates"
            )
        } else {
            format!(
                "on the sender ({peer}): check its NIC, driver and checksum offloads \
                 (`ethtool -k <dev>`; `ethtool -K <dev> tx off` to compare)"
            )
        };
        candidate = candidate.with("fix", fix);
        candidates.push(group.evidence(inputs, candidate));
    }
    candidates
}

/// The devices whose offloads explain checksum drops on `ifindex`: the device itself and,
/// for a VXLAN device, its underlay.
fn offload_devices(inputs: &Inputs<'_>, ifindex: u32) -> Vec<String> {
    let Some(link) = inputs.net.link(ifindex) else {
        return Vec::new();
    };
    let mut devices = vec![link.name.clone()];
    if let Some(underlay) = link
        .vxlan
        .as_ref()
        .and_then(|vxlan| vxlan.underlay)
        .and_then(|index| inputs.net.link(index))
    {
        devices.push(underlay.name.clone());
    }
    devices
}

// ---------------------------------------------------------------- what to read

/// What the stack source should read before the next cycle: the ruleset while netfilter
/// drops of this node's traffic are seen in its namespace, the `rp_filter` values of the
/// devices reverse-path drops happen on, the offloads of the devices checksum drops
/// happen on. Nothing on a quiet node.
pub fn stack_request(inputs: &Inputs<'_>) -> StackRequest {
    let scope = Scope::new(inputs);
    let mut request = StackRequest::default();
    let mut reasons: Vec<&str> = vec![NETFILTER, RPFILTER];
    reasons.extend_from_slice(CHECKSUM);
    let mut devices: HashMap<u32, Vec<String>> = HashMap::new();
    for (flow, _, _) in inputs.flow_deltas(&scope, &reasons) {
        if !scope.own(flow.netns) {
            continue;
        }
        match flow.reason.as_str() {
            NETFILTER => request.netfilter = true,
            RPFILTER => {
                if let Some(link) = inputs.net.link(flow.ifindex) {
                    request.rp_filter.insert(link.name.clone());
                }
            }
            _ => request.offloads.extend(
                devices
                    .entry(flow.ifindex)
                    .or_insert_with(|| offload_devices(inputs, flow.ifindex))
                    .iter()
                    .cloned(),
            ),
        }
    }
    request
}

#[cfg(test)]
mod tests {
    use std::{
        sync::Arc,
        time::{Duration, Instant},
    };

    use super::*;
    use crate::{
        config::DetectConfig,
        detect::Sample,
        model::{
            net::{Address, Link, Route, Snapshot, Update, Vxlan},
            probe::ProbeBook,
            stack::{BaseChain, Family, Offloads, RpFilter, Stack, Verdict},
        },
    };

    const OWN: u32 = 4026531840;
    const POD: u32 = 4026532100;
    const ETH0: u32 = 2;
    const FLANNEL: u32 = 3;
    const CNI0: u32 = 4;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn link(index: u32, name: &str, kind: Option<&str>) -> Link {
        Link {
            index,
            name: name.into(),
            kind: kind.map(str::to_owned),
            admin_up: true,
            oper_up: true,
            mtu: 1500,
            master: None,
            mac: None,
            vxlan: None,
        }
    }

    /// Node 0 of a Flannel overlay: eth0 192.168.77.10/24, flannel.1, cni0 with the pod
    /// subnet 10.244.0.0/24, a route to node 1's pods.
    fn node() -> Snapshot {
        let mut net = Snapshot::new();
        net.apply(Update::NewLink(link(ETH0, "eth0", None)));
        net.apply(Update::NewLink(Link {
            vxlan: Some(Vxlan {
                vni: 1,
                local: Some(ip("192.168.77.10")),
                port: 8472,
                underlay: Some(ETH0),
                learning: false,
            }),
            ..link(FLANNEL, "flannel.1", Some("vxlan"))
        }));
        net.apply(Update::NewLink(link(CNI0, "cni0", Some("bridge"))));
        for (ifindex, address) in [
            (ETH0, "192.168.77.10/24"),
            (FLANNEL, "10.244.0.0/32"),
            (CNI0, "10.244.0.1/24"),
        ] {
            net.apply(Update::NewAddress(Address {
                ifindex,
                prefix: address.parse().unwrap(),
            }));
        }
        for (dst, oif, gateway) in [
            ("192.168.77.0/24", ETH0, None),
            ("10.244.0.0/24", CNI0, None),
            ("10.244.1.0/24", FLANNEL, Some("10.244.1.0")),
        ] {
            net.apply(Update::NewRoute(Route {
                oif: Some(oif),
                gateway: gateway.map(ip),
                onlink: gateway.is_some(),
                ..Route::unicast(dst.parse().unwrap())
            }));
        }
        net
    }

    fn flow(reason: &str, netns: u32, ifindex: u32, src: &str, dst: &str, udp: u16) -> DropFlow {
        DropFlow {
            netns,
            reason: reason.into(),
            ifindex,
            src: ip(src),
            dst: ip(dst),
            protocol: if udp == 0 { 6 } else { 17 },
            dport: udp,
        }
    }

    /// Samples 10 s apart with `flows` dropped `count` times each in between.
    fn samples(flows: &[DropFlow], count: u64, stack: Stack) -> (Sample, Sample) {
        let start = Instant::now();
        let then = Sample {
            at: Some(start),
            own_netns: OWN,
            ..Sample::default()
        };
        let mut now = Sample {
            at: Some(start + Duration::from_secs(10)),
            own_netns: OWN,
            stack,
            ..Sample::default()
        };
        for flow in flows {
            now.drop_flows.insert(flow.clone(), count);
        }
        now.client_names.insert(POD, "default/web".into());
        (then, now)
    }

    fn judge(net: &Snapshot, then: &Sample, now: &Sample) -> (Vec<Candidate>, StackRequest) {
        let settings = DetectConfig::default();
        let probes = ProbeBook::default();
        let inputs = Inputs {
            net,
            now,
            then,
            recent: then,
            settings: &settings,
            probes: &probes,
        };
        let mut candidates = firewall_drops(&inputs);
        candidates.extend(rp_filter_drops(&inputs));
        candidates.extend(checksum_drops(&inputs));
        (candidates, stack_request(&inputs))
    }

    fn forward_chain(policy_packets: u64, rule_packets: u64) -> Table {
        Table {
            family: Family::Ip,
            name: "filter".into(),
            chains: vec![
                Chain {
                    name: "FORWARD".into(),
                    base: Some(BaseChain {
                        hook: Hook::Forward,
                        priority: 0,
                        policy_drop: true,
                        kind: "filter".into(),
                    }),
                    counter: Some(Counter {
                        packets: policy_packets,
                        bytes: 0,
                    }),
                    rules: vec![Rule {
                        handle: 4,
                        counter: Some(Counter::default()),
                        verdict: Some(Verdict::Jump("DOCKER-USER".into())),
                        text: "counter jump DOCKER-USER".into(),
                        comment: None,
                    }],
                },
                Chain {
                    name: "DOCKER-USER".into(),
                    base: None,
                    counter: None,
                    rules: vec![Rule {
                        handle: 9,
                        counter: Some(Counter {
                            packets: rule_packets,
                            bytes: 0,
                        }),
                        verdict: Some(Verdict::Drop),
                        text: "ip saddr 10.244.0.0/24 counter drop".into(),
                        comment: Some("quarantine".into()),
                    }],
                },
                // Input: a host firewall dropping a port scan; its counter moves too.
                Chain {
                    name: "INPUT".into(),
                    base: Some(BaseChain {
                        hook: Hook::Input,
                        priority: 0,
                        policy_drop: true,
                        kind: "filter".into(),
                    }),
                    counter: Some(Counter {
                        packets: policy_packets * 3,
                        bytes: 0,
                    }),
                    rules: Vec::new(),
                },
            ],
        }
    }

    fn readings(baseline: Table, latest: Table) -> Stack {
        let start = Instant::now();
        Stack {
            netfilter: Some(NetfilterReadings {
                baseline: Arc::new(Netfilter {
                    at: start,
                    tables: Ok(vec![baseline]),
                    legacy: Vec::new(),
                }),
                latest: Arc::new(Netfilter {
                    at: start + Duration::from_secs(1),
                    tables: Ok(vec![latest]),
                    legacy: Vec::new(),
                }),
            }),
            ..Stack::default()
        }
    }

    /// Docker's `iptables -P FORWARD DROP`: a pod's traffic to another node's pod.
    #[test]
    fn a_forward_policy_drop_of_pod_traffic_is_named_with_the_chain_and_a_fix() {
        let net = node();
        let dropped = flow(
            "NETFILTER_DROP",
            OWN,
            CNI0,
            "10.244.0.2",
            "10.244.1.2",
            7777,
        );
        let stack = readings(forward_chain(100, 0), forward_chain(172, 0));
        let (then, now) = samples(&[dropped], 72, stack);
        let (candidates, request) = judge(&net, &then, &now);
        assert!(request.netfilter, "{request:?}");
        assert_eq!(candidates.len(), 1, "{candidates:#?}");
        let c = &candidates[0];
        assert_eq!(c.kind, Kind::FirewallDrop);
        assert_eq!(c.subject, "chain ip filter FORWARD policy drop");
        assert_eq!(
            c.evidence("problem"),
            Some("FORWARD policy drop (Docker?) drops pod traffic 10.244.0.2 → 10.244.1.2")
        );
        assert_eq!(c.evidence("hook"), Some("forward"));
        assert_eq!(c.evidence("policy_counter_moved"), Some("72"));
        assert_eq!(
            c.evidence("flow"),
            Some("10.244.0.2 → 10.244.1.2 udp/7777 dev cni0: 72 dropped (NETFILTER_DROP)")
        );
        let fix = c.evidence("fix").unwrap();
        assert!(
            fix.contains("`iptables -I FORWARD -s 10.244.0.0/24 -j ACCEPT`")
                && fix.contains("`iptables -P FORWARD ACCEPT`"),
            "{fix}"
        );
    }

    #[test]
    fn a_rule_behind_a_jump_whose_counter_moved_is_named_with_its_comment() {
        let net = node();
        let dropped = flow("NETFILTER_DROP", OWN, CNI0, "10.244.0.2", "10.244.1.2", 0);
        let stack = readings(forward_chain(100, 5), forward_chain(100, 30));
        let (then, now) = samples(&[dropped], 25, stack);
        let (candidates, _) = judge(&net, &then, &now);
        assert_eq!(candidates.len(), 1, "{candidates:#?}");
        let c = &candidates[0];
        assert_eq!(c.subject, "rule ip filter DOCKER-USER handle 9");
        assert_eq!(
            c.evidence("rule"),
            Some("ip saddr 10.244.0.0/24 counter drop")
        );
        assert_eq!(c.evidence("comment"), Some("quarantine"));
        assert_eq!(c.evidence("rule_counter_moved"), Some("25"));
    }

    /// A host firewall dropping a port scan of the node itself (its INPUT policy's counter
    /// moving) is not pod traffic: nothing is raised, and the ruleset is not even read.
    #[test]
    fn a_port_scan_of_the_node_dropped_by_its_host_firewall_raises_nothing() {
        let net = node();
        let scan = flow(
            "NETFILTER_DROP",
            OWN,
            ETH0,
            "192.168.77.11",
            "192.168.77.10",
            0,
        );
        let stack = readings(forward_chain(100, 0), forward_chain(100, 0));
        let (then, now) = samples(&[scan], 500, stack);
        let (candidates, request) = judge(&net, &then, &now);
        assert_eq!(candidates, vec![]);
        assert!(request.is_empty(), "{request:?}");
        // VXLAN to the node is overlay traffic: the same firewall dropping it is named.
        let vxlan = flow(
            "NETFILTER_DROP",
            OWN,
            ETH0,
            "192.168.77.11",
            "192.168.77.10",
            8472,
        );
        let stack = readings(forward_chain(100, 0), forward_chain(160, 0));
        let (then, now) = samples(&[vxlan], 60, stack);
        let (candidates, _) = judge(&net, &then, &now);
        assert_eq!(candidates.len(), 1, "{candidates:#?}");
        assert_eq!(candidates[0].subject, "chain ip filter INPUT policy drop");
        assert!(
            candidates[0]
                .evidence("problem")
                .unwrap()
                .contains("overlay traffic 192.168.77.11 → 192.168.77.10")
        );
    }

    #[test]
    fn before_a_second_reading_or_below_min_drops_nothing_is_named() {
        let net = node();
        let dropped = flow(
            "NETFILTER_DROP",
            OWN,
            CNI0,
            "10.244.0.2",
            "10.244.1.2",
            7777,
        );
        let mut stack = readings(forward_chain(100, 0), forward_chain(100, 0));
        let netfilter = stack.netfilter.as_mut().unwrap();
        netfilter.latest = netfilter.baseline.clone();
        let (then, now) = samples(std::slice::from_ref(&dropped), 72, stack);
        assert_eq!(judge(&net, &then, &now).0, vec![]);
        let stack = readings(forward_chain(100, 0), forward_chain(104, 0));
        let (then, now) = samples(&[dropped], 4, stack);
        assert_eq!(judge(&net, &then, &now).0, vec![]);
    }

    /// No counter moved (plain nft chains have none; iptables-legacy is not read): the
    /// hook, the suspects and what could not be read are said.
    #[test]
    fn without_counters_the_hook_and_the_suspects_are_named() {
        let net = node();
        let dropped = flow(
            "NETFILTER_DROP",
            OWN,
            CNI0,
            "10.244.0.2",
            "10.244.1.2",
            7777,
        );
        let mut table = forward_chain(0, 0);
        table.family = Family::Inet;
        table.name = "host".into();
        table.chains[0].counter = None;
        let mut stack = readings(table.clone(), table);
        let latest = Arc::make_mut(&mut stack.netfilter.as_mut().unwrap().latest);
        latest.legacy = vec!["ip filter".into()];
        let (then, now) = samples(&[dropped], 72, stack);
        let (candidates, _) = judge(&net, &then, &now);
        assert_eq!(candidates.len(), 1, "{candidates:#?}");
        let c = &candidates[0];
        assert_eq!(c.subject, "netfilter forward hook");
        assert_eq!(
            c.evidence("suspect"),
            Some("chain inet host FORWARD policy drop (no counter)")
        );
        assert!(c.evidence("iptables_legacy").unwrap().contains("ip filter"));
    }

    #[test]
    fn drops_inside_a_pods_namespace_name_the_pod() {
        let net = node();
        let dropped = flow("NETFILTER_DROP", POD, 2, "10.244.0.2", "10.244.1.2", 7777);
        let (then, now) = samples(&[dropped], 10, Stack::default());
        let (candidates, request) = judge(&net, &then, &now);
        assert_eq!(candidates.len(), 1, "{candidates:#?}");
        assert_eq!(candidates[0].subject, "netfilter in default/web");
        assert_eq!(candidates[0].evidence("client"), Some("default/web"));
        // Its ruleset is not the daemon's to read.
        assert!(request.is_empty(), "{request:?}");
    }

    #[test]
    fn reverse_path_drops_name_the_interface_its_values_and_the_route_back() {
        let net = node();
        // Node 1's pod answers through the overlay, but this node routes it via eth0.
        let mut net2 = net.clone();
        net2.apply(Update::NewRoute(Route {
            oif: Some(ETH0),
            gateway: Some(ip("192.168.77.11")),
            ..Route::unicast("10.244.1.0/24".parse().unwrap())
        }));
        net2.apply(Update::DelRoute(Route {
            oif: Some(FLANNEL),
            gateway: Some(ip("10.244.1.0")),
            onlink: true,
            ..Route::unicast("10.244.1.0/24".parse().unwrap())
        }));
        let dropped = flow(
            "IP_RPFILTER",
            OWN,
            FLANNEL,
            "10.244.1.2",
            "10.244.0.2",
            7777,
        );
        let stack = Stack {
            rp_filter: Some(Arc::new(RpFilter {
                values: [("all".to_owned(), 1), ("flannel.1".to_owned(), 0)].into(),
            })),
            ..Stack::default()
        };
        let (then, now) = samples(&[dropped], 20, stack);
        let (candidates, request) = judge(&net2, &then, &now);
        assert_eq!(request.rp_filter, BTreeSet::from(["flannel.1".to_owned()]));
        assert_eq!(candidates.len(), 1, "{candidates:#?}");
        let c = &candidates[0];
        assert_eq!(c.kind, Kind::RpFilterDrop);
        assert_eq!(c.subject, "rp_filter dev flannel.1");
        assert_eq!(
            c.evidence("rp_filter"),
            Some(
                "net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.flannel.1.rp_filter=0 (the larger \
                 applies: strict)"
            )
        );
        assert!(
            c.evidence("route_back")
                .unwrap()
                .starts_with("the route back to 10.244.1.2 leaves via eth0"),
            "{c:#?}"
        );
    }

    #[test]
    fn bad_vxlan_checksums_name_the_peer_the_device_and_its_offloads() {
        let net = node();
        let dropped = flow(
            "UDP_CSUM",
            OWN,
            ETH0,
            "192.168.77.11",
            "192.168.77.10",
            8472,
        );
        let stack = Stack {
            offloads: Some(Arc::new(
                [(
                    "eth0".to_owned(),
                    Offloads {
                        features: Ok([
                            ("rx-checksum".to_owned(), false),
                            ("tx-checksum-ip-generic".to_owned(), true),
                            ("tx-gso-partial".to_owned(), true),
                        ]
                        .into()),
                    },
                )]
                .into(),
            )),
            ..Stack::default()
        };
        let (then, now) = samples(&[dropped], 12, stack);
        let (candidates, request) = judge(&net, &then, &now);
        assert_eq!(request.offloads, BTreeSet::from(["eth0".to_owned()]));
        assert_eq!(candidates.len(), 1, "{candidates:#?}");
        let c = &candidates[0];
        assert_eq!(c.kind, Kind::ChecksumDrop);
        assert_eq!(c.subject, "checksum drops from 192.168.77.11 dev eth0");
        assert_eq!(c.evidence("reasons"), Some("UDP_CSUM 12"));
        assert_eq!(
            c.evidence("offloads"),
            Some("eth0: rx-checksum off, tx-checksum-ip-generic on")
        );
        assert!(
            c.evidence("problem")
                .unwrap()
                .contains("VXLAN packets with a bad outer UDP checksum")
        );
    }
}
