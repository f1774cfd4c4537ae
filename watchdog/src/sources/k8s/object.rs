//! The Kubernetes objects the sources read, slim: only the fields a source uses are
//! deserialized (managed fields, images, conditions, specs of containers are skipped as
//! the JSON is read), for the API's lists and watches and for the files `kubectl get … -o
//! json|yaml` writes alike. `null` reads as absent, as in the API's own types.
//!
//! Every string read is cleaned here, once ([`clean`]): control and bidirectional
//! formatting characters removed, at most [`MAX_TEXT`] characters ([`MAX_ANNOTATION`] for
//! an annotation's value). Whoever can write an object (a kubelet patches its own Node)
//! cannot forge a log line, break a message's layout or make a label unbounded.

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

/// The most characters kept of a string from the API (names are at most 253).
pub const MAX_TEXT: usize = 256;

/// The most characters kept of an annotation's value (Flannel's are under 100).
pub const MAX_ANNOTATION: usize = 1024;

/// `text` without control characters (newlines, escapes, NUL …) and bidirectional
/// formatting characters (which reorder what a reader sees), cut to `max` characters.
pub fn clean(text: String, max: usize) -> String {
    let unwanted = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unwanted) && text.len() <= max {
        return text;
    }
    text.chars().filter(|&c| !unwanted(c)).take(max).collect()
}

/// A string, cleaned ([`clean`]).
fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(clean(
        Option::<String>::deserialize(deserializer)?.unwrap_or_default(),
        MAX_TEXT,
    ))
}

/// An optional string, cleaned ([`clean`]).
fn optional_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.map(|text| clean(text, MAX_TEXT)))
}

/// A list of strings, each cleaned ([`clean`]).
fn texts<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(deserializer)?
        .unwrap_or_default()
        .into_iter()
        .map(|text| clean(text, MAX_TEXT))
        .collect())
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
    let map = |map: BTreeMap<String, String>, max: usize| {
        let map: BTreeMap<String, String> = map
            .into_iter()
            .map(|(key, value)| (clean(key, MAX_TEXT), clean(value, max)))
            .collect();
        (!map.is_empty()).then_some(map)
    };
    let short = |text: Option<String>| text.map(|text| clean(text, MAX_TEXT));
    Ok(ObjectMeta {
        name: short(meta.name),
        namespace: short(meta.namespace),
        uid: short(meta.uid),
        resource_version: short(meta.resource_version),
        annotations: map(meta.annotations, MAX_ANNOTATION),
        labels: map(meta.labels, MAX_TEXT),
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
    #[serde(default, rename = "podCIDR", deserialize_with = "optional_text")]
    pub pod_cidr: Option<String>,
    /// `spec.podCIDRs`.
    #[serde(default, rename = "podCIDRs", deserialize_with = "texts")]
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
    #[serde(rename = "type", default, deserialize_with = "text")]
    pub kind: String,
    /// The address (a host name for `Hostname`).
    #[serde(default, deserialize_with = "text")]
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
    #[serde(default, deserialize_with = "optional_text")]
    pub phase: Option<String>,
    /// `status.podIP`.
    #[serde(default, rename = "podIP", deserialize_with = "optional_text")]
    pub pod_ip: Option<String>,
    /// `status.podIPs[].ip`.
    #[serde(default, rename = "podIPs", deserialize_with = "or_default")]
    pub pod_ips: Vec<PodIp>,
}

/// One of `status.podIPs`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PodIp {
    /// The address.
    #[serde(default, deserialize_with = "text")]
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
    #[serde(default, deserialize_with = "texts")]
    pub addresses: Vec<String>,
    /// `conditions.ready`.
    #[serde(default, deserialize_with = "or_default")]
    pub conditions: EndpointConditions,
    /// `targetRef`.
    pub target_ref: Option<TargetRef>,
    /// `nodeName`.
    #[serde(default, deserialize_with = "optional_text")]
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
    #[serde(default, deserialize_with = "optional_text")]
    pub kind: Option<String>,
    /// The object's name.
    #[serde(default, deserialize_with = "optional_text")]
    pub name: Option<String>,
    /// The object's namespace.
    #[serde(default, deserialize_with = "optional_text")]
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A Node a kubelet could write about itself: every string hostile.
    #[test]
    fn strings_are_cleaned_once_as_they_are_read() {
        let long = "x".repeat(5000);
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "node-1\n2026-12-06T00:00:00Z WARN forged line",
                "annotations": {
                    "flannel.alpha.coreos.com/public-ip-overwrite":
                        "<!channel> `x` \u{202e}1.2.3.4\u{1b}[31m\r\n",
                    "flannel.alpha.coreos.com/backend-data": long,
                },
                "labels": {"a\tb": "c\u{0}d"},
            },
            "status": {"addresses": [{"type": "Hostname", "address": "h\nost"}]},
        }))
        .unwrap();
        let meta = &node.metadata;
        assert_eq!(
            meta.name.as_deref(),
            Some("node-12026-12-06T00:00:00Z WARN forged line")
        );
        let annotations = meta.annotations.as_ref().unwrap();
        // Control characters go; what a sink must escape (Slack's `<`, a backtick) stays
        // for that sink.
        assert_eq!(
            annotations["flannel.alpha.coreos.com/public-ip-overwrite"],
            "<!channel> `x` 1.2.3.4[31m"
        );
        assert_eq!(
            annotations["flannel.alpha.coreos.com/backend-data"]
                .chars()
                .count(),
            MAX_ANNOTATION
        );
        assert_eq!(meta.labels.as_ref().unwrap()["ab"], "cd");
        assert_eq!(node.status.addresses[0].address, "host");
        // A clean string is kept as it is.
        assert_eq!(clean("default/web-1".into(), MAX_TEXT), "default/web-1");
        assert_eq!(clean("é".repeat(300), MAX_TEXT).chars().count(), MAX_TEXT);
    }
}
