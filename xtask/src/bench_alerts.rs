//! `cargo xtask bench alerts`: an alert's retries, timed. `watchdog alert test` delivers a
//! test alert the way the daemon's sinks do (a webhook POST; a transient failure retried
//! after `backoff` x 2^retry, scaled by jitter into [50 %, 100 %] of that) to a local
//! receiver that answers 500 to the first `--failures` posts of a run and 200 after. The
//! gaps between one run's attempts, per retry, over `--runs`: median, min, max, against the
//! window the backoff allows.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpListener,
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use watchdog_tests::TempDir;

use crate::util;

pub fn run(runs: u32, failures: u32, backoff_ms: u64) -> anyhow::Result<()> {
    if runs == 0 || failures == 0 {
        bail!("--runs and --failures must be at least 1");
    }
    let listener = TcpListener::bind("127.0.0.1:0").context("bind the receiver")?;
    let port = listener.local_addr()?.port();
    // Arrival times of this run's posts; the receiver fails the first `failures`.
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let seen = arrivals.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let failing = {
                let mut seen = seen.lock().expect("arrivals");
                seen.push(Instant::now());
                seen.len() as u32 <= failures
            };
            let status = if failing {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    let dir = TempDir::new("wd-bench-alerts");
    let config = dir.path().join("config.toml");
    let text = format!(
        "[[alerts.sinks]]\nname = \"bench\"\ntype = \"webhook\"\n\
         url = \"http://127.0.0.1:{port}/hook\"\nmax_retries = {}\nbackoff = \"{backoff_ms}ms\"\n",
        failures + 1
    );
    std::fs::write(&config, &text)?;
    crate::bench::say_daemon(&text, &[])?;
    let binary = watchdog_tests::daemon_binary();
    eprintln!("bench alerts: {runs} runs of `watchdog alert test`, {failures} failures each");
    let mut gaps: Vec<Vec<f64>> = vec![Vec::new(); failures as usize];
    for run in 0..runs {
        arrivals.lock().expect("arrivals").clear();
        let out = util::output(
            Command::new(&binary)
                .args(["alert", "test", "--config"])
                .arg(&config),
        )?;
        let times = arrivals.lock().expect("arrivals").clone();
        if times.len() != failures as usize + 1 {
            bail!(
                "run {}: {} posts arrived, {} expected: {out}",
                run + 1,
                times.len(),
                failures + 1
            );
        }
        for (retry, pair) in times.windows(2).enumerate() {
            gaps[retry].push((pair[1] - pair[0]).as_secs_f64() * 1000.0);
        }
    }
    println!(
        "alert retries: a webhook answering 500 to the first {failures} posts, then 200; \
         backoff {backoff_ms} ms; {runs} runs of `watchdog alert test` (gaps in ms):"
    );
    println!(
        "  {:<7} {:>16} {:>9} {:>9} {:>9} {:>10}",
        "retry", "allowed", "median", "min", "max", "in window"
    );
    for (retry, gaps) in gaps.iter_mut().enumerate() {
        gaps.sort_by(f64::total_cmp);
        let full = Duration::from_millis(backoff_ms << retry).as_secs_f64() * 1000.0;
        let within = gaps
            .iter()
            .filter(|&&gap| gap >= full / 2.0 && gap < full + 100.0)
            .count();
        println!(
            "  {:<7} {:>16} {:>9.1} {:>9.1} {:>9.1} {:>10}",
            retry + 1,
            format!("{:.0}-{:.0}", full / 2.0, full),
            gaps[gaps.len() / 2],
            gaps[0],
            gaps[gaps.len() - 1],
            format!("{within}/{runs}")
        );
    }
    println!("  (in window: at least half the backoff, at most all of it plus 100 ms)");
    Ok(())
}
