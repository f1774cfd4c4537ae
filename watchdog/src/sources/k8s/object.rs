//! The Kubernetes objects the sources read, slim: only the fields a source uses are
//! deserialized (managed fields, images, conditions, specs of containers are skipped as
//! the JSON is read), for the API's lists and watches and for the files `kubectl get … -o
//! json|yaml` writes alike. `null` reads as absent, as in the API's own types.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Deserializer};

/// Implements kube's `Resource` (through `k8s_openapi`'s traits) for a slim type, with
/// the API group, version, kind and path of the full type it reads.
macro_rules! slim_resource {
    ($slim:ty, $full:ty) => {
        impl k8s_openapi::Resource for $slim {
            const API_VERSION: &'static str = <$full as k8s_openapi::Resource>::API_VERSION;
            const GROUP: &'static str = <$full as k8s_openapi::Resource>::GROUP;
            const KIND: &'static str = <$full as k8s_openapi::Resource>::KIND;
            const VERSION: &'static str = <$full as k8s_openapi::Resource>::VERSION;
            const URL_PATH_SEGMENT: &'static str =
                <$full as k8s_openapi::Resource>::URL_PATH_SEGMENT;
            type Scope = <$full as k8s_openapi::Resource>::Scope;
        }

        impl k8s_openapi::Metadata for $slim {
            type Ty = ObjectMeta;

            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// `null` or absent → the default.
fn or_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// The parts of `metadata` the sources read; `managedFields`, `ownerReferences` and the
/// rest are skipped.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    #[serde(default, deserialize_with = "or_default")]
    annotations: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "or_default")]
    labels: BTreeMap<String, String>,
}

/// Reads `metadata` into an [`ObjectMeta`] holding only what [`Meta`] keeps.
fn meta<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ObjectMeta, D::Error> {
    let Some(meta) = Option::<Meta>::deserialize(deserializer)? else {
        return Ok(ObjectMeta::default());
    };
    let map = |map: BTreeMap<String, String>| (!map.is_empty()).then_some(map);
    Ok(ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        resource_version: meta.resource_version,
        annotations: map(meta.annotations),
        labels: map(meta.labels),
        ..ObjectMeta::default()
    })
}

/// A Node: Flannel's annotations, the pod CIDRs, the addresses.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Node {
    /// Name, resourceVersion, annotations.
    #[serde(default, deserialize_with = "meta")]
    pub metadata: ObjectMeta,
    /// `spec`.
    #[serde(default, deserialize_with = "or_default")]
    pub spec: NodeSpec,
    /// `status`.
    #[serde(default, deserialize_with = "or_default")]
    pub status: NodeStatus,
}
slim_resource!(Node, k8s_openapi::api::core::v1::Node);

/// A Node's `spec`: its pod subnets.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct NodeSpec {
    /// `spec.podCIDR`.
    #[serde(default, rename = "podCIDR")]
    pub pod_cidr: Option<String>,
    /// `spec.podCIDRs`.
    #[serde(default, rename = "podCIDRs", deserialize_with = "or_default")]
    pub pod_cidrs: Vec<String>,
}

/// A Node's `status`: its addresses.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct NodeStatus {
    /// `status.addresses`.
    #[serde(default, deserialize_with = "or_default")]
    pub addresses: Vec<NodeAddress>,
}

/// One of `status.addresses`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct NodeAddress {
    /// `InternalIP`, `ExternalIP`, `Hostname`, …
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The address (a host name for `Hostname`).
    #[serde(default)]
    pub address: String,
}

/// A Pod: its name, UID, the mirror annotation of a static pod, phase and addresses.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Pod {
    /// Name, namespace, UID, annotations.
    #[serde(default, deserialize_with = "meta")]
    pub metadata: ObjectMeta,
    /// `status`.
    #[serde(default, deserialize_with = "or_default")]
    pub status: PodStatus,
}
slim_resource!(Pod, k8s_openapi::api::core::v1::Pod);

/// A Pod's `status`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    /// `Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`.
    pub phase: Option<String>,
    /// `status.podIP`.
    #[serde(default, rename = "podIP")]
    pub pod_ip: Option<String>,
    /// `status.podIPs[].ip`.
    #[serde(default, rename = "podIPs", deserialize_with = "or_default")]
    pub pod_ips: Vec<PodIp>,
}

/// One of `status.podIPs`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PodIp {
    /// The address.
    #[serde(default)]
    pub ip: String,
}

/// An EndpointSlice (`discovery.k8s.io/v1`): its Service label, endpoints and ports.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct EndpointSlice {
    /// Name, namespace, labels.
    #[serde(default, deserialize_with = "meta")]
    pub metadata: ObjectMeta,
    /// `endpoints`.
    #[serde(default, deserialize_with = "or_default")]
    pub endpoints: Vec<Endpoint>,
    /// `ports`.
    #[serde(default, deserialize_with = "or_default")]
    pub ports: Vec<EndpointPort>,
}
slim_resource!(
    EndpointSlice,
    k8s_openapi::api::discovery::v1::EndpointSlice
);

/// One of a slice's `endpoints`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// `addresses`.
    #[serde(default, deserialize_with = "or_default")]
    pub addresses: Vec<String>,
    /// `conditions.ready`.
    #[serde(default, deserialize_with = "or_default")]
    pub conditions: EndpointConditions,
    /// `targetRef`.
    pub target_ref: Option<TargetRef>,
    /// `nodeName`.
    pub node_name: Option<String>,
}

/// An endpoint's `conditions`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct EndpointConditions {
    /// `ready`: absent counts as ready, as kube-proxy does.
    pub ready: Option<bool>,
}

/// An endpoint's `targetRef`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct TargetRef {
    /// `Pod` for pods.
    pub kind: Option<String>,
    /// The object's name.
    pub name: Option<String>,
    /// The object's namespace.
    pub namespace: Option<String>,
}

/// One of a slice's `ports`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct EndpointPort {
    /// The port number.
    pub port: Option<i32>,
}

/// The items of a list as `kubectl get <kind> -o json|yaml` writes it (`kind: List`,
/// `<Kind>List`, no kind at all) or one object of `kind` (`Node`), each read as `T`.
pub fn list_items<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    kind: &str,
) -> Result<Vec<T>, String> {
    let list_kind = format!("{kind}List");
    let found = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    let items = if found == kind {
        vec![value]
    } else if found.is_empty() || found == "List" || found == list_kind {
        match value.get("items") {
            Some(serde_json::Value::Array(items)) => items.clone(),
            Some(serde_json::Value::Null) => Vec::new(),
            _ => return Err(format!("`kind: {found}` without an `items` list")),
        }
    } else {
        return Err(format!(
            "`kind: {found}`, expected List, {list_kind} or {kind}"
        ));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            let item_kind = item.get("kind").and_then(|k| k.as_str()).unwrap_or(kind);
            if item_kind != kind {
                return Err(format!("items[{index}] is a {item_kind}, not a {kind}"));
            }
            serde_json::from_value(item).map_err(|err| format!("items[{index}]: {err}"))
        })
        .collect()
}
