//! This node's network namespaces and the pods behind them. The kernel's maps key TCP
//! connects (and drops) by namespace inode, and the TCP probe records for each namespace
//! the cgroup (v2 id) a process of it last started a connect from; this source finds that
//! cgroup in the cgroup tree under `pods.cgroup_root` (a read-only view of the host's: no
//! process is looked at, so no hostPID and no CAP_SYS_PTRACE), which says whether the
//! namespace is this node's (`namespaces = "node"`: its cgroup is in this node's tree) and
//! names it: the pod UID kubelet put in the cgroup path → the Pod's `namespace/name` (from
//! a PodList file or the API).
//!
//! Only cgroups the kernel reported are looked for, in one walk of the tree per cycle at
//! most; one not found is looked for again after [`RESCAN_AFTER`], doubling each time up
//! to [`RESCAN_MAX`] (a deleted pod's namespace can stay in the maps for a while); a
//! namespace whose processes connect from another cgroup (its inode reused by a new pod)
//! is looked up again; at most `pods.max_namespaces` are kept, more are counted and
//! treated as not this node's.
//!
//! With `pods.endpoints` it also follows the cluster's EndpointSlices and hands them, with
//! the running pods' addresses, to the ghost-endpoint detector ([`Pods::endpoint_view`]).

mod cgroup;
mod endpoints;
mod kubernetes;
mod podlist;

use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::fs::MetadataExt,
    time::{Duration, Instant, SystemTime},
};

pub use self::{
    cgroup::{CgroupError, CgroupTree, pod_uid, pod_uid_in_path},
    endpoints::parse_slice_list,
    podlist::parse_pod_list,
};
use crate::{
    config::{
        Namespaces,
        pods::{PodSource, PodsConfig},
    },
    model::{
        desired::PodSubnet,
        endpoints::{EndpointCounters, EndpointView, Scope},
        pods::{NamespaceCounters, NamespaceView, SeenNamespaces},
    },
    sources::k8s::Kube,
};

/// How long a namespace whose cgroup was not found waits before it is looked up again.
pub const RESCAN_AFTER: Duration = Duration::from_secs(2);

/// The longest wait between two lookups of a namespace whose cgroup was not found.
pub const RESCAN_MAX: Duration = Duration::from_secs(64);

/// The wait after `misses` lookups in a row found nothing.
fn rescan_after(misses: u32) -> Duration {
    RESCAN_AFTER
        .saturating_mul(1 << misses.saturating_sub(1).min(5))
        .min(RESCAN_MAX)
}

/// What is known about one namespace.
#[derive(Clone, Debug, Default)]
struct Entry {
    /// The cgroup (v2 id) it was looked up by: the kernel's latest for it. Another one
    /// (the inode reused by a new pod's namespace, nsfs hands out the lowest free number)
    /// is looked up afresh.
    cgroup: u64,
    /// Its cgroup is in this node's tree (or every namespace counts).
    member: bool,
    /// The pod UID in its cgroup's path.
    uid: Option<String>,
    /// When its cgroup was last looked for without being found; `None` once found.
    unresolved_since: Option<Instant>,
    /// Lookups in a row that found nothing.
    misses: u32,
}

/// Tracks namespaces seen in the kernel's maps.
pub struct Pods {
    mode: Namespaces,
    own: u32,
    config: PodsConfig,
    entries: BTreeMap<u32, Entry>,
    /// Pod UID → name, from the PodList file or the API.
    pods: kubernetes::PodNames,
    /// The task following the API's Pods.
    follower: Option<tokio::task::JoinHandle<()>>,
    /// (size, mtime, inode) of the PodList file last read.
    file_stamp: Option<(u64, SystemTime, u64)>,
    /// The cluster's EndpointSlices as far as they are kept, from the file or the API.
    slices: endpoints::SliceStore,
    /// The endpoints this node judges; the API's follower lists again when it changes.
    scope: tokio::sync::watch::Sender<Scope>,
    /// The endpoint sets last handed out.
    published: endpoints::Published,
    /// The task following the API's EndpointSlices.
    slices_follower: Option<tokio::task::JoinHandle<()>>,
    /// (size, mtime, inode) of the EndpointSlice file last read.
    slices_stamp: Option<(u64, SystemTime, u64)>,
    counters: NamespaceCounters,
    /// This node's cgroup tree; `None` when `pods.cgroup_root` is none (cgroup v1).
    cgroups: Option<CgroupTree>,
}

