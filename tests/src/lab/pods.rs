//! Synthetic Pods and EndpointSlices for memory and cost measurements with many of them
//! (outside the lab): the shape `kubectl get pods/endpointslices -o json` prints, with the
//! fields the daemon reads.

use serde_json::{Value, json};

use crate::{NetNs, apiserver::InNetns};

/// The Pods' API path.
pub const PODS: &str = "/api/v1/pods";
/// The EndpointSlices' API path.
pub const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";

/// Pod `i` of node `node`: `default/app-<i:04>-7f9c5d8b6-x2x7q`, running, address
/// `10.<100+i/250>.<i%250>.2`.
pub fn synthetic_pod(i: usize, node: &str) -> Value {
    let address = format!("10.{}.{}.2", 100 + i / 250, i % 250);
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": format!("app-{i:04}-7f9c5d8b6-x2x7q"),
            "namespace": "default",
            "uid": format!("00000000-0000-4000-8000-{i:012}"),
            "labels": {"app": format!("app-{i:04}")}
        },
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "nginx:1.27"}]},
        "status": {"phase": "Running", "podIP": address, "podIPs": [{"ip": address}]}
    })
}

/// The EndpointSlice of Service `namespace/service` (TCP `port`), one ready endpoint on
/// `node` per address (each a Pod's).
pub fn endpoint_slice(
    namespace: &str,
    service: &str,
    addresses: &[String],
    node: &str,
    port: u16,
) -> Value {
    let endpoints: Vec<Value> = addresses
        .iter()
        .enumerate()
        .map(|(i, address)| {
            json!({
                "addresses": [address],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "nodeName": node,
                "targetRef": {"kind": "Pod", "name": format!("{service}-{i}"), "namespace": namespace,
                              "uid": format!("00000000-0000-4000-8000-{i:012}")}
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "addressType": "IPv4",
        "metadata": {
            "name": format!("{service}-bench"),
            "namespace": namespace,
            "labels": {
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                "kubernetes.io/service-name": service
            }
        },
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}]
    })
}

/// A fake API server in `ns` serving `count` [`synthetic_pod`]s on `node` and their
/// addresses as endpoints of `port`, 10 per Service (`default/svc-<i:03>`).
pub fn serve_pods(ns: &NetNs, count: usize, node: &str, port: u16) -> InNetns {
    let server = InNetns::start(ns, true);
    server.add_resource(PODS, "PodList");
    server.add_resource(SLICES, "EndpointSliceList");
    let mut addresses = Vec::new();
    for i in 0..count {
        let pod = synthetic_pod(i, node);
        addresses.push(pod["status"]["podIP"].as_str().expect("podIP").to_owned());
        server.apply(PODS, pod);
    }
    for (i, chunk) in addresses.chunks(10).enumerate() {
        let service = format!("svc-{i:03}");
        server.apply(
            SLICES,
            endpoint_slice("default", &service, chunk, node, port),
        );
    }
    server
}
