//! The HTTP server: `/metrics`, `/healthz`, `/readyz`, `/api/v1/findings`,
//! `/api/v1/repairs`.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};

use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::{OwnedSemaphorePermit, Semaphore},
};

use crate::{
    config::HttpConfig as Limits, pipeline::SharedFindings, repair::event::RecentRepairs,
    sinks::health::Health, sinks::metrics::Metrics,
};

/// What the handlers read.
#[derive(Clone)]
pub struct AppState {
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Readiness.
    pub health: Arc<Health>,
    /// The active findings.
    pub findings: SharedFindings,
    /// This node's name in API answers.
    pub node: Arc<str>,
    /// The repair journal's recent entries.
    pub repairs: RecentRepairs,
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/v1/findings", get(findings))
        .route("/api/v1/repairs", get(repairs))
        .with_state(state)
}

const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// OpenMetrics for clients that ask for it (Prometheus does); the classic text format
/// otherwise (curl, promtool).
async fn metrics(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    let text = state.metrics.encode();
    if openmetrics {
        ([(header::CONTENT_TYPE, OPENMETRICS)], text)
    } else {
        (
            [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
            to_prometheus_text(&text),
        )
    }
}

/// Rewrites OpenMetrics text as the Prometheus text format 0.0.4: counter families are
/// named with `_total` as their samples are, `info` families become gauges named `_info`,
/// and `# EOF` and `# UNIT` lines go.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    // The name a family has in the classic format, from its TYPE line.
    let renamed = |name: &str, kind: &str| match kind {
        "counter" => (format!("{name}_total"), "counter".to_owned()),
        "info" => (format!("{name}_info"), "gauge".to_owned()),
        other => (name.to_owned(), other.to_owned()),
    };
    let lines: Vec<&str> = openmetrics
        .lines()
        .filter(|line| *line != "# EOF" && !line.starts_with("# UNIT "))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for (i, line) in lines.iter().enumerate() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = renamed(name, kind);
            out.push_str(&format!("# TYPE {name} {kind}\n"));
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            // HELP precedes its family's TYPE line, which decides the name.
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let name = lines
                .get(i + 1)
                .and_then(|next| next.strip_prefix("# TYPE "))
                .and_then(|next| next.split_once(' '))
                .map_or_else(|| name.to_owned(), |(n, kind)| renamed(n, kind).0);
            out.push_str(&format!("# HELP {name} {help}\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// `GET /api/v1/findings`: see docs/findings.md for the schema.
async fn findings(State(state): State<AppState>) -> impl IntoResponse {
    let findings = state.findings.read().expect("findings lock").clone();
    axum::Json(crate::findings::Report::new(&state.node, findings))
}

/// `GET /api/v1/repairs`: the repair journal's recent changes, each with its verdicts
/// (newest last); see docs/repair.md for the schema.
async fn repairs(State(state): State<AppState>) -> impl IntoResponse {
    axum::Json(serde_json::json!({
        "schema": "watchdog.repairs/v1",
        "node": &*state.node,
        "repairs": state.repairs.get(),
    }))
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    readiness(&state.health)
}

fn readiness(health: &Health) -> (StatusCode, String) {
    match health.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// Connections the health listener holds at once; a new one closes the oldest.
pub const HEALTH_CONNECTIONS: usize = 16;

/// Serves `/healthz` and `/readyz` alone (`health_listen`) until `shutdown`: one request
/// per connection (no keep-alive), its headers within `header_timeout`, the connection
/// closed at twice that at the latest, and at most [`HEALTH_CONNECTIONS`] held, the
/// oldest closed when a new one arrives. Whoever holds connections open, here or on the
/// API's listener, a probe's new connection is answered: idle connections cannot starve it.
pub async fn serve_health(
    listener: tokio::net::TcpListener,
    health: Arc<Health>,
    header_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State(health): State<Arc<Health>>| async move { readiness(&health) }),
        )
        .with_state(health);
    let mut open = std::collections::VecDeque::<tokio::task::AbortHandle>::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accepting a health connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        open.retain(|task| !task.is_finished());
        if open.len() >= HEALTH_CONNECTIONS
            && let Some(oldest) = open.pop_front()
        {
            oldest.abort();
        }
        let app = app.clone();
        let task = tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(false);
            let conn =
                builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
            let _ = tokio::time::timeout(header_timeout * 2, conn).await;
        });
        open.push_back(task.abort_handle());
    }
    for task in open {
        task.abort();
    }
    Ok(())
}

