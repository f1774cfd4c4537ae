//! The repair journal: JSON lines, one per change (written and fsync'd *before* the change
//! is made, with the object before and after, the command and its inverse) and one per
//! verdict (how it went). Read back at start: a change without a final verdict was
//! interrupted, and is verified again or rolled back ([`Journal::open_changes`]).
//!
//! The file is capped: past `repair.journal_max_bytes` it is renamed to `<journal>.1`
//! (replacing the previous one) and a new file starts with the changes still open, so no
//! interrupted change is ever rotated away.

use std::{
    collections::BTreeMap,
    fs::{self, File, OpenOptions},
    io::{self, BufRead, BufReader, Write},
    path::{Path, PathBuf},
    time::SystemTime,
};

use serde::{Deserialize, Serialize};

use super::{
    object::Object,
    op::{Action, Op},
};
use crate::findings::{Kind, rfc3339};

/// Why a change was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// A planned repair.
    Repair,
    /// Undoing a repair that failed verification (or was interrupted).
    Rollback,
    /// `watchdog repair undo`.
    Undo,
}

impl Origin {
    /// `repair`, `rollback`, `undo`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Origin::Repair => "repair",
            Origin::Rollback => "rollback",
            Origin::Undo => "undo",
        }
    }
}

/// One change, as journalled before it is made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Increasing, unique in the journal.
    pub id: u64,
    /// When it was journalled (RFC 3339).
    pub at: String,
    /// Why it is made.
    pub origin: Origin,
    /// For a rollback or an undo: the change it reverts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverts: Option<u64>,
    /// Changes made together (one Node's objects) share it.
    pub unit: u64,
    /// Add, replace or delete.
    pub action: Action,
    /// The Node the object belongs to.
    pub node: String,
    /// The object's identity.
    pub key: String,
    /// The object before (none for an add).
    pub before: Option<Object>,
    /// The object after (none for a delete).
    pub after: Option<Object>,
    /// The command a person would type.
    pub command: String,
    /// The command that undoes it.
    pub inverse: String,
    /// The finding that named the object: kind …
    pub finding_kind: Kind,
    /// … and subject.
    pub finding_subject: String,
    /// Why, in words.
    pub why: String,
}

impl Change {
    /// The operation this change makes.
    pub fn op(&self) -> Op {
        Op {
            action: self.action,
            node: self.node.clone(),
            key: self.key.clone(),
            before: self.before.clone(),
            after: self.after.clone(),
            finding_kind: self.finding_kind,
            finding_subject: self.finding_subject.clone(),
            why: self.why.clone(),
        }
    }
}

/// How a change went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The kernel took it (not final: verification follows).
    Applied,
    /// The new object is in the kernel and the evidence is gone.
    Verified,
    /// It did not help and was rolled back (by the change named in the detail).
    RolledBack,
    /// The kernel refused it, or it could not be verified and rollback failed too.
    Failed,
    /// The process stopped before making it: the kernel still has the object before.
    NotApplied,
    /// Another writer changed the object: left alone.
    Conflict,
    /// `watchdog repair undo` put the object before back.
    Undone,
}

impl Outcome {
    /// Whether nothing more will happen to the change.
    pub fn is_final(&self) -> bool {
        !matches!(self, Outcome::Applied)
    }

    /// The snake_case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Verified => "verified",
            Outcome::RolledBack => "rolled_back",
            Outcome::Failed => "failed",
            Outcome::NotApplied => "not_applied",
            Outcome::Conflict => "conflict",
            Outcome::Undone => "undone",
        }
    }
}

/// A verdict on a change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The change.
    pub id: u64,
    /// When (RFC 3339).
    pub at: String,
    /// How it went.
    pub outcome: Outcome,
    /// Why, or what was seen.
    pub detail: String,
}

/// One line of the journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "entry", rename_all = "snake_case")]
pub enum Entry {
    /// A change, before it is made.
    Change(Box<Change>),
    /// A verdict on a change.
    Verdict(Verdict),
}

/// A change with every verdict it got, for `repair journal` and the API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Record {
    /// The change.
    #[serde(flatten)]
    pub change: Change,
    /// Its verdicts, oldest first.
    pub verdicts: Vec<Verdict>,
}

impl Record {
    /// The latest verdict's outcome, if any.
    pub fn outcome(&self) -> Option<Outcome> {
        self.verdicts.last().map(|v| v.outcome)
    }

    /// True while no final verdict has been written.
    pub fn is_open(&self) -> bool {
        !self.verdicts.iter().any(|v| v.outcome.is_final())
    }
}

