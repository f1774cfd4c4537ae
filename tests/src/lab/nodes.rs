//! The lab's nodes as Kubernetes Node objects: what `kubectl get nodes -o json` would
//! print for a cluster whose Flannel (VXLAN, kube subnet manager) built the lab. Each Node
//! carries Flannel's annotations (`backend-data` with VNI 1 and the node's VtepMAC,
//! `backend-type`, `kube-subnet-manager`, `public-ip`), its pod CIDR in `spec.podCIDR(s)`
//! and its underlay address as `InternalIP`, in the shape of the recorded kubeadm Nodes
//! under `watchdog/tests/fixtures/nodes`. Everything comes from the lab's public API, so
//! the objects describe the lab as built (and as changed by the injectors).

use serde_json::{Value, json};

use super::{Lab, Node, VXLAN_DEV};

/// Flannel's annotation prefix.
pub const FLANNEL: &str = "flannel.alpha.coreos.com";

/// The Kubernetes name of lab node `i`: `node-<i>`.
pub fn node_name(i: usize) -> String {
    format!("node-{i}")
}

/// The VNI of [`VXLAN_DEV`] (`flannel.1`).
fn vni() -> u32 {
    VXLAN_DEV
        .rsplit_once('.')
        .and_then(|(_, vni)| vni.parse().ok())
        .expect("the VXLAN device is named flannel.<VNI>")
}

impl Node {
    /// This node as a Kubernetes Node object.
    pub fn node_object(&self) -> Value {
        let name = node_name(self.index());
        let underlay = self.underlay_ip().to_string();
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "uid": format!("00000000-0000-4000-8000-{:012}", self.index()),
                "creationTimestamp": "2026-01-05T09:00:00Z",
                "resourceVersion": "1",
                "annotations": {
                    format!("{FLANNEL}/backend-data"):
                        format!("{{\"VNI\":{},\"VtepMAC\":\"{}\"}}", vni(), self.vtep_mac()),
                    format!("{FLANNEL}/backend-type"): "vxlan",
                    format!("{FLANNEL}/kube-subnet-manager"): "true",
                    format!("{FLANNEL}/public-ip"): underlay,
                    "node.alpha.kubernetes.io/ttl": "0",
                    "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                },
                "labels": {
                    "beta.kubernetes.io/arch": "amd64",
                    "beta.kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                },
            },
            "spec": {
                "podCIDR": self.pod_cidr(),
                "podCIDRs": [self.pod_cidr()],
            },
            "status": {
                "addresses": [
                    {"address": underlay, "type": "InternalIP"},
                    {"address": name, "type": "Hostname"},
                ],
                "conditions": [{
                    "type": "NetworkUnavailable",
                    "status": "False",
                    "reason": "FlannelIsUp",
                    "message": "Flannel is running on this node",
                }, {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                }],
                "nodeInfo": {
                    "architecture": "amd64",
                    "operatingSystem": "linux",
                    "kubeletVersion": "v1.33.2",
                },
            },
        })
    }
}

impl Lab {
    /// Every node not removed, as a NodeList (`kubectl get nodes -o json`: `kind: List`).
    pub fn node_list(&self) -> Value {
        node_list(self.nodes().map(Node::node_object).collect())
    }
}

/// A `kind: List` of `items`, as `kubectl get nodes -o json` prints it.
pub fn node_list(items: Vec<Value>) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": ""},
        "items": items,
    })
}

/// Sets Flannel annotation `key` (`public-ip`, `public-ip-overwrite`, …) on a Node object.
pub fn annotate(node: &mut Value, key: &str, value: &str) {
    node["metadata"]["annotations"][format!("{FLANNEL}/{key}")] = json!(value);
}

/// Writes a NodeList to `path` as JSON, atomically (a new file renamed over the old one),
/// so a reader never sees half of it.
pub fn write_node_list(path: &std::path::Path, list: &Value) {
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(list).expect("a NodeList serializes"),
    )
    .unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path)
        .unwrap_or_else(|e| panic!("rename {} to {}: {e}", tmp.display(), path.display()));
}

/// Node number `i` of a large synthetic cluster (outside the lab): `node-<i:04>`, VNI 1,
/// VtepMAC `02:00:00:00:<hi>:<lo>`, `public-ip` and `InternalIP` `172.30.<hi>.<lo+1>`, pod
/// CIDR `10.<64+hi>.<lo>.0/24`; the lab's Node shape otherwise. For memory and cost
/// measurements with many Nodes.
pub fn synthetic_node(i: usize) -> Value {
    let (hi, lo) = (i / 250, i % 250);
    let name = format!("node-{i:04}");
    let address = format!("172.30.{hi}.{}", lo + 1);
    let cidr = format!("10.{}.{}.0/24", 64 + i / 256, i % 256);
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": format!("00000000-0000-4000-9000-{i:012}"),
            "creationTimestamp": "2026-01-05T09:00:00Z",
            "annotations": {
                format!("{FLANNEL}/backend-data"): format!(
                    "{{\"VNI\":1,\"VtepMAC\":\"02:00:00:00:{:02x}:{:02x}\"}}",
                    i / 256,
                    i % 256
                ),
                format!("{FLANNEL}/backend-type"): "vxlan",
                format!("{FLANNEL}/kube-subnet-manager"): "true",
                format!("{FLANNEL}/public-ip"): address,
                "node.alpha.kubernetes.io/ttl": "0",
            },
            "labels": {
                "kubernetes.io/arch": "arm64",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
            },
        },
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
        "status": {
            "addresses": [
                {"address": address, "type": "InternalIP"},
                {"address": name, "type": "Hostname"},
            ],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            "nodeInfo": {"architecture": "arm64", "kubeletVersion": "v1.33.2"},
        },
    })
}
