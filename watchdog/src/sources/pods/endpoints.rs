//! Service endpoints from EndpointSlices (`discovery.k8s.io/v1`), every namespace: from the
//! Kubernetes API (`pods.endpoints = "kubernetes"`, listed then watched; RBAC
//! get/list/watch on endpointslices) or from a file (`kubectl get endpointslices -A -o
//! json`). Each slice is kept as plain [`Endpoint`]s: Service, address, ready, ports,
//! the Pod it targets, its node.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{Api, Client};

use crate::{
    model::endpoints::{Endpoint, Slices},
    sources::desired::kubernetes::{Update, reflect},
};

/// The label naming a slice's Service.
const SERVICE_LABEL: &str = "kubernetes.io/service-name";

/// The slices the source knows (`None` until listed or read once), shared with
/// [`super::Pods`]. Replaced whole on each change, so readers clone an `Arc`.
pub type SliceStore = Arc<RwLock<Option<Arc<Slices>>>>;

/// `namespace/name` of an object's metadata.
fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
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
    let slice_key = key(meta);
    let ports: Vec<u16> = slice
        .ports
        .iter()
        .flatten()
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
        let ready = endpoint
            .conditions
            .as_ref()
            .and_then(|c| c.ready)
            .unwrap_or(true);
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
pub fn parse_slice_list(text: &str) -> Result<Slices, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|err| format!("invalid JSON: {err}"))?;
    let items = match value.get("kind").and_then(|kind| kind.as_str()) {
        Some("List" | "EndpointSliceList") => value
            .get("items")
            .and_then(|items| items.as_array())
            .ok_or("no `items` array")?
            .clone(),
        Some("EndpointSlice") => vec![value],
        Some(other) => return Err(format!("kind {other}, not a List of EndpointSlices")),
        None => return Err("no `kind`".into()),
    };
    let mut slices = BTreeMap::new();
    for (i, item) in items.into_iter().enumerate() {
        let slice: EndpointSlice =
            serde_json::from_value(item).map_err(|err| format!("items[{i}]: {err}"))?;
        let (key, endpoints) = convert(&slice);
        slices.insert(key, endpoints);
    }
    Ok(slices)
}

/// Follows every EndpointSlice into `store` until the task is dropped.
pub async fn follow_slices(client: Client, store: SliceStore) {
    let api: Api<EndpointSlice> = Api::all(client);
    let mut current = Slices::new();
    reflect(api, |update| {
        match update {
            Update::Listed(slices) => {
                current = slices.iter().map(convert).collect();
                tracing::info!(slices = current.len(), "endpoint slices listed");
            }
            Update::Applied(slice) => {
                let (key, endpoints) = convert(&slice);
                if current.get(&key) == Some(&endpoints) {
                    return;
                }
                current.insert(key, endpoints);
            }
            Update::Deleted(slice) => {
                if current.remove(&key(&slice.metadata)).is_none() {
                    return;
                }
            }
            Update::Healthy => return,
            Update::Failed(why) => {
                tracing::warn!("endpoint slices: {why}");
                return;
            }
        }
        *store
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(current.clone()));
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_slice_list_gives_services_addresses_and_targets() {
        let text = include_str!("../../../tests/fixtures/pods/endpointslices.json");
        let slices = parse_slice_list(text).unwrap();
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
}
