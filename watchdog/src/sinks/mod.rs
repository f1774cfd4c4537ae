//! Where findings and readings go: Prometheus metrics, the HTTP API, readiness, alerts,
//! and the text `watchdog check` prints.

pub mod alerts;
pub mod health;
pub mod http;
pub mod metrics;
pub mod runbook;
pub mod server_tls;
pub mod text;
