//! Service endpoints from EndpointSlices (`discovery.k8s.io/v1`), every namespace: from the
//! Kubernetes API (`pods.endpoints = "kubernetes"`, listed then watched through the shared
//! client; RBAC get/list/watch on endpointslices) or from a file (`kubectl get
//! endpointslices -A -o json`). Bounded whatever the cluster holds: whole endpoints are
//! kept only for the addresses this node judges ([`Scope`]: its pod subnet), and every
//! slice's addresses only to name Services; each set holds at most `pods.max_endpoints`,
//! and what does not fit is counted.

use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use crate::{
    model::endpoints::{
        Endpoint, EndpointCounters, Scope, ServiceAddresses, SliceAddresses, Slices,
    },
    sources::k8s::{
        Kube, Update, follow,
        object::{EndpointSlice, list_items},
    },
};

/// The label naming a slice's Service.
const SERVICE_LABEL: &str = "kubernetes.io/service-name";

/// Slices per list request: up to 100 endpoints each.
const PAGE: u32 = 50;

/// `namespace/name` of a slice.
fn key(slice: &EndpointSlice) -> String {
    let meta = &slice.metadata;
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or("")
    )
}

/// A slice's key and endpoints (addresses that do not parse, e.g. an FQDN slice's, are
/// left out).
pub fn convert(slice: &EndpointSlice) -> (String, Vec<Endpoint>) {
    let meta = &slice.metadata;
    let namespace = meta.namespace.as_deref().unwrap_or("default");
    let service = meta
        .labels
        .as_ref()
        .and_then(|labels| labels.get(SERVICE_LABEL))
        .map_or_else(
            || format!("{namespace}/(no service)"),
            |name| format!("{namespace}/{name}"),
        );
    let slice_key = key(slice);
    let ports: Vec<u16> = slice
        .ports
        .iter()
        .filter_map(|port| u16::try_from(port.port?).ok())
        .collect();
    let mut endpoints = Vec::new();
    for endpoint in &slice.endpoints {
        let pod = endpoint
            .target_ref
            .as_ref()
            .filter(|target| target.kind.as_deref() == Some("Pod"))
            .map(|target| {
                format!(
                    "{}/{}",
                    target.namespace.as_deref().unwrap_or(namespace),
                    target.name.as_deref().unwrap_or("")
                )
            });
        let ready = endpoint.conditions.ready.unwrap_or(true);
        for address in &endpoint.addresses {
            let Ok(address) = address.parse() else {
                continue;
            };
            endpoints.push(Endpoint {
                service: service.clone(),
                slice: slice_key.clone(),
                address,
                ready,
                ports: ports.clone(),
                pod: pod.clone(),
                node: endpoint.node_name.clone(),
            });
        }
    }
    (slice_key, endpoints)
}

/// The slices of an EndpointSliceList JSON text (`kind: List` or `EndpointSliceList`, or
/// one EndpointSlice).
pub fn parse_slice_list(text: &str) -> Result<Vec<EndpointSlice>, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|err| format!("invalid JSON: {err}"))?;
    list_items(value, "EndpointSlice")
}

/// The endpoints kept, within the scope and the cap.
#[derive(Clone, Debug, Default)]
pub struct Bounded {
    scope: Scope,
    max: usize,
    judged: Slices,
    named: ServiceAddresses,
    counters: EndpointCounters,
    /// Changed since last published, per set.
    judged_changed: bool,
    named_changed: bool,
}

impl Bounded {
    /// Empty, judging `scope`, at most `max` endpoints per set.
    pub fn new(scope: Scope, max: usize) -> Self {
        Self {
            scope,
            max,
            judged_changed: true,
            named_changed: true,
            ..Self::default()
        }
    }

    /// What is kept and was left out so far.
    pub fn counters(&self) -> EndpointCounters {
        self.counters
    }

