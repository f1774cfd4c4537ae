//! The commands of the `watchdog` binary: they wire sources, detectors and sinks together.

pub mod check;
pub mod daemon;
