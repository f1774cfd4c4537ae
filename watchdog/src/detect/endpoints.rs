//! Ghost endpoints: an EndpointSlice lists an address no running pod has, so kube-proxy
//! keeps sending a Service's clients into the void. Each node's daemon vouches for the
//! addresses it can know about: those inside its own pod subnet (the Node's `podCIDR`
//! from the desired state), whose pods its pod source lists; without a known subnet, the
//! endpoints whose `nodeName` is this node. Addresses of this node itself (hostNetwork
//! pods' endpoints) and of any running pod the source knows are never ghosts; endpoints
//! without a `targetRef` (hand-written Endpoints, mirrored into slices) are judged by
//! address like the others. A ghost must last `grace` (`desired.grace`): the endpoint
//! controller removes a deleted pod's endpoint a moment after the pod goes.
//!
//! Also names the Services behind `failing_tcp_destination`s ([`name_services`]).

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use crate::{
    findings::{Candidate, Evidence, Kind, Severity},
    model::{
        desired::PodSubnet,
        endpoints::{EndpointView, Scope},
        net::Snapshot,
    },
};

/// Ghosts seen, and since when: one must last the grace to count.
#[derive(Debug, Default)]
pub struct Memory {
    grace: Duration,
    since: BTreeMap<(String, String, IpAddr), Instant>,
}

impl Memory {
    /// A ghost counts once seen for `grace`.
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            since: BTreeMap::new(),
        }
    }
}

/// Every endpoint in this node's scope (see the module) that no running pod and no local
/// address has, seen for at least the grace. Nothing while either source has not listed.
pub fn ghost_endpoints(
    view: &EndpointView,
    net: &Snapshot,
    subnet: Option<PodSubnet>,
    node: &str,
    memory: &mut Memory,
    at: Instant,
) -> Vec<Candidate> {
    let (Some(slices), Some(pods)) = (&view.slices, &view.pod_addresses) else {
        memory.since.clear();
        return Vec::new();
    };
    let local = |address: IpAddr| net.addresses().any(|a| a.prefix.addr == address);
    let scope = Scope {
        subnet,
        node: node.to_owned(),
    };
    let mut seen = BTreeMap::new();
    let mut candidates = Vec::new();
    for endpoint in slices.values().flatten() {
        if !scope.contains(endpoint) || pods.contains(&endpoint.address) || local(endpoint.address)
        {
            continue;
        }
        let key = (
            endpoint.service.clone(),
            endpoint.slice.clone(),
            endpoint.address,
        );
        let since = memory.since.get(&key).copied().unwrap_or(at);
        seen.insert(key, since);
        if at.duration_since(since) < memory.grace {
            continue;
        }
        let severity = if endpoint.ready {
            Severity::Critical
        } else {
            Severity::Warning
        };
        let mut candidate = Candidate::new(
            Kind::GhostEndpoint,
            format!("service {} endpoint {}", endpoint.service, endpoint.address),
            severity,
        )
        .with("service", &endpoint.service)
        .with("address", endpoint.address)
        .with("slice", &endpoint.slice)
        .with("ready", endpoint.ready)
        .with("target", endpoint.pod.as_deref().unwrap_or("none"));
        if !endpoint.ports.is_empty() {
            let ports: Vec<String> = endpoint.ports.iter().map(u16::to_string).collect();
            candidate = candidate.with("ports", ports.join(","));
        }
        if let Some(node) = &endpoint.node {
            candidate = candidate.with("node", node);
        }
        // One finding per Service and address, however many slices list it.
        if !candidates
            .iter()
            .any(|c: &Candidate| c.subject == candidate.subject)
        {
            candidates.push(candidate);
        }
    }
    memory.since = seen;
    candidates
}

