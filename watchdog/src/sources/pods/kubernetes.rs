//! `pods.source = "kubernetes"`: the Pods of this node only (field selector
//! `spec.nodeName=<node>`; RBAC get/list/watch on pods), listed then watched, kept as
//! UID → namespace/name.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{Arc, RwLock},
};

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};

use crate::{
    model::pods::{PodInfo, PodName},
    sources::desired::kubernetes::{Update, reflect_selected},
};

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

/// The UID in the pod's cgroup path: a static pod's from its mirror Pod's annotation,
/// every other pod's `metadata.uid`.
fn key_of(pod: &Pod) -> Option<String> {
    let meta = &pod.metadata;
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(super::podlist::MIRROR))
        .cloned()
        .or_else(|| meta.uid.clone())
}

/// The name and addresses of a running pod by [`key_of`] (`None` for a finished one, or
/// one without a UID).
fn name_of(pod: &Pod) -> Option<(String, PodInfo)> {
    let meta = &pod.metadata;
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return None;
    }
    let status = pod.status.as_ref();
    let mut addresses: Vec<IpAddr> = status
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|ip| ip.ip.parse().ok())
        .collect();
    if addresses.is_empty() {
        addresses.extend(
            status
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse::<IpAddr>().ok()),
        );
    }
    Some((
        key_of(pod)?,
        PodInfo {
            name: PodName {
                namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
                name: meta.name.clone()?,
            },
            addresses,
        },
    ))
}

/// Follows this node's Pods into `names` until the task is dropped.
pub async fn follow_pods(client: Client, node: String, names: PodNames) {
    let api: Api<Pod> = Api::all(client);
    let fields = format!("spec.nodeName={node}");
    reflect_selected(api, Some(&fields), |update| {
        let mut store = names
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        store.listed |= matches!(update, Update::Listed(_));
        let names = &mut store.pods;
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
                    if let Some(uid) = &key_of(&pod) {
                        names.remove(uid);
                    }
                }
            },
            Update::Deleted(pod) => {
                if let Some(uid) = &key_of(&pod) {
                    names.remove(uid);
                }
            }
            Update::Healthy => {}
            Update::Failed(why) => tracing::warn!("pods: {why}"),
        }
    })
    .await;
}