/// `watchdog_http_*`: the server's connections.
#[derive(Debug, Clone, Default)]
pub struct HttpMetrics {
    open: Gauge,
    rejected: Counter,
    tls_refused: Counter,
    timed_out: Family<Vec<(&'static str, String)>, Counter>,
}

/// Why the server closed a connection it had accepted.
#[derive(Debug, Clone, Copy)]
enum Timeout {
    Header,
    Idle,
    Lifetime,
}

impl Timeout {
    const ALL: [Self; 3] = [Self::Header, Self::Idle, Self::Lifetime];

    fn label(self) -> Vec<(&'static str, String)> {
        let name = match self {
            Self::Header => "header",
            Self::Idle => "idle",
            Self::Lifetime => "lifetime",
        };
        vec![("timeout", name.to_owned())]
    }
}

impl HttpMetrics {
    /// Registers the families in `registry`.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "watchdog_http_connections",
            "HTTP connections open",
            self.open.clone(),
        );
        registry.register(
            "watchdog_http_connections_rejected",
            "HTTP connections closed at once because max_connections were open",
            self.rejected.clone(),
        );
        registry.register(
            "watchdog_http_tls_handshakes_failed",
            "TLS handshakes on the API's listener that failed: a client without a certificate \
             the client CA signed, or not speaking TLS (0 without http.tls_cert_file)",
            self.tls_refused.clone(),
        );
        for timeout in Timeout::ALL {
            let _ = self.timed_out.get_or_create(&timeout.label());
        }
        registry.register(
            "watchdog_http_connections_timed_out",
            "HTTP connections closed by the server, by timeout (header, idle, lifetime)",
            self.timed_out.clone(),
        );
    }

    fn timed_out(&self, timeout: Timeout) {
        self.timed_out.get_or_create(&timeout.label()).inc();
    }
}

/// The timeouts of one connection (the Copy part of [`Limits`]).
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    header: Duration,
    idle: Duration,
    lifetime: Duration,
}

/// Serves until `shutdown` completes, within `limits`: a connection past
/// `max_connections` is closed at once, as is one whose request headers take longer than
/// `header_timeout`, that carries no byte for `idle_timeout`, or that is older than
/// `max_lifetime`. With `tls` every connection is a TLS one (its handshake within
/// `header_timeout`); a client the settings refuse (no certificate, or one the client CA
/// did not sign) is closed after the failed handshake and counted.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let metrics = state.metrics.http.clone();
    let app = router(state);
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let timeouts = Timeouts {
        header: limits.header_timeout,
        idle: limits.idle_timeout,
        lifetime: limits.max_lifetime,
    };
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = Arc::new(Connections::default());
    let (stopping, stop) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of fds or memory: let connections close before the next accept.
                    tracing::warn!(%error, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.rejected.inc();
            drop(stream);
            continue;
        };
        let guard = connections.open(&metrics, slot);
        let app = app.clone();
        let metrics = metrics.clone();
        let stop = stop.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            connection(stream, app, timeouts, tls, &metrics, stop).await;
            drop(guard);
        });
    }
    let _ = stopping.send(true);
    // Answers in flight finish; idle connections close at once.
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        slots.acquire_many(u32::try_from(limits.max_connections).unwrap_or(u32::MAX)),
    )
    .await;
    Ok(())
}

/// Counts open connections; gives the heap back once a flood has gone.
#[derive(Debug, Default)]
struct Connections {
    open: AtomicUsize,
    peak: AtomicUsize,
}

/// Connections open at once above which closing the last one trims the heap.
const TRIM_AFTER: usize = 16;

impl Connections {
    fn open(self: &Arc<Self>, metrics: &HttpMetrics, slot: OwnedSemaphorePermit) -> Open {
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(open, Ordering::Relaxed);
        metrics.open.inc();
        Open {
            connections: self.clone(),
            metrics: metrics.clone(),
            _slot: slot,
        }
    }
}

