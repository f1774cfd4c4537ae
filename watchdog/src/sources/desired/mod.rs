//! Sources of desired state (`[desired]`): Kubernetes Nodes through a watch, a NodeList
//! file, or nothing. Each runs as a task and publishes a
//! [`Snapshot`](crate::model::desired::Snapshot) the pipeline reads every cycle; whether
//! it may be trusted (known, or unknown after `desired.stale_after` of failure) is decided
//! there, from the snapshot and the time. [`Desired`] is the source as `watchdog run` and
//! `watchdog check` drive it (start-up report, the state each cycle, its changes logged).

pub mod convert;
pub mod file;
pub mod kubernetes;
mod running;

use std::sync::Arc;

use tokio::sync::watch;

pub use self::running::Desired;
use crate::{
    config::desired::{DesiredConfig, Source},
    model::desired::Snapshot,
    sources::k8s::{Kube, KubeError},
};

/// A desired-state source that could not start; the message names the key to fix.
#[derive(Debug, thiserror::Error)]
pub enum DesiredError {
    /// The Kubernetes client could not be configured.
    #[error(transparent)]
    Kube(#[from] KubeError),
}

/// A running source. Dropping it stops the task.
pub struct DesiredSource {
    rx: watch::Receiver<Snapshot>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for DesiredSource {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl DesiredSource {
    /// Starts the configured source (on the current tokio runtime).
    pub async fn start(config: &DesiredConfig) -> Result<Self, DesiredError> {
        match config.source {
            Source::None => Ok(Self::none()),
            Source::File => {
                let (tx, rx) =
                    watch::channel(Snapshot::waiting(format!("file {}", config.path.display())));
                let task = tokio::spawn(file::follow(
                    config.path.clone(),
                    config.file_poll,
                    config.max_file_bytes,
                    tx,
                ));
                Ok(Self {
                    rx,
                    task: Some(task),
                })
            }
            Source::Kubernetes => {
                let kube = Kube::connect(config).await?;
                let (tx, rx) = watch::channel(Snapshot::waiting("kubernetes"));
                let task = tokio::spawn(kubernetes::follow_nodes(kube, tx));
                Ok(Self {
                    rx,
                    task: Some(task),
                })
            }
        }
    }

    /// `source = "none"`: always unknown.
    pub fn none() -> Self {
        let mut snapshot = Snapshot::waiting("none");
        snapshot.error = Some("desired.source is \"none\"".into());
        let (_tx, rx) = watch::channel(snapshot);
        Self { rx, task: None }
    }

    /// The newest snapshot (cheap: the model is shared).
    pub fn snapshot(&self) -> Snapshot {
        self.rx.borrow().clone()
    }

    /// A receiver that is notified on every update (for tests and event-driven readers).
    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.rx.clone()
    }
}

/// Publishes a new model: confirmed now, not failing.
fn publish_model(tx: &watch::Sender<Snapshot>, model: crate::model::desired::Model) {
    let now = std::time::Instant::now();
    tx.send_modify(|snapshot| {
        snapshot.model = Some(Arc::new(model));
        snapshot.confirmed_at = Some(now);
        snapshot.failing_since = None;
        snapshot.error = None;
    });
}

/// The source still works and the model is current.
fn publish_confirmed(tx: &watch::Sender<Snapshot>) {
    let now = std::time::Instant::now();
    tx.send_if_modified(|snapshot| {
        let was_failing = snapshot.failing_since.take().is_some();
        snapshot.confirmed_at = Some(now);
        snapshot.error = None;
        was_failing
    });
}

/// The source failed: keep the model, remember since when it has been failing.
fn publish_failure(tx: &watch::Sender<Snapshot>, error: String) {
    let now = std::time::Instant::now();
    tx.send_modify(|snapshot| {
        snapshot.failing_since.get_or_insert(now);
        snapshot.error = Some(error);
        snapshot.errors += 1;
    });
}
