//! `watchdog_probes_total`, `watchdog_probe_packets_total`: what the active prober did;
//! `watchdog_mtu_probes_total` and `watchdog_path_mtu_bytes`: its path-MTU searches.

use std::sync::RwLock;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, gauge::ConstGauge},
};

use super::{Labels, Metrics, encode_counters};
use crate::model::probe::{Outcome, ProbeStats, Purpose};

/// The prober's counters, encoded on each scrape (every purpose and outcome, zeros
/// included).
#[derive(Debug, Default)]
pub(super) struct ProberCollector {
    stats: RwLock<ProbeStats>,
}

impl Metrics {
    /// Publishes the prober's counters.
    pub fn set_probes(&self, stats: &ProbeStats) {
        *self.prober.stats.write().expect("prober view lock") = stats.clone();
    }
}

impl Collector for ProberCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.stats.read().expect("prober view lock");
        let mut probes: Vec<(Labels, u64)> = Vec::new();
        let mut packets: Vec<(Labels, u64)> = Vec::new();
        for purpose in Purpose::ALL {
            for outcome in Outcome::LABELS {
                probes.push((
                    vec![
                        ("purpose", purpose.as_str().to_owned()),
                        ("outcome", outcome.to_owned()),
                    ],
                    stats.probes.get(&(purpose, outcome)).copied().unwrap_or(0),
                ));
            }
            packets.push((
                vec![("purpose", purpose.as_str().to_owned())],
                stats.packets.get(&purpose).copied().unwrap_or(0),
            ));
        }
        encode_counters(
            &mut encoder,
            "watchdog_probes",
            "Active probes of silent peers by purpose (vtep, destination, path_mtu) and \
             outcome (answered, unanswered, unreachable, error; skipped: refused by the rate \
             limits)",
            &probes,
        )?;
        encode_counters(
            &mut encoder,
            "watchdog_probe_packets",
            "Packets the active prober sent, by purpose",
            &packets,
        )?;
        encode_counters(
            &mut encoder,
            "watchdog_mtu_probes",
            "Path-MTU probes sent (DF probes of a size, and the small probe of a search); \
             their packets are watchdog_probe_packets_total{purpose=\"path_mtu\"}",
            &[(Vec::new(), stats.mtu_probes)],
        )?;
        let mut family = encoder.encode_descriptor(
            "watchdog_path_mtu_bytes",
            "The path MTU last measured to each overlay peer (outer packet bytes; the size \
             the device needs when full-size probes pass), by peer (VTEP address) and \
             interface (the VXLAN device)",
            None,
            MetricType::Gauge,
        )?;
        for ((peer, interface), mtu) in &stats.path_mtu {
            let labels: Labels = vec![("peer", peer.to_string()), ("interface", interface.clone())];
            ConstGauge::new(i64::from(*mtu)).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