/// One open connection: counted until dropped.
struct Open {
    connections: Arc<Connections>,
    metrics: HttpMetrics,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.metrics.open.dec();
        let left = self.connections.open.fetch_sub(1, Ordering::Relaxed) - 1;
        if left == 0 && self.connections.peak.swap(0, Ordering::Relaxed) > TRIM_AFTER {
            release_free_heap();
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

/// Serves one connection until the client closes it, a limit closes it, or the server stops.
async fn connection(
    stream: tokio::net::TcpStream,
    app: Router,
    timeouts: Timeouts,
    tls: Option<tokio_rustls::TlsAcceptor>,
    metrics: &HttpMetrics,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let started = Instant::now();
    let activity = Arc::new(AtomicU64::new(0));
    let tracked = Tracked {
        inner: stream,
        started,
        activity: activity.clone(),
    };
    let Some(tls) = tls else {
        return exchange(tracked, app, timeouts, started, activity, metrics, stop).await;
    };
    // The handshake counts against the header timeout, as a request's headers would.
    match tokio::time::timeout(timeouts.header, tls.accept(tracked)).await {
        Ok(Ok(stream)) => exchange(stream, app, timeouts, started, activity, metrics, stop).await,
        Ok(Err(error)) => {
            metrics.tls_refused.inc();
            tracing::debug!(%error, "TLS handshake refused");
        }
        Err(_) => metrics.timed_out(Timeout::Header),
    }
}

/// HTTP/1.1 requests and answers over `io` (plain or TLS) until one side closes or a limit
/// or the server's stop does.
async fn exchange<S>(
    io: S,
    app: Router,
    timeouts: Timeouts,
    started: Instant,
    activity: Arc<AtomicU64>,
    metrics: &HttpMetrics,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header);
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    let mut conn = std::pin::pin!(conn);
    let lifetime = tokio::time::sleep_until((started + timeouts.lifetime).into());
    let mut lifetime = std::pin::pin!(lifetime);
    loop {
        let last = started + Duration::from_millis(activity.load(Ordering::Relaxed));
        let idle = tokio::time::sleep_until((last + timeouts.idle).into());
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    if error.is_timeout() {
                        metrics.timed_out(Timeout::Header);
                    }
                    tracing::debug!(%error, "HTTP connection ended");
                }
                return;
            }
            () = idle => {
                let last = started + Duration::from_millis(activity.load(Ordering::Relaxed));
                if last.elapsed() >= timeouts.idle {
                    metrics.timed_out(Timeout::Idle);
                    return;
                }
            }
            () = &mut lifetime => {
                metrics.timed_out(Timeout::Lifetime);
                return;
            }
            _ = stop.changed() => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(5), conn.as_mut()).await;
                return;
            }
        }
    }
}

/// A stream that records when it last carried bytes (ms since `started`).
struct Tracked {
    inner: tokio::net::TcpStream,
    started: Instant,
    activity: Arc<AtomicU64>,
}

impl Tracked {
    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.activity.store(ms, Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use super::*;

    fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        get_accepting(addr, path, "*/*")
    }

    fn get_accepting(addr: std::net::SocketAddr, path: &str, accept: &str) -> (u16, String) {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.0\r\nHost: x\r\nAccept: {accept}\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response[9..12].parse().unwrap();
        let body = response.split_once("\r\n\r\n").unwrap().1.to_owned();
        (status, body)
    }

    #[test]
    fn readyz_is_503_with_reason_until_ready() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let health = Arc::new(Health::default());
        let state = AppState {
            metrics: Arc::new(Metrics::new()),
            health: health.clone(),
            findings: SharedFindings::default(),
            node: "test-node".into(),
            repairs: RecentRepairs::default(),
        };
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(serve(
            listener,
            state,
            Limits::default(),
            None,
            std::future::pending(),
        ));

