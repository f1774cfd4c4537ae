//! `source = "kubernetes"`: every Node through the shared client's watcher
//! ([`crate::sources::k8s`]), kept as converted [`Node`](crate::model::desired::Node)s in
//! the published snapshot itself (one copy of the model in steady state; each object is
//! read slim and converted as it arrives). The snapshot is confirmed while the watch is
//! open and marked failing when listing or watching fails, which decides when the
//! desired state may be trusted.

use std::{collections::BTreeMap, sync::Arc};

use kube::ResourceExt;
use tokio::sync::watch;

use super::{convert, publish_confirmed, publish_failure};
use crate::{
    model::desired::{Model, Node, Snapshot},
    sources::k8s::{Kube, Update, follow, object::Node as KubeNode},
};

/// Nodes per list request: a page of slim Nodes is small, and so is the JSON of 100
/// real ones (the whole page is read before it is parsed).
const PAGE: u32 = 100;

/// Follows every Node into `tx` until the task is dropped.
pub async fn follow_nodes(kube: Kube, tx: watch::Sender<Snapshot>) {
    let mut failing = false;
    // The Nodes of a list in progress.
    let mut listing: BTreeMap<String, Node> = BTreeMap::new();
    follow::<KubeNode>(&kube, None, PAGE, |update| match update {
        Update::ListStart => listing.clear(),
        Update::Listed(object) => {
            let node = convert::node(&object);
            listing.insert(node.name.clone(), node);
        }
        Update::ListEnd => {
            let model = Model {
                nodes: std::mem::take(&mut listing),
            };
            tracing::info!(
                nodes = model.nodes.len(),
                members = model.members().count(),
                "desired state: Nodes listed"
            );
            failing = false;
            super::publish_model(&tx, model);
        }
        Update::Applied(object) => {
            let node = convert::node(&object);
            let now = std::time::Instant::now();
            tx.send_if_modified(|snapshot| {
                snapshot.confirmed_at = Some(now);
                let model = snapshot
                    .model
                    .get_or_insert_with(|| Arc::new(Model::default()));
                // Status heartbeats change nothing the overlay reads: no new model.
                if model.nodes.get(&node.name) == Some(&node) {
                    return false;
                }
                Arc::make_mut(model).nodes.insert(node.name.clone(), node);
                true
            });
        }
        Update::Deleted(object) => {
            let name = object.name_any();
            let now = std::time::Instant::now();
            tx.send_if_modified(|snapshot| {
                snapshot.confirmed_at = Some(now);
                match &mut snapshot.model {
                    Some(model) if model.nodes.contains_key(&name) => {
                        Arc::make_mut(model).nodes.remove(&name);
                        true
                    }
                    _ => false,
                }
            });
        }
        Update::Healthy => {
            if failing {
                tracing::info!("desired state: watching Nodes again");
                failing = false;
            }
            publish_confirmed(&tx);
        }
        Update::Failed(error) => {
            if !failing {
                tracing::warn!("desired state: Kubernetes API: {error}");
                failing = true;
            }
            publish_failure(&tx, error);
        }
    })
    .await;
}
