//! `watchdog repair undo` and `watchdog repair journal`.
//!
//! `undo` restores the journalled before-state of one repair: the change is chosen by
//! [`crate::repair::undo::select`], a fresh dump must still show exactly what the change
//! left (else someone else changed the object since, and nothing is done), then its
//! inverse is journalled (origin `undo`, `reverts` the change), sent through rtnetlink,
//! and checked on fresh dumps within `repair.verify_window`; the change gets the verdict
//! `undone`. `journal` prints the journal.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, SystemTime},
};

use anyhow::Context as _;

use crate::{
    config::Config,
    repair::{
        execute::{Netlink, shows_after},
        journal::{self, Journal, Origin, Outcome, Record},
        object::current,
        undo::{Which, select},
    },
    sources::mirror,
};

/// How an undo ended (besides errors).
enum Undo {
    /// Restored and journalled.
    Done(String),
    /// Refused: nothing changed.
    Refused(String),
    /// Sent, but the kernel refused it or does not show it (journalled `failed`).
    Failed(String),
}

/// `watchdog repair undo`: exit 0 restored, 1 refused (nothing changed), 2 error or the
/// undo failed.
pub fn undo_main(config: Option<PathBuf>, which: Which) -> ExitCode {
    let run = || -> anyhow::Result<Undo> {
        let config = Config::load(config.as_deref())?;
        let runtime = super::runtime()?;
        runtime.block_on(undo(&config, which))
    };
    match run() {
        Ok(Undo::Done(text)) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Ok(Undo::Refused(why)) => {
            eprintln!("refused: {why}");
            ExitCode::from(1)
        }
        Ok(Undo::Failed(why)) => {
            eprintln!("error: {why}");
            ExitCode::from(2)
        }
        Err(err) => super::fail(&err, 2),
    }
}

async fn undo(config: &Config, which: Which) -> anyhow::Result<Undo> {
    let settings = &config.repair;
    // Opened (and locked) first: nobody else writes the journal or repairs meanwhile.
    let mut journal = Journal::open(&settings.journal, settings.journal_max_bytes)?;
    let (entries, _) = journal::read(&settings.journal)?;
    let records = journal::records(&entries);
    let target = match select(&records, which) {
        Ok(record) => record,
        Err(refused) => return Ok(Undo::Refused(refused.to_string())),
    };
    let id = target.change.id;
    let op = target.change.op();
    let net = mirror::dump()
        .await
        .context("cannot read the kernel's network state")?;
    if !shows_after(&op, &net) {
        let like = op.after.as_ref().or(op.before.as_ref()).expect("an object");
        let now = current(&net, like).map_or_else(|| "absent".into(), |o| o.spec());
        let left = op
            .after
            .as_ref()
            .map_or_else(|| "absent".into(), |o| o.spec());
        return Ok(Undo::Refused(format!(
            "{} was changed since change {id} by someone else: the kernel shows `{now}`, \
             change {id} left `{left}`; nothing done",
            op.key
        )));
    }
    let inverse = op.inverse();
    let unit = journal.next_id();
    let change = journal.change(&inverse, Origin::Undo, Some(id), unit, SystemTime::now())?;
    let mut netlink = Netlink::open()?;
    if let Err(err) = netlink.send(&inverse).await {
        journal.verdict(change.id, Outcome::Failed, &err, SystemTime::now())?;
        return Ok(Undo::Failed(format!("undo of change {id}: {err}")));
    }
    let deadline = tokio::time::Instant::now() + settings.verify_window;
    loop {
        let shown = mirror::dump()
            .await
            .is_ok_and(|net| shows_after(&inverse, &net));
        let now = SystemTime::now();
        if shown {
            journal.verdict(change.id, Outcome::Verified, "before-state back", now)?;
            journal.verdict(
                id,
                Outcome::Undone,
                format!("undone by change {}", change.id),
                now,
            )?;
            return Ok(Undo::Done(format!(
                "undone: change {id} by change {}: {}",
                change.id, change.command
            )));
        }
        if tokio::time::Instant::now() >= deadline {
            let why = format!(
                "the kernel does not show `{}` within {}s",
                change.command,
                settings.verify_window.as_secs()
            );
            journal.verdict(change.id, Outcome::Failed, &why, now)?;
            return Ok(Undo::Failed(format!("undo of change {id}: {why}")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
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
