//! `watchdog_kernel_drops*`: the drop counters, by reason (and namespace), skipped drops,
//! and the busiest drop destinations.

use std::{collections::BTreeMap, net::IpAddr, sync::RwLock};

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use super::{Labels, Metrics, encode_counters};
use crate::model::counters::DropCounts;

/// The latest drop reading, encoded on each scrape.
#[derive(Debug, Default)]
pub(super) struct DropsCollector {
    view: RwLock<DropsView>,
}

#[derive(Debug, Default)]
struct DropsView {
    rows: Vec<(Labels, u64)>,
    skipped: Vec<(Labels, u64)>,
    destinations: Vec<(Labels, u64)>,
}

impl Metrics {
    /// Publishes a new reading of the drop counters: per reason (per namespace too when
    /// `label_netns`) and the `top_n` busiest destinations.
    pub fn set_drops(&self, drops: &DropCounts, label_netns: bool, top_n: usize) {
        let mut rows: Vec<(Labels, u64)> = Vec::with_capacity(drops.counts.len());
        for ((netns, reason), count) in &drops.counts {
            let mut labels = Vec::with_capacity(2);
            if label_netns {
                let netns = match *netns {
                    watchdog_common::NETNS_UNKNOWN => "unknown".to_owned(),
                    inode => inode.to_string(),
                };
                labels.push(("netns", netns));
            }
            labels.push(("reason", reason.clone()));
            // Without the netns label, every namespace's drops of a reason are one series.
            match rows.iter_mut().find(|(existing, _)| *existing == labels) {
                Some((_, total)) => *total += count,
                None => rows.push((labels, *count)),
            }
        }
        let skipped = vec![
            (vec![("cause", "map_full".to_owned())], drops.map_full),
            (vec![("cause", "other_netns".to_owned())], drops.other_netns),
            (
                vec![("cause", "unattributed".to_owned())],
                drops.unattributed,
            ),
        ];
        // One series per (reason, destination): the namespaces' drops summed.
        let mut per_destination: BTreeMap<(&str, IpAddr), u64> = BTreeMap::new();
        for ((_, reason, addr), count) in &drops.destinations {
            *per_destination.entry((reason, *addr)).or_default() += count;
        }
        let mut busiest: Vec<_> = per_destination.into_iter().collect();
        busiest.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let destinations = busiest
            .into_iter()
            .take(top_n)
            .map(|((reason, addr), count)| {
                let labels = vec![
                    ("reason", reason.to_owned()),
                    ("destination", addr.to_string()),
                ];
                (labels, count)
            })
            .collect();
        let mut view = self.drops.view.write().expect("drops view lock");
        view.rows = rows;
        view.skipped = skipped;
        view.destinations = destinations;
    }
}

impl Collector for DropsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let view = self.view.read().expect("drops view lock");
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
        )?;
        encode_counters(
            &mut encoder,
            "watchdog_kernel_drop_destinations",
            "Drops for route and neighbour reasons (NEIGH_FAILED, IP_OUTNOROUTES, ...) by the \
             dropped packet's destination; only the peers.top_n busiest destinations.",
            &view.destinations,
        )
    }
}
