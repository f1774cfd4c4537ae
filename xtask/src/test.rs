//! `cargo xtask test`: `cargo test --workspace --no-fail-fast`, its output passed through,
//! then one line per test binary (passed, failed, ignored, time), so a failure in one
//! binary neither hides the others' results nor scrolls away.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::kernels::Arch;

/// Tests run at once in each binary (`RUST_TEST_THREADS`, unless set): the lab tests
/// mostly wait (their daemons' cycles, traffic, polls), and the kernel matrix and the
/// image tests wait minutes for release builds; with one per core, two such waits left
/// the machine idle.
pub const THREADS: &str = "4";

/// One test binary's result, from cargo's `Running …` line and the harness's
/// `test result: …` line.
#[derive(Debug, PartialEq)]
struct Binary {
    /// e.g. `watchdog-tests tests/suite/main.rs`, `watchdog unittests src/lib.rs`.
    name: String,
    /// `None` when the binary printed no result (it crashed or was killed).
    result: Option<Outcome>,
}

#[derive(Debug, PartialEq)]
struct Outcome {
    ok: bool,
    passed: u64,
    failed: u64,
    ignored: u64,
    /// As the harness printed it, e.g. `12.34s`.
    time: String,
}

/// The release builds the suite's lab tests make (`cargo xtask build --target aarch64-…`,
/// `cargo xtask image`, `cargo xtask kernels`) and the memory bench after it, in the order
/// the suite reaches them. `cargo xtask prebuild` runs them; the tests' own builds then find
/// them done (the same commands through the same functions, so the same fingerprints).
pub fn prebuild() -> anyhow::Result<()> {
    for arch in [Arch::Arm64, Arch::Amd64] {
        crate::setup::build_tools(arch.rust_target())?;
        crate::util::build_release(arch.rust_target())?;
    }
    for (arch, helper) in [
        (Arch::Amd64, "kernel_guest"),
        (Arch::Arm64, "kernel_guest"),
        (Arch::Amd64, "memory_guest"),
    ] {
        crate::kernels::build_helper(arch, helper)?;
    }
    Ok(())
}

/// `cargo xtask prebuild` started beside `cargo test`: while cargo builds the test profile
/// it runs at the lowest priority (on the cycles that build leaves idle: its serial
/// stretches, linking, the eBPF object); once the tests run, at normal priority, so the
/// release builds are done or well on their way when the first lab test needs one. Before,
/// the suite's image and deploy tests started them minutes into the run and all its
/// threads then waited on the 9-minute build with the machine otherwise idle.
pub struct Prebuild {
    child: Child,
    /// Its process group (its own pid): the cargo and rustc processes it starts are in it.
    group: u32,
    log: PathBuf,
    started: Instant,
}