impl Pods {
    /// A tracker for `mode`, the daemon's namespace being `own`.
    pub fn new(mode: Namespaces, own: u32, config: &PodsConfig) -> Self {
        let cgroups = match mode {
            Namespaces::Own => None,
            _ => CgroupTree::open(&config.cgroup_root)
                .inspect(|tree| {
                    tracing::info!(
                        root = %tree.root().display(),
                        "pods named from the cgroup tree"
                    );
                })
                .inspect_err(|err| tracing::warn!("{err}"))
                .ok(),
        };
        Self {
            mode,
            own,
            config: config.clone(),
            entries: BTreeMap::new(),
            pods: kubernetes::PodNames::default(),
            follower: None,
            file_stamp: None,
            slices: endpoints::SliceStore::default(),
            scope: tokio::sync::watch::Sender::new(Scope::default()),
            published: endpoints::Published::default(),
            slices_follower: None,
            slices_stamp: None,
            counters: NamespaceCounters::default(),
            cgroups,
        }
    }

    /// As [`Pods::new`], following this node's Pods (`node`) through the Kubernetes API
    /// when `pods.source = "kubernetes"`; a client that cannot be built is logged and the
    /// pods stay unnamed (labelled by UID).
    pub async fn start(
        mode: Namespaces,
        own: u32,
        config: &crate::config::Config,
        node: &str,
    ) -> Self {
        let mut pods = Self::new(mode, own, &config.pods);
        pods.scope.send_modify(|scope| scope.node = node.to_owned());
        let endpoints = config.pods.endpoints;
        let want_pods = mode != Namespaces::Own || endpoints != PodSource::None;
        let want_pods = config.pods.source == PodSource::Kubernetes && want_pods;
        if !want_pods && endpoints != PodSource::Kubernetes {
            return pods;
        }
        // One client for both.
        let kube = match Kube::connect(&config.desired).await {
            Ok(kube) => kube,
            Err(err) => {
                tracing::error!("pods.source / pods.endpoints = \"kubernetes\": {err}");
                return pods;
            }
        };
        if want_pods {
            let names = pods.pods.clone();
            pods.follower = Some(tokio::spawn(kubernetes::follow_pods(
                kube.clone(),
                node.to_owned(),
                names,
            )));
        }
        if endpoints == PodSource::Kubernetes {
            pods.slices_follower = Some(tokio::spawn(endpoints::follow_slices(
                kube,
                pods.slices.clone(),
                pods.scope.subscribe(),
                config.pods.max_endpoints,
            )));
        }
        pods
    }

    /// The counters.
    pub fn counters(&self) -> NamespaceCounters {
        NamespaceCounters {
            tracked: self.entries.len() as u64,
            ..self.counters
        }
    }

    /// Looks up the namespaces in `seen` not known yet (or whose cgroup changed) and
    /// returns the view of all of them. Namespaces no longer in `seen` are forgotten; one
    /// without a recorded cgroup (no process of it connected since the daemon started) is
    /// not this node's as far as it knows.
    pub fn refresh(&mut self, seen: &SeenNamespaces) -> NamespaceView {
        self.reload_file();
        self.reload_slices_file();
        if self.mode == Namespaces::Own {
            return NamespaceView::own_only();
        }
        self.entries
            .retain(|netns, entry| seen.get(netns).copied().flatten() == Some(entry.cgroup));
        let now = Instant::now();
        let wanted: BTreeMap<u32, u64> = seen
            .iter()
            .filter(|&(&netns, _)| netns != self.own && netns != watchdog_common::NETNS_UNKNOWN)
            .filter_map(|(&netns, cgroup)| Some((netns, (*cgroup)?)))
            .filter(|(netns, _)| match self.entries.get(netns) {
                None => true,
                Some(entry) => entry
                    .unresolved_since
                    .is_some_and(|since| now.duration_since(since) >= rescan_after(entry.misses)),
            })
            .collect();
        // Namespaces beyond the cap are counted (each cycle they are seen) and not looked
        // up.
        let room = self
            .config
            .max_namespaces
            .saturating_sub(self.entries.len());
        let (mut wanted, new): (BTreeMap<u32, u64>, BTreeMap<u32, u64>) = wanted
            .into_iter()
            .partition(|(netns, _)| self.entries.contains_key(netns));
        let over = new.len().saturating_sub(room);
        wanted.extend(new.into_iter().take(room));
        self.counters.untracked += over as u64;
        if !wanted.is_empty() {
            self.look_up(&wanted, now);
        }
        let members = match self.mode {
            Namespaces::All => None,
            _ => Some(
                self.entries
                    .iter()
                    .filter(|(_, entry)| entry.member)
                    .map(|(netns, _)| *netns)
                    .collect(),
            ),
        };
        let pods = self
            .pods
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let names = self
            .entries
            .iter()
            .filter_map(|(netns, entry)| {
                let uid = entry.uid.as_ref()?;
                let name = pods.pods.get(uid).map_or_else(
                    // A pod the source does not (yet) know: its UID is still a name.
                    || format!("pod-uid:{uid}"),
                    |pod| pod.name.to_string(),
                );
                Some((*netns, name))
            })
            .collect();
        NamespaceView { members, names }
    }

