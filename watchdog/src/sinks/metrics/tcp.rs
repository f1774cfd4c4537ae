//! `watchdog_tcp_*`: TCP outcomes of the destinations with the most trouble.

use std::sync::RwLock;

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use super::{Labels, Metrics, encode_counters};
use crate::model::counters::{ConnectCounts, ConnectSample};

/// The latest TCP reading, encoded on each scrape.
#[derive(Debug, Default)]
pub(super) struct TcpCollector {
    view: RwLock<TcpView>,
}

#[derive(Debug, Default)]
struct TcpView {
    connects: Vec<(Labels, u64)>,
    syn_retransmits: Vec<(Labels, u64)>,
}

impl Metrics {
    /// Publishes TCP outcomes of the `top_n` destinations with the most failures and SYN
    /// retransmits (then the most attempts).
    pub fn set_connects(&self, connects: &ConnectCounts, top_n: usize) {
        let mut worst: Vec<_> = connects.iter().collect();
        worst.sort_by(|a, b| {
            let trouble = |s: &ConnectSample| s.failed + s.syn_retransmits;
            trouble(b.1)
                .cmp(&trouble(a.1))
                .then(b.1.attempts.cmp(&a.1.attempts))
                .then(a.0.cmp(b.0))
        });
        let mut rows = Vec::new();
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
                rows.push((labels, count));
            }
            syn_retransmits.push((peer(), sample.syn_retransmits));
        }
        let mut view = self.tcp.view.write().expect("tcp view lock");
        view.connects = rows;
        view.syn_retransmits = syn_retransmits;
    }
}

impl Collector for TcpCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let view = self.view.read().expect("tcp view lock");
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
