//! `cargo xtask seccomp`: the narrow seccomp profile for container runtimes whose default
//! profile stops the daemon (README, Seccomp), and its Security Profiles Operator form.
//!
//! `deploy/seccomp/watchdog.json` allows exactly the system calls the daemon was seen
//! making (`--strace`: the summaries `strace -f -c -o FILE watchdog run …` writes while
//! the daemon goes through start-up, its probes, the lab's faults, scrapes and shutdown),
//! plus [`ALWAYS`]; everything else fails with EPERM. The file is then rendered as
//! `deploy/kustomize/localhost-seccomp/seccompprofile.yaml`, a `SeccompProfile` the
//! operator writes to every node; `cargo xtask seccomp` alone re-renders it after an edit
//! (a deploy test keeps the two identical).

use std::{collections::BTreeSet, fs, path::PathBuf};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::util::root;

/// System calls allowed whether or not a recording saw them: what the runtime's own init
/// (runc, crun) still calls after installing the filter (execve of the binary), the
/// daemon's paths a lab recording does not go through (Kubernetes API and alert
/// webhooks over TLS: name resolution, the connect of a non-blocking socket), and each
/// call's arm64 spelling where x86_64 has an older one (arm64 has no `open`, `poll`,
/// `epoll_wait`, `stat`…; a recording on x86_64 names those).
pub const ALWAYS: &[&str] = &[
    // The runtime's init after the filter is in place; a process's end; waiting and
    // signals outside the recorded paths.
    "execve",
    "fstatfs",
    "statfs",
    "close_range",
    "exit",
    "exit_group",
    "nanosleep",
    "clock_nanosleep",
    "sched_yield",
    "rt_sigprocmask",
    "getpid",
    "tgkill",
    // The repair journal (`repair.mode = "apply"`: a lab recording runs dry): create its
    // directory, append, sync, rotate (x86_64's and arm64's spellings).
    "mkdir",
    "rename",
    "unlink",
    "lseek",
    "fsync",
    "fdatasync",
    "ftruncate",
    // Name resolution and HTTPS clients (kube-rs, alert sinks).
    "socket",
    "connect",
    "getsockopt",
    "setsockopt",
    "getsockname",
    "getpeername",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "sendmmsg",
    "shutdown",
    "uname",
    "getrandom",
    // Pods' processes (`namespaces = "node"` with hostPID: `/proc/<pid>/ns/net`, cgroups),
    // which a lab without pods does not visit.
    "readlink",
    "open",
    "stat",
    "lstat",
    "fstat",
    // The arm64 (generic) spellings of x86_64's legacy calls.
    "openat",
    "ppoll",
    "epoll_pwait",
    "epoll_create1",
    "newfstatat",
    "statx",
    "pipe2",
    "dup3",
    "pselect6",
    "faccessat",
    "faccessat2",
    "readlinkat",
    "unlinkat",
    "mkdirat",
    "renameat",
    "renameat2",
    "getdents64",
    "clone",
    "clone3",
    "clock_gettime",
];

/// The architectures of the images (`cargo xtask image`).
const ARCHITECTURES: &[&str] = &["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"];

pub fn profile_path() -> PathBuf {
    root().join("deploy/seccomp/watchdog.json")
}

pub fn operator_path() -> PathBuf {
    root().join("deploy/kustomize/localhost-seccomp/seccompprofile.yaml")
}

/// Records (when `traces` are given) and renders the profile.
pub fn run(traces: &[PathBuf]) -> anyhow::Result<()> {
    if !traces.is_empty() {
        let mut names: BTreeSet<String> = ALWAYS.iter().map(|s| (*s).to_owned()).collect();
        for trace in traces {
            let text = fs::read_to_string(trace)
                .with_context(|| format!("cannot read the strace summary {}", trace.display()))?;
            let seen = strace_summary(&text);
            if seen.is_empty() {
                bail!(
                    "{}: no system call in it (expected `strace -f -c -o FILE` output)",
                    trace.display()
                );
            }
            eprintln!("seccomp: {} calls in {}", seen.len(), trace.display());
            names.extend(seen);
        }
        let profile = json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "architectures": ARCHITECTURES,
            "syscalls": [{"names": names, "action": "SCMP_ACT_ALLOW"}],
        });
        fs::write(
            profile_path(),
            serde_json::to_string_pretty(&profile)? + "\n",
        )?;
        eprintln!(
            "seccomp: wrote {} ({} calls)",
            profile_path().display(),
            names.len()
        );
    }
    let profile: Value = serde_json::from_str(&fs::read_to_string(profile_path())?)
        .with_context(|| format!("{}", profile_path().display()))?;
    fs::write(operator_path(), seccomp_profile_yaml(&profile)?)?;
    eprintln!("seccomp: wrote {}", operator_path().display());
    Ok(())
}

/// The system call names of a `strace -c` summary (its last column; not the header, the
/// rules, or the total).
fn strace_summary(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| line.split_whitespace().last())
        .filter(|name| {
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && *name != "total"
                && name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        })
        .map(str::to_owned)
        .collect()
}

/// The profile as a Security Profiles Operator `SeccompProfile` (v1beta1; cluster-scoped
/// since the operator's v0.9.0, which writes it to `operator/watchdog.json` under the
/// kubelet's seccomp directory on every node).
pub fn seccomp_profile_yaml(profile: &Value) -> anyhow::Result<String> {
    let mut out = String::from(
        "# Generated by `cargo xtask seccomp` from deploy/seccomp/watchdog.json: edit that, not this.\n\
         apiVersion: security-profiles-operator.x-k8s.io/v1beta1\n\
         kind: SeccompProfile\n\
         metadata:\n  name: watchdog\n  labels:\n    app.kubernetes.io/name: watchdog\n\
         spec:\n",
    );
    let text = |value: &Value, what: &str| -> anyhow::Result<String> {
        value
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("the profile's {what} is not a string"))
    };
    out += &format!(
        "  defaultAction: {}\n",
        text(&profile["defaultAction"], "defaultAction")?
    );
    out += "  architectures:\n";
    for arch in profile["architectures"]
        .as_array()
        .context("the profile has no architectures")?
    {
        out += &format!("    - {}\n", text(arch, "architecture")?);
    }
    out += "  syscalls:\n";
    for rule in profile["syscalls"]
        .as_array()
        .context("the profile has no syscalls")?
    {
        if rule.get("args").is_some() || rule.get("includes").is_some() {
            bail!("only plain rules (names and an action) are rendered: {rule}");
        }
        out += &format!(
            "    - action: {}\n      names:\n",
            text(&rule["action"], "action")?
        );
        for name in rule["names"].as_array().context("a rule without names")? {
            out += &format!("        - {}\n", text(name, "name")?);
        }
    }
    Ok(out)
}
