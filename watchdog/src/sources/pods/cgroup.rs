//! Pods from the cgroup tree. The TCP probe records, per network namespace, the cgroup
//! (v2 id) a process of it connected from; on cgroup v2 that id is the inode number of the
//! cgroup's directory, so a walk of the tree (a read-only view of it is all the daemon
//! needs: no process is looked at, no hostPID, no CAP_SYS_PTRACE) finds its path, and the
//! path names the pod, as kubelet lays pods out: with the systemd cgroup driver
//! `…/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice/…` (the
//! UID's dashes written as underscores), with cgroupfs `/kubepods/besteffort/pod<uid>/<container>`
//! (guaranteed pods sit right under `kubepods`).

use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// `statfs` magic of a cgroup v2 mount.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Directories deeper than this below the root are not walked (kubelet's are 4–5 deep).
const MAX_DEPTH: usize = 12;

/// Directories visited in one walk, at most: a walk stays bounded on any host.
pub const MAX_DIRECTORIES: usize = 100_000;

/// The pod UID in one line of `/proc/<pid>/cgroup` (`0::/path` on cgroup v2,
/// `N:controllers:/path` on v1), if the path is a kubelet pod's.
pub fn pod_uid(line: &str) -> Option<String> {
    pod_uid_in_path(line.splitn(3, ':').nth(2)?)
}

/// The pod UID in a cgroup path, if the path is a kubelet pod's (or below one).
pub fn pod_uid_in_path(path: &str) -> Option<String> {
    if !path.contains("kubepods") {
        return None;
    }
    path.split('/').find_map(|segment| {
        let segment = segment.strip_suffix(".slice").unwrap_or(segment);
        let candidate = if let Some(rest) = segment.strip_prefix("pod") {
            rest.to_owned()
        } else if segment.starts_with("kubepods") {
            let (_, rest) = segment.rsplit_once("-pod")?;
            rest.replace('_', "-")
        } else {
            return None;
        };
        is_uid(&candidate).then_some(candidate)
    })
}

/// A UID as kubelet writes it: a UUID (36 characters), or a static pod's 32-hex hash.
fn is_uid(text: &str) -> bool {
    let hex = |c: char| c.is_ascii_hexdigit();
    match text.len() {
        32 => text.chars().all(hex),
        36 => text.char_indices().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                hex(c)
            }
        }),
        _ => false,
    }
}

/// Why the cgroup tree cannot name pods.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The directory cannot be read.
    #[error(
        "pods.cgroup_root {path}: {source} (mount the host's cgroup tree there read-only, \
         or set pods.cgroup_root)"
    )]
    Unreadable {
        /// The configured root.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Neither the directory nor its `unified` subdirectory is a cgroup v2 mount.
    #[error(
        "pods.cgroup_root {path} is not a cgroup v2 hierarchy (nor is {path}/unified): the \
         kernel records cgroup v2 ids, so pods cannot be named and `namespaces = \"node\"` \
         reports the daemon's own namespace only (a cgroup v1 host; set pods.cgroup_root to \
         the cgroup2 mount if there is one)"
    )]
    NotCgroup2 {
        /// The configured root.
        path: PathBuf,
    },
}

/// The cgroup v2 tree (or the part of it that is this node's) under a root directory.
#[derive(Debug, Clone)]
pub struct CgroupTree {
    root: PathBuf,
}

impl CgroupTree {
    /// The tree at `root`: a cgroup v2 mount, or a directory in one (a lab node's part of
    /// the tree). On a hybrid host (cgroup v1 controllers at `/sys/fs/cgroup`, v2 at
    /// `/sys/fs/cgroup/unified`) the `unified` subdirectory is taken.
    pub fn open(root: &Path) -> Result<Self, CgroupError> {
        let unreadable = |source| CgroupError::Unreadable {
            path: root.to_owned(),
            source,
        };
        if is_cgroup2(root).map_err(unreadable)? {
            return Ok(Self {
                root: root.to_owned(),
            });
        }
        let unified = root.join("unified");
        if is_cgroup2(&unified).unwrap_or(false) {
            return Ok(Self { root: unified });
        }
        Err(CgroupError::NotCgroup2 {
            path: root.to_owned(),
        })
    }

    /// A tree at `root` as it is, whatever the filesystem (unit tests on a plain directory).
    #[cfg(test)]
    pub fn at(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
        }
    }

    /// The directory walked.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The paths (relative to the root, `/`-separated) of the `wanted` cgroup ids found
    /// under the root. Stops once every one is found; at most [`MAX_DIRECTORIES`]
    /// directories, [`MAX_DEPTH`] deep; unreadable directories (a cgroup removed meanwhile)
    /// are skipped.
    pub fn find(&self, wanted: &BTreeSet<u64>) -> BTreeMap<u64, String> {
        let mut found = BTreeMap::new();
        if wanted.is_empty() {
            return found;
        }
        let mut visited = 0usize;
        // (directory, its path relative to the root, depth)
        let mut stack = vec![(self.root.clone(), String::new(), 0usize)];
        while let Some((dir, relative, depth)) = stack.pop() {
            visited += 1;
            if visited > MAX_DIRECTORIES {
                tracing::warn!(
                    root = %self.root.display(),
                    "the cgroup tree has more than {MAX_DIRECTORIES} directories: the rest is not searched"
                );
                break;
            }
            let Ok(meta) = std::fs::symlink_metadata(&dir) else {
                continue;
            };
            if wanted.contains(&meta.ino()) {
                found.insert(meta.ino(), relative.clone());
                if found.len() == wanted.len() {
                    break;
                }
            }
            if depth >= MAX_DEPTH {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if !entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                    continue;
                }
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                let child = if relative.is_empty() {
                    name.to_owned()
                } else {
                    format!("{relative}/{name}")
                };
                stack.push((entry.path(), child, depth + 1));
            }
        }
        found
    }
}

