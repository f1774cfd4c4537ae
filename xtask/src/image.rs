//! `cargo xtask image`: the container image for linux/amd64 and linux/arm64, built here
//! with buildah from `deploy/Containerfile` (`FROM scratch`), no registry involved.
//!
//! Each image holds the release binary (cross-compiled for arm64) and exactly the shared
//! libraries it links, with the dynamic loader at its usual path. Tags:
//! `<name>-<arch>` and a manifest list `<name>` that names both (`<name>` is
//! `localhost/watchdog:<version>` unless `--name` says otherwise, the DaemonSet's image).
//! `--push` copies the list and both images to a registry (or any containers transport);
//! `--save` writes them to one OCI archive that containerd's `ctr images import` names
//! `<name>` (a node without a registry: `k3s ctr images import`).

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::{
    kernels::{carry_libraries, interpreter},
    setup::AARCH64,
    util::{output, root, status},
};

/// The version the images are tagged with (the workspace's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The manifest list's name unless `--name` is given: the DaemonSet's image.
pub fn default_name() -> String {
    format!("localhost/watchdog:{VERSION}")
}

/// `name` with a tag (`:<version>` when it has none).
fn tagged(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') || last.contains('@') {
        name.to_owned()
    } else {
        format!("{name}:{VERSION}")
    }
}

/// Builds both images and the manifest list `name`; prints their tags and sizes and
/// returns the list's name.
pub fn run(arches: &[String], name: &str) -> anyhow::Result<String> {
    let list = tagged(name);
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
        let tag = format!("{list}-{arch}");
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
    Ok(list)
}

/// The transports `containers-transports(5)` names; a destination without one is a registry.
const TRANSPORTS: &[&str] = &[
    "docker://",
    "oci:",
    "oci-archive:",
    "dir:",
    "docker-archive:",
    "containers-storage:",
];

/// Pushes the manifest list `list` and every image it names to `destination`.
pub fn push(list: &str, destination: &str, insecure: bool) -> anyhow::Result<()> {
    let destination = if TRANSPORTS.iter().any(|t| destination.starts_with(t)) {
        destination.to_owned()
    } else {
        format!("docker://{destination}")
    };
    let mut command = Command::new("podman");
    command.args(["manifest", "push", "--all", "--quiet"]);
    if insecure {
        command.arg("--tls-verify=false");
    }
    status(command.arg(list).arg(&destination))
        .with_context(|| format!("cannot push {list} to {destination}"))?;
    println!("{list}: pushed to {destination}");
    Ok(())
}

/// Writes `list` and every image it names to the OCI archive `file`, named `list` in its
/// index (the `org.opencontainers.image.ref.name` annotation, which `ctr images import`
/// keeps as the image's name when it is a full reference, and `podman load` too).
pub fn save(list: &str, file: &Path) -> anyhow::Result<()> {
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    // oci-archive adds to an existing archive's index: start from nothing.
    let _ = fs::remove_file(file);
    push(
        list,
        &format!("oci-archive:{}:{list}", file.display()),
        false,
    )?;
    let index: Value = serde_json::from_str(&output(
        Command::new("tar").arg("-xOf").arg(file).arg("index.json"),
    )?)
    .with_context(|| format!("{}: index.json", file.display()))?;
    let named = index["manifests"].as_array().is_some_and(|m| {
        m.iter()
            .any(|d| d["annotations"]["org.opencontainers.image.ref.name"] == list)
    });
    if !named {
        bail!(
            "{}: its index does not name {list}: {index}",
            file.display()
        );
    }
    let size = fs::metadata(file)?.len();
    println!(
        "{}: {list}, {:.1} MB; on a node without a registry: `k3s ctr images import {}` \
         (or `ctr -n k8s.io images import`)",
        file.display(),
        size as f64 / 1e6,
        file.file_name().unwrap_or_default().to_string_lossy()
    );
    Ok(())
}
