//! A Kubernetes Node object → [`model::desired::Node`](crate::model::desired::Node), by
//! Flannel's own rules (`nodeToLease` in flannel-io/flannel `pkg/subnet/kube/kube.go`, the
//! lease handling in `pkg/backend/vxlan`). A value Flannel cannot use makes the Node
//! [`Skip::Invalid`] with a message naming the annotation or field, never a panic.

use std::net::{IpAddr, Ipv4Addr};

use crate::sources::k8s::object::Node as KubeNode;

use crate::model::desired::{
    ANNOTATION_PREFIX, Mac, Model, Node, NodeAddress, PodSubnet, Skip, Vtep, quoted,
};

/// The annotation `<prefix>/<name>` of `node`, if set.
fn annotation<'a>(node: &'a KubeNode, name: &str) -> Option<&'a str> {
    node.metadata
        .annotations
        .as_ref()?
        .get(&format!("{ANNOTATION_PREFIX}/{name}"))
        .map(String::as_str)
}

/// Converts one Node object. Nodes without a name are given `""` (the API never sends
/// one; a hand-written file might).
pub fn node(object: &KubeNode) -> Node {
    let name = object.metadata.name.clone().unwrap_or_default();
    let addresses = object
        .status
        .addresses
        .iter()
        .filter_map(|a| {
            a.address
                .trim()
                .parse::<IpAddr>()
                .ok()
                .map(|ip| NodeAddress {
                    kind: a.kind.clone(),
                    ip,
                })
        })
        .collect();
    let pod_subnet = pod_subnet(object);
    let public_ip = annotation(object, "public-ip").map(str::to_owned);
    let public_ip_overwrite = annotation(object, "public-ip-overwrite")
        .filter(|v| !v.trim().is_empty())
        .map(str::to_owned);
    Node {
        vtep: vtep(object, &pod_subnet),
        name,
        addresses,
        pod_subnet: pod_subnet.ok(),
        public_ip,
        public_ip_overwrite,
    }
}

/// Converts a list of Node objects (later duplicates of a name win, as in the API's
/// last write).
pub fn model<'a>(objects: impl IntoIterator<Item = &'a KubeNode>) -> Model {
    let mut model = Model::default();
    for object in objects {
        let node = node(object);
        model.nodes.insert(node.name.clone(), node);
    }
    model
}

/// The first IPv4 entry of `spec.podCIDRs`, or `spec.podCIDR` when the list is empty;
/// Flannel's errors otherwise.
fn pod_subnet(object: &KubeNode) -> Result<PodSubnet, String> {
    let spec = &object.spec;
    let cidrs = spec.pod_cidrs.clone();
    let candidates: Vec<String> = match cidrs.len() {
        0 => match spec.pod_cidr.clone() {
            Some(cidr) if !cidr.is_empty() => vec![cidr],
            _ => {
                return Err(
                    "spec.podCIDR and spec.podCIDRs are empty: the node has no pod subnet yet"
                        .to_owned(),
                );
            }
        },
        1 | 2 => cidrs,
        n => {
            return Err(format!(
                "spec.podCIDRs has {n} entries; Flannel accepts one per family (IPv4, IPv6)"
            ));
        }
    };
    for cidr in &candidates {
        let Some((addr, len)) = cidr.split_once('/') else {
            return Err(format!("spec.podCIDRs entry `{cidr}` is not a CIDR"));
        };
        match addr.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => {
                return len
                    .parse::<u8>()
                    .ok()
                    .and_then(|len| PodSubnet::new(v4, len))
                    .ok_or_else(|| format!("spec.podCIDRs entry `{cidr}` is not a CIDR"));
            }
            Ok(IpAddr::V6(_)) if len.parse::<u8>().is_ok_and(|l| l <= 128) => {}
            _ => return Err(format!("spec.podCIDRs entry `{cidr}` is not a CIDR")),
        }
    }
    Err(format!(
        "spec.podCIDRs {candidates:?} has no IPv4 entry (IPv6-only pod networks are not checked)"
    ))
}

