//! `cargo xtask setup`: make a clean Debian machine able to build and test the project.
//!
//! Each step checks before it acts, so a second run only checks, in well under a second:
//! one `dpkg-query` for every Debian package, the Python tool found through its files
//! rather than started, and a few quick `rustc`/`rustup`/`bpf-linker` calls.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

use crate::util::{output, status};

/// Debian packages used by the build, the tests and the benchmarks.
const PACKAGES: &[&str] = &[
    "iproute2",                // ip: namespaces, veths, routes in the integration tests
    "iputils-ping",            // ping in the lab
    "util-linux",              // setpriv: run the daemon without capabilities in a test
    "bpftool",                 // inspect loaded programs
    "bpftrace",                // the reference tool in `bench drops`
    "iperf3",                  // throughput with and without probes in `bench tc`
    "prometheus",              // promtool and a real Prometheus for the shipped rules
    "prometheus-alertmanager", // a real Alertmanager in the alert tests
    "qemu-user-static",        // runs the aarch64 binary in the tests
];

/// Debian packages of the kernel matrix (`cargo xtask kernels`) and the image
/// (`cargo xtask image`): qemu-system boots Debian's kernels with a busybox initramfs
/// packed by cpio; buildah builds and podman (with runc) runs the container image;
/// containerd (with `ctr`) imports the saved archive and runs the image under its own
/// default seccomp profile, and a local registry (`docker-registry`) receives `--push`
/// in the image tests.
const PORTABILITY_PACKAGES: &[&str] = &[
    "qemu-system-arm",
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "xz-utils",
    "binutils", // readelf: the libraries a guest binary needs
    "podman",
    "buildah",
    "runc",
    "containerd",
    "docker-registry",
];

/// The Raspberry Pi target, built and run under qemu-user by the tests.
pub const AARCH64: &str = "aarch64-unknown-linux-gnu";

/// Python tools from PyPI: (package==version, command it installs).
const PYTHON_TOOLS: &[(&str, &str)] = &[
    // Offline Kubernetes schema validation of deploy/ (bundled schemas, no cluster).
    ("kubernetes-validate==1.37.0", "kubernetes-validate"),
];

/// The bpf-linker release known to work with the pinned aya and rustc 1.95 (LLVM 22).
const BPF_LINKER_VERSION: &str = "0.13.0";

/// The cargo-deny release `.ci/run` checks licences, bans and sources with (deny.toml).
const CARGO_DENY_VERSION: &str = "0.20.2";

/// Debian's cross toolchain for the Raspberry Pi build: gcc and the arm64 C library it
/// links against (only recommended by gcc, and we install without recommends).
const AARCH64_LINKER_PACKAGES: &[&str] = &["gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"];

/// Installs whatever is missing to build, test and benchmark.
pub fn run() -> anyhow::Result<()> {
    let packages: Vec<&str> = PACKAGES
        .iter()
        .chain(AARCH64_LINKER_PACKAGES)
        .chain(PORTABILITY_PACKAGES)
        .copied()
        .collect();
    debian_packages(&packages)?;
    install_python_tools(&missing_python_tools())?;
    tracefs()?;
    // The aarch64 linker packages were among the packages above.
    build_tools(None)?;
    rust_target(AARCH64)?;
    cargo_deny()
}

/// Installs cargo-deny from crates.io when it is missing or another release (several
/// minutes of compiling, once).
fn cargo_deny() -> anyhow::Result<()> {
    let current = Command::new("cargo").args(["deny", "--version"]).output();
    if let Ok(out) = &current
        && out.status.success()
        && String::from_utf8_lossy(&out.stdout).contains(CARGO_DENY_VERSION)
    {
        eprintln!("setup: cargo-deny {CARGO_DENY_VERSION} present");
        return Ok(());
    }
    eprintln!("setup: building cargo-deny {CARGO_DENY_VERSION} (several minutes, once)");
    status(
        Command::new("cargo")
            .args(["install", "cargo-deny", "--locked", "--force", "--version"])
            .arg(CARGO_DENY_VERSION),
    )
}

/// Where the kernel's tracepoints are read (the daemon mounts it itself when missing; the
/// unit tests read it directly).
const TRACEFS: &str = "/sys/kernel/tracing";

/// Mounts tracefs at /sys/kernel/tracing when nothing is there, as systemd does at boot
/// (a machine or container without systemd has it unmounted). Not fatal: without root the
/// tests that need it say so themselves.
fn tracefs() -> anyhow::Result<()> {
    let events = std::path::Path::new(TRACEFS).join("events");
    if events.is_dir() {
        eprintln!("setup: tracefs mounted at {TRACEFS}");
        return Ok(());
    }
    eprintln!("setup: mounting tracefs at {TRACEFS}");
    if let Err(error) = status(Command::new("mount").args(["-t", "tracefs", "nodev", TRACEFS])) {
        eprintln!("setup: cannot mount tracefs ({error:#}); the tests that read it will say so");
    }
    Ok(())
}

