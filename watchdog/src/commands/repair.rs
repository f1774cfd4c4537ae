//! `watchdog repair plan` and `watchdog repair apply`: one-shot repair of this node's
//! overlay against a NodeList file (`--nodes`, or `[desired] source = "file"`).
//!
//! One fresh read of the kernel (netlink dumps), the overlay compared once (no grace: a
//! person is asking), the planner with the `[repair]` guards (`repair::oneshot`), then
//! (only for `apply --yes`) the executor: journalled, verified, rolled back. A one-shot
//! command has no traffic evidence, so it never deletes (the planner holds deletes
//! without it), and it verifies an operation by its drift being gone on a fresh read.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;

use crate::{
    config::{Config, desired::Source, repair::Mode},
    model::{desired::Model, net::Snapshot},
    repair::{
        daemon::recover,
        execute::{Executor, Netlink},
        journal::Journal,
        oneshot::{plan_now, render},
        op::Op,
        plan::Outcome,
        report::{Done, Report},
        world::{FnWorld, drift_persists},
    },
    sources::{desired::file, kernel::procfs, mirror},
};
/// Runs `ops` in `mode` against this namespace's kernel: each operation verified by a
/// fresh dump showing it and its finding gone (`evidence` can add a check, e.g. a probe;
/// `None` means gone).
pub async fn execute_now(
    ops: &[Op],
    mode: Mode,
    model: &Model,
    own: &str,
    config: &Config,
    mut evidence: impl FnMut(&Op, &Snapshot) -> Option<String>,
) -> anyhow::Result<Vec<Report>> {
    let mut journal = match mode {
        Mode::Apply => Some(Journal::open(
            &config.repair.journal,
            config.repair.journal_max_bytes,
        )?),
        _ => None,
    };
    let mut netlink = match mode {
        Mode::Apply => Some(Netlink::open()?),
        _ => None,
    };
    let mut world = FnWorld {
        read: || async { mirror::dump().await.map_err(|e| e.to_string()) },
        evidence: |op: &Op, net: &Snapshot| {
            drift_persists(net, model, own, op).or_else(|| evidence(op, net))
        },
    };
    let open = journal
        .as_ref()
        .map(|journal| journal.open_changes())
        .unwrap_or_default();
    let mut executor = Executor {
        mode,
        verify_window: config.repair.verify_window,
        poll: Duration::from_millis(100),
        netlink: netlink.as_mut(),
        journal: journal.as_mut(),
        world: &mut world,
    };
    // Changes a crash interrupted are settled first (verified again or rolled back).
    let mut reports = recover(&mut executor, &open).await?;
    reports.extend(executor.run(ops).await?);
    Ok(reports)
}

fn load(config: Option<&Path>, nodes: Option<&Path>) -> anyhow::Result<(Config, Model)> {
    let config = Config::load(config)?;
    let path: PathBuf = match nodes {
        Some(path) => path.to_owned(),
        None if config.desired.source == Source::File => config.desired.path.clone(),
        None => anyhow::bail!(
            "no desired state: give --nodes FILE (a NodeList, `kubectl get nodes -o json`) or \
             set [desired] source = \"file\" and path in the config"
        ),
    };
    let model = file::load(&path, config.desired.max_file_bytes)?;
    Ok((config, model))
}

/// `watchdog repair plan`: exit 0 nothing to do, 1 a plan printed, 2 error.
pub fn plan_main(config: Option<PathBuf>, nodes: Option<PathBuf>, json: bool) -> ExitCode {
    let run = || -> anyhow::Result<Outcome> {
        let (config, model) = load(config.as_deref(), nodes.as_deref())?;
        let own = config.desired.node_name(procfs::node_name);
        let runtime = super::runtime()?;
        let net = runtime
            .block_on(mirror::dump())
            .context("cannot read the kernel's network state")?;
        Ok(plan_now(&net, &model, &own, &config.repair))
    };
    match run() {
        Ok(outcome) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&outcome).expect("a plan serializes")
                );
            } else {
                print!("{}", render(&outcome));
            }
            match &outcome {
                Outcome::NoPlan { .. } => ExitCode::from(2),
                Outcome::Planned(plan) if plan.ops.is_empty() => ExitCode::SUCCESS,
                Outcome::Planned(_) => ExitCode::from(1),
            }
        }
        Err(err) => super::fail(&err, 2),
    }
}

/// `watchdog repair apply`: prints the plan; with `--yes` applies it (journalled,
/// verified, rolled back), else only a dry run. Exit 0 when everything planned was
/// applied and verified (or nothing was to do), 1 when something was refused, rolled
/// back or failed, 2 on error.
pub fn apply_main(config: Option<PathBuf>, nodes: Option<PathBuf>, yes: bool) -> ExitCode {
    let run = || -> anyhow::Result<bool> {
        let (config, model) = load(config.as_deref(), nodes.as_deref())?;
        let own = config.desired.node_name(procfs::node_name);
        let runtime = super::runtime()?;
        runtime.block_on(async {
            let net = mirror::dump()
                .await
                .context("cannot read the kernel's network state")?;
            let outcome = plan_now(&net, &model, &own, &config.repair);
            print!("{}", render(&outcome));
            let plan = match outcome {
                Outcome::NoPlan { reason } => anyhow::bail!("no plan: {reason}"),
                Outcome::Planned(plan) => plan,
            };
            if plan.refused.is_some() {
                return Ok(false);
            }
            let mode = if yes { Mode::Apply } else { Mode::DryRun };
            if !yes && !plan.ops.is_empty() {
                println!("dry run: nothing changed (add --yes to apply)");
            }
            let reports = execute_now(&plan.ops, mode, &model, &own, &config, |_, _| None).await?;
            let mut ok = true;
            for report in &reports {
                let detail = match &report.done {
                    Done::DryRun => continue,
                    Done::Verified => String::new(),
                    Done::RolledBack(why)
                    | Done::NotApplied(why)
                    | Done::Failed(why)
                    | Done::Conflict(why) => {
                        ok = false;
                        format!(": {why}")
                    }
                };
                println!("{}: {}{detail}", report.done.as_str(), report.op.command());
            }
            Ok(ok)
        })
    };
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => super::fail(&err, 2),
    }
}
