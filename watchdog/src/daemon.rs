//! `watchdog run`: start-up checks, probes, the read loop and the HTTP server, and a clean
//! shutdown that detaches everything.

use std::{future::Future, sync::Arc, time::Duration};

use crate::{
    btf::Btf,
    caps,
    config::{Config, Namespaces},
    health::Health,
    http::{self, AppState},
    metrics::Metrics,
    probes::{KernelEnv, ProbeError, ProbeState, Probes, kfree_skb::Attribution},
    procfs,
    tracefs::Tracefs,
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
    /// The HTTP server failed.
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// Runs the daemon until `shutdown` completes, then detaches every probe.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    caps::check()?;
    raise_memlock_limit();
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
    let own_netns = procfs::own_netns().map_err(DaemonError::Netns)?;

    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http::serve(
        listener,
        AppState {
            metrics: metrics.clone(),
            health: health.clone(),
        },
        async move {
            let _ = http_stopped.await;
        },
    ));
    tracing::info!(
        listen = %config.listen,
        netns = own_netns,
        version = env!("CARGO_PKG_VERSION"),
        "serving /metrics, /healthz and /readyz"
    );

    let tracefs = match &config.tracefs_path {
        Some(path) => Tracefs::at(path.clone()),
        None => Tracefs::locate(),
    };
    let tracefs = tracefs
        .inspect_err(|err| tracing::error!("tracepoints unavailable: {err}"))
        .ok();
    let btf = config.btf_path().and_then(|path| {
        Btf::from_file(path)
            .inspect_err(|err| tracing::warn!("running without kernel BTF: {err}"))
            .ok()
    });
    if config.btf_path().is_none() {
        tracing::warn!("running without kernel BTF: btf_path is empty in the config");
    }
    let env = KernelEnv {
        tracefs: tracefs.as_ref(),
        btf: btf.as_ref(),
        filter_netns: (config.namespaces == Namespaces::Own).then_some(own_netns),
    };
    let mut probes = Probes::start(&config, &env)?;
    // The BTF (several MiB parsed) is only needed to plan the probes: give it back to the
    // system, not just to the allocator, so the idle daemon stays small.
    drop(btf);
    release_free_heap();
    let failures = publish_probe_status(&probes, &metrics);
    if !failures.is_empty() {
        health.set_not_ready(failures.join("; "));
    }

    let label_netns = config.namespaces == Namespaces::All
        && probes
            .kfree_skb()
            .is_some_and(|probe| *probe.attribution() == Attribution::PerNamespace);
    tokio::pin!(server);
    let result = tokio::select! {
        () = shutdown => Ok(()),
        () = read_loop(&mut probes, &metrics, &health, &config, label_netns) => Ok(()),
        served = &mut server => Err(DaemonError::Serve(match served {
            Ok(Ok(())) => std::io::Error::other("stopped unexpectedly"),
            Ok(Err(err)) => err,
            Err(join) => std::io::Error::other(join),
        })),
    };
    tracing::info!("shutting down: detaching probes");
    drop(probes);
    let _ = stop_http.send(());
    if result.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    }
    tracing::info!("stopped");
    result
}

/// Exports each probe's state; returns the failures (empty when all are attached).
fn publish_probe_status(probes: &Probes, metrics: &Metrics) -> Vec<String> {
    let mut failures = Vec::new();
    for status in probes.status() {
        let up = matches!(status.state, ProbeState::Attached);
        metrics
            .probe_up
            .get_or_create(&vec![("probe", status.name.to_owned())])
            .set(i64::from(up));
        if !up {
            failures.push(status.to_string());
        }
    }
    let attributed = probes
        .kfree_skb()
        .is_some_and(|probe| *probe.attribution() == Attribution::PerNamespace);
    metrics.netns_attribution.set(i64::from(attributed));
    failures
}

/// Reads the in-kernel counters every poll interval and publishes them; never returns.
/// Ready while every enabled probe is attached and the maps have been read.
async fn read_loop(
    probes: &mut Probes,
    metrics: &Metrics,
    health: &Health,
    config: &Config,
    label_netns: bool,
) {
    let mut ticker = tokio::time::interval(config.poll_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut maps_read = false;
    loop {
        ticker.tick().await;
        probes.sync_interfaces();
        let mut ok = true;
        match (probes.kfree_skb(), probes.read_drops()) {
            (Some(probe), Some(Ok(snapshot))) => {
                metrics.set_drops(probe, &snapshot, label_netns, config.peers.top_n);
            }
            (_, Some(Err(err))) => {
                metrics.map_read_errors.inc();
                tracing::warn!("reading the drop counters failed: {err}");
                ok = false;
            }
            _ => {}
        }
        match probes.read_peers() {
            Some(Ok(snapshot)) => metrics.set_peers(&snapshot, config.peers.top_n),
            Some(Err(err)) => {
                metrics.map_read_errors.inc();
                tracing::warn!("reading the peer counters failed: {err}");
                ok = false;
            }
            None => {}
        }
        match probes.read_connects() {
            Some(Ok(snapshot)) => metrics.set_connects(&snapshot, config.peers.top_n),
            Some(Err(err)) => {
                metrics.map_read_errors.inc();
                tracing::warn!("reading the TCP counters failed: {err}");
                ok = false;
            }
            None => {}
        }
        maps_read |= ok;
        let failures = publish_probe_status(probes, metrics);
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

/// Returns freed heap pages to the kernel (glibc keeps them otherwise).
fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases memory the allocator holds free.
    unsafe {
        libc::malloc_trim(0);
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