impl Prebuild {
    pub fn start() -> anyhow::Result<Self> {
        let log = crate::util::root().join("target/xtask-prebuild.log");
        std::fs::create_dir_all(log.parent().expect("target/")).context("target/")?;
        let file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut command = Command::new(std::env::current_exe().context("current_exe")?);
        command
            .arg("prebuild")
            .stdin(Stdio::null())
            .stdout(file.try_clone().context("dup")?)
            .stderr(file)
            .process_group(0);
        // SAFETY: setpriority is async-signal-safe; nothing else runs in the child.
        unsafe {
            command.pre_exec(|| {
                libc::setpriority(libc::PRIO_PROCESS, 0, 19);
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {command:?}"))?;
        let group = child.id();
        eprintln!(
            "xtask: release builds for the lab tests started in the background (log: {})",
            log.display()
        );
        Ok(Self {
            child,
            group,
            log,
            started: Instant::now(),
        })
    }

    /// Normal priority for the whole group (root may raise a priority; otherwise it stays
    /// low, which only makes it slower).
    fn renice(group: u32) {
        // SAFETY: plain system call on a process group we started.
        unsafe { libc::setpriority(libc::PRIO_PGRP, group, 0) };
    }

    /// Waits for it (stops it first when `stop`: cargo test failed and nothing will use
    /// it); its one summary line, or an error with the log's end.
    fn finish(mut self, stop: bool) -> anyhow::Result<String> {
        if stop && self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: a signal to the process group we started (its own pid).
            unsafe { libc::kill(-(self.group as libc::pid_t), libc::SIGTERM) };
        }
        let status = self.child.wait().context("waiting for the prebuild")?;
        let line = format!(
            "  {:<6} {:<52} {:>34.0?}",
            if status.success() { "ok" } else { "FAILED" },
            "release builds for the lab tests (background)",
            self.started.elapsed()
        );
        if !status.success() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            bail!(
                "{line}\n`cargo xtask prebuild` failed ({status}); the end of {}:\n{tail}",
                self.log.display()
            );
        }
        Ok(line)
    }
}

/// Whether `cargo test` with these arguments runs the whole suite (no filter, no package
/// or test selection): only then are the release builds worth starting.
pub fn runs_everything(args: &[String]) -> bool {
    args.iter().all(|arg| arg.starts_with('-'))
}

/// Runs `command` (a `cargo test`), echoing every line, and prints the summary; fails when
/// cargo does. With `prebuild`, raises its priority when the first test binary runs and
/// waits for it at the end.
pub fn run(mut command: Command, prebuild: Option<Prebuild>) -> anyhow::Result<()> {
    let (reader, writer) = std::io::pipe().context("pipe")?;
    command
        .stdout(writer.try_clone().context("pipe")?)
        .stderr(writer);
    let started = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {command:?}"))?;
    // Our copies of the writing end go: the pipe ends when cargo and what it ran exit.
    drop(command);
    let binaries = Arc::new(Mutex::new(Vec::new()));
    let mut low_priority = prebuild.as_ref().map(|p| p.group);
    let echo = std::thread::spawn({
        let binaries = binaries.clone();
        move || {
            let mut out = std::io::stdout().lock();
            for line in BufReader::new(reader).lines().map_while(Result::ok) {
                let _ = writeln!(out, "{line}");
                let mut binaries = binaries.lock().unwrap_or_else(PoisonError::into_inner);
                parse(&line, &mut binaries);
                if !binaries.is_empty()
                    && let Some(group) = low_priority.take()
                {
                    Prebuild::renice(group);
                }
            }
        }
    });
    let status = child.wait().context("waiting for cargo test")?;
    // A process a test left behind may still hold the pipe: do not wait for it long.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !echo.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let prebuilt = prebuild.map(|p| p.finish(!status.success()));
    let binaries = binaries.lock().unwrap_or_else(PoisonError::into_inner);
    println!(
        "\ncargo xtask test: {} test binaries, {:.0?} in all",
        binaries.len(),
        started.elapsed()
    );
    for binary in binaries.iter() {
        println!("{}", summary_line(binary));
    }
    let prebuilt = prebuilt.transpose();
    if let Ok(Some(line)) = &prebuilt {
        println!("{line}");
    }
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
    prebuilt?;
    Ok(())
}

/// Feeds one line of cargo test's output.
fn parse(line: &str, binaries: &mut Vec<Binary>) {
    let line = line.trim();
    if let Some(rest) = line.strip_prefix("Running ") {
        // `Running unittests src/lib.rs (target/debug/deps/watchdog-d4e1a697aaf98a53)`
        let (source, path) = rest.rsplit_once(" (").unwrap_or((rest, ""));
        let file = path.trim_end_matches(')').rsplit('/').next().unwrap_or("");
        let package = file.rsplit_once('-').map_or(file, |(name, _hash)| name);
        binaries.push(Binary {
            name: format!("{package} {source}"),
            result: None,
        });
    } else if let Some(rest) = line.strip_prefix("Doc-tests ") {
        binaries.push(Binary {
            name: format!("{rest} doc-tests"),
            result: None,
        });
    } else if let Some(rest) = line.strip_prefix("test result: ") {
        let Some(binary) = binaries.last_mut().filter(|b| b.result.is_none()) else {
            return;
        };
        binary.result = outcome(rest);
    }
}

/// `ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.52s`
fn outcome(text: &str) -> Option<Outcome> {
    let (verdict, counts) = text.split_once(". ")?;
    let number = |what: &str| {
        counts
            .split(';')
            .find_map(|part| part.trim().strip_suffix(what)?.trim().parse().ok())
    };
    let time = counts
        .split(';')
        .find_map(|part| part.trim().strip_prefix("finished in "))?
        .to_owned();
    Some(Outcome {
        ok: verdict == "ok",
        passed: number("passed")?,
        failed: number("failed")?,
        ignored: number("ignored")?,
        time,
    })
}

fn summary_line(binary: &Binary) -> String {
    match &binary.result {
        Some(r) => format!(
            "  {:<6} {:<52} {:>4} passed {:>3} failed {:>3} ignored {:>9}",
            if r.ok { "ok" } else { "FAILED" },
            binary.name,
            r.passed,
            r.failed,
            r.ignored,
            r.time
        ),
        None => format!(
            "  {:<6} {:<52} no result (the binary crashed or was killed)",
            "FAILED", binary.name
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_binary_with_its_counts() {
        let output = "\
   Compiling watchdog v0.1.0 (/w/watchdog)
     Running unittests src/lib.rs (target/debug/deps/watchdog-d4e1a697aaf98a53)

running 2 tests
test a ... ok
test b ... ignored

test result: ok. 1 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.52s

     Running tests/suite/main.rs (target/debug/deps/suite-2d630356a0b10927)

running 3 tests
test drops::x ... FAILED
test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 812.03s

     Running unittests src/main.rs (target/debug/deps/kernel_guest-efacf22357419215)
error: test failed, to rerun pass `-p watchdog-tests --bin kernel_guest`
   Doc-tests watchdog_common

running 0 tests

test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s
";
        let mut binaries = Vec::new();
        for line in output.lines() {
            parse(line, &mut binaries);
        }
        let lines: Vec<String> = binaries.iter().map(summary_line).collect();
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert_eq!(
            binaries[0],
            Binary {
                name: "watchdog unittests src/lib.rs".into(),
                result: Some(Outcome {
                    ok: true,
                    passed: 1,
                    failed: 0,
                    ignored: 1,
                    time: "0.52s".into()
                })
            }
        );
        assert!(lines[1].starts_with("  FAILED suite tests/suite/main.rs"));
        assert!(lines[1].contains("   2 passed   1 failed   0 ignored   812.03s"));
        assert!(lines[2].contains("kernel_guest unittests src/main.rs"));
        assert!(lines[2].contains("no result"));
        assert!(lines[3].starts_with("  ok     watchdog_common doc-tests"));
    }
}
