//! `watchdog_peer_node_reachable` and `watchdog_peer_node_evidence_age_seconds`: whether
//! this node reaches each other Node through the overlay, and how old that evidence is.
//! One series each per peer Node (bounded by the number of Nodes); the cluster's verdict
//! is the shipped Prometheus rules' business.

use std::{sync::RwLock, time::Instant};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, gauge::ConstGauge},
};

use super::{Labels, Metrics};
use crate::model::reach::Reach;

/// The latest reachability per peer Node, encoded on each scrape.
#[derive(Debug, Default)]
pub(super) struct ReachCollector {
    view: RwLock<Option<(Reach, Instant)>>,
}

impl Metrics {
    /// Publishes the reachability of the peer Nodes (`reach` as of `now`).
    pub fn set_reach(&self, reach: Reach, now: Instant) {
        *self.reach.view.write().expect("reach view lock") = Some((reach, now));
    }
}

impl Collector for ReachCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let view = self.view.read().expect("reach view lock");
        let Some((reach, now)) = view.as_ref() else {
            return Ok(());
        };
        let rows = reach.rows(*now);
        let mut family = encoder.encode_descriptor(
            "watchdog_peer_node_reachable",
            "1 when this node's last probe through the overlay to the Node peer_node (its \
             flannel.<VNI> address) was answered, 0 when it was not",
            None,
            MetricType::Gauge,
        )?;
        for (node, reachable, _) in &rows {
            let labels: Labels = vec![("peer_node", (*node).to_owned())];
            ConstGauge::new(i64::from(*reachable)).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "watchdog_peer_node_evidence_age_seconds",
            "Seconds since the probe behind watchdog_peer_node_reachable finished",
            None,
            MetricType::Gauge,
        )?;
        for (node, _, age) in &rows {
            let labels: Labels = vec![("peer_node", (*node).to_owned())];
            ConstGauge::new(age.as_secs_f64()).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn one_series_per_peer_node_with_its_age() {
        let metrics = Metrics::new();
        assert!(!metrics.encode().contains("watchdog_peer_node_reachable"));
        let now = Instant::now();
        let mut reach = Reach::default();
        reach.record("qx-a", true, now);
        reach.record("qx-b", false, now);
        metrics.set_reach(reach, now + Duration::from_millis(2500));
        let text = metrics.encode();
        for line in [
            "watchdog_peer_node_reachable{peer_node=\"qx-a\"} 1",
            "watchdog_peer_node_reachable{peer_node=\"qx-b\"} 0",
            "watchdog_peer_node_evidence_age_seconds{peer_node=\"qx-b\"} 2.5",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
