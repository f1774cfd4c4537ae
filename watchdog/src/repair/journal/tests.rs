//! The journal on disk: lines, verdicts, rotation, the lock, crash leftovers.

use super::*;
use crate::repair::object::Object;

fn dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("watchdog-journal-{test}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn op(dst: &str) -> Op {
    let fdb = |dst: &str| Object::test_fdb("02:fa:00:00:00:01", dst);
    Op::between(
        Some(fdb("192.168.77.99")),
        Some(fdb(dst)),
        "node-1",
        (
            Kind::OverlayDrift,
            "fdb 02:fa:00:00:00:01 dev flannel.1 dst 192.168.77.99",
        ),
        "test".into(),
    )
}

#[test]
fn changes_and_verdicts_read_back_and_open_changes_survive_a_restart() {
    let dir = dir("readback");
    let path = dir.join("sub/journal.jsonl");
    let now = SystemTime::UNIX_EPOCH;
    let mut journal = Journal::open(&path, 1 << 20).unwrap();
    let a = journal
        .change(&op("192.168.77.11"), Origin::Repair, None, 1, now)
        .unwrap();
    assert_eq!(a.id, 1);
    assert_eq!(
        a.command,
        "bridge fdb replace 02:fa:00:00:00:01 dev flannel.1 dst 192.168.77.11 self permanent"
    );
    assert_eq!(
        a.inverse,
        "bridge fdb replace 02:fa:00:00:00:01 dev flannel.1 dst 192.168.77.99 self permanent"
    );
    journal
        .verdict(a.id, Outcome::Applied, "in the kernel", now)
        .unwrap();
    journal
        .verdict(a.id, Outcome::Verified, "VTEP answers", now)
        .unwrap();
    let b = journal
        .change(&op("192.168.77.12"), Origin::Repair, None, 2, now)
        .unwrap();
    journal
        .verdict(b.id, Outcome::Applied, "in the kernel", now)
        .unwrap();
    drop(journal);
    // A crash tore the last line.
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(b"{\"entry\":\"verd").unwrap();
    drop(file);
    let journal = Journal::open(&path, 1 << 20).unwrap();
    let open = journal.open_changes();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].change.id, 2);
    assert_eq!(open[0].outcome(), Some(Outcome::Applied));
    assert_eq!(journal.next_id(), 3);
    let (entries, bad) = read(&path).unwrap();
    assert_eq!(bad, 1);
    let all = records(&entries);
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].outcome(), Some(Outcome::Verified));
    assert!(!all[0].is_open());
    // Every line is JSON with the entry's type first.
    let text = fs::read_to_string(&path).unwrap();
    assert!(
        text.lines()
            .next()
            .unwrap()
            .starts_with("{\"entry\":\"change\",\"id\":1,")
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn incoherent_changes_are_skipped() {
    let dir = dir("incoherent");
    let path = dir.join("journal.jsonl");
    let now = SystemTime::UNIX_EPOCH;
    let mut journal = Journal::open(&path, 1 << 20).unwrap();
    let a = journal
        .change(&op("192.168.77.11"), Origin::Repair, None, 1, now)
        .unwrap();
    drop(journal);
    // A change line whose action does not match its objects (hand-edited, or from
    // a future version): skipped, never acted on.
    let text = fs::read_to_string(&path).unwrap();
    let line = text.lines().next().unwrap();
    let broken = line.replacen("\"action\":\"replace\"", "\"action\":\"add\"", 1);
    assert_ne!(broken, line);
    let broken = broken.replacen(&format!("\"id\":{}", a.id), "\"id\":7", 1);
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    writeln!(file, "{broken}").unwrap();
    drop(file);
    let (entries, bad) = read(&path).unwrap();
    assert_eq!((entries.len(), bad), (1, 1));
    let journal = Journal::open(&path, 1 << 20).unwrap();
    assert_eq!(journal.open_changes().len(), 1);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn rotation_caps_the_size_and_keeps_open_changes() {
    let dir = dir("rotate");
    let path = dir.join("journal.jsonl");
    let now = SystemTime::UNIX_EPOCH;
    let mut journal = Journal::open(&path, 4096).unwrap();
    let open = journal
        .change(&op("192.168.77.11"), Origin::Repair, None, 1, now)
        .unwrap();
    for i in 0..40 {
        let c = journal
            .change(&op("192.168.77.12"), Origin::Repair, None, 2 + i, now)
            .unwrap();
        journal.verdict(c.id, Outcome::Verified, "ok", now).unwrap();
    }
    assert!(fs::metadata(&path).unwrap().len() <= 4096);
    assert!(fs::metadata(rotated(&path)).unwrap().len() <= 4096);
    drop(journal);
    let journal = Journal::open(&path, 4096).unwrap();
    let still = journal.open_changes();
    assert_eq!(still.len(), 1, "{still:?}");
    assert_eq!(still[0].change.id, open.id);
    assert_eq!(journal.next_id(), 42);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn one_process_at_a_time() {
    let dir = dir("lock");
    let path = dir.join("journal.jsonl");
    let first = Journal::open(&path, 4096).unwrap();
    let err = Journal::open(&path, 4096).unwrap_err();
    assert!(matches!(err, JournalError::Busy { .. }), "{err}");
    assert!(
        err.to_string().contains("in use by another watchdog"),
        "{err}"
    );
    drop(first);
    Journal::open(&path, 4096).unwrap();
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_unwritable_journal_names_the_key() {
    let err = Journal::open(Path::new("/proc/watchdog/journal.jsonl"), 4096).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("repair.journal /proc/watchdog/journal.jsonl"),
        "{text}"
    );
}
