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
//!
//! One file per cause: [`firewall`], [`rp_filter`], [`checksum`]; here what they share:
//! the reasons, which flows count ([`Scope`]), the groups of flows a finding is about and
//! whether their drops are sustained, and what to read next ([`stack_request`]).

mod checksum;
mod firewall;
mod rp_filter;

#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
};

use self::checksum::offload_devices;
pub use self::{checksum::checksum_drops, firewall::firewall_drops, rp_filter::rp_filter_drops};
use super::Inputs;
use crate::{
    findings::Candidate,
    model::{
        counters::{DropFlow, growth},
        net::Prefix,
        stack::{Hook, StackRequest},
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
