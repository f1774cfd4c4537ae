//! `source = "file"`: a NodeList as `kubectl get nodes -o json` or `-o yaml` prints it
//! (`kind: List`), as the API serves it (`kind: NodeList`), or one Node
//! (`kubectl get node X -o yaml`). The file is checked every `desired.file_poll` and read
//! again when its size, modification time or inode changes; reads are bounded by
//! `desired.max_file_bytes`.

use std::{
    io::Read,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::Duration,
};

use k8s_openapi::api::core::v1::Node as KubeNode;
use tokio::sync::watch;

use super::{convert, publish_confirmed, publish_failure, publish_model};
use crate::model::desired::{Model, Snapshot};

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

/// Reads at most `max` bytes of `path`.
pub fn read_bounded(path: &Path, max: u64) -> Result<String, FileError> {
    let file = std::fs::File::open(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut text = String::new();
    file.take(max + 1)
        .read_to_string(&mut text)
        .map_err(|source| FileError::Read {
            path: path.to_owned(),
            source,
        })?;
    if text.len() as u64 > max {
        return Err(FileError::TooLarge {
            path: path.to_owned(),
            max,
        });
    }
    Ok(text)
}

/// Parses a NodeList (or one Node), JSON or YAML, into Node objects.
pub fn parse_nodes(text: &str) -> Result<Vec<KubeNode>, String> {
    let value: serde_json::Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|err| format!("invalid JSON: {err}"))?
    } else {
        serde_yaml::from_str(text).map_err(|err| format!("invalid YAML: {err}"))?
    };
    let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    let items = match kind {
        "Node" => vec![value],
        "List" | "NodeList" | "" => match value.get("items") {
            Some(serde_json::Value::Array(items)) => items.clone(),
            Some(serde_json::Value::Null) => Vec::new(),
            _ => return Err(format!("`kind: {kind}` without an `items` list")),
        },
        other => return Err(format!("`kind: {other}`, expected List, NodeList or Node")),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            let kind = item.get("kind").and_then(|k| k.as_str()).unwrap_or("Node");
            if kind != "Node" {
                return Err(format!("items[{index}] is a {kind}, not a Node"));
            }
            serde_json::from_value::<KubeNode>(item).map_err(|err| format!("items[{index}]: {err}"))
        })
        .collect()
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
