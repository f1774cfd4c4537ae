//! Alerts: findings (and repair reports) to people, through webhooks, Alertmanager and
//! Slack-compatible chat.
//!
//! The detect loop hands every cycle's changes and active findings to [`Alerts::cycle`],
//! which never waits: the [`Lifecycle`] dedups by finding identity (kind, subject), repeats
//! a firing alert every `repeat_interval`, sends `resolved` once; the [`Grouper`] batches
//! alerts within `group_window`; each batch is pushed into every sink's bounded
//! [`queue::Queue`] and a task per sink delivers it (timeout, retries with backoff).

pub mod alertmanager;
pub mod delivery;
pub mod event;
pub mod lifecycle;
pub mod queue;
pub mod resolve;
pub mod secrets;
pub mod slack;
pub mod transport;
pub mod webhook;

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge};

pub use self::{
    event::{Alert, State},
    lifecycle::{Grouper, Lifecycle},
    resolve::{Endpoint, SinkSpec, resolve},
};
use crate::{
    config::alerts::AlertsConfig,
    findings::{Change, Finding},
    repair::event::RepairEvent,
};

/// What a renderer needs besides the alerts.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// This node's name.
    pub node: &'a str,
    /// `generatorURL` for Alertmanager.
    pub generator_url: &'a str,
    /// Where the runbooks are, ending in `/` (`alerts.runbook_base_url`).
    pub runbook_base: &'a str,
    /// How often a firing alert is re-sent.
    pub repeat_interval: Duration,
    /// The time of sending.
    pub now: SystemTime,
}

/// The owned part of a [`Context`], kept by each sink task.
#[derive(Clone, Debug)]
pub struct ContextOwned {
    /// This node's name.
    pub node: String,
    /// `generatorURL` for Alertmanager.
    pub generator_url: String,
    /// Where the runbooks are, ending in `/`.
    pub runbook_base: String,
    /// How often a firing alert is re-sent.
    pub repeat_interval: Duration,
}

impl ContextOwned {
    /// The context at `now`.
    pub fn at(&self, now: SystemTime) -> Context<'_> {
        Context {
            node: &self.node,
            generator_url: &self.generator_url,
            runbook_base: &self.runbook_base,
            repeat_interval: self.repeat_interval,
            now,
        }
    }
}

impl Context<'_> {
    /// The `runbook_url` of an alert: the page for its state and kind under the base.
    pub fn runbook_url(&self, alert: &Alert) -> String {
        format!(
            "{}{}",
            self.runbook_base,
            crate::sinks::runbook::page(alert.state.as_str(), &alert.kind)
        )
    }
}

