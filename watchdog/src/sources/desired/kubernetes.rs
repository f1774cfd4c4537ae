//! `source = "kubernetes"`: the Kubernetes client (kube-rs, rustls with ring) and a
//! reflector over any resource: a full list, then a watch from the list's resourceVersion
//! (with bookmarks), resumed from the last resourceVersion when the connection drops,
//! listed again on `410 Gone`. It reports exactly when the watch is open and when it
//! fails, which the desired state needs to know when it may be trusted. Generic over the
//! resource, so Pods and EndpointSlices can follow the same way.
//!
//! The Node reflector keeps only the converted [`Node`](crate::model::desired::Node)s
//! (managed fields, images, conditions are dropped as each object arrives), in the
//! published snapshot itself: one copy of the model in steady state.

use std::{fmt::Debug, sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node as KubeNode;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, WatchEvent, WatchParams},
};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::{convert, publish_confirmed, publish_failure};
use crate::{
    config::desired::DesiredConfig,
    model::desired::{Model, Snapshot},
};

/// The Kubernetes client could not be configured; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum KubeSourceError {
    /// The kubeconfig file cannot be used.
    #[error("desired.kubeconfig {path}: {message}")]
    Kubeconfig {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Not in a Pod, and no kubeconfig given.
    #[error(
        "desired.source = \"kubernetes\" without desired.kubeconfig needs the in-cluster \
         service account ({message}); run as the DaemonSet, or set desired.kubeconfig = \
         \"/path/to/kubeconfig\""
    )]
    InCluster {
        /// Why the in-cluster configuration failed.
        message: String,
    },
    /// The client could not be built from the configuration (TLS, proxy).
    #[error("desired.source = \"kubernetes\": cannot build the client: {message}")]
    Client {
        /// What failed.
        message: String,
    },
}

/// A client from `desired.kubeconfig`, else the in-cluster service account.
pub async fn client(config: &DesiredConfig) -> Result<Client, KubeSourceError> {
    let kube_config = if config.kubeconfig.as_os_str().is_empty() {
        kube::Config::incluster().map_err(|err| KubeSourceError::InCluster {
            message: err.to_string(),
        })?
    } else {
        let path = &config.kubeconfig;
        let bad = |message: String| KubeSourceError::Kubeconfig {
            path: path.clone(),
            message,
        };
        let file = kube::config::Kubeconfig::read_from(path).map_err(|e| bad(e.to_string()))?;
        kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| bad(e.to_string()))?
    };
    Client::try_from(kube_config).map_err(|err| KubeSourceError::Client {
        message: err.to_string(),
    })
}

/// What a reflector reports.
#[derive(Debug)]
pub enum Update<K> {
    /// A full list: every object (the store is replaced).
    Listed(Vec<K>),
    /// An object was added or changed.
    Applied(K),
    /// An object was deleted.
    Deleted(K),
    /// The watch is open and current (a watch started, a bookmark, a periodic check).
    Healthy,
    /// Listing or watching failed; the reflector retries with backoff.
    Failed(String),
}

/// Retry delays: 0.5 s doubling to 10 s, reset by success.
struct Backoff {
    next: Duration,
}

impl Backoff {
    const MIN: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(10);

    fn new() -> Self {
        Self { next: Self::MIN }
    }

    fn reset(&mut self) {
        self.next = Self::MIN;
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(Self::MAX);
    }
}

/// How often an open, quiet watch is reported [`Update::Healthy`].
const HEALTHY_EVERY: Duration = Duration::from_secs(5);
/// The server ends a watch after this many seconds; the reflector resumes it.
const WATCH_TIMEOUT_SECS: u32 = 290;

/// Lists `api`, then watches it, forever, reporting every change to `on`.
pub async fn reflect<K>(api: Api<K>, on: impl FnMut(Update<K>))
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    reflect_selected(api, None, on).await;
}

