//! Privilege checks before anything is loaded, so a missing capability is a clear message
//! rather than an errno from the middle of a BPF syscall.

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The capabilities the daemon lacks.
#[derive(Debug, thiserror::Error)]
#[error(
    "missing capabilities: {}; run as root, or grant them (Kubernetes: \
     securityContext.capabilities.add, systemd: AmbientCapabilities=){}",
    missing.join(", "),
    if missing.contains(&"CAP_NET_ADMIN") {
        "; CAP_NET_ADMIN is for the peers probe's TC programs and repair.mode = \"apply\": \
         without them (probes.peers = false, repair.mode \"dry_run\" or \"off\") it is not needed"
    } else {
        ""
    }
)]
pub struct MissingCapabilities {
    /// Names of the missing capabilities, e.g. `CAP_BPF`.
    pub missing: Vec<&'static str>,
}

/// What the configuration needs beyond CAP_BPF and CAP_PERFMON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Needs {
    /// CAP_NET_ADMIN: attaching the peers probe's TC programs (clsact qdisc or TCX) and
    /// repairing (`repair.mode = "apply"`). Counting drops and TCP connects, the netlink
    /// mirror (its receive buffer then capped by `net.core.rmem_max`), the prober and a
    /// dry-run repair run without it.
    pub net_admin: bool,
}

impl Needs {
    /// Everything (`watchdog check`, the default configuration).
    pub const ALL: Self = Self { net_admin: true };
}

/// Checks the effective capability set of this process.
pub fn check(needs: Needs) -> Result<(), MissingCapabilities> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    check_set(effective, needs)
}

fn check_set(effective: u64, needs: Needs) -> Result<(), MissingCapabilities> {
    let has = |cap: u32| effective & (1 << cap) != 0;
    // Before 5.8 CAP_SYS_ADMIN stood in for CAP_BPF and CAP_PERFMON; it still does.
    let admin = has(CAP_SYS_ADMIN);
    let mut missing = Vec::new();
    if !(has(CAP_BPF) || admin) {
        missing.push("CAP_BPF");
    }
    if !(has(CAP_PERFMON) || admin) {
        missing.push("CAP_PERFMON");
    }
    if needs.net_admin && !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(MissingCapabilities { missing })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_each_missing_capability() {
        let err = check_set(0, Needs::ALL).unwrap_err();
        assert_eq!(err.missing, ["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"]);
        assert!(
            err.to_string()
                .contains("CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN")
        );
        assert!(err.to_string().contains("probes.peers = false"), "{err}");
        let err = check_set(1 << CAP_BPF | 1 << CAP_NET_ADMIN, Needs::ALL).unwrap_err();
        assert_eq!(err.missing, ["CAP_PERFMON"]);
        assert!(!err.to_string().contains("probes.peers"), "{err}");
    }

    #[test]
    fn counting_only_needs_no_net_admin() {
        let counting = Needs { net_admin: false };
        assert!(check_set(1 << CAP_BPF | 1 << CAP_PERFMON, counting).is_ok());
        assert!(check_set(1 << CAP_BPF | 1 << CAP_PERFMON, Needs::ALL).is_err());
    }

    #[test]
    fn sys_admin_stands_in_for_bpf_and_perfmon() {
        assert!(check_set(1 << CAP_SYS_ADMIN | 1 << CAP_NET_ADMIN, Needs::ALL).is_ok());
        assert!(
            check_set(
                1 << CAP_BPF | 1 << CAP_PERFMON | 1 << CAP_NET_ADMIN,
                Needs::ALL
            )
            .is_ok()
        );
    }
}