    /// Finds each wanted namespace's cgroup in the tree (one walk for all): found, the
    /// namespace is this node's and its path names the pod.
    fn look_up(&mut self, wanted: &BTreeMap<u32, u64>, now: Instant) {
        let ids: BTreeSet<u64> = wanted.values().copied().collect();
        let found = self
            .cgroups
            .as_ref()
            .map(|tree| tree.find(&ids))
            .unwrap_or_default();
        for (&netns, &cgroup) in wanted {
            let entry = self.entries.entry(netns).or_default();
            let misses = if entry.cgroup == cgroup {
                entry.misses
            } else {
                0
            };
            *entry = match found.get(&cgroup) {
                Some(path) => Entry {
                    cgroup,
                    member: true,
                    uid: pod_uid_in_path(path),
                    unresolved_since: None,
                    misses: 0,
                },
                // Not this node's (as far as the tree says now): looked for again later,
                // in case the walk raced the cgroup's creation.
                None => Entry {
                    cgroup,
                    member: self.mode == Namespaces::All,
                    uid: None,
                    unresolved_since: Some(now),
                    misses: misses.saturating_add(1),
                },
            };
        }
    }

    /// Reads the PodList file again when it changed.
    fn reload_file(&mut self) {
        if self.config.source != PodSource::File {
            return;
        }
        let path = &self.config.path;
        let stamp = file_stamp(path);
        if stamp.is_some() && stamp == self.file_stamp {
            return;
        }
        self.file_stamp = stamp;
        let read = crate::sources::desired::file::read_bounded(path, self.config.max_file_bytes)
            .map_err(|err| err.to_string().replacen("desired.path", "pods.path", 1))
            .and_then(|text| {
                parse_pod_list(&text).map_err(|why| {
                    format!(
                        "pods.path {}: not a PodList: {why} (write it with `kubectl get pods -o json`)",
                        path.display()
                    )
                })
            });
        match read {
            Ok(pods) => {
                tracing::info!(pods = pods.len(), path = %path.display(), "pod names read");
                let mut store = self
                    .pods
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                store.pods = pods;
                store.listed = true;
            }
            Err(why) => {
                self.counters.file_errors += 1;
                tracing::warn!("{why}");
            }
        }
    }
}