/// As [`reflect`], only the objects matching the field selector `fields` (e.g.
/// `spec.nodeName=pi-1`).
pub async fn reflect_selected<K>(api: Api<K>, fields: Option<&str>, mut on: impl FnMut(Update<K>))
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let mut backoff = Backoff::new();
    'list: loop {
        let (items, mut version) = match list_all(&api, fields).await {
            Ok(listed) => listed,
            Err(err) => {
                on(Update::Failed(format!("listing failed: {err}")));
                backoff.wait().await;
                continue 'list;
            }
        };
        on(Update::Listed(items));
        backoff.reset();
        loop {
            let mut params = WatchParams::default().timeout(WATCH_TIMEOUT_SECS);
            if let Some(fields) = fields {
                params = params.fields(fields);
            }
            let stream = match api.watch(&params, &version).await {
                Ok(stream) => stream,
                Err(kube::Error::Api(status)) if status.code == 410 => {
                    tracing::info!("watch: resourceVersion {version} is gone (410); listing again");
                    continue 'list;
                }
                Err(err) => {
                    on(Update::Failed(format!("watch failed: {err}")));
                    backoff.wait().await;
                    continue;
                }
            };
            on(Update::Healthy);
            backoff.reset();
            let mut stream = std::pin::pin!(stream);
            let mut healthy = tokio::time::interval(HEALTHY_EVERY);
            healthy.tick().await;
            let idle = Duration::from_secs(u64::from(WATCH_TIMEOUT_SECS) + 10);
            let mut deadline = tokio::time::Instant::now() + idle;
            loop {
                let event = tokio::select! {
                    event = stream.next() => event,
                    _ = healthy.tick() => {
                        on(Update::Healthy);
                        continue;
                    }
                    () = tokio::time::sleep_until(deadline) => {
                        tracing::debug!("watch idle for {idle:?}; watching again");
                        break;
                    }
                };
                deadline = tokio::time::Instant::now() + idle;
                match event {
                    Some(Ok(WatchEvent::Added(object) | WatchEvent::Modified(object))) => {
                        version = object.resource_version().unwrap_or(version);
                        on(Update::Applied(object));
                    }
                    Some(Ok(WatchEvent::Deleted(object))) => {
                        version = object.resource_version().unwrap_or(version);
                        on(Update::Deleted(object));
                    }
                    Some(Ok(WatchEvent::Bookmark(bookmark))) => {
                        version = bookmark.metadata.resource_version;
                        on(Update::Healthy);
                    }
                    Some(Ok(WatchEvent::Error(status))) if status.code == 410 => {
                        tracing::info!(
                            "watch: resourceVersion {version} is gone (410 {}); listing again",
                            status.message
                        );
                        continue 'list;
                    }
                    Some(Ok(WatchEvent::Error(status))) => {
                        on(Update::Failed(format!(
                            "watch error {} {}: {}",
                            status.code, status.reason, status.message
                        )));
                        backoff.wait().await;
                        break;
                    }
                    Some(Err(err)) => {
                        // A dropped connection: resume from `version` at once.
                        tracing::debug!("watch stream ended with an error: {err}");
                        break;
                    }
                    // The server ended the watch (its timeout): resume.
                    None => break,
                }
            }
        }
    }
}

/// Every object, page by page, and the list's resourceVersion.
async fn list_all<K>(api: &Api<K>, fields: Option<&str>) -> Result<(Vec<K>, String), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let mut items = Vec::new();
    let mut params = ListParams::default().limit(500);
    if let Some(fields) = fields {
        params = params.fields(fields);
    }
    loop {
        let page = api.list(&params).await?;
        items.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => {
                let version = page.metadata.resource_version.unwrap_or_default();
                return Ok((items, version));
            }
        }
    }
}

/// Follows every Node into `tx` until the task is dropped.
pub async fn follow_nodes(client: Client, tx: watch::Sender<Snapshot>) {
    let api: Api<KubeNode> = Api::all(client);
    let mut failing = false;
    reflect(api, |update| match update {
        Update::Listed(objects) => {
            let model = convert::model(&objects);
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