    /// Puts `slice` in place of what it had, keeping what the scope and the cap allow.
    pub fn apply(&mut self, slice: &EndpointSlice) {
        let (key, endpoints) = convert(slice);
        self.remove(&key);
        let service = endpoints
            .first()
            .map(|e| e.service.clone())
            .unwrap_or_default();
        let ports = endpoints
            .first()
            .map(|e| e.ports.clone())
            .unwrap_or_default();
        let mut addresses: Vec<_> = endpoints.iter().map(|e| e.address).collect();
        let room = self.max.saturating_sub(self.counters.named as usize);
        if addresses.len() > room {
            self.counters.named_untracked += (addresses.len() - room) as u64;
            addresses.truncate(room);
        }
        if !addresses.is_empty() {
            self.counters.named += addresses.len() as u64;
            self.named.insert(
                key.clone(),
                Arc::new(SliceAddresses {
                    service,
                    ports,
                    addresses,
                }),
            );
            self.named_changed = true;
        }
        let mut judged: Vec<Endpoint> = endpoints
            .into_iter()
            .filter(|e| self.scope.contains(e))
            .collect();
        let room = self.max.saturating_sub(self.counters.judged as usize);
        if judged.len() > room {
            self.counters.judged_untracked += (judged.len() - room) as u64;
            judged.truncate(room);
        }
        if !judged.is_empty() {
            self.counters.judged += judged.len() as u64;
            self.judged.insert(key, judged);
            self.judged_changed = true;
        }
    }

    /// Forgets slice `key` (`namespace/name`).
    pub fn remove(&mut self, key: &str) {
        if let Some(old) = self.named.remove(key) {
            self.counters.named -= old.addresses.len() as u64;
            self.named_changed = true;
        }
        if let Some(old) = self.judged.remove(key) {
            self.counters.judged -= old.len() as u64;
            self.judged_changed = true;
        }
    }

    /// Takes `fresh`'s endpoints (a new full list), keeping the counts of what was left
    /// out before.
    fn replace(&mut self, fresh: Bounded) {
        let untracked = (
            self.counters.judged_untracked,
            self.counters.named_untracked,
        );
        *self = Self {
            judged_changed: true,
            named_changed: true,
            ..fresh
        };
        self.counters.judged_untracked += untracked.0;
        self.counters.named_untracked += untracked.1;
    }
}

/// The endpoints shared between the follower (or the file reader) and [`super::Pods`].
#[derive(Debug, Default)]
pub struct SliceState {
    /// Listed (or read) at least once.
    pub listed: bool,
    /// What is kept.
    pub bounded: Bounded,
}

impl SliceState {
    /// A full list (or file) read: `slices` replace what was kept, within `scope`.
    pub fn replace(&mut self, slices: &[EndpointSlice], scope: Scope, max: usize) {
        let mut fresh = Bounded::new(scope, max);
        for slice in slices {
            fresh.apply(slice);
        }
        self.bounded.replace(fresh);
        self.listed = true;
    }
}

/// The state, shared.
pub type SliceStore = Arc<RwLock<SliceState>>;

/// What [`super::Pods`] last handed out, rebuilt only when a set changed.
#[derive(Debug, Default)]
pub struct Published {
    slices: Option<Arc<Slices>>,
    services: Option<Arc<ServiceAddresses>>,
}

impl Published {
    /// The sets as shared values (`None` until listed), copying only a set that changed
    /// since the last call.
    pub fn view(
        &mut self,
        state: &mut SliceState,
    ) -> (Option<Arc<Slices>>, Option<Arc<ServiceAddresses>>) {
        if !state.listed {
            return (None, None);
        }
        let bounded = &mut state.bounded;
        if bounded.judged_changed || self.slices.is_none() {
            self.slices = Some(Arc::new(bounded.judged.clone()));
            bounded.judged_changed = false;
        }
        if bounded.named_changed || self.services.is_none() {
            self.services = Some(Arc::new(bounded.named.clone()));
            bounded.named_changed = false;
        }
        (self.slices.clone(), self.services.clone())
    }
}