        let (status, body) = get(addr, "/readyz");
        assert_eq!(status, 503);
        assert!(body.contains("not attached"), "{body}");
        assert_eq!(get(addr, "/healthz"), (200, "ok\n".into()));
        health.set_ready();
        assert_eq!(get(addr, "/readyz"), (200, "ready\n".into()));
        let (status, body) = get(addr, "/metrics");
        assert_eq!(status, 200);
        assert!(body.contains("# TYPE watchdog_build_info gauge"), "{body}");
        assert!(!body.contains("# EOF"), "{body}");
        let (_, body) = get_accepting(
            addr,
            "/metrics",
            "application/openmetrics-text; version=1.0.0",
        );
        assert!(body.contains("# TYPE watchdog_build info"), "{body}");
        assert!(body.ends_with("# EOF\n"), "{body}");
        let (status, body) = get(addr, "/api/v1/findings");
        assert_eq!(status, 200);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["schema"], "watchdog.findings/v1");
        assert_eq!(json["node"], "test-node");
        assert_eq!(json["findings"], serde_json::json!([]));
    }

    #[test]
    fn the_health_listener_answers_whatever_idle_connections_it_holds() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let health = Arc::new(Health::default());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(serve_health(
            listener,
            health.clone(),
            Duration::from_secs(30),
            std::future::pending(),
        ));
        // Far more silent connections than it holds, within a header timeout far longer
        // than the test: each answer still comes, the oldest idle ones closed for it.
        let idle: Vec<_> = (0..HEALTH_CONNECTIONS * 4)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        for _ in 0..3 {
            assert_eq!(get(addr, "/healthz"), (200, "ok\n".into()));
        }
        let (status, body) = get(addr, "/readyz");
        assert_eq!(status, 503, "{body}");
        health.set_ready();
        assert_eq!(get(addr, "/readyz"), (200, "ready\n".into()));
        // Nothing else is served there.
        assert_eq!(get(addr, "/metrics").0, 404);
        assert_eq!(get(addr, "/api/v1/findings").0, 404);
        drop(idle);
    }

    /// Serves with `limits` on a runtime of its own; returns the address and the metrics.
    fn start(limits: Limits) -> (std::net::SocketAddr, Arc<Metrics>, tokio::runtime::Runtime) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let metrics = Arc::new(Metrics::new());
        let state = AppState {
            metrics: metrics.clone(),
            health: Arc::new(Health::default()),
            findings: SharedFindings::default(),
            node: "test-node".into(),
            repairs: RecentRepairs::default(),
        };
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(serve(listener, state, limits, None, std::future::pending()));
        (addr, metrics, runtime)
    }

    /// How long the server keeps a connection on which the client sends nothing.
    fn closed_after(addr: std::net::SocketAddr) -> Duration {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let opened = Instant::now();
        let mut buf = [0u8; 64];
        let read = stream.read(&mut buf);
        assert!(
            matches!(read, Ok(0))
                || read.is_err_and(|e| e.kind() != std::io::ErrorKind::WouldBlock),
            "the server did not close the connection"
        );
        opened.elapsed()
    }

    fn timed_out(metrics: &Metrics, which: &str) -> u64 {
        let text = metrics.encode();
        let wanted = format!("watchdog_http_connections_timed_out_total{{timeout=\"{which}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&wanted))
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn silent_connections_close_at_the_first_limit_and_are_counted() {
        let long = Duration::from_secs(20);
        let short = Duration::from_millis(300);
        for (limits, which) in [
            (
                Limits {
                    idle_timeout: short,
                    header_timeout: long,
                    max_lifetime: long,
                    ..Limits::default()
                },
                "idle",
            ),
            (
                Limits {
                    idle_timeout: long,
                    header_timeout: short,
                    max_lifetime: long,
                    ..Limits::default()
                },
                "header",
            ),
            (
                Limits {
                    idle_timeout: long,
                    header_timeout: long,
                    max_lifetime: short,
                    ..Limits::default()
                },
                "lifetime",
            ),
        ] {
            let (addr, metrics, _runtime) = start(limits);
            let closed = closed_after(addr);
            assert!(
                closed >= Duration::from_millis(250) && closed < Duration::from_secs(10),
                "{which}: closed after {closed:?}"
            );
            let deadline = Instant::now() + Duration::from_secs(5);
            while timed_out(&metrics, which) != 1 {
                assert!(Instant::now() < deadline, "{which} not counted");
                std::thread::yield_now();
            }
        }
    }
}
