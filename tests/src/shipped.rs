//! The daemon as the shipped DaemonSet runs it: the kustomize base's ConfigMap
//! (`deploy/kustomize/base/configmap.yaml`: `namespaces = "node"`, Nodes, Pods and
//! EndpointSlices from the Kubernetes API), on a lab node, against the fake API server
//! serving the lab's Nodes. Used by the lab tests of the drop causes and their bench.

use std::path::PathBuf;

use crate::{
    TempDir,
    apiserver::InNetns,
    lab::{Lab, nodes::node_name},
    repo::root,
};

/// The ConfigMap's `config.toml`, as the DaemonSet mounts it.
pub fn configmap_config() -> String {
    let path = root().join("deploy/kustomize/base/configmap.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
    let mut lines = text
        .lines()
        .skip_while(|line| line.trim() != "config.toml: |");
    assert!(
        lines.next().is_some(),
        "no config.toml in {}",
        path.display()
    );
    let mut config = String::new();
    for line in lines {
        if !line.is_empty() && !line.starts_with("    ") {
            break;
        }
        config.push_str(line.strip_prefix("    ").unwrap_or(line));
        config.push('\n');
    }
    config
}

/// A fake API server in a lab node's namespace serving the lab's Nodes, no Pods and no
/// EndpointSlices (the lab's pods are plain namespaces), and the kubeconfig the daemon
/// reads it with.
pub struct Shipped {
    /// The server (its namespace's 127.0.0.1).
    pub server: InNetns,
    kubeconfig: PathBuf,
    node: String,
    _dir: TempDir,
}

impl Shipped {
    /// Serves `lab`'s Nodes in node `i`'s namespace.
    pub fn start(lab: &Lab, i: usize) -> Self {
        let dir = TempDir::new("wd-shipped");
        let server = InNetns::start(lab.node(i).ns(), false);
        server.load_nodes(&lab.node_list());
        server.add_resource("/api/v1/pods", "PodList");
        server.add_resource(
            "/apis/discovery.k8s.io/v1/endpointslices",
            "EndpointSliceList",
        );
        let kubeconfig = server.kubeconfig(dir.path());
        Self {
            server,
            kubeconfig,
            node: node_name(i),
            _dir: dir,
        }
    }

    /// The ConfigMap's config for this node: the in-cluster client replaced by the
    /// kubeconfig of the fake server, the node's name given (the DaemonSet's downward
    /// API). `top` goes before the config's first table (top-level keys).
    pub fn config(&self, top: &str) -> String {
        let config = configmap_config();
        let desired = "[desired]\nsource = \"kubernetes\"\n";
        assert!(
            config.contains(desired),
            "the ConfigMap's [desired] changed:\n{config}"
        );
        let config = config.replace(
            desired,
            &format!(
                "{desired}kubeconfig = \"{}\"\nnode_name = \"{}\"\n",
                self.kubeconfig.display(),
                self.node
            ),
        );
        format!("{top}{config}")
    }

    /// As [`Shipped::config`], with `pods.cgroup_root` at `root` instead of the DaemonSet's
    /// mount of the host's tree (`/host/cgroup`): a lab node's host tree is its part of
    /// this machine's tree (every lab node shares one kernel and one cgroup tree).
    pub fn config_with_cgroup_root(&self, top: &str, root: &str) -> String {
        let config = self.config(top);
        let shipped = "cgroup_root = \"/host/cgroup\"\n";
        assert!(
            config.contains(shipped),
            "the ConfigMap's pods.cgroup_root changed:\n{config}"
        );
        config.replace(shipped, &format!("cgroup_root = \"{root}\"\n"))
    }
}
