//! `pods.source = "kubernetes"`: the Pods of this node only (field selector
//! `spec.nodeName=<node>`; RBAC get/list/watch on pods), listed then watched, kept as
//! UID → namespace/name.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
};

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};

use crate::{
    model::pods::PodName,
    sources::desired::kubernetes::{Update, reflect_selected},
};

/// Pod UID → name, shared with [`super::Pods`].
pub type PodNames = Arc<RwLock<BTreeMap<String, PodName>>>;

/// The name of a running pod (`None` for a finished one, or one without a UID).
fn name_of(pod: &Pod) -> Option<(String, PodName)> {
    let meta = &pod.metadata;
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return None;
    }
    Some((
        meta.uid.clone()?,
        PodName {
            namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
            name: meta.name.clone()?,
        },
    ))
}

/// Follows this node's Pods into `names` until the task is dropped.
pub async fn follow_pods(client: Client, node: String, names: PodNames) {
    let api: Api<Pod> = Api::all(client);
    let fields = format!("spec.nodeName={node}");
    reflect_selected(api, Some(&fields), |update| {
        let mut names = names
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match update {
            Update::Listed(pods) => {
                *names = pods.iter().filter_map(name_of).collect();
                tracing::info!(pods = names.len(), %node, "pod names listed");
            }
            Update::Applied(pod) => match name_of(&pod) {
                Some((uid, name)) => {
                    names.insert(uid, name);
                }
                None => {
                    if let Some(uid) = &pod.metadata.uid {
                        names.remove(uid);
                    }
                }
            },
            Update::Deleted(pod) => {
                if let Some(uid) = &pod.metadata.uid {
                    names.remove(uid);
                }
            }
            Update::Healthy => {}
            Update::Failed(why) => tracing::warn!("pods: {why}"),
        }
    })
    .await;
}
