//! Small helpers for running commands.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

/// `cargo` as invoked us, run from the workspace root, without the package variables
/// `cargo run` set for xtask (see [`watchdog_tests::cargo`]: a build from here and one from
/// a shell or a test then see the same environment and share their artifacts).
pub fn cargo() -> Command {
    let mut command = watchdog_tests::cargo();
    command.current_dir(root());
    command
}

/// Runs `command`, failing unless it exits 0.
pub fn status(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}

/// Runs `command` and returns its standard output, failing unless it exits 0.
pub fn output(command: &mut Command) -> anyhow::Result<String> {
    let output = command
        .output()
        .with_context(|| format!("cannot start {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Builds the daemon in release mode and returns the binary's path.
pub fn build_daemon() -> anyhow::Result<PathBuf> {
    build_release(None)
}

/// Builds the release daemon for `target` (the host's if `None`); returns its path.
pub fn build_release(target: Option<&str>) -> anyhow::Result<PathBuf> {
    eprintln!(
        "xtask: building the daemon (release, {})",
        target.unwrap_or("host")
    );
    build_release_of(&root(), target)
}

/// Builds the release daemon of the workspace at `src` (this one, or another revision's
/// checkout) for `target` in this workspace's target directory; returns the binary's path
/// there (the next build of the daemon for `target` replaces it).
pub fn build_release_of(src: &Path, target: Option<&str>) -> anyhow::Result<PathBuf> {
    let mut command = cargo();
    command
        .current_dir(src)
        .env("CARGO_TARGET_DIR", root().join("target"));
    command.args([
        "build",
        "--release",
        "--package",
        "watchdog",
        "--bin",
        "watchdog",
    ]);
    let mut dir = root().join("target");
    if let Some(target) = target {
        command.args(["--target", target]);
        if target.starts_with("aarch64-") {
            command.env(
                "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER",
                "aarch64-linux-gnu-gcc",
            );
        }
        dir = dir.join(target);
    }
    status(&mut command)?;
    Ok(dir.join("release/watchdog"))
}

/// Builds `watchdog/examples/<name>.rs` in release mode; returns its path.
pub fn build_example(name: &str) -> anyhow::Result<PathBuf> {
    eprintln!("xtask: building the {name} helper (release)");
    status(cargo().args([
        "build",
        "--release",
        "--package",
        "watchdog",
        "--example",
        name,
    ]))?;
    Ok(root().join("target/release/examples").join(name))
}

/// Replaces this process with `command` (so signals reach it directly).
pub fn exec(mut command: Command) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt as _;
    let err = command.exec();
    Err(err).with_context(|| format!("cannot run {command:?}"))
}

/// HEAD's commit (12 digits), and whether the working tree differs from it: what a bench
/// or the kernel matrix built.
pub fn revision() -> String {
    let git = |args: &[&str]| output(Command::new("git").arg("-C").arg(root()).args(args));
    let head = git(&["rev-parse", "HEAD"])
        .map(|h| h.trim().chars().take(12).collect::<String>())
        .unwrap_or_else(|_| "?".into());
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_ok_and(|s| !s.trim().is_empty());
    format!("{head}{}", if dirty { " with changes" } else { "" })
}