/// The Python tools whose command would not run, as (package, command).
fn missing_python_tools() -> Vec<(&'static str, &'static str)> {
    PYTHON_TOOLS
        .iter()
        .copied()
        .filter(|(_, command)| !python_command_runs(command))
        .collect()
}

/// Whether the Python console script `command` would run, decided without starting Python
/// where the files say it for sure (Python's start-up, through pyenv's shims, takes most of
/// a second): the first `command` on PATH is a script whose interpreter exists, or a pyenv
/// shim whose selected version has such a script. Anything else is run with `--version`.
fn python_command_runs(command: &str) -> bool {
    let Some(found) = on_path(command) else {
        return false;
    };
    let head = file_head(&found);
    let script = match pyenv_shim_root(&head) {
        Some(root) => match pyenv_version(&root) {
            Some(version) => root
                .join("versions")
                .join(version)
                .join("bin")
                .join(command),
            None => return runs(&found),
        },
        None => found,
    };
    match interpreter(&file_head(&script)) {
        Some(python) => python.is_file(),
        None if script.is_file() => runs(&script),
        None => false,
    }
}

fn runs(command: &std::path::Path) -> bool {
    Command::new(command)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}

/// The first executable file named `command` in a directory of PATH.
fn on_path(command: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(command))
        .find(|path| {
            std::fs::metadata(path)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

/// The first kilobyte of a file as text (empty when it cannot be read).
fn file_head(path: &std::path::Path) -> String {
    use std::io::Read as _;
    let mut head = Vec::new();
    if let Ok(file) = std::fs::File::open(path) {
        let _ = file.take(1024).read_to_end(&mut head);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A console script's interpreter: the absolute path of its `#!` line, when it is a Python.
fn interpreter(head: &str) -> Option<PathBuf> {
    let line = head.strip_prefix("#!")?.lines().next()?;
    let program = line.split_whitespace().next()?;
    (program.starts_with('/') && program.contains("python")).then(|| PathBuf::from(program))
}

/// The pyenv root a shim execs (`exec "<root>/libexec/pyenv" exec …`).
fn pyenv_shim_root(head: &str) -> Option<PathBuf> {
    let (before, _) = head.split_once("/libexec/pyenv\" exec")?;
    let root = before.rsplit('"').next()?;
    root.starts_with('/').then(|| PathBuf::from(root))
}

/// The Python version pyenv selects, as pyenv does: PYENV_VERSION, else the nearest
/// `.python-version` from the current directory up, else `<root>/version`. `None` for the
/// system Python (found elsewhere on PATH) or when nothing says.
fn pyenv_version(root: &std::path::Path) -> Option<String> {
    let text = std::env::var("PYENV_VERSION").ok().or_else(|| {
        let cwd = std::env::current_dir().ok()?;
        cwd.ancestors()
            .map(|dir| dir.join(".python-version"))
            .chain([root.join("version")])
            .find_map(|file| std::fs::read_to_string(file).ok())
    })?;
    let version = text
        .split(|c: char| c == ':' || c.is_whitespace())
        .find(|word| !word.is_empty() && !word.starts_with('#'))?;
    (version != "system").then(|| version.to_owned())
}

fn install_python_tools(missing: &[(&str, &str)]) -> anyhow::Result<()> {
    for (_, command) in PYTHON_TOOLS {
        if !missing.iter().any(|(_, absent)| absent == command) {
            eprintln!("setup: {command} present");
        }
    }
    for (package, _) in missing {
        eprintln!("setup: installing {package} from PyPI");
        status(
            Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", package])
                .env("PIP_DISABLE_PIP_VERSION_CHECK", "1"),
        )?;
    }
    if missing.is_empty() {
        return Ok(());
    }
    // A command pip installed but PATH does not reach would be installed again on every run.
    for (package, command) in missing_python_tools() {
        eprintln!(
            "setup: {package} is installed but `{command} --version` does not run: add pip's \
             script directory to PATH (with pyenv: `pyenv rehash`), or the deploy tests fail"
        );
    }
    Ok(())
}

/// What `cargo xtask kernels` and `cargo xtask image` need besides the build tools.
pub fn kernel_matrix_tools() -> anyhow::Result<()> {
    debian_packages(PORTABILITY_PACKAGES)
}

/// Installs only what building the daemon for `target` needs (the host's if `None`).
pub fn build_tools(target: Option<&str>) -> anyhow::Result<()> {
    rust_src()?;
    bpf_linker()?;
    if let Some(target) = target
        && target.starts_with("aarch64-")
    {
        debian_packages(AARCH64_LINKER_PACKAGES)?;
        rust_target(target)?;
    }
    Ok(())
}

fn rust_target(target: &str) -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if installed.lines().any(|line| line.trim() == target) {
        eprintln!("setup: Rust target {target} present");
        return Ok(());
    }
    eprintln!("setup: adding the Rust target {target}");
    status(Command::new("rustup").args(["target", "add", target]))
}

fn debian_packages(packages: &[&str]) -> anyhow::Result<()> {
    let installed = installed(packages);
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|package| !installed.contains(*package))
        .collect();
    if missing.is_empty() {
        eprintln!("setup: Debian packages present ({})", packages.join(" "));
        return Ok(());
    }
    eprintln!("setup: installing Debian packages: {}", missing.join(" "));
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "installing {} needs root: run `sudo apt-get install {}` or run this as root",
            missing.join(" "),
            missing.join(" ")
        );
    }
    status(Command::new("apt-get").args(["update", "-qq"]))?;
    status(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    // Packages whose service systemd starts on installation: the tests start their own
    // (on private sockets and ports); leave none running (docker-registry's listens on
    // every address of the machine).
    for service in SERVICES_NOT_WANTED {
        if missing.contains(&service.0) {
            let _ = Command::new("systemctl")
                .args(["disable", "--now", service.1])
                .status();
        }
    }
    Ok(())
}

/// (package, systemd unit) that installing the package starts and the project does not use.
const SERVICES_NOT_WANTED: &[(&str, &str)] = &[
    ("containerd", "containerd.service"),
    ("docker-registry", "docker-registry.service"),
];

/// Which of `packages` dpkg has installed, asked in one `dpkg-query` (it prints a line per
/// package it knows and exits 1 when it knows not all of them, so the status is ignored).
fn installed(packages: &[&str]) -> std::collections::BTreeSet<String> {
    let Ok(out) = Command::new("dpkg-query")
        .args(["-W", "-f=${Package}\t${Status}\n"])
        .args(packages)
        .output()
    else {
        return Default::default();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(_, status)| *status == "install ok installed")
        .map(|(package, _)| package.to_owned())
        .collect()
}

fn sysroot() -> anyhow::Result<PathBuf> {
    Ok(PathBuf::from(
        output(Command::new("rustc").args(["--print", "sysroot"]))?.trim(),
    ))
}

fn rust_src() -> anyhow::Result<()> {
    if sysroot()?
        .join("lib/rustlib/src/rust/library/core")
        .is_dir()
    {
        eprintln!("setup: rust-src present");
        return Ok(());
    }
    eprintln!("setup: installing the rust-src component (eBPF builds need core's source)");
    status(Command::new("rustup").args(["component", "add", "rust-src"]))
}

fn bpf_linker() -> anyhow::Result<()> {
    let current = Command::new("bpf-linker").arg("--version").output();
    if let Ok(out) = &current
        && out.status.success()
        && String::from_utf8_lossy(&out.stdout).contains(BPF_LINKER_VERSION)
    {
        eprintln!("setup: bpf-linker {BPF_LINKER_VERSION} present");
        return Ok(());
    }
    // bpf-linker must use the same LLVM as rustc: link it against rustc's own libLLVM, found
    // in the sysroot, through a prefix directory llvm-sys understands.
    let sysroot = sysroot()?;
    let lib = sysroot.join("lib");
    let libllvm = std::fs::read_dir(&lib)
        .with_context(|| format!("cannot list {}", lib.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .find(|name| name.starts_with("libLLVM.so."))
        .with_context(|| {
            format!(
                "no libLLVM.so.* in {}: is this a rustup toolchain?",
                lib.display()
            )
        })?;
    // libLLVM.so.22.1-rust-1.95.0-stable → 22, 1
    let version = libllvm.trim_start_matches("libLLVM.so.");
    let mut numbers = version.split(['.', '-']);
    let major = numbers.next().unwrap_or_default();
    let minor = numbers.next().unwrap_or_default();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    // bpf-linker keeps this path as its run-time library path, so it must stay.
    let prefix = cargo_home.join("bpf-linker-llvm").join(version);
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("cannot create {}", prefix_lib.display()))?;
    for name in ["libLLVM.so", libllvm.as_str()] {
        let link = prefix_lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(lib.join(&libllvm), &link)
            .with_context(|| format!("cannot link {}", link.display()))?;
    }
    eprintln!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against rustc's LLVM {major}.{minor} \
         (about a minute)"
    );
    status(
        Command::new("cargo")
            .args(["install", "bpf-linker", "--locked", "--force", "--version"])
            .arg(BPF_LINKER_VERSION)
            .args(["--no-default-features", "--features"])
            .arg(format!("llvm-{major}"))
            .env("LLVM_PREFIX", &prefix)
            .env(format!("LLVM_SYS_{major}{minor}_PREFIX"), &prefix),
    )
}
