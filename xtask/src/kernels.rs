//! `cargo xtask kernels`: the daemon on the kernels users run, booted under qemu.
//!
//! For each kernel of the matrix: Debian's kernel package (downloaded once with a throwaway
//! apt configuration, cached under `target/kernels/`), an initramfs with busybox, iproute2,
//! the daemon and the guest helper (`tests/src/bin/kernel_guest.rs`) for the kernel's
//! architecture and the kernel's own veth/vxlan/clsact modules, booted with
//! qemu-system (TCG). The helper prints one `WATCHDOG-GUEST-RESULT {json}` line on the
//! console; the results are written to a JSON file and printed as a table. Assertions are
//! the host test's (`tests/tests/suite/kernels.rs`).

use std::{
    collections::BTreeSet,
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::{
    setup::AARCH64,
    util::{cargo, output, root, status},
};

/// Debian architectures the matrix boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// x86_64, `qemu-system-x86_64 -accel tcg`.
    Amd64,
    /// aarch64, `qemu-system-aarch64 -M virt -cpu max`.
    Arm64,
}

impl Arch {
    pub(crate) fn debian(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    fn multiarch(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64-linux-gnu",
            Arch::Arm64 => "aarch64-linux-gnu",
        }
    }

    /// The Rust target to build for (`None`: this x86_64 host's).
    pub(crate) fn rust_target(self) -> Option<&'static str> {
        match self {
            Arch::Amd64 => None,
            Arch::Arm64 => Some(AARCH64),
        }
    }
}

/// One kernel of the matrix.
#[derive(Clone, Copy, Debug)]
pub struct Kernel {
    /// Short name: the cache directory and the table's row.
    pub name: &'static str,
    /// Debian suite that ships it.
    pub suite: &'static str,
    /// Its architecture.
    pub arch: Arch,
    /// The metapackage whose dependency names the kernel package.
    pub meta: &'static str,
}

/// Debian's kernels: bullseye 5.10 (x86_64), bookworm 6.1 (arm64, TC through clsact),
/// trixie 6.12 arm64 with 16 KiB pages (the Raspberry Pi 5's page size).
pub const MATRIX: &[Kernel] = &[
    Kernel {
        name: "5.10-amd64",
        suite: "bullseye",
        arch: Arch::Amd64,
        meta: "linux-image-amd64",
    },
    Kernel {
        name: "6.1-arm64",
        suite: "bookworm",
        arch: Arch::Arm64,
        meta: "linux-image-arm64",
    },
    Kernel {
        name: "6.12-arm64-16k",
        suite: "trixie",
        arch: Arch::Arm64,
        meta: "linux-image-arm64-16k",
    },
];

/// Modules the guest needs, loaded with their dependencies when the kernel has them as
/// modules: veth and vxlan for the lab, sch_ingress and cls_bpf for TC before TCX (6.6).
const MODULES: &[&str] = &["veth", "vxlan", "sch_ingress", "cls_bpf"];

/// The arm64 userland from bookworm: busybox and iproute2 with the libraries `ip` needs
/// (the C library comes from Debian's cross toolchain, which the aarch64 build installs).
const ARM64_USERLAND: &[&str] = &[
    "busybox-static",
    "iproute2",
    "libbpf1",
    "libelf1",
    "libmnl0",
    "libbsd0",
    "libcap2",
    "zlib1g",
    "libmd0",
];

/// How long one kernel may take, boot to power-off (TCG on a loaded 2-core machine).
const BOOT_TIMEOUT: Duration = Duration::from_secs(420);
/// What `kernel_guest` prints before its result.
const GUEST_RESULT: &str = "WATCHDOG-GUEST-RESULT ";

pub fn cache() -> PathBuf {
    root().join("target/kernels")
}

