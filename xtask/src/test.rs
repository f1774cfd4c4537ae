//! `cargo xtask test`: `cargo test --workspace --no-fail-fast`, its output passed through,
//! then one line per test binary (passed, failed, ignored, time), so a failure in one
//! binary neither hides the others' results nor scrolls away.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::Command,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

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

/// Runs `command` (a `cargo test`), echoing every line, and prints the summary; fails when
/// cargo does.
pub fn run(mut command: Command) -> anyhow::Result<()> {
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
    let echo = std::thread::spawn({
        let binaries = binaries.clone();
        move || {
            let mut out = std::io::stdout().lock();
            for line in BufReader::new(reader).lines().map_while(Result::ok) {
                let _ = writeln!(out, "{line}");
                parse(
                    &line,
                    &mut binaries.lock().unwrap_or_else(PoisonError::into_inner),
                );
            }
        }
    });
    let status = child.wait().context("waiting for cargo test")?;
    // A process a test left behind may still hold the pipe: do not wait for it long.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !echo.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let binaries = binaries.lock().unwrap_or_else(PoisonError::into_inner);
    println!(
        "\ncargo xtask test: {} test binaries, {:.0?} in all",
        binaries.len(),
        started.elapsed()
    );
    for binary in binaries.iter() {
        println!("{}", summary_line(binary));
    }
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
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
