//! The lab's nodes as Kubernetes Node objects: what `kubectl get nodes -o json` would
//! print for a cluster whose Flannel (VXLAN, kube subnet manager) built the lab. Each Node
//! carries Flannel's annotations (`backend-data` with VNI 1 and the node's VtepMAC,
//! `backend-type`, `kube-subnet-manager`, `public-ip`), its pod CIDR in `spec.podCIDR(s)`
//! and its underlay address as `InternalIP`, in the shape of a recorded real Node (the
//! K3s one under `watchdog/tests/fixtures/nodes`, everything else kept as recorded). Everything comes from the lab's public API, so
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

/// A Node as the API serves it (`GET /api/v1/nodes`, K3s v1.28), recorded in
/// `watchdog/tests/fixtures/nodes/k3s-nodelist-api.json`: the template of the lab's Nodes,
/// so they carry everything a real one does (capacity, conditions, daemon endpoints, node
/// info, images, K3s' and Flannel's annotations), not just the fields the watchdog reads.
const RECORDED: &str = include_str!("../../../watchdog/tests/fixtures/nodes/k3s-nodelist-api.json");

impl Node {
    /// This node as a Kubernetes Node object: the recorded K3s Node with this node's
    /// name, UID, addresses, pod CIDR and Flannel annotations.
    pub fn node_object(&self) -> Value {
        let name = node_name(self.index());
        let underlay = self.underlay_ip().to_string();
        let list: Value = serde_json::from_str(RECORDED).expect("the recorded NodeList parses");
        let mut node = list["items"][0].clone();
        node["apiVersion"] = json!("v1");
        node["kind"] = json!("Node");
        let metadata = &mut node["metadata"];
        metadata["name"] = json!(name);
        metadata["uid"] = json!(format!("00000000-0000-4000-8000-{:012}", self.index()));
        metadata["resourceVersion"] = json!("1");
        metadata["labels"]["kubernetes.io/hostname"] = json!(name);
        let annotations = &mut metadata["annotations"];
        annotations[format!("{FLANNEL}/backend-data")] = json!(format!(
            "{{\"VNI\":{},\"VtepMAC\":\"{}\"}}",
            vni(),
            self.vtep_mac()
        ));
        annotations[format!("{FLANNEL}/backend-type")] = json!("vxlan");
        annotations[format!("{FLANNEL}/kube-subnet-manager")] = json!("true");
        annotations[format!("{FLANNEL}/public-ip")] = json!(underlay);
        annotations["alpha.kubernetes.io/provided-node-ip"] = json!(underlay);
        annotations["k3s.io/hostname"] = json!(name);
        annotations["k3s.io/internal-ip"] = json!(underlay);
        node["spec"]["podCIDR"] = json!(self.pod_cidr());
        node["spec"]["podCIDRs"] = json!([self.pod_cidr()]);
        node["spec"]["providerID"] = json!(format!("k3s://{name}"));
        node["status"]["addresses"] = json!([
            {"type": "InternalIP", "address": underlay},
            {"type": "Hostname", "address": name},
        ]);
        node
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