/// The journal cannot be used; the message names `repair.journal`.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Opening, creating, writing or syncing failed.
    #[error(
        "repair.journal {path}: cannot {what}: {source}; repair needs a writable directory \
         (the DaemonSet mounts a hostPath at /var/lib/watchdog)"
    )]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The error.
        source: io::Error,
    },
    /// Another process has it open for writing.
    #[error(
        "repair.journal {path} is in use by another watchdog (the daemon in `[repair] mode = \
         \"apply\"`, or another `repair apply`/`undo`): stop it, or set its mode to \
         \"dry_run\", and try again"
    )]
    Busy {
        /// The file.
        path: PathBuf,
    },
}

/// Whether a change line is one this version can act on: its action matches the objects
/// it carries (an add has only `after`, a delete only `before`, a replace both, of the
/// same kind). Anything else would make the executor's inverse meaningless.
fn coherent(change: &Change) -> bool {
    match (change.action, &change.before, &change.after) {
        (Action::Add, None, Some(_)) | (Action::Delete, Some(_), None) => true,
        (Action::Replace, Some(before), Some(after)) => {
            std::mem::discriminant(before) == std::mem::discriminant(after)
        }
        _ => false,
    }
}

/// Groups entries into records, in journal order; skips verdicts without a change.
pub fn records(entries: &[Entry]) -> Vec<Record> {
    let mut by_id: BTreeMap<u64, Record> = BTreeMap::new();
    for entry in entries {
        match entry {
            Entry::Change(change) => {
                by_id.insert(
                    change.id,
                    Record {
                        change: (**change).clone(),
                        verdicts: Vec::new(),
                    },
                );
            }
            Entry::Verdict(verdict) => {
                if let Some(record) = by_id.get_mut(&verdict.id) {
                    record.verdicts.push(verdict.clone());
                }
            }
        }
    }
    by_id.into_values().collect()
}

/// The rotated file next to `path`: `<path>.1`.
pub fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// Reads `<path>.1` (if any) then `path` (if any). Lines that do not parse (a line torn
/// by a crash mid-write) or carry a change that cannot be acted on (see `coherent`) are
/// skipped and counted.
pub fn read(path: &Path) -> Result<(Vec<Entry>, usize), JournalError> {
    let mut entries = Vec::new();
    let mut bad = 0;
    for file in [rotated(path), path.to_owned()] {
        let handle = match File::open(&file) {
            Ok(handle) => handle,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(JournalError::Io {
                    path: file,
                    what: "read it",
                    source,
                });
            }
        };
        for line in BufReader::new(handle).lines() {
            let line = line.map_err(|source| JournalError::Io {
                path: file.clone(),
                what: "read it",
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Entry>(&line) {
                Ok(Entry::Change(change)) if !coherent(&change) => bad += 1,
                Ok(entry) => entries.push(entry),
                Err(_) => bad += 1,
            }
        }
    }
    // A change copied into a new file at rotation appears twice: keep the first.
    let mut seen = std::collections::BTreeSet::new();
    entries.retain(|entry| match entry {
        Entry::Change(c) => seen.insert(c.id),
        Entry::Verdict(_) => true,
    });
    Ok((entries, bad))
}

/// The journal, open for appending (by one process at a time: it holds an exclusive
/// `flock` on `<journal>.lock` while open).
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    _lock: File,
    max_bytes: u64,
    file: File,
    size: u64,
    next_id: u64,
    /// Changes without a final verdict, with their verdicts so far (copied over at
    /// rotation).
    open: BTreeMap<u64, Vec<Entry>>,
}

