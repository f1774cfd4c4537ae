//! The pod UID in a process's cgroup path, as kubelet lays pods out: with the systemd
//! cgroup driver `…/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice/…`
//! (the UID's dashes written as underscores), with cgroupfs `/kubepods/besteffort/pod<uid>/<container>`
//! (guaranteed pods sit right under `kubepods`).

/// The pod UID in one line of `/proc/<pid>/cgroup` (`0::/path` on cgroup v2,
/// `N:controllers:/path` on v1), if the path is a kubelet pod's.
pub fn pod_uid(line: &str) -> Option<String> {
    let path = line.splitn(3, ':').nth(2)?;
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

#[cfg(test)]
mod tests {
    use super::pod_uid;

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
    }

    #[test]
    fn other_cgroups_have_no_pod() {
        assert_eq!(pod_uid("0::/system.slice/sshd.service"), None);
        assert_eq!(pod_uid("0::/user.slice/user-0.slice/session-1.scope"), None);
        assert_eq!(pod_uid("0::/kubepods/besteffort/podnot-a-uid/x"), None);
        assert_eq!(pod_uid("garbage"), None);
    }
}
