//! The network mirror: a userspace copy of the kernel's network state (links, addresses,
//! routes of every table, policy rules, neighbours, bridge FDB) in the daemon's network
//! namespace, loaded by netlink dumps and kept current by netlink notifications.
//!
//! Two netlink sockets: one subscribed to the rtnetlink multicast groups before anything
//! is dumped, one for the dumps (opened for each load). Notifications that arrive during a dump wait in the
//! first socket's queue and are applied afterwards; each one carries an object's whole
//! state, so applying them in order after the dump converges on the kernel's state.
//! When the notification socket overruns (ENOBUFS: the kernel dropped notifications),
//! the mirror starts over as at start-up: a new subscription, then a dump into a fresh
//! [`Snapshot`] that replaces the old one; the old socket and what it still queued are
//! dropped (those messages predate the lost ones).
//!
//! Readers take the snapshot under a read lock ([`Mirror::with_snapshot`],
//! [`Mirror::read`]); the writer applies notifications in batches under the write lock
//! and then bumps a generation number readers can wait on ([`Mirror::subscribe`]).

use std::{
    io,
    os::fd::AsRawFd as _,
    sync::{
        Arc, Mutex, PoisonError, RwLock, RwLockReadGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::StreamExt as _;
use netlink_packet_core::{
    NLM_F_APPEND, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage, address::AddressMessage, link::LinkMessage,
    neighbour::NeighbourMessage, route::RouteMessage, rule::RuleMessage,
};
use netlink_sys::AsyncSocket as _;
use rtnetlink::{Handle, MulticastGroup};
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    model::{
        net::{ObjectCounts, Snapshot},
        status::MirrorStats,
    },
    netlink,
};

/// Receive buffer of the notification socket. The kernel doubles the value set here.
const RECEIVE_BUFFER: usize = 4 << 20;

/// How the mirror is set up.
#[derive(Clone, Copy, Debug)]
pub struct MirrorOptions {
    /// Receive buffer of the notification socket in bytes (default 4 MiB; the kernel
    /// doubles it). Smaller means full reloads after shorter bursts of changes.
    pub receive_buffer: usize,
}

impl Default for MirrorOptions {
    fn default() -> Self {
        Self {
            receive_buffer: RECEIVE_BUFFER,
        }
    }
}

/// Most notifications applied under one write lock, so readers are not starved.
const MAX_BATCH: usize = 2048;

/// Dumps interrupted by concurrent changes (NLM_F_DUMP_INTR) are retried this often.
const DUMP_ATTEMPTS: u32 = 3;

/// Why the mirror could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// No netlink route socket.
    #[error(
        "cannot open a netlink route socket: {0}; the mirror needs NETLINK_ROUTE sockets \
         (check that no seccomp profile or LSM policy denies them)"
    )]
    Socket(io::Error),
    /// No netlink route socket because the process has no file descriptor left.
    #[error(
        "cannot open a netlink route socket: out of file descriptors ({0}); raise \
         RLIMIT_NOFILE (LimitNOFILE= or the container's nofile ulimit)"
    )]
    FdLimit(io::Error),
    /// The multicast subscription failed.
    #[error(
        "cannot subscribe to rtnetlink notifications: {0}; the mirror needs to join the \
         link, address, route, rule and neighbour groups of NETLINK_ROUTE"
    )]
    Subscribe(io::Error),
    /// The kernel answered a dump with an error.
    #[error(
        "the kernel refused to dump {what}: {source}; the mirror needs read access to the \
         namespace's {what} (same as `ip` without privileges)"
    )]
    Dump {
        /// What was being dumped.
        what: &'static str,
        /// The kernel's error.
        source: io::Error,
    },
    /// A netlink connection ended.
    #[error(
        "the netlink connection closed while {0}; the mirror stopped following the kernel, \
         restart the daemon (and report it if it repeats)"
    )]
    Closed(&'static str),
}

/// The mirror's counters, shared with the metrics exporter.
#[derive(Debug, Default)]
pub struct MirrorCounters {
    updates: AtomicU64,
    resyncs_initial: AtomicU64,
    resyncs_overrun: AtomicU64,
    counts: [AtomicU64; 6],
}

impl MirrorCounters {
    /// The current values.
    pub fn stats(&self) -> MirrorStats {
        let count = |i: usize| self.counts[i].load(Ordering::Relaxed) as usize;
        MirrorStats {
            updates: self.updates.load(Ordering::Relaxed),
            resyncs_initial: self.resyncs_initial.load(Ordering::Relaxed),
            resyncs_overrun: self.resyncs_overrun.load(Ordering::Relaxed),
            objects: ObjectCounts {
                links: count(0),
                addresses: count(1),
                routes: count(2),
                rules: count(3),
                neighbours: count(4),
                fdb: count(5),
            },
        }
    }

