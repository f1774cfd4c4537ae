//! Repair in the daemon: the engine runs in the detection loop (plain data, never
//! waits); in `apply` the executor runs in a task of its own (netlink socket, journal,
//! verification windows, an [`OverlayWorld`] to read the kernel and judge the
//! evidence), settles the changes a crash interrupted before it takes a plan, and sends
//! its reports back for the next cycle.

use std::{
    future::Future,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::mpsc;

use super::{
    engine::{Engine, Step},
    event::RecentRepairs,
    execute::{ExecError, Executor, Netlink},
    journal::{self, Journal, Record},
    op::Op,
    report::{Done, Report},
    world::{OverlayWorld, World},
};
use crate::{
    config::repair::{Mode, RepairConfig},
    findings::Candidate,
    model::{
        desired::{Model, State},
        net::Snapshot,
        probe::Outcome as ProbeOutcome,
    },
    overlay::Observed,
};

/// How many journal records `GET /api/v1/repairs` shows.
pub const RECENT: usize = 50;

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
    journal: PathBuf,
}

/// The last `RECENT` journal records as JSON.
pub fn recent_records(path: &Path) -> Vec<serde_json::Value> {
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
) -> Result<Vec<Report>, ExecError> {
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
    /// Starts repair as `[repair] mode` says (`apply` spawns the executor task, which
    /// reads the kernel and judges the evidence through `world`).
    pub fn start<R, RF, P, PF>(
        settings: &RepairConfig,
        world: OverlayWorld<R, P>,
        recent: RecentRepairs,
    ) -> Self
    where
        R: FnMut() -> RF + Send + 'static,
        RF: Future<Output = Result<Snapshot, String>> + Send + 'static,
        P: FnMut(IpAddr) -> PF + Send + 'static,
        PF: Future<Output = ProbeOutcome> + Send + 'static,
    {
        let settings = settings.clone();
        let mut engine = Engine::new(settings.clone());
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
            tokio::spawn(executor_task(settings, world, jobs_rx, back_tx));
            repair.jobs = Some(jobs_tx);
            repair.back = Some(back_rx);
        }
        repair
    }

    /// One cycle's plan (see [`Engine::cycle`]) on the cycle's overlay comparison; an
    /// apply plan goes to the executor.
    pub fn cycle(&mut self, net: &Snapshot, desired: &State, overlay: Option<&Observed>) -> Step {
        let mut step = self.engine.cycle(net, desired, overlay, Instant::now());
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
    pub fn candidates(&self) -> Vec<Candidate> {
        self.engine.candidates()
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.engine.mode()
    }
}

async fn executor_task<R, RF, P, PF>(
    settings: RepairConfig,
    mut world: OverlayWorld<R, P>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    back: mpsc::UnboundedSender<Back>,
) where
    R: FnMut() -> RF,
    RF: Future<Output = Result<Snapshot, String>>,
    P: FnMut(IpAddr) -> PF,
    PF: Future<Output = ProbeOutcome>,
{
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
