//! Reverse-path drops (`IP_RPFILTER`): the interface they arrived on, its `rp_filter`
//! values and the route back to the sources.

use std::collections::BTreeMap;

use super::{Group, RPFILTER, Scope, sustained};
use crate::{
    detect::Inputs,
    findings::{Candidate, Kind, Severity},
    model::net::Resolution,
};

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

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::*;
    use std::{collections::BTreeSet, sync::Arc};

    use crate::model::{
        net::{Route, Update},
        stack::{RpFilter, Stack},
    };

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
}
