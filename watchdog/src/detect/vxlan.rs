//! VXLAN: FDB entries that point into the void, and FDB tables far smaller than the
//! remote-node routes that need them (Flannel's per-node route + neighbour + FDB triple).

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
};

use super::{Inputs, silence};
use crate::{
    findings::{Candidate, Kind, Severity},
    model::{
        net::{FdbEntry, Link, Resolution, Route, format_mac},
        probe::Verdict,
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
        .filter(|entry| entry.dst.is_some() && entry.has_unicast_mac())
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

/// A remote VTEP: an FDB entry with a destination that is not this host, the devices its
/// route leaves on, and the address a probe of it goes to.
pub(super) struct Vtep<'a> {
    /// The VXLAN device.
    pub link: &'a Link,
    /// The FDB entry.
    pub entry: &'a FdbEntry,
    /// The entry's destination (the remote VTEP's underlay address).
    pub dst: IpAddr,
    /// The devices the route to `dst` leaves on (none when it is unroutable or rejected).
    pub underlay: Vec<u32>,
    /// Where a probe goes: the gateway of a remote-node route whose neighbour has the
    /// entry's MAC (the remote node's VXLAN address: the probe then takes exactly this FDB
    /// entry, and its answer comes back from the VTEP), else `dst` itself.
    pub target: IpAddr,
}

/// Every remote VTEP of every VXLAN device.
pub(super) fn vteps<'a>(inputs: &'a Inputs<'_>) -> Vec<Vtep<'a>> {
    let mut vteps = Vec::new();
    let local = local_addresses(inputs);
    for link in vxlan_links(inputs) {
        let by_mac = routes_by_mac(inputs, link);
        for entry in remote_entries(inputs, link) {
            let dst = entry.dst.expect("filtered on dst");
            if local.contains(&dst) {
                continue;
            }
            let underlay = match inputs.route_for(dst) {
                Some(Resolution::Route { route, .. }) if !route.kind.is_reject() => {
                    route.oifs().collect()
                }
                _ => Vec::new(),
            };
            let target = by_mac
                .get(&entry.mac)
                .and_then(|routes| routes.iter().find_map(|route| route.gateway))
                .unwrap_or(dst);
            vteps.push(Vtep {
                link,
                entry,
                dst,
                underlay,
                target,
            });
        }
    }
    vteps
}

/// FDB entries whose VTEP is unroutable, off the device's underlay, unresolved, or silent
/// (sent to with nothing back) and unanswering (a probe of it went unanswered); and
/// remote-node routes whose next hop has no FDB entry.
pub fn stale_fdb(inputs: &Inputs<'_>) -> Vec<Candidate> {
    let mut candidates = Vec::new();
    let replies = silence::replies(inputs.now, inputs.recent);
    let by_mac: HashMap<u32, HashMap<[u8; 6], Vec<&Route>>> = vxlan_links(inputs)
        .map(|link| (link.index, routes_by_mac(inputs, link)))
        .collect();
    for vtep in vteps(inputs) {
        let (link, entry, dst) = (vtep.link, vtep.entry, vtep.dst);
        let vxlan = link.vxlan.as_ref().expect("filtered on vxlan");
        let subject = format!("fdb {} dev {} dst {dst}", format_mac(&entry.mac), link.name);
        let mut problems = Vec::new();
        let mut probe = None;
        match inputs.route_for(dst) {
            Some(Resolution::Route { route, .. }) if !route.kind.is_reject() => {
                let via = &vtep.underlay;
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
                for oif in via {
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
                if let Some((silence, result)) = silence(inputs, &vtep, replies.get(&dst)) {
                    problems.push(silence);
                    probe = Some(result);
                }
            }
            Some(Resolution::Route { route, .. }) => {
                problems.push(format!("VTEP {dst} hits {}", inputs.describe(route)));
            }
            Some(Resolution::Rejected { rule }) => {
                problems.push(format!("VTEP {dst} is rejected by rule {}", rule.priority));
            }
            None => problems.push(format!("no route to VTEP {dst}")),
        }
        if problems.is_empty() {
            continue;
        }
        let mut candidate = Candidate::new(Kind::StaleFdb, subject, Severity::Critical);
        for problem in problems {
            candidate = candidate.with("problem", problem);
        }
        if let Some(probe) = probe {
            candidate = candidate.with("probe", probe);
        }
        let routes = by_mac
            .get(&link.index)
            .and_then(|by_mac| by_mac.get(&entry.mac));
        for route in routes.into_iter().flatten() {
            candidate = candidate.with("route", inputs.describe(route));
            candidate.routes.push(inputs.route_ref(route));
        }
        candidates.push(candidate);
    }
    for link in vxlan_links(inputs) {
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
                .fdb_with_mac(link.index, &mac)
                .any(|entry| entry.dst.is_some());
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

/// The remote-node routes on `link`, by the MAC of their gateway's neighbour entry: one
/// pass over the routes, so each FDB entry finds its routes without another.
fn routes_by_mac<'a>(inputs: &'a Inputs<'_>, link: &Link) -> HashMap<[u8; 6], Vec<&'a Route>> {
    let mut by_mac: HashMap<[u8; 6], Vec<&Route>> = HashMap::new();
    for route in remote_routes(inputs, link) {
        let mac = route.gateway.and_then(|gateway| {
            inputs
                .net
                .neighbour(link.index, &gateway)
                .and_then(|neighbour| neighbour.mac)
        });
        if let Some(mac) = mac {
            by_mac.entry(mac).or_default().push(route);
        }
    }
    by_mac
}

/// This host's addresses, collected once for many lookups.
pub(super) fn local_addresses(inputs: &Inputs<'_>) -> BTreeSet<IpAddr> {
    inputs.net.addresses().map(|a| a.prefix.addr).collect()
}

/// The silence problem and the probe that confirmed it, when `vtep` got at least
/// `min_packets` on its underlay during the last `vtep_window`, nothing came back from it
/// on any interface, and a probe of it went unanswered. Silence alone is not enough:
/// overlay traffic may be one-way.
fn silence(
    inputs: &Inputs<'_>,
    vtep: &Vtep<'_>,
    replies: Option<&silence::Replies>,
) -> Option<(String, String)> {
    if !inputs.full_vtep_window() {
        return None;
    }
    let sent = silence::sent(inputs.now, inputs.recent, vtep.dst, |ifindex| {
        vtep.underlay.contains(&ifindex)
    });
    let back = replies.map_or(0, |replies| replies.back);
    if !sent.known || sent.packets < inputs.settings.min_packets || back != 0 {
        return None;
    }
    let Verdict::Dead(result) = inputs.probe_verdict(vtep.target, Some(vtep.dst), replies) else {
        return None;
    };
    let dev = sent
        .dev
        .map_or_else(|| "?".to_owned(), |ifindex| inputs.dev(ifindex));
    Some((
        format!(
            "{} packets sent to VTEP {} on {dev} in the last {}, none back",
            sent.packets,
            vtep.dst,
            humantime::format_duration(inputs.settings.vtep_window)
        ),
        result.to_string(),
    ))
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
