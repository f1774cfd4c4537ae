//! The repair journal: JSON lines, one per change (written and fsync'd *before* the change
//! is made, with the object before and after, the command and its inverse) and one per
//! verdict (how it went). Read back at start: a change without a final verdict was
//! interrupted, and is verified again or rolled back ([`Journal::open_changes`]).
//!
//! The file is capped: past `repair.journal_max_bytes` it is renamed to `<journal>.1`
//! (replacing the previous one) and a new file starts with the changes still open and
//! every change of the last hour with its verdicts, so no interrupted change is ever
//! rotated away and `repair.max_per_hour` holds across restarts whatever the cap.
//!
//! The journal is trusted with the kernel's state, so it is opened with `O_NOFOLLOW` and
//! must be a regular file owned by the daemon's user with no group or other write
//! ([`JournalError::Unsafe`]: repair refuses to run); lines longer than [`MAX_LINE`] are
//! skipped unread.

use std::{
    collections::BTreeMap,
    fs::{self, File, OpenOptions},
    io::{self, BufRead, BufReader, Read as _, Write},
    os::unix::fs::OpenOptionsExt as _,
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
    /// Never sent: the object is outside the owned set (a forged or stale journal line),
    /// with the reason.
    Refused,
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
            Outcome::Refused => "refused",
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
    /// A symlink, not a regular file, owned by another user, or writable by others.
    #[error(
        "repair.journal {path}: {problem}; repair refuses to use it: make it a regular file \
         owned by the user the watchdog runs as, mode 0600 (or remove it and let the \
         watchdog create it)"
    )]
    Unsafe {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
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

/// The longest journal line read: a real one is well under 4 KiB; a longer one (a forged
/// or corrupted file) is skipped without being held in memory.
pub const MAX_LINE: usize = 64 * 1024;

/// Opens `path` with `O_NOFOLLOW` (`options` says how) and checks it is a regular file
/// owned by this process's user with no group or other write.
fn open_checked(
    path: &Path,
    options: &mut OpenOptions,
    what: &'static str,
) -> Result<File, JournalError> {
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
    let file = options
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| match source.raw_os_error() {
            Some(libc::ELOOP) => JournalError::Unsafe {
                path: path.to_owned(),
                problem: "is a symbolic link".into(),
            },
            _ => JournalError::Io {
                path: path.to_owned(),
                what,
                source,
            },
        })?;
    let meta = file.metadata().map_err(|source| JournalError::Io {
        path: path.to_owned(),
        what: "read its metadata",
        source,
    })?;
    let unsafe_ = |problem: String| JournalError::Unsafe {
        path: path.to_owned(),
        problem,
    };
    if !meta.file_type().is_file() {
        return Err(unsafe_("is not a regular file".into()));
    }
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if meta.uid() != uid {
        return Err(unsafe_(format!(
            "is owned by uid {}, not by the watchdog's uid {uid}",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_(format!(
            "is writable by its group or others (mode {:o})",
            meta.mode() & 0o7777
        )));
    }
    Ok(file)
}

/// Reads one file's lines into `entries`; counts lines that do not parse or are longer
/// than [`MAX_LINE`] in `bad`.
fn read_file(file: &Path, entries: &mut Vec<Entry>, bad: &mut usize) -> Result<(), JournalError> {
    let handle = match open_checked(file, OpenOptions::new().read(true), "read it") {
        Ok(handle) => handle,
        Err(JournalError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(());
        }
        Err(err) => return Err(err),
    };
    let io_err = |source| JournalError::Io {
        path: file.to_owned(),
        what: "read it",
        source,
    };
    let mut reader = BufReader::new(handle);
    let mut line = Vec::new();
    loop {
        line.clear();
        // At most MAX_LINE + 1 bytes of a line are held; the rest is skipped.
        let n = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(io_err)?;
        if n == 0 {
            return Ok(());
        }
        if line.last() != Some(&b'\n') && line.len() > MAX_LINE {
            *bad += 1;
            loop {
                let buf = reader.fill_buf().map_err(io_err)?;
                if buf.is_empty() {
                    return Ok(());
                }
                match buf.iter().position(|b| *b == b'\n') {
                    Some(i) => {
                        reader.consume(i + 1);
                        break;
                    }
                    None => {
                        let len = buf.len();
                        reader.consume(len);
                    }
                }
            }
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        if text.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Entry>(&text) {
            Ok(Entry::Change(change)) if !coherent(&change) => *bad += 1,
            Ok(entry) => entries.push(entry),
            Err(_) => *bad += 1,
        }
    }
}

/// Reads `<path>.1` (if any) then `path` (if any). Lines that do not parse (a line torn
/// by a crash mid-write), are longer than [`MAX_LINE`] or carry a change that cannot be
/// acted on (see `coherent`) are skipped and counted. A file that is a symlink, not a
/// regular file, someone else's or writable by others is an error.
pub fn read(path: &Path) -> Result<(Vec<Entry>, usize), JournalError> {
    let mut entries = Vec::new();
    let mut bad = 0;
    for file in [rotated(path), path.to_owned()] {
        read_file(&file, &mut entries, &mut bad)?;
    }
    // A change (and its verdicts) copied into a new file at rotation appears twice:
    // keep the first.
    let mut seen = std::collections::BTreeSet::new();
    let mut verdicts = std::collections::BTreeSet::new();
    entries.retain(|entry| match entry {
        Entry::Change(c) => seen.insert(c.id),
        Entry::Verdict(v) => {
            verdicts.insert((v.id, v.at.clone(), v.outcome.as_str(), v.detail.clone()))
        }
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
    /// The size of the last hour carried over at the last rotation: the next rotation
    /// waits for twice that, so a busy hour does not rotate at every line.
    carried: u64,
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
        let mut file = open_checked(
            path,
            OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .mode(0o600),
            "open it for appending",
        )?;
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
            carried: 0,
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
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes.max(2 * self.carried) {
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

    /// `<journal>` → `<journal>.1`, a new file (created exclusively, never through a
    /// link) with the open changes and every change of the last hour, with its verdicts,
    /// copied over.
    fn rotate(&mut self) -> Result<(), JournalError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let io_err = |what, source| JournalError::Io {
            path: self.path.clone(),
            what,
            source,
        };
        let mut current = Vec::new();
        let mut bad = 0;
        read_file(&self.path, &mut current, &mut bad)?;
        let wall = SystemTime::now();
        let recent = |change: &Change| {
            humantime::parse_rfc3339(&change.at)
                .ok()
                .and_then(|at| wall.duration_since(at).ok())
                .is_some_and(|ago| ago < std::time::Duration::from_secs(3600))
        };
        let keep: std::collections::BTreeSet<u64> = records(&current)
            .iter()
            .filter(|r| recent(&r.change) || self.open.contains_key(&r.change.id))
            .map(|r| r.change.id)
            .collect();
        let mut carry: Vec<Entry> = current
            .into_iter()
            .filter(|entry| match entry {
                Entry::Change(c) => keep.contains(&c.id),
                Entry::Verdict(v) => keep.contains(&v.id),
            })
            .collect();
        // Open changes not in the current file (copied from an older one) too.
        for (id, lines) in &self.open {
            if !keep.contains(id) {
                carry.extend(lines.iter().cloned());
            }
        }
        fs::rename(&self.path, rotated(&self.path)).map_err(|e| io_err("rotate it", e))?;
        self.file = open_checked(
            &self.path,
            OpenOptions::new()
                .create_new(true)
                .append(true)
                .read(true)
                .mode(0o600),
            "create it after rotating",
        )?;
        self.size = 0;
        sync_dir(&self.path).map_err(|e| io_err("sync its directory", e))?;
        for entry in carry {
            let mut line = serde_json::to_vec(&entry).expect("a journal entry serializes");
            line.push(b'\n');
            self.write(&line)?;
        }
        self.carried = self.size;
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
    let file = open_checked(
        &lock_path(path),
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600),
        "open its lock file",
    )?;
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
    use std::io::{Read as _, Seek, SeekFrom};
    let mut file = open_checked(path, OpenOptions::new().read(true), "read it")?;
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
