//! `watchdog run`: start-up checks, sources (probes, mirror, desired state), the detection
//! loop and the HTTP server, and a clean shutdown that detaches everything.

use std::{
    collections::BTreeSet,
    future::Future,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use super::{StartError, prepare_for};
use crate::{
    config::{AlertsConfigError, Config, Namespaces, pods::PodSource},
    findings::Change,
    model::probe::{ProbeRequest, Purpose},
    pipeline::{self, Pipeline, SharedFindings},
    repair::{self, daemon::DaemonRepair, engine::Step, event::RecentRepairs, world::OverlayWorld},
    sinks::{
        alerts::{Alerts, SinkSpec},
        health::Health,
        http::{self, AppState},
        metrics::{Metrics, ReadingContext},
    },
    sources::{
        Sources,
        desired::{Desired, DesiredError},
        kernel::{caps, memory, procfs},
        mirror,
        pods::Pods,
        prober,
        reach::Reacher,
    },
};

/// Why the daemon could not start (nothing is attached when these are returned).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Privileges, the own namespace, or the eBPF object.
    #[error(transparent)]
    Start(#[from] StartError),
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
    /// An alert sink's URL or secret cannot be used.
    #[error("alert sinks: {0}")]
    Alerts(#[from] AlertsConfigError),
    /// The API's TLS certificate, key or client CA cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::sinks::server_tls::ServerTlsError),
    /// The desired-state source cannot be configured.
    #[error("desired state: {0}")]
    Desired(#[from] DesiredError),
    /// The HTTP server failed.
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// `watchdog run`: loads the config, runs the daemon until SIGTERM or SIGINT; exit 1 on
/// an error.
pub fn main(config: Option<PathBuf>, listen: Option<SocketAddr>) -> ExitCode {
    let run = || -> anyhow::Result<()> {
        let mut config = Config::load(config.as_deref())?;
        if let Some(listen) = listen {
            config.listen = listen;
        }
        let runtime = super::runtime()?;
        runtime.block_on(async { run(config, shutdown_signal()).await })?;
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => super::fail(&err, 1),
    }
}

/// Completes on SIGTERM or SIGINT. SIGHUP (whose default action would end the process
/// silently) is logged and the daemon keeps running: the configuration is read at start
/// only. The handlers are installed at once, not when the future is first polled.
fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    async move {
        loop {
            tokio::select! {
                _ = term.recv() => return tracing::info!("SIGTERM received"),
                _ = int.recv() => return tracing::info!("SIGINT received"),
                _ = hup.recv() => tracing::warn!(
                    "SIGHUP received: the configuration is not reloaded (it is read at start \
                     only); restart the daemon to apply a change. Still running"
                ),
            }
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, DaemonError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Listen {
            addr,
            hint: if source.kind() == std::io::ErrorKind::AddrInUse {
                " (is another watchdog running?)"
            } else {
                ""
            },
            source,
        })
}

/// Runs the daemon until `shutdown` completes, then detaches every probe.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    // Secrets and URLs first: a missing file is an error before anything attaches.
    let sinks = super::config::judge(&config)?;
    let tls = crate::sinks::server_tls::server_config(&config.http)?;
    let own_netns = prepare_for(caps::Needs {
        net_admin: config.probes.peers || config.repair.mode == crate::config::repair::Mode::Apply,
    })?;
    let listener = bind(config.listen).await?;
    let health_listener = match config.health_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };

    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let findings = SharedFindings::default();
    let repairs = RecentRepairs::default();
    let node = config.desired.node_name(procfs::node_name);
    let mut desired = Desired::start(&config, &node).await?;
    let own = Own {
        netns: own_netns,
        sinks: own_destinations(&sinks).await,
    };
    let mut alerts = Alerts::start(
        &config.alerts,
        sinks,
        config.generator_url(),
        &node,
        metrics.alerts.clone(),
    );
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let (stop_health, health_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(health_listener) = health_listener {
        tracing::info!(
            listen = ?config.health_listen,
            "serving /healthz and /readyz alone"
        );
        tokio::spawn(http::serve_health(
            health_listener,
            health.clone(),
            config.http.header_timeout,
            async move {
                let _ = health_stopped.await;
            },
        ));
    }
    let server = tokio::spawn(http::serve(
        listener,
        AppState {
            metrics: metrics.clone(),
            health: health.clone(),
            findings: findings.clone(),
            node: node.as_str().into(),
            repairs: repairs.clone(),
        },
        config.http.clone(),
        tls.clone(),
        async move {
            let _ = http_stopped.await;
        },
    ));
    tracing::info!(
        listen = %config.listen,
        tls = match &tls {
            None => "off",
            Some(_) if config.http.client_ca_file.as_os_str().is_empty() => "on",
            Some(_) => "on, client certificates required",
        },
        netns = own_netns,
        version = env!("CARGO_PKG_VERSION"),
        "serving /metrics, /healthz, /readyz, /api/v1/findings and /api/v1/repairs"
    );

    let mut sources = Sources::start(&config, own_netns)
        .await
        .map_err(StartError::from)?;
    if let Some(mirror) = sources.mirror() {
        let counters = mirror.counters();
        metrics.attach_mirror(move || counters.stats());
    }
    // The executor's world: a fresh dump for each read, a probe through the overlay to
    // the remote Node's flannel address when probing is on.
    let method = sources.prober().method();
    let world = OverlayWorld {
        model: None,
        own: node.clone(),
        read: || async { mirror::dump().await.map_err(|e| e.to_string()) },
        probe: config.prober.enabled.then_some(move |target| async move {
            let request = ProbeRequest::liveness(target, Purpose::Vtep, None);
            prober::run::probe(&request, method, Duration::from_secs(1), 3)
                .await
                .outcome
        }),
        method,
    };
    let mut repair = DaemonRepair::start(&config.repair, world, repairs);
    let status = sources.status();
    metrics.set_status(&status);
    let failures = status.failures();
    if !failures.is_empty() {
        health.set_not_ready(failures.join("; "));
    }

    tokio::pin!(server);
    let result = tokio::select! {
        () = shutdown => Ok(()),
        () = detect_loop(&mut sources, &mut desired, &mut repair, &metrics, &health, &findings, &mut alerts, &config, &own) => Ok(()),
        served = &mut server => Err(DaemonError::Serve(match served {
            Ok(Ok(())) => std::io::Error::other("stopped unexpectedly"),
            Ok(Err(err)) => err,
            Err(join) => std::io::Error::other(join),
        })),
    };
    tracing::info!("shutting down: detaching probes");
    drop(sources);
    let _ = stop_http.send(());
    let _ = stop_health.send(());
    if result.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    }
    tracing::info!("stopped");
    result
}

/// The addresses the alert sinks connect to (host names resolved once, at start): the
/// daemon's own connections there are left out of `failing_tcp_destination`, since an
/// unreachable sink is WatchdogAlertDeliveryFailing's business.
async fn own_destinations(sinks: &[SinkSpec]) -> BTreeSet<(IpAddr, u16)> {
    let mut own = BTreeSet::new();
    for sink in sinks {
        let (host, port) = (sink.endpoint.host.as_str(), sink.endpoint.port);
        if let Ok(ip) = host.parse::<IpAddr>() {
            own.insert((ip, port));
            continue;
        }
        let lookup = tokio::net::lookup_host((host, port));
        match tokio::time::timeout(Duration::from_secs(2), lookup).await {
            Ok(Ok(addrs)) => own.extend(addrs.map(|a| (a.ip(), port))),
            _ => tracing::debug!(sink = %sink.name, "cannot resolve the sink's host now"),
        }
    }
    own
}

/// What is the daemon's own: its network namespace, its alert sinks' addresses.
struct Own {
    netns: u32,
    sinks: BTreeSet<(IpAddr, u16)>,
}

/// Every poll interval: read the kernel, run the detectors (with the prober's results),
/// hand the suspects to the prober, publish; never returns. Ready while every source
/// works and the maps have been read.
#[allow(clippy::too_many_arguments)]
async fn detect_loop(
    sources: &mut Sources,
    desired: &mut Desired,
    repair: &mut DaemonRepair,
    metrics: &Metrics,
    health: &Health,
    findings: &SharedFindings,
    alerts: &mut Alerts,
    config: &Config,
    own: &Own,
) {
    let mut ticker = tokio::time::interval(config.poll_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pipeline = Pipeline::new(config.detect.clone())
        .with_desired(desired.node(), config.desired.grace)
        .with_bounds(crate::overlay::Bounds {
            widest_v4: config.repair.widest_prefix_v4,
        });
    let mut maps_read = false;
    let node = config.desired.node_name(procfs::node_name);
    let mut pods = Pods::start(config.namespaces, own.netns, config, &node).await;
    let mut start_up_released = false;
    // The other Nodes, probed through the overlay for the cluster's verdict.
    let reacher = (config.cluster.enabled && config.prober.enabled).then(|| {
        Reacher::start(
            config.cluster.interval,
            sources.prober().method(),
            config.prober.timeout,
            config.prober.tries,
        )
    });
    loop {
        ticker.tick().await;
        let reading = sources.read();
        maps_read |= reading.failed_reads == 0;
        let view = pods.refresh(&reading.namespaces());
        metrics.set_namespaces(&pods.counters());
        // Only this node's namespaces from here on: the metrics and the detectors alike.
        let reading = pipeline::this_node(own.netns, &view, reading);
        let status = sources.status();
        let label_netns = config.namespaces == Namespaces::All && status.netns_attribution;
        let top_n = config.peers.top_n;
        pipeline.set_probes(sources.prober().book());
        let source = config.desired.source.as_str();
        let state = desired.state(Some(&|snapshot, state| {
            metrics.set_desired(source, snapshot, state);
        }));
        // The endpoints kept whole are this node's pod subnet's, once the Nodes say it.
        pipeline.set_endpoints(pods.endpoint_view(state.pod_subnet_of(&node)));
        if let Some(reacher) = &reacher {
            if let Some(model) = state.model() {
                reacher.set_targets(crate::model::reach::targets(model, &node));
            }
            metrics.set_reach(reacher.reach(), Instant::now());
        }
        if config.pods.endpoints != PodSource::None {
            metrics.set_endpoints(pods.endpoint_counters());
        }
        // What the repair executor finished since the last cycle.
        for step in repair.drain() {
            publish_repair(step, metrics, alerts);
        }
        pipeline.set_repair_candidates(repair.candidates());
        if let Some(mirror) = sources.mirror() {
            let (cycle, active, step) = mirror.with_snapshot(|net| {
                let context = ReadingContext {
                    label_netns,
                    top_n,
                    net: Some(net),
                    nodes: state.model(),
                };
                metrics.set_reading(&reading, context);
                // The peer reading moves into the sample: it is the largest map.
                let sample = pipeline::sample(own.netns, &view, reading);
                let sample = pipeline::without_destinations(sample, &own.sinks);
                // The history keeps a copy each poll: none of gone interfaces' peers.
                let sample =
                    pipeline::on_existing_interfaces(sample, |index| net.link(index).is_some());
                metrics.set_clients(&pipeline::client_totals(&sample), config.pods.top_n);
                let cycle = pipeline.cycle(net, sample, state, SystemTime::now());
                let active = pipeline.active();
                // Plans only (a plan to apply goes to the executor's task): never waits.
                // A mirror that failed is out of date: no plan from it.
                let evidence =
                    repair::plan::Evidence::from_replies(pipeline.replies(), config.detect.window);
                let step = match status.mirror_failure {
                    None => repair.cycle(net, &cycle.desired, cycle.overlay.as_ref(), &evidence),
                    Some(_) => Step::default(),
                };
                (cycle, active, step)
            });
            // The suspects go out now; their results are in the next cycle's inputs.
            sources.prober().submit(pipeline.take_probe_requests());
            sources.prober().submit_mtu(pipeline.take_mtu_targets());
            sources.request_stack(pipeline.stack_request());
            let changes = cycle.changes;
            log_changes(&changes);
            // Never waits: alerts go into per-sink queues, delivered by their own tasks.
            alerts.cycle(&changes, &active);
            publish_repair(step, metrics, alerts);
            metrics.set_findings(&active, &node);
            *findings.write().expect("findings lock") = active;
        } else {
            let context = ReadingContext {
                label_netns,
                top_n,
                net: None,
                nodes: state.model(),
            };
            metrics.set_reading(&reading, context);
        }
        metrics.set_status(&status);
        metrics.set_probes(&sources.prober().stats());
        let failures = status.failures();
        if !failures.is_empty() {
            health.set_not_ready(failures.join("; "));
        } else if !maps_read {
            health.set_not_ready("waiting for the first read of the probe maps");
        } else if health.readiness().is_err() {
            health.set_ready();
            tracing::info!("ready: every enabled probe is attached and its maps were read");
        }
        // Start-up is over after the first cycle: what only it used goes back.
        if !start_up_released {
            memory::release_start_up();
            start_up_released = true;
        }
    }
}

/// Logs a repair step, counts it and reports its events to the alert sinks.
fn publish_repair(step: Step, metrics: &Metrics, alerts: &mut Alerts) {
    for line in &step.log {
        tracing::warn!("{line}");
    }
    for (kind, outcome) in step.counts {
        metrics.count_repair(kind, outcome);
    }
    for event in &step.events {
        alerts.report(event);
    }
}

/// The message of a fired finding's log line: its subject and evidence.
pub(super) fn fired_message(finding: &crate::findings::Finding) -> String {
    let evidence: Vec<String> = finding
        .candidate
        .evidence
        .iter()
        .map(|e| format!("{}={}", e.name, e.value))
        .collect();
    format!(
        "finding: {} [{}]",
        finding.candidate.subject,
        evidence.join("; ")
    )
}

fn log_changes(changes: &[Change]) {
    for change in changes {
        match change {
            Change::Fired(finding) => tracing::warn!(
                kind = finding.candidate.kind.as_str(),
                severity = finding.candidate.severity.as_str(),
                "{}",
                fired_message(finding)
            ),
            Change::Resolved(finding) => tracing::info!(
                kind = finding.candidate.kind.as_str(),
                "resolved: {}",
                finding.candidate.subject
            ),
        }
    }
}
