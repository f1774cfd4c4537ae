//! `cargo xtask image`: the container image for linux/amd64 and linux/arm64, built here
//! with buildah from `deploy/Containerfile` (`FROM scratch`), no registry involved.
//!
//! Each image holds the release binary (cross-compiled for arm64) and exactly the shared
//! libraries it links, with the dynamic loader at its usual path. Tags:
//! `localhost/watchdog:<version>-<arch>`, and a manifest list `localhost/watchdog:<version>`
//! that names both.
//!
//! `cargo xtask seccomp` writes `deploy/seccomp/watchdog.json`: the container runtime's
//! default profile with `bpf` and `perf_event_open` allowed (the default allows them only
//! with CAP_SYS_ADMIN, which the DaemonSet does not grant).

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::{
    kernels::{carry_libraries, interpreter},
    setup::AARCH64,
    util::{output, root, status},
};

/// The version the images are tagged with (the workspace's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The runtime default profile the shipped one is derived from (Debian's
/// golang-github-containers-common, which podman, buildah and CRI-O use).
const RUNTIME_DEFAULT: &str = "/usr/share/containers/seccomp.json";

/// The system calls the daemon needs that the runtime default allows only with
/// CAP_SYS_ADMIN: loading programs and maps, and attaching tracepoints.
pub const EXTRA_SYSCALLS: &[&str] = &["bpf", "perf_event_open"];

/// Where the shipped profile lives.
pub fn seccomp_path() -> PathBuf {
    root().join("deploy/seccomp/watchdog.json")
}

/// Builds both images; prints their tags and sizes.
pub fn run(arches: &[String]) -> anyhow::Result<()> {
    let arches: Vec<&str> = if arches.is_empty() {
        vec!["amd64", "arm64"]
    } else {
        arches.iter().map(String::as_str).collect()
    };
    let context = root().join("target/image");
    let mut tags = Vec::new();
    for arch in &arches {
        let (target, multiarch, libs): (Option<&str>, &str, Vec<PathBuf>) = match *arch {
            "amd64" => (
                None,
                "x86_64-linux-gnu",
                vec![
                    "/lib/x86_64-linux-gnu".into(),
                    "/usr/lib/x86_64-linux-gnu".into(),
                ],
            ),
            "arm64" => (
                Some(AARCH64),
                "aarch64-linux-gnu",
                vec!["/usr/aarch64-linux-gnu/lib".into()],
            ),
            other => bail!("--arch {other}: the image is built for amd64 and arm64"),
        };
        crate::setup::build_tools(target)?;
        let binary = crate::util::build_release(target)?;
        let rootfs = context.join(arch);
        let _ = fs::remove_dir_all(&rootfs);
        fs::create_dir_all(rootfs.join("usr/local/bin"))?;
        let libdir = rootfs.join("lib").join(multiarch);
        fs::create_dir_all(&libdir)?;
        fs::copy(&binary, rootfs.join("usr/local/bin/watchdog"))?;
        carry_libraries(&binary, &libs, &libdir, &mut BTreeSet::new())?;
        if let Some(loader) = interpreter(&binary)? {
            let name = Path::new(&loader).file_name().unwrap_or_default();
            let source = libs
                .iter()
                .map(|dir| dir.join(name))
                .find(|p| p.exists())
                .with_context(|| format!("no {loader} in {libs:?}"))?;
            let dest = rootfs.join(loader.trim_start_matches('/'));
            fs::create_dir_all(dest.parent().expect("absolute"))?;
            fs::copy(source, &dest)?;
            // libc names the loader too: one copy, the other a link to it.
            let carried = libdir.join(name);
            if carried.exists() && carried != dest {
                fs::remove_file(&carried)?;
                std::os::unix::fs::symlink(&loader, &carried)?;
            }
        }
        let tag = format!("localhost/watchdog:{VERSION}-{arch}");
        eprintln!("image: building {tag}");
        status(
            Command::new("buildah")
                .args(["build", "--quiet", "--platform"])
                .arg(format!("linux/{arch}"))
                .arg("--build-arg")
                .arg(format!("VERSION={VERSION}"))
                .arg("--file")
                .arg(root().join("deploy/Containerfile"))
                .args(["--tag", &tag])
                .arg(&context),
        )?;
        tags.push(tag);
    }
    let list = format!("localhost/watchdog:{VERSION}");
    // A manifest list naming every arch's image (replaced if it exists).
    let _ = Command::new("buildah")
        .args(["manifest", "rm", &list])
        .output();
    status(Command::new("buildah").args(["manifest", "create", &list]))?;
    for tag in &tags {
        status(Command::new("buildah").args(["manifest", "add", &list, tag]))?;
    }
    // The previous build of a tag is left untagged: remove ours, nobody else's.
    let _ = Command::new("podman")
        .args(["image", "prune", "--force", "--filter"])
        .arg("label=org.opencontainers.image.title=watchdog")
        .output();
    for tag in &tags {
        let size: u64 = output(Command::new("podman").args([
            "image",
            "inspect",
            "--format",
            "{{.Size}}",
            tag,
        ]))?
        .trim()
        .parse()
        .unwrap_or(0);
        println!("{tag}: {:.1} MB ({size} bytes)", size as f64 / 1e6);
    }
    println!("{list}: manifest list of {}", tags.join(", "));
    Ok(())
}

/// `deploy/seccomp/watchdog.json` from the runtime default profile.
pub fn write_seccomp() -> anyhow::Result<()> {
    let text = fs::read_to_string(RUNTIME_DEFAULT).with_context(|| {
        format!("cannot read the runtime default profile {RUNTIME_DEFAULT} (cargo xtask setup installs podman)")
    })?;
    let default: Value = serde_json::from_str(&text)?;
    let profile = seccomp_profile(&default)?;
    let path = seccomp_path();
    fs::create_dir_all(path.parent().expect("in deploy/"))?;
    fs::write(&path, serde_json::to_string_pretty(&profile)? + "\n")?;
    eprintln!("seccomp: wrote {}", path.display());
    Ok(())
}

/// The runtime default with [`EXTRA_SYSCALLS`] taken out of every rule and allowed by one
/// rule of their own, whatever the capabilities.
pub fn seccomp_profile(default: &Value) -> anyhow::Result<Value> {
    let mut profile = default.clone();
    let rules = profile["syscalls"]
        .as_array_mut()
        .context("the default profile has no syscalls array")?;
    for rule in rules.iter_mut() {
        if let Some(names) = rule["names"].as_array_mut() {
            names.retain(|name| !EXTRA_SYSCALLS.contains(&name.as_str().unwrap_or_default()));
        }
    }
    rules.retain(|rule| {
        rule["names"]
            .as_array()
            .is_some_and(|names| !names.is_empty())
    });
    rules.push(json!({
        "names": EXTRA_SYSCALLS,
        "action": "SCMP_ACT_ALLOW",
        "comment": "watchdog: load eBPF programs and maps (CAP_BPF), attach tracepoints (CAP_PERFMON)"
    }));
    Ok(profile)
}
