//! `watchdog run`: start-up checks, sources (probes, mirror), the detection loop and the
//! HTTP server, and a clean shutdown that detaches everything.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, SystemTime},
};

use crate::{
    config::AlertsConfigError,
    config::Config,
    findings::Change,
    pipeline::{Pipeline, SharedFindings},
    sinks::alerts::Alerts,
    sinks::health::Health,
    sinks::http::{self, AppState},
    sinks::metrics::Metrics,
    sources::Sources,
    sources::kernel::caps,
    sources::kernel::procfs,
    sources::probes::ProbeError,
};

/// Why the daemon could not start (nothing is attached when these are returned).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Not enough privileges.
    #[error(transparent)]
    Capabilities(#[from] caps::MissingCapabilities),
    /// The listen address cannot be bound.
    #[error(
        "cannot listen on {addr}: {source}; choose another address with --listen or `listen` \
         in the config{hint}"
    )]
    Listen {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// The bind error.
        source: std::io::Error,
        /// An extra hint for a port in use.
        hint: &'static str,
    },
    /// The eBPF object did not load.
    #[error(transparent)]
    Probes(#[from] ProbeError),
    /// The daemon's own network namespace could not be read.
    #[error("cannot read this process's network namespace (/proc/self/ns/net): {0}")]
    Netns(std::io::Error),
    /// An alert sink's URL or secret cannot be used.
    #[error("alert sinks: {0}")]
    Alerts(#[from] AlertsConfigError),
    /// The HTTP server failed.
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// Checks privileges and lifts the memlock limit: the start of every command that loads
/// eBPF.
pub fn prepare() -> Result<u32, DaemonError> {
    caps::check()?;
    raise_memlock_limit();
    procfs::own_netns().map_err(DaemonError::Netns)
}

/// Runs the daemon until `shutdown` completes, then detaches every probe.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    // Secrets and URLs first: a missing file is an error before anything attaches.
    let sinks = crate::sinks::alerts::resolve(&config.alerts)?;
    let own_netns = prepare()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: config.listen,
            hint: if source.kind() == std::io::ErrorKind::AddrInUse {
                " (is another watchdog running?)"
            } else {
                ""
            },
            source,
        })?;

    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let findings = SharedFindings::default();
    let node = procfs::node_name();
    let mut alerts = Alerts::start(
        &config.alerts,
        sinks,
        config.generator_url(),
        &node,
        metrics.alerts.clone(),
    );
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http::serve(
        listener,
        AppState {
            metrics: metrics.clone(),
            health: health.clone(),
            findings: findings.clone(),
            node: node.as_str().into(),
        },
        async move {
            let _ = http_stopped.await;
        },
    ));
    tracing::info!(
        listen = %config.listen,
        netns = own_netns,
        version = env!("CARGO_PKG_VERSION"),
        "serving /metrics, /healthz, /readyz and /api/v1/findings"
    );

    let mut sources = Sources::start(&config, own_netns).await?;
    sources.publish_status(&metrics);
    let failures = sources.failures();
    if !failures.is_empty() {
        health.set_not_ready(failures.join("; "));
    }

    tokio::pin!(server);
    let result = tokio::select! {
        () = shutdown => Ok(()),
        () = detect_loop(&mut sources, &metrics, &health, &findings, &mut alerts, &config) => Ok(()),
        served = &mut server => Err(DaemonError::Serve(match served {
            Ok(Ok(())) => std::io::Error::other("stopped unexpectedly"),
            Ok(Err(err)) => err,
            Err(join) => std::io::Error::other(join),
        })),
    };
    tracing::info!("shutting down: detaching probes");
    drop(sources);
    let _ = stop_http.send(());
    if result.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    }
    tracing::info!("stopped");
    result
}

/// Every poll interval: read the kernel, run the detectors, publish; never returns.
/// Ready while every source works and the maps have been read.
async fn detect_loop(
    sources: &mut Sources,
    metrics: &Metrics,
    health: &Health,
    findings: &SharedFindings,
    alerts: &mut Alerts,
    config: &Config,
) {
    let mut ticker = tokio::time::interval(config.poll_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pipeline = Pipeline::new(config.detect.clone());
    let mut maps_read = false;
    loop {
        ticker.tick().await;
        let (sample, ok) = sources.read(metrics, config.peers.top_n);
        maps_read |= ok;
        if let Some(mirror) = sources.mirror() {
            let changes =
                mirror.with_snapshot(|net| pipeline.cycle(net, sample, SystemTime::now()));
            log_changes(&changes);
            let active = pipeline.active();
            // Never waits: alerts go into per-sink queues, delivered by their own tasks.
            alerts.cycle(&changes, &active);
            metrics.set_findings(&active);
            *findings.write().expect("findings lock") = active;
        }
        sources.publish_status(metrics);
        let failures = sources.failures();
        if !failures.is_empty() {
            health.set_not_ready(failures.join("; "));
        } else if !maps_read {
            health.set_not_ready("waiting for the first read of the probe maps");
        } else if health.readiness().is_err() {
            health.set_ready();
            tracing::info!("ready: every enabled probe is attached and its maps were read");
        }
    }
}

fn log_changes(changes: &[Change]) {
    for change in changes {
        match change {
            Change::Fired(finding) => {
                let evidence: Vec<String> = finding
                    .candidate
                    .evidence
                    .iter()
                    .map(|e| format!("{}={}", e.name, e.value))
                    .collect();
                tracing::warn!(
                    kind = finding.candidate.kind.as_str(),
                    severity = finding.candidate.severity.as_str(),
                    "finding: {} [{}]",
                    finding.candidate.subject,
                    evidence.join("; ")
                );
            }
            Change::Resolved(finding) => tracing::info!(
                kind = finding.candidate.kind.as_str(),
                "resolved: {}",
                finding.candidate.subject
            ),
        }
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lift it where we may.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!(
            "cannot lift RLIMIT_MEMLOCK ({}); fine on kernels 5.11 and later",
            std::io::Error::last_os_error()
        );
    }
}
