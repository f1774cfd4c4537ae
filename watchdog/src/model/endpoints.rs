//! Service endpoints (from EndpointSlices) and the addresses of running pods: plain data
//! the pods source produces and the ghost-endpoint detector reads.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
};

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

/// The Service endpoints of the cluster, by slice (`namespace/name`).
pub type Slices = BTreeMap<String, Vec<Endpoint>>;

/// What the ghost-endpoint detector is given each cycle.
#[derive(Clone, Debug, Default)]
pub struct EndpointView {
    /// Every slice's endpoints; `None` until the source listed them once.
    pub slices: Option<Arc<Slices>>,
    /// The addresses of the running pods the pod source knows (hostNetwork pods' too);
    /// `None` until it listed them once.
    pub pod_addresses: Option<Arc<BTreeSet<IpAddr>>>,
}

impl EndpointView {
    /// The Services whose endpoint `address:port` is, `namespace/name`, sorted.
    pub fn services_at(&self, address: IpAddr, port: u16) -> Vec<&str> {
        let Some(slices) = &self.slices else {
            return Vec::new();
        };
        let mut services: Vec<&str> = slices
            .values()
            .flatten()
            .filter(|e| e.address == address && (e.ports.is_empty() || e.ports.contains(&port)))
            .map(|e| e.service.as_str())
            .collect();
        services.sort_unstable();
        services.dedup();
        services
    }
}