/// The alert metrics (registered in [`crate::sinks::metrics::Metrics`]).
#[derive(Clone, Debug, Default)]
pub struct AlertMetrics {
    /// `watchdog_alerts_sent_total{sink,state}`: alerts delivered.
    pub sent: Family<Vec<(&'static str, String)>, Counter>,
    /// `watchdog_alerts_failed_total{sink}`: messages given up after every retry.
    pub failed: Family<Vec<(&'static str, String)>, Counter>,
    /// `watchdog_alerts_dropped_total{sink}`: messages dropped from a full queue.
    pub dropped: Family<Vec<(&'static str, String)>, Counter>,
    /// `watchdog_alerts_queue_depth{sink}`: messages waiting.
    pub queue_depth: Family<Vec<(&'static str, String)>, Gauge>,
}

impl AlertMetrics {
    /// Registers the families in `registry` (`watchdog_alerts_*`).
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "watchdog_alerts_sent",
            "Alerts delivered, by sink and state (firing, resolved, test, repair, rollback)",
            self.sent.clone(),
        );
        registry.register(
            "watchdog_alerts_failed",
            "Alert messages given up on after every retry, by sink",
            self.failed.clone(),
        );
        registry.register(
            "watchdog_alerts_dropped",
            "Alert messages dropped because the sink's queue was full (the oldest goes)",
            self.dropped.clone(),
        );
        registry.register(
            "watchdog_alerts_queue_depth",
            "Alert messages waiting for delivery, by sink",
            self.queue_depth.clone(),
        );
    }

    fn sink(name: &str) -> Vec<(&'static str, String)> {
        vec![("sink", name.to_owned())]
    }

    /// Creates every series of `sink` at zero.
    pub fn register_sink(&self, name: &str) {
        for state in State::ALL {
            let _ = self.sent.get_or_create(&sent_labels(name, state));
        }
        let _ = self.failed.get_or_create(&Self::sink(name));
        let _ = self.dropped.get_or_create(&Self::sink(name));
        let _ = self.queue_depth.get_or_create(&Self::sink(name));
    }
}

fn sent_labels(sink: &str, state: State) -> Vec<(&'static str, String)> {
    vec![
        ("sink", sink.to_owned()),
        ("state", state.as_str().to_owned()),
    ]
}

type Batch = Arc<Vec<Alert>>;

struct SinkHandle {
    name: String,
    queue: Arc<queue::Queue<Batch>>,
}

/// The dispatcher: lifecycle, grouping, and a queue + delivery task per sink.
pub struct Alerts {
    lifecycle: Lifecycle,
    grouper: Grouper,
    sinks: Vec<SinkHandle>,
    metrics: AlertMetrics,
}

impl Alerts {
    /// Starts one delivery task per sink on the current tokio runtime.
    pub fn start(
        config: &AlertsConfig,
        sinks: Vec<SinkSpec>,
        generator_url: String,
        node: &str,
        metrics: AlertMetrics,
    ) -> Self {
        let ctx = ContextOwned {
            node: node.to_owned(),
            generator_url,
            runbook_base: config.runbook_base(),
            repeat_interval: config.repeat_interval,
        };
        let handles = sinks
            .into_iter()
            .enumerate()
            .map(|(i, spec)| {
                metrics.register_sink(&spec.name);
                let queue = Arc::new(queue::Queue::new(spec.queue));
                tracing::info!(
                    sink = spec.name,
                    "alerts go to {} sink {}",
                    spec.kind.as_str(),
                    spec.endpoint.redacted
                );
                let handle = SinkHandle {
                    name: spec.name.clone(),
                    queue: queue.clone(),
                };
                tokio::spawn(run_sink(
                    spec,
                    queue,
                    ctx.clone(),
                    metrics.clone(),
                    i as u64,
                ));
                handle
            })
            .collect();
        Self {
            lifecycle: Lifecycle::new(config.repeat_interval),
            grouper: Grouper::new(config.group_window),
            sinks: handles,
            metrics,
        }
    }

    /// One detection cycle's changes and active findings; never waits.
    pub fn cycle(&mut self, changes: &[Change], active: &[Finding]) {
        if self.sinks.is_empty() {
            return;
        }
        let now = Instant::now();
        let alerts = self
            .lifecycle
            .cycle(now, SystemTime::now(), changes, active);
        let batches = self.grouper.push(now, alerts);
        self.enqueue(batches);
    }

    /// Reports a repair or rollback (from the repair executor); never waits.
    pub fn report(&mut self, event: &RepairEvent) {
        if self.sinks.is_empty() {
            return;
        }
        let batches = self
            .grouper
            .push(Instant::now(), vec![Alert::from_event(event)]);
        self.enqueue(batches);
    }

    fn enqueue(&self, batches: Vec<Vec<Alert>>) {
        for batch in batches {
            if batch.is_empty() {
                continue;
            }
            let batch = Arc::new(batch);
            for sink in &self.sinks {
                let labels = AlertMetrics::sink(&sink.name);
                if let Some(dropped) = sink.queue.push(batch.clone()) {
                    self.metrics.dropped.get_or_create(&labels).inc();
                    tracing::warn!(
                        sink = sink.name,
                        "alert queue full: dropped the oldest message ({} alerts)",
                        dropped.len()
                    );
                }
                self.metrics
                    .queue_depth
                    .get_or_create(&labels)
                    .set(sink.queue.len() as i64);
            }
        }
    }
}

async fn run_sink(
    spec: SinkSpec,
    queue: Arc<queue::Queue<Batch>>,
    ctx: ContextOwned,
    metrics: AlertMetrics,
    salt: u64,
) {
    let mut jitter = delivery::Jitter::new(salt);
    let labels = AlertMetrics::sink(&spec.name);
    loop {
        let batch = queue.pop().await;
        metrics
            .queue_depth
            .get_or_create(&labels)
            .set(queue.len() as i64);
        let delivery = delivery::deliver(&spec, &ctx, &batch, &mut jitter).await;
        match delivery.result {
            Ok(()) => {
                for alert in batch.iter() {
                    metrics
                        .sent
                        .get_or_create(&sent_labels(&spec.name, alert.state))
                        .inc();
                }
                tracing::debug!(
                    sink = spec.name,
                    attempts = delivery.attempts,
                    "delivered {} alerts",
                    batch.len()
                );
            }
            Err(why) => {
                metrics.failed.get_or_create(&labels).inc();
                tracing::warn!(
                    sink = spec.name,
                    attempts = delivery.attempts,
                    "alert delivery to {} failed, giving up on {} alerts: {why}",
                    spec.endpoint.redacted,
                    batch.len()
                );
            }
        }
    }
}

/// `watchdog alert test`: sends a test alert to each sink (or only `only`), waits for
/// delivery with the sink's retries; returns (sink, delivery) per sink.
pub async fn send_test(
    config: &AlertsConfig,
    sinks: Vec<SinkSpec>,
    generator_url: String,
    node: &str,
) -> Vec<(SinkSpec, delivery::Delivery)> {
    let ctx = ContextOwned {
        node: node.to_owned(),
        generator_url,
        runbook_base: config.runbook_base(),
        repeat_interval: config.repeat_interval,
    };
    let alert = Alert::test(node, SystemTime::now());
    let deliveries = sinks.iter().enumerate().map(|(i, spec)| {
        let ctx = ctx.clone();
        let alerts = vec![alert.clone()];
        async move {
            let mut jitter = delivery::Jitter::new(i as u64);
            delivery::deliver(spec, &ctx, &alerts, &mut jitter).await
        }
    });
    let results = futures::future::join_all(deliveries).await;
    sinks.into_iter().zip(results).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::findings::{Candidate, Kind, Severity};

    pub(crate) fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    pub(crate) fn context() -> Context<'static> {
        Context {
            node: "node-a",
            generator_url: "http://127.0.0.1:9477/api/v1/findings",
            runbook_base: "https://example.com/runbooks/",
            repeat_interval: Duration::from_secs(60),
            now: at(100),
        }
    }

    pub(crate) fn finding() -> Finding {
        named("dev flannel.1")
    }

    pub(crate) fn named(subject: &str) -> Finding {
        Finding {
            candidate: Candidate::new(Kind::VtepCollapse, subject, Severity::Critical)
                .with("fdb_entries", 0)
                .with("remote_routes", 2),
            first_seen: at(10),
            last_seen: at(20),
        }
    }

    #[test]
    fn full_sink_queue_drops_oldest_and_counts() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let metrics = AlertMetrics::default();
        // A sink whose task never runs (the runtime is never driven): the queue only fills.
        let sink = SinkSpec {
            name: "dead".into(),
            kind: crate::config::alerts::SinkType::Webhook,
            endpoint: resolve::endpoint("x", "http://127.0.0.1:9/").unwrap(),
            secret: None,
            timeout: Duration::from_secs(1),
            queue: 2,
            max_retries: 0,
            backoff: Duration::from_secs(1),
        };
        let mut alerts = Alerts::start(
            &AlertsConfig::default(),
            vec![sink],
            String::new(),
            "node-a",
            metrics.clone(),
        );
        for i in 0..5 {
            let f = named(&format!("s{i}"));
            alerts.cycle(&[Change::Fired(f.clone())], &[f]);
        }
        let labels = vec![("sink", "dead".to_owned())];
        assert_eq!(metrics.dropped.get_or_create(&labels).get(), 3);
        assert_eq!(metrics.queue_depth.get_or_create(&labels).get(), 2);
        // The oldest went: s3 and s4 wait.
        let queue = &alerts.sinks[0].queue;
        assert_eq!(queue.try_pop().unwrap()[0].subject, "s3");
        assert_eq!(queue.try_pop().unwrap()[0].subject, "s4");
    }
}
