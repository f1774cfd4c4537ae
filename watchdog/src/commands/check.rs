//! `watchdog check`: a one-shot audit of this host: the network mirror plus a short
//! observation window of the kernel counters, judged once (no hysteresis).

use std::time::{Duration, SystemTime};

use crate::{
    commands::daemon::{DaemonError, prepare},
    config::Config,
    detect::{self, Inputs},
    findings::{Finding, Report},
    sinks::metrics::Metrics,
    sources::Sources,
    sources::kernel::procfs,
};

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
        .map_err(DaemonError::from)?;
    let failures = sources.failures();
    if !failures.is_empty() {
        return Err(CheckError::Incomplete(failures.join("; ")));
    }
    // Counters only go to this throwaway registry.
    let metrics = Metrics::new();
    let started = SystemTime::now();
    let (first, _) = sources.read(&metrics, 0);
    let deadline = tokio::time::Instant::now() + window;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        progress(left);
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
    }
    let (last, ok) = sources.read(&metrics, 0);
    if !ok {
        return Err(CheckError::Incomplete(
            "reading the kernel counters failed".into(),
        ));
    }
    let mirror = sources.mirror().expect("failures() checked the mirror");
    let settings = crate::config::DetectConfig {
        window,
        vtep_window: window.min(config.detect.vtep_window),
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
    Start(#[from] DaemonError),
    /// Something that must be looked at could not be.
    #[error("cannot audit this host: {0}")]
    Incomplete(String),
}

/// The report as a table for people.
pub fn table(report: &Report) -> String {
    if report.findings.is_empty() {
        return format!("{}: no findings\n", report.node);
    }
    let mut text = format!(
        "{}: {} finding(s)\n\n{:<9} {:<24} SUBJECT\n",
        report.node,
        report.findings.len(),
        "SEVERITY",
        "KIND"
    );
    for finding in &report.findings {
        let candidate = &finding.candidate;
        text.push_str(&format!(
            "{:<9} {:<24} {}\n",
            candidate.severity.as_str(),
            candidate.kind.as_str(),
            candidate.subject
        ));
        for evidence in &candidate.evidence {
            text.push_str(&format!(
                "{:<35}{}: {}\n",
                "", evidence.name, evidence.value
            ));
        }
    }
    text
}
