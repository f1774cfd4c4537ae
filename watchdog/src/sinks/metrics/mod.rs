//! Prometheus metrics (OpenMetrics text). Names start with `watchdog_`, carry their unit,
//! and use bounded label sets. One file per source of values: the sources' status, drops,
//! peers, TCP, the mirror, the process itself, findings, the desired state; alerts register
//! their own.

mod desired;
mod drops;
mod endpoints;
mod findings;
mod mirror;
mod peers;
mod prober;
mod process;
mod reach;
mod status;
mod tcp;

use std::sync::Arc;

use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::Registry,
};

use crate::{
    findings::{Kind, Severity},
    model::{counters::Reading, desired::Model, net::Snapshot},
    sinks::{alerts::AlertMetrics, http::HttpMetrics},
};

/// A label set: (name, value) pairs.
type Labels = Vec<(&'static str, String)>;

/// Every metric the daemon exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    probe_up: Family<Labels, Gauge>,
    probe_unsupported: Family<Labels, Gauge>,
    netns_attribution: Gauge,
    namespaces_tracked: Gauge,
    namespaces_untracked: Counter,
    map_read_errors: Counter,
    kernel_features: Family<Labels, Gauge>,
    findings: Family<Labels, Gauge>,
    /// The `watchdog_findings` series with a `peer_node` published last.
    finding_peers: std::sync::Mutex<Vec<Labels>>,
    ghost_routes: Family<Labels, Gauge>,
    repairs: Family<Labels, Counter>,
    /// `watchdog_alerts_*`: delivery of alerts per sink.
    pub alerts: AlertMetrics,
    /// `watchdog_http_*`: the HTTP server's connections.
    pub http: HttpMetrics,
    drops: Arc<drops::DropsCollector>,
    peers: Arc<peers::PeersCollector>,
    tcp: Arc<tcp::TcpCollector>,
    mirror: Arc<mirror::MirrorCollector>,
    prober: Arc<prober::ProberCollector>,
    desired: Arc<desired::DesiredCollector>,
    endpoints: Arc<endpoints::EndpointCollector>,
    reach: Arc<reach::ReachCollector>,
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
        let namespaces_tracked = Gauge::default();
        registry.register(
            "watchdog_namespaces_tracked",
            "Network namespaces seen in the kernel's maps that the daemon tracks (membership \
             of this node, pod name); at most pods.max_namespaces",
            namespaces_tracked.clone(),
        );
        let namespaces_untracked = Counter::default();
        registry.register(
            "watchdog_namespaces_untracked",
            "Network namespaces not tracked because pods.max_namespaces were (treated as not \
             this node's)",
            namespaces_untracked.clone(),
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
             kfree_skb_reason, netns_attribution, drop_destinations, drop_flows, \
             tcp_retransmit_family, ping_socket (active probes use ICMP echo, else UDP)",
            kernel_features.clone(),
        );
        let findings = Family::<Labels, Gauge>::default();
        registry.register(
            "watchdog_findings",
            "Active findings by kind and severity; those about another Node in a series with \
             that Node as peer_node",
            findings.clone(),
        );
        for kind in Kind::ALL {
            for severity in [Severity::Warning, Severity::Critical] {
                let _ = findings.get_or_create(&findings::finding_labels(kind, severity));
            }
        }
        let ghost_routes = Family::<Labels, Gauge>::default();
        registry.register(
            "watchdog_ghost_route_info",
            "A route named by an active finding (value 1): the route to look at",
            ghost_routes.clone(),
        );
        let repairs = Family::<Labels, Counter>::default();
        registry.register(
            "watchdog_repairs",
            "Repair operations by object kind (fdb, neighbour, route) and outcome (applied, \
             dry_run, rolled_back, refused, failed)",
            repairs.clone(),
        );
        let alerts = AlertMetrics::default();
        alerts.register(&mut registry);
        let http = HttpMetrics::default();
        http.register(&mut registry);
        let drops = Arc::new(drops::DropsCollector::default());
        registry.register_collector(Box::new(drops.clone()));
        let peers = Arc::new(peers::PeersCollector::default());
        registry.register_collector(Box::new(peers.clone()));
        let tcp = Arc::new(tcp::TcpCollector::default());
        registry.register_collector(Box::new(tcp.clone()));
        registry.register_collector(Box::new(process::ProcessCollector));
        let mirror = Arc::new(mirror::MirrorCollector::default());
        registry.register_collector(Box::new(mirror.clone()));
        let prober = Arc::new(prober::ProberCollector::default());
        registry.register_collector(Box::new(prober.clone()));
        let desired = Arc::new(desired::DesiredCollector::default());
        registry.register_collector(Box::new(desired.clone()));
        let endpoints = Arc::new(endpoints::EndpointCollector::default());
        registry.register_collector(Box::new(endpoints.clone()));
        let reach = Arc::new(reach::ReachCollector::default());
        registry.register_collector(Box::new(reach.clone()));
        Self {
            registry,
            probe_up,
            probe_unsupported,
            netns_attribution,
            namespaces_tracked,
            namespaces_untracked,
            map_read_errors,
            kernel_features,
            findings,
            finding_peers: std::sync::Mutex::default(),
            ghost_routes,
            repairs,
            alerts,
            http,
            drops,
            peers,
            tcp,
            mirror,
            prober,
            desired,
            endpoints,
            reach,
        }
    }

    /// Publishes the namespace tracker's counters.
    pub fn set_namespaces(&self, counters: &crate::model::pods::NamespaceCounters) {
        self.namespaces_tracked.set(counters.tracked as i64);
        let more = counters
            .untracked
            .saturating_sub(self.namespaces_untracked.get());
        self.namespaces_untracked.inc_by(more);
    }

    /// Publishes a reading of the kernel counters as `context` says: drops, the busiest
    /// peers with their interfaces and Nodes named, the worst TCP destinations, and the
    /// failed map reads.
    pub fn set_reading(&self, reading: &Reading, context: ReadingContext<'_>) {
        let ReadingContext {
            label_netns,
            top_n,
            net,
            nodes,
        } = context;
        self.map_read_errors.inc_by(reading.failed_reads);
        if let Some(drops) = &reading.drops {
            self.set_drops(drops, label_netns, top_n);
        }
        if let Some(peers) = &reading.peers {
            self.set_peers(
                peers,
                top_n,
                |ifindex| {
                    net.and_then(|net| net.link(ifindex))
                        .map_or_else(|| ifindex.to_string(), |link| link.name.clone())
                },
                |addr| nodes.and_then(|nodes| node_of(nodes, addr)),
            );
        }
        if let Some(connects) = &reading.connects {
            self.set_connects(connects, top_n);
        }
    }

    /// Counts one repair operation of object `kind` (`fdb`, `neighbour`, `route`) with
    /// `outcome` (`applied`, `dry_run`, `rolled_back`, `refused`, `failed`).
    pub fn count_repair(&self, kind: &'static str, outcome: &'static str) {
        self.repairs
            .get_or_create(&vec![
                ("kind", kind.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// What a reading is published with ([`Metrics::set_reading`]).
#[derive(Clone, Copy, Default)]
pub struct ReadingContext<'a> {
    /// Label drops with their network namespace.
    pub label_netns: bool,
    /// How many of the busiest peers and of the worst TCP destinations get series.
    pub top_n: usize,
    /// The mirror's snapshot, to name a peer's interface (by index without it).
    pub net: Option<&'a Snapshot>,
    /// The desired state, to name a peer's Node (when known).
    pub nodes: Option<&'a Model>,
}

/// The Node an address belongs to: a member's VTEP (`public-ip`) or an address in its pod
/// subnet (which includes its `flannel.<VNI>` address).
fn node_of(nodes: &Model, addr: std::net::IpAddr) -> Option<String> {
    let std::net::IpAddr::V4(v4) = addr else {
        return None;
    };
    nodes
        .node_with_public_ip(v4)
        .or_else(|| nodes.node_with_pod_address(v4))
        .map(|node| node.name.clone())
}

/// Encodes one counter family from its rows.
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

    /// Every sample line's series (name and label set) of an exposition, in order.
    fn series(text: &str) -> Vec<&str> {
        text.lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .map(|line| line.rsplit_once(' ').map_or(line, |(series, _)| series))
            .collect()
    }

    /// Several namespaces dropping towards, and connecting to, one destination: one series
    /// each, their counts summed (Prometheus refuses a scrape with a series twice).
    #[test]
    fn every_series_has_a_unique_label_set_when_namespaces_share_a_destination() {
        use std::collections::BTreeSet;

        use crate::model::counters::{ConnectSample, DropCounts};
        let dst: std::net::IpAddr = "10.244.2.2".parse().unwrap();
        let mut drops = DropCounts::default();
        let mut connects = crate::model::counters::ConnectCounts::new();
        for (netns, count) in [(4026531840, 3), (4026532001, 4), (0, 5)] {
            drops.counts.insert((netns, "NEIGH_FAILED".into()), count);
            drops
                .destinations
                .insert((netns, "NEIGH_FAILED".into(), dst), count);
            connects.insert(
                (netns, dst, 8080),
                ConnectSample {
                    attempts: count,
                    failed: count,
                    ..ConnectSample::default()
                },
            );
        }
        let reading = Reading {
            drops: Some(drops),
            connects: Some(connects),
            ..Reading::default()
        };
        for label_netns in [false, true] {
            let metrics = Metrics::new();
            metrics.set_reading(
                &reading,
                ReadingContext {
                    label_netns,
                    top_n: 20,
                    ..ReadingContext::default()
                },
            );
            let text = metrics.encode();
            let all = series(&text);
            let unique: BTreeSet<&str> = all.iter().copied().collect();
            assert_eq!(unique.len(), all.len(), "a series twice in:\n{text}");
            for line in [
                "watchdog_kernel_drop_destinations_total{reason=\"NEIGH_FAILED\",destination=\"10.244.2.2\"} 12",
                "watchdog_tcp_connects_total{peer=\"10.244.2.2\",port=\"8080\",outcome=\"failed\"} 12",
            ] {
                assert!(text.contains(line), "{line} in {text}");
            }
        }
    }

    #[test]
    fn exports_mirror_counters_once_attached() {
        let metrics = Metrics::new();
        metrics.attach_mirror(crate::model::status::MirrorStats::default);
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
