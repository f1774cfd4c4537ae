//! This node's network namespaces and the pods behind them. The kernel's maps key TCP
//! connects (and drops) by namespace inode; this source says which of those inodes are this
//! node's (`namespaces = "node"`: the namespaces at the other end of the daemon's veth
//! interfaces) and names them: a process in the namespace → its cgroup path → the pod
//! UID kubelet put there → the Pod's `namespace/name` (from a PodList file).
//!
//! Only inodes the kernel reported are looked up, at most once each (a namespace no
//! process is found in is retried after [`RESCAN_AFTER`], doubling each time up to
//! [`RESCAN_MAX`]: a deleted pod's namespace can stay in the maps for a while, and each
//! lookup walks `/proc`; a resolved one is looked up again when the process it was
//! resolved through left it); at most
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
        desired::PodSubnet,
        endpoints::{EndpointCounters, EndpointView, Scope},
        pods::{NamespaceCounters, NamespaceView},
    },
    sources::k8s::Kube,
};

/// How long a namespace no process was found in waits before it is looked up again.
pub const RESCAN_AFTER: Duration = Duration::from_secs(2);

/// The longest wait between two lookups of a namespace no process was found in.
pub const RESCAN_MAX: Duration = Duration::from_secs(64);

/// The wait after `misses` lookups in a row found no process.
fn rescan_after(misses: u32) -> Duration {
    RESCAN_AFTER
        .saturating_mul(1 << misses.saturating_sub(1).min(5))
        .min(RESCAN_MAX)
}

/// What is known about one namespace.
#[derive(Clone, Debug, Default)]
struct Entry {
    /// Behind one of the daemon's veths (or every namespace counts).
    member: bool,
    /// The pod UID from a process's cgroup.
    uid: Option<String>,
    /// When the namespace was last looked up; `None` once it was resolved (a process
    /// found in it, its membership and cgroup read without error).
    unresolved_since: Option<Instant>,
    /// The process it was resolved through: when that process is gone or is in another
    /// namespace now, the inode may have been reused by a new pod's namespace (nsfs
    /// hands out the lowest free number), so it is looked up again.
    pid: Option<u32>,
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
            scope: tokio::sync::watch::Sender::new(Scope::default()),
            published: endpoints::Published::default(),
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
                Some(entry) => match (entry.unresolved_since, entry.pid) {
                    (Some(since), _) => now.duration_since(since) >= rescan_after(entry.misses),
                    (None, Some(pid)) => netns_of(&self.proc_root, pid) != Some(*netns),
                    (None, None) => false,
                },
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
                // Nothing kept from an earlier resolution: the inode may be another
                // namespace's by the time a process shows up in it.
                *entry = Entry {
                    unresolved_since: Some(now),
                    misses: entry.misses.saturating_add(1),
                    ..Entry::default()
                };
                continue;
            };
            // Any error on the way (the veth dump failed, the process exited between
            // the scan and the reads) leaves the namespace unresolved, to be retried:
            // never a wrong answer kept for as long as the inode stays in the maps.
            let member = match self.mode {
                Namespaces::All => Some(true),
                Namespaces::Own => Some(false),
                Namespaces::Node => peers.as_mut().and_then(|(nsids, peers)| {
                    let path = self.proc_root.join(format!("{pid}/ns/net"));
                    match nsids.nsid_of(&path) {
                        Ok(id) => Some(id.is_some_and(|id| peers.contains(&id))),
                        Err(_) => None,
                    }
                }),
            };
            let cgroup = std::fs::read_to_string(self.proc_root.join(format!("{pid}/cgroup")));
            match (member, cgroup) {
                (Some(member), Ok(text)) => {
                    entry.member = member;
                    entry.uid = text.lines().find_map(pod_uid);
                    entry.unresolved_since = None;
                    entry.pid = Some(pid);
                    entry.misses = 0;
                }
                _ => {
                    *entry = Entry {
                        unresolved_since: Some(now),
                        misses: 1,
                        ..Entry::default()
                    };
                }
            }
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

/// The network namespace (inode) process `pid` is in, if it still exists.
fn netns_of(proc_root: &std::path::Path, pid: u32) -> Option<u32> {
    let meta = std::fs::metadata(proc_root.join(format!("{pid}/ns/net"))).ok()?;
    u32::try_from(meta.ino()).ok()
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

    #[test]
    fn a_reused_namespace_inode_is_looked_up_again_and_errors_are_retried() {
        let root = std::env::temp_dir().join(format!("watchdog-pods-proc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let process = |pid: u32, uid: &str| {
            let dir = root.join(format!("{pid}/ns"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                root.join(format!("{pid}/cgroup")),
                format!("0::/kubepods/besteffort/pod{uid}/0123\n"),
            )
            .unwrap();
        };
        let a = "11111111-2222-3333-4444-555555555555";
        let b = "66666666-7777-8888-9999-000000000000";
        process(10, a);
        std::fs::write(root.join("10/ns/net"), "").unwrap();
        let inode =
            u32::try_from(std::fs::metadata(root.join("10/ns/net")).unwrap().ino()).unwrap();
        let mut pods = Pods::new(Namespaces::All, 1, &PodsConfig::default());
        pods.proc_root = root.clone();
        let seen = BTreeSet::from([inode]);
        let name = |view: &NamespaceView| view.names.get(&inode).cloned();
        assert_eq!(name(&pods.refresh(&seen)), Some(format!("pod-uid:{a}")));
        // The pod goes and no process is in the namespace: its name goes with it.
        let kept = root.join("kept");
        std::fs::hard_link(root.join("10/ns/net"), &kept).unwrap();
        std::fs::remove_dir_all(root.join("10")).unwrap();
        assert_eq!(name(&pods.refresh(&seen)), None);
        pods.entries.clear();
        // A new pod's namespace gets the same inode (a hard link here).
        process(11, b);
        std::fs::hard_link(&kept, root.join("11/ns/net")).unwrap();
        assert_eq!(name(&pods.refresh(&seen)), Some(format!("pod-uid:{b}")));
        // The process exits between the scan and the cgroup read: unresolved (retried),
        // not resolved as "no pod".
        std::fs::remove_file(root.join("11/cgroup")).unwrap();
        pods.entries.clear();
        let view = pods.refresh(&seen);
        assert_eq!(name(&view), None);
        assert!(pods.entries[&inode].unresolved_since.is_some());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn lookups_of_a_namespace_without_a_process_back_off() {
        let waits: Vec<u64> = (1..=8).map(|m| rescan_after(m).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 64, 64, 64]);
    }
}
