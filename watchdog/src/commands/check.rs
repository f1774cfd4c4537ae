//! `watchdog check`: a one-shot audit of this host: the network mirror plus a short
//! observation window of the kernel counters, judged as the daemon judges
//! ([`pipeline::judge`]) at the window's end (no hysteresis).

use std::{
    io::IsTerminal as _,
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant, SystemTime},
};

use super::{StartError, prepare};
use crate::{
    config::{Config, DetectConfig},
    detect::{self, Inputs, Sample},
    findings::{Candidate, Finding, Report},
    model::{desired::State, endpoints::EndpointView, net::Snapshot, probe::ProbeBook},
    pipeline,
    sinks::text,
    sources::{
        Sources,
        desired::{Desired, DesiredError},
        kernel::procfs,
        pods::Pods,
    },
};

/// How long `check` waits for the desired state's first full list.
const DESIRED_WAIT: Duration = Duration::from_secs(10);

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

/// The shortest and longest `check --window`.
pub const WINDOW_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(24 * 3600);

/// Parses `--window`: a duration from 1s to 24h; the error names the value and the range.
pub fn parse_window(text: &str) -> Result<Duration, String> {
    let window = humantime::parse_duration(text)
        .map_err(|err| format!("`{text}` is not a duration ({err}); use e.g. 5s, 30s or 1m"))?;
    if WINDOW_RANGE.contains(&window) {
        Ok(window)
    } else {
        Err(format!("`{text}` is out of range; use 1s to 24h"))
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
    let node = config.desired.node_name(procfs::node_name);
    let mut desired = Desired::start(config, &node).await?;
    let mut sources = Sources::start(config, own_netns)
        .await
        .map_err(StartError::from)?;
    let failures = sources.status().failures();
    if !failures.is_empty() {
        return Err(CheckError::Incomplete(failures.join("; ")));
    }
    desired
        .wait_known(DESIRED_WAIT)
        .await
        .map_err(CheckError::Incomplete)?;
    // A drift (and a ghost endpoint) counts when seen at every look over the window (or
    // desired.grace of it).
    let mut memory = pipeline::Memory::new(config.desired.grace.min(window));
    let mut pods = Pods::start(config.namespaces, own_netns, config, &node).await;
    // Judging starts once every enabled probe is attached and its maps have been read, and
    // the traffic that flows has been counted: a peer that is not in the maps when the
    // window starts has no history and is never judged (as in the daemon, where a peer
    // new to the maps is judged once it has been counted for a window), so a window
    // starting right after the TC programs attach would leave out every peer whose next
    // packet had not passed yet.
    if sources.read().failed_reads > 0 {
        return Err(CheckError::Incomplete(
            "reading the kernel counters failed".into(),
        ));
    }
    tokio::time::sleep(warm_up(config, window)).await;
    let started = SystemTime::now();
    let reading = sources.read();
    let view = pods.refresh(&reading.namespaces());
    let first = pipeline::sample(own_netns, &view, reading);
    let deadline = tokio::time::Instant::now() + window;
    // `recent` is the first sample too, a whole window ago: VTEPs are judged silent over
    // the window, and their evidence says so.
    let settings = DetectConfig {
        window,
        vtep_window: window,
        ..config.detect.clone()
    };
    // The same judgement as the daemon's cycle at every look over the window (so drifts
    // and ghost endpoints have their grace), then once more at its end.
    let window_of = Window {
        first: &first,
        settings: &settings,
        node: &node,
    };
    loop {
        let state = desired.state(None);
        let endpoints = pods.endpoint_view(state.pod_subnet_of(&node));
        let mirror = sources.mirror().expect("failures() checked the mirror");
        mirror.with_snapshot(|net| {
            let unprobed = ProbeBook::default();
            window_of.judge(net, &first, &unprobed, &state, &endpoints, &mut memory)
        });
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
    let view = pods.refresh(&reading.namespaces());
    let last = pipeline::sample(own_netns, &view, reading);
    let mirror = sources.mirror().expect("failures() checked the mirror");
    // Silence is only a suspicion: probe the suspects once, then judge with the results.
    let unprobed = ProbeBook::new(config.prober.enabled, config.prober.valid_for);
    // Every overlay peer's path MTU is searched once too (`[mtu]`).
    let (requests, mtu_targets) = mirror.with_snapshot(|net| {
        let inputs = Inputs {
            net,
            now: &last,
            then: &first,
            recent: &first,
            settings: &settings,
            probes: &unprobed,
        };
        (
            detect::probe_requests(&inputs),
            detect::mtu::mtu_targets(&inputs),
        )
    });
    let prober = sources.prober();
    prober.submit(requests);
    prober.submit_mtu(mtu_targets);
    // A path-MTU search takes at most a dozen probes (a full-size one, a small one and the
    // binary search).
    let probing = if config.mtu.enabled {
        config.prober.timeout * 12
    } else {
        config.prober.timeout
    };
    prober.settle(probing + Duration::from_secs(1)).await;
    let probes = prober.book();
    let now = SystemTime::now();
    let state = desired.state(None);
    let endpoints = pods.endpoint_view(state.pod_subnet_of(&node));
    let mirror = sources.mirror().expect("failures() checked the mirror");
    let candidates = mirror
        .with_snapshot(|net| window_of.judge(net, &last, &probes, &state, &endpoints, &mut memory));
    let mut findings: Vec<Finding> = candidates
        .into_iter()
        .map(|candidate| Finding {
            candidate,
            first_seen: started,
            last_seen: now,
        })
        .collect();
    crate::findings::sort(&mut findings);
    Ok(Report::new(&node, findings))
}

/// The window `check` judges: from its first sample, with the detectors' settings
/// stretched to it.
struct Window<'a> {
    first: &'a Sample,
    settings: &'a DetectConfig,
    node: &'a str,
}

impl Window<'_> {
    /// The daemon's judgement ([`pipeline::judge`]) of the window up to `now`.
    fn judge(
        &self,
        net: &Snapshot,
        now: &Sample,
        probes: &ProbeBook,
        desired: &State,
        endpoints: &EndpointView,
        memory: &mut pipeline::Memory,
    ) -> Vec<Candidate> {
        let inputs = Inputs {
            net,
            now,
            then: self.first,
            recent: self.first,
            settings: self.settings,
            probes,
        };
        let context = pipeline::Context {
            desired,
            node: self.node,
            endpoints,
        };
        pipeline::judge(&inputs, &context, memory, Instant::now()).candidates
    }
}

