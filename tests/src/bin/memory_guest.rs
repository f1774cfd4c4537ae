//! Measures the daemon's memory rows (`watchdog_tests::memory`) for one or more daemon
//! binaries, on this host (`cargo xtask bench memory`) or as the program of a kernel
//! matrix guest (qemu), and prints one line `WATCHDOG-MEMORY-RESULT {json}`.
//!
//! ```text
//! memory_guest run --daemon LABEL=PATH [--daemon LABEL=PATH]...
//!     [--rows default,churn,nodes,pods,connections] [--idle SECONDS] [--churn SECONDS]
//!     [--nodes N] [--pods N] [--connections N] [--rounds R] [--steps]
//! memory_guest measure ROW [the same settings]
//! ```
//!
//! `run` measures every row with every daemon, each in a process of its own (`measure`,
//! with `WATCHDOG_BIN` naming the daemon), the daemons' order alternating from row to row
//! and round to round so a drifting machine favours none. `--steps` adds the first
//! daemon's start-up, step by step (its debug log). A row that fails is reported in
//! `errors`; the others still run.

use std::{process::Command, time::Duration};

use serde_json::{Value, json};
use watchdog_tests::memory::{self, Settings};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("run") => run(&args[1..]),
        Some("measure") if args.len() >= 2 => {
            let settings = settings(&args[2..]).unwrap_or_else(|e| fail(&e));
            match memory::measure(&args[1], &settings) {
                Ok(value) => {
                    println!("{value}");
                    return;
                }
                Err(e) => fail(&e),
            }
        }
        _ => fail("usage: memory_guest run --daemon LABEL=PATH… | memory_guest measure ROW"),
    };
    println!("WATCHDOG-MEMORY-RESULT {result}");
}

fn fail(why: &str) -> ! {
    eprintln!("memory_guest: {why}");
    std::process::exit(2)
}

/// The value after `--name` in `args`, each time it is given.
fn values<'a>(args: &'a [String], name: &str) -> Vec<&'a str> {
    args.windows(2)
        .filter(|pair| pair[0] == name)
        .map(|pair| pair[1].as_str())
        .collect()
}

fn number(args: &[String], name: &str, default: u64) -> Result<u64, String> {
    match values(args, name).last() {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| format!("{name} {v}: not a number")),
    }
}

fn settings(args: &[String]) -> Result<Settings, String> {
    Ok(Settings {
        idle: Duration::from_secs(number(args, "--idle", 60)?),
        churn: Duration::from_secs(number(args, "--churn", 600)?),
        nodes: number(args, "--nodes", 1000)? as usize,
        pods: number(args, "--pods", 500)? as usize,
        connections: number(args, "--connections", 2000)? as usize,
    })
}

fn run(args: &[String]) -> Value {
    let settings = settings(args).unwrap_or_else(|e| fail(&e));
    let daemons: Vec<(&str, &str)> = values(args, "--daemon")
        .into_iter()
        .map(|d| {
            d.split_once('=')
                .unwrap_or_else(|| fail("--daemon LABEL=PATH"))
        })
        .collect();
    if daemons.is_empty() {
        fail("no --daemon LABEL=PATH");
    }
    let rows: Vec<&str> = match values(args, "--rows").last() {
        Some(rows) => rows.split(',').collect(),
        None => memory::ROWS.iter().map(|(name, _)| *name).collect(),
    };
    let rounds = number(args, "--rounds", 1)
        .unwrap_or_else(|e| fail(&e))
        .max(1);
    let exe = std::env::current_exe().expect("this program's path");
    let mut result = json!({
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        "machine": std::env::consts::ARCH,
        // SAFETY: sysconf has no preconditions.
        "page_size": unsafe { libc::sysconf(libc::_SC_PAGESIZE) },
        "settings": {
            "idle_s": settings.idle.as_secs(),
            "churn_s": settings.churn.as_secs(),
            "nodes": settings.nodes,
            "pods": settings.pods,
            "connections": settings.connections,
            "rounds": rounds,
            "scrape_every_s": memory::SCRAPE_EVERY.as_secs(),
        },
        "daemons": daemons.iter().map(|(label, path)| json!({
            "label": label,
            "path": path,
            "bytes": std::fs::metadata(path).map(|m| m.len()).ok(),
        })).collect::<Vec<_>>(),
        "rows": {},
    });
    let mut errors: Vec<String> = Vec::new();
    if args.iter().any(|a| a == "--steps") {
        // SAFETY: single-threaded here; read once by `daemon_binary`.
        unsafe { std::env::set_var("WATCHDOG_BIN", daemons[0].1) };
        result["steps"] = memory::start_up_steps();
    }
    let mut turn = 0usize;
    for round in 0..rounds {
        for row in &rows {
            // Alternate which daemon goes first, row after row, round after round.
            let mut order: Vec<&(&str, &str)> = daemons.iter().collect();
            order.rotate_left(turn % daemons.len());
            turn += 1;
            for (label, path) in order {
                eprintln!("memory_guest: round {} row {row}: {label}", round + 1);
                let output = Command::new(&exe)
                    .arg("measure")
                    .arg(row)
                    .args(args)
                    .env("WATCHDOG_BIN", path)
                    .output()
                    .expect("run memory_guest measure");
                let stdout = String::from_utf8_lossy(&output.stdout);
                let parsed = stdout
                    .lines()
                    .last()
                    .and_then(|line| serde_json::from_str::<Value>(line).ok());
                match parsed {
                    Some(value) if output.status.success() => {
                        let cell = &mut result["rows"][row][label];
                        if cell.is_null() {
                            *cell = json!([]);
                        }
                        cell.as_array_mut().expect("a list").push(value);
                    }
                    _ => {
                        let stderr = String::from_utf8_lossy(&output.stderr);
                        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
                        let tail: Vec<&str> = tail.into_iter().rev().collect();
                        errors.push(format!(
                            "{row} with {label} ({}): {}",
                            output.status,
                            tail.join("\n")
                        ));
                    }
                }
            }
        }
    }
    result["errors"] = json!(errors);
    result
}
