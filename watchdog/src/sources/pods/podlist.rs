//! A PodList as `kubectl get pods -o json` prints it (`kind: List` or `PodList`): pod
//! UID → namespace/name and addresses. Only pods still running count (a Succeeded or
//! Failed pod's sandbox is gone).

use std::{collections::BTreeMap, net::IpAddr};

use crate::model::pods::{PodInfo, PodName};

/// The addresses of a Pod object (JSON): `status.podIPs[].ip`, else `status.podIP`.
pub fn pod_addresses(pod: &serde_json::Value) -> Vec<IpAddr> {
    let mut addresses: Vec<IpAddr> = pod
        .pointer("/status/podIPs")
        .and_then(|ips| ips.as_array())
        .into_iter()
        .flatten()
        .filter_map(|ip| ip.get("ip")?.as_str()?.parse().ok())
        .collect();
    if addresses.is_empty()
        && let Some(ip) = pod
            .pointer("/status/podIP")
            .and_then(|ip| ip.as_str())
            .and_then(|ip| ip.parse().ok())
    {
        addresses.push(ip);
    }
    addresses
}

/// The annotation a static pod's mirror Pod carries: the UID kubelet gave the static pod
/// (and put in its cgroup path).
pub const MIRROR: &str = "kubernetes.io/config.mirror";

/// The pods of a PodList JSON text by the UID in their cgroup path (a static pod's from
/// [`MIRROR`]; every other pod's `metadata.uid`).
pub fn parse_pod_list(text: &str) -> Result<BTreeMap<String, PodInfo>, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|err| format!("invalid JSON: {err}"))?;
    let items = match value.get("kind").and_then(|kind| kind.as_str()) {
        Some("List" | "PodList") => value
            .get("items")
            .and_then(|items| items.as_array())
            .ok_or("no `items` array")?
            .as_slice(),
        Some("Pod") => std::slice::from_ref(&value),
        Some(other) => return Err(format!("kind {other}, not a List of Pods")),
        None => return Err("no `kind`".into()),
    };
    let mut pods = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        if item
            .get("kind")
            .and_then(|k| k.as_str())
            .is_some_and(|k| k != "Pod")
        {
            continue;
        }
        let meta = item
            .get("metadata")
            .ok_or(format!("items[{i}]: no metadata"))?;
        let text = |key: &str| meta.get(key).and_then(|v| v.as_str()).map(str::to_owned);
        let (Some(uid), Some(name)) = (text("uid"), text("name")) else {
            return Err(format!("items[{i}]: no metadata.uid or metadata.name"));
        };
        // A static pod's cgroup carries its own UID (a hash), which its mirror Pod keeps
        // in an annotation; its metadata.uid is another one.
        let uid = meta
            .pointer(&format!("/annotations/{}", MIRROR.replace('/', "~1")))
            .and_then(|v| v.as_str())
            .map_or(uid, str::to_owned);
        let phase = item.pointer("/status/phase").and_then(|p| p.as_str());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        let namespace = text("namespace").unwrap_or_else(|| "default".into());
        pods.insert(
            uid,
            PodInfo {
                name: PodName { namespace, name },
                addresses: pod_addresses(item),
            },
        );
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