    fn set_counts(&self, counts: ObjectCounts) {
        let values = [
            counts.links,
            counts.addresses,
            counts.routes,
            counts.rules,
            counts.neighbours,
            counts.fdb,
        ];
        for (slot, value) in self.counts.iter().zip(values) {
            slot.store(value as u64, Ordering::Relaxed);
        }
    }
}

#[derive(Debug)]
struct Shared {
    snapshot: RwLock<Snapshot>,
    generation: watch::Sender<u64>,
    counters: Arc<MirrorCounters>,
    /// Why the snapshot is out of date (a reload failing), if it is.
    failure: Mutex<Option<String>>,
}

impl Shared {
    fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_failure(&self, failure: Option<String>) {
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = failure;
    }
}

/// A live mirror of the kernel's network state; cheap to clone.
#[derive(Clone, Debug)]
pub struct Mirror {
    shared: Arc<Shared>,
}

/// The notification groups the mirror follows. FDB changes come as AF_BRIDGE neighbour
/// messages on the neighbour group.
const GROUPS: [MulticastGroup; 8] = [
    MulticastGroup::Link,
    MulticastGroup::Ipv4Ifaddr,
    MulticastGroup::Ipv6Ifaddr,
    MulticastGroup::Ipv4Route,
    MulticastGroup::Ipv6Route,
    MulticastGroup::Ipv4Rule,
    MulticastGroup::Ipv6Rule,
    MulticastGroup::Neigh,
];

/// Aborts a spawned task (a netlink connection) when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Mirror {
    /// Subscribes to notifications, loads the current state, and spawns the task that
    /// follows changes (on the current tokio runtime; a current-thread runtime works).
    /// The task runs until it fails or is aborted; aborting it closes the sockets.
    pub async fn start() -> Result<(Mirror, JoinHandle<Result<(), MirrorError>>), MirrorError> {
        Self::start_with(MirrorOptions::default()).await
    }

    /// As [`Mirror::start`], with `options`.
    pub async fn start_with(
        options: MirrorOptions,
    ) -> Result<(Mirror, JoinHandle<Result<(), MirrorError>>), MirrorError> {
        let (events_task, events) = subscribe(options.receive_buffer)?;
        let snapshot = dump_all().await?;
        let counters = Arc::new(MirrorCounters::default());
        counters.resyncs_initial.fetch_add(1, Ordering::Relaxed);
        counters.set_counts(snapshot.counts());
        tracing::info!(objects = ?snapshot.counts(), "network mirror loaded");
        let shared = Arc::new(Shared {
            snapshot: RwLock::new(snapshot),
            generation: watch::channel(0).0,
            counters,
            failure: Mutex::new(None),
        });
        let task = tokio::spawn(follow(
            shared.clone(),
            events,
            events_task,
            options.receive_buffer,
        ));
        Ok((Mirror { shared }, task))
    }

    /// Runs `f` on the current snapshot under the read lock. Keep `f` short: the mirror
    /// cannot apply changes meanwhile.
    pub fn with_snapshot<R>(&self, f: impl FnOnce(&Snapshot) -> R) -> R {
        f(&self.read())
    }

    /// The current snapshot behind a read guard (drop it soon, as for
    /// [`Mirror::with_snapshot`]).
    pub fn read(&self) -> RwLockReadGuard<'_, Snapshot> {
        self.shared
            .snapshot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A number that grows each time the snapshot changes.
    pub fn generation(&self) -> u64 {
        *self.shared.generation.borrow()
    }

    /// A receiver of the generation number: `changed().await` wakes after each batch of
    /// changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.generation.subscribe()
    }

    /// Why the snapshot is out of date, while it is: notifications were lost and the
    /// reload that replaces it keeps failing (it is retried with a growing delay).
    pub fn failure(&self) -> Option<String> {
        self.shared.failure()
    }

    /// The mirror's counters (for metrics).
    pub fn counters(&self) -> Arc<MirrorCounters> {
        self.shared.counters.clone()
    }

    /// A reading of the counters.
    pub fn stats(&self) -> MirrorStats {
        self.shared.counters.stats()
    }
}

