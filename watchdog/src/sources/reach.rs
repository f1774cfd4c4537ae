//! Reachability of the other Nodes through the overlay: every `cluster.interval`, one small
//! probe (the prober's: ICMP echo or a UDP port probe, no privilege) to each peer Node's
//! overlay address, as many at once as end a round of unanswered probes within half the
//! interval, on a task of its own. The result per Node (answered or not, and when) is plain
//! data ([`Reach`]) the metrics read. Nothing is probed while the desired state names no
//! peer.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::task::JoinSet;

use super::prober::run;
use crate::model::{
    probe::{Method, Outcome, ProbeRequest, Purpose},
    reach::{Reach, Target},
};

#[derive(Debug, Default)]
struct Shared {
    targets: Vec<Target>,
    reach: Reach,
}

/// The reachability prober; dropping it stops its task.
#[derive(Debug)]
pub struct Reacher {
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Reacher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Reacher {
    /// Starts probing every `interval` with `method`, each probe waiting `timeout` and
    /// sending up to `tries` packets.
    pub fn start(interval: Duration, method: Method, timeout: Duration, tries: u32) -> Self {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let task = tokio::spawn(probe_loop(shared.clone(), interval, method, timeout, tries));
        Self { shared, task }
    }

    /// The Nodes to probe from now on (the desired state's peers); evidence about a Node
    /// no longer among them is dropped.
    pub fn set_targets(&self, targets: Vec<Target>) {
        let mut shared = self.shared.lock().expect("reach lock");
        if shared.targets != targets {
            shared.reach.retain(&targets);
            shared.targets = targets;
        }
    }

    /// The latest evidence per Node.
    pub fn reach(&self) -> Reach {
        self.shared.lock().expect("reach lock").reach.clone()
    }
}

async fn probe_loop(
    shared: Arc<Mutex<Shared>>,
    interval: Duration,
    method: Method,
    timeout: Duration,
    tries: u32,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let targets = shared.lock().expect("reach lock").targets.clone();
        let limit = in_flight(targets.len(), interval, timeout);
        let mut targets = targets.into_iter();
        let mut probes = JoinSet::new();
        loop {
            while probes.len() < limit {
                let Some(target) = targets.next() else {
                    break;
                };
                probes.spawn(async move {
                    let request =
                        ProbeRequest::liveness(target.address.into(), Purpose::Vtep, None);
                    let ran = run::probe(&request, method, timeout, tries).await;
                    (target, ran.outcome)
                });
            }
            let Some(done) = probes.join_next().await else {
                break;
            };
            let Ok((target, outcome)) = done else {
                continue;
            };
            let reachable = match outcome {
                Outcome::Answered { .. } => true,
                Outcome::Unanswered | Outcome::Unreachable { .. } => false,
                // A local error says nothing about the peer: no evidence.
                Outcome::Error(err) => {
                    tracing::debug!(node = %target.node, "reachability probe: {err}");
                    continue;
                }
            };
            let mut shared = shared.lock().expect("reach lock");
            // Only while the Node is still a target (the desired state may have changed).
            if shared.targets.iter().any(|t| t.node == target.node) {
                shared.reach.record(&target.node, reachable, Instant::now());
            }
        }
    }
}

/// The fewest probes in flight at once that still end a round of `targets` probes, none
/// answered, within half the `interval`; at least [`MIN_IN_FLIGHT`]. A probe is a task and
/// a socket: 1000 Nodes probed all at once held 2.7 MiB of tasks each round, heap the
/// daemon kept afterwards.
fn in_flight(targets: usize, interval: Duration, timeout: Duration) -> usize {
    let half = (interval / 2).as_micros().max(1);
    let waves = (half / timeout.as_micros().max(1)).max(1);
    let needed = (targets as u128).div_ceil(waves);
    (needed as usize).max(MIN_IN_FLIGHT)
}

/// Probes in flight at once that every round may use.
const MIN_IN_FLIGHT: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_of_unanswered_probes_ends_within_half_the_interval() {
        let ms = Duration::from_millis;
        // The defaults: 5 s, 450 ms: five waves fit in 2.5 s.
        assert_eq!(in_flight(1000, ms(5000), ms(450)), 200);
        assert_eq!(in_flight(10, ms(5000), ms(450)), MIN_IN_FLIGHT);
        // A timeout longer than half the interval: all at once.
        assert_eq!(in_flight(1000, ms(1000), ms(900)), 1000);
        for (targets, interval, timeout) in [(1000, 5000, 450), (333, 2000, 300), (5, 100, 1)] {
            let limit = in_flight(targets, ms(interval), ms(timeout));
            let waves = (targets as u64).div_ceil(limit as u64);
            assert!(
                waves * timeout <= interval / 2,
                "{targets} {interval} {timeout}"
            );
        }
    }
}
