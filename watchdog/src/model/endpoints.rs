//! Service endpoints (from EndpointSlices) and the addresses of running pods: plain data
//! the pods source produces and the ghost-endpoint detector reads. The source keeps whole
//! endpoints only for the addresses this node judges ([`Scope`]) and every slice's
//! addresses only to name Services, each set capped (`pods.max_endpoints`).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
};

use super::desired::PodSubnet;

/// One address an EndpointSlice lists for a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The Service, `namespace/name` (the slice's `kubernetes.io/service-name` label).
    pub service: String,
    /// The slice, `namespace/name`.
    pub slice: String,
    /// The address.
    pub address: IpAddr,
    /// `conditions.ready` (absent counts as ready, as kube-proxy does).
    pub ready: bool,
    /// The ports the slice lists (target ports; empty: every port).
    pub ports: Vec<u16>,
    /// `targetRef` when it is a Pod: `namespace/name`; `None` for hand-written endpoints.
    pub pod: Option<String>,
    /// `nodeName`, when the slice says.
    pub node: Option<String>,
}

/// Service endpoints, by slice (`namespace/name`).
pub type Slices = BTreeMap<String, Vec<Endpoint>>;

/// A slice's addresses, to name the Service of a destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceAddresses {
    /// The Service, `namespace/name`.
    pub service: String,
    /// The ports the slice lists (empty: every port).
    pub ports: Vec<u16>,
    /// Its endpoints' addresses.
    pub addresses: Vec<IpAddr>,
}

/// Every slice's addresses (as many as the cap allows), by slice.
pub type ServiceAddresses = BTreeMap<String, Arc<SliceAddresses>>;

/// The endpoints this node judges: those in its pod subnet (its Node's `podCIDR`, from
/// the desired state), or while that is unknown, those whose `nodeName` is this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// This node's pod subnet, once known.
    pub subnet: Option<PodSubnet>,
    /// This node's name.
    pub node: String,
}

impl Scope {
    /// Whether this node judges `endpoint`.
    pub fn contains(&self, endpoint: &Endpoint) -> bool {
        match (self.subnet, endpoint.address) {
            (Some(subnet), IpAddr::V4(v4)) => subnet.contains(v4),
            (Some(_), IpAddr::V6(_)) => false,
            (None, _) => !self.node.is_empty() && endpoint.node.as_deref() == Some(&self.node),
        }
    }
}

/// What the endpoint source holds and what it had to leave out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointCounters {
    /// Endpoints kept whole, to be judged (this node's [`Scope`]).
    pub judged: u64,
    /// Addresses kept to name Services.
    pub named: u64,
    /// Endpoints of this node's scope left out because `pods.max_endpoints` were kept
    /// (each time a slice was listed or changed).
    pub judged_untracked: u64,
    /// Addresses left out of the Service names, the same way.
    pub named_untracked: u64,
}

/// What the ghost-endpoint detector is given each cycle.
#[derive(Clone, Debug, Default)]
pub struct EndpointView {
    /// The endpoints this node judges, by slice; `None` until the source listed them
    /// once.
    pub slices: Option<Arc<Slices>>,
    /// Every slice's addresses, to name Services; `None` until listed once.
    pub services: Option<Arc<ServiceAddresses>>,
    /// The addresses of the running pods the pod source knows (hostNetwork pods' too);
    /// `None` until it listed them once.
    pub pod_addresses: Option<Arc<BTreeSet<IpAddr>>>,
}

impl EndpointView {
    /// The Services whose endpoint `address:port` is, `namespace/name`, sorted.
    pub fn services_at(&self, address: IpAddr, port: u16) -> Vec<&str> {
        let serves = |ports: &[u16]| ports.is_empty() || ports.contains(&port);
        let judged = self
            .slices
            .iter()
            .flat_map(|slices| slices.values().flatten())
            .filter(|e| e.address == address && serves(&e.ports))
            .map(|e| e.service.as_str());
        let named = self
            .services
            .iter()
            .flat_map(|services| services.values())
            .filter(|s| s.addresses.contains(&address) && serves(&s.ports))
            .map(|s| s.service.as_str());
        let mut services: Vec<&str> = judged.chain(named).collect();
        services.sort_unstable();
        services.dedup();
        services
    }
}
