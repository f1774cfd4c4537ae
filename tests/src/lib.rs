//! The lab: real network namespaces, the real daemon binary as a process, real traffic.
//!
//! Used by the integration tests in `tests/tests/suite/` and by `cargo xtask bench`. Everything
//! created here is removed by a guard's `Drop`, also when a test panics.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

pub mod alertmanager;
pub mod apiserver;
pub mod hook;
pub mod isolation;
pub mod lab;
pub mod memory;
pub mod prometheus;
pub mod repo;
pub mod shipped;
pub mod soak;

pub use lab::netns::{NetNs, run_in};

/// Whether this is a CI run (`CI` set, whatever its value): there every test must run.
pub fn under_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// Says that `test` cannot run here and why (`SKIPPED <test>: <why>` on stderr); the
/// caller then returns. Under CI it panics instead: a test that did not run never passes
/// there. Every skip in the suite goes through here.
pub fn skip(test: &str, why: &str) {
    skip_or_fail(under_ci(), test, why);
}

fn skip_or_fail(ci: bool, test: &str, why: &str) {
    assert!(
        !ci,
        "{test} cannot run: {why} (CI is set: every test must run)"
    );
    eprintln!("SKIPPED {test}: {why}");
}

/// True when running as root. Otherwise [`skip`]s `test` (false: return).
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    skip(
        test,
        "needs root (network namespaces and eBPF); run `cargo xtask test` as root",
    );
    false
}

/// True when the environment variable `var` asks to skip `test` (set, and not `0`): then
/// `test` is [`skip`]ped, which fails under CI.
pub fn skip_requested(var: &str, test: &str) -> bool {
    if std::env::var_os(var).is_none_or(|value| value == "0") {
        return false;
    }
    skip(test, &format!("{var} is set"));
    true
}

/// Runs `ip` with `args`, panicking with its stderr on failure.
pub fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

static UNIQUE: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    )
}

/// A temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates an empty directory.
    pub fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(unique(prefix));
        fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `cargo` (the one that ran us, `$CARGO`, else from PATH) without the variables cargo
/// sets for the package it runs (`CARGO_PKG_*`, `CARGO_MANIFEST_*`, `OUT_DIR`, …): a
/// dependency's build script may ask to rerun when one of them changes (ring's does, for
/// `CARGO_PKG_NAME` and `CARGO_MANIFEST_DIR`), and cargo compares them as it finds them in
/// its own environment. A build started from a test (`watchdog-tests`) or from xtask then
/// recompiled ring and all that depends on it (rustls, kube, the daemon) that the build
/// before had just made, and the next build from a shell did it once more.
pub fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if is_package_variable(name) {
            command.env_remove(name);
        }
    }
    command
}

/// Whether cargo sets `name` for the package it builds, runs or tests (not configuration:
/// `CARGO_HOME`, `CARGO_TARGET_DIR`, `CARGO_BUILD_JOBS`, … stay).
fn is_package_variable(name: &str) -> bool {
    [
        "CARGO_PKG_",
        "CARGO_MANIFEST_",
        "CARGO_BIN_EXE_",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
    ]
    .iter()
    .any(|prefix| name.starts_with(prefix))
        || name == "OUT_DIR"
}

/// The daemon binary: `WATCHDOG_BIN` if set, else built (once per process) with
/// `cargo build --workspace`: the features `cargo test --workspace` resolves, so under it
/// the build reuses the test build's dependencies (with `--package watchdog` it compiled a
/// second set of them).
pub fn daemon_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("WATCHDOG_BIN") {
                return PathBuf::from(path);
            }
            let output = cargo()
                .args([
                    "build",
                    "--workspace",
                    "--bin",
                    "watchdog",
                    "--message-format=json-render-diagnostics",
                ])
                .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
                .stderr(Stdio::inherit())
                .output()
                .expect("run cargo build");
            assert!(output.status.success(), "building the daemon failed");
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .filter(|message| message["target"]["name"] == "watchdog")
                .find_map(|message| message["executable"].as_str().map(PathBuf::from))
                .expect("cargo reported no watchdog executable")
        })
        .clone()
}

/// Runs `watchdog args…` to completion (RUST_LOG=info); returns (exit code, stdout, stderr).
pub fn run_watchdog(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(daemon_binary())
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .expect("run watchdog");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Polls `probe` until it returns `Some`, or panics after `timeout` saying what it waited for.
pub fn poll_until<T>(timeout: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How many file descriptors process `pid` holds open (`/proc/<pid>/fd`); panics when
/// the process is gone.
pub fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e} (has the process exited?)"))
        .count()
}

