//! Where the peer programs are attached: TC ingress and egress on every watched interface
//! of the daemon's namespace, following the network mirror's links (netlink link
//! notifications). TCX links on 6.6 and later, a clsact qdisc and netlink filters before.
//!
//! An interface that disappears has its attachments released (the TCX link's fd closed, the
//! netlink filter forgotten), so pod churn leaks nothing; one that appears again under the
//! same name is a new interface (a new index) and is attached again.

use std::collections::{BTreeMap, BTreeSet};

use aya::{
    Ebpf,
    programs::{
        SchedClassifier, TcAttachType,
        tc::{self, SchedClassifierLinkId, TcError},
    },
};
use watchdog_common::names::programs;

use super::{ProbeError, chain, program};

/// A watched interface the programs are attached to.
#[derive(Debug)]
struct Attached {
    name: String,
    egress: SchedClassifierLinkId,
    ingress: SchedClassifierLinkId,
}

/// The attachments, by interface index.
#[derive(Debug, Default)]
pub struct Attachments {
    /// Interfaces to watch; empty: every non-loopback interface.
    wanted: Vec<String>,
    attached: BTreeMap<u32, Attached>,
    /// Interfaces where attaching failed: (name, why).
    failed: BTreeMap<u32, (String, String)>,
}

/// What one [`Attachments::sync`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Synced {
    /// Interfaces newly attached.
    pub attached: Vec<String>,
    /// Interfaces released because they are gone (or no longer watched).
    pub released: Vec<String>,
    /// Interfaces where attaching failed.
    pub failed: Vec<String>,
}

impl Synced {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.attached.is_empty() && self.released.is_empty() && self.failed.is_empty()
    }
}

impl Attachments {
    /// Loads both programs; attaches nothing yet (see [`Attachments::sync`]).
    pub fn load(ebpf: &mut Ebpf, wanted: Vec<String>) -> Result<Self, ProbeError> {
        for name in [programs::PEERS_EGRESS, programs::PEERS_INGRESS] {
            let classifier: &mut SchedClassifier = program(ebpf, name, "TC")?;
            classifier
                .load()
                .map_err(|source| ProbeError::Rejected { name, source })?;
        }
        Ok(Self {
            wanted,
            ..Self::default()
        })
    }

    /// Interfaces where attaching failed, with the reason.
    pub fn failed(&self) -> impl Iterator<Item = (&str, &str)> {
        self.failed
            .values()
            .map(|(name, why)| (name.as_str(), why.as_str()))
    }

    /// The configured interfaces while none of them is attached (none exists yet);
    /// `None` when one is, or when every interface is watched (nothing configured).
    pub fn none_watched(&self) -> Option<&[String]> {
        (!self.wanted.is_empty() && self.attached.is_empty()).then_some(&self.wanted)
    }

    fn watches(&self, name: &str) -> bool {
        if self.wanted.is_empty() {
            name != "lo"
        } else {
            self.wanted.iter().any(|wanted| wanted == name)
        }
    }

    /// Makes the attachments match `links` (index, name): the interfaces of the daemon's
    /// namespace as the mirror knows them. Releases the attachments of interfaces that are
    /// gone, attaches to watched ones that are new.
    pub fn sync(&mut self, ebpf: &mut Ebpf, links: &[(u32, String)]) -> Synced {
        let watched: BTreeMap<u32, &str> = links
            .iter()
            .filter(|(_, name)| self.watches(name))
            .map(|(index, name)| (*index, name.as_str()))
            .collect();
        let mut synced = Synced::default();
        let gone: Vec<u32> = self
            .attached
            .keys()
            .filter(|index| !watched.contains_key(index))
            .copied()
            .collect();
        for index in gone {
            if let Some(attached) = self.attached.remove(&index) {
                synced.released.push(release(ebpf, attached));
            }
        }
        self.failed.retain(|index, _| watched.contains_key(index));
        // A renamed interface keeps its attachment (TC follows the index).
        for (index, name) in &watched {
            if let Some(attached) = self.attached.get_mut(index)
                && attached.name != *name
            {
                attached.name = (*name).to_owned();
            }
        }
        let fresh: BTreeSet<u32> = watched
            .keys()
            .filter(|index| !self.attached.contains_key(index) && !self.failed.contains_key(index))
            .copied()
            .collect();
        for index in fresh {
            let name = watched[&index];
            match name_then_attach(ebpf, name, index) {
                // The mirror lags the kernel: the name no longer means this interface (a
                // deleted one will be announced, a new one attached next time).
                Ok(None) => {}
                Ok(Some((egress, ingress))) => {
                    tracing::info!(interface = %name, "peer traffic probe attached");
                    self.attached.insert(
                        index,
                        Attached {
                            name: name.to_owned(),
                            egress,
                            ingress,
                        },
                    );
                    synced.attached.push(name.to_owned());
                }
                Err(err) if err.os_error() == Some(libc::ENODEV) => {
                    tracing::debug!(interface = %name, "gone before the probe attached");
                }
                Err(err) => {
                    let why = chain(&err);
                    tracing::warn!(interface = %name, "cannot attach the peer traffic probe: {why}");
                    self.failed.insert(index, (name.to_owned(), why));
                    synced.failed.push(name.to_owned());
                }
            }
        }
        synced
    }
}

