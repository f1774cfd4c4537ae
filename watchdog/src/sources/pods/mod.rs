//! This node's network namespaces and the pods behind them. The kernel's maps key TCP
//! connects (and drops) by namespace inode; this source says which of those inodes are this
//! node's (`namespaces = "node"`: the namespaces at the other end of the daemon's veth
//! interfaces) and names them: a process in the namespace → its cgroup path → the pod
//! UID kubelet put there → the Pod's `namespace/name` (from a PodList file).
//!
//! Only inodes the kernel reported are looked up, at most once each (a namespace no
//! process is found in is retried after [`RESCAN_AFTER`]); at most
//! `pods.max_namespaces` are kept, more are counted and treated as not this node's.
//!
//! With `pods.endpoints` it also follows the cluster's EndpointSlices and hands them, with
//! the running pods' addresses, to the ghost-endpoint detector ([`Pods::endpoint_view`]).

mod cgroup;
mod endpoints;
mod kubernetes;
mod nsid;
mod podlist;

use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::fs::MetadataExt,
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

pub use self::{cgroup::pod_uid, endpoints::parse_slice_list, podlist::parse_pod_list};
use crate::{
    config::{
        Namespaces,
        pods::{PodSource, PodsConfig},
    },
    model::{
        endpoints::EndpointView,
        pods::{NamespaceCounters, NamespaceView},
    },
};

/// How long a namespace no process was found in waits before it is looked up again.
pub const RESCAN_AFTER: Duration = Duration::from_secs(2);

/// What is known about one namespace.
#[derive(Clone, Debug, Default)]
struct Entry {
    /// Behind one of the daemon's veths (or every namespace counts).
    member: bool,
    /// The pod UID from a process's cgroup.
    uid: Option<String>,
    /// When the namespace was last looked up; `None` once a process was found in it.
    unresolved_since: Option<Instant>,
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
    /// The cluster's EndpointSlices, from the file or the API.
    slices: endpoints::SliceStore,
    /// The task following the API's EndpointSlices.
    slices_follower: Option<tokio::task::JoinHandle<()>>,
    /// (size, mtime, inode) of the EndpointSlice file last read.
    slices_stamp: Option<(u64, SystemTime, u64)>,
    counters: NamespaceCounters,
    proc_root: PathBuf,
}

