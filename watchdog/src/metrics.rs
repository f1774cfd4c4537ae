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
    mirror::MirrorCounters,
    probes::kfree_skb::{DropSnapshot, KfreeSkb},
};

/// A label set: (name, value) pairs.
type Labels = Vec<(&'static str, String)>;

/// Every metric the daemon exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `watchdog_probe_up{probe}`: 1 attached, 0 failed.
    pub probe_up: Family<Labels, Gauge>,
    /// `watchdog_netns_attribution`: 1 when drops are attributed to network namespaces.
    pub netns_attribution: Gauge,
    /// `watchdog_map_read_errors_total`: failed reads of the in-kernel maps.
    pub map_read_errors: Counter,
    drops: Arc<DropCollector>,
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
        let drops = Arc::new(DropCollector::default());
        registry.register_collector(Box::new(drops.clone()));
        registry.register_collector(Box::new(ProcessCollector));
        let mirror = Arc::new(MirrorCollector::default());
        registry.register_collector(Box::new(mirror.clone()));
        Self {
            registry,
            probe_up,
            netns_attribution,
            map_read_errors,
            drops,
            mirror,
        }
    }

    /// Publishes a new reading of the drop counters.
    pub fn set_drops(&self, probe: &KfreeSkb, snapshot: &DropSnapshot, label_netns: bool) {
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
        *self.drops.view.write().expect("drop view lock") = DropView { rows, skipped };
    }

    /// Exports the network mirror's counters (`watchdog_mirror_*`) from now on.
    pub fn attach_mirror(&self, counters: Arc<MirrorCounters>) {
        *self.mirror.counters.write().expect("mirror counters lock") = Some(counters);
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// The latest drop counters, encoded on each scrape.
#[derive(Debug, Default)]
struct DropCollector {
    view: RwLock<DropView>,
}

#[derive(Debug, Default)]
struct DropView {
    rows: Vec<(Labels, u64)>,
    skipped: Vec<(Labels, u64)>,
}

impl Collector for DropCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let view = self.view.read().expect("drop view lock");
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