fn vtep(object: &KubeNode, subnet: &Result<PodSubnet, String>) -> Result<Vtep, Skip> {
    if annotation(object, "kube-subnet-manager") != Some("true") {
        return Err(Skip::NotManaged);
    }
    let backend = annotation(object, "backend-type").unwrap_or("");
    if backend != "vxlan" {
        return Err(Skip::OtherBackend(if backend.is_empty() {
            "none".to_owned()
        } else {
            backend.to_owned()
        }));
    }
    let public_ip = annotation(object, "public-ip");
    if public_ip.is_none_or(str::is_empty)
        && annotation(object, "backend-data").is_none()
        && annotation(object, "backend-v6-data").is_some()
    {
        return Err(Skip::Ipv6Only);
    }
    let mut problems = Vec::new();
    let public_ip = match public_ip.map(|ip| (ip, ip.trim().parse::<Ipv4Addr>())) {
        Some((_, Ok(ip))) => Some(ip),
        Some((raw, Err(_))) => {
            problems.push(format!(
                "{ANNOTATION_PREFIX}/public-ip `{}` is not an IPv4 address",
                quoted(raw)
            ));
            None
        }
        None => {
            problems.push(format!("{ANNOTATION_PREFIX}/public-ip is not set"));
            None
        }
    };
    let subnet = match subnet {
        Ok(subnet) => Some(*subnet),
        Err(problem) => {
            problems.push(problem.clone());
            None
        }
    };
    let data = match annotation(object, "backend-data") {
        Some(raw) => match backend_data(raw) {
            Ok(data) => Some(data),
            Err(problem) => {
                problems.push(format!(
                    "{ANNOTATION_PREFIX}/backend-data `{}`: {problem}",
                    quoted(raw)
                ));
                None
            }
        },
        None => {
            problems.push(format!("{ANNOTATION_PREFIX}/backend-data is not set"));
            None
        }
    };
    match (public_ip, subnet, data) {
        (Some(public_ip), Some(subnet), Some((vni, mac))) => Ok(Vtep {
            subnet,
            vni,
            mac,
            public_ip,
        }),
        _ => Err(Skip::Invalid(problems)),
    }
}

