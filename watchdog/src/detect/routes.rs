//! Routes that cannot work: through a dead link, via a gateway that is not on-link, and
//! the drops that a missing or rejecting route causes.

use std::{collections::BTreeMap, net::IpAddr};

use super::Inputs;
use crate::{
    findings::{Candidate, Kind, Severity},
    model::net::{Prefix, Resolution, Route, RouteKind, TABLE_LOCAL, is_link_local_v6},
};

/// Routes (outside the local table) whose device is down, without carrier, or gone.
pub fn dead_link_routes(inputs: &Inputs<'_>) -> Vec<Candidate> {
    let mut candidates = Vec::new();
    for route in inputs.net.routes() {
        if route.table == TABLE_LOCAL || route.kind != RouteKind::Unicast {
            continue;
        }
        for oif in route.oifs() {
            let problem = match inputs.net.link(oif) {
                None => format!("device #{oif} is gone"),
                Some(link) if !link.admin_up => format!("device {} is down", link.name),
                Some(link) if !link.oper_up => format!("device {} has no carrier", link.name),
                Some(_) => continue,
            };
            let severity = if route.gateway.is_some() || route.dst.len == 0 {
                Severity::Critical
            } else {
                Severity::Warning
            };
            let mut candidate = Candidate::new(
                Kind::DeadLinkRoute,
                format!("route {}", inputs.describe(route)),
                severity,
            )
            .with("problem", problem);
            candidate.routes.push(inputs.route_ref(route));
            candidates.push(candidate);
            break;
        }
    }
    candidates
}

/// Routes via a gateway that no address of the output device covers (and not `onlink`).
pub fn gateways_not_onlink(inputs: &Inputs<'_>) -> Vec<Candidate> {
    let mut candidates = Vec::new();
    for route in inputs.net.routes() {
        let (Some(gateway), Some(oif)) = (route.gateway, route.oif) else {
            continue;
        };
        if route.onlink || route.table == TABLE_LOCAL {
            continue;
        }
        let covered = inputs
            .net
            .addresses()
            .any(|address| address.ifindex == oif && address.prefix.contains(&gateway));
        // IPv6 gateways are link-local by design.
        let link_local = is_link_local_v6(&gateway);
        if covered || link_local {
            continue;
        }
        let mut candidate = Candidate::new(
            Kind::GatewayNotOnLink,
            format!("route {}", inputs.describe(route)),
            Severity::Warning,
        )
        .with(
            "problem",
            format!("no address on {} covers gateway {gateway}", inputs.dev(oif)),
        );
        candidate.routes.push(inputs.route_ref(route));
        candidates.push(candidate);
    }
    candidates
}

/// Drop reasons that mean "no route".
const NO_ROUTE_REASONS: &[&str] = &["IP_OUTNOROUTES", "IP_INNOROUTES"];

/// The /24 (IPv4) or /64 (IPv6) around an address, to group no-route drops.
fn around(addr: IpAddr) -> Prefix {
    let len = if addr.is_ipv4() { 24 } else { 64 };
    Prefix::new(addr, len).expect("valid length").network()
}

/// Drops that a blackhole/unreachable/prohibit route or rule caused, and no-route drops
/// grouped by destination prefix.
pub fn dropped_for_routes(inputs: &Inputs<'_>) -> Vec<Candidate> {
    let mut rejects: BTreeMap<String, (Option<&Route>, BTreeMap<String, u64>)> = BTreeMap::new();
    let mut no_route: BTreeMap<Prefix, BTreeMap<String, u64>> = BTreeMap::new();
    for (reason, dst, delta) in inputs.drop_deltas() {
        match inputs.route_for(dst) {
            Some(Resolution::Route { route, .. }) if route.kind.is_reject() => {
                let entry = rejects
                    .entry(format!("route {}", inputs.describe(route)))
                    .or_insert((Some(route), BTreeMap::new()));
                *entry.1.entry(reason.to_owned()).or_default() += delta;
            }
            Some(Resolution::Rejected { rule }) => {
                let entry = rejects
                    .entry(format!(
                        "rule priority {} ({:?})",
                        rule.priority, rule.action
                    ))
                    .or_insert((None, BTreeMap::new()));
                *entry.1.entry(reason.to_owned()).or_default() += delta;
            }
            resolution => {
                if NO_ROUTE_REASONS.contains(&reason) || resolution.is_none() {
                    *no_route
                        .entry(around(dst))
                        .or_default()
                        .entry(reason.to_owned())
                        .or_default() += delta;
                }
            }
        }
    }
    let mut candidates = Vec::new();
    for (subject, (route, reasons)) in rejects {
        let mut candidate = Candidate::new(Kind::RejectRouteTraffic, subject, Severity::Critical);
        for (reason, count) in reasons {
            candidate = candidate.with(&format!("drops_in_window_{reason}"), count);
        }
        if let Some(route) = route {
            candidate.routes.push(inputs.route_ref(route));
        }
        candidates.push(candidate);
    }
    for (prefix, reasons) in no_route {
        // Only the no-route reasons make a no-route finding (NOT_SPECIFIED is too vague).
        if !reasons
            .keys()
            .any(|r| NO_ROUTE_REASONS.contains(&r.as_str()))
        {
            continue;
        }
        let mut candidate = Candidate::new(
            Kind::NoRouteDrops,
            format!("no route to {prefix}"),
            Severity::Critical,
        );
        for (reason, count) in reasons {
            candidate = candidate.with(&format!("drops_in_window_{reason}"), count);
        }
        candidates.push(candidate);
    }
    candidates
}
