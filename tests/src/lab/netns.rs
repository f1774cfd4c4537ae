//! Network namespaces: the [`NetNs`] guard, threads that enter a namespace (the crate's
//! only `setns`), and the `ip`/`bridge` command runners the lab is built with.

use std::{
    fs, io,
    io::Write as _,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::JoinHandle,
};

use crate::{ip, isolation, unique};

/// A named network namespace (`ip netns add`) with loopback up; deleted on drop. Holds
/// its test's share of the kernel ([`crate::isolation`]).
#[derive(Debug)]
pub struct NetNs {
    name: String,
    _share: isolation::Share,
}

impl NetNs {
    /// Creates a namespace whose name starts with `prefix` (waiting while a test that
    /// must run alone runs).
    pub fn new(prefix: &str) -> Self {
        let share = isolation::share();
        let name = unique(prefix);
        ip(&["netns", "add", &name]);
        let ns = Self {
            name,
            _share: share,
        };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mount path of the namespace.
    pub fn path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.name)
    }

    /// Connects this namespace to `remote` with a veth pair, `local` here and `peer`
    /// there, each `(name, address/prefix)`, both up.
    pub fn veth_to(&self, remote: &NetNs, local: (&str, &str), peer: (&str, &str)) {
        ip(&[
            "-n", &self.name, "link", "add", local.0, "type", "veth", "peer", "name", peer.0,
        ]);
        ip(&[
            "-n",
            &self.name,
            "link",
            "set",
            peer.0,
            "netns",
            &remote.name,
        ]);
        ip(&["-n", &self.name, "addr", "add", local.1, "dev", local.0]);
        ip(&["-n", &remote.name, "addr", "add", peer.1, "dev", peer.0]);
        ip(&["-n", &self.name, "link", "set", local.0, "up"]);
        ip(&["-n", &remote.name, "link", "set", peer.0, "up"]);
    }

    /// The namespace's inode number (what the daemon labels `netns`).
    pub fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        fs::metadata(self.path()).expect("netns file").ino()
    }

    /// Runs `f` on a thread that has entered this namespace: sockets it opens live here.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        run_in(&self.path(), f)
    }
}

/// Runs `f` on a thread that has entered the network namespace bound at `path`.
pub fn run_in<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> T {
    {
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    enter_netns(path).unwrap_or_else(|e| panic!("enter {}: {e}", path.display()));
                    f()
                })
                .join()
                .expect("thread in netns panicked")
        })
    }
}