/// Raises the socket's receive buffer, past `net.core.rmem_max` when privileged
/// (SO_RCVBUFFORCE); a failure only makes overruns likelier, so it is logged.
fn set_receive_buffer(socket: &netlink_sys::Socket, bytes: usize) {
    let fd = socket.as_raw_fd();
    let value = bytes as libc::c_int;
    for option in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: a valid socket fd and a c_int option value of the right size.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                (&raw const value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
    tracing::warn!(
        error = %io::Error::last_os_error(),
        "cannot raise the netlink receive buffer; bursts of changes may force full reloads"
    );
}

/// The notifications of one subscription, in the kernel's order.
type Events = futures::channel::mpsc::UnboundedReceiver<(
    NetlinkMessage<RouteNetlinkMessage>,
    netlink_sys::SocketAddr,
)>;

/// Opens a socket subscribed to [`GROUPS`] with a `receive_buffer`-byte buffer, and
/// spawns the connection task that reads it.
fn subscribe(receive_buffer: usize) -> Result<(AbortOnDrop, Events), MirrorError> {
    let (mut connection, _handle, events) =
        rtnetlink::new_multicast_connection(&GROUPS).map_err(MirrorError::Subscribe)?;
    set_receive_buffer(connection.socket_mut().socket_mut(), receive_buffer);
    Ok((AbortOnDrop(tokio::spawn(connection)), events))
}

/// Applies notifications until the connection ends; starts over on overrun.
async fn follow(
    shared: Arc<Shared>,
    mut events: Events,
    mut _connection: AbortOnDrop,
    receive_buffer: usize,
) -> Result<(), MirrorError> {
    let counters = &shared.counters;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let first = events
            .next()
            .await
            .ok_or(MirrorError::Closed("waiting for notifications"))?;
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match events.try_recv() {
                Ok(message) => batch.push(message),
                Err(_) => break,
            }
        }
        let mut pending = batch.drain(..);
        let mut overrun = false;
        let mut applied = 0;
        {
            let mut snapshot = shared
                .snapshot
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            for (message, _) in pending.by_ref() {
                let flags = message.header.flags;
                match message.payload {
                    NetlinkPayload::InnerMessage(inner) => {
                        if let Some(update) = netlink::update(inner, flags) {
                            snapshot.apply(update);
                            applied += 1;
                        }
                    }
                    NetlinkPayload::Overrun(_) => {
                        overrun = true;
                        break;
                    }
                    _ => {}
                }
            }
            counters.set_counts(snapshot.counts());
        }
        counters.updates.fetch_add(applied, Ordering::Relaxed);
        if overrun {
            // Notifications were lost. What is still queued cannot be applied either:
            // the kernel reports the overrun before the messages already in the socket's
            // queue, which are older than the lost ones (a link's RTM_NEWLINK queued, its
            // RTM_DELLINK lost, would bring it back after the reload). So start over as at
            // start-up: a new subscription, then a dump, then the new socket's messages.
            tracing::warn!("netlink notifications overran the socket buffer; reloading");
            let (fresh, fresh_connection, fresh_events) = reload(&shared, receive_buffer).await;
            counters.set_counts(fresh.counts());
            *shared
                .snapshot
                .write()
                .unwrap_or_else(PoisonError::into_inner) = fresh;
            // The old socket, its queue and the rest of this batch are dropped.
            _connection = fresh_connection;
            events = fresh_events;
            counters.resyncs_overrun.fetch_add(1, Ordering::Relaxed);
        }
        drop(pending);
        shared.generation.send_modify(|g| *g += 1);
    }
}

/// First wait before dumping again after a failed reload; doubles up to [`RELOAD_MAX`].
const RELOAD_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between reload attempts.
const RELOAD_MAX: Duration = Duration::from_secs(30);

/// Subscribes afresh and dumps everything until both work, waiting longer after each
/// failure (the kernel may refuse a dump under memory pressure, or a netlink socket may
/// not open for a while). Meanwhile the old snapshot stays, marked out of date
/// ([`Mirror::failure`]).
async fn reload(shared: &Shared, receive_buffer: usize) -> (Snapshot, AbortOnDrop, Events) {
    let mut delay = RELOAD_BACKOFF;
    loop {
        let loaded = match subscribe(receive_buffer) {
            Ok((connection, events)) => dump_all()
                .await
                .map(|snapshot| (snapshot, connection, events)),
            Err(err) => Err(err),
        };
        match loaded {
            Ok(loaded) => {
                if shared.failure().is_some() {
                    tracing::info!("network mirror reloaded; it follows the kernel again");
                }
                shared.set_failure(None);
                return loaded;
            }
            Err(err) => {
                tracing::warn!(
                    "reloading the network mirror failed: {err}; it is out of date until a \
                     reload works, next attempt in {delay:?}"
                );
                shared.set_failure(Some(format!(
                    "network mirror out of date: reloading after lost notifications failed \
                     ({err}); retrying"
                )));
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RELOAD_MAX);
            }
        }
    }
}

