//! Detectors: pure functions from (network mirror, kernel counters, settings) to
//! [`Candidate`]s. Nothing here touches the kernel, so every detector is unit-tested with
//! hand-built snapshots. Inputs are plain data: [`crate::model`] types and the [`Sample`]
//! the pipeline builds from a reading.

mod drops;
pub mod endpoints;
mod gateway;
pub mod mtu;
pub mod overlay;
mod routes;
mod silence;
mod traffic;
mod vxlan;

#[cfg(test)]
mod tests;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use crate::{
    config::DetectConfig,
    findings::{Candidate, RouteRef},
    model::{
        counters::{ConnectSample, DropFlow, IcmpErrorSample, PeerSample, growth},
        net::{Resolution, Route, Snapshot, is_link_local_v6, table_name},
        probe::ProbeBook,
        stack::Stack,
    },
};

pub use self::{drops::stack_request, silence::probe_requests};

/// Kernel counters at one moment, as the detectors see them (this namespace only).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// When it was read.
    pub at: Option<Instant>,
    /// The daemon's own network namespace (inode; 0 when unknown): the only one whose
    /// configuration the stack readers see.
    pub own_netns: u32,
    /// Drops by (reason name, destination), cumulative.
    pub drop_destinations: BTreeMap<(String, IpAddr), u64>,
    /// Drops per flow (netfilter, reverse path, checksums), cumulative, with the namespace
    /// they happened in (named in `client_names`).
    pub drop_flows: BTreeMap<DropFlow, u64>,
    /// Traffic by (interface index, remote address), cumulative.
    pub peers: BTreeMap<(u32, IpAddr), PeerSample>,
    /// Definitive ICMP errors that came back for traffic, by its destination, cumulative.
    pub icmp_errors: BTreeMap<IpAddr, IcmpErrorSample>,
    /// TCP outcomes by (destination, port), cumulative, summed over the namespaces kept.
    pub connects: BTreeMap<(IpAddr, u16), ConnectSample>,
    /// The same outcomes per client network namespace (inode; `NETNS_UNKNOWN` without
    /// BTF), so a finding can name who connects.
    pub connect_clients: BTreeMap<(IpAddr, u16), BTreeMap<u32, ConnectSample>>,
    /// The kernel's filtering and offload configuration, where the pipeline asked for it.
    pub stack: Stack,
    /// What each client namespace (of a TCP connect or a dropped flow) is called
    /// (`default/web-7f9…`, `node`, `unattributed`); others are named by inode.
    pub client_names: BTreeMap<u32, String>,
    /// The clock readings (ns; 0: unknown) the ages are measured from: of `peers` and
    /// `icmp_errors`, and of `connects` and `connect_clients`. Not for the detectors: the
    /// window history stores an unchanged entry once by them.
    pub clocks: Clocks,
}

/// The clock readings a [`Sample`]'s ages are measured from (CLOCK_MONOTONIC, ns; 0:
/// unknown).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Clocks {
    /// Of `peers` and `icmp_errors`.
    pub peers: u64,
    /// Of `connects` and `connect_clients`.
    pub connects: u64,
}

/// Everything a detector may look at.
pub struct Inputs<'a> {
    /// The network mirror.
    pub net: &'a Snapshot,
    /// The newest counters.
    pub now: &'a Sample,
    /// The counters at the start of the window (`now` itself when there is no history).
    pub then: &'a Sample,
    /// The counters about `vtep_window` ago.
    pub recent: &'a Sample,
    /// Thresholds.
    pub settings: &'a DetectConfig,
    /// The prober's latest results: what confirms (or clears) a silent peer.
    pub probes: &'a ProbeBook,
}

impl Inputs<'_> {
    /// How much history the deltas cover.
    pub fn span(&self) -> Duration {
        match (self.now.at, self.then.at) {
            (Some(now), Some(then)) => now.duration_since(then),
            _ => Duration::ZERO,
        }
    }

    /// True once the deltas cover (nearly) a whole window: silence-based detectors wait
    /// for it.
    pub fn full_window(&self) -> bool {
        self.span() * 10 >= self.settings.window * 9
    }

    /// True once `recent` is (nearly) `vtep_window` old.
    pub fn full_vtep_window(&self) -> bool {
        match (self.now.at, self.recent.at) {
            (Some(now), Some(recent)) => {
                now.duration_since(recent) * 10 >= self.settings.vtep_window * 9
            }
            _ => false,
        }
    }

    /// Drops by (reason, destination) within the window; only non-zero ones.
    pub fn drop_deltas(&self) -> impl Iterator<Item = (&str, IpAddr, u64)> + '_ {
        self.now
            .drop_destinations
            .iter()
            .filter_map(|((reason, addr), count)| {
                let before = self
                    .then
                    .drop_destinations
                    .get(&(reason.clone(), *addr))
                    .copied()
                    .unwrap_or(0);
                let delta = growth(*count, before);
                (delta > 0).then_some((reason.as_str(), *addr, delta))
            })
    }

    /// The route the kernel would pick for `dst` (policy rules included).
    pub fn route_for(&self, dst: IpAddr) -> Option<Resolution<'_>> {
        self.net.lookup_with_rules(dst, None)
    }

    /// An interface's name, or `#<index>`.
    pub fn dev(&self, ifindex: u32) -> String {
        self.net
            .link(ifindex)
            .map_or_else(|| format!("#{ifindex}"), |link| link.name.clone())
    }

    /// The route as the finding's subject: `10.244.3.0/24 via … dev flannel.1 … table main`.
    pub fn describe(&self, route: &Route) -> String {
        route.display(self.net).to_string()
    }

    /// The route for the ghost-route info metric.
    pub fn route_ref(&self, route: &Route) -> RouteRef {
        RouteRef {
            prefix: route.dst.to_string(),
            gateway: route.gateway.map(|gw| gw.to_string()),
            dev: route.oif.map(|oif| self.dev(oif)),
            table: table_name(route.table),
        }
    }
}

/// True for addresses that name one remote host (not multicast, broadcast, link-local or
/// unspecified).
pub fn is_unicast_host(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => {
            !(v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_unspecified()
                || v4.is_link_local()
                || v4.is_loopback())
        }
        IpAddr::V6(v6) => {
            !(v6.is_multicast()
                || v6.is_unspecified()
                || v6.is_loopback()
                || is_link_local_v6(addr))
        }
    }
}

/// Runs every detector.
pub fn detect(inputs: &Inputs<'_>) -> Vec<Candidate> {
    let mut candidates = Vec::new();
    candidates.extend(gateway::ghost_gateways(inputs));
    candidates.extend(vxlan::stale_fdb(inputs));
    candidates.extend(vxlan::vtep_collapse(inputs));
    candidates.extend(traffic::blackholed_destinations(inputs));
    candidates.extend(traffic::failing_tcp_destinations(inputs));
    candidates.extend(routes::dead_link_routes(inputs));
    candidates.extend(routes::gateways_not_onlink(inputs));
    candidates.extend(routes::dropped_for_routes(inputs));
    candidates.extend(mtu::black_holes(inputs));
    candidates.extend(drops::firewall_drops(inputs));
    candidates.extend(drops::rp_filter_drops(inputs));
    candidates.extend(drops::checksum_drops(inputs));
    candidates
}
