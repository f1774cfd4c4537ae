//! The commands of the `watchdog` binary: each wires sources, detectors and sinks
//! together. This is the binary's edge: errors end here (printed with their causes, `anyhow`
//! allowed), and every other room may be imported.

pub mod alert;
pub mod check;
pub mod config;
pub mod daemon;
pub mod repair;

use std::process::ExitCode;

use crate::sources::{
    kernel::{caps, procfs},
    probes::ProbeError,
};

/// Why a command that loads eBPF could not start (nothing is attached when these are
/// returned).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Not enough privileges.
    #[error(transparent)]
    Capabilities(#[from] caps::MissingCapabilities),
    /// The daemon's own network namespace could not be read.
    #[error("cannot read this process's network namespace (/proc/self/ns/net): {0}")]
    Netns(std::io::Error),
    /// The eBPF object did not load.
    #[error(transparent)]
    Probes(#[from] ProbeError),
}

/// Checks privileges and lifts the memlock limit: the start of every command that loads
/// eBPF. Returns this process's network namespace.
pub fn prepare() -> Result<u32, StartError> {
    caps::check()?;
    raise_memlock_limit();
    procfs::own_netns().map_err(StartError::Netns)
}

/// A current-thread tokio runtime for one command.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context as _;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Prints `error: <the error and its causes>`; returns `code`.
fn fail(err: &anyhow::Error, code: u8) -> ExitCode {
    eprintln!("error: {err:#}");
    ExitCode::from(code)
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
