//! Which network namespaces are this node's, and what they are called: plain data the
//! pods source produces each cycle and the pipeline reads.

use std::collections::{BTreeMap, BTreeSet};

/// The network namespaces (inodes) a reading of the kernel's maps holds, each with the
/// cgroup (v2 id) a process of it last started a TCP connect from, if one did.
pub type SeenNamespaces = BTreeMap<u32, Option<u64>>;

/// The daemon's view of the namespaces it has seen in the kernel's maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceView {
    /// Namespaces reported besides the daemon's own (inode numbers); `None`: every one.
    pub members: Option<BTreeSet<u32>>,
    /// Names of namespaces: `default/web-7f9…` for a pod the source knows.
    pub names: BTreeMap<u32, String>,
}

impl NamespaceView {
    /// Only the daemon's own namespace.
    pub fn own_only() -> Self {
        Self {
            members: Some(BTreeSet::new()),
            names: BTreeMap::new(),
        }
    }

    /// Whether `netns` (not the daemon's own) is reported.
    pub fn is_member(&self, netns: u32) -> bool {
        self.members
            .as_ref()
            .is_none_or(|members| members.contains(&netns))
    }
}

/// A pod as the pods source knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodName {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl std::fmt::Display for PodName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Counters of the namespace tracker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NamespaceCounters {
    /// Namespaces tracked now.
    pub tracked: u64,
    /// Namespaces not tracked because `pods.max_namespaces` were.
    pub untracked: u64,
    /// Times the PodList file could not be read or parsed.
    pub file_errors: u64,
}

/// A running pod as the pods source knows it: its name and addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    /// `namespace/name`.
    pub name: PodName,
    /// `status.podIPs` (or `status.podIP`): a hostNetwork pod's are its node's.
    pub addresses: Vec<std::net::IpAddr>,
}

/// TCP outcomes of one client namespace, summed over its destinations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientCounts {
    /// Connects attempted.
    pub attempts: u64,
    /// Connects failed.
    pub failed: u64,
    /// SYNs retransmitted.
    pub syn_retransmits: u64,
}
