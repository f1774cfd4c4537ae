//! `watchdog check`: a one-shot audit of this host: the network mirror plus a short
//! observation window of the kernel counters, judged once (no hysteresis).

use std::{
    io::IsTerminal as _,
    path::PathBuf,
    process::ExitCode,
    time::{Duration, SystemTime},
};

use super::{StartError, prepare};
use crate::{
    config::{Config, DetectConfig},
    detect::{self, Inputs},
    findings::{Finding, Report},
    pipeline,
    sinks::text,
    sources::{Sources, kernel::procfs},
};

/// `watchdog check`: exit 0 clean, 1 findings, 2 error. The report goes to stdout (text,
/// or JSON with `json`); the progress line to stderr, only when it is a terminal.
pub fn main(config: Option<PathBuf>, window: Duration, json: bool) -> ExitCode {
    let run = || -> anyhow::Result<(Report, String)> {
        let config = Config::load(config.as_deref())?;
        let runtime = super::runtime()?;
        let progress = std::io::stderr().is_terminal();
        let report = runtime.block_on(audit(&config, window, |left| {
            if progress {
                eprint!("\robserving traffic: {}s left ", left.as_secs_f64().ceil());
            }
        }));
        if progress {
            // Clear the progress line.
            eprint!("\r\x1b[2K");
        }
        Ok((report?, config.alerts.runbook_base()))
    };
    match run() {
        Ok((report, runbook_base)) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("a report serializes")
                );
            } else {
                let style = text::Style {
                    colour: super::colour(std::io::stdout().is_terminal()),
                    runbook_base,
                };
                print!("{}", text::render(&report, &style));
            }
            if report.findings.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(err) => super::fail(&err, 2),
    }
}

/// Observes for `window` (calling `progress` with the time left each second) and returns
/// the report. Fails if a probe or the mirror cannot run: a partial audit would claim
/// "clean" without having looked.
pub async fn audit(
    config: &Config,
    window: Duration,
    mut progress: impl FnMut(Duration),
) -> Result<Report, CheckError> {
    let own_netns = prepare()?;
    let mut sources = Sources::start(config, own_netns)
        .await
        .map_err(StartError::from)?;
    let failures = sources.status().failures();
    if !failures.is_empty() {
        return Err(CheckError::Incomplete(failures.join("; ")));
    }
    let started = SystemTime::now();
    let first = pipeline::sample(own_netns, sources.read());
    let deadline = tokio::time::Instant::now() + window;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        progress(left);
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
    }
    let reading = sources.read();
    if reading.failed_reads > 0 {
        return Err(CheckError::Incomplete(
            "reading the kernel counters failed".into(),
        ));
    }
    let last = pipeline::sample(own_netns, reading);
    let mirror = sources.mirror().expect("failures() checked the mirror");
    // `recent` is the first sample too, a whole window ago: VTEPs are judged silent over
    // the window, and their evidence says so.
    let settings = DetectConfig {
        window,
        vtep_window: window,
        ..config.detect.clone()
    };
    let now = SystemTime::now();
    let candidates = mirror.with_snapshot(|net| {
        detect::detect(&Inputs {
            net,
            now: &last,
            then: &first,
            recent: &first,
            settings: &settings,
        })
    });
    let mut findings: Vec<Finding> = candidates
        .into_iter()
        .map(|candidate| Finding {
            candidate,
            first_seen: started,
            last_seen: now,
        })
        .collect();
    crate::findings::sort(&mut findings);
    Ok(Report::new(&procfs::node_name(), findings))
}

/// Why the audit could not judge.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Start-up failed.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Something that must be looked at could not be.
    #[error("cannot audit this host: {0}")]
    Incomplete(String),
}