/// IDs of the BPF programs process `pid` holds, directly or through links (the `prog_id`
/// lines of `/proc/<pid>/fdinfo`).
pub fn bpf_programs_of(pid: u32) -> Vec<u64> {
    let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Vec::new();
    };
    let mut ids: Vec<u64> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| fs::read_to_string(entry.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("prog_id:"))
                .and_then(|id| id.trim().parse().ok())
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// How many BPF links of process `pid`'s programs the kernel holds (`bpftool link show`),
/// attached or left over from a device that is gone.
pub fn bpf_links_of(pid: u32) -> usize {
    let programs = bpf_programs_of(pid);
    // bpftool fails when a link goes away while it lists them: ask again.
    let links = poll_until(Duration::from_secs(10), "bpftool link show", || {
        let output = Command::new("bpftool")
            .args(["-j", "link", "show"])
            .output()
            .expect("run bpftool");
        output
            .status
            .success()
            .then(|| serde_json::from_slice::<serde_json::Value>(&output.stdout).ok())
            .flatten()
    });
    links
        .as_array()
        .into_iter()
        .flatten()
        .filter(|link| {
            link["prog_id"]
                .as_u64()
                .is_some_and(|id| programs.contains(&id))
        })
        .count()
}

/// A plain HTTP/1.0 GET; `None` if nothing listens.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.get(9..12)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// The daemon, started as `ip netns exec <ns> watchdog run --config <file>`.
/// Dropping it kills the process if it still runs.
#[derive(Debug)]
pub struct Daemon {
    /// The namespace's bind mount (the daemon keeps running if a lab drops it).
    ns_path: PathBuf,
    child: Child,
    listen: SocketAddr,
    dir: TempDir,
}

impl Daemon {
    /// Starts the daemon in `ns` with the embedded default config overridden by `config`
    /// (TOML), serving on 127.0.0.1:9477 inside the namespace.
    pub fn start(ns: &NetNs, config: &str) -> Self {
        Self::start_with_args(ns, config, &[])
    }

    /// As [`Daemon::start`], with extra arguments after `watchdog run`.
    pub fn start_with_args(ns: &NetNs, config: &str, args: &[&str]) -> Self {
        Self::spawn(ns, config, args, None)
    }

    /// As [`Daemon::start`], confined as the DaemonSet's container is: uid 0 with exactly
    /// the capabilities `caps` (`BPF`, `PERFMON`, …, as the manifest names them) in every
    /// set and the bounding set, `no_new_privs`, and in a PID namespace of its own with its
    /// own `/proc` (no hostPID: no other process is visible). Its mount namespace has
    /// tracefs at `/sys/kernel/tracing` and the cgroup v2 tree at `/sys/fs/cgroup`, as the
    /// DaemonSet's hostPath mounts give them. SIGTERM reaches the daemon through the shell
    /// that waits for it; the daemon gets SIGTERM too if that shell dies.
    pub fn start_confined(ns: &NetNs, config: &str, caps: &[&str]) -> Self {
        Self::spawn(ns, config, &[], Some(caps))
    }