impl NetNs {
    /// Starts a thread that has entered this namespace and runs `f` there; unlike
    /// [`NetNs::run`] the thread may outlive the call (join it before the guard drops).
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = self.path();
        std::thread::spawn(move || {
            enter_netns(&path).unwrap_or_else(|e| panic!("enter {}: {e}", path.display()));
            f()
        })
    }

    /// Runs `ip <args>` inside the namespace, panicking with its stderr on failure.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name()];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// Loads `ruleset` with `nft -f -` inside the namespace; the error is nft's stderr
    /// with the ruleset.
    pub fn nft(&self, ruleset: &str) -> Result<(), String> {
        use std::io::Write as _;
        let mut child = Command::new("ip")
            .args(["netns", "exec", self.name(), "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|err| format!("cannot run nft: {err}"))?;
        let written = child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(ruleset.as_bytes());
        let output = child
            .wait_with_output()
            .map_err(|err| format!("nft: {err}"))?;
        if written.is_err() || !output.status.success() {
            return Err(format!(
                "nft -f: {}\n{ruleset}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(())
    }

    /// Runs `bridge <args>` inside the namespace, panicking with its stderr on failure.
    pub fn bridge(&self, args: &[&str]) {
        let output = Command::new("ip")
            .args(["netns", "exec", self.name(), "bridge"])
            .args(args)
            .output()
            .expect("run bridge");
        assert!(
            output.status.success(),
            "bridge {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Feeds `commands` (one per line) to `ip -batch -` inside the namespace.
    pub fn ip_batch(&self, commands: &str) {
        let mut child = Command::new("ip")
            .args(["-n", self.name(), "-batch", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ip -batch");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(commands.as_bytes())
            .expect("write ip -batch input");
        let output = child.wait_with_output().expect("wait for ip -batch");
        assert!(
            output.status.success(),
            "ip -batch: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// `ip -j <args>` inside the namespace, parsed.
    pub fn ip_json(&self, args: &[&str]) -> serde_json::Value {
        let output = Command::new("ip")
            .args(["-n", self.name(), "-j"])
            .args(args)
            .output()
            .expect("run ip -j");
        assert!(
            output.status.success(),
            "ip -j {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("ip -j prints JSON")
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

// -------------------------------------------------------------------- background threads

/// A thread living in a network namespace, stopped and joined on drop (before the
/// namespace goes: the thread holds a reference to it).
#[derive(Debug)]
pub(crate) struct Background {
    pub(crate) stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Background {
    /// Spawns a thread in `ns` that runs `setup` (binding sockets), reports its outcome
    /// (this call panics with `what` if it failed), then runs `work` until asked to stop.
    pub(crate) fn spawn<S>(
        ns: &NetNs,
        what: String,
        setup: impl FnOnce() -> io::Result<S> + Send + 'static,
        work: impl FnOnce(S, &AtomicBool) + Send + 'static,
    ) -> Self {
        let path = ns.path();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let (ready_tx, ready_rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("wdl-background".into())
            .spawn(move || {
                let state = match enter_netns(&path).and_then(|()| setup()) {
                    Ok(state) => state,
                    Err(error) => {
                        let _ = ready_tx.send(Err(error));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                work(state, &flag);
            })
            .expect("spawn a lab thread");
        let mut background = Self {
            stop,
            handle: Some(handle),
        };
        match ready_rx.recv() {
            Ok(Ok(())) => background,
            Ok(Err(error)) => {
                background.join();
                panic!("{what} in {}: {error}", ns.name())
            }
            Err(_) => {
                background.join();
                panic!("{what} in {}: the thread died during setup", ns.name())
            }
        }
    }

    pub(crate) fn join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.join();
    }
}

/// Moves the calling thread into the network namespace bound at `path`: the only `setns`
/// of the lab.
pub fn enter_netns(path: &Path) -> io::Result<()> {
    let file = fs::File::open(path)?;
    // SAFETY: a valid namespace fd; setns only affects the calling thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// -------------------------------------------------------------------- commands

/// Writes a sysctl of the calling thread's network namespace (`net/ipv4/ip_forward`).
pub(crate) fn write_sysctl(key: &str, value: &str) {
    let path = Path::new("/proc/sys").join(key);
    fs::write(&path, value).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Runs `tool -n <ns> -batch -` (or in the root namespace) with `commands` on stdin.
pub(crate) fn batch(tool: &str, ns: Option<&NetNs>, commands: &[String]) {
    let mut command = Command::new(tool);
    if let Some(ns) = ns {
        command.args(["-n", ns.name()]);
    }
    let mut child = command
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    let script = commands.join("\n") + "\n";
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .unwrap_or_else(|e| panic!("write to {tool}: {e}"));
    let result = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait for {tool}: {e}"));
    assert!(
        result.status.success(),
        "{tool} -batch in {}: {}\nscript:\n{script}",
        ns.map_or("the root namespace", NetNs::name),
        String::from_utf8_lossy(&result.stderr)
    );
}

/// Runs `tool [-n ns] args…`, panicking on failure; returns stdout.
pub(crate) fn ip_tool(tool: &str, ns: Option<&NetNs>, args: &[&str]) -> String {
    let mut command = Command::new(tool);
    if let Some(ns) = ns {
        command.args(["-n", ns.name()]);
    }
    let result = command
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    assert!(
        result.status.success(),
        "{tool} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&result.stderr)
    );
    String::from_utf8_lossy(&result.stdout).into_owned()
}
