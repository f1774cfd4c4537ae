//! The desired state for `watchdog run` and `watchdog check`: the source started per
//! `[desired]`, reported at start-up, read each cycle (handed to an observer: the
//! daemon's metrics, wired in `commands/`), and its changes of state logged.

use std::time::{Duration, Instant};

use super::{DesiredError, DesiredSource};
use crate::{
    config::{
        Config,
        desired::{DesiredConfig, Source},
    },
    model::desired::{Snapshot, State},
};

/// Sees the snapshot and the state each time [`Desired::state`] is asked (the daemon
/// publishes them as metrics).
pub type Observer<'a> = &'a dyn Fn(&Snapshot, &State);

/// The running source and what was last logged about it.
pub struct Desired {
    source: DesiredSource,
    settings: DesiredConfig,
    /// This node's name among the Nodes.
    node: String,
    /// What the log last said: (known, this node a member, how many Nodes).
    reported: Option<(bool, bool, usize)>,
}

impl Desired {
    /// Starts the configured source as node `node` and says so (the start-up feature
    /// report). Only a Kubernetes client that cannot be configured is an error; a source
    /// that fails later (no file yet, the API away) leaves the state unknown.
    pub async fn start(config: &Config, node: &str) -> Result<Self, DesiredError> {
        let settings = config.desired.clone();
        let source = DesiredSource::start(&settings).await?;
        let what = match settings.source {
            Source::None => "none (overlay_drift and stale_annotation off)".to_owned(),
            Source::File => format!("file {}", settings.path.display()),
            Source::Kubernetes if settings.kubeconfig.as_os_str().is_empty() => {
                "kubernetes (in-cluster service account)".to_owned()
            }
            Source::Kubernetes => {
                format!("kubernetes (kubeconfig {})", settings.kubeconfig.display())
            }
        };
        tracing::info!(
            "desired state: source={what} node={node} grace={} stale_after={}; state=unknown \
             until the first full list",
            humantime::format_duration(settings.grace),
            humantime::format_duration(settings.stale_after),
        );
        Ok(Self {
            source,
            settings,
            node: node.to_owned(),
            reported: None,
        })
    }

    /// This node's name among the Nodes.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// `[desired]`.
    pub fn settings(&self) -> &DesiredConfig {
        &self.settings
    }

    /// For `watchdog check`: waits up to `timeout` for the first full list; with a source
    /// configured and nothing known by then, says why.
    pub async fn wait_known(&mut self, timeout: Duration) -> Result<(), String> {
        if self.settings.source == Source::None {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.state(None) {
                State::Known { .. } => return Ok(()),
                State::Unknown { reason } if tokio::time::Instant::now() >= deadline => {
                    return Err(format!(
                        "the desired state is unknown after {}: {reason} (fix [desired], or \
                         set desired.source = \"none\" to audit without it)",
                        humantime::format_duration(timeout)
                    ));
                }
                State::Unknown { .. } => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// The desired state now (shown to `observer` when given); logs when it becomes
    /// known or unknown, or this node joins or leaves it.
    pub fn state(&mut self, observer: Option<Observer<'_>>) -> State {
        let snapshot = self.source.snapshot();
        let state = snapshot.state(Instant::now(), self.settings.stale_after);
        if let Some(observer) = observer {
            observer(&snapshot, &state);
        }
        if self.settings.source != Source::None {
            self.log_change(&snapshot, &state);
        }
        state
    }

    fn log_change(&mut self, snapshot: &Snapshot, state: &State) {
        let now = match state {
            State::Known { model, .. } => (
                true,
                model.nodes.get(&self.node).is_some_and(|n| n.takes_part()),
                model.nodes.len(),
            ),
            State::Unknown { .. } => (false, false, 0),
        };
        if self.reported == Some(now) {
            return;
        }
        let before = self.reported.replace(now);
        match state {
            State::Known { model, .. } => {
                if before.is_none_or(|(known, ..)| !known) {
                    tracing::info!(
                        nodes = model.nodes.len(),
                        members = model.members().count(),
                        "desired state known: {} ({} Nodes, {} in the VXLAN overlay, VNI {})",
                        snapshot.source,
                        model.nodes.len(),
                        model.members().count(),
                        model.vni(&self.node),
                    );
                }
                let (_, member, _) = now;
                let was_member = before.is_some_and(|(known, member, _)| known && member);
                if !member && (was_member || before.is_none_or(|(known, ..)| !known)) {
                    let why = match model.nodes.get(&self.node) {
                        None => "is not among the Nodes (set desired.node_name or NODE_NAME \
                                 to its Node's name)"
                            .to_owned(),
                        Some(node) => format!(
                            "does not take part in the VXLAN overlay ({:?})",
                            node.vtep.as_ref().err()
                        ),
                    };
                    tracing::warn!(
                        "this node `{}` {why}: overlay_drift stays quiet; stale_annotation \
                         and the node names on other findings still work",
                        self.node
                    );
                }
            }
            State::Unknown { reason } => tracing::warn!(
                "desired state unknown: {reason}; overlay_drift and stale_annotation are quiet \
                 until it is known again"
            ),
        }
    }
}