    fn spawn(ns: &NetNs, config: &str, args: &[&str], confine: Option<&[&str]>) -> Self {
        let dir = TempDir::new("watchdog-test");
        let config_path = dir.path().join("config.toml");
        fs::write(&config_path, config).expect("write config");
        let log = fs::File::create(dir.path().join("daemon.log")).expect("create log");
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns.name()]);
        if let Some(caps) = confine {
            let caps: String = caps
                .iter()
                .map(|cap| format!(",+{}", cap.to_lowercase()))
                .collect();
            // bash mounts what the DaemonSet's hostPath volumes give (`ip netns exec`
            // remounted /sys), then starts the daemon as PID 1 of a new PID namespace
            // with its own /proc (unshare), confined by setpriv, and waits for it.
            // unshare ignores SIGTERM: bash sends it to the daemon (unshare's child);
            // if bash is killed, unshare is too (pdeathsig) and the daemon gets SIGTERM
            // (kill-child).
            let script = format!(
                "mount -t tracefs nodev /sys/kernel/tracing && \
                 mount -t cgroup2 none /sys/fs/cgroup || exit 125
                 setpriv --pdeathsig KILL -- unshare --pid --fork --mount-proc \
                 --kill-child=TERM setpriv --no-new-privs --inh-caps=-all \
                 --ambient-caps=-all --bounding-set=-all{caps} -- \"$@\" &
                 pid=$!
                 trap 'kill -TERM $(cat /proc/$pid/task/$pid/children) 2>/dev/null' TERM INT
                 wait $pid; status=$?
                 while [ $status -gt 128 ] && kill -0 $pid 2>/dev/null; do
                 wait $pid; status=$?; done
                 exit $status"
            );
            command.args(["bash", "-c", &script, "watchdog"]);
        }
        let child = command
            .arg(daemon_binary())
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("start the daemon");
        Self {
            ns_path: ns.path(),
            child,
            listen: "127.0.0.1:9477".parse().expect("address"),
            dir,
        }
    }

    /// Everything the daemon has logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// GET `path` from the daemon (inside its namespace).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let listen = self.listen;
        run_in(&self.ns_path, || http_get(listen, path))
    }

    /// Waits until the HTTP server answers (any status), failing if the daemon exits.
    pub fn wait_serving(&mut self) {
        poll_until(Duration::from_secs(30), "the daemon's HTTP server", || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the daemon exited ({status}) before serving:\n{}",
                    self.log()
                );
            }
            self.get("/healthz").map(|_| ())
        });
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&mut self) {
        self.wait_serving();
        let mut last = String::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match self.get("/readyz") {
                Some((200, _)) => return,
                Some((_, body)) => last = body,
                None => {}
            }
            assert!(
                std::time::Instant::now() < deadline,
                "not ready after 30 s: {last}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A scrape of `/metrics`.
    pub fn metrics(&self) -> Metrics {
        let (status, body) = self.get("/metrics").expect("scrape /metrics");
        assert_eq!(status, 200, "{body}");
        Metrics(body)
    }

    /// The active findings from `/api/v1/findings`.
    pub fn findings(&self) -> Vec<Finding> {
        self.try_findings().expect("GET /api/v1/findings")
    }

    /// As [`Daemon::findings`], `None` if the daemon did not answer (a busy machine).
    pub fn try_findings(&self) -> Option<Vec<Finding>> {
        let (status, body) = self.get("/api/v1/findings")?;
        assert_eq!(status, 200, "{body}");
        let report: serde_json::Value = serde_json::from_str(&body).expect("findings JSON");
        let findings = report["findings"]
            .as_array()
            .expect("findings array")
            .iter()
            .map(|finding| Finding {
                kind: finding["kind"].as_str().unwrap_or_default().to_owned(),
                subject: finding["subject"].as_str().unwrap_or_default().to_owned(),
                severity: finding["severity"].as_str().unwrap_or_default().to_owned(),
                evidence: finding["evidence"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        (
                            e["name"].as_str().unwrap_or_default().to_owned(),
                            e["value"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect(),
            })
            .collect();
        Some(findings)
    }

    /// Polls `/api/v1/findings` until one of `kind` whose subject contains `subject`
    /// appears; panics after `timeout` with the findings and the log.
    pub fn wait_finding(&self, kind: &str, subject: &str, timeout: Duration) -> Finding {
        let deadline = Instant::now() + timeout;
        loop {
            let findings = self.try_findings().unwrap_or_default();
            if let Some(found) = findings
                .iter()
                .find(|f| f.kind == kind && f.subject.contains(subject))
            {
                return found.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no {kind} finding on {subject:?} after {timeout:?}; findings: {findings:#?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn stop(mut self) -> ExitStatus {
        // SAFETY: plain kill(2) on our child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let child = &mut self.child;
        poll_until(
            Duration::from_secs(10),
            "the daemon to exit after SIGTERM",
            || child.try_wait().expect("wait"),
        )
    }

    /// The exit status, if the daemon has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("wait")
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A finding as `/api/v1/findings` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// e.g. `ghost_gateway`.
    pub kind: String,
    /// The object to fix.
    pub subject: String,
    /// `warning` or `critical`.
    pub severity: String,
    /// (name, value) pairs.
    pub evidence: Vec<(String, String)>,
}

impl Finding {
    /// Every value of evidence `name`.
    pub fn evidence(&self, name: &str) -> Vec<&str> {
        self.evidence
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A `/metrics` scrape (OpenMetrics text).
#[derive(Clone, Debug)]
pub struct Metrics(pub String);

impl Metrics {
    /// The value of the sample `name{labels}` whose labels are exactly `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        self.0.lines().find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let mut have: Vec<&str> = if label_text.is_empty() {
                Vec::new()
            } else {
                label_text.split(',').collect()
            };
            have.sort_unstable();
            let mut want: Vec<&str> = wanted.iter().map(String::as_str).collect();
            want.sort_unstable();
            (have == want).then(|| value.parse().ok()).flatten()
        })
    }

    /// The value of series `name{labels}` (labels exactly), which must be in the scrape:
    /// panics with the scrape otherwise. For values where absent must not read as 0 (a
    /// renamed metric or label would pass an `== 0`).
    pub fn series(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let value = self
            .value(name, labels)
            .unwrap_or_else(|| panic!("no series {name}{labels:?} in the scrape:\n{}", self.0));
        value as u64
    }

    /// The value of series `name{labels}`, or 0 when the daemon has not exported that
    /// series (yet): most are created on their first count. Panics when the scrape declares
    /// no metric family `name` belongs to (a renamed or unregistered metric is not 0); a
    /// registered family with no series yet is left out of the scrape (prometheus-client):
    /// poll [`Metrics::declares`] before counting in one.
    pub fn count(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        assert!(
            self.declares(name),
            "no metric family for {name} in the scrape (# TYPE line):\n{}",
            self.0
        );
        self.value(name, labels).map_or(0, |value| value as u64)
    }

    /// Whether the scrape has a `# TYPE` line for the family of sample name `name`
    /// (`name` itself, or without `_total`, `_bucket`, `_count`, `_sum`, `_created`, `_info`).
    pub fn declares(&self, name: &str) -> bool {
        let family = ["_total", "_bucket", "_count", "_sum", "_created", "_info"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .into_iter()
            .chain([name]);
        let families: Vec<&str> = family.collect();
        self.0.lines().any(|line| {
            line.strip_prefix("# TYPE ")
                .and_then(|rest| rest.split_whitespace().next())
                .is_some_and(|declared| families.contains(&declared))
        })
    }
}

/// Drop generators: each packet is dropped by the receiving kernel with a known reason.
pub mod traffic {
    use super::*;

    /// `n` UDP datagrams to a closed port on loopback: `NO_SOCKET` drops. Call inside a
    /// namespace ([`NetNs::run`]).
    pub fn udp_to_closed_port(n: u32, ipv6: bool) {
        let (bind, dest): (&str, &str) = if ipv6 {
            ("[::1]:0", "[::1]:9")
        } else {
            ("127.0.0.1:0", "127.0.0.1:9")
        };
        let socket = UdpSocket::bind(bind).expect("bind udp");
        for _ in 0..n {
            socket.send_to(b"watchdog", dest).expect("send udp");
        }
    }

    /// `n` IPv4 packets of an unused protocol (253) to 127.0.0.1: `IP_NOPROTO` drops.
    pub fn ip_unknown_protocol(n: u32) {
        // SAFETY: plain socket(2); the fd is closed below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let loopback = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be_bytes();
        let mut header = [0u8; 20];
        header[0] = 0x45; // version 4, 5 words
        header[3] = 20; // total length
        header[8] = 64; // ttl
        header[9] = 253; // protocol reserved for experiments
        header[12..16].copy_from_slice(&loopback);
        header[16..20].copy_from_slice(&loopback);
        let address = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(loopback),
            },
            sin_zero: [0; 8],
        };
        for _ in 0..n {
            // SAFETY: valid buffer and address for the duration of the call.
            let sent = unsafe {
                libc::sendto(
                    fd,
                    header.as_ptr().cast(),
                    header.len(),
                    0,
                    (&raw const address).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            assert_eq!(sent, 20, "sendto: {}", std::io::Error::last_os_error());
        }
        // SAFETY: our fd.
        unsafe { libc::close(fd) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "t cannot run: no kernel (CI is set: every test must run)")]
    fn a_skip_under_ci_fails() {
        skip_or_fail(true, "t", "no kernel");
    }

    #[test]
    fn a_skip_elsewhere_returns() {
        skip_or_fail(false, "t", "no kernel");
    }

    const SCRAPE: &str = "# HELP watchdog_kernel_drops Packets the kernel dropped.\n\
                          # TYPE watchdog_kernel_drops counter\n\
                          watchdog_kernel_drops_total{reason=\"NO_SOCKET\"} 3\n\
                          # TYPE watchdog_desired_nodes gauge\n\
                          watchdog_desired_nodes 2\n\
                          # EOF\n";

    #[test]
    fn a_series_not_exported_yet_counts_0_in_a_declared_family() {
        let metrics = Metrics(SCRAPE.to_owned());
        let drops = "watchdog_kernel_drops_total";
        assert_eq!(metrics.count(drops, &[("reason", "NO_SOCKET")]), 3);
        assert_eq!(metrics.count(drops, &[("reason", "IP_NOPROTO")]), 0);
        assert_eq!(metrics.count("watchdog_desired_nodes", &[]), 2);
        assert_eq!(metrics.series(drops, &[("reason", "NO_SOCKET")]), 3);
    }

    #[test]
    #[should_panic(expected = "no metric family for watchdog_kernel_drop_total")]
    fn a_renamed_metric_is_not_0() {
        Metrics(SCRAPE.to_owned()).count("watchdog_kernel_drop_total", &[]);
    }

    #[test]
    #[should_panic(expected = "no series watchdog_kernel_drops_total")]
    fn a_series_that_must_be_there_is_not_0() {
        Metrics(SCRAPE.to_owned()).series("watchdog_kernel_drops_total", &[("cause", "x")]);
    }
}