/// Adds `service=<namespace>/<name>` (several joined by `,`) to each
/// `failing_tcp_destination` whose destination is a Service endpoint.
pub fn name_services(candidates: &mut [Candidate], view: &EndpointView) {
    for candidate in candidates {
        if candidate.kind != Kind::FailingTcpDestination || candidate.evidence("service").is_some()
        {
            continue;
        }
        let Some(destination) = candidate
            .subject
            .strip_prefix("tcp ")
            .and_then(|d| d.parse::<SocketAddr>().ok())
        else {
            continue;
        };
        let services = view.services_at(destination.ip(), destination.port());
        if !services.is_empty() {
            candidate.evidence.push(Evidence {
                name: "service".to_owned(),
                value: services.join(","),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::{BTreeMap, BTreeSet},
        sync::Arc,
    };

    use super::*;
    use crate::model::{
        endpoints::Endpoint,
        net::{Address, Update},
    };

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn endpoint(service: &str, address: &str, pod: Option<&str>, node: Option<&str>) -> Endpoint {
        Endpoint {
            service: service.into(),
            slice: format!("{service}-x8k2p"),
            address: ip(address),
            ready: true,
            ports: vec![8080],
            pod: pod.map(str::to_owned),
            node: node.map(str::to_owned),
        }
    }

    fn view(endpoints: Vec<Endpoint>, pods: &[&str]) -> EndpointView {
        let mut slices = BTreeMap::new();
        for endpoint in endpoints {
            slices
                .entry(endpoint.slice.clone())
                .or_insert_with(Vec::new)
                .push(endpoint);
        }
        EndpointView {
            slices: Some(Arc::new(slices)),
            services: None,
            pod_addresses: Some(Arc::new(
                pods.iter().map(|p| ip(p)).collect::<BTreeSet<_>>(),
            )),
        }
    }

    /// A node with 192.168.1.21 on eth0 (a hostNetwork pod's address is this).
    fn node_net() -> Snapshot {
        let mut net = Snapshot::new();
        net.apply(Update::NewAddress(Address {
            ifindex: 2,
            prefix: "192.168.1.21/24".parse().unwrap(),
        }));
        net
    }

    fn subnet() -> Option<PodSubnet> {
        PodSubnet::parse("10.244.0.0/24")
    }

    #[test]
    fn an_address_no_running_pod_has_is_a_ghost_naming_service_and_slice() {
        let view = view(
            vec![
                endpoint("default/web", "10.244.0.2", Some("default/web-a"), None),
                endpoint("default/web", "10.244.0.9", Some("default/web-gone"), None),
                // Another node's subnet: that node's daemon judges it.
                endpoint("default/web", "10.244.2.99", Some("default/web-b"), None),
                // Hand-written, no targetRef: judged by address.
                endpoint("default/legacy-db", "10.244.0.50", None, None),
                // A hostNetwork pod's endpoint: this node's address.
                endpoint(
                    "monitoring/node-exporter",
                    "192.168.1.21",
                    None,
                    Some("pi-1"),
                ),
            ],
            &["10.244.0.2"],
        );
        let at = Instant::now();
        let mut memory = Memory::new(Duration::ZERO);
        let found = ghost_endpoints(&view, &node_net(), subnet(), "pi-1", &mut memory, at);
        let subjects: Vec<&str> = found.iter().map(|c| c.subject.as_str()).collect();
        assert_eq!(
            subjects,
            [
                "service default/legacy-db endpoint 10.244.0.50",
                "service default/web endpoint 10.244.0.9",
            ]
        );
        let web = &found[1];
        assert_eq!(web.kind, Kind::GhostEndpoint);
        assert_eq!(web.severity, Severity::Critical);
        assert_eq!(web.evidence("service"), Some("default/web"));
        assert_eq!(web.evidence("slice"), Some("default/web-x8k2p"));
        assert_eq!(web.evidence("target"), Some("default/web-gone"));
        assert_eq!(found[0].evidence("target"), Some("none"));
    }

    #[test]
    fn nothing_until_both_sources_listed_and_a_ghost_waits_for_the_grace() {
        let ghost = vec![endpoint("default/web", "10.244.0.9", None, None)];
        let mut unlisted = view(ghost.clone(), &[]);
        unlisted.pod_addresses = None;
        let at = Instant::now();
        let grace = Duration::from_secs(3);
        let mut memory = Memory::new(grace);
        let net = node_net();
        assert!(ghost_endpoints(&unlisted, &net, subnet(), "pi-1", &mut memory, at).is_empty());
        let listed = view(ghost, &[]);
        assert!(ghost_endpoints(&listed, &net, subnet(), "pi-1", &mut memory, at).is_empty());
        let later = at + grace;
        assert_eq!(
            ghost_endpoints(&listed, &net, subnet(), "pi-1", &mut memory, later).len(),
            1
        );
        // A pod with the address shows up: no ghost, and the clock starts over.
        let back = view(
            vec![endpoint("default/web", "10.244.0.9", None, None)],
            &["10.244.0.9"],
        );
        assert!(ghost_endpoints(&back, &net, subnet(), "pi-1", &mut memory, later).is_empty());
        assert!(
            ghost_endpoints(&listed, &net, subnet(), "pi-1", &mut memory, later).is_empty(),
            "the grace starts again"
        );
    }

    #[test]
    fn without_a_subnet_only_endpoints_on_this_node_are_judged_and_not_ready_is_a_warning() {
        let mut not_ready = endpoint("default/web", "10.244.0.9", None, Some("pi-1"));
        not_ready.ready = false;
        let view = view(
            vec![
                not_ready,
                endpoint("default/web", "10.244.2.99", None, Some("pi-3")),
                endpoint("default/legacy-db", "10.244.0.50", None, None),
            ],
            &[],
        );
        let mut memory = Memory::new(Duration::ZERO);
        let found = ghost_endpoints(
            &view,
            &node_net(),
            None,
            "pi-1",
            &mut memory,
            Instant::now(),
        );
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].subject, "service default/web endpoint 10.244.0.9");
        assert_eq!(found[0].severity, Severity::Warning);
        assert_eq!(found[0].evidence("node"), Some("pi-1"));
    }

    #[test]
    fn failing_destinations_that_are_endpoints_name_their_service() {
        let view = view(
            vec![
                endpoint("default/web", "10.244.2.99", None, None),
                endpoint("default/api", "10.244.2.99", None, None),
            ],
            &[],
        );
        let mut candidates = vec![
            Candidate::new(
                Kind::FailingTcpDestination,
                "tcp 10.244.2.99:8080",
                Severity::Critical,
            ),
            // Another port than the slices list: no Service.
            Candidate::new(
                Kind::FailingTcpDestination,
                "tcp 10.244.2.99:9000",
                Severity::Critical,
            ),
        ];
        name_services(&mut candidates, &view);
        assert_eq!(
            candidates[0].evidence("service"),
            Some("default/api,default/web")
        );
        assert_eq!(candidates[1].evidence("service"), None);
    }
}
