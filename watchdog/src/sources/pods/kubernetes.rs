//! `pods.source = "kubernetes"`: the Pods of this node only (field selector
//! `spec.nodeName=<node>`; RBAC get/list/watch on pods), listed then watched through the
//! shared client ([`crate::sources::k8s`]), kept as UID → namespace/name and addresses.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
};

use super::podlist::{info_of, key_of};
use crate::{
    model::pods::PodInfo,
    sources::k8s::{Kube, Update, follow, object::Pod},
};

/// Pods per list request.
const PAGE: u32 = 250;

/// The pods the source knows, shared with [`super::Pods`].
#[derive(Debug, Default)]
pub struct PodStore {
    /// Listed (or read) at least once: the pods below are complete.
    pub listed: bool,
    /// Pod UID → name and addresses.
    pub pods: BTreeMap<String, PodInfo>,
}

/// The store, shared.
pub type PodNames = Arc<RwLock<PodStore>>;

/// Follows this node's Pods into `names` until the task is dropped.
pub async fn follow_pods(kube: Kube, node: String, names: PodNames) {
    let fields = format!("spec.nodeName={node}");
    // The pods of a list in progress.
    let mut listing = BTreeMap::new();
    follow::<Pod>(&kube, Some(&fields), PAGE, |update| {
        let write = || {
            names
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        match update {
            Update::ListStart => listing.clear(),
            Update::Listed(pod) => {
                if let (Some(uid), Some(info)) = (key_of(&pod), info_of(&pod)) {
                    listing.insert(uid, info);
                }
            }
            Update::ListEnd => {
                let mut store = write();
                store.pods = std::mem::take(&mut listing);
                store.listed = true;
                tracing::info!(pods = store.pods.len(), %node, "pod names listed");
            }
            Update::Applied(pod) => {
                let Some(uid) = key_of(&pod) else { return };
                let mut store = write();
                match info_of(&pod) {
                    Some(info) => store.pods.insert(uid, info),
                    None => store.pods.remove(&uid),
                };
            }
            Update::Deleted(pod) => {
                if let Some(uid) = key_of(&pod) {
                    write().pods.remove(&uid);
                }
            }
            Update::Healthy => {}
            Update::Failed(why) => tracing::warn!("pods: {why}"),
        }
    })
    .await;
}
