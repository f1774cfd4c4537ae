//! watchdog: a node-local eBPF network watchdog.
//!
//! Data flows one way: kernel (eBPF probes, netlink) → snapshots → detectors → sinks
//! (metrics, alerts, repair, API). See `shared/DESIGN.md`.

pub mod alerts;
pub mod btf;
pub mod caps;
pub mod check;
pub mod config;
pub mod daemon;
pub mod detect;
pub mod findings;
pub mod health;
pub mod http;
pub mod metrics;
pub mod mirror;
/// Plain data shared between stages (imports nothing else of the crate).
pub mod model {
    pub mod desired;
}
pub mod pipeline;
pub mod probes;
pub mod procfs;
pub mod sources;
pub mod tracefs;