/// Follows every EndpointSlice into `store` until the task is dropped, listing again
/// whenever `scope` changes (endpoints left out under the old scope may be in the new).
pub async fn follow_slices(
    kube: Kube,
    store: SliceStore,
    mut scope: watch::Receiver<Scope>,
    max: usize,
) {
    loop {
        let judging = scope.borrow_and_update().clone();
        // The slices of a list in progress.
        let mut listing = Bounded::new(judging.clone(), max);
        let follower = follow::<EndpointSlice>(&kube, None, PAGE, |update| {
            let write = || {
                store
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
            };
            match update {
                Update::ListStart => listing = Bounded::new(judging.clone(), max),
                Update::Listed(slice) => listing.apply(&slice),
                Update::ListEnd => {
                    let fresh = std::mem::replace(&mut listing, Bounded::new(judging.clone(), max));
                    let mut state = write();
                    state.bounded.replace(fresh);
                    state.listed = true;
                    tracing::info!(
                        judged = state.bounded.counters.judged,
                        named = state.bounded.counters.named,
                        "endpoint slices listed"
                    );
                }
                Update::Applied(slice) => write().bounded.apply(&slice),
                Update::Deleted(slice) => write().bounded.remove(&key(&slice)),
                Update::Healthy => {}
                Update::Failed(why) => tracing::warn!("endpoint slices: {why}"),
            }
        });
        tokio::select! {
            () = follower => return,
            changed = scope.changed() => {
                if changed.is_err() {
                    return;
                }
                tracing::info!("endpoint slices: this node's pod subnet is known now; listing again");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slices() -> Vec<EndpointSlice> {
        let text = include_str!("../../../tests/fixtures/pods/endpointslices.json");
        parse_slice_list(text).unwrap()
    }

    #[test]
    fn a_recorded_slice_list_gives_services_addresses_and_targets() {
        let slices: Slices = slices().iter().map(convert).collect();
        let web = &slices["default/web-x8k2p"];
        assert!(web.iter().all(|e| e.service == "default/web"), "{web:#?}");
        let live = web
            .iter()
            .find(|e| e.address.to_string() == "10.244.0.2")
            .unwrap();
        assert!(live.ready);
        assert_eq!(live.pod.as_deref(), Some("default/web-7f9c5d8b6-x2x7q"));
        assert_eq!(live.node.as_deref(), Some("pi-austin-1"));
        assert_eq!(live.ports, [8080]);
        let legacy = &slices["default/legacy-db-7tq2m"];
        assert!(legacy.iter().all(|e| e.pod.is_none() && e.node.is_none()));
    }

    #[test]
    fn not_a_slice_list_says_so() {
        assert!(parse_slice_list("{\"kind\": \"PodList\", \"items\": []}").is_err());
        assert!(parse_slice_list("[]").is_err());
    }

    #[test]
    fn only_this_nodes_endpoints_are_kept_whole_and_each_set_is_capped() {
        let subnet = crate::model::desired::PodSubnet::parse("10.244.0.0/24").unwrap();
        let scope = Scope {
            subnet: Some(subnet),
            node: "pi-austin-1".into(),
        };
        let mut state = SliceState::default();
        state.replace(&slices(), scope.clone(), 1000);
        let counters = state.bounded.counters();
        let judged: Vec<String> = state
            .bounded
            .judged
            .values()
            .flatten()
            .map(|e| e.address.to_string())
            .collect();
        assert!(
            judged.iter().all(|a| a.starts_with("10.244.0.")),
            "{judged:?}"
        );
        assert_eq!(counters.judged, judged.len() as u64);
        assert!(counters.named > counters.judged, "{counters:?}");
        assert_eq!(counters.judged_untracked + counters.named_untracked, 0);
        // Services are named for addresses outside the scope too.
        let mut published = Published::default();
        let (slices_view, services) = published.view(&mut state);
        let view = crate::model::endpoints::EndpointView {
            slices: slices_view,
            services,
            pod_addresses: None,
        };
        assert_eq!(
            view.services_at("10.244.2.99".parse().unwrap(), 8080),
            ["default/web"]
        );
        // Unchanged: the same shared sets, not copies.
        let (again, _) = published.view(&mut state);
        assert!(Arc::ptr_eq(
            again.as_ref().unwrap(),
            view.slices.as_ref().unwrap()
        ));

        // A cap of 1: one endpoint per set, the rest counted.
        let mut small = SliceState::default();
        small.replace(&slices(), scope, 1);
        let counters = small.bounded.counters();
        assert_eq!((counters.judged, counters.named), (1, 1));
        assert!(
            counters.judged_untracked > 0 && counters.named_untracked > 0,
            "{counters:?}"
        );
        // Deleting a slice makes room and keeps the counts of what was left out.
        let first = small.bounded.named.keys().next().unwrap().clone();
        small.bounded.remove(&first);
        assert_eq!(small.bounded.counters().named, 0);
        assert_eq!(
            small.bounded.counters().named_untracked,
            counters.named_untracked
        );
    }
}