/// Boots every kernel (or those named in `only`), writes the results to `results`
/// (default `target/kernels/results.json`) and prints the table.
pub fn run(only: &[String], results: Option<PathBuf>) -> anyhow::Result<()> {
    if std::env::consts::ARCH != "x86_64" {
        bail!("the kernel matrix runs on an x86_64 host (it boots arm64 kernels under TCG)");
    }
    let kernels: Vec<Kernel> = MATRIX
        .iter()
        .filter(|k| only.is_empty() || only.iter().any(|name| name == k.name))
        .copied()
        .collect();
    if kernels.is_empty() {
        let names: Vec<&str> = MATRIX.iter().map(|k| k.name).collect();
        bail!(
            "--only {only:?} matches no kernel; the matrix has {}",
            names.join(", ")
        );
    }
    let mut binaries = Vec::new();
    for arch in [Arch::Amd64, Arch::Arm64] {
        if kernels.iter().any(|k| k.arch == arch) {
            binaries.push((arch, build(arch)?));
        }
    }
    let mut all = Vec::new();
    for kernel in &kernels {
        let (_, (daemon, guest)) = binaries
            .iter()
            .find(|(arch, _)| *arch == kernel.arch)
            .expect("built above");
        let files = [
            (daemon.as_path(), "watchdog"),
            (guest.as_path(), "kernel_guest"),
        ];
        let result = boot(kernel, &files, "/kernel_guest", GUEST_RESULT, BOOT_TIMEOUT)
            .unwrap_or_else(|err| serde_json::json!({"errors": [format!("{err:#}")]}));
        let mut result = result;
        result["name"] = Value::from(kernel.name);
        // What was built: a reader of a cached results file can say how old it is.
        result["revision"] = Value::from(crate::util::revision());
        all.push(result);
    }
    let path = results.unwrap_or_else(|| cache().join("results.json"));
    fs::write(&path, serde_json::to_string_pretty(&all)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    print_table(&all);
    eprintln!("kernels: results in {}", path.display());
    Ok(())
}

/// Builds the daemon and the guest helper for `arch`; returns their paths.
fn build(arch: Arch) -> anyhow::Result<(PathBuf, PathBuf)> {
    crate::setup::build_tools(arch.rust_target())?;
    let daemon = crate::util::build_release(arch.rust_target())?;
    Ok((daemon, build_helper(arch, "kernel_guest")?))
}

/// Builds the `watchdog-tests` binary `name` (release) for `arch`; returns its path.
pub fn build_helper(arch: Arch, name: &str) -> anyhow::Result<PathBuf> {
    let target = arch.rust_target();
    eprintln!("xtask: building the {name} helper ({})", arch.debian());
    let mut command = cargo();
    command.args([
        "build",
        "--release",
        "--package",
        "watchdog-tests",
        "--bin",
        name,
    ]);
    let mut dir = root().join("target");
    if let Some(target) = target {
        command.args(["--target", target]).env(
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER",
            "aarch64-linux-gnu-gcc",
        );
        dir = dir.join(target);
    }
    status(&mut command)?;
    Ok(dir.join("release").join(name))
}

/// A throwaway apt configuration for one suite and architecture: its own sources list,
/// lists and cache under `target/kernels/apt/<suite>-<arch>/`; the host's apt is untouched.
struct Apt {
    dir: PathBuf,
    arch: Arch,
    updated: bool,
}

impl Apt {
    fn new(suite: &str, arch: Arch) -> anyhow::Result<Self> {
        let dir = cache()
            .join("apt")
            .join(format!("{suite}-{}", arch.debian()));
        for sub in ["lists/partial", "cache/archives/partial", "debs"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        fs::write(
            dir.join("sources.list"),
            format!(
                "deb [arch={} signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
                 http://deb.debian.org/debian {suite} main\n",
                arch.debian()
            ),
        )?;
        Ok(Self {
            dir,
            arch,
            updated: false,
        })
    }

    fn command(&self, tool: &str) -> Command {
        let mut command = Command::new(tool);
        let dir = self.dir.display();
        for option in [
            format!("Dir::Etc::SourceList={dir}/sources.list"),
            "Dir::Etc::SourceParts=/nonexistent".into(),
            format!("Dir::State::Lists={dir}/lists"),
            format!("Dir::Cache={dir}/cache"),
            "Dir::State::status=/dev/null".into(),
            format!("APT::Architecture={}", self.arch.debian()),
            format!("APT::Architectures={}", self.arch.debian()),
            "Acquire::Languages=none".into(),
            // Only the package lists: no AppStream metadata, translations or contents.
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false".into(),
            "Debug::NoLocking=1".into(),
            // Downloads land in target/, which the _apt user may not be able to write.
            "APT::Sandbox::User=root".into(),
        ] {
            command.arg("-o").arg(option);
        }
        command
    }

    fn update(&mut self) -> anyhow::Result<()> {
        if !self.updated {
            eprintln!("kernels: apt-get update ({})", self.dir.display());
            status(self.command("apt-get").args(["update", "-qq"]))?;
            self.updated = true;
        }
        Ok(())
    }

    /// The package `meta` depends on whose name starts with `linux-image-`.
    fn kernel_package(&mut self, meta: &str) -> anyhow::Result<String> {
        self.update()?;
        let text = output(self.command("apt-cache").args(["depends", meta]))?;
        text.lines()
            .filter_map(|line| line.trim().strip_prefix("Depends: "))
            .map(|name| name.split(':').next().unwrap_or(name).to_owned())
            .find(|name| name.starts_with("linux-image-"))
            .with_context(|| format!("{meta} depends on no linux-image package:\n{text}"))
    }

    /// Downloads `packages` and unpacks them all into `into`.
    fn unpack(&mut self, packages: &[String], into: &Path) -> anyhow::Result<()> {
        self.update()?;
        let debs = self.dir.join("debs");
        eprintln!("kernels: downloading {}", packages.join(" "));
        status(
            self.command("apt-get")
                .arg("download")
                .args(packages)
                .current_dir(&debs),
        )?;
        fs::create_dir_all(into)?;
        for entry in fs::read_dir(&debs)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if packages.iter().any(|p| name.starts_with(&format!("{p}_"))) {
                status(Command::new("dpkg-deb").arg("-x").arg(&path).arg(into))?;
                // The unpacked tree is the cache; the archive is not needed again.
                fs::remove_file(&path)?;
            }
        }
        Ok(())
    }
}

/// The unpacked kernel package: `target/kernels/<name>/root`, once.
fn kernel_root(kernel: &Kernel) -> anyhow::Result<PathBuf> {
    let dir = cache().join(kernel.name);
    let root = dir.join("root");
    let done = dir.join("unpacked");
    if done.exists() {
        return Ok(root);
    }
    let _ = fs::remove_dir_all(&root);
    let mut apt = Apt::new(kernel.suite, kernel.arch)?;
    let package = apt.kernel_package(kernel.meta)?;
    apt.unpack(std::slice::from_ref(&package), &root)?;
    fs::write(&done, package)?;
    Ok(root)
}

/// The arm64 userland (busybox, iproute2 and its libraries), once.
fn arm64_userland() -> anyhow::Result<PathBuf> {
    let dir = cache().join("userland-arm64");
    let root = dir.join("root");
    let done = dir.join("unpacked");
    if done.exists() {
        return Ok(root);
    }
    let _ = fs::remove_dir_all(&root);
    let mut apt = Apt::new("bookworm", Arch::Arm64)?;
    let packages: Vec<String> = ARM64_USERLAND.iter().map(|p| (*p).to_owned()).collect();
    apt.unpack(&packages, &root)?;
    fs::write(&done, "")?;
    Ok(root)
}

/// Builds the initramfs for `kernel` with `files` (each copied to `/<name>`, with the
/// libraries it needs), whose init runs `program` then powers off; returns (vmlinuz,
/// initramfs).
fn initramfs(
    kernel: &Kernel,
    files: &[(&Path, &str)],
    program: &str,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let kroot = kernel_root(kernel)?;
    let boot = kroot.join("boot");
    let vmlinuz = fs::read_dir(&boot)
        .with_context(|| format!("{} has no boot/", kroot.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .context("the kernel package has no boot/vmlinuz-*")?;
    let release = vmlinuz
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .trim_start_matches("vmlinuz-")
        .to_owned();
    let modules_dir = existing(&[
        kroot.join("lib/modules").join(&release),
        kroot.join("usr/lib/modules").join(&release),
    ])?;

    let staging = cache().join(kernel.name).join("initramfs");
    let _ = fs::remove_dir_all(&staging);
    for dir in [
        "bin", "usr/sbin", "proc", "sys", "dev", "tmp", "run", "etc", "modules",
    ] {
        fs::create_dir_all(staging.join(dir))?;
    }
    let multiarch = kernel.arch.multiarch();
    let (user, search): (PathBuf, Vec<PathBuf>) = match kernel.arch {
        Arch::Amd64 => (
            "/".into(),
            vec![
                format!("/lib/{multiarch}").into(),
                format!("/usr/lib/{multiarch}").into(),
            ],
        ),
        Arch::Arm64 => {
            let user = arm64_userland()?;
            (
                user.clone(),
                vec![
                    user.join(format!("lib/{multiarch}")),
                    user.join(format!("usr/lib/{multiarch}")),
                    format!("/usr/{multiarch}/lib").into(),
                ],
            )
        }
    };
    let find = |name: &str| {
        let candidates: Vec<PathBuf> = ["bin", "sbin", "usr/bin", "usr/sbin"]
            .iter()
            .map(|dir| user.join(dir).join(name))
            .collect();
        existing(&candidates)
    };
    let busybox = find("busybox")?;
    let ip = find("ip")?;
    let bridge = find("bridge")?;
    copy(&busybox, &staging.join("bin/busybox"))?;
    copy(&ip, &staging.join("usr/sbin/ip"))?;
    copy(&bridge, &staging.join("usr/sbin/bridge"))?;
    for (file, name) in files {
        copy(file, &staging.join(name))?;
    }
    let libdir = staging.join("lib").join(multiarch);
    fs::create_dir_all(&libdir)?;
    let mut carried = BTreeSet::new();
    let binaries = [ip.as_path(), bridge.as_path()];
    for binary in binaries
        .into_iter()
        .chain(files.iter().map(|(file, _)| *file))
    {
        carry_libraries(binary, &search, &libdir, &mut carried)?;
        if let Some(interpreter) = interpreter(binary)? {
            let name = Path::new(&interpreter).file_name().unwrap_or_default();
            let source = search
                .iter()
                .map(|dir| dir.join(name))
                .find(|p| p.exists())
                .with_context(|| format!("no {interpreter} in {search:?}"))?;
            let dest = staging.join(interpreter.trim_start_matches('/'));
            fs::create_dir_all(dest.parent().expect("absolute path"))?;
            copy(&source, &dest)?;
        }
    }

    // The kernel's modules, dependencies first, numbered in load order.
    for (i, (name, path)) in module_order(&modules_dir)?.iter().enumerate() {
        fs::write(
            staging.join(format!("modules/{i:02}-{name}.ko")),
            module_bytes(path)?,
        )?;
    }

    let init = format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/bin LD_LIBRARY_PATH=/lib/{multiarch}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /var && ln -s /run /var/run
mount -t tracefs tracefs /sys/kernel/tracing || mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
for module in /modules/*.ko; do insmod "$module" || echo "insmod $module failed"; done
ip link set lo up
echo "WATCHDOG-GUEST-BOOTED $(uname -r)"
{program}
poweroff -f
"#
    );
    let init_path = staging.join("init");
    fs::write(&init_path, init)?;
    set_mode(&init_path, 0o755)?;

    let image = cache().join(kernel.name).join("initramfs.cpio.gz");
    let file = fs::File::create(&image)?;
    let mut find = Command::new("sh")
        .arg("-c")
        .arg("find . | sort | cpio --quiet -o -H newc -R 0:0 | gzip -1")
        .current_dir(&staging)
        .stdout(file)
        .spawn()
        .context("cannot run find | cpio | gzip (is cpio installed?)")?;
    let done = find.wait()?;
    if !done.success() {
        bail!("packing the initramfs failed: {done}");
    }
    Ok((vmlinuz, image))
}

fn existing(candidates: &[PathBuf]) -> anyhow::Result<PathBuf> {
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .with_context(|| format!("none of {candidates:?} exists"))
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    set_mode(to, 0o755)
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn decompress(tool: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| format!("cannot run {tool}"))?;
    if !out.status.success() {
        bail!("{tool} -dc {} failed", path.display());
    }
    Ok(out.stdout)
}

/// The ELF's NEEDED libraries (`readelf -d`).
fn needed(binary: &Path) -> anyhow::Result<Vec<String>> {
    let text = output(Command::new("readelf").arg("-dW").arg(binary))?;
    Ok(text
        .lines()
        .filter(|line| line.contains("(NEEDED)"))
        .filter_map(|line| Some(line.split('[').nth(1)?.trim_end_matches(']').to_owned()))
        .collect())
}

/// The ELF's program interpreter, if dynamically linked (`readelf -l`).
pub(crate) fn interpreter(binary: &Path) -> anyhow::Result<Option<String>> {
    let text = output(Command::new("readelf").arg("-lW").arg(binary))?;
    Ok(text.lines().find_map(|line| {
        let rest = line.split("program interpreter: ").nth(1)?;
        Some(rest.trim_end_matches(']').to_owned())
    }))
}

/// Copies the libraries `binary` needs, recursively, from `search` into `libdir`.
pub(crate) fn carry_libraries(
    binary: &Path,
    search: &[PathBuf],
    libdir: &Path,
    carried: &mut BTreeSet<String>,
) -> anyhow::Result<()> {
    for name in needed(binary)? {
        if !carried.insert(name.clone()) {
            continue;
        }
        let source = search
            .iter()
            .map(|dir| dir.join(&name))
            .find(|p| p.exists())
            .with_context(|| {
                format!(
                    "{} needs {name}, found in none of {search:?}",
                    binary.display()
                )
            })?;
        // fs::copy follows the symlink: the file lands under its soname.
        copy(&source, &libdir.join(&name))?;
        carry_libraries(&source, search, libdir, carried)?;
    }
    Ok(())
}

/// [`MODULES`] and what they depend on (the `depends=` of each module's `.modinfo`),
/// dependencies first, as (name, path under `modules_dir`); modules built into this kernel
/// are skipped. The package ships no modules.dep (depmod writes it at install).
fn module_order(modules_dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    let mut stack = vec![modules_dir.join("kernel")];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Some(name) = module_name(&path) {
                files.push((name, path));
            }
        }
    }
    fn visit(
        name: &str,
        files: &[(String, PathBuf)],
        order: &mut Vec<(String, PathBuf)>,
    ) -> anyhow::Result<()> {
        if order.iter().any(|(n, _)| n == name) {
            return Ok(());
        }
        let Some((_, path)) = files.iter().find(|(n, _)| n == name) else {
            return Ok(()); // built in
        };
        let bytes = module_bytes(path)?;
        for dep in modinfo(&bytes, "depends")
            .split(',')
            .filter(|d| !d.is_empty())
        {
            visit(&dep.replace('-', "_"), files, order)?;
        }
        order.push((name.to_owned(), path.clone()));
        Ok(())
    }
    let mut order = Vec::new();
    for wanted in MODULES {
        visit(wanted, &files, &mut order)?;
    }
    Ok(order)
}

/// `veth` for `.../veth.ko` or `.../veth.ko.xz`.
fn module_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let (name, rest) = file.split_once(".ko")?;
    matches!(rest, "" | ".xz" | ".zst" | ".gz").then(|| name.replace('-', "_"))
}

/// A module file's bytes, decompressed.
fn module_bytes(path: &Path) -> anyhow::Result<Vec<u8>> {
    let name = path.to_string_lossy();
    if name.ends_with(".xz") {
        decompress("xz", path)
    } else if name.ends_with(".zst") {
        decompress("zstd", path)
    } else if name.ends_with(".gz") {
        decompress("gzip", path)
    } else {
        Ok(fs::read(path)?)
    }
}

/// The value of `key=` in a module's `.modinfo` strings (empty if absent).
fn modinfo(module: &[u8], key: &str) -> String {
    let needle = format!("{key}=");
    module
        .split(|b| *b == 0)
        .find_map(|s| s.strip_prefix(needle.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

/// Boots `kernel` with an initramfs of `files` whose init runs `program` (see
/// [`initramfs`]); returns the JSON the program printed after `marker` on the console,
/// with the boot timings, or fails after `timeout`.
pub fn boot(
    kernel: &Kernel,
    files: &[(&Path, &str)],
    program: &str,
    marker: &str,
    timeout: Duration,
) -> anyhow::Result<Value> {
    let (vmlinuz, initrd) = initramfs(kernel, files, program)?;
    let console_path = cache().join(kernel.name).join("console.log");
    let mut command = match kernel.arch {
        Arch::Amd64 => {
            let mut c = Command::new("qemu-system-x86_64");
            c.args(["-accel", "tcg", "-append", "console=ttyS0 panic=-1 quiet"]);
            c
        }
        Arch::Arm64 => {
            let mut c = Command::new("qemu-system-aarch64");
            c.args([
                "-M",
                "virt",
                "-cpu",
                "max",
                "-append",
                "console=ttyAMA0 panic=-1 quiet",
            ]);
            c
        }
    };
    command
        .args([
            "-m", "1024", "-smp", "2", "-display", "none", "-monitor", "none",
        ])
        .args(["-net", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", console_path.display()))
        .arg("-kernel")
        .arg(&vmlinuz)
        .arg("-initrd")
        .arg(&initrd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    eprintln!("kernels: booting {} ({})", kernel.name, vmlinuz.display());
    let _ = fs::remove_file(&console_path);
    let started = Instant::now();
    let mut child = command.spawn().context("cannot start qemu")?;
    let mut booted_ms = None;
    let timed_out = loop {
        let console = fs::read_to_string(&console_path).unwrap_or_default();
        if booted_ms.is_none() && console.contains("WATCHDOG-GUEST-BOOTED") {
            booted_ms = Some(started.elapsed().as_millis() as u64);
        }
        if child.try_wait()?.is_some() {
            break false;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break true;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let console = fs::read_to_string(&console_path).unwrap_or_default();
    let line = console
        .lines()
        .find_map(|line| line.trim().strip_prefix(marker));
    let mut result: Value = match line {
        // The object alone: the kernel's own messages share the console, and one written
        // while the line's last bytes were still queued lands after it on the same line
        // (`[ 41.38] reboot: Power down`).
        Some(json) => serde_json::Deserializer::from_str(json)
            .into_iter::<Value>()
            .next()
            .transpose()
            .ok()
            .flatten()
            .with_context(|| format!("the guest's result is not JSON: {json}"))?,
        None => {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                use std::io::Read as _;
                let _ = pipe.read_to_string(&mut stderr);
            }
            let tail: Vec<&str> = console.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "{}: no result from the guest{} after {:?}; qemu: {stderr}\nconsole:\n{}",
                kernel.name,
                if timed_out { " (timed out)" } else { "" },
                started.elapsed(),
                tail.join("\n")
            );
        }
    };
    result["boot_ms"] = Value::from(booted_ms);
    result["total_ms"] = Value::from(started.elapsed().as_millis() as u64);
    Ok(result)
}

/// Prints the results as a table (stderr, so it shows in test output).
pub fn print_table(results: &[Value]) {
    let mut out = std::io::stderr().lock();
    let row = |cells: [String; 13]| {
        format!(
            "{:<15} {:<25} {:>4} {:>6} {:>7} {:>7} {:>11} {:>15} {:>11} {:>11} {:>6} {:>6}  {}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            cells[6],
            cells[7],
            cells[8],
            cells[9],
            cells[10],
            cells[11],
            cells[12]
        )
    };
    let header = [
        "kernel",
        "release",
        "page",
        "boot s",
        "ready s",
        "RSS MiB",
        "peak/idle",
        "drops",
        "peers tx/rx",
        "tcp a/f/syn",
        "ghost",
        "stop",
        "features on",
    ];
    let _ = writeln!(out, "{}", row(header.map(str::to_owned)));
    for r in results {
        let n = |v: &Value| v.as_u64().map_or("-".into(), |v| v.to_string());
        let secs = |v: &Value| {
            v.as_u64()
                .map_or("-".into(), |ms| format!("{:.1}", ms as f64 / 1000.0))
        };
        let features: Vec<&str> = r["features"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, v)| v.as_f64() == Some(1.0))
            .map(|(k, _)| k.as_str())
            .collect();
        let tcp = &r["peers"]["tcp"];
        let cells = [
            r["name"].as_str().unwrap_or("?").to_owned(),
            r["kernel"].as_str().unwrap_or("-").to_owned(),
            r["page_size"]
                .as_u64()
                .map_or("-".into(), |p| format!("{}K", p / 1024)),
            secs(&r["boot_ms"]),
            secs(&r["ready_ms"]),
            r["rss_kib"]
                .as_u64()
                .map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
            match (
                r["footprint"]["peak_kib"].as_u64(),
                r["footprint"]["resident_kib"].as_u64(),
            ) {
                (Some(peak), Some(idle)) => {
                    format!("{:.1}/{:.1}", peak as f64 / 1024.0, idle as f64 / 1024.0)
                }
                _ => "-".into(),
            },
            format!(
                "{}/{} {}",
                n(&r["drops"]["counted"]),
                n(&r["drops"]["sent"]),
                r["drops"]["reason"].as_str().unwrap_or("")
            ),
            format!("{}/{}", n(&r["peers"]["tx"]), n(&r["peers"]["rx"])),
            format!(
                "{}/{}/{}",
                n(&tcp["attempted"]),
                n(&tcp["failed"]),
                n(&tcp["syn_retransmits"])
            ),
            if r["ghost_vtep"]["named"] == true {
                "named"
            } else {
                "-"
            }
            .to_owned(),
            r["shutdown"]["exit_code"]
                .as_i64()
                .map_or("-".into(), |c| format!("exit {c}")),
            features.join(" "),
        ];
        let _ = writeln!(out, "{}", row(cells));
        for error in r["errors"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "    error: {}", error.as_str().unwrap_or_default());
        }
    }
    print_programs(&mut out, results);
}

/// Each program's size in each kernel, as the guest read it with bpf(2): the per-packet
/// cost figure on machines whose time an emulated CPU cannot measure (arm64 code is 4
/// bytes per instruction).
fn print_programs(out: &mut impl std::io::Write, results: &[Value]) {
    let _ = writeln!(
        out,
        "\nprograms (xlated: instructions after the verifier's rewrites; jited: bytes of \
         machine code; verified: instructions the verifier processed, 5.16+):"
    );
    for r in results {
        let name = r["name"].as_str().unwrap_or("?");
        for (program, size) in r["programs"].as_object().into_iter().flatten() {
            let n = |v: &Value| v.as_u64().map_or("n/a".into(), |v| v.to_string());
            let _ = writeln!(
                out,
                "  {name:<15} {program:<16} xlated {:>5} insns  jited {:>6} bytes  verified {:>6}",
                n(&size["xlated_insns"]),
                n(&size["jited_bytes"]),
                n(&size["verified_insns"]),
            );
        }
    }
}
