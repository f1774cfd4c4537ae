//! What explains a drop whose reason names a part of the stack: the nftables ruleset with
//! its counters ([`nftables`]), the reverse-path filter sysctls, the devices' checksum
//! offloads ([`ethtool`]). Read only what the pipeline asks for (a
//! [`StackRequest`] built from the drops of this node's traffic it saw), at most once a
//! second each, so a node without such drops reads none of it.

mod ethtool;
pub mod nftables;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    model::stack::{Netfilter, NetfilterReadings, Offloads, RpFilter, Stack, StackRequest},
    sources::kernel::procfs,
};

/// The shortest time between two reads of one kind.
pub const READ_INTERVAL: Duration = Duration::from_secs(1);

/// Reads what the pipeline asks for and keeps the readings.
#[derive(Debug)]
pub struct StackReader {
    enabled: bool,
    request: StackRequest,
    netfilter: Option<NetfilterReadings>,
    rp_filter: Option<(Instant, BTreeSet<String>, Arc<RpFilter>)>,
    offloads: Option<(Instant, Arc<BTreeMap<String, Offloads>>)>,
}

impl StackReader {
    /// A reader; `enabled` false (`probes.explain_drops = false`) reads nothing.
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            request: StackRequest::default(),
            netfilter: None,
            rp_filter: None,
            offloads: None,
        }
    }

    /// What the next [`StackReader::read`]s read (until the next request).
    pub fn request(&mut self, request: StackRequest) {
        self.request = request;
    }

    /// Reads what is asked for and due; forgets what is no longer asked for (a netfilter
    /// baseline starts afresh with the next drops).
    pub fn read(&mut self) -> Stack {
        if !self.enabled {
            return Stack::default();
        }
        let now = Instant::now();
        let due = |at: Instant| now.saturating_duration_since(at) >= READ_INTERVAL;
        if !self.request.netfilter {
            self.netfilter = None;
        } else if self
            .netfilter
            .as_ref()
            .is_none_or(|readings| due(readings.latest.at))
        {
            let reading = Arc::new(read_netfilter(now));
            self.netfilter = Some(match self.netfilter.take() {
                None => NetfilterReadings {
                    baseline: reading.clone(),
                    latest: reading,
                },
                Some(readings) => NetfilterReadings {
                    baseline: readings.baseline,
                    latest: reading,
                },
            });
        }
        if self.request.rp_filter.is_empty() {
            self.rp_filter = None;
        } else if self
            .rp_filter
            .as_ref()
            .is_none_or(|(at, devices, _)| due(*at) || !self.request.rp_filter.is_subset(devices))
        {
            let devices = self.request.rp_filter.clone();
            let values = read_rp_filter(&devices);
            self.rp_filter = Some((now, devices, Arc::new(values)));
        }
        if self.request.offloads.is_empty() {
            self.offloads = None;
        } else if self.offloads.as_ref().is_none_or(|(at, read)| {
            due(*at)
                || self
                    .request
                    .offloads
                    .iter()
                    .any(|dev| !read.contains_key(dev))
        }) {
            let read: BTreeMap<String, Offloads> = self
                .request
                .offloads
                .iter()
                .map(|dev| {
                    let features = ethtool::checksum_features(dev)
                        .map_err(|err| format!("cannot read {dev}'s offloads: {err}"));
                    (dev.clone(), Offloads { features })
                })
                .collect();
            self.offloads = Some((now, Arc::new(read)));
        }
        Stack {
            netfilter: self.netfilter.clone(),
            rp_filter: self.rp_filter.as_ref().map(|(_, _, values)| values.clone()),
            offloads: self.offloads.as_ref().map(|(_, read)| read.clone()),
        }
    }
}

/// One reading of the netfilter configuration: nftables over netlink, and which
/// iptables-legacy tables exist.
fn read_netfilter(at: Instant) -> Netfilter {
    let tables = nftables::read_ruleset()
        .map_err(|err| format!("cannot read the nftables ruleset over netlink: {err}"));
    if let Err(why) = &tables {
        tracing::debug!("{why}");
    }
    let mut legacy = Vec::new();
    for (file, family) in [("ip_tables_names", "ip"), ("ip6_tables_names", "ip6")] {
        let names = std::fs::read_to_string(format!("/proc/net/{file}")).unwrap_or_default();
        legacy.extend(
            names
                .lines()
                .map(|name| format!("{family} {}", name.trim())),
        );
    }
    Netfilter { at, tables, legacy }
}

/// `net.ipv4.conf.{all,default,<dev>}.rp_filter` for `devices`.
fn read_rp_filter(devices: &BTreeSet<String>) -> RpFilter {
    let mut values = BTreeMap::new();
    for name in ["all", "default"]
        .into_iter()
        .chain(devices.iter().map(String::as_str))
    {
        // A name with a slash would leave the directory; the kernel allows none.
        if name.contains('/') || name.starts_with('.') {
            continue;
        }
        if let Some(value) = procfs::read_sysctl(&format!("net/ipv4/conf/{name}/rp_filter"))
            .and_then(|text| text.trim().parse().ok())
        {
            values.insert(name.to_owned(), value);
        }
    }
    RpFilter { values }
}
