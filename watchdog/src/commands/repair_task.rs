//! Repair in the daemon: the engine runs in the detection loop (plain data, never
//! waits); in `apply` the executor runs in a task of its own (netlink socket, journal,
//! verification windows), settles the changes a crash interrupted before it takes a
//! plan, and sends its reports back for the next cycle.
//!
//! The executor's world: a fresh netlink dump for each read; an operation's evidence is
//! gone when `overlay_drift` no longer names its object on a fresh dump *and* the
//! remote Node's `flannel.1` address (the route's destination network, the neighbour's
//! address, the FDB MAC's neighbour) answers an active probe through the overlay.

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::mpsc;

use super::repair::findings_now;
use crate::{
    config::{Config, DetectConfig, repair::Mode},
    findings::Finding,
    model::{
        desired::{Model, State},
        net::Snapshot,
        probe::{Method, Outcome as ProbeOutcome, ProbeRequest, Purpose},
    },
    repair::{
        engine::{Engine, Step},
        event::RecentRepairs,
        execute::{Done, Executor, Netlink, Report, World},
        journal::{self, Journal, Record},
        object::Object,
        plan::Op,
    },
    sources::{mirror, prober::run::probe},
};

/// How many journal records `GET /api/v1/repairs` shows.
pub const RECENT: usize = 50;

/// What the executor's world knows.
pub struct DaemonWorld {
    /// The desired state the plan was made from (none while settling a crash).
    pub model: Option<Arc<Model>>,
    /// This node's name.
    pub own: String,
    /// For `overlay_drift`.
    pub detect: DetectConfig,
    /// How the remote `flannel.1` address is probed.
    pub method: Method,
    /// `prober.enabled`: when off (ICMP blocked on purpose, say), a change is judged by
    /// the findings alone, never by a probe the operator turned off.
    pub probe: bool,
}

/// The address whose answer shows `op` helped: the remote Node's `flannel.1` address.
pub fn probe_target(op: &Op, net: &Snapshot) -> Option<IpAddr> {
    match op.after.as_ref()? {
        Object::Route(r) => Some(r.dst.network().addr),
        Object::Neighbour(n) => Some(n.ip),
        Object::Fdb(f) => net
            .neighbours()
            .find(|n| n.ifindex == f.ifindex && n.mac == Some(f.mac.0))
            .map(|n| n.ip),
    }
}

impl World for DaemonWorld {
    async fn read(&mut self) -> Result<Snapshot, String> {
        mirror::dump().await.map_err(|e| e.to_string())
    }

    async fn evidence(&mut self, op: &Op, net: &Snapshot) -> Option<String> {
        if let Some(model) = &self.model
            && let Some(f) = findings_now(net, model, &self.own, &self.detect)
                .into_iter()
                .find(|f| {
                    f.candidate.kind == op.finding_kind && f.candidate.subject == op.finding_subject
                })
        {
            return Some(format!("the finding `{}` persists", f.candidate.subject));
        }
        if !self.probe {
            return None;
        }
        let target = probe_target(op, net)?;
        let request = ProbeRequest::liveness(target, Purpose::Vtep, None);
        match probe(&request, self.method, Duration::from_secs(1), 3)
            .await
            .outcome
        {
            ProbeOutcome::Answered { .. } => None,
            ProbeOutcome::Unanswered => Some(format!(
                "{target} (the Node's flannel address) does not answer a {} probe",
                self.method.as_str()
            )),
            other => Some(format!("{target} (the Node's flannel address): {other:?}")),
        }
    }
}

struct Job {
    ops: Vec<Op>,
    model: Arc<Model>,
}

enum Back {
    /// Reports on a plan.
    Plan(Vec<Report>),
    /// Reports on the changes a crash interrupted.
    Recovered(Vec<Report>),
    /// The executor cannot work (journal, socket): why.
    Broken(String),
}

/// The daemon's repair: the engine, the executor task, the recent journal.
pub struct DaemonRepair {
    engine: Engine,
    jobs: Option<mpsc::UnboundedSender<Job>>,
    back: Option<mpsc::UnboundedReceiver<Back>>,
    recent: RecentRepairs,
    journal: std::path::PathBuf,
}

/// The last `RECENT` journal records as JSON.
pub fn recent_records(path: &std::path::Path) -> Vec<serde_json::Value> {
    let records = match journal::read(path) {
        Ok((entries, _)) => journal::records(&entries),
        Err(err) => {
            tracing::warn!("repair: {err}");
            return Vec::new();
        }
    };
    let skip = records.len().saturating_sub(RECENT);
    records
        .iter()
        .skip(skip)
        .map(|r| serde_json::to_value(r).expect("a record serializes"))
        .collect()
}

/// Settles the journal's interrupted changes with `executor` (see
/// [`Executor::recover`]); logs what it did.
pub async fn recover<W: World>(
    executor: &mut Executor<'_, W>,
    open: &[Record],
) -> Result<Vec<Report>, crate::repair::execute::ExecError> {
    if open.is_empty() {
        return Ok(Vec::new());
    }
    tracing::warn!(
        "repair: {} journalled change(s) without a verdict (interrupted): verifying again or \
         rolling back",
        open.len()
    );
    executor.recover(open).await
}

