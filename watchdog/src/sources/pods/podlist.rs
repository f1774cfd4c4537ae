//! Pods as the API and `kubectl get pods -o json` give them (`kind: List` or `PodList`):
//! pod UID → namespace/name and addresses. Only pods still running count (a Succeeded or
//! Failed pod's sandbox is gone).

use std::{collections::BTreeMap, net::IpAddr};

use crate::{
    model::pods::{PodInfo, PodName},
    sources::k8s::object::{Pod, list_items},
};

/// The annotation a static pod's mirror Pod carries: the UID kubelet gave the static pod
/// (and put in its cgroup path).
pub const MIRROR: &str = "kubernetes.io/config.mirror";

/// The UID in the pod's cgroup path: a static pod's from its mirror Pod's annotation
/// ([`MIRROR`]), every other pod's `metadata.uid`.
pub fn key_of(pod: &Pod) -> Option<String> {
    let meta = &pod.metadata;
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(MIRROR))
        .or(meta.uid.as_ref())
        .cloned()
}

/// The name and addresses (`status.podIPs[].ip`, else `status.podIP`) of a running pod;
/// `None` for a finished one or one without a name.
pub fn info_of(pod: &Pod) -> Option<PodInfo> {
    let status = &pod.status;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let mut addresses: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .filter_map(|ip| ip.ip.parse().ok())
        .collect();
    if addresses.is_empty() {
        addresses.extend(
            status
                .pod_ip
                .as_deref()
                .and_then(|ip| ip.parse::<IpAddr>().ok()),
        );
    }
    let meta = &pod.metadata;
    Some(PodInfo {
        name: PodName {
            namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
            name: meta.name.clone()?,
        },
        addresses,
    })
}

/// The running pods of a PodList JSON text by the UID in their cgroup path.
pub fn parse_pod_list(text: &str) -> Result<BTreeMap<String, PodInfo>, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|err| format!("invalid JSON: {err}"))?;
    let mut pods = BTreeMap::new();
    for (i, pod) in list_items::<Pod>(value, "Pod")?.iter().enumerate() {
        let (Some(uid), Some(_)) = (key_of(pod), pod.metadata.name.as_ref()) else {
            return Err(format!("items[{i}]: no metadata.uid or metadata.name"));
        };
        if let Some(info) = info_of(pod) {
            pods.insert(uid, info);
        }
    }
    Ok(pods)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_pod_list_names_its_running_pods() {
        let text = include_str!("../../../tests/fixtures/pods/podlist.json");
        let pods = parse_pod_list(text).unwrap();
        let web = pods
            .get("0f1c6d2e-3b4a-4c5d-8e9f-0a1b2c3d4e5f")
            .expect("the web pod");
        assert_eq!(web.name.to_string(), "default/web-7f9c5d8b6-x2x7q");
        assert_eq!(web.addresses, ["10.244.0.2".parse::<IpAddr>().unwrap()]);
        assert!(
            pods.values()
                .all(|pod| pod.name.name != "migrate-29381-abcde"),
            "a Succeeded pod is no longer running: {pods:#?}"
        );
    }

    #[test]
    fn a_static_pod_is_named_by_the_uid_in_its_cgroup() {
        let text = r#"{"kind": "PodList", "items": [{"kind": "Pod", "metadata": {
            "name": "kube-apiserver-pi-1", "namespace": "kube-system",
            "uid": "7d3c0a4e-1111-4222-8333-944455556666",
            "annotations": {"kubernetes.io/config.mirror": "9a8b7c6d5e4f30211203948576a6b7c8"}},
            "status": {"phase": "Running", "podIP": "192.168.77.10"}}]}"#;
        let pods = parse_pod_list(text).unwrap();
        let keys: Vec<&String> = pods.keys().collect();
        assert_eq!(keys, ["9a8b7c6d5e4f30211203948576a6b7c8"]);
    }

    #[test]
    fn not_a_pod_list_says_so() {
        assert!(parse_pod_list("{\"kind\": \"NodeList\", \"items\": []}").is_err());
        assert!(parse_pod_list("nope").is_err());
    }
}
