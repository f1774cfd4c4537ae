//! Firewall drops (`NETFILTER_DROP`): the chain whose policy or the rule whose counter
//! moved with them, from two readings of the nftables ruleset.

use std::collections::{BTreeMap, BTreeSet};

use super::{Group, MAX_FLOWS, NETFILTER, Scope, sustained};
use crate::{
    detect::Inputs,
    findings::{Candidate, Kind, Severity},
    model::{
        counters::growth,
        net::Prefix,
        stack::{Chain, Counter, Hook, Netfilter, NetfilterReadings, Rule, Table},
    },
};

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

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::*;
    use std::{
        sync::Arc,
        time::{Duration, Instant},
    };

    use crate::model::stack::{BaseChain, Family, Stack, Verdict};

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
}
