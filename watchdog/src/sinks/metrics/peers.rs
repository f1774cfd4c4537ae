//! `watchdog_peer_*`: traffic of the busiest peers, with interfaces named from the network
//! mirror, and the peer map's health.

use std::sync::RwLock;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::gauge::ConstGauge,
};

use super::{Labels, Metrics, encode_counters};
use crate::model::counters::PeerCounts;

/// The latest peer reading, encoded on each scrape.
#[derive(Debug, Default)]
pub(super) struct PeersCollector {
    view: RwLock<PeersView>,
}

#[derive(Debug, Default)]
struct PeersView {
    packets: Vec<(Labels, u64)>,
    bytes: Vec<(Labels, u64)>,
    map_events: Vec<(Labels, u64)>,
    entries: i64,
}

impl Metrics {
    /// Publishes the busiest `top_n` peers (by packets sent), each interface named by
    /// `interface` (from the mirror's links) and each peer's Node by `node` (a VTEP or a
    /// pod address of a Node: `peer_node`, no new series), and the peer map's health.
    pub fn set_peers(
        &self,
        peers: &PeerCounts,
        top_n: usize,
        interface: impl Fn(u32) -> String,
        node: impl Fn(std::net::IpAddr) -> Option<String>,
    ) {
        let mut busiest: Vec<_> = peers.peers.iter().collect();
        busiest.sort_by(|a, b| b.1.tx_packets.cmp(&a.1.tx_packets).then(a.0.cmp(b.0)));
        let mut packets = Vec::with_capacity(top_n * 2);
        let mut bytes = Vec::with_capacity(top_n * 2);
        for ((ifindex, addr), sample) in busiest.into_iter().take(top_n) {
            let interface = interface(*ifindex);
            let peer_node = node(*addr);
            for (direction, count, octets) in [
                ("tx", sample.tx_packets, sample.tx_bytes),
                ("rx", sample.rx_packets, sample.rx_bytes),
            ] {
                let mut labels = vec![
                    ("interface", interface.clone()),
                    ("peer", addr.to_string()),
                    ("direction", direction.to_owned()),
                ];
                if let Some(peer_node) = &peer_node {
                    labels.push(("peer_node", peer_node.clone()));
                }
                packets.push((labels.clone(), count));
                bytes.push((labels, octets));
            }
        }
        let mut view = self.peers.view.write().expect("peers view lock");
        view.packets = packets;
        view.bytes = bytes;
        view.map_events = vec![
            (vec![("event", "insert".to_owned())], peers.inserts),
            (
                vec![("event", "insert_failed".to_owned())],
                peers.insert_failed,
            ),
        ];
        view.entries = peers.peers.len() as i64;
    }
}

impl Collector for PeersCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let view = self.view.read().expect("peers view lock");
        encode_counters(
            &mut encoder,
            "watchdog_peer_packets",
            "Packets to (tx) and from (rx) a remote address on an interface; only the busiest \
             peers.top_n peers by packets sent are shown.",
            &view.packets,
        )?;
        encode_counters(
            &mut encoder,
            "watchdog_peer_bytes",
            "Bytes to (tx) and from (rx) a remote address on an interface; same peers as \
             watchdog_peer_packets.",
            &view.bytes,
        )?;
        encode_counters(
            &mut encoder,
            "watchdog_peer_map_events",
            "Peer map events: insert (a new peer; evictions = inserts - entries), \
             insert_failed (packets not recorded).",
            &view.map_events,
        )?;
        let entries = ConstGauge::new(view.entries);
        entries.encode(encoder.encode_descriptor(
            "watchdog_peer_map_entries",
            "Peers currently held in the in-kernel LRU map.",
            None,
            entries.metric_type(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::model::counters::PeerSample;

    #[test]
    fn a_peer_of_a_known_node_carries_it() {
        let metrics = Metrics::new();
        let mut peers = PeerCounts::default();
        let vtep = IpAddr::V4(Ipv4Addr::new(192, 168, 77, 11));
        let other = IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8));
        for addr in [vtep, other] {
            peers.peers.insert(
                (2, addr),
                PeerSample {
                    tx_packets: 3,
                    ..PeerSample::default()
                },
            );
        }
        metrics.set_peers(
            &peers,
            10,
            |_| "eth0".to_owned(),
            |addr| (addr == vtep).then(|| "qx-b".to_owned()),
        );
        let text = metrics.encode();
        for line in [
            "watchdog_peer_packets_total{interface=\"eth0\",peer=\"192.168.77.11\",direction=\"tx\",peer_node=\"qx-b\"} 3",
            "watchdog_peer_packets_total{interface=\"eth0\",peer=\"8.8.8.8\",direction=\"tx\"} 3",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