impl Pods {
    /// A tracker for `mode`, the daemon's namespace being `own`.
    pub fn new(mode: Namespaces, own: u32, config: &PodsConfig) -> Self {
        Self {
            mode,
            own,
            config: config.clone(),
            entries: BTreeMap::new(),
            pods: kubernetes::PodNames::default(),
            follower: None,
            file_stamp: None,
            slices: endpoints::SliceStore::default(),
            slices_follower: None,
            slices_stamp: None,
            counters: NamespaceCounters::default(),
            proc_root: PathBuf::from("/proc"),
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
        let endpoints = config.pods.endpoints;
        let want_pods = mode != Namespaces::Own || endpoints != PodSource::None;
        if config.pods.source == PodSource::Kubernetes && want_pods {
            match crate::sources::desired::kubernetes::client(&config.desired).await {
                Ok(client) => {
                    let names = pods.pods.clone();
                    pods.follower = Some(tokio::spawn(kubernetes::follow_pods(
                        client,
                        node.to_owned(),
                        names,
                    )));
                }
                Err(err) => tracing::error!("pods.source = \"kubernetes\": {err}"),
            }
        }
        if endpoints == PodSource::Kubernetes {
            match crate::sources::desired::kubernetes::client(&config.desired).await {
                Ok(client) => {
                    let store = pods.slices.clone();
                    pods.slices_follower =
                        Some(tokio::spawn(endpoints::follow_slices(client, store)));
                }
                Err(err) => tracing::error!("pods.endpoints = \"kubernetes\": {err}"),
            }
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

    /// Looks up the namespaces in `seen` not known yet and returns the view of all of
    /// them. Namespaces no longer in `seen` are forgotten.
    pub fn refresh(&mut self, seen: &BTreeSet<u32>) -> NamespaceView {
        self.reload_file();
        self.reload_slices_file();
        if self.mode == Namespaces::Own {
            return NamespaceView::own_only();
        }
        self.entries.retain(|netns, _| seen.contains(netns));
        let now = Instant::now();
        let wanted: BTreeSet<u32> = seen
            .iter()
            .copied()
            .filter(|&netns| netns != self.own && netns != watchdog_common::NETNS_UNKNOWN)
            .filter(|netns| match self.entries.get(netns) {
                None => true,
                Some(entry) => entry
                    .unresolved_since
                    .is_some_and(|since| now.duration_since(since) >= RESCAN_AFTER),
            })
            .collect();
        // Namespaces beyond the cap are counted (each cycle they are seen) and not looked
        // up: no /proc scan for them.
        let room = self
            .config
            .max_namespaces
            .saturating_sub(self.entries.len());
        let (known, new): (BTreeSet<u32>, BTreeSet<u32>) = wanted
            .into_iter()
            .partition(|netns| self.entries.contains_key(netns));
        let mut wanted = known;
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

    /// Finds a process in each wanted namespace, then its membership and pod.
    fn look_up(&mut self, wanted: &BTreeSet<u32>, now: Instant) {
        let found = find_processes(&self.proc_root, wanted);
        let peers = match self.mode {
            Namespaces::Node => nsid::Nsids::open()
                .and_then(|mut nsids| {
                    let peers = nsids.veth_peers()?;
                    Ok((nsids, peers))
                })
                .inspect_err(|err| tracing::warn!("cannot list the veth peers' namespaces: {err}"))
                .ok(),
            _ => None,
        };
        let mut peers = peers;
        for &netns in wanted {
            let entry = self.entries.entry(netns).or_default();
            let Some(&pid) = found.get(&netns) else {
                entry.unresolved_since = Some(now);
                continue;
            };
            entry.unresolved_since = None;
            entry.member = match self.mode {
                Namespaces::All => true,
                Namespaces::Own => false,
                Namespaces::Node => peers.as_mut().is_some_and(|(nsids, peers)| {
                    let path = self.proc_root.join(format!("{pid}/ns/net"));
                    nsids
                        .nsid_of(&path)
                        .ok()
                        .flatten()
                        .is_some_and(|id| peers.contains(&id))
                }),
            };
            entry.uid = std::fs::read_to_string(self.proc_root.join(format!("{pid}/cgroup")))
                .ok()
                .and_then(|text| text.lines().find_map(pod_uid));
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
    /// detector: each `None` until its source listed (or read) it once; both `None` with
    /// `pods.endpoints = "none"`.
    pub fn endpoint_view(&self) -> EndpointView {
        if self.config.endpoints == PodSource::None {
            return EndpointView::default();
        }
        let slices = self
            .slices
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
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
            pod_addresses,
        }
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
                *self
                    .slices
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some(std::sync::Arc::new(slices));
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

/// One process in each of the `wanted` namespaces (by inode), from `/proc/<pid>/ns/net`.
fn find_processes(proc_root: &std::path::Path, wanted: &BTreeSet<u32>) -> BTreeMap<u32, u32> {
    let mut found = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(proc_root) else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(meta) = std::fs::metadata(entry.path().join("ns/net")) else {
            continue;
        };
        let Ok(inode) = u32::try_from(meta.ino()) else {
            continue;
        };
        if wanted.contains(&inode) {
            found.entry(inode).or_insert(pid);
            if found.len() == wanted.len() {
                break;
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_beyond_the_cap_are_counted_not_tracked() {
        let config = PodsConfig {
            max_namespaces: 2,
            ..PodsConfig::default()
        };
        let mut pods = Pods::new(Namespaces::All, 1, &config);
        // Inodes no process has: tracked as unresolved, up to the cap.
        let seen = BTreeSet::from([1, 1001, 1002, 1003, watchdog_common::NETNS_UNKNOWN]);
        let view = pods.refresh(&seen);
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
        pods.refresh(&BTreeSet::from([1003]));
        assert_eq!(pods.counters().tracked, 1);
    }

    #[test]
    fn own_tracks_nothing() {
        let mut pods = Pods::new(Namespaces::Own, 1, &PodsConfig::default());
        let view = pods.refresh(&BTreeSet::from([1001]));
        assert_eq!(view, NamespaceView::own_only());
        assert_eq!(pods.counters().tracked, 0);
    }
}
