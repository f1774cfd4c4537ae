//! The HTTP server: `/metrics`, `/healthz`, `/readyz`, `/api/v1/findings`.

use std::sync::Arc;

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};

use crate::{pipeline::SharedFindings, sinks::health::Health, sinks::metrics::Metrics};

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
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/v1/findings", get(findings))
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

/// `GET /api/v1/findings`: see the README for the schema.
async fn findings(State(state): State<AppState>) -> impl IntoResponse {
    let findings = state.findings.read().expect("findings lock").clone();
    axum::Json(crate::findings::Report::new(&state.node, findings))
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.health.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
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
        };
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(serve(listener, state, std::future::pending()));

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
}
