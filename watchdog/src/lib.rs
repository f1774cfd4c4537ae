//! watchdog: a node-local eBPF network watchdog.
//!
//! Data flows one way: kernel → sources (eBPF probes, netlink mirror) → detectors →
//! findings → sinks (metrics, HTTP API, alerts). See `ARCHITECTURE.md` at the repository
//! root for the rooms and what each may import.

pub mod commands;
pub mod config;
pub mod detect;
pub mod findings;
pub mod model;
pub mod netlink;
pub mod overlay;
pub mod pipeline;
pub mod repair;
pub mod sinks;
pub mod sources;
