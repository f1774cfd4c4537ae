//! `watchdog repair undo` (`repair::undo` on fresh netlink dumps) and `watchdog repair
//! journal` (the journal printed).

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use crate::{
    config::Config,
    model::net::Snapshot,
    repair::{
        journal::{self, Record},
        op::Op,
        undo::{Undone, Which, undo},
        world::FnWorld,
    },
    sources::mirror,
};

/// `watchdog repair undo`: exit 0 restored, 1 refused (nothing changed), 2 error or the
/// undo failed.
pub fn undo_main(config: Option<PathBuf>, which: Which) -> ExitCode {
    let run = || -> anyhow::Result<Undone> {
        let config = Config::load(config.as_deref())?;
        let runtime = super::runtime()?;
        let mut world = FnWorld {
            read: || async { mirror::dump().await.map_err(|e| e.to_string()) },
            // An undo is checked by the kernel showing the before-state, nothing else.
            evidence: |_: &Op, _: &Snapshot| None,
        };
        Ok(runtime.block_on(undo(&config.repair, which, &mut world))?)
    };
    match run() {
        Ok(Undone::Done(text)) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Ok(Undone::Refused(why)) => {
            eprintln!("refused: {why}");
            ExitCode::from(1)
        }
        Ok(Undone::Failed(why)) => {
            eprintln!("error: {why}");
            ExitCode::from(2)
        }
        Err(err) => super::fail(&err, 2),
    }
}

/// One record as a JSON line: the change, its verdicts and `outcome` (the last
/// verdict's, `null` while none).
pub fn record_json(record: &Record) -> serde_json::Value {
    let mut value = serde_json::to_value(record).expect("a record serializes");
    value["outcome"] = record
        .outcome()
        .map_or(serde_json::Value::Null, |o| o.as_str().into());
    value
}

/// One record as a line for people: id, time, origin, outcome, command.
pub fn record_line(record: &Record) -> String {
    let change = &record.change;
    let outcome = match record.outcome() {
        None => "pending".to_owned(),
        Some(o) if record.is_open() => format!("{} (open)", o.as_str()),
        Some(o) => o.as_str().to_owned(),
    };
    let reverts = change
        .reverts
        .map_or_else(String::new, |id| format!(" (reverts {id})"));
    format!(
        "{:>5}  {}  {:<8}  {:<14}  {}{reverts}",
        change.id,
        change.at,
        change.origin.as_str(),
        outcome,
        change.command
    )
}

fn journal_records(path: &Path) -> anyhow::Result<Vec<Record>> {
    let (entries, bad) = journal::read(path)?;
    if bad > 0 {
        eprintln!(
            "warning: {bad} line(s) of {} did not parse (a write torn by a crash?); skipped",
            path.display()
        );
    }
    Ok(journal::records(&entries))
}

/// `watchdog repair journal`: exit 0 (an absent journal prints nothing), 2 error.
pub fn journal_main(config: Option<PathBuf>, json: bool) -> ExitCode {
    let run = || -> anyhow::Result<()> {
        let config = Config::load(config.as_deref())?;
        let records = journal_records(&config.repair.journal)?;
        if !json && !records.is_empty() {
            println!(
                "{:>5}  {:<24}  {:<8}  {:<14}  COMMAND",
                "ID", "TIME", "ORIGIN", "OUTCOME"
            );
        }
        for record in &records {
            if json {
                println!("{}", record_json(record));
            } else {
                println!("{}", record_line(record));
            }
        }
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => super::fail(&err, 2),
    }
}