impl Pods {
    /// The Service endpoints and the running pods' addresses, for the ghost-endpoint
    /// detector: each `None` until its source listed (or read) it once; all `None` with
    /// `pods.endpoints = "none"`. `subnet` is this node's pod subnet when the desired
    /// state knows it: the endpoints kept whole are the ones in it (once known, it stays
    /// until another is known; a new one lists the slices again).
    pub fn endpoint_view(&mut self, subnet: Option<PodSubnet>) -> EndpointView {
        if self.config.endpoints == PodSource::None {
            return EndpointView::default();
        }
        if let Some(subnet) = subnet {
            let changed = self.scope.send_if_modified(|scope| {
                let changed = scope.subnet != Some(subnet);
                scope.subnet = Some(subnet);
                changed
            });
            if changed {
                // The file is read again with the new scope.
                self.slices_stamp = None;
                self.reload_slices_file();
            }
        }
        let (slices, services) = self.published.view(
            &mut self
                .slices
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let store = self
            .pods
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let pod_addresses = store.listed.then(|| {
            std::sync::Arc::new(
                store
                    .pods
                    .values()
                    .flat_map(|pod| pod.addresses.iter().copied())
                    .collect(),
            )
        });
        EndpointView {
            slices,
            services,
            pod_addresses,
        }
    }

    /// What the endpoint sets hold and left out.
    pub fn endpoint_counters(&self) -> EndpointCounters {
        self.slices
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .bounded
            .counters()
    }

    /// Reads the EndpointSlice file again when it changed.
    fn reload_slices_file(&mut self) {
        if self.config.endpoints != PodSource::File {
            return;
        }
        let path = &self.config.endpoints_path;
        let stamp = file_stamp(path);
        if stamp.is_some() && stamp == self.slices_stamp {
            return;
        }
        self.slices_stamp = stamp;
        let read = crate::sources::desired::file::read_bounded(path, self.config.max_file_bytes)
            .map_err(|err| {
                err.to_string()
                    .replacen("desired.path", "pods.endpoints_path", 1)
            })
            .and_then(|text| {
                parse_slice_list(&text).map_err(|why| {
                    format!(
                        "pods.endpoints_path {}: not an EndpointSlice list: {why} (write it \
                         with `kubectl get endpointslices -A -o json`)",
                        path.display()
                    )
                })
            });
        match read {
            Ok(slices) => {
                tracing::info!(slices = slices.len(), path = %path.display(), "endpoint slices read");
                let scope = self.scope.borrow().clone();
                self.slices
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .replace(&slices, scope, self.config.max_endpoints);
            }
            Err(why) => {
                self.counters.file_errors += 1;
                tracing::warn!("{why}");
            }
        }
    }
}

/// (size, mtime, inode) of a file, to notice it changed.
fn file_stamp(path: &std::path::Path) -> Option<(u64, SystemTime, u64)> {
    std::fs::metadata(path).ok().map(|meta| {
        (
            meta.size(),
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.ino(),
        )
    })
}

impl Drop for Pods {
    fn drop(&mut self) {
        if let Some(task) = &self.follower {
            task.abort();
        }
        if let Some(task) = &self.slices_follower {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Namespaces `netns` each connecting from cgroup `netns + 10_000`.
    fn seen(netns: &[u32]) -> SeenNamespaces {
        netns
            .iter()
            .map(|&netns| (netns, Some(u64::from(netns) + 10_000)))
            .collect()
    }

    #[test]
    fn namespaces_beyond_the_cap_are_counted_not_tracked() {
        let config = PodsConfig {
            max_namespaces: 2,
            ..PodsConfig::default()
        };
        let mut pods = Pods::new(Namespaces::All, 1, &config);
        // Cgroups no tree has: tracked as unresolved, up to the cap.
        let mut seen_now = seen(&[1, 1001, 1002, 1003]);
        seen_now.insert(watchdog_common::NETNS_UNKNOWN, None);
        // A namespace with no recorded cgroup is not looked up.
        seen_now.insert(1004, None);
        let view = pods.refresh(&seen_now);
        assert_eq!(view.members, None, "all: every namespace counts");
        assert_eq!(
            pods.counters(),
            NamespaceCounters {
                tracked: 2,
                untracked: 1,
                file_errors: 0
            }
        );
        // Gone from the maps: forgotten, which makes room.
        pods.refresh(&seen(&[1003]));
        assert_eq!(pods.counters().tracked, 1);
    }

    #[test]
    fn own_tracks_nothing() {
        let mut pods = Pods::new(Namespaces::Own, 1, &PodsConfig::default());
        let view = pods.refresh(&seen(&[1001]));
        assert_eq!(view, NamespaceView::own_only());
        assert_eq!(pods.counters().tracked, 0);
    }

    #[test]
    fn namespaces_are_this_nodes_and_named_by_their_cgroup_in_the_tree() {
        let root = std::env::temp_dir().join(format!("watchdog-pods-cg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let a = "11111111-2222-3333-4444-555555555555";
        let b = "66666666-7777-8888-9999-000000000000";
        let cgroup = |relative: &str| {
            let dir = root.join(relative);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::metadata(&dir).unwrap().ino()
        };
        let pod_a = cgroup(&format!("kubepods/besteffort/pod{a}/4b1d2c"));
        let system = cgroup("system.slice/containerd.service");
        let mut pods = Pods::new(Namespaces::Node, 1, &PodsConfig::default());
        pods.cgroups = Some(CgroupTree::at(&root));
        let (netns, other, bare, elsewhere) = (4001, 4002, 4003, 4004);
        let seen = SeenNamespaces::from([
            (netns, Some(pod_a)),
            (other, Some(system)),
            (bare, None),
            // A cgroup of another node's tree (a lab on one kernel): not in this one.
            (elsewhere, Some(u64::MAX - 7)),
        ]);
        let view = pods.refresh(&seen);
        assert_eq!(view.members, Some(BTreeSet::from([netns, other])));
        assert_eq!(
            view.names,
            BTreeMap::from([(netns, format!("pod-uid:{a}"))])
        );
        // The inode is reused by another pod's namespace, whose process connects from its
        // own cgroup: looked up afresh.
        let pod_b = cgroup(&format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-9.scope",
            b.replace('-', "_")
        ));
        let mut seen = seen;
        seen.insert(netns, Some(pod_b));
        let view = pods.refresh(&seen);
        assert_eq!(view.names.get(&netns), Some(&format!("pod-uid:{b}")));
        // A cgroup not in the tree (yet: a walk may race its creation) is looked for again
        // after a wait, and meanwhile not this node's.
        let late = 4005;
        let pod_late = 1u64 << 40;
        seen.insert(late, Some(pod_late));
        pods.refresh(&seen);
        assert!(pods.entries[&late].unresolved_since.is_some());
        assert!(!pods.refresh(&seen).is_member(late));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn lookups_of_a_namespace_without_a_process_back_off() {
        let waits: Vec<u64> = (1..=8).map(|m| rescan_after(m).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 64, 64, 64]);
    }
}
