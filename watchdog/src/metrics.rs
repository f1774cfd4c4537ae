//! Prometheus metrics (OpenMetrics text). Names start with `watchdog_`, carry their unit,
//! and use bounded label sets.

use std::sync::{Arc, RwLock};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        info::Info,
    },
    registry::Registry,
};

use crate::{
    findings::{Finding, Kind, Severity},
    mirror::MirrorCounters,
    probes::{
        kfree_skb::{DropSnapshot, KfreeSkb},
        peers::{PeerSnapshot, interface_name},
        tcp::ConnectSnapshot,
    },
};

/// A label set: (name, value) pairs.
type Labels = Vec<(&'static str, String)>;

/// Every metric the daemon exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `watchdog_probe_up{probe}`: 1 attached, 0 failed.
    pub probe_up: Family<Labels, Gauge>,
    /// `watchdog_probe_unsupported{probe}`: 1 when this kernel lacks what the probe needs.
    pub probe_unsupported: Family<Labels, Gauge>,
    /// `watchdog_netns_attribution`: 1 when drops are attributed to network namespaces.
    pub netns_attribution: Gauge,
    /// `watchdog_map_read_errors_total`: failed reads of the in-kernel maps.
    pub map_read_errors: Counter,
    /// `watchdog_kernel_feature{feature}`: 1 when this kernel offers it and the probes use
    /// it.
    pub kernel_features: Family<Labels, Gauge>,
    findings: Family<Labels, Gauge>,
    ghost_routes: Family<Labels, Gauge>,
    /// `watchdog_alerts_*`: delivery of alerts per sink.
    pub alerts: crate::alerts::AlertMetrics,
    kernel: Arc<KernelCollector>,
    mirror: Arc<MirrorCollector>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        registry.register(
            "watchdog_build",
            "Build information of the running watchdog",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION").to_owned())]),
        );
        let probe_up = Family::<Labels, Gauge>::default();
        registry.register(
            "watchdog_probe_up",
            "Whether an enabled probe is attached (1) or failed (0)",
            probe_up.clone(),
        );
        let probe_unsupported = Family::<Labels, Gauge>::default();
        registry.register(
            "watchdog_probe_unsupported",
            "1 when this kernel lacks what an enabled probe needs (it is then down, but the \
             daemon is ready without it)",
            probe_unsupported.clone(),
        );
        let netns_attribution = Gauge::default();
        registry.register(
            "watchdog_netns_attribution",
            "1 when kernel drops are attributed to network namespaces (needs kernel BTF); \
             0 when every namespace's drops are counted together",
            netns_attribution.clone(),
        );
        let map_read_errors = Counter::default();
        registry.register(
            "watchdog_map_read_errors",
            "Failed reads of the in-kernel counter maps",
            map_read_errors.clone(),
        );
        let kernel_features = Family::<Labels, Gauge>::default();
        registry.register(
            "watchdog_kernel_feature",
            "Kernel features found at start-up (1) or missing (0): btf, tracefs, tcx, \
             kfree_skb_reason, netns_attribution, drop_destinations, tcp_retransmit_family",
            kernel_features.clone(),
        );
        let findings = Family::<Labels, Gauge>::default();
        registry.register(
            "watchdog_findings",
            "Active findings by kind and severity",
            findings.clone(),
        );
        for kind in Kind::ALL {
            for severity in [Severity::Warning, Severity::Critical] {
                let _ = findings.get_or_create(&finding_labels(kind, severity));
            }
        }
        let ghost_routes = Family::<Labels, Gauge>::default();
        registry.register(
            "watchdog_ghost_route_info",
            "A route named by an active finding (value 1): the route to look at",
            ghost_routes.clone(),
        );
        let alerts = crate::alerts::AlertMetrics::default();
        registry.register(
            "watchdog_alerts_sent",
            "Alerts delivered, by sink and state (firing, resolved, test, repair, rollback)",
            alerts.sent.clone(),
        );
        registry.register(
            "watchdog_alerts_failed",
            "Alert messages given up on after every retry, by sink",
            alerts.failed.clone(),
        );
        registry.register(
            "watchdog_alerts_dropped",
            "Alert messages dropped because the sink's queue was full (the oldest goes)",
            alerts.dropped.clone(),
        );
        registry.register(
            "watchdog_alerts_queue_depth",
            "Alert messages waiting for delivery, by sink",
            alerts.queue_depth.clone(),
        );
        let kernel = Arc::new(KernelCollector::default());
        registry.register_collector(Box::new(kernel.clone()));
        registry.register_collector(Box::new(ProcessCollector));
        let mirror = Arc::new(MirrorCollector::default());
        registry.register_collector(Box::new(mirror.clone()));
        Self {
            registry,
            probe_up,
            probe_unsupported,
            netns_attribution,
            map_read_errors,
            kernel_features,
            findings,
            ghost_routes,
            alerts,
            kernel,
            mirror,
        }
    }

    /// Publishes a new reading of the drop counters.
    pub fn set_drops(
        &self,
        probe: &KfreeSkb,
        snapshot: &DropSnapshot,
        label_netns: bool,
        top_n: usize,
    ) {
        let mut rows: Vec<(Labels, u64)> = Vec::with_capacity(snapshot.counts.len());
        for (key, count) in &snapshot.counts {
            let mut labels = Vec::with_capacity(2);
            if label_netns {
                let netns = match key.netns {
                    watchdog_common::NETNS_UNKNOWN => "unknown".to_owned(),
                    inode => inode.to_string(),
                };
                labels.push(("netns", netns));
            }
            labels.push(("reason", probe.reason_name(key.reason).to_owned()));
            // Several unnamed reason values fold into one UNKNOWN series.
            match rows.iter_mut().find(|(existing, _)| *existing == labels) {
                Some((_, total)) => *total += count,
                None => rows.push((labels, *count)),
            }
        }
        let skipped = vec![
            (vec![("cause", "map_full".to_owned())], snapshot.map_full),
            (
                vec![("cause", "other_netns".to_owned())],
                snapshot.other_netns,
            ),
            (
                vec![("cause", "unattributed".to_owned())],
                snapshot.unattributed,
            ),
        ];
        let mut busiest: Vec<_> = snapshot.destinations.iter().collect();
        busiest.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let destinations = busiest
            .into_iter()
            .take(top_n)
            .map(|((_, reason, addr), count)| {
                let labels = vec![
                    ("reason", probe.reason_name(*reason).to_owned()),
                    ("destination", addr.to_string()),
                ];
                (labels, *count)
            })
            .collect();
        let mut view = self.kernel.view.write().expect("kernel view lock");
        view.rows = rows;
        view.skipped = skipped;
        view.drop_destinations = destinations;
    }

    /// Publishes the busiest `top_n` peers (by packets sent) and the peer map's health.
    pub fn set_peers(&self, snapshot: &PeerSnapshot, top_n: usize) {
        let mut busiest: Vec<_> = snapshot.peers.iter().collect();
        busiest.sort_by(|a, b| b.1.tx_packets.cmp(&a.1.tx_packets).then(a.0.cmp(b.0)));
        let mut packets = Vec::with_capacity(top_n * 2);
        let mut bytes = Vec::with_capacity(top_n * 2);
        for ((ifindex, addr), sample) in busiest.into_iter().take(top_n) {
            let interface = interface_name(*ifindex);
            for (direction, count, octets) in [
                ("tx", sample.tx_packets, sample.tx_bytes),
                ("rx", sample.rx_packets, sample.rx_bytes),
            ] {
                let labels = vec![
                    ("interface", interface.clone()),
                    ("peer", addr.to_string()),
                    ("direction", direction.to_owned()),
                ];
                packets.push((labels.clone(), count));
                bytes.push((labels, octets));
            }
        }
        let mut view = self.kernel.view.write().expect("kernel view lock");
        view.peer_packets = packets;
        view.peer_bytes = bytes;
        view.peer_map = vec![
            (vec![("event", "insert".to_owned())], snapshot.inserts),
            (
                vec![("event", "insert_failed".to_owned())],
                snapshot.insert_failed,
            ),
        ];
        view.peer_entries = snapshot.peers.len() as i64;
    }

    /// Publishes TCP outcomes of the `top_n` destinations with the most failures and SYN
    /// retransmits (then the most attempts).
    pub fn set_connects(&self, snapshot: &ConnectSnapshot, top_n: usize) {
        let mut worst: Vec<_> = snapshot.iter().collect();
        worst.sort_by(|a, b| {
            let trouble = |s: &crate::probes::tcp::ConnectSample| s.failed + s.syn_retransmits;
            trouble(b.1)
                .cmp(&trouble(a.1))
                .then(b.1.attempts.cmp(&a.1.attempts))
                .then(a.0.cmp(b.0))
        });
        let mut connects = Vec::new();
        let mut syn_retransmits = Vec::new();
        for ((_, addr, port), sample) in worst.into_iter().take(top_n) {
            let peer = || vec![("peer", addr.to_string()), ("port", port.to_string())];
            for (outcome, count) in [
                ("attempted", sample.attempts),
                ("established", sample.established),
                ("failed", sample.failed),
            ] {
                let mut labels = peer();
                labels.push(("outcome", outcome.to_owned()));
                connects.push((labels, count));
            }
            syn_retransmits.push((peer(), sample.syn_retransmits));
        }
        let mut view = self.kernel.view.write().expect("kernel view lock");
        view.connects = connects;
        view.syn_retransmits = syn_retransmits;
    }

    /// Exports the network mirror's counters (`watchdog_mirror_*`) from now on.
    pub fn attach_mirror(&self, counters: Arc<MirrorCounters>) {
        *self.mirror.counters.write().expect("mirror counters lock") = Some(counters);
    }

    /// Publishes the active findings.
    pub fn set_findings(&self, active: &[Finding]) {
        for kind in Kind::ALL {
            for severity in [Severity::Warning, Severity::Critical] {
                let count = active
                    .iter()
                    .filter(|f| f.candidate.kind == kind && f.candidate.severity == severity)
                    .count();
                self.findings
                    .get_or_create(&finding_labels(kind, severity))
                    .set(count as i64);
            }
        }
        self.ghost_routes.clear();
        for finding in active {
            for route in &finding.candidate.routes {
                let labels = vec![
                    ("kind", finding.candidate.kind.as_str().to_owned()),
                    ("prefix", route.prefix.clone()),
                    ("gateway", route.gateway.clone().unwrap_or_default()),
                    ("dev", route.dev.clone().unwrap_or_default()),
                    ("table", route.table.clone()),
                ];
                self.ghost_routes.get_or_create(&labels).set(1);
            }
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

fn finding_labels(kind: Kind, severity: Severity) -> Labels {
    vec![
        ("kind", kind.as_str().to_owned()),
        ("severity", severity.as_str().to_owned()),
    ]
}

/// The latest kernel counter readings (drops, peers), encoded on each scrape.
#[derive(Debug, Default)]
struct KernelCollector {
    view: RwLock<KernelView>,
}

#[derive(Debug, Default)]
struct KernelView {
    rows: Vec<(Labels, u64)>,
    skipped: Vec<(Labels, u64)>,
    peer_packets: Vec<(Labels, u64)>,
    peer_bytes: Vec<(Labels, u64)>,
    peer_map: Vec<(Labels, u64)>,
    peer_entries: i64,
    drop_destinations: Vec<(Labels, u64)>,
    connects: Vec<(Labels, u64)>,
    syn_retransmits: Vec<(Labels, u64)>,
}

impl Collector for KernelCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let view = self.view.read().expect("kernel view lock");
        encode_counters(
            &mut encoder,
            "watchdog_kernel_drops",
            "Packets the kernel dropped (skb:kfree_skb), by the kernel's drop reason.",
            &view.rows,
        )?;
        encode_counters(
            &mut encoder,
            "watchdog_kernel_drops_skipped",
            "Drops the probe saw but did not count: map_full (counter map full), \
             other_netns (another network namespace), unattributed (namespace unreadable).",
            &view.skipped,
        )?;
        encode_counters(
            &mut encoder,
            "watchdog_kernel_drop_destinations",
            "Drops for route and neighbour reasons (NEIGH_FAILED, IP_OUTNOROUTES, ...) by the \
             dropped packet's destination; only the peers.top_n busiest destinations.",
            &view.drop_destinations,
        )?;
        encode_counters(
            &mut encoder,
            "watchdog_peer_packets",
            "Packets to (tx) and from (rx) a remote address on an interface; only the busiest \
             peers.top_n peers by packets sent are shown.",
            &view.peer_packets,
        )?;
        encode_counters(
            &mut encoder,
            "watchdog_peer_bytes",
            "Bytes to (tx) and from (rx) a remote address on an interface; same peers as \
             watchdog_peer_packets.",
            &view.peer_bytes,
        )?;
        encode_counters(
            &mut encoder,
            "watchdog_peer_map_events",
            "Peer map events: insert (a new peer; evictions = inserts - entries), \
             insert_failed (packets not recorded).",
            &view.peer_map,
        )?;
        let entries = ConstGauge::new(view.peer_entries);
        entries.encode(encoder.encode_descriptor(
            "watchdog_peer_map_entries",
            "Peers currently held in the in-kernel LRU map.",
            None,
            entries.metric_type(),
        )?)?;
        encode_counters(
            &mut encoder,
            "watchdog_tcp_connects",
            "TCP connects to a destination by outcome (attempted, established, failed); only \
             the peers.top_n destinations with the most failures are shown.",
            &view.connects,
        )?;
        encode_counters(
            &mut encoder,
            "watchdog_tcp_syn_retransmits",
            "SYNs retransmitted to a destination (it does not answer); same destinations as \
             watchdog_tcp_connects.",
            &view.syn_retransmits,
        )
    }
}

