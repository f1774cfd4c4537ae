//! `source = "file"`: a NodeList as `kubectl get nodes -o json` or `-o yaml` prints it
//! (`kind: List`), as the API serves it (`kind: NodeList`), or one Node
//! (`kubectl get node X -o yaml`). The file is checked every `desired.file_poll` and read
//! again when its size, modification time or inode changes; reads are bounded by
//! `desired.max_file_bytes`.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::sync::watch;

use super::{convert, publish_confirmed, publish_failure, publish_model};
use crate::{
    config::read::{ReadError, read_small_file, yaml_error},
    model::desired::{Model, Snapshot},
    sources::k8s::object::{Node as KubeNode, list_items},
};

/// Why a NodeList file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file cannot be read.
    #[error("desired.path {path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not a regular file.
    #[error(
        "desired.path {path}: is a {kind}, not a regular file; point it at a NodeList file \
         (kubectl get nodes -o json)"
    )]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// The file is larger than allowed.
    #[error(
        "desired.path {path}: larger than desired.max_file_bytes ({max} bytes); raise it or \
         write fewer fields (e.g. kubectl get nodes -o json)"
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        max: u64,
    },
    /// The text is not a NodeList.
    #[error(
        "desired.path {path}: not a NodeList: {message} (write it with `kubectl get nodes -o yaml` \
         or `-o json`)"
    )]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Reads at most `max` bytes of `path`, a regular file (a FIFO or device is refused
/// rather than blocking the reader).
pub fn read_bounded(path: &Path, max: u64) -> Result<String, FileError> {
    read_small_file(path, max).map_err(|err| match err {
        ReadError::Io(source) => FileError::Read {
            path: path.to_owned(),
            source,
        },
        ReadError::TooLarge => FileError::TooLarge {
            path: path.to_owned(),
            max,
        },
        ReadError::NotAFile(kind) => FileError::NotAFile {
            path: path.to_owned(),
            kind,
        },
        ReadError::NotText => FileError::Parse {
            path: path.to_owned(),
            message: "not UTF-8 text".into(),
        },
    })
}

/// Parses a NodeList (or one Node), JSON or YAML, into Node objects (only the fields
/// the desired state reads).
pub fn parse_nodes(text: &str) -> Result<Vec<KubeNode>, String> {
    let value: serde_json::Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|err| format!("invalid JSON: {err}"))?
    } else {
        serde_saphyr::from_str(text)
            .map_err(|err| format!("invalid YAML: {}", yaml_error(&err, text)))?
    };
    list_items(value, "Node")
}

/// Reads and converts the file.
pub fn load(path: &Path, max: u64) -> Result<Model, FileError> {
    let text = read_bounded(path, max)?;
    let nodes = parse_nodes(&text).map_err(|message| FileError::Parse {
        path: path.to_owned(),
        message,
    })?;
    Ok(convert::model(&nodes))
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime_ns: i128,
    ino: u64,
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let meta = std::fs::metadata(path)?;
    Ok(Stamp {
        len: meta.len(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        ino: meta.ino(),
    })
}

/// Follows the file until the task is dropped.
pub async fn follow(path: PathBuf, poll: Duration, max: u64, tx: watch::Sender<Snapshot>) {
    // The last stamp read, and whether that read worked.
    let mut last: Option<(Stamp, bool)> = None;
    let mut ticker = tokio::time::interval(poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let now = match stamp(&path) {
            Ok(stamp) => stamp,
            Err(source) => {
                let err = FileError::Read {
                    path: path.clone(),
                    source,
                };
                publish_failure(&tx, err.to_string());
                last = None;
                continue;
            }
        };
        match last {
            Some((stamp, true)) if stamp == now => {
                publish_confirmed(&tx);
                continue;
            }
            // Unchanged and still bad: keep failing, do not log again.
            Some((stamp, false)) if stamp == now => continue,
            _ => {}
        }
        let (p, m) = (path.clone(), max);
        match tokio::task::spawn_blocking(move || load(&p, m)).await {
            Ok(Ok(model)) => {
                tracing::info!(
                    path = %path.display(),
                    nodes = model.nodes.len(),
                    members = model.members().count(),
                    "desired state: NodeList file read"
                );
                publish_model(&tx, model);
                last = Some((now, true));
            }
            Ok(Err(err)) => {
                tracing::warn!("desired state: {err}");
                publish_failure(&tx, err.to_string());
                // Read again when it changes (a half-written file changes once more).
                last = Some((now, false));
            }
            Err(join) => publish_failure(&tx, format!("reading {}: {join}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;

    use super::*;

    #[test]
    fn a_fifo_or_an_oversized_file_is_refused_without_blocking() {
        let dir = std::env::temp_dir().join(format!("watchdog-nodelist-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("nodes.json");
        let c = CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // A plain open of a FIFO with no writer would never return.
        let err = load(&fifo, 1024).unwrap_err();
        assert!(
            matches!(err, FileError::NotAFile { kind: "FIFO", .. }),
            "{err}"
        );
        assert!(err.to_string().starts_with("desired.path "), "{err}");
        std::fs::remove_file(&fifo).unwrap();
        std::fs::write(&fifo, r#"{"kind":"NodeList","items":[]}"#).unwrap();
        assert!(load(&fifo, 1024).is_ok());
        let err = load(&fifo, 8).unwrap_err();
        assert!(matches!(err, FileError::TooLarge { max: 8, .. }), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
