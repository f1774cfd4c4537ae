//! `watchdog_endpoints_*`: what the endpoint source keeps of the cluster's EndpointSlices
//! and what its cap left out (nothing before the source first reports).

use std::sync::RwLock;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

use super::{Labels, Metrics};
use crate::model::endpoints::EndpointCounters;

/// The endpoint source's last counters, encoded on each scrape.
#[derive(Debug, Default)]
pub(super) struct EndpointCollector {
    counters: RwLock<Option<EndpointCounters>>,
}

impl Metrics {
    /// Publishes the endpoint source's counters (with `pods.endpoints` set).
    pub fn set_endpoints(&self, counters: EndpointCounters) {
        *self
            .endpoints
            .counters
            .write()
            .expect("endpoint metrics lock") = Some(counters);
    }
}

impl Collector for EndpointCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(counters) = *self.counters.read().expect("endpoint metrics lock") else {
            return Ok(());
        };
        let set = |name: &str| -> Labels { vec![("set", name.to_owned())] };
        let mut tracked = encoder.encode_descriptor(
            "watchdog_endpoints_tracked",
            "EndpointSlice endpoints kept: whole, in this node's pod subnet, to be judged \
             (set=judged); addresses of every slice, to name Services (set=named); each at \
             most pods.max_endpoints",
            None,
            MetricType::Gauge,
        )?;
        for (name, value) in [("judged", counters.judged), ("named", counters.named)] {
            ConstGauge::new(value as i64).encode(tracked.encode_family(&set(name))?)?;
        }
        let untracked_counter = ConstCounter::new(0u64);
        let mut untracked = encoder.encode_descriptor(
            "watchdog_endpoints_untracked",
            "Endpoints left out of a set because pods.max_endpoints were kept, counted each \
             time their slice was listed or changed",
            None,
            untracked_counter.metric_type(),
        )?;
        for (name, value) in [
            ("judged", counters.judged_untracked),
            ("named", counters.named_untracked),
        ] {
            ConstCounter::new(value).encode(untracked.encode_family(&set(name))?)?;
        }
        Ok(())
    }
}
