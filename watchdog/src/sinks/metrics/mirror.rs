//! `watchdog_mirror_*`: the network mirror's counters, read on each scrape.

use std::sync::RwLock;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
};

use super::{Labels, Metrics, encode_counters};
use crate::model::status::MirrorStats;

/// Reads the mirror's counters (live, on each scrape).
type StatsReader = Box<dyn Fn() -> MirrorStats + Send + Sync>;

/// The mirror's counters, once attached.
#[derive(Default)]
pub(super) struct MirrorCollector {
    stats: RwLock<Option<StatsReader>>,
}

impl std::fmt::Debug for MirrorCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MirrorCollector")
    }
}

impl Metrics {
    /// Exports the network mirror's counters (`watchdog_mirror_*`) from now on, reading
    /// them with `stats` on each scrape.
    pub fn attach_mirror(&self, stats: impl Fn() -> MirrorStats + Send + Sync + 'static) {
        *self.mirror.stats.write().expect("mirror stats lock") = Some(Box::new(stats));
    }
}

impl Collector for MirrorCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stats) = self
            .stats
            .read()
            .expect("mirror stats lock")
            .as_ref()
            .map(|read| read())
        else {
            return Ok(());
        };
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
