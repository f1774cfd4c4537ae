//! The commands of the `watchdog` binary: each wires sources, detectors and sinks
//! together. This is the binary's edge: errors end here (printed with their causes, `anyhow`
//! allowed), and every other room may be imported.

pub mod alert;
pub mod check;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod repair;
pub mod repair_undo;

#[cfg(test)]
mod one_judgement;

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
    eprintln!("error: {}", chain(err));
    ExitCode::from(code)
}

/// The error and its causes joined by `: `, each said once: many errors already name
/// their cause in their own message (`cannot read config file x: <the io error>`), and
/// anyhow's `{:#}` would print it again.
fn chain(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

/// Whether to colour a stream: only a terminal, and never when `NO_COLOR` is set to
/// anything but the empty string (<https://no-color.org>).
pub fn colour(is_terminal: bool) -> bool {
    colour_with(is_terminal, std::env::var_os("NO_COLOR").as_deref())
}

fn colour_with(is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    is_terminal && no_color.is_none_or(|value| value.is_empty())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cause_is_said_once() {
        let io = || std::io::Error::from(std::io::ErrorKind::NotFound);
        // A thiserror message that embeds its `source`.
        let err = anyhow::Error::from(crate::config::ConfigError::Read {
            path: "/x.toml".into(),
            source: io(),
        });
        assert_eq!(format!("{err:#}").matches("entity not found").count(), 2);
        let text = chain(&err);
        assert_eq!(text.matches("entity not found").count(), 1, "{text}");
        assert_eq!(text, "cannot read config file /x.toml: entity not found");
        // Context that does not repeat its cause keeps it.
        let err = anyhow::Error::from(io()).context("cannot start");
        assert_eq!(chain(&err), "cannot start: entity not found");
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(colour_with(true, None));
        assert!(colour_with(true, Some(OsStr::new(""))));
        assert!(!colour_with(true, Some(OsStr::new("1"))));
        assert!(!colour_with(false, None));
    }
}
