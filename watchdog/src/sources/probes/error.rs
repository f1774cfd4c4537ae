//! The probe layer's errors: one enum wrapping aya's errors (and the kernel helpers') with
//! their sources kept, so a failure says the true reason.

use aya::{EbpfError, maps::MapError, programs::ProgramError};

use crate::sources::kernel::{btf::BtfError, tracefs::TracefsError};

/// Why a probe could not be set up, attached or read.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The kernel refused the object (maps or BTF): nothing can attach.
    #[error("loading the eBPF object failed")]
    Load(#[from] EbpfError),
    /// The object lacks a program (a build problem).
    #[error("the eBPF object has no {0} program")]
    NoProgram(&'static str),
    /// A program of the object has another type than its probe expects (a build problem).
    #[error("{name} is not a {expected} program")]
    ProgramType {
        /// The program.
        name: &'static str,
        /// The type the probe expects.
        expected: &'static str,
        /// aya's error.
        #[source]
        source: ProgramError,
    },
    /// The verifier rejected a program.
    #[error("the kernel rejected {name}")]
    Rejected {
        /// The program.
        name: &'static str,
        /// aya's error (with the verifier log).
        #[source]
        source: ProgramError,
    },
    /// A program did not attach.
    #[error("attaching {program} to {target} failed")]
    Attach {
        /// The program.
        program: &'static str,
        /// Where: a tracepoint (`skb:kfree_skb`) or an interface and direction.
        target: String,
        /// aya's error.
        #[source]
        source: ProgramError,
    },
    /// A program did not attach because the process has no file descriptor left: aya's
    /// own error then names whatever errno a helper was left with, so it is shown after
    /// the true reason, not as it.
    #[error(
        "attaching {program} to {target} failed: out of file descriptors (all {limit} of \
         RLIMIT_NOFILE are open; raise the limit, e.g. LimitNOFILE= or the container's \
         nofile ulimit); aya reported: {detail}"
    )]
    FdLimit {
        /// The program.
        program: &'static str,
        /// The interface and direction.
        target: String,
        /// The soft RLIMIT_NOFILE.
        limit: u64,
        /// aya's error and its causes, as text.
        detail: String,
    },
    /// The interface's index could not be looked up before attaching, for another reason
    /// than the interface being gone (out of file descriptors is [`ProbeError::FdLimit`]).
    #[error("looking up the index of {interface} failed")]
    InterfaceIndex {
        /// The interface.
        interface: String,
        /// The error `if_nametoindex` left.
        #[source]
        source: std::io::Error,
    },
    /// The clsact qdisc (kernels before 6.6) could not be added.
    #[error("adding the clsact qdisc to {interface} failed")]
    Clsact {
        /// The interface.
        interface: String,
        /// aya's error.
        #[source]
        source: aya::programs::tc::TcError,
    },
    /// The object lacks a map (a build problem).
    #[error("the eBPF object has no {0} map")]
    NoMap(&'static str),
    /// A map could not be opened or read.
    #[error("reading the {name} map failed")]
    Map {
        /// The map.
        name: &'static str,
        /// aya's error.
        #[source]
        source: MapError,
    },
    /// `membarrier(MEMBARRIER_CMD_GLOBAL)` failed while reading the peer maps, so the reader
    /// cannot wait for running TC programs and the per-CPU cache cannot be read exactly
    /// (nothing is read). The loader only enables the cache where the kernel offers it.
    #[error("membarrier(MEMBARRIER_CMD_GLOBAL) failed, so the peer cache cannot be read exactly")]
    Membarrier(#[source] std::io::Error),
    /// tracefs was not found, so tracepoint formats cannot be read.
    #[error("tracefs is not available, so the tracepoint format of {0} cannot be read")]
    NoTracefs(&'static str),
    /// A tracepoint format file could not be read or parsed.
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    /// A tracepoint lacks a field the probe reads.
    #[error("tracepoint {event} has no field {field}")]
    NoField {
        /// The tracepoint.
        event: String,
        /// The field.
        field: &'static str,
    },
    /// A tracepoint field has an unexpected size.
    #[error("the {event} {field} field has size {size}, expected {expected}")]
    FieldSize {
        /// The tracepoint.
        event: &'static str,
        /// The field.
        field: &'static str,
        /// Its size.
        size: u32,
        /// The size the probe reads.
        expected: u32,
    },
    /// No kernel BTF: drops and TCP outcomes cannot be attributed to namespaces.
    #[error("no kernel BTF")]
    NoBtf,
    /// Kernel BTF lacks an offset the probe needs.
    #[error("BTF lacks an offset")]
    Btf(#[from] BtfError),
    /// The network mirror does not run, so the interfaces to watch are unknown.
    #[error("the network mirror is not running, so the interfaces to watch are unknown")]
    NoInterfaces,
    /// None of the interfaces `peers.interfaces` names exists (or is attached yet).
    #[error(
        "none of the configured interfaces exists: {}; nothing is watched until one \
         appears (check `peers.interfaces` against `ip link`)",
        .0.join(", ")
    )]
    NoneWatched(Vec<String>),
}

impl ProbeError {
    /// True when the kernel lacks what the probe needs (a tracepoint, or a field of it):
    /// the probe is then unsupported on this kernel, reported but not a readiness failure.
    /// A missing tracefs is a failure (a mount is missing, not a property of the kernel).
    pub fn kernel_lacks_it(&self) -> bool {
        matches!(self, Self::Tracefs(_) | Self::NoField { .. })
    }

    /// A map error of map `name`.
    pub fn map(name: &'static str) -> impl FnOnce(MapError) -> Self {
        move |source| Self::Map { name, source }
    }

    /// The raw OS error at the bottom of the chain, if any.
    pub fn os_error(&self) -> Option<i32> {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(self);
        let mut errno = None;
        while let Some(err) = source {
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                errno = io.raw_os_error().or(errno);
            }
            source = err.source();
        }
        errno
    }
}

/// The error and every cause under it, `: `-separated, skipping a cause the text already
/// shows: what a log line or `/readyz` says.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let shown = cause.to_string();
        if !text.contains(&shown) {
            text.push_str(": ");
            text.push_str(&shown);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_names_the_true_reason_once() {
        let err = ProbeError::Map {
            name: "PEERS",
            source: MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_lookup_elem",
                io_error: std::io::Error::from_raw_os_error(libc::EMFILE),
            }),
        };
        let text = chain(&err);
        assert!(
            text.starts_with("reading the PEERS map failed: `bpf_map_lookup_elem` failed"),
            "{text}"
        );
        assert!(
            text.ends_with("Too many open files (os error 24)"),
            "{text}"
        );
        assert_eq!(err.os_error(), Some(libc::EMFILE));
        let tracefs = ProbeError::NoTracefs("skb:kfree_skb");
        assert_eq!(
            chain(&tracefs),
            "tracefs is not available, so the tracepoint format of skb:kfree_skb cannot be read"
        );
    }
}
