//! Ghost gateways: a route's next hop that never answers ARP/NDP.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use super::Inputs;
use crate::{
    findings::{Candidate, Kind, Severity},
    model::net::{NeighState, Resolution, Route},
};

/// Drop reasons that mean "the next hop did not resolve".
pub const NEIGH_REASONS: &[&str] = &["NEIGH_FAILED", "NEIGH_QUEUEFULL", "NEIGH_DEAD"];

#[derive(Default)]
struct Gateway {
    state: Option<NeighState>,
    drops: u64,
    destinations: BTreeSet<IpAddr>,
}

/// A gateway (or on-link next hop) that is FAILED, or INCOMPLETE while packets to it are
/// dropped with NEIGH_* reasons, and the routes that use it.
pub fn ghost_gateways(inputs: &Inputs<'_>) -> Vec<Candidate> {
    let mut gateways: BTreeMap<(u32, IpAddr), Gateway> = BTreeMap::new();
    for neighbour in inputs.net.neighbours() {
        if neighbour.state.is_failed() || neighbour.state.is_incomplete() {
            gateways
                .entry((neighbour.ifindex, neighbour.ip))
                .or_default()
                .state = Some(neighbour.state);
        }
    }
    for (reason, dst, delta) in inputs.drop_deltas() {
        if !NEIGH_REASONS.contains(&reason) {
            continue;
        }
        let Some(Resolution::Route { route, .. }) = inputs.route_for(dst) else {
            continue;
        };
        let Some(oif) = route.oif else { continue };
        let hop = route.gateway.unwrap_or(dst);
        let gateway = gateways.entry((oif, hop)).or_default();
        gateway.drops += delta;
        gateway.destinations.insert(dst);
    }
    let mut candidates = Vec::new();
    for ((ifindex, hop), gateway) in gateways {
        let routes: Vec<&Route> = inputs
            .net
            .routes()
            .filter(|route| uses_hop(route, ifindex, hop))
            .collect();
        if routes.is_empty() && gateway.drops == 0 {
            // A failed neighbour no route goes through is not a gateway.
            continue;
        }
        // An INCOMPLETE gateway is a resolution in progress; one still unanswered after the
        // confirmation cycles (resolution takes milliseconds on a link) is a ghost before
        // the kernel gives up and drops (3 s later with default ARP settings).
        let severity = if gateway.drops > 0 {
            Severity::Critical
        } else {
            Severity::Warning
        };
        // Without a route through it, the hop is a directly connected destination.
        let role = if routes.is_empty() {
            "neighbour"
        } else {
            "gateway"
        };
        let mut candidate = Candidate::new(
            Kind::GhostGateway,
            format!("{role} {hop} dev {}", inputs.dev(ifindex)),
            severity,
        )
        .with(
            "neighbour_state",
            gateway
                .state
                .map_or_else(|| "none (entry gone)".to_owned(), |s| s.to_string()),
        )
        .with("neigh_drops_in_window", gateway.drops);
        if !gateway.destinations.is_empty() {
            let sample: Vec<String> = gateway
                .destinations
                .iter()
                .take(5)
                .map(IpAddr::to_string)
                .collect();
            candidate = candidate.with("dropped_destinations", sample.join(", "));
        }
        for route in &routes {
            candidate = candidate.with("route", inputs.describe(route));
            candidate.routes.push(inputs.route_ref(route));
        }
        candidates.push(candidate);
    }
    candidates
}

/// True when `route` sends through `hop` on `ifindex` (as gateway, or on-link for a route
/// without one).
fn uses_hop(route: &Route, ifindex: u32, hop: IpAddr) -> bool {
    if route.kind != crate::model::net::RouteKind::Unicast {
        return false;
    }
    // Without a gateway only a host route names the hop itself.
    let single = route.oif == Some(ifindex)
        && match route.gateway {
            Some(gateway) => gateway == hop,
            None => route.dst == crate::model::net::Prefix::host(hop),
        };
    single
        || route
            .nexthops
            .iter()
            .any(|next| next.oif == Some(ifindex) && next.gateway == Some(hop))
}
