//! `cargo xtask setup`: make a clean Debian machine able to build and test the project.
//!
//! Each step checks before it acts, so a second run only checks.

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
    python_tools()?;
    tracefs()?;
    build_tools(Some(AARCH64))
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

fn python_tools() -> anyhow::Result<()> {
    for (package, command) in PYTHON_TOOLS {
        let present = Command::new(command)
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success());
        if present {
            eprintln!("setup: {command} present");
            continue;
        }
        eprintln!("setup: installing {package} from PyPI");
        status(
            Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", package])
                .env("PIP_DISABLE_PIP_VERSION_CHECK", "1"),
        )?;
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
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|package| !installed(package))
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

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("install ok installed"))
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