/// Loads the current state of the calling thread's network namespace once, without
/// following it: what [`Mirror::start`] loads first (tests compare a long-running mirror
/// with it; repair re-reads with it to verify).
pub async fn dump() -> Result<Snapshot, MirrorError> {
    dump_all().await
}

/// Dumps everything into a fresh snapshot, retrying when a dump was interrupted. Each
/// load uses its own connection, closed afterwards: a connection's queues grow to the
/// size of the largest dump and never shrink.
async fn dump_all() -> Result<Snapshot, MirrorError> {
    let (connection, mut handle, _) = rtnetlink::new_connection().map_err(|err| {
        if err.raw_os_error() == Some(libc::EMFILE) {
            MirrorError::FdLimit(err)
        } else {
            MirrorError::Socket(err)
        }
    })?;
    let _connection = AbortOnDrop(tokio::spawn(connection));
    let handle = &mut handle;
    let mut attempt = 1;
    loop {
        let mut snapshot = Snapshot::new();
        let mut interrupted = false;
        for (what, request, required) in dump_requests() {
            interrupted |= dump_one(handle, what, request, required, &mut snapshot).await?;
        }
        if !interrupted || attempt >= DUMP_ATTEMPTS {
            if interrupted {
                tracing::warn!(
                    "netlink dumps kept being interrupted by changes; using the last one \
                     (notifications will correct it)"
                );
            }
            return Ok(snapshot);
        }
        attempt += 1;
    }
}

/// (what, request, whether an error is fatal) for each dump, in dependency order.
fn dump_requests() -> Vec<(&'static str, RouteNetlinkMessage, bool)> {
    let link = LinkMessage::default();
    let address = AddressMessage::default();
    let route = |family| {
        let mut m = RouteMessage::default();
        m.header.address_family = family;
        // RT_TABLE_UNSPEC: every table (a non-strict dump ignores it anyway).
        m.header.table = 0;
        m
    };
    let rule = |family| {
        let mut m = RuleMessage::default();
        m.header.family = family;
        m
    };
    let neighbour = |family| {
        let mut m = NeighbourMessage::default();
        m.header.family = family;
        m
    };
    vec![
        ("links", RouteNetlinkMessage::GetLink(link), true),
        ("addresses", RouteNetlinkMessage::GetAddress(address), true),
        (
            "IPv4 routes",
            RouteNetlinkMessage::GetRoute(route(AddressFamily::Inet)),
            true,
        ),
        (
            "IPv6 routes",
            RouteNetlinkMessage::GetRoute(route(AddressFamily::Inet6)),
            false,
        ),
        (
            "IPv4 rules",
            RouteNetlinkMessage::GetRule(rule(AddressFamily::Inet)),
            true,
        ),
        (
            "IPv6 rules",
            RouteNetlinkMessage::GetRule(rule(AddressFamily::Inet6)),
            false,
        ),
        (
            "IPv4 neighbours",
            RouteNetlinkMessage::GetNeighbour(neighbour(AddressFamily::Inet)),
            true,
        ),
        (
            "IPv6 neighbours",
            RouteNetlinkMessage::GetNeighbour(neighbour(AddressFamily::Inet6)),
            false,
        ),
        (
            "the bridge FDB",
            RouteNetlinkMessage::GetNeighbour(neighbour(AddressFamily::Bridge)),
            false,
        ),
    ]
}

/// One dump into `snapshot`; returns whether the kernel flagged it interrupted. An
/// error from an optional dump (IPv6 disabled, no bridge support) is logged and skipped.
async fn dump_one(
    handle: &mut Handle,
    what: &'static str,
    request: RouteNetlinkMessage,
    required: bool,
    snapshot: &mut Snapshot,
) -> Result<bool, MirrorError> {
    let mut message = NetlinkMessage::from(request);
    message.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut responses = handle
        .request(message)
        .map_err(|_| MirrorError::Closed("sending a dump request"))?;
    let mut interrupted = false;
    while let Some(response) = responses.next().await {
        interrupted |= response.header.flags & NLM_F_DUMP_INTR != 0;
        match response.payload {
            NetlinkPayload::InnerMessage(inner) => {
                // In the kernel's order: each route after those with its key.
                if let Some(update) = netlink::update(inner, NLM_F_APPEND) {
                    snapshot.apply(update);
                }
            }
            NetlinkPayload::Error(error) if error.code.is_some() => {
                let source = error.to_io();
                if required {
                    return Err(MirrorError::Dump { what, source });
                }
                tracing::warn!(%source, "cannot dump {what}; the mirror will lack them");
                break;
            }
            _ => {}
        }
    }
    Ok(interrupted)
}
