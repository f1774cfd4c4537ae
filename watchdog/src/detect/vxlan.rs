//! VXLAN: FDB entries that point into the void, and FDB tables far smaller than the
//! remote-node routes that need them (Flannel's per-node route + neighbour + FDB triple).

use std::net::IpAddr;

use super::Inputs;
use crate::{
    findings::{Candidate, Kind, Severity},
    model::{
        counters::growth,
        net::{FdbEntry, Link, Resolution, Route, format_mac},
    },
};

fn vxlan_links<'a>(inputs: &'a Inputs<'_>) -> impl Iterator<Item = &'a Link> + 'a {
    inputs.net.links().filter(|link| link.vxlan.is_some())
}

/// Unicast FDB entries with a remote VTEP on `link`.
fn remote_entries<'a>(inputs: &'a Inputs<'_>, link: &Link) -> Vec<&'a FdbEntry> {
    inputs
        .net
        .fdb_of(link.index)
        .filter(|entry| entry.dst.is_some() && entry.mac != [0; 6] && entry.mac[0] & 1 == 0)
        .collect()
}

/// Routes through `link` with a gateway: one per remote node in a Flannel overlay.
fn remote_routes<'a>(inputs: &'a Inputs<'_>, link: &Link) -> Vec<&'a Route> {
    inputs
        .net
        .routes()
        .filter(|route| route.oif == Some(link.index) && route.gateway.is_some())
        .collect()
}

/// FDB entries whose VTEP is unroutable, off the device's underlay, unresolved, or sent
/// to with nothing back; and remote-node routes whose next hop has no FDB entry.
pub fn stale_fdb(inputs: &Inputs<'_>) -> Vec<Candidate> {
    let mut candidates = Vec::new();
    for link in vxlan_links(inputs) {
        let vxlan = link.vxlan.as_ref().expect("filtered on vxlan");
        for entry in remote_entries(inputs, link) {
            let dst = entry.dst.expect("filtered on dst");
            if inputs.is_local(&dst) {
                continue;
            }
            let subject = format!("fdb {} dev {} dst {dst}", format_mac(&entry.mac), link.name);
            let mut problems = Vec::new();
            let mut silent = None;
            match inputs.route_for(dst) {
                Some(Resolution::Route { route, .. }) if !route.kind.is_reject() => {
                    let via: Vec<u32> = route.oifs().collect();
                    if let Some(underlay) = vxlan.underlay
                        && !via.contains(&underlay)
                    {
                        problems.push(format!(
                            "VTEP {dst} is routed via {}, not the underlay {}",
                            inputs.describe(route),
                            inputs.dev(underlay)
                        ));
                    }
                    let hop = route.gateway.unwrap_or(dst);
                    for oif in &via {
                        if let Some(neighbour) = inputs.net.neighbour(*oif, &hop)
                            && neighbour.state.is_failed()
                        {
                            problems.push(format!(
                                "next hop {hop} dev {} is {}",
                                inputs.dev(*oif),
                                neighbour.state
                            ));
                        }
                    }
                    silent = silence(inputs, &via, dst);
                }
                Some(Resolution::Route { route, .. }) => {
                    problems.push(format!("VTEP {dst} hits {}", inputs.describe(route)));
                }
                Some(Resolution::Rejected { rule }) => {
                    problems.push(format!("VTEP {dst} is rejected by rule {}", rule.priority));
                }
                None => problems.push(format!("no route to VTEP {dst}")),
            }
            if let Some((sent, dev)) = silent {
                problems.push(format!(
                    "{sent} packets sent to VTEP {dst} on {dev} in the last {}, none back",
                    humantime::format_duration(inputs.settings.vtep_window)
                ));
            }
            if problems.is_empty() {
                continue;
            }
            let mut candidate = Candidate::new(Kind::StaleFdb, subject, Severity::Critical);
            for problem in problems {
                candidate = candidate.with("problem", problem);
            }
            for route in routes_via_mac(inputs, link, &entry.mac) {
                candidate = candidate.with("route", inputs.describe(route));
                candidate.routes.push(inputs.route_ref(route));
            }
            candidates.push(candidate);
        }
        // Remote-node routes whose next hop's MAC has no FDB entry: their packets are
        // dropped on the VXLAN device.
        for route in remote_routes(inputs, link) {
            let gateway = route.gateway.expect("filtered on gateway");
            let Some(mac) = inputs
                .net
                .neighbour(link.index, &gateway)
                .and_then(|neighbour| neighbour.mac)
            else {
                continue;
            };
            let has_entry = inputs
                .net
                .fdb_of(link.index)
                .any(|entry| entry.mac == mac && entry.dst.is_some());
            if has_entry {
                continue;
            }
            let mut candidate = Candidate::new(
                Kind::StaleFdb,
                format!("fdb {} dev {} missing", format_mac(&mac), link.name),
                Severity::Critical,
            )
            .with(
                "problem",
                format!(
                    "no FDB entry for {} (next hop {gateway}): packets for this route are dropped on {}",
                    format_mac(&mac),
                    link.name
                ),
            )
            .with("route", inputs.describe(route));
            candidate.routes.push(inputs.route_ref(route));
            candidates.push(candidate);
        }
    }
    candidates
}

/// Routes on `link` whose gateway's neighbour entry has `mac`.
fn routes_via_mac<'a>(inputs: &'a Inputs<'_>, link: &Link, mac: &[u8; 6]) -> Vec<&'a Route> {
    remote_routes(inputs, link)
        .into_iter()
        .filter(|route| {
            route.gateway.is_some_and(|gateway| {
                inputs
                    .net
                    .neighbour(link.index, &gateway)
                    .is_some_and(|neighbour| neighbour.mac.as_ref() == Some(mac))
            })
        })
        .collect()
}

/// `(packets sent, device)` when `dst` got at least `min_packets` on one of `devices`
/// during the last `vtep_window` and answered nothing.
fn silence(inputs: &Inputs<'_>, devices: &[u32], dst: IpAddr) -> Option<(u64, String)> {
    if !inputs.full_vtep_window() {
        return None;
    }
    devices.iter().find_map(|&ifindex| {
        let now = inputs.now.peers.get(&(ifindex, dst))?;
        let then = inputs.recent.peers.get(&(ifindex, dst))?;
        let sent = growth(now.tx_packets, then.tx_packets);
        let back = growth(now.rx_packets, then.rx_packets);
        (then.tx_packets > 0 && sent >= inputs.settings.min_packets && back == 0)
            .then(|| (sent, inputs.dev(ifindex)))
    })
}

/// A VXLAN device with far fewer remote FDB entries than remote-node routes (under half):
/// the table was flushed or never filled.
pub fn vtep_collapse(inputs: &Inputs<'_>) -> Vec<Candidate> {
    let mut candidates = Vec::new();
    for link in vxlan_links(inputs) {
        let routes = remote_routes(inputs, link).len();
        let entries = remote_entries(inputs, link).len();
        if routes >= 2 && entries * 2 < routes {
            candidates.push(
                Candidate::new(
                    Kind::VtepCollapse,
                    format!("dev {}", link.name),
                    Severity::Critical,
                )
                .with("fdb_entries", entries)
                .with("remote_node_routes", routes),
            );
        }
    }
    candidates
}
