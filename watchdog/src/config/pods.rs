//! `[pods]`: where the names of this node's pods come from, and how many network
//! namespaces the daemon keeps track of.

use std::path::PathBuf;

use serde::Deserialize;

/// Where pod names come from.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PodSource {
    /// No pod names: namespaces are labelled by inode (`netns:4026532…`).
    None,
    /// A PodList file (`kubectl get pods -o json`), re-read when it changes.
    File,
    /// The Kubernetes API: this node's Pods (`spec.nodeName`), through the client of
    /// `[desired]` (`desired.kubeconfig`, `desired.node_name`).
    Kubernetes,
}

/// The `[pods]` section.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct PodsConfig {
    /// `none`, `file` or `kubernetes`.
    pub source: PodSource,
    /// `file`: the PodList file.
    pub path: PathBuf,
    /// This node's cgroup v2 tree (the host's `/sys/fs/cgroup`, or its `unified`
    /// subdirectory on a hybrid host; the DaemonSet mounts it read-only): the cgroup a
    /// namespace's processes connect from is looked for there, to tell whether the
    /// namespace is this node's and which pod it is.
    pub cgroup_root: PathBuf,
    /// The most network namespaces kept (membership and name); more are counted in
    /// `watchdog_namespaces_untracked_total` and treated as unknown.
    pub max_namespaces: usize,
    /// `file`: the largest file read, in bytes (the EndpointSlice file's too).
    pub max_file_bytes: u64,
    /// Where Service endpoints come from (EndpointSlices, for `ghost_endpoint` and the
    /// `service` of `failing_tcp_destination`): `none`, `file`, `kubernetes`.
    pub endpoints: PodSource,
    /// `endpoints = "file"`: the EndpointSlice list (`kubectl get endpointslices -A -o json`).
    pub endpoints_path: PathBuf,
    /// The most endpoints kept whole (this node's pod subnet, to be judged), and apart from
    /// them the most addresses kept to name Services; more are counted in
    /// `watchdog_endpoints_untracked_total` and left out.
    pub max_endpoints: usize,
    /// Client namespaces (pods) labelled in `watchdog_tcp_client_*`: the ones with the most
    /// failures; the rest are summed into `client="other"`.
    pub top_n: usize,
}

impl Default for PodsConfig {
    /// Must agree with `[pods]` in `default.toml` (a test checks it).
    fn default() -> Self {
        Self {
            source: PodSource::None,
            path: PathBuf::new(),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            max_namespaces: 1024,
            max_file_bytes: 16 * 1024 * 1024,
            endpoints: PodSource::None,
            endpoints_path: PathBuf::new(),
            max_endpoints: 10_000,
            top_n: 10,
        }
    }
}