/// Attaches to `name` if it still is interface `index`; `Ok(None)` when it is not (gone,
/// or the name now means another interface). A lookup that fails for another reason is an
/// error, never a silent skip: `if_nametoindex` needs a socket, so with no file descriptor
/// left it fails too (EMFILE), and the interface would stay unwatched with nothing said.
fn name_then_attach(
    ebpf: &mut Ebpf,
    name: &str,
    index: u32,
) -> Result<Option<(SchedClassifierLinkId, SchedClassifierLinkId)>, ProbeError> {
    match name_index(name) {
        Ok(Some(now)) if now == index => attach(ebpf, name).map(Some),
        Ok(_) => Ok(None),
        Err(source) => Err(match fd_limit_reached() {
            Some(limit) => ProbeError::FdLimit {
                program: programs::PEERS_EGRESS,
                target: format!("{name} (egress)"),
                limit,
                detail: format!("looking up the interface index: {source}"),
            },
            None => ProbeError::InterfaceIndex {
                interface: name.to_owned(),
                source,
            },
        }),
    }
}

/// The index the kernel gives `name` now (`if_nametoindex`): `Ok(None)` when no interface
/// has that name (ENODEV, or a name no interface can have), the error otherwise.
fn name_index(name: &str) -> std::io::Result<Option<u32>> {
    let Ok(cname) = std::ffi::CString::new(name) else {
        return Ok(None);
    };
    // SAFETY: a NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index != 0 {
        return Ok(Some(index));
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENODEV) => Ok(None),
        _ => Err(err),
    }
}

fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, ProbeError> {
    program(ebpf, name, "TC")
}

/// Attaches egress then ingress to `interface`; on failure nothing stays attached.
fn attach(
    ebpf: &mut Ebpf,
    interface: &str,
) -> Result<(SchedClassifierLinkId, SchedClassifierLinkId), ProbeError> {
    if !super::tcx_available() {
        match tc::qdisc_add_clsact(interface) {
            Ok(()) | Err(TcError::AlreadyAttached) => {}
            Err(TcError::NetlinkError(err)) if err.raw_os_error() == Some(libc::EEXIST) => {}
            Err(source) => {
                return Err(ProbeError::Clsact {
                    interface: interface.to_owned(),
                    source,
                });
            }
        }
    }
    let attach_one = |ebpf: &mut Ebpf, program: &'static str, direction| {
        classifier(ebpf, program)?
            .attach(interface, direction)
            .map_err(|source| {
                let target = format!(
                    "{interface} ({})",
                    if direction == TcAttachType::Egress {
                        "egress"
                    } else {
                        "ingress"
                    }
                );
                match fd_limit_reached() {
                    Some(limit) => ProbeError::FdLimit {
                        program,
                        target,
                        limit,
                        detail: chain(&source),
                    },
                    None => ProbeError::Attach {
                        program,
                        target,
                        source,
                    },
                }
            })
    };
    let egress = attach_one(ebpf, programs::PEERS_EGRESS, TcAttachType::Egress)?;
    match attach_one(ebpf, programs::PEERS_INGRESS, TcAttachType::Ingress) {
        Ok(ingress) => Ok((egress, ingress)),
        Err(err) => {
            if let Ok(program) = classifier(ebpf, programs::PEERS_EGRESS) {
                let _ = program.detach(egress);
            }
            Err(err)
        }
    }
}

/// `Some(RLIMIT_NOFILE)` when the process cannot open another file descriptor (EMFILE).
/// Checked right after a failed attach, before anything is released: the helpers aya uses
/// (`if_nametoindex`) then fail with a misleading errno.
fn fd_limit_reached() -> Option<u64> {
    // SAFETY: duplicates stderr (closed at once); fails with EMFILE when no fd is left.
    let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 0) };
    if fd >= 0 {
        // SAFETY: our own fd.
        unsafe { libc::close(fd) };
        return None;
    }
    if std::io::Error::last_os_error().raw_os_error() != Some(libc::EMFILE) {
        return None;
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes a valid struct.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    Some(limit.rlim_cur)
}

/// Releases both attachments of an interface: a TCX link's fd is closed; a netlink filter
/// is removed (which fails harmlessly when the interface, and the filter with it, is gone).
/// Returns the interface's name.
fn release(ebpf: &mut Ebpf, attached: Attached) -> String {
    let Attached {
        name,
        egress,
        ingress,
    } = attached;
    for (program, id) in [
        (programs::PEERS_EGRESS, egress),
        (programs::PEERS_INGRESS, ingress),
    ] {
        let Ok(classifier) = classifier(ebpf, program) else {
            continue;
        };
        if let Err(err) = classifier.detach(id) {
            tracing::debug!(interface = %name, "releasing {program}: {}", chain(&err));
        }
    }
    tracing::debug!(interface = %name, "peer traffic probe released");
    name
}
