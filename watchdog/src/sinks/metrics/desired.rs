//! `watchdog_desired_*`: where the desired state stands (known, how many Nodes, how old).

use std::{
    sync::RwLock,
    time::{Duration, Instant},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

use super::{Labels, Metrics};
use crate::model::desired::{Snapshot, State};

/// The desired state's last values, encoded on each scrape (nothing before the first).
#[derive(Debug, Default)]
pub(super) struct DesiredCollector {
    view: RwLock<Option<DesiredView>>,
}

#[derive(Debug)]
struct DesiredView {
    source: &'static str,
    up: bool,
    nodes: usize,
    age: Option<Duration>,
    errors: u64,
}

impl Metrics {
    /// Publishes the desired state of this cycle: `source` (`none`, `file`, `kubernetes`),
    /// whether it is known (`state`), the Nodes of the source's last list (kept while it
    /// fails), and the time since the source last confirmed it (absent before the first
    /// list).
    pub fn set_desired(&self, source: &'static str, snapshot: &Snapshot, state: &State) {
        let now = Instant::now();
        let view = DesiredView {
            source,
            up: state.is_known(),
            nodes: snapshot.model.as_ref().map_or(0, |model| model.nodes.len()),
            age: snapshot
                .model
                .as_ref()
                .and(snapshot.confirmed_at)
                .map(|at| now.saturating_duration_since(at)),
            errors: snapshot.errors,
        };
        *self.desired.view.write().expect("desired metrics lock") = Some(view);
    }
}

impl Collector for DesiredCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let view = self.view.read().expect("desired metrics lock");
        let Some(view) = view.as_ref() else {
            return Ok(());
        };
        let up = ConstGauge::new(i64::from(view.up));
        let labels: Labels = vec![("source", view.source.to_owned())];
        up.encode(
            encoder
                .encode_descriptor(
                    "watchdog_desired_up",
                    "1 while the desired state (the cluster's Nodes) is known: listed, and its \
                     source not failing for longer than desired.stale_after; 0 otherwise (the \
                     overlay detectors are then quiet)",
                    None,
                    MetricType::Gauge,
                )?
                .encode_family(&labels)?,
        )?;
        let nodes = ConstGauge::new(view.nodes as i64);
        nodes.encode(encoder.encode_descriptor(
            "watchdog_desired_nodes",
            "Nodes in the desired state (the source's last list and the changes since; kept \
             while the source fails)",
            None,
            MetricType::Gauge,
        )?)?;
        let errors = ConstCounter::new(view.errors);
        errors.encode(encoder.encode_descriptor(
            "watchdog_desired_errors",
            "Failures of the desired-state source: a failed list or watch, an unreadable or \
             invalid NodeList file (the state stays known until desired.stale_after)",
            None,
            errors.metric_type(),
        )?)?;
        if let Some(age) = view.age {
            let age = ConstGauge::new(age.as_secs_f64());
            age.encode(encoder.encode_descriptor(
                "watchdog_desired_age_seconds",
                "Seconds since the desired-state source last confirmed its Nodes current (a \
                 list, a watch event or bookmark, an unchanged file)",
                None,
                MetricType::Gauge,
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::desired::Model;

    #[test]
    fn up_nodes_and_age_follow_the_snapshot() {
        let metrics = Metrics::new();
        assert!(!metrics.encode().contains("watchdog_desired"));
        let mut snapshot = Snapshot::waiting("file /x");
        let state = snapshot.state(Instant::now(), Duration::from_secs(60));
        metrics.set_desired("file", &snapshot, &state);
        let text = metrics.encode();
        assert!(
            text.contains("watchdog_desired_up{source=\"file\"} 0"),
            "{text}"
        );
        assert!(text.contains("watchdog_desired_nodes 0"), "{text}");
        assert!(!text.contains("watchdog_desired_age_seconds"), "{text}");
        assert!(text.contains("watchdog_desired_errors_total 0"), "{text}");

        let mut model = Model::default();
        for name in ["a", "b"] {
            model.nodes.insert(
                name.into(),
                crate::model::desired::Node {
                    name: name.into(),
                    addresses: Vec::new(),
                    pod_subnet: None,
                    public_ip: None,
                    public_ip_overwrite: None,
                    vtep: Err(crate::model::desired::Skip::NotManaged),
                },
            );
        }
        snapshot.model = Some(Arc::new(model));
        snapshot.confirmed_at = Instant::now().checked_sub(Duration::from_secs(2));
        snapshot.errors = 3;
        let state = snapshot.state(Instant::now(), Duration::from_secs(60));
        metrics.set_desired("file", &snapshot, &state);
        let text = metrics.encode();
        assert!(
            text.contains("watchdog_desired_up{source=\"file\"} 1"),
            "{text}"
        );
        assert!(text.contains("watchdog_desired_nodes 2"), "{text}");
        assert!(text.contains("watchdog_desired_errors_total 3"), "{text}");
        let age: f64 = text
            .lines()
            .find_map(|line| line.strip_prefix("watchdog_desired_age_seconds "))
            .expect("age")
            .parse()
            .unwrap();
        assert!((2.0..3.0).contains(&age), "{age}");
    }
}