impl Journal {
    /// Opens (creating the file and its directory) and reads back what is there.
    pub fn open(path: &Path, max_bytes: u64) -> Result<Self, JournalError> {
        let io_err = |what, source| JournalError::Io {
            path: path.to_owned(),
            what,
            source,
        };
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| io_err("create its directory", e))?;
        }
        let lock = lock(path)?;
        let (entries, bad) = read(path)?;
        if bad > 0 {
            tracing::warn!(
                path = %path.display(),
                "repair journal: {bad} line(s) did not parse (a write torn by a crash?); skipped"
            );
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .map_err(|e| io_err("open it for appending", e))?;
        let mut size = file
            .metadata()
            .map_err(|e| io_err("read its size", e))?
            .len();
        // A torn last line: end it, so the next entry starts on a line of its own.
        if size > 0 && !ends_with_newline(path)? {
            file.write_all(b"\n").map_err(|e| io_err("write it", e))?;
            size += 1;
        }
        let next_id = entries
            .iter()
            .filter_map(|e| match e {
                Entry::Change(c) => Some(c.id),
                Entry::Verdict(_) => None,
            })
            .max()
            .map_or(1, |max| max + 1);
        let mut open: BTreeMap<u64, Vec<Entry>> = BTreeMap::new();
        for record in records(&entries) {
            if record.is_open() {
                let mut lines = vec![Entry::Change(Box::new(record.change.clone()))];
                lines.extend(record.verdicts.into_iter().map(Entry::Verdict));
                open.insert(record.change.id, lines);
            }
        }
        Ok(Self {
            path: path.to_owned(),
            _lock: lock,
            max_bytes,
            file,
            size,
            next_id,
            open,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Changes without a final verdict (interrupted), oldest first.
    pub fn open_changes(&self) -> Vec<Record> {
        self.open
            .values()
            .map(|lines| {
                let mut change = None;
                let mut verdicts = Vec::new();
                for line in lines {
                    match line {
                        Entry::Change(c) => change = Some((**c).clone()),
                        Entry::Verdict(v) => verdicts.push(v.clone()),
                    }
                }
                Record {
                    change: change.expect("an open record starts with its change"),
                    verdicts,
                }
            })
            .collect()
    }

    /// Journals `op` (fsync'd) before it is made; returns its id.
    pub fn change(
        &mut self,
        op: &Op,
        origin: Origin,
        reverts: Option<u64>,
        unit: u64,
        at: SystemTime,
    ) -> Result<Change, JournalError> {
        let change = Change {
            id: self.next_id,
            at: rfc3339::format(at),
            origin,
            reverts,
            unit,
            action: op.action,
            node: op.node.clone(),
            key: op.key.clone(),
            before: op.before.clone(),
            after: op.after.clone(),
            command: op.command(),
            inverse: op.inverse().command(),
            finding_kind: op.finding_kind,
            finding_subject: op.finding_subject.clone(),
            why: op.why.clone(),
        };
        let entry = Entry::Change(Box::new(change.clone()));
        self.append(&entry)?;
        self.next_id += 1;
        self.open.insert(change.id, vec![entry]);
        Ok(change)
    }

    /// Journals a verdict on change `id` (fsync'd).
    pub fn verdict(
        &mut self,
        id: u64,
        outcome: Outcome,
        detail: impl Into<String>,
        at: SystemTime,
    ) -> Result<(), JournalError> {
        let entry = Entry::Verdict(Verdict {
            id,
            at: rfc3339::format(at),
            outcome,
            detail: detail.into(),
        });
        self.append(&entry)?;
        if outcome.is_final() {
            self.open.remove(&id);
        } else if let Some(lines) = self.open.get_mut(&id) {
            lines.push(entry);
        }
        Ok(())
    }

    /// The id the next change will get (the unit of the first change of a group).
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    fn append(&mut self, entry: &Entry) -> Result<(), JournalError> {
        let mut line = serde_json::to_vec(entry).expect("a journal entry serializes");
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.write(&line)
    }

    fn write(&mut self, line: &[u8]) -> Result<(), JournalError> {
        let io_err = |what, source| JournalError::Io {
            path: self.path.clone(),
            what,
            source,
        };
        self.file
            .write_all(line)
            .map_err(|e| io_err("write it", e))?;
        self.file.sync_data().map_err(|e| io_err("sync it", e))?;
        self.size += line.len() as u64;
        Ok(())
    }

    /// `<journal>` → `<journal>.1`, a new file with the open changes copied over.
    fn rotate(&mut self) -> Result<(), JournalError> {
        let io_err = |what, source| JournalError::Io {
            path: self.path.clone(),
            what,
            source,
        };
        fs::rename(&self.path, rotated(&self.path)).map_err(|e| io_err("rotate it", e))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&self.path)
            .map_err(|e| io_err("create it after rotating", e))?;
        self.size = 0;
        sync_dir(&self.path).map_err(|e| io_err("sync its directory", e))?;
        let open: Vec<Entry> = self.open.values().flatten().cloned().collect();
        for entry in open {
            let mut line = serde_json::to_vec(&entry).expect("a journal entry serializes");
            line.push(b'\n');
            self.write(&line)?;
        }
        Ok(())
    }
}

/// The lock file next to `path`: `<path>.lock`.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Opens `<path>.lock` and takes an exclusive `flock` on it without waiting.
fn lock(path: &Path) -> Result<File, JournalError> {
    use std::os::fd::AsRawFd as _;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path(path))
        .map_err(|source| JournalError::Io {
            path: lock_path(path),
            what: "open its lock file",
            source,
        })?;
    // SAFETY: flock on a file descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let source = io::Error::last_os_error();
        return Err(if source.kind() == io::ErrorKind::WouldBlock {
            JournalError::Busy {
                path: path.to_owned(),
            }
        } else {
            JournalError::Io {
                path: lock_path(path),
                what: "lock it",
                source,
            }
        });
    }
    Ok(file)
}

fn ends_with_newline(path: &Path) -> Result<bool, JournalError> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = File::open(path).map_err(|source| JournalError::Io {
        path: path.to_owned(),
        what: "read it",
        source,
    })?;
    let mut last = [0u8; 1];
    file.seek(SeekFrom::End(-1))
        .and_then(|_| file.read_exact(&mut last))
        .map_err(|source| JournalError::Io {
            path: path.to_owned(),
            what: "read it",
            source,
        })?;
    Ok(last[0] == b'\n')
}

fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