fn encode_counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (labels, value) in rows {
        ConstCounter::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

/// The network mirror's counters, read on each scrape once attached.
#[derive(Debug, Default)]
struct MirrorCollector {
    counters: RwLock<Option<Arc<MirrorCounters>>>,
}

impl Collector for MirrorCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(counters) = self.counters.read().expect("mirror counters lock").clone() else {
            return Ok(());
        };
        let stats = counters.stats();
        let resyncs = [
            (vec![("cause", "initial".to_owned())], stats.resyncs_initial),
            (vec![("cause", "overrun".to_owned())], stats.resyncs_overrun),
        ];
        encode_counters(
            &mut encoder,
            "watchdog_mirror_resyncs",
            "Full reloads of the network mirror: initial (start-up), overrun (the netlink \
             notification socket overflowed and changes were lost).",
            &resyncs,
        )?;
        let updates = ConstCounter::new(stats.updates);
        updates.encode(encoder.encode_descriptor(
            "watchdog_mirror_updates",
            "Netlink notifications applied to the network mirror.",
            None,
            updates.metric_type(),
        )?)?;
        let objects = stats.objects;
        let mut family = encoder.encode_descriptor(
            "watchdog_mirror_objects",
            "Objects in the network mirror, by kind.",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (kind, count) in [
            ("link", objects.links),
            ("address", objects.addresses),
            ("route", objects.routes),
            ("rule", objects.rules),
            ("neighbour", objects.neighbours),
            ("fdb", objects.fdb),
        ] {
            let labels: Labels = vec![("kind", kind.to_owned())];
            ConstGauge::new(count as i64).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The daemon's own CPU time and resident memory, read from /proc on each scrape.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let usage = crate::procfs::self_usage();
        let cpu = ConstCounter::new(usage.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "watchdog_process_cpu_seconds",
            "User and system CPU time of the watchdog process.",
            None,
            cpu.metric_type(),
        )?)?;
        let rss = ConstGauge::new(usage.resident_bytes as i64);
        rss.encode(encoder.encode_descriptor(
            "watchdog_process_resident_memory_bytes",
            "Resident memory of the watchdog process.",
            None,
            rss.metric_type(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_build_info_and_process_metrics() {
        let text = Metrics::new().encode();
        assert!(
            text.contains(&format!(
                "watchdog_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        assert!(
            text.contains("watchdog_process_cpu_seconds_total "),
            "{text}"
        );
        let rss_line = text
            .lines()
            .find(|line| line.starts_with("watchdog_process_resident_memory_bytes "))
            .expect("rss line");
        let rss: f64 = rss_line.split(' ').nth(1).unwrap().parse().unwrap();
        assert!(rss > 1e6, "{rss_line}");
        assert!(text.ends_with("# EOF\n"));
        assert!(!text.contains("watchdog_mirror"), "{text}");
    }

    #[test]
    fn exports_mirror_counters_once_attached() {
        let metrics = Metrics::new();
        metrics.attach_mirror(Arc::new(MirrorCounters::default()));
        let text = metrics.encode();
        for line in [
            "watchdog_mirror_resyncs_total{cause=\"initial\"} 0",
            "watchdog_mirror_resyncs_total{cause=\"overrun\"} 0",
            "watchdog_mirror_updates_total 0",
            "watchdog_mirror_objects{kind=\"route\"} 0",
            "watchdog_mirror_objects{kind=\"fdb\"} 0",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
