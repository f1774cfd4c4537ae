//! `watchdog_tcp_*`: TCP outcomes of the destinations with the most trouble.

use std::{collections::BTreeMap, net::IpAddr, sync::RwLock};

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use super::{Labels, Metrics, encode_counters};
use crate::model::{
    counters::{ConnectCounts, ConnectSample},
    pods::ClientCounts,
};

/// The label of the clients beyond the top N, summed.
pub const OTHER_CLIENTS: &str = "other";

/// The latest TCP reading, encoded on each scrape.
#[derive(Debug, Default)]
pub(super) struct TcpCollector {
    view: RwLock<TcpView>,
}

#[derive(Debug, Default)]
struct TcpView {
    connects: Vec<(Labels, u64)>,
    syn_retransmits: Vec<(Labels, u64)>,
    client_connects: Vec<(Labels, u64)>,
    client_syn_retransmits: Vec<(Labels, u64)>,
}

/// The `top_n` clients with the most failed connects and SYN retransmits (then attempts,
/// then name) by name, and the rest summed as [`OTHER_CLIENTS`] (absent when none is
/// left over): at most `top_n + 1` label values, however many pods there are.
pub fn top_clients(
    clients: &BTreeMap<String, ClientCounts>,
    top_n: usize,
) -> Vec<(String, ClientCounts)> {
    let mut ranked: Vec<(&String, &ClientCounts)> = clients.iter().collect();
    ranked.sort_by(|a, b| {
        let trouble = |c: &ClientCounts| c.failed + c.syn_retransmits;
        trouble(b.1)
            .cmp(&trouble(a.1))
            .then(b.1.attempts.cmp(&a.1.attempts))
            .then(a.0.cmp(b.0))
    });
    let rest = ranked.split_off(top_n.min(ranked.len()));
    let mut top: Vec<(String, ClientCounts)> = ranked
        .into_iter()
        .map(|(name, counts)| (name.clone(), *counts))
        .collect();
    if !rest.is_empty() {
        let mut other = ClientCounts::default();
        for (_, counts) in rest {
            other.attempts += counts.attempts;
            other.failed += counts.failed;
            other.syn_retransmits += counts.syn_retransmits;
        }
        top.push((OTHER_CLIENTS.to_owned(), other));
    }
    top
}

impl Metrics {
    /// Publishes TCP outcomes of the `top_n` destinations with the most failures and SYN
    /// retransmits (then the most attempts).
    pub fn set_connects(&self, connects: &ConnectCounts, top_n: usize) {
        // One series per destination: the namespaces' outcomes summed.
        let mut per_destination: BTreeMap<(IpAddr, u16), ConnectSample> = BTreeMap::new();
        for ((_, addr, port), sample) in connects {
            let sum = per_destination.entry((*addr, *port)).or_default();
            sum.attempts += sample.attempts;
            sum.established += sample.established;
            sum.failed += sample.failed;
            sum.syn_retransmits += sample.syn_retransmits;
        }
        let mut worst: Vec<_> = per_destination.iter().collect();
        worst.sort_by(|a, b| {
            let trouble = |s: &ConnectSample| s.failed + s.syn_retransmits;
            trouble(b.1)
                .cmp(&trouble(a.1))
                .then(b.1.attempts.cmp(&a.1.attempts))
                .then(a.0.cmp(b.0))
        });
        let mut rows = Vec::new();
        let mut syn_retransmits = Vec::new();
        for ((addr, port), sample) in worst.into_iter().take(top_n) {
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

impl Metrics {
    /// Publishes TCP outcomes per client namespace (pod): the `top_n` with the most
    /// trouble by name, the rest as `client="other"`.
    pub fn set_clients(&self, clients: &BTreeMap<String, ClientCounts>, top_n: usize) {
        let mut connects = Vec::new();
        let mut syn_retransmits = Vec::new();
        for (client, counts) in top_clients(clients, top_n) {
            for (outcome, count) in [("attempted", counts.attempts), ("failed", counts.failed)] {
                connects.push((
                    vec![("client", client.clone()), ("outcome", outcome.to_owned())],
                    count,
                ));
            }
            syn_retransmits.push((vec![("client", client)], counts.syn_retransmits));
        }
        let mut view = self.tcp.view.write().expect("tcp view lock");
        view.client_connects = connects;
        view.client_syn_retransmits = syn_retransmits;
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
        )?;
        encode_counters(
            &mut encoder,
            "watchdog_tcp_client_connects",
            "TCP connects by client namespace (pod, `node`, `unattributed`, `netns:<inode>`) \
             and outcome (attempted, failed), over every destination; only the pods.top_n \
             clients with the most failures are named, the rest summed as client=\"other\".",
            &view.client_connects,
        )?;
        encode_counters(
            &mut encoder,
            "watchdog_tcp_client_syn_retransmits",
            "SYNs retransmitted by client namespace; same clients as \
             watchdog_tcp_client_connects.",
            &view.client_syn_retransmits,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clients(n: u64) -> BTreeMap<String, ClientCounts> {
        (0..n)
            .map(|i| {
                (
                    format!("default/pod-{i:03}"),
                    ClientCounts {
                        attempts: 10,
                        failed: i,
                        syn_retransmits: i,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn only_the_top_n_clients_are_named_and_the_rest_summed_as_other() {
        let top = top_clients(&clients(500), 3);
        let names: Vec<&str> = top.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            [
                "default/pod-499",
                "default/pod-498",
                "default/pod-497",
                "other"
            ]
        );
        let other = top[3].1;
        assert_eq!(other.attempts, 497 * 10);
        assert_eq!(other.failed, (0..497).sum::<u64>());
        // Fewer clients than the cap: no `other`; a cap of 0: only `other`.
        assert_eq!(top_clients(&clients(2), 3).len(), 2);
        let none = top_clients(&clients(5), 0);
        assert_eq!(none.len(), 1);
        assert_eq!(none[0].0, OTHER_CLIENTS);

        let metrics = Metrics::new();
        metrics.set_clients(&clients(500), 3);
        let text = metrics.encode();
        let series = text
            .lines()
            .filter(|l| l.starts_with("watchdog_tcp_client_syn_retransmits_total{"))
            .count();
        assert_eq!(series, 4, "{text}");
        assert!(
            text.contains(
                "watchdog_tcp_client_connects_total{client=\"other\",outcome=\"failed\"} 123256"
            ),
            "{text}"
        );
    }
}