/// Whether `path` is the root of a cgroup v2 mount or a directory in one.
fn is_cgroup2(path: &Path) -> std::io::Result<bool> {
    use std::os::unix::ffi::OsStrExt as _;
    let mut c_path = path.as_os_str().as_bytes().to_vec();
    c_path.push(0);
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: a NUL-terminated path and a statfs buffer the kernel fills.
    let rc = unsafe { libc::statfs(c_path.as_ptr().cast(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statfs succeeded and filled it.
    let stat = unsafe { stat.assume_init() };
    // `f_type` is a signed word of the platform's width.
    #[allow(clippy::unnecessary_cast)]
    Ok(stat.f_type as i64 == CGROUP2_SUPER_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0f1c6d2e-3b4a-4c5d-8e9f-0a1b2c3d4e5f";

    #[test]
    fn systemd_driver_paths_carry_the_uid_with_underscores() {
        let line = "0::/kubepods.slice/kubepods-besteffort.slice/\
                    kubepods-besteffort-pod0f1c6d2e_3b4a_4c5d_8e9f_0a1b2c3d4e5f.slice/\
                    cri-containerd-4b1d.scope";
        assert_eq!(pod_uid(line).as_deref(), Some(UID));
        let guaranteed =
            "0::/kubepods.slice/kubepods-pod0f1c6d2e_3b4a_4c5d_8e9f_0a1b2c3d4e5f.slice";
        assert_eq!(pod_uid(guaranteed).as_deref(), Some(UID));
    }

    #[test]
    fn cgroupfs_driver_paths_and_v1_lines() {
        let line = format!("0::/kubepods/besteffort/pod{UID}/4b1d2c");
        assert_eq!(pod_uid(&line).as_deref(), Some(UID));
        let v1 = format!("4:memory:/kubepods/pod{UID}/4b1d2c");
        assert_eq!(pod_uid(&v1).as_deref(), Some(UID));
        // Seen from inside the daemon's own cgroup namespace.
        let relative = format!("0::/../../kubepods/burstable/pod{UID}/4b1d2c");
        assert_eq!(pod_uid(&relative).as_deref(), Some(UID));
        let static_pod = "0::/kubepods/burstable/pod8a0f3b7c9d1e2f3a4b5c6d7e8f9a0b1c/x";
        assert_eq!(
            pod_uid(static_pod).as_deref(),
            Some("8a0f3b7c9d1e2f3a4b5c6d7e8f9a0b1c")
        );
        // A path relative to a walked root.
        assert_eq!(
            pod_uid_in_path(&format!("kubepods/besteffort/pod{UID}")).as_deref(),
            Some(UID)
        );
    }

    #[test]
    fn other_cgroups_have_no_pod() {
        assert_eq!(pod_uid("0::/system.slice/sshd.service"), None);
        assert_eq!(pod_uid("0::/user.slice/user-0.slice/session-1.scope"), None);
        assert_eq!(pod_uid("0::/kubepods/besteffort/podnot-a-uid/x"), None);
        assert_eq!(pod_uid("garbage"), None);
    }

    #[test]
    fn a_walk_finds_directories_by_inode_and_stops_at_the_depth_cap() {
        let root = std::env::temp_dir().join(format!("watchdog-cgroup-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let pod = root.join(format!("kubepods/besteffort/pod{UID}/4b1d2c"));
        std::fs::create_dir_all(&pod).unwrap();
        let mut deep = root.clone();
        for i in 0..=MAX_DEPTH {
            deep = deep.join(format!("d{i}"));
        }
        std::fs::create_dir_all(&deep).unwrap();
        let ino = |path: &Path| std::fs::metadata(path).unwrap().ino();
        // A plain directory, not a cgroup mount: the walk itself is the same.
        let tree = CgroupTree { root: root.clone() };
        let wanted = BTreeSet::from([ino(&pod), ino(&deep), 1]);
        let found = tree.find(&wanted);
        assert_eq!(
            found,
            BTreeMap::from([(ino(&pod), format!("kubepods/besteffort/pod{UID}/4b1d2c"))])
        );
        assert_eq!(pod_uid_in_path(&found[&ino(&pod)]).as_deref(), Some(UID));
        assert!(matches!(
            CgroupTree::open(&root),
            Err(CgroupError::NotCgroup2 { .. })
        ));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