/// Decodes `backend-data` as flanneld does (Go's `encoding/json` into `{VNI uint32;
/// VtepMAC hardwareAddr}`): a JSON object, keys matched without regard to case, unknown
/// keys ignored, `VNI` an unsigned 32-bit integer when present, `VtepMAC` a string Go's
/// `net.ParseMAC` accepts (required: without it flanneld cannot program anything).
pub fn backend_data(raw: &str) -> Result<(Option<u32>, Mac), String> {
    let value: serde_json::Value =
        serde_json::from_str(raw).map_err(|err| format!("is not valid JSON ({err})"))?;
    let Some(object) = value.as_object() else {
        return Err(format!(
            "is JSON {}, not an object like {{\"VNI\":1,\"VtepMAC\":\"12:c6:65:89:b4:e3\"}}",
            kind(&value)
        ));
    };
    let field = |name: &str| {
        object
            .get(name)
            .or_else(|| {
                object
                    .iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case(name))
                    .map(|(_, value)| value)
            })
            .filter(|value| !value.is_null())
    };
    let vni = match field("VNI") {
        None => None,
        Some(value) => Some(
            value
                .as_u64()
                .and_then(|vni| u32::try_from(vni).ok())
                .ok_or_else(|| format!("VNI {value} is not an unsigned 32-bit integer"))?,
        ),
    };
    let mac = match field("VtepMAC") {
        None => return Err("VtepMAC is missing".to_owned()),
        Some(serde_json::Value::String(text)) => Mac::parse(text)
            .ok_or_else(|| format!("VtepMAC `{}` is not a MAC address", quoted(text)))?,
        Some(value) => return Err(format!("VtepMAC {value} is not a string")),
    };
    Ok((vni, mac))
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::sources::desired::file::parse_nodes;

    fn fixture(name: &str) -> Model {
        let path = format!("{}/tests/fixtures/nodes/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        model(&parse_nodes(&text).unwrap_or_else(|e| panic!("{name}: {e}")))
    }

    fn vtep<'a>(model: &'a Model, name: &str) -> &'a Vtep {
        model.nodes[name]
            .vtep
            .as_ref()
            .unwrap_or_else(|skip| panic!("{name}: {skip:?}"))
    }

    #[test]
    fn kubeadm_flannel_list() {
        let m = fixture("kubeadm-flannel-list.yaml");
        assert_eq!(m.nodes.len(), 2);
        let cp = vtep(&m, "controlplane");
        assert_eq!(cp.subnet.to_string(), "192.168.0.0/24");
        assert_eq!(cp.vni, Some(1));
        assert_eq!(cp.mac.to_string(), "76:a6:b2:1e:9b:b6");
        assert_eq!(cp.public_ip, Ipv4Addr::new(172, 30, 1, 2));
        let node = &m.nodes["node01"];
        assert_eq!(
            node.address_of("InternalIP"),
            Some("172.30.2.2".parse().unwrap())
        );
        assert_eq!(node.addresses.len(), 1, "the Hostname address is dropped");
        assert_eq!(node.public_ip_overwrite, None);
        assert_eq!(m.vni("controlplane"), 1);
    }

    #[test]
    fn k3s_nodelist_from_the_api_json() {
        let m = fixture("k3s-nodelist-api.json");
        let node = &m.nodes["komal-hp-probook-430-g8-notebook-pc"];
        let v = node.vtep.as_ref().unwrap();
        assert_eq!(v.subnet.to_string(), "10.42.0.0/24");
        assert_eq!(v.mac.to_string(), "02:d3:a3:f6:bb:b4");
        assert_eq!(node.addresses.len(), 2, "both InternalIPs kept");
        assert!(node.has_address("2409:40f0:11:8e92:71:c807:1524:2fe7".parse().unwrap()));
    }

    #[test]
    fn dual_stack_takes_the_first_ipv4_pod_cidr() {
        let m = fixture("k3s-dualstack-ipv6-first.yaml");
        let v = vtep(&m, "s1");
        assert_eq!(v.subnet.to_string(), "10.3.128.0/24");
        assert_eq!(
            v.mac.to_string(),
            "6a:c6:02:92:44:1d",
            "IPv4 backend-data, not v6"
        );
        assert_eq!(v.public_ip, Ipv4Addr::new(10, 3, 1, 10));
    }

    #[test]
    fn overwrite_is_recorded_but_public_ip_is_the_tunnel_address() {
        let m = fixture("k3s-public-ip-overwrite.yaml");
        let same = &m.nodes["c-3-qfs8w"];
        assert_eq!(same.public_ip_overwrite.as_deref(), Some("13.112.188.105"));
        let stale = &m.nodes["w-9-glrt3"];
        assert_eq!(stale.public_ip_overwrite.as_deref(), Some("10.67.0.7"));
        assert_eq!(
            vtep(&m, "w-9-glrt3").public_ip,
            Ipv4Addr::new(100, 64, 0, 7)
        );
    }

    #[test]
    fn nodes_flannel_ignores_are_skipped_with_the_reason() {
        let m = fixture("no-subnet-manager.yaml");
        let node = &m.nodes["yh-k8s-test-worker01"];
        assert_eq!(node.vtep, Err(Skip::NotManaged));
        assert_eq!(
            node.pod_subnet.map(|s| s.to_string()).as_deref(),
            Some("10.244.0.0/24")
        );
        let m = fixture("k3s-extension-backend.yaml");
        assert_eq!(
            m.nodes["k3s-ingress-c60b2402"].vtep,
            Err(Skip::OtherBackend("extension".into()))
        );
        let m = fixture("k3s-ipv6-only.yaml");
        assert_eq!(m.nodes["k8s1w2"].vtep, Err(Skip::Ipv6Only));
        assert_eq!(m.members().count(), 0);
    }

    #[test]
    fn old_backend_data_without_vni_and_pod_cidr_only() {
        let m = fixture("rke-flannel-without-vni.yaml");
        let v = vtep(&m, "la-1pkube-w2");
        assert_eq!(v.vni, None);
        assert_eq!(v.subnet.to_string(), "10.42.8.0/24");
        assert_eq!(m.vni("la-1pkube-w2"), crate::model::desired::DEFAULT_VNI);
    }

    #[test]
    fn bad_backend_data_is_a_named_problem() {
        let m = fixture("bad-backend-data.yaml");
        assert!(m.nodes["controlplane"].takes_part());
        match &m.nodes["node01"].vtep {
            Err(Skip::Invalid(problems)) => {
                assert_eq!(problems.len(), 1, "{problems:?}");
                assert!(
                    problems[0].starts_with("flannel.alpha.coreos.com/backend-data `{\"VNI\":1,"),
                    "{problems:?}"
                );
                assert!(problems[0].contains("is not valid JSON"), "{problems:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn backend_data_follows_go_decoding() {
        let mac = Mac::parse("12:c6:65:89:b4:e3").unwrap();
        assert_eq!(
            backend_data(r#"{"VNI":1,"VtepMAC":"12:c6:65:89:b4:e3"}"#),
            Ok((Some(1), mac))
        );
        assert_eq!(
            backend_data(r#"{"vni":4096,"vtepmac":"12:C6:65:89:B4:E3","extra":true}"#),
            Ok((Some(4096), mac))
        );
        assert_eq!(
            backend_data(r#"{"VtepMAC":"12:c6:65:89:b4:e3"}"#),
            Ok((None, mac))
        );
        for (raw, says) in [
            (r#""/2OwTq4SN4x0=""#, "is JSON a string"),
            ("null", "is JSON null"),
            ("{}", "VtepMAC is missing"),
            (
                r#"{"VNI":-1,"VtepMAC":"12:c6:65:89:b4:e3"}"#,
                "VNI -1 is not",
            ),
            (
                r#"{"VNI":1.5,"VtepMAC":"12:c6:65:89:b4:e3"}"#,
                "VNI 1.5 is not",
            ),
            (r#"{"VNI":1,"VtepMAC":"12:c6:65"}"#, "is not a MAC"),
            (r#"{"VNI":1,"VtepMAC":7}"#, "is not a string"),
            ("", "is not valid JSON"),
        ] {
            let err = backend_data(raw).unwrap_err();
            assert!(err.contains(says), "{raw}: {err}");
        }
    }

    fn node_with(annotations: &[(&str, &str)], pod_cidrs: &[&str]) -> Node {
        let yaml = format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: x\n  annotations:\n{}\nspec:\n  podCIDRs: [{}]\n",
            annotations
                .iter()
                .map(|(k, v)| format!("    {ANNOTATION_PREFIX}/{k}: '{v}'"))
                .collect::<Vec<_>>()
                .join("\n"),
            pod_cidrs.join(", ")
        );
        node(&parse_nodes(&yaml).unwrap()[0])
    }

    #[test]
    fn each_unusable_value_is_named() {
        let ok = [
            ("kube-subnet-manager", "true"),
            ("backend-type", "vxlan"),
            ("backend-data", r#"{"VNI":1,"VtepMAC":"12:c6:65:89:b4:e3"}"#),
            ("public-ip", "192.168.1.5"),
        ];
        assert!(node_with(&ok, &["10.42.1.0/24"]).takes_part());
        let problems =
            |annotations: &[(&str, &str)], cidrs: &[&str]| match node_with(annotations, cidrs).vtep
            {
                Err(Skip::Invalid(problems)) => problems.join("; "),
                other => panic!("{other:?}"),
            };
        let mut bad_ip = ok;
        bad_ip[3] = ("public-ip", "10.0.0.300");
        assert!(problems(&bad_ip, &["10.42.1.0/24"]).contains("public-ip `10.0.0.300`"));
        assert!(problems(&ok, &["fd00::/64"]).contains("has no IPv4 entry"));
        assert!(
            problems(&ok, &["10.42.1.0/24", "fd00::/64", "10.43.0.0/24"]).contains("3 entries")
        );
        assert!(problems(&ok, &["10.42.1.0"]).contains("not a CIDR"));
        assert!(problems(&ok, &[]).contains("no pod subnet yet"));
        let not_true = [("kube-subnet-manager", "false"), ok[1], ok[2], ok[3]];
        assert_eq!(
            node_with(&not_true, &["10.42.1.0/24"]).vtep,
            Err(Skip::NotManaged)
        );
    }
}