impl DaemonRepair {
    /// Starts repair as `[repair] mode` says (`apply` spawns the executor task).
    pub fn start(config: &Config, own: &str, method: Method, recent: RecentRepairs) -> Self {
        let settings = config.repair.clone();
        let mut engine = Engine::new(settings.clone(), own);
        let path = settings.journal.clone();
        if let Ok((entries, _)) = journal::read(&path) {
            let records = journal::records(&entries);
            if settings.mode != Mode::Off {
                engine.seed(&records, Instant::now(), SystemTime::now());
                recent.set(recent_records(&path));
            }
            // Only `apply` settles interrupted changes: in another mode they would stay
            // half-done without a word.
            let open = records.iter().filter(|r| r.is_open()).count();
            if settings.mode != Mode::Apply && open > 0 {
                engine.stop(format!(
                    "{open} journalled change(s) in {} have no verdict (interrupted): run \
                     `watchdog repair apply` or set `[repair] mode = \"apply\"` to settle \
                     them (verified again or rolled back)",
                    path.display()
                ));
            }
        }
        tracing::info!(mode = settings.mode.as_str(), "repair: [repair] mode");
        let mut repair = Self {
            engine,
            jobs: None,
            back: None,
            recent,
            journal: path,
        };
        if settings.mode == Mode::Apply {
            let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
            let (back_tx, back_rx) = mpsc::unbounded_channel();
            let world = DaemonWorld {
                model: None,
                own: own.to_owned(),
                detect: config.detect.clone(),
                method,
                probe: config.prober.enabled,
            };
            tokio::spawn(executor_task(settings, world, jobs_rx, back_tx));
            repair.jobs = Some(jobs_tx);
            repair.back = Some(back_rx);
        }
        repair
    }

    /// One cycle's plan (see [`Engine::cycle`]); an apply plan goes to the executor.
    pub fn cycle(&mut self, net: &Snapshot, desired: &State, active: &[Finding]) -> Step {
        let mut step = self.engine.cycle(net, desired, active, Instant::now());
        if !step.execute.is_empty() {
            let ops = std::mem::take(&mut step.execute);
            let model = match desired {
                State::Known { model, .. } => Some(model.clone()),
                State::Unknown { .. } => None,
            };
            let sent = match (&self.jobs, model) {
                (Some(jobs), Some(model)) => jobs
                    .send(Job {
                        ops: ops.clone(),
                        model,
                    })
                    .is_ok(),
                _ => false,
            };
            if !sent {
                let reports: Vec<Report> = ops
                    .into_iter()
                    .map(|op| Report {
                        op,
                        id: None,
                        done: Done::NotApplied("the repair executor is not running".into()),
                    })
                    .collect();
                let done = self.engine.finished(&reports, true, Instant::now());
                step.log.extend(done.log);
                step.counts.extend(done.counts);
                step.events.extend(done.events);
            }
        }
        step
    }

    /// What the executor finished since the last cycle.
    pub fn drain(&mut self) -> Vec<Step> {
        let mut steps = Vec::new();
        let Some(back) = self.back.as_mut() else {
            return steps;
        };
        let mut any = false;
        while let Ok(msg) = back.try_recv() {
            any = true;
            steps.push(match msg {
                Back::Plan(reports) => self.engine.finished(&reports, true, Instant::now()),
                Back::Recovered(reports) => self.engine.finished(&reports, false, Instant::now()),
                Back::Broken(why) => {
                    self.jobs = None;
                    self.engine
                        .stop(format!("the repair executor stopped: {why}"));
                    Step {
                        log: vec![format!(
                            "repair: the executor stopped, nothing is repaired until the \
                             daemon restarts: {why}"
                        )],
                        ..Step::default()
                    }
                }
            });
        }
        if any {
            self.recent.set(recent_records(&self.journal));
        }
        steps
    }

    /// Repair's findings for the next cycle.
    pub fn candidates(&self) -> Vec<crate::findings::Candidate> {
        self.engine.candidates()
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.engine.mode()
    }
}

async fn executor_task(
    settings: crate::config::repair::RepairConfig,
    mut world: DaemonWorld,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    back: mpsc::UnboundedSender<Back>,
) {
    let mut journal = match Journal::open(&settings.journal, settings.journal_max_bytes) {
        Ok(journal) => journal,
        Err(err) => {
            let _ = back.send(Back::Broken(err.to_string()));
            return;
        }
    };
    let mut netlink = match Netlink::open() {
        Ok(netlink) => netlink,
        Err(err) => {
            let _ = back.send(Back::Broken(err.to_string()));
            return;
        }
    };
    let open = journal.open_changes();
    let mut executor = Executor {
        mode: Mode::Apply,
        verify_window: settings.verify_window,
        poll: Duration::from_millis(200),
        netlink: Some(&mut netlink),
        journal: Some(&mut journal),
        world: &mut world,
    };
    match recover(&mut executor, &open).await {
        Ok(reports) if reports.is_empty() && open.is_empty() => {}
        Ok(reports) => {
            let _ = back.send(Back::Recovered(reports));
        }
        Err(err) => {
            let _ = back.send(Back::Broken(err.to_string()));
            return;
        }
    }
    while let Some(job) = jobs.recv().await {
        executor.world.model = Some(job.model);
        match executor.run(&job.ops).await {
            Ok(reports) => {
                if back.send(Back::Plan(reports)).is_err() {
                    return;
                }
            }
            Err(err) => {
                let _ = back.send(Back::Broken(err.to_string()));
                return;
            }
        }
    }
}
