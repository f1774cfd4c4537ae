//! The Kubernetes API client the desired-state source (Nodes) and the pods source (this
//! node's Pods, EndpointSlices) share: kube-rs with rustls (ring), configured from
//! `desired.kubeconfig` or the in-cluster service account, and kube's own watcher
//! ([`follow`]: a paged list, then a watch from its resourceVersion with bookmarks,
//! resumed after a dropped connection, listed again on `410 Gone`, backing off on
//! failures). Every request passes through [`open`], which knows which watches are open
//! right now, so a source can say exactly when its watch is open and when it failed (the
//! desired state's freshness depends on it).
//!
//! Objects are read into slim types ([`object`]): only the fields a source uses are
//! deserialized, never whole `k8s-openapi` objects.

mod follow;
pub mod object;
mod open;

use kube::Client;

pub use self::follow::{Update, follow};
use crate::config::desired::DesiredConfig;

/// A Kubernetes client that could not be configured; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
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

/// A client and what it knows about its open watches. Cheap to clone (both are shared).
#[derive(Clone)]
pub struct Kube {
    client: Client,
    open: open::OpenWatches,
}

impl Kube {
    /// A client from `desired.kubeconfig`, else the in-cluster service account
    /// (`KUBERNETES_SERVICE_HOST`/`_PORT`, the token and CA under
    /// `/var/run/secrets/kubernetes.io/serviceaccount`).
    pub async fn connect(config: &DesiredConfig) -> Result<Self, KubeError> {
        let kube_config = if config.kubeconfig.as_os_str().is_empty() {
            kube::Config::incluster().map_err(|err| KubeError::InCluster {
                message: err.to_string(),
            })?
        } else {
            let path = &config.kubeconfig;
            let bad = |message: String| KubeError::Kubeconfig {
                path: path.clone(),
                message,
            };
            let file = kube::config::Kubeconfig::read_from(path).map_err(|e| bad(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| bad(e.to_string()))?
        };
        let open = open::OpenWatches::default();
        let client = kube::client::ClientBuilder::try_from(kube_config)
            .map_err(|err| KubeError::Client {
                message: err.to_string(),
            })?
            .with_layer(&open::TrackLayer::new(open.clone()))
            .build();
        Ok(Self { client, open })
    }
}