/// How long the TC programs count before the window starts: long enough that a peer
/// sending just enough for a verdict (`detect.min_packets` over the window) has been
/// counted once; at least a poll interval, at most `detect.window`.
fn warm_up(config: &Config, window: Duration) -> Duration {
    let per_packet = window / u32::try_from(config.detect.min_packets.max(1)).unwrap_or(u32::MAX);
    per_packet
        .max(config.poll_interval)
        .min(config.detect.window.max(config.poll_interval))
}

/// Why the audit could not judge.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Start-up failed.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The desired-state source cannot be configured.
    #[error("desired state: {0}")]
    Desired(#[from] DesiredError),
    /// Something that must be looked at could not be.
    #[error("cannot audit this host: {0}")]
    Incomplete(String),
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_range_checked_and_the_error_names_value_and_range() {
        assert_eq!(parse_window("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_window("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_window("24h"), Ok(Duration::from_secs(86_400)));
        for bad in ["0s", "999ms", "24h 1s", "100000h"] {
            let err = parse_window(bad).unwrap_err();
            assert_eq!(err, format!("`{bad}` is out of range; use 1s to 24h"));
        }
        assert!(
            parse_window("soon")
                .unwrap_err()
                .starts_with("`soon` is not a duration")
        );
    }

    #[test]
    fn the_window_starts_once_a_peer_at_the_slowest_rate_judged_was_counted() {
        let config = Config::default();
        // 5 packets in a 5 s window: one a second.
        assert_eq!(
            warm_up(&config, Duration::from_secs(5)),
            Duration::from_secs(1)
        );
        // Never shorter than a poll interval, never longer than detect.window.
        assert_eq!(
            warm_up(&config, Duration::from_secs(1)),
            config.poll_interval
        );
        assert_eq!(
            warm_up(&config, Duration::from_secs(3600)),
            config.detect.window
        );
    }
}
